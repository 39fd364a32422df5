"""rung.pipeline.runner.Runner on a real SQLite store, an artifact store and local executors.

The steps are defined at module level so that the process pool (workers=2)
can unpickle them by reference.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from rung.errors import PipelineError, StepFailed
from rung.pipeline import Pipeline, step
from rung.pipeline.artifacts import ArtifactStore
from rung.pipeline.executors import LocalExecutor, StepTask
from rung.pipeline.runner import Runner, RunResult, StepUpdate
from rung.store import MetadataStore

# -- steps ----------------------------------------------------------------------------------------


@step
def data():
    return pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, 0, 1]})


@step(outputs=("train_set", "test_set"))
def split(data):
    return data.iloc[:3].reset_index(drop=True), data.iloc[3:].reset_index(drop=True)


@step
def model(train_set, params):
    return {"weight": float(train_set["x"].sum()) * params.get("scale", 1.0)}


@step
def metrics(model, test_set):
    return {"score": model["weight"] + float(test_set["x"].sum())}


@step
def profile(train_set):
    return {"rows": len(train_set)}


FULL = Pipeline("full", [data, split, model, metrics, profile])


@step
def explode(train_set):
    raise ValueError("boom: the step broke")


@step
def after_explode(explode):
    return explode


@step
def base():
    return 1


@step
def middle(base):
    return base + 1


@step
def top(middle):
    return middle + 1


@step
def side():
    return "side"


@step
def now():
    import time

    return time.time_ns()


CLOCK = Pipeline("clock", [now])


CHAIN = Pipeline("chain", [base, middle, top, side])


def _bump(ctx) -> int:
    counter = ctx.project_root / "counter.txt"
    count = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(count))
    return count


@step(retries=2)
def flaky(ctx):
    count = _bump(ctx)
    if count <= 2:
        raise RuntimeError(f"transient failure {count}")
    return count


@step(retries=1)
def flaky_once_too_often(ctx):
    count = _bump(ctx)
    if count <= 2:
        raise RuntimeError(f"transient failure {count}")
    return count


@step
def never_run():
    raise AssertionError("a pinned step must not run")


@step
def uses_pinned(never_run):
    return never_run * 2


def _no_fingerprint(ctx):
    return None


def _file_fingerprint(ctx):
    return (ctx.project_root / "source.txt").read_text()


@step(fingerprint=_no_fingerprint)
def uncacheable():
    return 5


@step(fingerprint=_file_fingerprint)
def reads_file(ctx):
    return (ctx.project_root / "source.txt").read_text()


@step(cache=False)
def always_runs():
    return 6


@step
def after_uncacheable(uncacheable):
    return uncacheable + 1


@step(outputs=("left", "right"))
def wrong_arity():
    return 1


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MetadataStore]:
    s = MetadataStore(f"sqlite:///{tmp_path}/rung.db")
    yield s
    s.close()


@pytest.fixture
def artifacts(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


def make_executor(kind: str):
    return LocalExecutor(int(kind.removeprefix("local-")))


EXECUTORS = ["local-1", "local-2"]


@pytest.fixture(params=EXECUTORS)
def runner(request, tmp_path: Path, store: MetadataStore, artifacts: ArtifactStore) -> Iterator[Runner]:
    executor = make_executor(request.param)
    updates: list[StepUpdate] = []
    r = Runner(store, artifacts, executor, project_root=tmp_path, on_update=updates.append)
    r.updates = updates  # type: ignore[attr-defined]
    yield r
    executor.close()


def by_name(result: RunResult) -> dict:
    return {s.name: s for s in result.steps}


def statuses(result: RunResult) -> dict[str, str]:
    return {s.name: s.status for s in result.steps}


# -- success and the cache --------------------------------------------------------------------------


def test_success_records_run_and_steps(runner: Runner, artifacts: ArtifactStore, tmp_path: Path) -> None:
    result = runner.run(FULL, project="demo", params={"scale": 2.0}, trigger="test")
    run = result.run
    assert run.status == "succeeded"
    assert run.project == "demo"
    assert run.pipeline == "full"
    assert run.trigger == "test"
    assert run.params == {"scale": 2.0}
    assert run.steps_total == 5
    assert run.cache_hits == 0
    assert run.error is None
    assert run.finished_at is not None and run.finished_at >= run.started_at
    # metrics output is summarised on the run record: weight = (1+2+3)*2, score = 12 + 4
    assert run.metrics == {"score": 16.0}

    assert [s.name for s in result.steps] == FULL.order()
    steps = by_name(result)
    for s in steps.values():
        assert s.status == "succeeded"
        assert s.attempts == 1
        assert s.cached is False
        assert s.cache_key and len(s.cache_key) == 64
        assert s.log_path == str(tmp_path / ".rung" / "logs" / run.id / f"{s.name}.log")
        assert s.duration_s is not None and s.duration_s >= 0
    assert set(steps["split"].outputs) == {"train_set", "test_set"}
    assert set(result.outputs) == {"data", "train_set", "test_set", "model", "metrics", "profile"}
    assert steps["model"].outputs["model"] == result.outputs["model"]
    assert artifacts.get(result.outputs["model"]) == {"weight": 12.0}
    pd.testing.assert_frame_equal(
        artifacts.get(result.outputs["test_set"]), pd.DataFrame({"x": [4.0], "y": [1]})
    )
    assert runner.store.get_run(run.id) == run
    seen = {(u.step, u.status) for u in runner.updates}  # type: ignore[attr-defined]
    assert {(n, "running") for n in FULL.order()} <= seen
    assert {(n, "succeeded") for n in FULL.order()} <= seen


def test_second_run_is_all_cached(runner: Runner) -> None:
    first = runner.run(FULL, project="demo", params={"scale": 1.0})
    second = runner.run(FULL, project="demo", params={"scale": 1.0})
    assert second.run.id != first.run.id
    assert second.run.status == "succeeded"
    assert second.run.cache_hits == len(FULL.steps)
    for s in second.steps:
        assert s.status == "cached"
        assert s.cached is True
        assert s.attempts == 0
        assert s.cache_key == by_name(first)[s.name].cache_key
        assert s.outputs == by_name(first)[s.name].outputs
    assert second.outputs == first.outputs
    assert second.run.metrics == first.run.metrics


def test_changing_params_reruns_only_steps_that_take_params(runner: Runner) -> None:
    runner.run(FULL, project="demo", params={"scale": 1.0})
    second = runner.run(FULL, project="demo", params={"scale": 3.0})
    assert statuses(second) == {
        "data": "cached",
        "split": "cached",
        "profile": "cached",
        "model": "succeeded",
        # its input (the model) has new content, so it runs as well
        "metrics": "succeeded",
    }
    assert second.run.cache_hits == 3
    assert second.run.metrics == {"score": 18.0 + 4.0}


def test_same_output_content_is_a_cache_hit_downstream(runner: Runner) -> None:
    runner.run(FULL, project="demo", params={"scale": 1.0})
    # an unused parameter changes the key of `model`, but not what it returns
    second = runner.run(FULL, project="demo", params={"scale": 1.0, "unused": True})
    assert statuses(second)["model"] == "succeeded"
    assert statuses(second)["metrics"] == "cached"


def test_use_cache_false_runs_everything(runner: Runner) -> None:
    runner.run(CHAIN, project="demo")
    second = runner.run(CHAIN, project="demo", use_cache=False)
    assert second.run.cache_hits == 0
    assert set(statuses(second).values()) == {"succeeded"}


def test_a_forced_run_refreshes_the_cache(runner: Runner) -> None:
    first = runner.run(CLOCK, project="demo")
    forced = runner.run(CLOCK, project="demo", use_cache=False)
    assert forced.outputs["now"] != first.outputs["now"]
    third = runner.run(CLOCK, project="demo")
    assert third.run.cache_hits == 1
    assert third.outputs["now"] == forced.outputs["now"]  # the forced run's output, not the first one's


def test_missing_artifact_means_no_cache_hit(runner: Runner, artifacts: ArtifactStore) -> None:
    first = runner.run(CHAIN, project="demo")
    artifacts.path(first.outputs["middle"]).unlink()
    second = runner.run(CHAIN, project="demo")
    assert statuses(second) == {"base": "cached", "middle": "succeeded", "top": "cached", "side": "cached"}
    assert artifacts.exists(first.outputs["middle"])


# -- failure ------------------------------------------------------------------------------------------


def test_failing_step_fails_the_run(runner: Runner, tmp_path: Path) -> None:
    pipeline = Pipeline("breaks", [data, split, explode, after_explode, profile])
    with pytest.raises(StepFailed) as info:
        runner.run(pipeline, project="demo")
    error = info.value
    assert isinstance(error, PipelineError)
    assert error.step == "explode"
    assert "boom: the step broke" in error.error
    run_id = error.run_id  # type: ignore[attr-defined]
    log_path = tmp_path / ".rung" / "logs" / run_id / "explode.log"
    assert error.log_path == str(log_path)
    assert "step 'explode' failed" in str(error)
    assert str(log_path) in str(error)
    assert error.error_type == "ValueError"  # type: ignore[attr-defined]

    log = log_path.read_text()
    assert "Traceback (most recent call last)" in log
    assert "ValueError: boom: the step broke" in log

    run = runner.store.get_run(run_id)
    assert run.status == "failed"
    assert run.error is not None and run.error.startswith("explode: ")
    assert run.finished_at is not None
    steps = {s.name: s for s in runner.store.steps(run_id)}
    assert steps["explode"].status == "failed"
    assert steps["explode"].attempts == 1
    assert "boom" in (steps["explode"].error or "")
    assert steps["after_explode"].status == "skipped"
    assert "'explode' failed" in (steps["after_explode"].error or "")
    assert steps["data"].status == "succeeded"
    assert steps["split"].status == "succeeded"


def test_failed_step_is_not_cached(runner: Runner) -> None:
    pipeline = Pipeline("breaks", [data, split, explode])
    with pytest.raises(StepFailed):
        runner.run(pipeline, project="demo")
    with pytest.raises(StepFailed) as info:
        runner.run(pipeline, project="demo")
    steps = {s.name: s for s in runner.store.steps(info.value.run_id)}  # type: ignore[attr-defined]
    assert steps["data"].status == "cached"
    assert steps["explode"].status == "failed"


def test_wrong_number_of_outputs_fails_the_step(runner: Runner) -> None:
    with pytest.raises(StepFailed) as info:
        runner.run(Pipeline("arity", [wrong_arity]), project="demo")
    assert "return a tuple of 2 values" in info.value.error


# -- retries --------------------------------------------------------------------------------------


def test_retries_until_success(runner: Runner, tmp_path: Path) -> None:
    result = runner.run(Pipeline("retry", [flaky]), project="demo")
    assert result.run.status == "succeeded"
    record = by_name(result)["flaky"]
    assert record.status == "succeeded"
    assert record.attempts == 3
    assert runner.artifacts.get(result.outputs["flaky"]) == 3
    log = Path(record.log_path).read_text()
    assert "transient failure 1" in log
    assert "attempt 2 of 'flaky' failed" in log


def test_retries_exhausted(runner: Runner, tmp_path: Path) -> None:
    with pytest.raises(StepFailed) as info:
        runner.run(Pipeline("retry", [flaky_once_too_often]), project="demo")
    assert "transient failure 2" in info.value.error
    steps = runner.store.steps(info.value.run_id)  # type: ignore[attr-defined]
    assert steps[0].attempts == 2
    assert (tmp_path / "counter.txt").read_text() == "2"


# -- pinned outputs and targets -------------------------------------------------------------------------


def test_pinned_output_skips_the_producing_step(runner: Runner, artifacts: ArtifactStore) -> None:
    ref = artifacts.put(21)
    result = runner.run(Pipeline("pinned", [never_run, uses_pinned]), project="demo", pinned={"never_run": ref})
    assert result.run.status == "succeeded"
    steps = by_name(result)
    assert steps["never_run"].status == "pinned"
    assert steps["never_run"].outputs == {"never_run": ref}
    assert steps["uses_pinned"].status == "succeeded"
    assert artifacts.get(result.outputs["uses_pinned"]) == 42


def test_targets_run_only_ancestors(runner: Runner) -> None:
    result = runner.run(CHAIN, project="demo", targets=["middle"])
    assert statuses(result) == {"base": "succeeded", "middle": "succeeded"}
    assert result.run.steps_total == 2
    assert set(result.outputs) == {"base", "middle"}


def test_targets_by_output_name(runner: Runner) -> None:
    result = runner.run(FULL, project="demo", targets=["test_set"])
    assert set(statuses(result)) == {"data", "split"}


def test_unknown_target(tmp_path: Path, store: MetadataStore, artifacts: ArtifactStore) -> None:
    runner = Runner(store, artifacts, LocalExecutor(1), project_root=tmp_path)
    with pytest.raises(PipelineError, match="no step or output named 'nothing'"):
        runner.run(CHAIN, project="demo", targets=["nothing"])
    assert store.list_runs() == []


def test_local_executor_with_one_worker_runs_a_step(tmp_path: Path, artifacts: ArtifactStore) -> None:
    from rung.pipeline.step import StepContext

    executor = LocalExecutor(1)
    ctx = StepContext(run_id="r", step="base", project_root=tmp_path, params={})
    outcome = executor.submit(StepTask(base, ctx, {}, artifacts.root, tmp_path / "base.log")).result()
    assert outcome.ok
    assert artifacts.get(outcome.outputs["base"]) == 1


# -- fingerprints -----------------------------------------------------------------------------------


def test_fingerprint_none_disables_cache(runner: Runner) -> None:
    pipeline = Pipeline("fp", [uncacheable, after_uncacheable, always_runs])
    runner.run(pipeline, project="demo")
    second = runner.run(pipeline, project="demo")
    steps = by_name(second)
    assert steps["uncacheable"].status == "succeeded"
    assert steps["uncacheable"].cache_key is None
    assert steps["always_runs"].status == "succeeded"
    assert steps["always_runs"].cache_key is None
    # same content from the uncached step: the step after it is still a hit
    assert steps["after_uncacheable"].status == "cached"
    assert second.run.cache_hits == 1


def test_fingerprint_change_invalidates_cache(runner: Runner, tmp_path: Path) -> None:
    pipeline = Pipeline("fp", [reads_file])
    (tmp_path / "source.txt").write_text("v1")
    runner.run(pipeline, project="demo")
    assert statuses(runner.run(pipeline, project="demo")) == {"reads_file": "cached"}
    (tmp_path / "source.txt").write_text("v2")
    third = runner.run(pipeline, project="demo")
    assert statuses(third) == {"reads_file": "succeeded"}
    assert runner.artifacts.get(third.outputs["reads_file"]) == "v2"


# -- bugs ------------------------------------------------------------------------------------------


def _stamp(ctx):
    return ctx.step


stamp_a = step(name="stamp_a", outputs="a_out")(_stamp)
stamp_b = step(name="stamp_b", outputs="b_out")(_stamp)


@step
def both(a_out, b_out):
    return [a_out, b_out]


def test_two_steps_from_one_function_keep_their_own_cache(tmp_path: Path, store, artifacts) -> None:
    runner = Runner(store, artifacts, LocalExecutor(1), project_root=tmp_path)
    pipeline = Pipeline("twins", [stamp_a, stamp_b, both])
    first = runner.run(pipeline, project="demo")
    assert artifacts.get(first.outputs["both"]) == ["stamp_a", "stamp_b"]
    second = runner.run(pipeline, project="demo")
    assert by_name(second)["stamp_b"].outputs.keys() == {"b_out"}
    assert artifacts.get(second.outputs["both"]) == ["stamp_a", "stamp_b"]
