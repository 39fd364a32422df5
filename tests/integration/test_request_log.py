"""The request log: Parquet segments written off the event loop, read with DuckDB, joined with feedback."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from rung.clock import ManualClock
from rung.config import Settings
from rung.delivery import feedback
from rung.monitor.logreader import RequestLogReader, request_window, served
from rung.monitor.requestlog import RequestLog, log_root, open_request_log
from rung.project import Project
from rung.store import MetadataStore
from tests.conftest import postgres_database, rung_cli

ROW = {"tenure_months": 54, "monthly_charges": 77.73, "contract": "one-year", "region": "north",
       "support_calls": 1, "age": 42, "paperless_billing": "no"}
START = datetime(2026, 3, 1, 23, 59, 58, tzinfo=UTC)
EVER = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


def _one(log: RequestLog, request_id: str, version: int = 1, *, rows: int = 1, shadow: bool = False) -> None:
    log.record(request_id, "churn", version, "shadow" if shadow else "champion", status=200, latency_s=0.002, rows=rows,
               predictions=np.arange(rows) % 2, scores=np.linspace(0.1, 0.9, rows),
               features={"age": list(range(40, 40 + rows)), "contract": ["one-year"] * rows}, shadow=shadow)


@pytest.fixture(params=["sqlite", "postgresql"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Project]:
    """A bare project (no pipeline): a metadata store on SQLite or PostgreSQL and a request log in .rung/requests."""
    with contextlib.ExitStack() as stack:
        (tmp_path / "rung.yaml").write_text("name: churn\n")
        overrides = {}
        if request.param == "postgresql":
            overrides["store.database_url"] = stack.enter_context(postgres_database())
        made = Project.open(tmp_path, overrides=overrides)
        yield made
        made.close()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, template_project: Path) -> Path:
    root = tmp_path_factory.mktemp("request-log") / "churn"
    shutil.copytree(template_project, root)
    run = rung_cli("run", cwd=root)
    assert run.returncode == 0, run.stderr
    return root


def test_a_gateway_in_this_process_logs_rows_features_and_simulated_time(trained: Path) -> None:
    from rung.serving.server import start_gateway

    shutil.rmtree(trained / ".rung" / "requests", ignore_errors=True)
    clock = ManualClock(START)
    project = Project.open(trained)
    with start_gateway(project, clock=clock) as gateway:
        replica = gateway.gateway.replica
        single = httpx.post(f"{gateway.url}/invocations", json={"dataframe_records": [ROW]})
        clock.advance(3)  # past midnight: the next request lands in the next day's partition
        rows = [ROW | {"age": 20 + i, "contract": "month-to-month" if i % 2 else "two-year"} for i in range(50)]
        multi = httpx.post(f"{gateway.url}/invocations", json={"dataframe_records": rows}, headers={"x-request-id": "batch-1"})
        assert single.status_code == 200 and multi.status_code == 200
    # leaving the block stopped the gateway gracefully, which wrote the log out
    root = trained / ".rung" / "requests"
    files = sorted(p.relative_to(root).parent.as_posix() for p in root.rglob("*.parquet"))
    assert files == [f"replica={replica}/model=churn/date=2026-03-01", f"replica={replica}/model=churn/date=2026-03-02"]
    day_two = pq.read_table(next((root / f"replica={replica}" / "model=churn" / "date=2026-03-02").glob("*.parquet")))
    assert {f"f_{name}" for name in ROW} <= set(day_two.column_names)
    assert day_two.num_rows == 50 and day_two.column("row").to_pylist() == list(range(50))

    frame = RequestLogReader(root).window("churn", *EVER)
    assert list(frame["request_id"]) == [single.headers["x-request-id"]] + ["batch-1"] * 50
    assert list(frame["time"].dt.to_pydatetime()) == [START] + [START + timedelta(seconds=3)] * 50
    assert list(frame["age"]) == [42] + [20 + i for i in range(50)]
    assert list(frame["contract"])[1:3] == ["two-year", "month-to-month"]
    predictions = multi.json()["predictions"]
    assert list(frame["prediction"])[1:] == [str(p) for p in predictions]
    assert list(frame["score"])[1:] == pytest.approx(multi.json()["probabilities"])
    assert set(frame["version"]) == {1} and set(frame["variant"]) == {"champion"} and not frame["shadow"].any()
    assert (frame["latency_ms"] > 0).all() and set(frame["status"]) == {200} and set(frame["replica"]) == {replica}
    [seen] = frame.attrs["replicas"]
    assert (seen.replica, seen.rows, seen.newest) == (replica, 51, START + timedelta(seconds=3))


def test_a_window_reads_only_the_segments_of_its_days_and_hours(tmp_path: Path) -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    log = RequestLog(tmp_path, clock=clock)
    for day in range(40):  # forty old days, each with a segment and an unreadable file (in the layout before replicas)
        _one(log, f"old-{day}")
        log.flush()
        older = tmp_path / "model=churn" / f"date={clock.now().date()}"
        older.mkdir(parents=True, exist_ok=True)
        (older / "000000000000-235959999999-1-x-1.parquet").write_bytes(b"junk")
        clock.advance(86400)
    today = clock.now()
    for hour in (0, 6, 12, 18):  # and four segments today
        _one(log, f"now-{hour}")
        log.flush()
        clock.advance(6 * 3600)
    reader = RequestLogReader(tmp_path)
    noon = reader.segments("churn", today + timedelta(hours=11), today + timedelta(hours=13))
    assert [p.name.split("-")[0] for p in noon] == ["120000000000"]  # one day, and in it one segment of four
    frame = reader.window("churn", today + timedelta(hours=5), today + timedelta(hours=13))
    assert list(frame["request_id"]) == ["now-6", "now-12"]
    assert frame.attrs["skipped_segments"] == []  # the junk of the old days was never opened
    assert reader.segments("other", *EVER) == [] and reader.window("other", *EVER).empty
    whole = reader.window("churn", *EVER)
    assert len(whole) == 44 and len(whole.attrs["skipped_segments"]) == 40


def test_a_corrupted_or_truncated_segment_is_skipped_and_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock(START)
    log = RequestLog(tmp_path, clock=clock)
    for i in range(3):
        _one(log, f"r{i}", rows=5)
        log.flush()
        clock.advance(0.5)
    first, second, third = sorted((tmp_path / f"replica={log.replica}" / "model=churn" / "date=2026-03-01").glob("*.parquet"))
    second.write_bytes(second.read_bytes()[: second.stat().st_size // 2])  # truncated
    third.write_bytes(b"PAR1" + b"\x00garbage" * 100 + b"PAR1")  # not Parquet inside
    reader = RequestLogReader(tmp_path)
    with caplog.at_level(logging.WARNING, logger="rung.monitor.logreader"):
        frame = reader.window("churn", *EVER)
    assert list(frame["request_id"]) == ["r0"] * 5
    assert sorted(frame.attrs["skipped_segments"]) == sorted([str(second), str(third)])
    assert sum("skipping segment" in r.getMessage() for r in caplog.records) == 2
    again = reader.window("churn", *EVER, columns=["age"])  # known bad now: skipped without another failure
    assert len(again) == 5 and len(again.attrs["skipped_segments"]) == 2 and list(again["age"]) == [40, 41, 42, 43, 44]
    assert list(reader.served("r0")["row"]) == [0, 1, 2, 3, 4]


def test_a_full_queue_drops_counts_and_reports_at_most_once_a_minute(tmp_path: Path) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path}/rung.db")
    counted: list[int] = []
    clock = ManualClock(START)
    log = RequestLog(tmp_path / "requests", clock=clock, capacity=10, store=store,
                     on_drop=lambda reason, n: counted.append(n) if reason == "queue_full" else None)
    for i in range(25):  # nothing writes meanwhile: 10 fit, 15 are dropped
        _one(log, f"r{i}")
    assert log.queued == 10 and log.dropped == 15 and sum(counted) == 15 and log.drops["queue_full"] == 15
    log.report_drops()
    for i in range(5):
        _one(log, f"late{i}")
    log.report_drops()  # within the minute: no second event
    events = [e for e in store.events() if e.kind == "request_log.dropped"]
    assert [e.data["dropped"] for e in events] == [15] and events[0].time == START
    log.stop()  # writes what fitted, and reports what is left regardless of the minute
    events = [e for e in store.events() if e.kind == "request_log.dropped"]
    assert [e.data["dropped"] for e in events] == [15, 5] and events[-1].data["total"] == 20
    assert events[-1].data["queue_full"] == 20 and events[-1].data["disk_full"] == 0
    assert len(RequestLogReader(tmp_path / "requests").window("churn", *EVER)) == 10
    store.close()


def test_stop_writes_everything_still_queued(tmp_path: Path) -> None:
    log = RequestLog(tmp_path, clock=ManualClock(START), flush_s=3600)  # the thread would not write for an hour
    log.start()
    for i in range(1000):
        _one(log, f"r{i}", rows=1 + i % 3)
    log.stop()
    assert log.queued == 0 and log.written == sum(1 + i % 3 for i in range(1000))
    assert not list(tmp_path.rglob("*.tmp"))
    assert len(RequestLogReader(tmp_path).window("churn", *EVER)) == log.written


def test_feedback_joins_at_read_time_whichever_arrives_first(project: Project) -> None:
    clock = ManualClock(START)
    reader = RequestLogReader(log_root(project))
    early = feedback.record(project.store, [("late-request", 1.0), ("multi#2", 0.0)], source="test", clock=clock, log=reader)
    assert early["accepted"] == early["unmatched"] == ["late-request", "multi#2"]  # kept, though not in the log (yet)
    log = RequestLog(log_root(project), clock=clock)
    _one(log, "late-request")
    _one(log, "late-request", version=2, shadow=True)
    _one(log, "multi", rows=3)
    _one(log, "no-feedback")
    log.flush()
    later = feedback.record(project.store, [("multi", 1.0), ("multi#9", 1.0)], source="test", clock=clock, log=reader)
    assert later["accepted"] == ["multi", "multi#9"] and later["unmatched"] == ["multi#9"]  # no row 9
    rows = request_window(project, "churn", START, START + timedelta(seconds=1))
    values = {(r["request_id"], r["shadow"]): r["value"] for r in rows}
    assert values == {("late-request", False): 1.0, ("late-request", True): 1.0, ("multi", False): 1.0,
                      ("multi#1", False): None, ("multi#2", False): 0.0, ("no-feedback", False): None}
    assert {k: type(v) for k, v in rows[0].items()} == {
        "request_id": str, "time": datetime, "version": int, "variant": str, "shadow": bool, "status": int,
        "latency_ms": float, "prediction": str, "score": float, "value": float}
    assert rows[0]["time"] == START
    assert request_window(project, "churn", START + timedelta(seconds=1), START + timedelta(hours=1)) == []


def test_history_names_who_answered_a_request(project: Project) -> None:
    log = RequestLog(log_root(project), clock=ManualClock(START))
    _one(log, "abc")
    _one(log, "abc", version=2, shadow=True)
    _one(log, "rows", rows=4)
    log.flush()
    feedback.record(project.store, [("abc", 1.0), ("rows#3", 0.0)], source="test")
    who = served(project, "abc", model="churn")
    assert [(r["version"], r["shadow"], r["feedback"]) for r in who] == [(1, False, 1.0), (2, True, 1.0)]
    assert [(r["row"], r["feedback"]) for r in served(project, "rows#3")] == [(3, 0.0)]
    assert served(project, "abc", model="other") == [] and served(project, "nope") == []
    if project.store.dialect != "sqlite":
        return  # the CLI reads the project's own store; once is enough
    shown = rung_cli("history", "churn", "--request", "abc", "--json", cwd=project.root)
    assert shown.returncode == 0, shown.stderr
    assert [(r["version"], r["shadow"], r["age"]) for r in json.loads(shown.stdout)] == [(1, False, 40), (2, True, 40)]
    text = rung_cli("history", "churn", "--request", "rows", cwd=project.root)
    assert text.returncode == 0 and text.stdout.count("answered row") == 4 and "feedback 0" in text.stdout
    missing = rung_cli("history", "churn", "--request", "nope", cwd=project.root)
    assert missing.returncode != 0 and "no request 'nope'" in missing.stderr


def test_feedback_import_reports_what_the_log_does_not_hold(project: Project) -> None:
    if project.store.dialect != "sqlite":
        pytest.skip("the CLI reads the project's own store; the SQLite run covers it")
    log = RequestLog(log_root(project), clock=ManualClock(datetime.now(UTC)))
    _one(log, "seen", rows=2)
    log.flush()
    (project.root / "labels.csv").write_text("request_id,value\nseen,1\nseen#1,0\nunseen,1\n")
    imported = rung_cli("feedback", "import", "labels.csv", "--json", cwd=project.root)
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout) == {"accepted": 3, "duplicate": 0, "conflict": 0, "unmatched": 1,
                                           "unmatched_ids": ["unseen"], "conflict_ids": []}
    again = rung_cli("feedback", "import", "labels.csv", cwd=project.root)
    assert again.returncode == 0 and "3 duplicate" in again.stdout


def test_the_log_follows_its_settings(tmp_path: Path) -> None:
    (tmp_path / "rung.yaml").write_text("name: churn\nmonitor:\n  request_log: {path: logs/requests, capacity: 5, flush_s: 2, "
                                        "max_request_rows: 3}\n")
    project = Project.open(tmp_path)
    made = open_request_log(project, clock=ManualClock())
    assert made is not None and (made.root.local_path(), made.capacity, made.flush_s) == (tmp_path / "logs" / "requests", 5, 2.0)
    assert made.max_request_rows == 3
    assert RequestLog(tmp_path, clock=ManualClock(), capacity=1000).max_request_rows == 250  # default: a quarter
    assert RequestLog(tmp_path, clock=ManualClock(), capacity=10, max_request_rows=50).max_request_rows == 10
    assert log_root(Project(tmp_path, Settings(name="churn"))).local_path() == tmp_path / ".rung" / "requests"
    off = Project(tmp_path, Settings.model_validate({"name": "churn", "monitor": {"request_log": {"enabled": False}}}))
    assert open_request_log(off, clock=ManualClock()) is None


def test_one_huge_request_is_dropped_whole_and_counted_and_never_starves_the_rest(tmp_path: Path) -> None:
    counted: list[tuple[str, int]] = []
    log = RequestLog(tmp_path, clock=ManualClock(START), capacity=1000, on_drop=lambda reason, n: counted.append((reason, n)))
    _one(log, "huge", rows=1000)  # would fill the whole queue: more than a quarter of it, so refused whole
    assert log.queued == 0
    _one(log, "big", rows=250)  # a quarter fits, whole
    for i in range(700):
        _one(log, f"r{i}")
    _one(log, "late", rows=100)  # 950 + 100 > 1000: the queue is full for it
    assert log.queued == 950
    assert counted == [("too_large", 1000), ("queue_full", 100)]
    assert log.drops == {"queue_full": 100, "too_large": 1000, "disk_full": 0, "write_error": 0, "store_unavailable": 0}
    assert log.dropped == 1100
    assert log.flush() == 950
    frame = RequestLogReader(tmp_path).window("churn", *EVER)
    assert len(frame) == 950 and (frame["request_id"] == "big").sum() == 250
    assert not {"huge", "late"} & set(frame["request_id"])


def test_a_segment_that_cannot_be_written_is_counted_as_a_write_error_and_writing_resumes(tmp_path: Path) -> None:
    counted: list[tuple[str, int]] = []
    root = tmp_path / "log"
    log = RequestLog(root, clock=ManualClock(START), on_drop=lambda reason, n: counted.append((reason, n)))
    _one(log, "before", rows=2)
    assert log.flush() == 2
    shutil.rmtree(root)
    root.write_text("a file where the log's directory was")  # the partition cannot be made again
    _one(log, "lost", rows=3)
    assert log.flush() == 0 and log.queued == 0
    assert counted == [("write_error", 3)] and log.drops["write_error"] == 3 and log.drops["disk_full"] == 0
    assert not list(tmp_path.rglob("*.tmp"))
    root.unlink()
    _one(log, "after", rows=4)  # the directory is made again: no stale memory of it
    assert log.flush() == 4 and counted == [("write_error", 3)]
    assert list(RequestLogReader(root).window("churn", *EVER)["request_id"]) == ["after"] * 4


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a disk that really fills up (needs root, as in CI; skipped loudly elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        message = f"LOUD SKIP: cannot mount a tmpfs to fill ({done.stderr.strip() or done.returncode}); run as root"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> Path:
    """Write to ``disk`` until it has no byte left; the file that took the space."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except OSError as exc:
        assert exc.errno == 28, exc  # ENOSPC
    finally:
        os.close(fd)
    return filler


