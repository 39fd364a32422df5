"""Replicas agree on routing within a second: real `rung serve` processes sharing one metadata store, under traffic.

PostgreSQL: three gateways hear each change through LISTEN/NOTIFY; each one's
``x-rung-routing-revision`` reaches the new revision within 1 s of the commit,
with no failed request; a table whose versions are loaded is swapped while
another version is still loading; a dropped change channel falls back to the
poll and comes back; `rung status` lists the replicas with their revisions,
marks one that went quiet, and forgets one that stopped cleanly.

SQLite: two gateways, the revision poll (``serve.refresh_s``), the same 1 s.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa

from rung.delivery.routing import RoutingTable, set_routing
from rung.project import Project
from rung.serving.auth import create_token
from tests.conftest import RUNG, one_line_error, rung_cli, stop_processes, wait_until

ROW = {"tenure_months": 54, "monthly_charges": 77.73, "contract": "one-year", "region": "north",
       "support_calls": 1, "age": 42, "paperless_billing": "no"}
WITHIN_S = 1.0
CHANGES = 10


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_versions(root: Path, env: dict[str, str]) -> None:
    """Two registered versions of churn; the gateways predict in a thread (no worker processes to start on 2 cores)."""
    with open(root / "rung.yaml", "a") as config:
        config.write("\nserve:\n  isolation: thread\n")
    for i in range(2):
        if i:
            data = root / "data" / "train.csv"
            pd.read_csv(data).iloc[::-1].to_csv(data, index=False)
        run = rung_cli("run", cwd=root, env=env)
        assert run.returncode == 0, run.stderr


def _split(weight: float, *, v2: str = "canary") -> RoutingTable:
    return RoutingTable.build("churn", [{"name": v2, "version": 2, "weight": weight},
                                        {"name": "champion", "version": 1, "weight": 1 - weight}])


class Traffic:
    """One client per replica, a request every 20 ms: (sent, received, revision) per replica, and every failure."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.answers: dict[str, list[tuple[float, float, int]]] = {u: [] for u in urls}
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._load, args=(u,), daemon=True) for u in urls]

    def _load(self, url: str) -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    r = client.post("/invocations", json={"dataframe_records": [ROW]})
                except httpx.HTTPError as exc:
                    self.failures.append(f"{url}: {exc!r}")
                    continue
                if r.status_code != 200:
                    self.failures.append(f"{url}: {r.status_code} {r.text[:200]}")
                else:
                    self.answers[url].append((sent, time.monotonic(), int(r.headers["x-rung-routing-revision"])))
                time.sleep(0.02)

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def applied(self, url: str, revision: int, since: float, timeout: float = 30.0) -> float:
        """Seconds from ``since`` to the first answer (received) at ``revision`` or later, after which none is older."""
        def found() -> float | None:
            answers = [a for a in self.answers[url] if a[0] >= since]
            for i, (_, received, seen) in enumerate(answers):
                if seen >= revision and all(later >= revision for _, _, later in answers[i:]) and len(answers) > i + 2:
                    return received - since
            return None

        return wait_until(found, timeout=timeout, interval=0.05, message=f"{url} answering with revision {revision}")


def _metric(url: str, name: str) -> float | None:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    found = re.search(rf"^{name} ([\d.e+-]+)$", text, re.M)
    return float(found.group(1)) if found else None


@contextmanager
def _gateways(root: Path, env: dict[str, str], count: int) -> Iterator[tuple[list[str], list[subprocess.Popen[bytes]]]]:
    """``count`` `rung serve` processes in ``root``, each on its own port (the last one named by RUNG_REPLICA)."""
    ports = [_port() for _ in range(count)]
    logs = [open(root / f"serve-{i}.log", "wb") for i in range(count)]  # noqa: SIM115 (closed below)
    processes = []
    for i, port in enumerate(ports):
        extra = {"RUNG_REPLICA": f"replica-{i}.named"} if i == count - 1 else {}
        processes.append(subprocess.Popen([RUNG, "serve", "--port", str(port)], cwd=root, env={**os.environ, **env, **extra},
                                          stdout=logs[i], stderr=subprocess.STDOUT))
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for i, url in enumerate(urls):
            def up(i: int = i, url: str = url) -> bool:
                assert processes[i].poll() is None, (root / f"serve-{i}.log").read_text()
                try:
                    return httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until(up, timeout=120, message=f"gateway {i} ready")
        yield urls, processes
    finally:
        stop_processes(*[p for p in processes if p.poll() is None])
        for log in logs:
            log.close()


def _replicas(root: Path, env: dict[str, str]) -> list[dict]:
    """What `rung status --json` says of the replicas serving churn."""
    shown = rung_cli("status", "--json", cwd=root, env=env)
    assert shown.returncode == 0, shown.stderr
    (churn,) = [m for m in json.loads(shown.stdout) if m["model"] == "churn"]
    return churn["replicas"]


