"""rung.pipeline.owner with real processes and a real SQLite store: who owns a run, and what follows its death."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest

from rung.errors import RunAbandoned
from rung.pipeline import Pipeline, step
from rung.pipeline.artifacts import ArtifactStore
from rung.pipeline.executors import LocalExecutor
from rung.pipeline.owner import RunOwner, ensure_owned, settle
from rung.pipeline.runner import Runner
from rung.store import MetadataStore, PipelineRun


@step
def worker_pid():
    return os.getpid()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MetadataStore]:
    s = MetadataStore(f"sqlite:///{tmp_path}/rung.db")
    yield s
    s.close()


def _dead_owner() -> RunOwner:
    """A real process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    owner = RunOwner(proc.pid, RunOwner.current().host, psutil.Process(proc.pid).create_time())
    proc.wait()
    return owner


def _running(store: MetadataStore, run_id: str, owner: RunOwner) -> None:
    store.create_run(
        PipelineRun(id=run_id, project="p", pipeline="x", status="running", trigger="t",
                    started_at=datetime.now(UTC), owner_pid=owner.pid, owner_host=owner.host,
                    owner_started=owner.started),
        steps=["a", "b"],
    )
    store.record_step(run_id, "a", status="running")


def test_the_runner_records_this_process_as_the_owner(store: MetadataStore, tmp_path: Path) -> None:
    executor = LocalExecutor(1)
    result = Runner(store, ArtifactStore(tmp_path / "a"), executor, project_root=tmp_path).run(
        Pipeline("one", [worker_pid]), project="p")
    me = RunOwner.current()
    assert RunOwner.of(result.run) == me
    assert not me.is_gone()


def test_a_run_whose_owner_died_is_settled_as_failed(store: MetadataStore) -> None:
    owner = _dead_owner()
    _running(store, "dead1", owner)
    run = settle(store, store.get_run("dead1"))
    assert run.status == "failed" and run.finished_at is not None
    assert run.error is not None and "process died" in run.error and f"pid {owner.pid}" in run.error
    assert {s.name: s.status for s in store.steps("dead1")} == {"a": "failed", "b": "skipped"}


def test_a_live_owner_and_an_unknown_one_are_left_running(store: MetadataStore) -> None:
    _running(store, "live1", RunOwner.current())
    assert settle(store, store.get_run("live1")).status == "running"
    elsewhere = RunOwner(1, "another-host.example", 0.0)  # from here we cannot tell: not gone
    _running(store, "away1", elsewhere)
    assert settle(store, store.get_run("away1")).status == "running"


def test_a_reused_pid_is_not_the_owner() -> None:
    me = RunOwner.current()
    assert RunOwner(me.pid, me.host, me.started - 3600).is_gone()


def test_the_fence_refuses_a_dead_run_and_lets_a_live_one_pass(store: MetadataStore) -> None:
    _running(store, "live2", RunOwner.current())
    ensure_owned(store, "live2", "register")
    _running(store, "dead2", _dead_owner())
    with pytest.raises(RunAbandoned, match=r"step 'register' of run dead2 will not register: process died"):
        ensure_owned(store, "dead2", "register")
    store.update_run("live2", status="succeeded")
    with pytest.raises(RunAbandoned, match="it is succeeded"):
        ensure_owned(store, "live2", "register")


WATCHED = """
import sys, time
from rung.pipeline.owner import RunOwner, watch_owner
watch_owner(RunOwner(int(sys.argv[1]), RunOwner.current().host, float(sys.argv[2])))
print("watching", flush=True)
time.sleep(60)
"""


def test_a_watched_process_dies_with_its_owner() -> None:
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = psutil.Process(owner.pid).create_time()
        watched = subprocess.Popen([sys.executable, "-c", WATCHED, str(owner.pid), str(started)],
                                   stdout=subprocess.PIPE, text=True)
        assert watched.stdout is not None and watched.stdout.readline() == "watching\n"
        time.sleep(0.2)
        assert watched.poll() is None  # alive while its owner is
        owner.kill()
        owner.wait()
        assert watched.wait(timeout=10) == -signal.SIGKILL
    finally:
        owner.kill()
