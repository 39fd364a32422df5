"""Two hosts on one machine: two gateways from two project folders that share only the services.

What a second host shares with the first is only what `docs/scale.md` says
it must: PostgreSQL (metadata), an MLflow tracking server with proxied
artifacts, and an object store (request log and artifacts). Each "host" is
its own project folder with its own empty ``.rung/``; host B is the
project's code and rung.yaml as a clone of the repository would have them,
nothing that host A wrote. Host A runs a gateway and the controller; host B
runs a gateway and the scheduler. Traffic goes to both gateways; a canary
is deployed, judged on both replicas' requests, and promoted; then a
request answered by B is found from A, and monitoring counts both.

    .venv/bin/python scripts/two_hosts.py [--keep DIR] [--json]

It needs PostgreSQL on 127.0.0.1:5432 (scripts/postgres) and moto's S3
server (the dev extras). Exit status 0 when every check holds; the checks
and their figures are printed (``--json``: one JSON object). The test
``tests/integration/test_two_hosts.py`` runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
RUNG = str(BIN / "rung")
ADMIN_URL = os.environ.get("RUNG_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
ROW = {"tenure_months": 54, "monthly_charges": 77.73, "contract": "one-year", "region": "north",
       "support_calls": 1, "age": 42, "paperless_billing": "no"}
FAST = """
deploy:
  strategy: canary
  grace_s: 5
  canary: {{steps: [50, 100], window_s: 3, min_requests: 20, max_extensions: 10}}
monitor:
  window: 4s
  min_rows: 20
  label_delay: 0s
  request_log: {{uri: "s3://{bucket}/requests", flush_s: 0.2}}
store: {{database_url: "{database}"}}
tracking: {{uri: "{tracking}"}}
artifacts: {{uri: "s3://{bucket}/artifacts"}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, predicate: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            value = predicate()
            if value:
                return value
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


def answers(url: str) -> bool:
    import httpx

    return httpx.get(url, timeout=2).status_code == 200


class Topology:
    """The services and the processes of both hosts; everything stopped by :meth:`close`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ)
        self.database: str | None = None

    def start(self, name: str, argv: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(self.logs / f"{name}.log", "wb") as log:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env={**self.env, **(env or {})})
        self.processes.append((name, process))
        return process

    def rung(self, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([RUNG, *args], cwd=cwd, env=self.env, capture_output=True, text=True, timeout=timeout)

    def services(self) -> dict[str, str]:
        """moto's S3 server, a fresh PostgreSQL database, an MLflow tracking server; their URLs."""
        import pyarrow.fs as pafs
        import sqlalchemy as sa

        s3_port = free_port()
        self.start("s3", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)], cwd=self.root)
        endpoint = f"http://127.0.0.1:{s3_port}"
        self.env.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="rung", AWS_SECRET_ACCESS_KEY="rung",
                        AWS_REGION="us-east-1")
        wait_for("the S3 server", lambda: answers(f"{endpoint}/moto-api/"), 30)
        bucket = "rung-shared"
        pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{s3_port}", scheme="http", access_key="rung", secret_key="rung",
                          region="us-east-1", allow_bucket_creation=True).create_dir(bucket)

        admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
        name = f"rung_two_hosts_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        admin.dispose()
        self.database = sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)

        mlflow_port = free_port()
        shared = self.root / "mlflow-server"
        shared.mkdir()
        self.start("mlflow", [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
                              "--backend-store-uri", f"sqlite:///{shared / 'mlflow.db'}",
                              "--artifacts-destination", str(shared / "artifacts"), "--workers", "1"], cwd=shared)
        tracking = f"http://127.0.0.1:{mlflow_port}"
        wait_for("the MLflow server", lambda: answers(f"{tracking}/health"), 120)
        return {"bucket": bucket, "database": self.database, "tracking": tracking, "s3": endpoint}

    def close(self) -> None:
        for _, process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _, process in reversed(self.processes):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        if self.database:
            import sqlalchemy as sa

            admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                name = sa.make_url(self.database).database
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()

    def tail(self, lines: int = 30) -> str:
        out = []
        for log in sorted(self.logs.glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(out)


@contextlib.contextmanager
def topology(keep: Path | None) -> Iterator[Topology]:
    root = keep or Path(tempfile.mkdtemp(prefix="rung-two-hosts-"))
    root.mkdir(parents=True, exist_ok=True)
    world = Topology(root)
    try:
        yield world
    finally:
        world.close()
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)


