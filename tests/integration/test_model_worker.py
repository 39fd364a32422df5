"""A version predicting in a worker process answers exactly as in a thread, batches included, and fails the same way."""

from __future__ import annotations

import asyncio
import json
import pickle
import shutil
import subprocess
import sys
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
def trained(tmp_path_factory: pytest.TempPathFactory, template_project: Path) -> Path:
    root = tmp_path_factory.mktemp("worker") / "churn"
    shutil.copytree(template_project, root)
    assert rung_cli("run", cwd=root).returncode == 0
    return root


@pytest.fixture(scope="module")
def model(trained: Path) -> LoadedModel:
    project = Project.open(trained)
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


SHARED = """
import json, pickle, sys
import psutil
from rung.serving.worker import ModelWorker

if __name__ == "__main__":
    with open(sys.argv[1], "rb") as file:
        model = pickle.load(file)
    workers = [ModelWorker(model) for _ in range(2)]
    for _ in range(50):
        for worker in workers:
            worker(json.loads(sys.argv[2]))
    print(json.dumps([psutil.Process(worker.pid).memory_full_info().uss for worker in workers]))
    for worker in workers:
        worker.close()
"""


def _torch_model() -> tuple[LoadedModel, dict]:
    torch = pytest.importorskip("torch")
    from rung.models.predictors import TorchBackend, make_predictor
    from rung.models.signature import Column

    module = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    model = LoadedModel(name="mlp", version=1, flavor="pytorch", task="classification", path=Path("."), classes=[0, 1],
                        columns=[Column("a", "double"), Column("b", "double")],
                        estimator=make_predictor(TorchBackend(module), task="classification", classes=[0, 1]))
    return model, {"a": [1.0], "b": [2.0]}


@pytest.mark.parametrize("flavour", ["sklearn", "pytorch"])
def test_workers_keep_what_they_inherit_from_the_fork_server_shared(model: LoadedModel, flavour: str, tmp_path: Path) -> None:
    """A worker's own memory (USS) is its model and its buffers, not copies of the libraries the fork server imported.

    In a Python of its own, so that its fork server is the one this model's first worker starts. A PyTorch
    model pickles its module as bytes: the fork server must import torch for the flavour, not for the pickle.
    """
    model, row = (model, {k: [v] for k, v in ROWS[0].items()}) if flavour == "sklearn" else _torch_model()
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(model))
    (tmp_path / "shared.py").write_text(SHARED)
    row = json.dumps(row)
    result = subprocess.run([sys.executable, str(tmp_path / "shared.py"), str(tmp_path / "model.pkl"), row],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    own = json.loads(result.stdout.strip().splitlines()[-1])
    # ~50 MiB for scikit-learn's when it copies them; ~280 MiB when each worker imports torch itself
    assert max(own) < 35 * 2**20, f"a worker holds {max(own) / 2**20:.0f} MiB of its own"


def test_a_process_without_mlflow_fetches_a_version_and_stays_without_it(trained: Path, tmp_path: Path) -> None:
    """A gateway on a host that did not train the version copies it from the registry without keeping MLflow's ~60 MiB."""
    root = tmp_path / "churn"
    shutil.copytree(trained, root)
    shutil.rmtree(root / ".rung" / "models")
    code = ("import sys\nfrom rung.project import Project\nproject = Project.open(sys.argv[1])\n"
            "model = project.models_loader.load(project.store.list_model_versions('churn')[-1])\n"
            "print(model.ref, 'mlflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-2:] == ["churn:1", "False"]
    assert any((root / ".rung" / "models" / "churn" / "1").glob("*.skops"))  # the copy is in the verified cache