def _heard(project: Project) -> dict[str, tuple[int | None, str | None]]:
    """The registry read straight from the store (cheaper to poll than the CLI): url -> (churn's revision, why it lags)."""
    revisions = project.store.route_revisions()
    return {r.url: (r.revisions.get("churn"), r.lag(revisions)) for r in project.store.replicas()}


def _changes(project: Project, traffic: Traffic, urls: list[str], deployer: str | None, count: int = CHANGES) -> list[float]:
    """``count`` weight changes, through each replica's control API in turn (or the store); every replica's lag."""
    lags = []
    for i in range(count):
        table = _split(round(0.1 + 0.08 * i, 2))
        committed = time.monotonic()  # before the write: the lag measured is an upper bound
        if deployer is not None:
            body = {"variants": [v.to_dict() for v in table.variants], "reason": f"change {i + 1}"}
            put = httpx.put(f"{urls[i % len(urls)]}/api/routes/churn", json=body, timeout=10,
                            headers={"authorization": f"Bearer {deployer}"})
            assert put.status_code == 200, put.text
            revision = put.json()["revision"]
        else:
            revision = set_routing(project.store, table, actor="test").revision
        lags += [traffic.applied(url, revision, committed) for url in urls]
        time.sleep(0.5)
    return lags


@pytest.mark.postgres
def test_three_replicas_on_postgresql_apply_each_change_within_a_second(
        project_dir: Path, postgres_url: str) -> None:
    env = {"RUNG_DATABASE_URL": postgres_url}
    _two_versions(project_dir, env)
    project = Project.open(project_dir, overrides={"store.database_url": postgres_url})
    set_routing(project.store, RoutingTable.build("churn", [{"name": "champion", "version": 1, "weight": 1}]), actor="test")
    deployer = create_token(project.store, role="deployer")[1]
    with _gateways(project_dir, env, 3) as (urls, processes), Traffic(urls) as traffic:
        wait_until(lambda: all(_metric(u, "rung_routing_listening") == 1 for u in urls), timeout=10,
                   message="every replica listening")

        # A version to load (held up: its record is locked) does not hold up a table whose versions are loaded.
        engine = sa.create_engine(postgres_url)
        with engine.connect() as lock:
            lock.exec_driver_sql("LOCK TABLE model_versions IN ACCESS EXCLUSIVE MODE")
            set_routing(project.store, _split(0.1), actor="test")  # needs churn:2: its load waits for the lock
            time.sleep(0.5)
            committed = time.monotonic()
            loaded_only = RoutingTable.build("churn", [{"name": "champion-b", "version": 1, "weight": 1}])
            revision = set_routing(project.store, loaded_only, actor="test").revision
            held_up = [traffic.applied(url, revision, committed) for url in urls]
            lock.rollback()
        engine.dispose()
        assert max(held_up) <= WITHIN_S, held_up
        # churn:2 loads now that the lock is gone (the table that wanted it was superseded): a weight of 0 brings it in.
        committed = time.monotonic()
        revision = set_routing(project.store, _split(0.0), actor="test").revision
        for url in urls:
            traffic.applied(url, revision, committed, timeout=120)

        lags = _changes(project, traffic, urls, deployer)
        assert max(lags) <= WITHIN_S, lags

        # The change channel drops (its backends cut off): the poll takes over, then the listener is back.
        admin = sa.create_engine(postgres_url)
        with admin.begin() as conn:
            cut = conn.execute(sa.text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                       "WHERE application_name LIKE :listeners"), {"listeners": "rung-listen %"}).scalar()
        admin.dispose()
        assert cut == 3
        committed = time.monotonic()
        revision = set_routing(project.store, _split(0.5), actor="test").revision
        after_cut = [traffic.applied(url, revision, committed) for url in urls]
        assert max(after_cut) <= WITHIN_S, after_cut
        wait_until(lambda: all(_metric(u, "rung_routing_listening") == 1 for u in urls), timeout=30,
                   message="every replica listening again")
        lags_back = _changes(project, traffic, urls, None, count=3)
        assert max(lags_back) <= WITHIN_S, lags_back

        # `rung status`: the three replicas, each at the store's revision, none lagging.
        last = project.store.route("churn").revision
        wait_until(lambda: sorted(_heard(project).values()) == [(last, None)] * 3, timeout=5,
                   message="every replica's heartbeat at the last revision")
        replicas = _replicas(project_dir, env)
        assert len(replicas) == 3 and all(r["lagging"] is None and r["revision"] == last for r in replicas), replicas
        assert sorted(r["url"] for r in replicas) == sorted(urls)
        assert "replica-2.named" in {r["id"] for r in replicas}
        table = rung_cli("status", cwd=project_dir, env={**env, "COLUMNS": "250"})
        assert table.returncode == 0 and "Gateway replicas" in table.stdout and "replica-2.named" in table.stdout
        assert "LAGGING" not in table.stdout
        traffic.__exit__()
        assert traffic.failures == []

        # One replica killed (-9) is marked lagging once quiet for 5 s; one stopped cleanly removes itself.
        processes[0].send_signal(signal.SIGKILL)
        processes[1].send_signal(signal.SIGTERM)
        processes[1].wait(30)
        wait_until(lambda: (_heard(project).get(urls[0], (None, None))[1] or "").startswith("not seen for"), timeout=15,
                   message="the killed replica marked lagging")
        replicas = _replicas(project_dir, env)
        assert sorted(r["url"] for r in replicas) == sorted([urls[0], urls[2]])  # the stopped one is gone
        assert [r["url"] for r in replicas if r["lagging"]] == [urls[0]], replicas
        table = rung_cli("status", cwd=project_dir, env={**env, "COLUMNS": "250"})
        assert "LAGGING" in table.stdout and "not seen for" in table.stdout
    print(f"agreement: max {max(lags) * 1000:.0f} ms over {len(lags)} (replica, change); beside a held-up load: "
          f"{max(held_up) * 1000:.0f} ms; after the channel dropped: {max(after_cut) * 1000:.0f} ms")


