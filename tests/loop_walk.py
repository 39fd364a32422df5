"""The whole loop on a project made from a team's own code, through the CLI: certify ▸ serve ▸ canary ▸ monitor ▸ retrain.

Shared by the tests of projects rung did not write (own training function,
PyTorch, ONNX, a version adopted from MLflow): each makes its project and
its first version its own way, then walks the same loop with
:func:`walk_the_loop`, which fails with the step that broke.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import RUNG, rung_cli, stop_processes

# Short windows and steps so that the loop turns in seconds.
FAST_LOOP = """
deploy:
  strategy: canary
  grace_s: 2
  canary: {steps: [50, 100], window_s: 2, min_requests: 10, max_extensions: 10, latency_ratio: 100}  # timing on a busy test machine is noise
certify:  # the loop's mechanics are under test here, not the models' quality or this busy machine's timing
  versus_champion: {}
  latency: {single_row_p99_ms: 2000, batch_1000_p99_ms: 20000, repeats: 20}
monitor:
  window: 2s
  min_rows: 10
  request_log: {flush_s: 0.2}
"""


def fast_loop(root: Path) -> None:
    """Append :data:`FAST_LOOP` to the project's rung.yaml (its own deploy/monitor sections must not exist yet)."""
    with open(root / "rung.yaml", "a", encoding="utf-8") as config:
        config.write(FAST_LOOP)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ok(result: subprocess.CompletedProcess[str], what: str) -> Any:
    assert result.returncode == 0, f"{what} failed (exit {result.returncode}): {result.stderr[-2000:]}{result.stdout[-1000:]}"
    return json.loads(result.stdout) if result.stdout.strip().startswith(("{", "[")) else result.stdout


@dataclass
class Walk:
    """What the walk saw, for the test's own assertions."""

    certified: dict[str, Any] = field(default_factory=dict)
    answers: list[dict[str, Any]] = field(default_factory=list)  # /invocations responses
    versions_served: set[int] = field(default_factory=set)
    rollout: dict[str, Any] = field(default_factory=dict)
    windows: list[dict[str, Any]] = field(default_factory=list)
    retrained: Any = None


def walk_the_loop(root: Path, name: str, rows: list[dict[str, Any]], *, new_data: Callable[[], None],
                  make_second: Callable[[], None] | None = None, requests: int = 40) -> Walk:
    """certify NAME:1 ▸ serve ▸ NAME:2 (``make_second``, default ``rung run --no-cache``) canaried to 100 % ▸ monitor ▸ retrain.

    ``new_data`` changes the project's training data before the retraining
    (on the same data, every step is cached and there is nothing new to roll out).

    ``rows`` are request rows (raw, as a client sends them, extra columns
    welcome); they are sent one per request in a loop while the canary runs.
    The project's rung.yaml should have :data:`FAST_LOOP` (see :func:`fast_loop`).
    """
    walk = Walk()
    walk.certified = _ok(rung_cli("certify", f"{name}:1", "--json", cwd=root), f"rung certify {name}:1")
    port = _port()
    url = f"http://127.0.0.1:{port}"
    log = open(root / "walk.log", "w")
    gateway = subprocess.Popen([RUNG, "serve", "--port", str(port)], cwd=root, stdout=log, stderr=subprocess.STDOUT)
    controller = subprocess.Popen([RUNG, "controller", "--interval", "0.2"], cwd=root, stdout=log, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=url, timeout=20) as client:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if client.get("/v2/health/ready").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "gateway not ready: " + (root / "walk.log").read_text()[-3000:]
                time.sleep(0.2)

            def send(count: int) -> None:
                for i in range(count):
                    r = client.post("/invocations", json={"dataframe_records": [rows[i % len(rows)]]})
                    assert r.status_code == 200, f"/invocations answered {r.status_code}: {r.text}"
                    walk.answers.append(r.json())
                    walk.versions_served.add(int(r.headers["x-rung-model-version"]))

            # The first look at monitoring sets where it starts; later looks check every window closed since.
            _ok(rung_cli("monitor", name, "--json", cwd=root), "rung monitor (first look)")
            send(10)
            (make_second or (lambda: _ok(rung_cli("run", "--no-cache", cwd=root), "rung run (second version)")))()
            _ok(rung_cli("certify", f"{name}:2", "--json", cwd=root), f"rung certify {name}:2")
            _ok(rung_cli("deploy", f"{name}:2", "--strategy", "canary", "--json", cwd=root), f"rung deploy {name}:2")
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                send(10)
                state = _ok(rung_cli("status", "--json", cwd=root), "rung status")
                walk.rollout = next((s for s in state if s.get("name", s.get("model")) == name), state[0])["rollout"] or {}
                if walk.rollout.get("state") in ("promoted", "rolled_back"):
                    break
            assert walk.rollout.get("state") == "promoted", f"the canary of {name}:2 did not promote: {walk.rollout}"
            send(requests)
            time.sleep(2.5)  # a monitoring window closes
            send(5)
        walk.windows = _ok(rung_cli("monitor", name, "--json", cwd=root), "rung monitor")
        new_data()
        walk.retrained = _ok(rung_cli("retrain", "--reason", "the walk of the loop", "--json", cwd=root, timeout=300), "rung retrain")
    finally:
        stop_processes(controller, gateway)
        log.close()
    return walk
