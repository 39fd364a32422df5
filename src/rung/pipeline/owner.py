"""Who owns a pipeline run, and what follows when that process dies.

A run's row names its owner: the PID and host of the process running it and
that process's start time (which tells the owner from a later process that
was given the same PID). Nothing can clean up after a ``kill -9``, so the
living take care of it:

* a step worker exits as soon as its owner does (:func:`watch_owner`, run in
  each worker as it starts), so no orphan keeps training;
* the next reader of a ``running`` run whose owner is gone records it as
  failed (:func:`settle`), so it does not show ``running`` forever;
* a step about to make a lasting change (registering a model version) first
  checks that its run is still running and owned (:func:`ensure_owned`),
  which also holds for a worker nothing could kill (a Ray node, another OS).

An owner on another host is never called gone: from here we cannot tell.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import psutil

from rung.clock import utcnow
from rung.errors import RunAbandoned
from rung.store import MetadataStore, PipelineRun

__all__ = ["RunOwner", "watch_owner", "settle", "settle_all", "ensure_owned"]

START_TIME_TOLERANCE_S = 1.0  # start times are read from /proc and the boot time, both to well under a second
POLL_S = 0.5  # where a process cannot be waited on directly (no pidfd), how often to look




@dataclass(frozen=True)
class RunOwner:
    """A process, named so that PID reuse cannot pass for it."""

    pid: int
    host: str
    started: float  # psutil's create_time, seconds since the epoch

    @classmethod
    def current(cls) -> RunOwner:
        return cls(os.getpid(), socket.gethostname(), psutil.Process().create_time())

    @classmethod
    def of(cls, run: PipelineRun) -> RunOwner | None:
        """The owner recorded with ``run``; ``None`` for runs recorded before owners were."""
        if run.owner_pid is None or run.owner_host is None or run.owner_started is None:
            return None
        return cls(run.owner_pid, run.owner_host, run.owner_started)

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}"

    def is_gone(self) -> bool:
        """Whether this process has certainly exited (a zombie has; another host's owner never is)."""
        if self.host != socket.gethostname():
            return False
        try:
            process = psutil.Process(self.pid)
            if abs(process.create_time() - self.started) > START_TIME_TOLERANCE_S:
                return True  # the PID now belongs to another process
            return process.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True
        except psutil.AccessDenied:
            return False

    def wait_gone(self) -> None:
        """Block until this process has exited: on a pidfd where Linux has one, else by looking every POLL_S."""
        pidfd = None
        with contextlib.suppress(AttributeError, OSError):
            pidfd = os.pidfd_open(self.pid)
        try:
            # Checked after the pidfd is open: it then names this very process, or one that already exited.
            if self.is_gone():
                return
            if pidfd is not None:
                select.select([pidfd], [], [])
                return
            while not self.is_gone():
                time.sleep(POLL_S)
        finally:
            if pidfd is not None:
                os.close(pidfd)


def watch_owner(owner: RunOwner) -> None:
    """Kill this process the moment ``owner`` exits (the initializer of every step worker).

    A worker is a child of multiprocessing's fork server, not of the run's
    process, and the fork server outlives the run while any worker lives,
    so neither a parent-death signal nor an EOF on the pool's pipes ends it;
    waiting on the owner itself does.
    """

    def wait_then_die() -> None:
        owner.wait_gone()
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=wait_then_die, name="rung-owner-watch", daemon=True).start()


def settle(store: MetadataStore, run: PipelineRun, clock: Callable[[], datetime] = utcnow) -> PipelineRun:
    """``run`` as it really stands: a ``running`` run whose owner is gone is first recorded failed.

    Its running steps fail with it and its pending ones are skipped. Two
    readers doing this at once write the same thing; the owner cannot
    race them, it is dead.
    """
    owner = RunOwner.of(run)
    if run.status != "running" or owner is None or not owner.is_gone():
        return run
    now = clock()
    reason = f"process died: the rung process running it ({owner.describe()}) is gone"
    for step in store.steps(run.id):
        if step.status == "running":
            store.record_step(run.id, step.name, status="failed", finished_at=now, error=reason)
        elif step.status == "pending":
            store.record_step(run.id, step.name, status="skipped", error=reason)
    store.update_run(run.id, status="failed", finished_at=now, error=reason)
    return store.get_run(run.id)


def settle_all(store: MetadataStore, runs: list[PipelineRun]) -> list[PipelineRun]:
    return [settle(store, run) for run in runs]


def ensure_owned(store: MetadataStore, run_id: str, step: str) -> None:
    """The fence before a lasting change: raise :class:`RunAbandoned` unless ``run_id`` is running and owned."""
    run = settle(store, store.get_run(run_id))
    if run.status != "running":
        why = run.error or f"it is {run.status}"
        raise RunAbandoned(f"step '{step}' of run {run_id[:8]} will not register: {why}")
