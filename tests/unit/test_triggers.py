"""rung.triggers: cron due times, data fingerprints, the retraining guard, and which triggers fire."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from rung.clock import ManualClock
from rung.config.triggers import TriggerSettings
from rung.errors import DataError
from rung.triggers.decision import TriggerReason, evaluate, record_start
from rung.triggers.guards import Guard
from rung.triggers.newdata import DataFingerprint, changed, fingerprint
from rung.triggers.schedule import Schedule

HOUR = 3600.0
MONDAY_0300 = datetime(2026, 1, 5, 3, 0, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def roundtrip(state: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(state))


# --- schedule -------------------------------------------------------------------------------


def test_schedule_is_due_once_its_slot_passed() -> None:
    weekly = Schedule("0 3 * * 1")
    clock = ManualClock(at("2026-01-04T12:00"))  # Sunday
    last = clock.now()
    assert weekly.due(last, clock.now()) is None
    clock.advance(15 * HOUR - 1)  # Monday 02:59:59
    assert weekly.due(last, clock.now()) is None
    clock.advance(1)  # Monday 03:00:00 exactly: the slot is in (last, now]
    assert weekly.due(last, clock.now()) == MONDAY_0300
    clock.advance(HOUR)
    assert weekly.due(last, clock.now()) == MONDAY_0300
    assert weekly.due(MONDAY_0300, clock.now()) is None  # fired: not again until next Monday
    assert weekly.next_after(MONDAY_0300) == MONDAY_0300 + timedelta(days=7)


def test_missed_runs_fire_once_for_the_latest_slot() -> None:
    daily = Schedule("@daily")
    clock = ManualClock(at("2026-01-01T12:00"))
    last = clock.now()
    clock.advance(4 * 24 * HOUR)  # down for four days
    assert daily.due(last, clock.now()) == at("2026-01-05T00:00")
    assert daily.missed(last, clock.now()) == 4
    assert daily.due(clock.now(), clock.now()) is None


def test_no_last_run_means_nothing_due_yet() -> None:
    assert Schedule("* * * * *").due(None, MONDAY_0300) is None


@pytest.mark.parametrize(("cron", "message"), [("61 * * * *", "not a valid cron"), ("0 3 * *", "has 4 fields"), ("*/5 * * * * *", "has 6 fields"), ("", "has 0 fields")])
def test_invalid_cron_names_the_key(cron: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"triggers.schedule: .*{message}"):
        Schedule(cron)
    with pytest.raises(ValidationError, match="schedule"):
        TriggerSettings.model_validate({"schedule": cron})


# --- new data -------------------------------------------------------------------------------


def write_csv(path: Path, rows: int, value: str = "1") -> None:
    path.write_text("a,b\n" + "".join(f"{i},{value}\n" for i in range(rows)))


def test_fingerprint_of_a_csv_file_counts_rows_and_round_trips(tmp_path: Path) -> None:
    source = tmp_path / "train.csv"
    write_csv(source, 3)
    fp = fingerprint("train.csv", root=tmp_path)
    assert fp is not None
    assert fp.rows == 3 and fp.hash_mode == "full" and fp.note is None
    assert [f.path for f in fp.files] == ["train.csv"]
    assert DataFingerprint.from_dict(roundtrip(fp.to_dict())) == fp
    assert changed(roundtrip(fp.to_dict()), fp) is None
    source.write_text("a,b\n1,2")  # no final newline: still one row
    assert fingerprint(source).rows == 1  # type: ignore[union-attr]


def test_appended_rows_are_new_data(tmp_path: Path) -> None:
    source = tmp_path / "train.csv"
    write_csv(source, 4000)
    before = fingerprint(source)
    write_csv(source, 4600)
    assert changed(before.to_dict(), fingerprint(source)) == "rows 4,000 -> 4,600"  # type: ignore[union-attr, arg-type]


def test_same_size_other_content_changes_the_hash_but_a_touch_does_not(tmp_path: Path) -> None:
    source = tmp_path / "train.csv"
    write_csv(source, 10, "1")
    before = fingerprint(source)
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert changed(before, fingerprint(source)) is None  # type: ignore[arg-type]
    write_csv(source, 10, "2")
    after = fingerprint(source)
    assert after.size == before.size and after.rows == before.rows  # type: ignore[union-attr]
    assert changed(before, after) == "content hash changed"  # type: ignore[arg-type]


def test_new_files_in_a_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_csv(data / "2026-01.csv", 5)
    (data / "_SUCCESS").write_text("")
    (data / "notes.txt").write_text("not data")
    before = fingerprint(data)
    assert [f.path for f in before.files] == ["2026-01.csv"]  # type: ignore[union-attr]
    write_csv(data / "2026-02.csv", 5)
    (data / "sub").mkdir()
    write_csv(data / "sub" / "2026-03.csv", 5)
    assert changed(before, fingerprint(data)) == "2 new files (2026-02.csv, sub/2026-03.csv); rows 5 -> 15"  # type: ignore[arg-type]
    (data / "2026-01.csv").unlink()
    assert changed(fingerprint("data/*.csv", root=tmp_path), fingerprint("data/**/*.csv", root=tmp_path)) == "1 new file (sub/2026-03.csv); rows 5 -> 10"  # type: ignore[arg-type]


def test_parquet_rows_come_from_the_metadata(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"a": list(range(250))}), tmp_path / "part-0.parquet")
    fp = fingerprint(tmp_path)
    assert fp is not None and fp.rows == 250


def test_large_sources_get_a_sampled_hash_and_say_so(tmp_path: Path) -> None:
    source = tmp_path / "big.csv"
    write_csv(source, 1000)
    fp = fingerprint(source, sample_above=1000)
    assert fp is not None and fp.hash_mode == "sampled" and fp.rows is None
    assert "sampled hash" in (fp.note or "")
    write_csv(source, 1000, "9")  # same size, other content, new mtime
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    assert changed(fp, fingerprint(source, sample_above=1000)) == "content changed (sampled hash: sizes, mtimes, first and last MiB)"  # type: ignore[arg-type]


def test_missing_sources_and_sql_sources(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        fingerprint("data/nope.csv", root=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no CSV or Parquet files"):
        fingerprint(tmp_path / "empty")
    with pytest.raises(DataError, match="matches no CSV or Parquet files"):
        fingerprint("*.parquet", root=tmp_path)

    @dataclass
    class Sql:
        url: str = "sqlite://"
        query: str = "select 1"

    assert fingerprint(Sql()) is None
    with pytest.raises(ValueError, match="not a data fingerprint"):
        changed({"files": []}, _fp(tmp_path))


def _fp(tmp_path: Path) -> DataFingerprint:
    write_csv(tmp_path / "x.csv", 1)
    fp = fingerprint(tmp_path / "x.csv")
    assert fp is not None
    return fp


# --- guard ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    started_at: datetime
    finished_at: datetime | None
    status: str


NOW = at("2026-01-10T12:00")


def done(hours_ago: float, status: str = "succeeded") -> Run:
    start = NOW - timedelta(hours=hours_ago)
    return Run(start, start + timedelta(minutes=20), status)


def test_guard_allows_with_no_history_and_after_the_cooldown() -> None:
    guard = Guard(cooldown_s=6 * HOUR, max_per_day=2)
    assert guard.allow([], NOW) == (True, "allowed")
    assert guard.allow([done(7)], NOW)[0]


def test_guard_refuses_within_the_cooldown_and_says_until_when() -> None:
    ok, why = Guard(cooldown_s=6 * HOUR, max_per_day=None).allow([done(30), done(2, "failed")], NOW)
    assert not ok
    assert why == "cooldown: the last retraining started 2026-01-10 10:00 UTC; the next may start at 2026-01-10 16:00 UTC (cooldown 6h)"


def test_guard_refuses_past_max_per_day() -> None:
    ok, why = Guard(cooldown_s=HOUR, max_per_day=2).allow([done(30), done(20), done(5)], NOW)
    assert not ok
    assert why == "max_per_day: 2 retrainings started in the last 24 h (limit 2); the next may start at 2026-01-10 16:00 UTC"
    assert Guard(cooldown_s=HOUR, max_per_day=3).allow([done(30), done(20), done(5)], NOW)[0]


def test_guard_refuses_while_a_retraining_is_in_flight_unless_it_is_stale() -> None:
    guard = Guard(cooldown_s=0, max_per_day=None, stale_after_s=6 * HOUR)
    running = Run(NOW - timedelta(hours=1), None, "running")
    ok, why = guard.allow([done(30), running], NOW)
    assert not ok and why.startswith("in flight: a retraining started 2026-01-10 11:00 UTC has not finished")
    assert "counts as dead at 2026-01-10 17:00 UTC" in why
    assert not guard.allow([running], NOW, manual=True)[0]  # manual never bypasses this one
    stale = Run(NOW - timedelta(hours=7), None, "running")
    ok, why = guard.allow([stale], NOW)
    assert ok and "never finished and counts as dead" in why


def test_manual_bypasses_cooldown_and_max_per_day() -> None:
    guard = Guard(cooldown_s=6 * HOUR, max_per_day=1)
    ok, why = guard.allow([done(1)], NOW, manual=True)
    assert ok and "manual" in why
    assert not guard.allow([done(1)], NOW)[0]


def test_guard_ignores_refused_records_and_reads_mappings_and_naive_times() -> None:
    guard = Guard(cooldown_s=6 * HOUR, max_per_day=None)
    refused = {"started_at": NOW - timedelta(hours=1), "finished_at": None, "status": "refused"}
    assert guard.allow([refused], NOW)[0]
    naive = {"started_at": (NOW - timedelta(hours=1)).replace(tzinfo=None), "finished_at": NOW.replace(tzinfo=None), "status": "succeeded"}
    ok, why = guard.allow([naive], NOW)
    assert not ok and "2026-01-10 11:00 UTC" in why


# --- settings and evaluation ----------------------------------------------------------------


def triggers(**values: Any) -> TriggerSettings:
    return TriggerSettings.model_validate(values)


def test_settings_defaults_are_off_and_durations_parse() -> None:
    assert not TriggerSettings().enabled
    t = triggers(schedule="0 3 * * 1", drift={"metric": "drift.share", "condition": "> 0.3", "for": 2}, cooldown="6h", max_per_day=2, stale_after="1d")
    assert t.enabled and t.cooldown == 6 * HOUR and t.stale_after == 24 * HOUR
    assert Guard.from_settings(t) == Guard(cooldown_s=6 * HOUR, max_per_day=2, stale_after_s=24 * HOUR)
    assert t.drift is not None and t.drift.windows == 2


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"drift": {"metric": "drift.share", "condition": "over 0.3"}}, "drift.condition"),
        ({"performance": {"metric": "performance.accuracy", "condition": "< 0.8", "severity": "critical"}}, "performance.severity"),
        ({"cooldown": "six hours"}, "cooldown"),
        ({"max_per_day": 0}, "max_per_day"),
        ({"stale_after": 0}, "stale_after"),
        ({"new_data": "sometimes"}, "new_data"),
    ],
)
def test_bad_trigger_settings_name_the_key(values: dict[str, Any], key: str) -> None:
    with pytest.raises(ValidationError) as caught:
        triggers(**values)
    assert key in str(caught.value)


def test_schedule_trigger_is_pending_until_a_retraining_starts() -> None:
    settings, clock = triggers(schedule="0 3 * * 1"), ManualClock(at("2026-01-04T12:00"))
    reasons, state = evaluate(settings, now=clock.now(), state={})
    assert reasons == [] and state["schedule_from"]
    clock.advance(16 * HOUR)  # Monday 04:00
    reasons, state = evaluate(settings, now=clock.now(), state=roundtrip(state))
    assert [r.kind for r in reasons] == ["schedule"]
    assert reasons[0].why == 'scheduled run of 2026-01-05 03:00 UTC (cron "0 3 * * 1")'
    clock.advance(HOUR)  # the guard refused: still pending an hour later
    reasons, state = evaluate(settings, now=clock.now(), state=roundtrip(state))
    assert [r.kind for r in reasons] == ["schedule"]
    state = record_start(state, now=clock.now())
    assert evaluate(settings, now=clock.now() + timedelta(hours=1), state=roundtrip(state))[0] == []


def test_schedule_missed_while_down_for_weeks_fires_once() -> None:
    settings, clock = triggers(schedule="0 3 * * 1"), ManualClock(at("2026-01-04T12:00"))
    _, state = evaluate(settings, now=clock.now(), state={})
    clock.advance(21 * 24 * HOUR)
    reasons, _ = evaluate(settings, now=clock.now(), state=state)
    assert len(reasons) == 1 and reasons[0].details["slots"] == 3
    assert reasons[0].details["scheduled_for"] == "2026-01-19T03:00:00+00:00"
    assert "3 slots passed, run once" in reasons[0].why


def test_drift_trigger_needs_n_windows_and_rearms_after_a_start() -> None:
    settings, clock = triggers(drift={"metric": "drift.share", "condition": "> 0.3", "for": 2}), ManualClock()
    state: dict[str, Any] = {}
    kinds = []
    for window in [{"drift.share": 0.5}, None, {"drift.share": 0.1}, {"drift.share": 0.5}, None, {"drift.share": 0.45}, None]:
        clock.advance(600)
        reasons, state = evaluate(settings, now=clock.now(), metrics=window, state=roundtrip(state))
        kinds.append([r.kind for r in reasons])
    assert kinds == [[], [], [], [], [], ["drift"], ["drift"]]
    assert reasons[0].why == "drift.share = 0.45 > 0.3 for 2 windows"
    assert reasons[0].details["metrics"]["drift.share"]["value"] == 0.45
    state = record_start(state, now=clock.now())
    clock.advance(600)
    assert evaluate(settings, now=clock.now(), metrics={"drift.share": 0.9}, state=state)[0] == []


def test_performance_and_per_feature_drift_together() -> None:
    settings = triggers(
        drift={"metric": "drift.feature.*", "condition": "> 0.2", "for": 1},
        performance={"metric": "performance.accuracy", "condition": "< 0.8"},
    )
    window = {"drift.feature.tenure": 0.5, "drift.feature.plan": 0.3, "drift.feature.age": 0.1, "performance.accuracy": 0.75}
    reasons, state = evaluate(settings, now=NOW, metrics=window, state={})
    assert sorted(r.kind for r in reasons) == ["drift", "performance"]
    drift = next(r for r in reasons if r.kind == "drift")
    assert sorted(drift.details["metrics"]) == ["drift.feature.plan", "drift.feature.tenure"]
    assert "(and 1 more: " in drift.why
    performance = next(r for r in reasons if r.kind == "performance")
    assert performance.why == "performance.accuracy = 0.75 < 0.8 for 1 window"
    json.dumps([r.to_dict() for r in reasons])
    reasons, _ = evaluate(settings, now=NOW, metrics={**window, "performance.accuracy": 0.9}, state=state)
    assert [r.kind for r in reasons] == ["drift"]


def test_new_data_trigger_compares_with_what_the_last_retraining_saw(tmp_path: Path) -> None:
    source = tmp_path / "train.csv"
    write_csv(source, 100)
    settings, clock = triggers(new_data=True), ManualClock()
    reasons, state = evaluate(settings, now=clock.now(), data=fingerprint(source), state={})
    assert reasons == []  # the first sight is the baseline
    write_csv(source, 120)
    clock.advance(60)
    reasons, state = evaluate(settings, now=clock.now(), data=fingerprint(source), state=roundtrip(state))
    assert [r.why for r in reasons] == [f"new data in {source}: rows 100 -> 120"]
    reasons, state = evaluate(settings, now=clock.now(), data=None, state=state)  # not checked this tick
    assert reasons == []
    state = record_start(roundtrip(state), now=clock.now())  # trains on the 120 rows evaluate last saw
    assert evaluate(settings, now=clock.now(), data=fingerprint(source), state=state)[0] == []


def test_manual_reason_and_switched_off_rules_drop_their_state() -> None:
    reason = TriggerReason.manual("labels fixed", by="ana")
    assert reason.to_dict() == {"kind": "manual", "why": "labels fixed", "details": {"by": "ana"}}
    on = triggers(drift={"metric": "drift.share", "condition": "> 0.3"})
    reasons, state = evaluate(on, now=NOW, metrics={"drift.share": 0.9}, state={})
    assert reasons and state["rules"]["drift"]
    reasons, state = evaluate(triggers(), now=NOW, metrics={"drift.share": 0.9}, state=state)
    assert reasons == [] and "drift" not in state["rules"]