def host_a(world: Topology, services: dict[str, str]) -> Path:
    """The first host's project: created, configured for the shared services, two versions trained."""
    import pandas as pd

    from rung.templates import create_project

    root = world.root / "host-a" / "churn"
    create_project("churn", "tabular-classification", root, rows=1500, git=False)
    with open(root / "rung.yaml", "a") as config:
        config.write(FAST.format(**services))
    for attempt in (1, 2):
        ran = world.rung("run", cwd=root)
        if ran.returncode != 0:
            raise RuntimeError(f"rung run {attempt} on host A failed: {ran.stderr or ran.stdout}")
        data = root / "data" / "train.csv"
        pd.read_csv(data).iloc[::-1].to_csv(data, index=False)  # the second run trains on other rows: version 2
    return root


def host_b(world: Topology, a: Path) -> Path:
    """The second host's project: the code and rung.yaml only (a clone of the repository), an empty .rung."""
    root = world.root / "host-b" / "churn"
    shutil.copytree(a, root, ignore=shutil.ignore_patterns(".rung", "data", ".git", "__pycache__"))
    return root


class Traffic:
    """Requests to both gateways in turn, each answer kept with the replica that gave it."""

    def __init__(self, urls: dict[str, str]) -> None:
        self.urls = urls
        self.answers: list[dict[str, Any]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(name, url), daemon=True) for name, url in urls.items()]

    def _run(self, replica: str, url: str) -> None:
        import httpx

        with httpx.Client(base_url=url, timeout=10) as client:
            while not self._stop.is_set():
                try:
                    r = client.post("/invocations", json={"dataframe_records": [ROW]})
                    if r.status_code == 200:
                        self.answers.append({"replica": replica, "at": time.monotonic(), "id": r.headers["x-request-id"],
                                             "version": int(r.headers["x-rung-model-version"])})
                    else:
                        self.failures.append(f"{replica}: {r.status_code} {r.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failures.append(f"{replica}: {exc!r}")
                time.sleep(0.01)

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def run(keep: Path | None) -> dict[str, Any]:
    """Build the topology, drive a canary through it, and return the checks with their figures."""
    checks: dict[str, Any] = {}
    with topology(keep) as world:
        try:
            services = world.services()
            a = host_a(world, services)
            b = host_b(world, a)
            ports = {"host-a": free_port(), "host-b": free_port()}
            for name, folder in (("host-a", a), ("host-b", b)):
                world.start(f"gateway-{name}", [RUNG, "serve", "--port", str(ports[name])], cwd=folder,
                            env={"RUNG_REPLICA": name})
            urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
            for url in urls.values():
                wait_for(f"{url} ready", lambda url=url: answers(f"{url}/v2/health/ready"), 120)
            world.start("controller", [RUNG, "controller", "--interval", "0.3"], cwd=a)
            world.start("scheduler", [RUNG, "scheduler", "--interval", "1"], cwd=b)
            with Traffic(urls) as traffic:
                time.sleep(2)
                deployed = world.rung("deploy", "churn:2", "--force", "--json", cwd=b)
                if deployed.returncode != 0:
                    raise RuntimeError(f"rung deploy failed: {deployed.stderr}")
                started = time.monotonic()

                def settled() -> dict[str, Any] | None:
                    state = json.loads(world.rung("status", "--json", cwd=a).stdout)[0]
                    return state if state["rollout"]["state"] in ("promoted", "rolled_back") else None

                state = wait_for("the rollout to settle", settled, 180)
                checks["rollout"] = state["rollout"]["state"]
                checks["rollout_s"] = round(time.monotonic() - started, 1)
                time.sleep(2)
            checks["requests"] = len(traffic.answers)
            checks["failed_requests"] = len(traffic.failures)
            checks["failures_sample"] = traffic.failures[:3]
            by_replica = {name: sum(1 for x in traffic.answers if x["replica"] == name) for name in urls}
            checks["answered_by"] = by_replica
            checks.update(evidence(world, a, b, traffic))
        except Exception as exc:
            checks["error"] = f"{type(exc).__name__}: {exc}"
            checks["logs"] = world.tail()
    return checks


def evidence(world: Topology, a: Path, b: Path, traffic: Traffic) -> dict[str, Any]:
    """What each host can see of the other's requests: judgements, `rung history --request`, monitoring."""
    out: dict[str, Any] = {}
    events = [json.loads(line) for line in world.rung("events", "--json", cwd=a).stdout.splitlines() if line.strip()]
    judged = [seen for e in events if e.get("kind", "").startswith("rollout") for seen in [_replicas_in(e.get("data"))] if seen]
    out["judgement_replicas"] = judged[-1] if judged else None
    answered_by_b = next((x["id"] for x in reversed(traffic.answers) if x["replica"] == "host-b"), None)
    if answered_by_b is not None:
        found = world.rung("history", "churn", "--request", answered_by_b, "--json", cwd=a)
        rows = json.loads(found.stdout) if found.returncode == 0 and found.stdout.strip() else []
        out["history_from_a_finds_b"] = bool(rows)
    monitored = world.rung("monitor", "--json", cwd=b)
    out["monitor_exit"] = monitored.returncode
    windows = json.loads(monitored.stdout) if monitored.returncode == 0 and monitored.stdout.strip() else []
    seen: dict[str, int] = {}
    for window in windows if isinstance(windows, list) else []:
        for replica, rows in (_replicas_in(window.get("report")) or {}).items():
            seen[replica] = seen.get(replica, 0) + rows
    out["monitor_replicas"] = seen
    return out


def _replicas_in(data: Any) -> dict[str, int] | None:
    """``{replica: rows}`` from the first ``replicas`` list found in a record (an event's evidence, a window's report)."""
    if isinstance(data, dict):
        listed = data.get("replicas")
        if isinstance(listed, list) and listed and all(isinstance(one, dict) for one in listed):
            return {str(one["replica"]): int(one["rows"]) for one in listed if one.get("rows")}
        for value in data.values():
            found = _replicas_in(value)
            if found:
                return found
    return None


def passed(checks: dict[str, Any]) -> list[str]:
    """The checks that failed, in words (empty: all hold)."""
    failed = []
    if "error" in checks:
        failed.append(checks["error"])
        return failed
    if checks.get("rollout") != "promoted":
        failed.append(f"the canary was not promoted: {checks.get('rollout')}")
    if checks.get("failed_requests"):
        failed.append(f"{checks['failed_requests']} failed requests: {checks.get('failures_sample')}")
    if not all(checks.get("answered_by", {}).values()):
        failed.append(f"a gateway answered nothing: {checks.get('answered_by')}")
    judged = checks.get("judgement_replicas") or {}
    if set(judged) != {"host-a", "host-b"}:
        failed.append(f"the judgement did not see both replicas: {judged}")
    if not checks.get("history_from_a_finds_b"):
        failed.append("rung history --request on host A did not find a request host B answered")
    if set(checks.get("monitor_replicas") or {}) != {"host-a", "host-b"}:
        failed.append(f"monitoring did not count both replicas: {checks.get('monitor_replicas')}")
    return failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, default=None, help="build the topology in DIR and keep it")
    parser.add_argument("--json", action="store_true", help="print the checks as one JSON object")
    args = parser.parse_args()
    checks = run(args.keep)
    failed = passed(checks)
    checks["failed_checks"] = failed
    if args.json:
        print(json.dumps(checks, default=str))
    else:
        for key, value in checks.items():
            if key != "logs":
                print(f"{key:>24}: {value}")
        if "logs" in checks:
            print(checks["logs"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
