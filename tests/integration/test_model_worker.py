"""A version predicting in a worker process answers exactly as in a thread, batches included, and fails the same way."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from rung.models.loaded import LoadedModel
from rung.project import Project
from rung.serving.batching import Runtime
from rung.serving.worker import ModelWorker
from tests.conftest import rung_cli

ROWS = [
    {"tenure_months": 54, "monthly_charges": 77.73, "contract": "one-year", "region": "north", "support_calls": 1, "age": 42,
     "paperless_billing": "no"},
    {"tenure_months": 2, "monthly_charges": 110.0, "contract": "month-to-month", "region": "south", "support_calls": 7,
     "age": 23, "paperless_billing": "yes"},
    {"tenure_months": 30, "monthly_charges": None, "contract": "never-seen", "region": "east", "support_calls": 0, "age": 61,
     "paperless_billing": "no"},
]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, template_project: Path) -> LoadedModel:
    import shutil

    root = tmp_path_factory.mktemp("worker") / "churn"
    shutil.copytree(template_project, root)
    assert rung_cli("run", cwd=root).returncode == 0
    project = Project.open(root)
    return project.models_loader.load(project.store.list_model_versions("churn")[-1])


async def _answers(runtime: Runtime) -> list[dict]:
    """Each row as its own concurrent request: they meet in batches."""
    requests = [runtime.predict({k: [v] for k, v in row.items()}, 1) for row in ROWS * 4]
    return await asyncio.gather(*requests)


def test_worker_process_and_thread_give_the_same_answers(model: LoadedModel) -> None:
    worker = ModelWorker(model)
    try:
        assert worker.pid is not None
        in_process = asyncio.run(_answers(Runtime(model, workers=[worker], max_wait_ms=1.0)))
    finally:
        worker.close()
    in_thread = asyncio.run(_answers(Runtime(model, max_wait_ms=1.0)))
    assert len(in_process) == len(in_thread) == 12
    for a, b in zip(in_process, in_thread):
        assert a["predict"].tolist() == b["predict"].tolist()
        np.testing.assert_allclose(a["proba"], b["proba"])
    assert not worker._process.is_alive()  # closed means gone


def test_a_model_error_reaches_the_caller_with_its_type(model: LoadedModel) -> None:
    worker = ModelWorker(model)
    try:
        with pytest.raises(KeyError):
            worker({"tenure_months": [1]})  # the pipeline cannot find its columns
        assert worker({k: [v] for k, v in ROWS[0].items()})["predict"].shape == (1,)  # and the worker lives on
    finally:
        worker.close()


def test_a_worker_killed_while_idle_is_revived_and_counted(model: LoadedModel) -> None:
    import os
    import signal

    restarts: list[int] = []
    worker = ModelWorker(model, on_restart=lambda: restarts.append(1))
    try:
        assert worker.revive() is False  # alive: nothing to do
        first = worker.pid
        os.kill(first, signal.SIGKILL)
        worker._process.join(timeout=5)
        assert worker.revive() is True and restarts == [1]
        assert worker.pid != first
        assert worker({k: [v] for k, v in ROWS[0].items()})["predict"].shape == (1,)  # no WorkerDied: it was replaced
    finally:
        worker.close()
    assert worker.revive() is False and restarts == [1]  # closed means gone, not revived
