"""``rung serve --processes 2``: two gateway processes on one port, over real HTTP, with real signals.

Each process is a replica of its own; routing changes, sticky keys and
shadows hold across both, SIGTERM drains both, a killed process is started
again and one whose supervisor is killed exits by itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import RUNG, Load, rung_cli
from tests.integration.test_gateway import ROW, _free_port, oip

PROCESSES = 2


class Gateway:
    def __init__(self, root: Path, port: int, process: subprocess.Popen[bytes]) -> None:
        self.root, self.url, self.process = root, f"http://127.0.0.1:{port}", process

    def answer(self, key: str | None = None, rows: int = 1) -> httpx.Response:
        """A prediction over a new connection: the kernel picks the process."""
        headers = {"x-rung-key": key} if key else {}
        return httpx.post(f"{self.url}/v2/models/churn/infer", json=oip([ROW] * rows), headers=headers, timeout=30)

    def log(self) -> str:
        return (self.root / "serve.log").read_text()

    def children(self) -> list[psutil.Process]:
        """The gateway processes (the supervisor's children that are not multiprocessing's helpers)."""
        return [c for c in psutil.Process(self.process.pid).children()
                if "resource_tracker" not in " ".join(c.cmdline())]


def _wait(predicate: Callable[[], bool], within: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < within:
        with contextlib.suppress(httpx.HTTPError):
            if predicate():
                return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {within} s")


def _replicas(root: Path) -> set[str]:
    from rung.project import Project

    return {r.id for r in Project.open(root).store.replicas(active_within_s=5)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, template_project: Path) -> Path:
    root = tmp_path_factory.mktemp("processes") / "churn"
    shutil.copytree(template_project, root)
    with open(root / "rung.yaml", "a") as config:
        config.write("\nserve:\n  refresh_s: 0.1\n")
    run = rung_cli("run", "--json", cwd=root)
    assert run.returncode == 0, run.stderr
    return root


@contextlib.contextmanager
def serving(root: Path, *extra: str) -> Iterator[Gateway]:
    port = _free_port()
    with open(root / "serve.log", "w") as log:
        process = subprocess.Popen([RUNG, "serve", "--port", str(port), "--grpc-port", "0", "--processes", str(PROCESSES),
                                    *extra], cwd=root, stdout=log, stderr=subprocess.STDOUT)
    gateway = Gateway(root, port, process)
    try:
        _wait(lambda: len({r for r in _replicas(root) if r.endswith((".0", ".1"))}) == PROCESSES
              and httpx.get(f"{gateway.url}/v2/health/ready", timeout=1).status_code == 200, 120, gateway.log())
        yield gateway
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                for child in gateway.children():
                    child.kill()
                process.kill()


def test_both_processes_answer_and_log_as_replicas_of_their_own(trained: Path) -> None:
    with serving(trained) as gateway:
        (status,) = json.loads(rung_cli("status", "--json", cwd=trained).stdout)
        serving_rev = {r["id"]: r["revision"] for r in status["replicas"] if r["id"].endswith((".0", ".1"))}
        assert len(serving_rev) == PROCESSES and set(serving_rev.values()) == {status["routing"]["revision"]}, status
        answered = [gateway.answer() for _ in range(60)]
        assert {r.status_code for r in answered} == {200}
    # the drain wrote each process's log under its own prefix; both got connections
    prefixes = {p.name for p in (trained / ".rung" / "requests").iterdir() if p.name.startswith("replica=")}
    assert len({p for p in prefixes if p.endswith((".0", ".1"))}) == PROCESSES, prefixes


def test_routing_changes_stickiness_and_shadows_hold_across_both_processes(trained: Path) -> None:
    data = trained / "data" / "train.csv"
    lines = data.read_text().splitlines()
    data.write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    run = rung_cli("run", "--json", cwd=trained)
    assert run.returncode == 0 and json.loads(run.stdout)["model_version"] == 2, run.stderr
    made = rung_cli("token", "create", "--role", "deployer", "--json", cwd=trained)
    token = json.loads(made.stdout)["token"]
    with serving(trained) as gateway:
        def route(body: dict) -> None:
            put = httpx.put(f"{gateway.url}/api/routes/churn", json=body | {"reason": "test"},
                            headers={"authorization": f"Bearer {token}"}, timeout=30)
            assert put.status_code == 200, put.text

        with Load(lambda _: gateway.answer(), threads=3) as load:
            for body, expected in (({"variants": [{"name": "canary", "version": 2}]}, {2}),
                                   ({"variants": [{"name": "champion", "version": 1}]}, {1}),
                                   ({"variants": [{"name": "canary", "version": 2}]}, {2})):
                route(body)
                # 20 new connections land on both processes: every one of them has the change
                _wait(lambda e=expected: {int(gateway.answer().headers["x-rung-model-version"]) for _ in range(20)} == e,
                      30, f"the change to {expected}")
        assert load.failures() == []

        route({"variants": [{"name": "a", "version": 1, "weight": 1}, {"name": "b", "version": 2, "weight": 1}]})
        _wait(lambda: len({gateway.answer(f"k{i}").headers["x-rung-model-version"] for i in range(30)}) == 2, 30, "a split")
        for key in ("alice", "bob", "carol", "dave"):  # whichever process a connection reaches, a key keeps its version
            assert len({gateway.answer(key).headers["x-rung-model-version"] for _ in range(12)}) == 1


def test_sigterm_drains_both_processes_and_every_answer_is_logged(trained: Path) -> None:
    from rung.monitor.logreader import RequestLogReader

    with serving(trained) as gateway, Load(lambda _: gateway.answer(rows=20), threads=4) as load:
        _wait(lambda: load.ok() >= 20, 20, "answers before the signal")
        gateway.process.send_signal(signal.SIGTERM)
        assert gateway.process.wait(timeout=60) == 0, gateway.log()
    assert load.failures("refused") == []
    answered = [r.headers["x-request-id"] for _, r in load.answers]
    logged = RequestLogReader(trained / ".rung" / "requests").window(
        "churn", datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
    mine = logged[logged["request_id"].isin(answered) & ~logged["shadow"]]
    assert len(mine) == 20 * len(answered)


def test_a_killed_process_is_started_again_and_a_killed_supervisor_takes_its_processes_along(trained: Path) -> None:
    with serving(trained) as gateway:
        first = gateway.children()
        assert len(first) == PROCESSES
        victim = first[0]
        victim.kill()
        victim.wait(10)
        _wait(lambda: len(gateway.children()) == PROCESSES and victim.pid not in {c.pid for c in gateway.children()},
              30, "a new process")
        _wait(lambda: all(gateway.answer().status_code == 200 for _ in range(20)), 60, "answers from both again")
        assert "died (exit code -9); starting it again" in gateway.log()

        survivors = gateway.children()
        os.kill(gateway.process.pid, signal.SIGKILL)
        gateway.process.wait(10)
        gone, alive = psutil.wait_procs(survivors, timeout=30)
        assert alive == [], [p.pid for p in alive]


def test_a_port_in_use_is_one_line_before_any_process_starts(trained: Path) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = rung_cli("serve", "--port", str(port), "--grpc-port", "0", "--processes", "2", cwd=trained, timeout=60)
    assert result.returncode != 0
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
