"""The batcher's wait for company: measured from one call's cost unless set."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from rung.models.loaded import LoadedModel
from rung.models.signature import Column
from rung.serving.batching import AUTO_WAIT_MS, RECHECK_CALLS, Runtime

MODEL = LoadedModel("m", 1, "sklearn", "classification", [Column("x", "double"), Column("c", "string")], None, Path("."))


def _costing(seconds: float) -> Any:
    """A predictor that takes ``predict.cost`` seconds a call (changeable) and remembers its inputs."""
    calls = []

    def predict(columns: dict[str, list[Any]]) -> dict[str, Any]:
        calls.append(columns)
        time.sleep(predict.cost)  # type: ignore[attr-defined]
        return {"predict": [0] * len(columns["x"])}

    predict.calls = calls  # type: ignore[attr-defined]
    predict.cost = seconds  # type: ignore[attr-defined]
    return predict


@pytest.mark.parametrize(("cost_s", "wait_ms"), [(0.0, 0.0), (0.004, AUTO_WAIT_MS)])
def test_a_batch_waits_for_company_only_when_a_call_is_costly(cost_s: float, wait_ms: float) -> None:
    predictor = _costing(cost_s)
    runtime = Runtime(MODEL, workers=[predictor])
    try:
        cost = runtime.warm_up()
    finally:
        runtime.close()
    assert cost is not None and cost >= cost_s
    assert runtime.max_wait_ms == wait_ms
    assert predictor.calls[0] == {"x": [0.0], "c": [""]}  # a made-up row of the signature's kinds


def test_a_configured_wait_is_kept_and_a_failing_model_keeps_the_cautious_wait() -> None:
    runtime = Runtime(MODEL, workers=[_costing(0.0)], max_wait_ms=5.0)
    runtime.warm_up()
    assert runtime.max_wait_ms == 5.0
    runtime.close()

    def broken(columns: dict[str, list[Any]]) -> dict[str, Any]:
        raise ValueError("cannot predict a made-up row")

    runtime = Runtime(MODEL, workers=[broken])
    assert runtime.warm_up() is None
    assert runtime.max_wait_ms == AUTO_WAIT_MS
    runtime.close()


def test_a_warm_up_slowed_by_a_neighbour_is_corrected_by_the_calls_that_follow() -> None:
    predictor = _costing(0.004)  # at load time the machine was busy
    runtime = Runtime(MODEL, workers=[predictor])
    runtime.warm_up()
    assert runtime.max_wait_ms == AUTO_WAIT_MS
    predictor.cost = 0.0  # then the model's true cost shows

    async def serve(calls: int) -> None:
        for _ in range(calls):
            await runtime.predict({"x": [1.0], "c": ["a"]}, 1)

    try:
        asyncio.run(serve(RECHECK_CALLS - 1))
        assert runtime.max_wait_ms == AUTO_WAIT_MS  # decided only from a full round of calls
        asyncio.run(serve(1))
        assert runtime.max_wait_ms == 0.0 and runtime.call_s is not None and runtime.call_s < 0.002
        predictor.cost = 0.004
        asyncio.run(serve(RECHECK_CALLS))
        assert runtime.max_wait_ms == AUTO_WAIT_MS
    finally:
        runtime.close()


def test_the_first_call_of_a_warm_up_is_initialisation_not_the_measure_and_every_worker_is_warmed() -> None:
    """A fresh worker's first call (imports, the first frame) can cost 100 times a call: 713 ms on a busy host."""
    predictor, other = _costing(0.0), _costing(0.0)
    first = True

    def slow_first(columns: dict[str, list[Any]]) -> dict[str, Any]:
        nonlocal first
        if first:
            first = False
            time.sleep(0.3)  # past the warm-up's budget: alone, it would end the warm-up and be the figure
        return predictor(columns)

    runtime = Runtime(MODEL, workers=[slow_first, other])
    try:
        cost = runtime.warm_up()
    finally:
        runtime.close()
    assert cost is not None and cost < 0.05 and runtime.max_wait_ms == 0.0
    assert len(predictor.calls) > 2 and len(other.calls) == 1  # the second worker initialised too, before any request


