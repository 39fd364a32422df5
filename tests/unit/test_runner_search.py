"""The runner's ParamSearch hook (what ``train.tune`` plugs into): chosen params, caching, lineage, failures.

The search here is a small exhaustive one written for the test, so the
runner's side is checked without Ray; ``tests/integration/test_ray_work.py``
runs the real Ray Tune search through the same hook.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from rung.errors import RungError, StepFailed
from rung.pipeline import Pipeline, step
from rung.pipeline.artifacts import ArtifactStore
from rung.pipeline.executors import LocalExecutor
from rung.pipeline.runner import Runner, StepUpdate
from rung.pipeline.step import Step, StepContext
from rung.store import MetadataStore


@step
def train_set():
    return pd.DataFrame({"x": [1.0, 2.0, 3.0]})


@step
def model(train_set, params):
    return {"scale": params["scale"], "fixed": params["fixed"], "weight": float(train_set["x"].sum()) * params["scale"]}


@step
def report(model, params):
    return {"model": model, "params": params}


PIPELINE = Pipeline("searched", [train_set, model, report])


class BestScale:
    """Tries every scale and keeps the one whose weight is closest to ``target``."""

    label = "tuning"

    def __init__(self, scales: list[float], target: float, *, fail: bool = False) -> None:
        self.scales, self.target, self.fail = scales, target, fail
        self.calls = 0

    def wants(self, step: Step) -> bool:
        return "model" in step.outputs

    def fingerprint(self) -> str:
        return f"{self.scales}:{self.target}"

    def search(self, step: Step, values: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        self.calls += 1
        print("searching", self.scales)
        if self.fail:
            raise RungError("every trial failed")
        tried = [(abs(step.func(values["train_set"], {**ctx.params, "scale": s})["weight"] - self.target), s)
                 for s in self.scales]
        best = min(tried)[1]
        return {"params": {**ctx.params, "scale": best}, "trials": len(tried)}


@pytest.fixture
def world(tmp_path: Path):
    store = MetadataStore(f"sqlite:///{tmp_path / 'rung.db'}")
    artifacts = ArtifactStore(tmp_path / "artifacts")
    yield store, artifacts, tmp_path
    store.close()


def _runner(world, search, updates=None) -> Runner:
    store, artifacts, root = world
    return Runner(store, artifacts, LocalExecutor(workers=1), project_root=root, search=search,
                  on_update=(updates.append if updates is not None else None))


def test_the_chosen_params_reach_the_step_and_every_later_one(world) -> None:
    search = BestScale([0.5, 1.0, 2.0], target=12.0)
    updates: list[StepUpdate] = []
    result = _runner(world, search, updates).run(PIPELINE, project="p", params={"scale": 1.0, "fixed": "kept"})
    out = world[1].get(result.outputs["report"])
    assert out["model"] == {"scale": 2.0, "fixed": "kept", "weight": 12.0}
    assert out["params"] == {"scale": 2.0, "fixed": "kept"}
    run = world[0].get_run(result.run.id)
    assert run.params == {"scale": 1.0, "fixed": "kept"}  # what the run was asked for
    assert run.lineage["tuning"]["params"] == {"scale": 2.0, "fixed": "kept"}
    assert run.lineage["tuning"]["searched_in"] == run.id and run.lineage["tuning"]["cached"] is False
    assert "searching" in (world[2] / ".rung" / "logs" / run.id / "model.tune.log").read_text()
    assert StepUpdate(run.id, "model (tuning)", "running") in updates


def test_the_search_is_cached_like_a_step(world) -> None:
    search = BestScale([0.5, 1.0, 2.0], target=3.0)
    first = _runner(world, search).run(PIPELINE, project="p", params={"scale": 9.0, "fixed": 1})
    second = _runner(world, search).run(PIPELINE, project="p", params={"scale": 9.0, "fixed": 1})
    assert search.calls == 1
    assert {s.name: s.status for s in second.steps} == {"train_set": "cached", "model": "cached", "report": "cached"}
    tuning = world[0].get_run(second.run.id).lineage["tuning"]
    assert tuning["cached"] is True and tuning["searched_in"] == first.run.id
    # another search space is another search
    _runner(world, BestScale([0.5, 1.0], target=3.0)).run(PIPELINE, project="p", params={"scale": 9.0, "fixed": 1})
    # and use_cache=False searches again
    _runner(world, search).run(PIPELINE, project="p", params={"scale": 9.0, "fixed": 1}, use_cache=False)
    assert search.calls == 2


def test_a_failed_search_fails_its_step_with_one_line_and_its_log(world) -> None:
    with pytest.raises(StepFailed) as caught:
        _runner(world, BestScale([1.0], 1.0, fail=True)).run(PIPELINE, project="p", params={"scale": 1.0, "fixed": 0})
    error = caught.value
    assert error.step == "model" and str(error.error) == "tuning failed: every trial failed"
    log = Path(error.log_path or "")
    assert log.name == "model.tune.log" and "every trial failed" in log.read_text()
    statuses = {s.name: s.status for s in world[0].steps(error.run_id)}
    assert statuses == {"train_set": "succeeded", "model": "failed", "report": "skipped"}
    assert world[0].get_run(error.run_id).status == "failed"


def test_without_a_search_nothing_changes(world) -> None:
    result = _runner(world, None).run(PIPELINE, project="p", params={"scale": 3.0, "fixed": 0})
    assert world[1].get(result.outputs["report"])["params"] == {"scale": 3.0, "fixed": 0}
    assert "tuning" not in world[0].get_run(result.run.id).lineage
