"""kill -9 of a real `rung run`: its workers die with it, nothing registers, the next reader marks it failed.

The project's own pipeline file makes ``train`` or ``register`` pause (an
environment variable names the step) after writing its PID to a marker
file; the test waits until the step is running in the store and inside its
body, then SIGKILLs the `rung run` process. Every process of that run
carries a marker in its environment and lives in the run's process group
(the test starts `rung run` in a new session), so a leftover is found both
ways.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

import psutil
import pytest

from tests.conftest import RUNG, rung_cli, wait_until

QUIET_CPU = {"OMP_NUM_THREADS": "1"}  # OpenMP threads spinning on a loaded 2-core machine make training 20x slower

ADDED = '''

import os
import time
from pathlib import Path

from rung.steps import register as rung_register

_train = train


def pause(where):
    """Stand still in step ``where`` when the test asks (SLOW_STEP), after saying so (SLOW_MARK)."""
    if os.environ.get("SLOW_STEP") != where:
        return
    Path(os.environ["SLOW_MARK"]).write_text(str(os.getpid()))
    time.sleep(float(os.environ.get("SLOW_SECONDS", "20")))


def escape(*args):
    """Leave a copy of this worker that nothing watches (as on a Ray node or another OS); it registers late."""
    if os.fork() == 0:
        try:
            time.sleep(float(os.environ["SLOW_SECONDS"]))
            rung_register.func(*args)
            outcome = "registered"
        except BaseException as exc:
            outcome = f"refused: {type(exc).__name__}: {exc}"
        Path(os.environ["SLOW_OUTCOME"]).write_text(outcome)
        os._exit(0)


@step(outputs="model")
def train(train_set, params):
    pause("train")
    return _train.func(train_set, params)


@step(outputs="model_version", cache=False)  # always runs: a second run gets to it at once
def register(model, metrics, train_set, reference_profile, ctx):
    if os.environ.get("SLOW_OUTCOME") and os.environ.get("SLOW_STEP") == "register":
        escape(model, metrics, train_set, reference_profile, ctx)
    pause("register")
    return rung_register.func(model, metrics, train_set, reference_profile, ctx)


pipeline = Pipeline(pipeline.name, [ingest, validate, split, profile, train, evaluate, register])
'''


def _pausing_project(project_dir: Path) -> Path:
    """The template project, its train and register steps wrapped in the pausing ones above."""
    pipeline = project_dir / "pipeline.py"
    pipeline.write_text(pipeline.read_text() + ADDED)
    return project_dir


def _run_processes(marker: str, pgid: int) -> list[psutil.Process]:
    """Every live process of the run: by the marker in its environment or by its process group."""
    found = []
    for proc in psutil.process_iter(["pid", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
            continue
        try:
            in_group = os.getpgid(proc.pid) == pgid
            marked = proc.environ().get("RUNG_TEST_RUN_MARKER") == marker
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
        if in_group or marked:
            found.append(proc)
    return found


def _step_status(project_dir: Path, step: str) -> str | None:
    """The status of ``step`` in the running run, read straight from the SQLite store (cheap to poll)."""
    import sqlite3

    db = project_dir / ".rung" / "rung.db"
    if not db.exists():
        return None
    with contextlib.closing(sqlite3.connect(db, timeout=5)) as conn:
        try:
            row = conn.execute(
                "SELECT s.status FROM step_runs s JOIN pipeline_runs r ON r.id = s.run_id "
                "WHERE r.status = 'running' AND s.name = ? ORDER BY r.started_at DESC LIMIT 1", (step,)
            ).fetchone()
        except sqlite3.OperationalError:  # not migrated yet
            return None
    return row[0] if row else None


def _registry(project_dir: Path) -> dict[str, object]:
    """What MLflow holds: the versions of ``churn`` and its aliases."""
    import mlflow

    uri = f"sqlite:///{project_dir / '.rung' / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    versions = sorted(int(v.version) for v in client.search_model_versions("name='churn'"))
    return {"versions": versions, "aliases": dict(client.get_registered_model("churn").aliases)}


def _kill_during(project_dir: Path, step: str, tmp_path: Path, *, outcome: Path | None = None) -> tuple[str, int]:
    """Start `rung run`, wait until ``step`` runs (in the store and in its body), SIGKILL it.

    Returns the run's environment marker and process group.
    """
    marker = uuid.uuid4().hex
    mark_file = tmp_path / f"{step}.pid"
    env = {**os.environ, **QUIET_CPU, "RUNG_TEST_RUN_MARKER": marker, "SLOW_STEP": step, "SLOW_MARK": str(mark_file),
           "SLOW_SECONDS": "6" if outcome else "20"}
    if outcome:
        env["SLOW_OUTCOME"] = str(outcome)
    proc = subprocess.Popen([RUNG, "run"], cwd=project_dir, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: _step_status(project_dir, step) == "running" and mark_file.exists() or proc.poll() is not None,
                   120, interval=0.1, message=f"waiting for step '{step}' to run")
        assert proc.poll() is None, f"rung run ended before '{step}' ran: {proc.stderr.read() if proc.stderr else ''}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except BaseException:
        _kill_group(proc.pid)
        raise
    finally:
        if proc.stderr:
            proc.stderr.close()
    return marker, proc.pid


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _assert_nothing_left(marker: str, pgid: int, timeout: float = 15) -> None:
    try:
        wait_until(lambda: not _run_processes(marker, pgid), timeout, interval=0.1,
                   message="waiting for the run's processes to exit")
    except AssertionError:
        left = [(p.pid, " ".join(p.cmdline())[:80]) for p in _run_processes(marker, pgid)]
        _kill_group(pgid)
        raise AssertionError(f"processes of the killed run are still alive: {left}") from None


def _assert_run_failed(project_dir: Path) -> dict:
    result = rung_cli("runs", "--json", cwd=project_dir, env=QUIET_CPU)
    assert result.returncode == 0, result.stderr
    latest = json.loads(result.stdout)[0]
    assert latest["status"] == "failed", latest
    assert "process died" in (latest["error"] or ""), latest
    detail = json.loads(rung_cli("runs", latest["id"], "--json", cwd=project_dir, env=QUIET_CPU).stdout)
    assert detail["status"] == "failed"
    assert "running" not in {s["status"] for s in detail["steps"]}, detail["steps"]
    return latest


@pytest.fixture(scope="module")
def registered_template(template_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose first run registered churn:1 (@champion and @challenger); made once, copied per test."""
    root = tmp_path_factory.mktemp("registered") / "churn"
    shutil.copytree(template_project, root)
    _pausing_project(root)
    first = rung_cli("run", "--json", cwd=root, env=QUIET_CPU)
    assert first.returncode == 0, first.stderr
    assert _registry(root) == {"versions": [1], "aliases": {"champion": 1, "challenger": 1}}
    return root


