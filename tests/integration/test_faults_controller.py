"""kill -9 (and a pause past the lease) of real `rung controller` processes racing for the lease during a canary.

Two `rung controller` processes run on the project's store with a 2 s
lease while requests are logged at a steady rate (routed by the stored
table, as a gateway would) and the routing table is sampled every 20 ms.
The test repeatedly SIGKILLs whichever process holds the lease and starts
a new one, and once pauses the holder (SIGSTOP) for longer than its lease.
Afterwards:

* the rollout has exactly one terminal move (it is promoted, once);
* the routing table's weights summed to 100 at every sample and in every
  routing event;
* no controller wrote after its lease expired: every fenced event names the
  lease it was written under, and when the writer changes from one event
  to the next, the later one comes after the earlier writer's lease expiry.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from rung.clock import SYSTEM
from rung.delivery.rollout import ALIASES
from rung.project import Project
from rung.store import Deployment, schema
from tests.conftest import RUNG, rung_cli, wait_until
from tests.integration.test_delivery import Traffic

QUIET_CPU = {"OMP_NUM_THREADS": "1"}
LEASE_S = 2.0
SETTINGS = """
deploy:
  strategy: canary
  grace_s: 0
  canary: {steps: [10, 20, 40, 60, 80, 100], window_s: 8, min_requests: 20, max_extensions: 1}
"""


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory: pytest.TempPathFactory, template_project: Path) -> Path:
    root = tmp_path_factory.mktemp("faults-controller") / "churn"
    shutil.copytree(template_project, root)
    with open(root / "rung.yaml", "a") as config:
        config.write(SETTINGS)
    assert rung_cli("run", cwd=root, env=QUIET_CPU).returncode == 0
    data = root / "data" / "train.csv"
    pd.read_csv(data).iloc[::-1].to_csv(data, index=False)
    assert rung_cli("run", cwd=root, env=QUIET_CPU).returncode == 0
    return root


class Fleet:
    """`rung controller` processes; the one named in the lease can be killed or paused."""

    def __init__(self, root: Path, logs: Path) -> None:
        self.root, self.logs = root, logs
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        log = open(self.logs / f"controller-{len(self.processes)}.log", "wb")  # noqa: SIM115 (closed with the process)
        process = subprocess.Popen([RUNG, "controller", "--interval", "0.2", "--lease", str(LEASE_S)], cwd=self.root,
                                   stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **QUIET_CPU})
        self.processes[process.pid] = process

    def leader(self, project: Project, timeout: float = 60) -> int:
        """The pid of a live process of ours that holds an unexpired lease."""
        def holder() -> int | None:
            with project.store.engine.connect() as conn:
                row = conn.execute(schema.leases.select().where(schema.leases.c.name == "controller")).first()
            if row is not None:
                pid = int(row.holder.rsplit(":", 1)[1])
                expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=UTC)
                if pid in self.processes and self.processes[pid].poll() is None and expires > SYSTEM.now():
                    return pid
            return None

        return wait_until(holder, timeout, message="no controller took the lease")

    @staticmethod
    def acted(project: Project, pid: int, after: int, timeout: float) -> int:
        """Wait until ``pid`` wrote an event (or ``timeout``); the newest event id."""
        deadline = time.monotonic() + timeout
        while True:
            events = project.store.events(subject="churn", after_id=after, limit=1000)
            if any(str(e.data.get("lease", {}).get("holder", "")).endswith(f":{pid}") for e in events) \
                    or time.monotonic() > deadline:
                return events[-1].id if events else after
            time.sleep(0.05)

    def stop(self) -> None:
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)
                process.kill()
            process.wait(timeout=30)


@contextlib.contextmanager
def running(target: object, *args: object) -> Iterator[threading.Event]:
    """A thread calling ``target(stop, *args)`` until the block ends."""
    stop = threading.Event()
    thread = threading.Thread(target=target, args=(stop, *args), daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(timeout=30)


def send(stop: threading.Event, traffic: Traffic) -> None:
    while not stop.is_set():  # 200 requests a second, one request-log segment every half second
        traffic.send(100)
        stop.wait(0.5)


def sample(stop: threading.Event, project: Project, sums: list[float]) -> None:
    while not stop.is_set():
        record = project.store.route("churn")
        if record is not None:
            sums.append(sum(float(v["weight"]) for v in record.variants))
        stop.wait(0.02)


def _promotion_applied(project: Project, deployment: Deployment) -> bool:
    """The promoted version alone serves the model and the registry's aliases say so (written after the move)."""
    route = project.store.route(deployment.model)
    aliases = project.store.state(ALIASES).get(deployment.model, {})
    return (route is not None and [(v["name"], int(v["version"])) for v in route.variants] == [("champion", deployment.version)]
            and aliases == {"deployment": deployment.id, "aliases": {"champion": deployment.version, "challenger": None}})