def test_two_replicas_on_sqlite_poll_and_apply_each_change_within_a_second(project_dir: Path) -> None:
    _two_versions(project_dir, {})
    project = Project.open(project_dir)
    set_routing(project.store, _split(0.1), actor="test")
    with _gateways(project_dir, {}, 2) as (urls, _), Traffic(urls) as traffic:
        assert [_metric(u, "rung_routing_listening") for u in urls] == [0, 0]  # nothing to hear: the poll
        lags = _changes(project, traffic, urls, None)
        assert max(lags) <= WITHIN_S, lags
        last = project.store.route("churn").revision
        wait_until(lambda: sorted(_heard(project).values()) == [(last, None)] * 2, timeout=5,
                   message="both replicas' heartbeats at the last revision")
        assert [(r["revision"], r["lagging"]) for r in _replicas(project_dir, {})] == [(last, None)] * 2
    assert traffic.failures == []
    print(f"agreement (SQLite poll): max {max(lags) * 1000:.0f} ms over {len(lags)} (replica, change)")



def test_a_deploy_loads_its_candidate_on_every_replica_so_its_first_step_reaches_them_within_a_second(
        project_dir: Path) -> None:
    _two_versions(project_dir, {})
    with open(project_dir / "rung.yaml", "a") as config:
        config.write("\ndeploy:\n  strategy: canary\n  canary: {steps: [30, 100], window_s: 60}\n")
    project = Project.open(project_dir)
    set_routing(project.store, RoutingTable.build("churn", [{"name": "champion", "version": 1, "weight": 1}]), actor="test")
    with _gateways(project_dir, {}, 2) as (urls, _), Traffic(urls) as traffic:
        first = project.store.route("churn").revision
        wait_until(lambda: sorted(_heard(project).values()) == [(first, None)] * 2, timeout=10,
                   message="both replicas at the champion's table")
        deployed = rung_cli("deploy", "churn:2", "--force", cwd=project_dir)
        returned = time.monotonic()
        assert deployed.returncode == 0, deployed.stderr
        route = project.store.route("churn")
        assert {v["version"]: v["weight"] for v in route.variants}[2] == 30, route.variants  # the first step
        # churn:2 was loaded on both before the step was written: the step itself is a swap, on both at once
        lags = [traffic.applied(url, route.revision, returned) for url in urls]
        assert max(lags) <= WITHIN_S, lags
        staged = [e for e in project.store.events("churn", kinds=["routing"])
                  if "loading churn:2 on every replica" in str(e.data.get("reason"))]
        assert len(staged) == 1, [e.data for e in project.store.events("churn", kinds=["routing"])]
    assert traffic.failures == []
    print(f"first canary step after loading on both replicas: max {max(lags) * 1000:.0f} ms")


def test_a_replica_is_named_by_its_host_and_port_unless_named_and_a_bad_name_is_one_clear_error(project_dir: Path) -> None:
    from rung.serving.gateway import Gateway
    from rung.serving.replica import _hostname

    assert Gateway(Project.open(project_dir), port=8123).replica == f"{_hostname()}-8123"
    named = Project.open(project_dir, overrides={"serve.replica": "eu-west.a_1"})
    assert Gateway(named, port=8123).replica == "eu-west.a_1"
    for bad in ("../etc", "a/b", "..", "x" * 101, "tab\there"):
        result = rung_cli("serve", "--port", str(_port()), cwd=project_dir, env={"RUNG_REPLICA": bad}, timeout=60)
        line = one_line_error(result, "serve.replica", "RUNG_REPLICA")
        assert "letters, digits" in line, line
    with open(project_dir / "rung.yaml", "a") as config:
        config.write("\nserve:\n  replica: 'host 1'\n")
    one_line_error(rung_cli("status", cwd=project_dir, timeout=60), "serve.replica", "'host 1'")
