"""Gateway faults, for real: a routing table naming a tampered version, and a database that stalls."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pandas as pd
import pytest

from rung.delivery.routing import RoutingTable, Variant, set_routing, single_version
from rung.project import Project
from rung.serving.auth import create_token
from rung.serving.server import start_gateway
from tests.conftest import RUNG, rung_cli
from tests.integration.test_gateway import ROW, _free_port, oip


def _run(root: Path) -> int:
    run = rung_cli("run", "--json", cwd=root)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)["model_version"]


def _registry_files(root: Path) -> set[Path]:
    return set((root / ".rung" / "mlartifacts").rglob("*.skops"))


def _wait(predicate: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s")
        time.sleep(0.05)


def _infer(http: httpx.Client, model: str, path: str = "infer", **kwargs) -> httpx.Response:
    return http.post(f"/v2/models/{model}/{path}", json=oip([ROW]), **kwargs)


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory, template_project: Path) -> tuple[Path, Path]:
    """One project with churn:1, churn:2 and other:1; returns it and churn:2's model file in the registry."""
    root = tmp_path_factory.mktemp("faults") / "churn"
    shutil.copytree(template_project, root)
    assert _run(root) == 1
    before = _registry_files(root)
    data = root / "data" / "train.csv"
    pd.read_csv(data).iloc[::-1].to_csv(data, index=False)
    assert _run(root) == 2
    (churn_2,) = _registry_files(root) - before
    config = root / "rung.yaml"
    original = config.read_text()
    config.write_text(original + "\nregistry:\n  model_name: other\n")
    assert _run(root) == 1
    config.write_text(original + "\nserve:\n  refresh_s: 0.1\n  compile: false\n")
    return root, churn_2


def test_a_tampered_version_is_refused_and_every_gateway_serves_what_it_can_verify(two_models: tuple[Path, Path]) -> None:
    root, churn_2 = two_models
    project = Project.open(root)
    set_routing(project.store, single_version("churn", 1), actor="test")
    set_routing(project.store, single_version("other", 1), actor="test")
    deployer = {"authorization": f"Bearer {create_token(project.store, role='deployer')[1]}"}
    churn_2.write_bytes(churn_2.read_bytes() + b"tampered")

    with start_gateway(project) as running, httpx.Client(base_url=running.url, timeout=30) as http:
        split = {"variants": [{"name": "canary", "version": 2, "weight": 1}, {"name": "champion", "version": 1, "weight": 9}]}
        refused = http.put("/api/routes/churn", json=split, headers=deployer)
        assert refused.status_code == 422, refused.text
        assert refused.json()["field"] == "variants[0].version"
        assert "churn:2" in refused.json()["error"] and "sha256" in refused.json()["error"]
        assert http.get("/api/routes/churn", headers=deployer).json()["revision"] == 1  # nothing was written

        # The same table written straight to the store (a controller, an older gateway): this gateway keeps
        # its last good table and says which version it refused, and why.
        set_routing(project.store, RoutingTable.build("churn", [Variant("canary", 2, 1.0), Variant("champion", 1, 9.0)]),
                    actor="test")
        _wait(lambda: http.get("/v2/health/ready").json()["not_served"] != [], within=10)
        (gap,) = http.get("/v2/health/ready").json()["not_served"]
        assert gap["model"] == "churn" and gap["version"] == 2 and "sha256" in gap["reason"]
        assert {_infer(http, "churn").headers["x-rung-model-version"] for _ in range(10)} == {"1"}

    # A fresh `rung serve` with that table starts, serves other:1 and churn:1, and says churn:2 is not served and why.
    port = _free_port()
    with open(root / "fresh.log", "w") as log:
        process = subprocess.Popen([RUNG, "serve", "--port", str(port)], cwd=root, stdout=log, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            def up() -> bool:
                assert process.poll() is None, (root / "fresh.log").read_text()
                try:
                    return http.get("/v2/health/ready").status_code == 200
                except httpx.TransportError:
                    return False

            _wait(up, within=90)
            (gap,) = http.get("/v2/health/ready").json()["not_served"]
            assert gap["model"] == "churn" and gap["version"] == 2 and "sha256" in gap["reason"]
            assert {_infer(http, "churn").headers["x-rung-model-version"] for _ in range(10)} == {"1"}
            assert _infer(http, "other").status_code == 200
            meta = http.get("/v2/models/churn").json()
            assert meta["versions"] == ["1"]
            assert [(g["version"], "sha256" in g["reason"]) for g in meta["parameters"]["not_served"]] == [(2, True)]
            for response in (http.get("/v2/models/churn/versions/2/ready"), _infer(http, "churn", "versions/2/infer")):
                assert response.status_code == 503, response.text
                assert response.json()["field"] == "model_version" and "sha256" in response.json()["error"]
        assert "churn:2" in (root / "fresh.log").read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)

    # A table whose only version cannot be verified: that model is not served (and says why), the other one is.
    set_routing(project.store, single_version("churn", 2), actor="test")
    with start_gateway(project) as running, httpx.Client(base_url=running.url, timeout=30) as http:
        assert _infer(http, "other").status_code == 200
        for response in (http.get("/v2/models/churn/ready"), http.get("/v2/models/churn"), _infer(http, "churn")):
            assert response.status_code == 503, response.text
            assert response.json()["field"] == "model_name" and "sha256" in response.json()["error"]
        assert [(g["model"], g["version"]) for g in http.get("/v2/health/ready").json()["not_served"]] == [("churn", 2)]