def _dropped(url: str) -> dict[str, float]:
    """``rung_request_log_dropped_total`` by reason, as the gateway's /metrics shows it."""
    text = httpx.get(f"{url}/metrics").text
    return {m[1]: float(m[2]) for m in re.finditer(r'^rung_request_log_dropped_total\{reason="(\w+)"\} (\S+)$', text, re.M)}


def _until(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_full_disk_under_load_loses_no_record_without_counting_it_and_logging_resumes(
        trained: Path, small_disk: Path) -> None:
    from rung.serving.server import start_gateway

    log_dir = small_disk / "requests"
    project = Project.open(trained, overrides={"monitor.request_log.path": str(log_dir),
                                               "monitor.request_log.flush_s": 0.05})
    statuses: list[int] = []
    sent: dict[str, int] = {}  # request id -> rows

    with start_gateway(project) as gateway, httpx.Client(timeout=30) as client:
        def send(phase: str, requests: int, rows: int) -> None:
            def one(i: int) -> None:
                request_id = f"{phase}-{i}"
                body = {"dataframe_records": [ROW | {"age": 20 + (i + j) % 50} for j in range(rows)]}
                answer = client.post(f"{gateway.url}/invocations", json=body, headers={"x-request-id": request_id})
                statuses.append(answer.status_code)
                sent[request_id] = rows
            with ThreadPoolExecutor(4) as pool:  # concurrent clients
                list(pool.map(one, range(requests)))

        def accounted() -> float:
            readable = RequestLogReader(log_dir).window("churn", *EVER, columns=[])
            return len(readable) + sum(_dropped(gateway.url).values())

        send("before", 20, 20)
        _until(lambda: accounted() == sum(sent.values()))
        filler = _fill(small_disk)
        send("full", 150, 40)  # 6,000 records onto a full disk
        _until(lambda: _dropped(gateway.url).get("disk_full", 0) > 0 and accounted() == sum(sent.values()))
        full_drops = _dropped(gateway.url)
        filler.unlink()  # space again
        send("after", 20, 20)
        _until(lambda: accounted() == sum(sent.values()))
        drops = _dropped(gateway.url)
        frame = RequestLogReader(log_dir).window("churn", *EVER, columns=[])

    assert len(statuses) == 190 and set(statuses) == {200}  # predictions were answered throughout
    assert full_drops["disk_full"] > 0
    assert set(drops) == {"queue_full", "too_large", "disk_full", "write_error", "store_unavailable"}
    assert drops["disk_full"] == full_drops["disk_full"]  # once space was freed, nothing more was lost
    assert len(frame) + sum(drops.values()) == sum(sent.values())  # exact: every record written or counted
    assert frame.attrs["skipped_segments"] == [] and not list(log_dir.rglob("*.tmp"))
    written = frame.groupby("request_id").size().to_dict()
    assert all(written[f"before-{i}"] == 20 and written[f"after-{i}"] == 20 for i in range(20))  # logging resumed
    assert sum(n for request_id, n in written.items() if request_id.startswith("full-")) + drops["disk_full"] == 6000
    events = [e for e in project.store.events() if e.kind == "request_log.dropped"]
    assert sum(e.data["dropped"] for e in events) == sum(drops.values())  # the event log tells the same count
    assert events and events[0].data["disk_full"] > 0 and "No space left" in (events[0].data["error"] or "")
    project.close()
