"""End to end over real HTTP: gateway + controller + a client; a canary is promoted with zero failed requests."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.conftest import RUNG, Load, rung_cli, stop_processes

ROW = {"tenure_months": 54, "monthly_charges": 77.73, "contract": "one-year", "region": "north",
       "support_calls": 1, "age": 42, "paperless_billing": "no"}
FAST = """
deploy:
  strategy: canary
  grace_s: 5
  # latency_slack_ms: a 2 s window's p99 is its second-slowest request, which a busy test machine can double;
  # this test is about failed requests across the swap, the latency guardrail has its own tests
  canary: {steps: [50, 100], window_s: 2, min_requests: 20, max_extensions: 5, latency_slack_ms: 200}
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def project(tmp_path: Path, template_project: Path) -> Path:
    root = tmp_path / "churn"
    shutil.copytree(template_project, root)
    with open(root / "rung.yaml", "a") as config:
        config.write(FAST)
    assert rung_cli("run", cwd=root).returncode == 0
    data = root / "data" / "train.csv"
    pd.read_csv(data).iloc[::-1].to_csv(data, index=False)
    assert rung_cli("run", cwd=root).returncode == 0
    return root


def test_canary_promoted_over_http_without_a_failed_request(project: Path) -> None:
    port = _port()
    url = f"http://127.0.0.1:{port}"
    log = open(project / "processes.log", "w")
    gateway = subprocess.Popen([RUNG, "serve", "--port", str(port)], cwd=project, stdout=log, stderr=subprocess.STDOUT)
    controller = subprocess.Popen([RUNG, "controller", "--interval", "0.2"], cwd=project, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail("gateway did not become ready: " + (project / "processes.log").read_text()[-2000:])

        load = Load(lambda client: client.post("/invocations", json={"dataframe_records": [ROW]}), base_url=url,
                    pause_s=0.005)
        with load:
            time.sleep(1)
            deployed = rung_cli("deploy", "churn:2", "--force", "--json", cwd=project)
            assert deployed.returncode == 0, deployed.stderr
            started = time.monotonic()
            promoted = None
            while time.monotonic() - started < 90:
                state = json.loads(rung_cli("status", "--json", cwd=project).stdout)[0]
                if state["rollout"]["state"] in ("promoted", "rolled_back"):
                    promoted = time.monotonic() - started
                    break
                time.sleep(0.5)
            assert state["rollout"]["state"] == "promoted", state
            time.sleep(1.0)  # answers after the switch
        assert load.failures() == []
        answers = [(at, int(r.headers["x-rung-model-version"]), r.headers["x-request-id"]) for at, r in load.answers]
        after = [v for at, v, _ in answers if at > started + promoted + 0.5]
        assert after and set(after) == {2}
        assert state["aliases"] == {"champion": 2}
        print(f"deploy to 100%: {promoted:.1f} s, {len(answers)} requests, 0 failed")

        # which version served this request, and feedback for it
        rid = next(r for at, v, r in answers if v == 2)
        who = json.loads(rung_cli("history", "churn", "--request", rid, "--json", cwd=project).stdout)  # logged long ago
        assert who[0]["version"] == 2 and not who[0]["shadow"] and who[0]["tenure_months"] == ROW["tenure_months"]
        sent = httpx.post(f"{url}/v2/feedback", json={"request_id": rid, "value": 1})
        assert sent.status_code == 200 and sent.json()["accepted"] == 1
        assert httpx.post(f"{url}/v2/feedback", json={"request_id": rid, "value": 1}).json()["duplicate"] == 1
        conflict = httpx.post(f"{url}/v2/feedback", json={"request_id": rid, "value": 0})
        assert conflict.status_code == 409 and conflict.json()["field"] == "value"
        early = httpx.post(f"{url}/v2/feedback", json={"request_id": "not-logged-yet", "value": 1})
        assert early.status_code == 200 and early.json() == {"accepted": 1, "duplicate": 0, "conflict": 0,
                                                              "unmatched": None, "conflict_ids": []}
        bad = httpx.post(f"{url}/v2/feedback", json={"feedback": [{"request_id": rid, "value": "yes"}]})
        assert bad.status_code == 422 and bad.json()["field"] == "feedback[0].value"

        history = rung_cli("history", "churn", "--json", cwd=project)
        steps = [e["data"]["to"] for e in json.loads(history.stdout) if e["kind"] == "rollout"]
        assert steps[-1] == "promoted" and set(steps[:-1]) <= {"running"}, steps  # steps and extensions, then promoted
    finally:
        stop_processes(controller, gateway)
        log.close()