@pytest.fixture
def registered_once(registered_template: Path, tmp_path: Path) -> Path:
    target = tmp_path / "churn"
    shutil.copytree(registered_template, target)
    return target


def test_kill_during_register_leaves_no_worker_and_registers_nothing(registered_once: Path, tmp_path: Path) -> None:
    marker, pgid = _kill_during(registered_once, "register", tmp_path)
    _assert_nothing_left(marker, pgid)
    assert _registry(registered_once) == {"versions": [1], "aliases": {"champion": 1, "challenger": 1}}
    latest = _assert_run_failed(registered_once)
    assert latest["model_version"] is None


def test_kill_during_train_leaves_no_worker(project_dir: Path, tmp_path: Path) -> None:
    _pausing_project(project_dir)
    marker, pgid = _kill_during(project_dir, "train", tmp_path)
    _assert_nothing_left(marker, pgid)
    _assert_run_failed(project_dir)
    assert not (project_dir / ".rung" / "mlflow.db").exists() or _registry_is_empty(project_dir)


def _registry_is_empty(project_dir: Path) -> bool:
    import mlflow

    uri = f"sqlite:///{project_dir / '.rung' / 'mlflow.db'}"
    return not mlflow.MlflowClient(uri, registry_uri=uri).search_registered_models()


def test_a_worker_that_outlives_its_run_does_not_register(registered_once: Path, tmp_path: Path) -> None:
    """The fence: a copy of the register step that nothing kills finds its run's process dead and refuses."""
    outcome = tmp_path / "outcome.txt"
    marker, pgid = _kill_during(registered_once, "register", tmp_path, outcome=outcome)
    try:
        wait_until(lambda: not _run_processes(marker, pgid), 60, interval=0.1,
                   message="waiting for the escaped copy to finish its step")
    finally:
        _kill_group(pgid)
    assert outcome.read_text().startswith("refused: RunAbandoned"), outcome.read_text()
    assert "process died" in outcome.read_text()
    assert _registry(registered_once) == {"versions": [1], "aliases": {"champion": 1, "challenger": 1}}
    _assert_run_failed(registered_once)