def test_describe_says_how_a_version_predicts() -> None:
    runtime = Runtime(MODEL, workers=[_costing(0.0)], note="not compiled: serve.compile is false")
    runtime.warm_up()
    runtime.close()
    line = runtime.describe()
    assert line.startswith("m:1: sklearn estimator (not compiled: serve.compile is false) in 1 worker process, ")
    assert line.endswith("ms a call, batches wait 0 ms")


def test_a_batch_charges_each_of_its_requests_its_queue_and_compute_times() -> None:
    predictor = _costing(0.002)
    runtime = Runtime(MODEL, workers=[predictor], max_wait_ms=20.0)  # long enough for all three to meet

    async def three_at_once() -> list[dict[str, Any]]:
        return await asyncio.gather(*(runtime.predict({"x": [1.0] * rows, "c": ["a"] * rows}, rows) for rows in (1, 2, 3)))

    try:
        answers = asyncio.run(three_at_once())
    finally:
        runtime.close()
    assert [len(a["predict"]) for a in answers] == [1, 2, 3] and len(predictor.calls) == 1
    stats = runtime.stats.to_dict("m", 1)
    assert (stats["inference_count"], stats["execution_count"]) == (6, 1)
    (batch,) = stats["batch_stats"]
    infer_ns = batch["compute_infer"]["ns"]
    assert batch["batch_size"] == 6 and batch["compute_infer"]["count"] == 1 and infer_ns >= 2_000_000
    phases = stats["inference_stats"]
    assert phases["compute_infer"] == {"count": 3, "ns": 3 * infer_ns}  # each request waited for the whole call
    assert phases["queue"]["count"] == 3 and phases["queue"]["ns"] >= 3 * 15_000_000  # the wait for company is queueing
    assert phases["success"]["count"] == 0  # a whole request's outcome is the gateway's to count


def test_a_failed_batch_counts_no_compute_and_finish_answers_what_is_queued_before_closing() -> None:
    def broken(columns: dict[str, list[Any]]) -> dict[str, Any]:
        raise ValueError("no")

    runtime = Runtime(MODEL, workers=[broken], max_wait_ms=0.0)
    with pytest.raises(ValueError):
        asyncio.run(runtime.predict({"x": [1.0], "c": ["a"]}, 1))
    assert runtime.stats.to_dict("m", 1)["execution_count"] == 0 and runtime.stats.computed == 0
    runtime.close()

    slow = _costing(0.05)
    runtime = Runtime(MODEL, workers=[slow], max_wait_ms=0.0)

    async def unload_while_queued() -> dict[str, Any]:
        pending = asyncio.ensure_future(runtime.predict({"x": [1.0], "c": ["a"]}, 1))
        await asyncio.sleep(0.01)  # the call is under way
        await runtime.finish()
        await asyncio.sleep(0)  # the answered request's task resumes on the loop's next turn
        assert pending.done()
        return await pending

    assert len(asyncio.run(unload_while_queued())["predict"]) == 1
    with pytest.raises(RuntimeError):  # closed: it takes no more
        asyncio.run(runtime.predict({"x": [1.0], "c": ["a"]}, 1))


def test_numpy_columns_of_concurrent_requests_meet_as_one_numpy_column() -> None:
    import numpy as np

    seen: list[dict[str, Any]] = []

    def predictor(columns: dict[str, Any]) -> dict[str, Any]:
        seen.append(columns)
        return {"predict": list(range(len(columns["x"])))}

    runtime = Runtime(MODEL, workers=[predictor], max_wait_ms=20.0)

    async def together() -> list[dict[str, Any]]:
        return await asyncio.gather(runtime.predict({"x": np.array([1.0, 2.0]), "c": ["a", "b"]}, 2),
                                    runtime.predict({"x": np.array([3], dtype=np.int64), "c": ["c"]}, 1))

    try:
        answers = asyncio.run(together())
    finally:
        runtime.close()
    (batch,) = seen
    assert isinstance(batch["x"], np.ndarray) and batch["x"].dtype == np.float64 and batch["x"].tolist() == [1.0, 2.0, 3.0]
    assert batch["c"] == ["a", "b", "c"] and [a["predict"] for a in answers] == [[0, 1], [2]]