@pytest.mark.timeout(600)  # the module's two `rung run`s come first, slow on a loaded machine
def test_killed_and_paused_controllers_racing_for_the_lease_promote_once_and_never_write_late(
        two_versions: Path, tmp_path: Path) -> None:
    project = Project.open(two_versions)
    assert rung_cli("deploy", "churn:2", "--force", cwd=two_versions).returncode == 0
    deployment = project.store.deployments("churn", active=True)[0]
    fleet = Fleet(two_versions, tmp_path)
    sums: list[float] = []
    kills = pauses = 0
    try:
        with running(send, Traffic(project, SYSTEM)), running(sample, project, sums):  # type: ignore[arg-type]
            fleet.start()
            fleet.start()
            deadline = time.monotonic() + 150
            seen = 0
            while project.store.deployment(deployment.id).active and time.monotonic() < deadline:
                pid = fleet.leader(project)
                seen = fleet.acted(project, pid, seen, timeout=10)  # killed right after a write, or mid-pass
                if kills >= 6:  # enough: let the survivors finish
                    time.sleep(0.5)
                    continue
                if kills == 2 and not pauses:  # a stalled leader, as a slow first pass was: past its lease, then back
                    os.kill(pid, signal.SIGSTOP)
                    time.sleep(LEASE_S * 2)
                    os.kill(pid, signal.SIGCONT)
                    pauses += 1
                    continue
                os.kill(pid, signal.SIGKILL)
                kills += 1
                fleet.start()
            if project.store.deployment(deployment.id).state == "promoted":  # its final routing and aliases follow
                wait_until(lambda: _promotion_applied(project, deployment), 60, interval=0.1,
                           message="the promotion's routing table and registry aliases")
    finally:
        fleet.stop()
    final = project.store.deployment(deployment.id)
    assert final.state == "promoted", final
    assert kills >= 3 and pauses == 1, (kills, pauses)
    events = project.store.events(subject="churn", limit=10_000)
    mine = [e for e in events if e.data.get("deployment") == deployment.id and e.kind == "rollout"]
    assert [e.data["to"] for e in mine if e.data["to"] in ("promoted", "rolled_back")] == ["promoted"]
    assert sums and set(sums) == {100.0}, sorted(set(sums))
    routing = [e for e in events if e.kind == "routing"]
    assert all(sum(v["weight"] for v in e.data["variants"]) == 100.0 for e in routing)
    fenced = [e for e in events if e.actor == "controller"]
    assert len(fenced) >= 4 and all("lease" in e.data for e in fenced), [e.data for e in fenced if "lease" not in e.data]
    for event in fenced:
        assert event.time < datetime.fromisoformat(event.data["lease"]["expires_at"])
    for earlier, later in zip(fenced, fenced[1:]):
        if later.data["lease"]["holder"] != earlier.data["lease"]["holder"]:
            assert later.time >= datetime.fromisoformat(earlier.data["lease"]["expires_at"]), (earlier, later)
    holders = {e.data["lease"]["holder"] for e in fenced}
    refused = sum(p.read_text().count("controller pass stopped") for p in tmp_path.glob("controller-*.log"))
    print(f"{kills} kills, {pauses} pause; {len(fenced)} controller writes by {len(holders)} holders; "
          f"{len(sums)} routing samples, all 100; passes stopped by a lost lease: {refused}")
