"""rung.delivery.feedback: what a feedback item may be, the first word standing, and feedback joined to the log when read."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from tests.unit.delivery_world import MODEL, World

from rung.delivery import feedback
from rung.errors import ConfigError, DataError
from rung.monitor.logreader import RequestLogReader, request_window
from rung.monitor.requestlog import RequestLog, log_root


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path / "churn")


# -- parsing -----------------------------------------------------------------------------------------


def test_one_item_or_a_list_of_items_becomes_pairs() -> None:
    assert feedback.parse_items({"request_id": "r1", "value": 1}) == [("r1", 1.0)]
    assert feedback.parse_items({"feedback": [{"request_id": "r1", "value": 0.25}, {"request_id": "r2#3", "value": True}]}) == [
        ("r1", 0.25), ("r2#3", 1.0)]


@pytest.mark.parametrize(("body", "message"), [
    ({"feedback": []}, "feedback: a non-empty list"),
    ({"feedback": {"request_id": "r1"}}, "feedback: a non-empty list"),
    ("r1", "body: expected an object with request_id and value"),
    ({"feedback": [{"request_id": "r1", "value": 1}, 3]}, r"feedback\[1\].: expected an object"),
    ({"request_id": "r1", "value": 1, "label": 1}, "^label: unknown field"),
    ({"feedback": [{"request_id": "r1", "value": 1, "extra": 0}]}, r"^feedback\[0\].extra: unknown field"),
    ({"request_id": "", "value": 1}, "^request_id: a request id as returned by the gateway"),
    ({"request_id": "x" * 129, "value": 1}, "^request_id: a request id"),
    ({"request_id": 7, "value": 1}, "^request_id: a request id"),
    ({"request_id": "r1", "value": "1"}, "^value: a finite number"),
    ({"request_id": "r1", "value": float("nan")}, "^value: a finite number"),
    ({"feedback": [{"request_id": "r1", "value": 1}, {"request_id": "r2", "value": float("inf")}]},
     r"^feedback\[1\].value: a finite number"),
])
def test_a_bad_item_is_refused_naming_its_field(body: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        feedback.parse_items(body)


def test_too_many_items_in_one_call_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feedback, "MAX_ITEMS", 3)
    items = [{"request_id": f"r{i}", "value": 1} for i in range(4)]
    with pytest.raises(ConfigError, match="at most 3 items per call"):
        feedback.parse_items({"feedback": items})
    assert len(feedback.parse_items({"feedback": items[:3]})) == 3


# -- recording ---------------------------------------------------------------------------------------


def test_the_first_word_stands_and_the_same_word_again_is_harmless(world: World) -> None:
    first = feedback.record(world.store, [("r1", 1.0), ("r2", 0.0)], source="api", clock=world.clock)
    assert first == {"accepted": ["r1", "r2"], "duplicate": [], "conflict": []}
    again = feedback.record(world.store, [("r1", 1.0), ("r2", 1.0), ("r3", 0.5)], source="api", clock=world.clock)
    assert again == {"accepted": ["r3"], "duplicate": ["r1"], "conflict": ["r2"]}
    assert world.store.feedback_values(["r1", "r2", "r3", "r4"]) == {"r1": 1.0, "r2": 0.0, "r3": 0.5}


def log_requests(world: World) -> None:
    """r1 (one row) and r2 (two rows) answered by churn:1, r2 also mirrored to churn:2, written now by the clock."""
    log = RequestLog(log_root(world.project), clock=world.clock)
    log.record("r1", MODEL, 1, "champion", status=200, latency_s=0.004, predictions=[1], scores=[0.9])
    log.record("r2", MODEL, 1, "champion", status=200, latency_s=0.005, rows=2, predictions=[0, 1], scores=[0.2, 0.7])
    log.record("r2", MODEL, 2, "shadow", status=200, latency_s=0.006, rows=2, predictions=[0, 0], scores=[0.1, 0.3],
               shadow=True)
    log.flush()


def test_with_the_log_ids_it_did_not_answer_are_reported_unmatched_and_kept(world: World) -> None:
    log_requests(world)
    world.clock.advance(60)
    reader = RequestLogReader(log_root(world.project))
    outcome = feedback.record(world.store, [("r1", 1.0), ("r2#1", 0.0), ("nowhere", 1.0)], source="import",
                              clock=world.clock, log=reader)
    assert outcome["accepted"] == ["r1", "r2#1", "nowhere"] and outcome["unmatched"] == ["nowhere"]
    assert world.store.feedback_values(["nowhere"]) == {"nowhere": 1.0}
    world.clock.advance(8 * 86400)  # outside the lookback: not found in the log any more
    late = feedback.record(world.store, [("r2", 1.0)], source="import", clock=world.clock, log=reader, lookback_days=7)
    assert late["unmatched"] == ["r2"]


def test_feedback_joins_each_row_of_the_window_it_belongs_to_even_when_it_came_first(world: World) -> None:
    start = world.clock.now()
    feedback.record(world.store, [("r2#1", 0.0)], source="api", clock=world.clock)  # before its request is logged
    log_requests(world)
    feedback.record(world.store, [("r1", 1.0)], source="api", clock=world.clock)
    world.clock.advance(1)
    rows = request_window(world.project, MODEL, start, world.clock.now())
    by_id = {(r["request_id"], r["version"], bool(r["shadow"])): r["value"] for r in rows}
    assert by_id == {("r1", 1, False): 1.0, ("r2", 1, False): None, ("r2#1", 1, False): 0.0,
                     ("r2", 2, True): None, ("r2#1", 2, True): 0.0}
    assert request_window(world.project, MODEL, world.clock.now(), world.clock.now()) == []


# -- files -------------------------------------------------------------------------------------------


def test_csv_and_parquet_files_are_read_as_pairs(tmp_path: Path) -> None:
    frame = pd.DataFrame({"request_id": ["r1", "r2"], "value": [1, 0.5], "note": ["a", "b"]})
    frame.to_csv(tmp_path / "labels.csv", index=False)
    frame.to_parquet(tmp_path / "labels.parquet")
    expected = [("r1", 1.0), ("r2", 0.5)]
    assert feedback.read_file(tmp_path / "labels.csv") == expected
    assert feedback.read_file(tmp_path / "labels.parquet") == expected


def test_a_bad_file_is_refused_saying_where(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="labels.csv: no such file"):
        feedback.read_file(tmp_path / "labels.csv")
    (tmp_path / "labels.csv").write_text("id,value\nr1,1\n")
    with pytest.raises(DataError, match="missing column 'request_id'"):
        feedback.read_file(tmp_path / "labels.csv")
    (tmp_path / "labels.csv").write_text("request_id,value\nr1,1\nr2,yes\nr3,0\n")
    with pytest.raises(DataError, match="row 3 has no request_id or a value that is not a number"):
        feedback.read_file(tmp_path / "labels.csv")
    (tmp_path / "labels.csv").write_text("request_id,value\nr1,1\n,0\n")
    with pytest.raises(DataError, match="row 3 has no request_id"):
        feedback.read_file(tmp_path / "labels.csv")