def test_a_stalled_database_does_not_stall_predictions(project_dir: Path, postgres_url: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A session holds the routes and tokens tables locked: loaded versions keep answering meanwhile.

    Routing polls and token lookups wait for the database off the event loop;
    a token already checked (rightly or wrongly) is answered from the cache.
    """
    import psycopg

    import rung.serving.gateway as gateway_module

    with open(project_dir / "rung.yaml", "a") as config:
        config.write(f"\nstore:\n  database_url: {postgres_url}\nserve:\n  refresh_s: 0.05\n  protect_predict: true\n  compile: false\n")
    assert _run(project_dir) == 1
    project = Project.open(project_dir)
    viewer = {"authorization": f"Bearer {create_token(project.store, role='viewer')[1]}"}
    newcomer = {"authorization": f"Bearer {create_token(project.store, role='viewer')[1]}"}
    wrong = {"authorization": "Bearer rung_nope_nope"}
    monkeypatch.setattr(gateway_module, "TOKEN_CACHE_S", 60.0)  # the test's stall outlasts the usual second
    with start_gateway(project) as running, httpx.Client(base_url=running.url, timeout=5) as http:
        assert _infer(http, "churn", headers=viewer).status_code == 200
        assert _infer(http, "churn", headers=wrong).status_code == 401
        lock = psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://"))
        try:
            lock.execute("LOCK TABLE routes, api_tokens IN ACCESS EXCLUSIVE MODE")
            waiting: list[int] = []

            def newcomer_predicts() -> None:
                with httpx.Client(base_url=running.url, timeout=60) as own:
                    waiting.append(_infer(own, "churn", headers=newcomer).status_code)

            blocked = threading.Thread(target=newcomer_predicts)
            blocked.start()
            time.sleep(0.5)  # the routing poll and the newcomer's token lookup now wait on the lock
            latencies = []
            for _ in range(20):
                started = time.perf_counter()
                assert _infer(http, "churn", headers=viewer).status_code == 200
                assert _infer(http, "churn", headers=wrong).status_code == 401
                latencies.append(time.perf_counter() - started)
            assert max(latencies) < 1.0, latencies
            assert blocked.is_alive() and waiting == []  # the database really is stalled
        finally:
            lock.rollback()
            lock.close()
        blocked.join(30)
        assert waiting == [200]
