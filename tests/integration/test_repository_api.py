"""Triton's repository and statistics extensions over a real socket: index, load and unload, per-version statistics.

A gateway serves churn:1 and churn:2 from a thread of this process
(:func:`rung.serving.server.start_gateway`); the tests call it with httpx
and with ``tritonclient.http``, as a Triton user would.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from rung.delivery.routing import RoutingTable, set_routing
from rung.project import Project
from rung.serving.auth import create_token
from rung.serving.server import RunningGateway, start_gateway
from tests.conftest import rung_cli, wait_until
from tests.integration.test_gateway import ROW, oip

BOTH = [{"name": "champion", "version": 1, "weight": 1}, {"name": "canary", "version": 2, "weight": 1}]
UNLOADED = "unloaded via the repository API"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, template_project: Path) -> Path:
    """A project with churn:1 and churn:2 registered (a small model: 20 boosting rounds, one OpenMP thread)."""
    root = tmp_path_factory.mktemp("repository") / "churn"
    shutil.copytree(template_project, root)
    config = root / "rung.yaml"
    config.write_text(config.read_text().replace("max_iter: 200", "max_iter: 20") + "\nserve:\n  refresh_s: 0.05\n")
    for version in (1, 2):
        run = rung_cli("run", "--json", cwd=root, env={"OMP_NUM_THREADS": "1"})
        assert run.returncode == 0 and json.loads(run.stdout)["model_version"] == version, run.stderr
        data = root / "data" / "train.csv"
        pd.read_csv(data).iloc[::-1].to_csv(data, index=False)  # new data: the next run registers a new version
    return root


@pytest.fixture(scope="module")
def project(root: Path) -> Iterator[Project]:
    project = Project.open(root)
    set_routing(project.store, RoutingTable.build("churn", BOTH), actor="test", reason="two versions")
    yield project
    project.close()


@pytest.fixture(scope="module")
def tokens(project: Project) -> dict[str, dict[str, str]]:
    return {role: {"authorization": f"Bearer {create_token(project.store, role=role)[1]}"} for role in ("viewer", "deployer")}


@pytest.fixture(scope="module")
def running(project: Project) -> Iterator[RunningGateway]:
    with start_gateway(project, port=0) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def http(running: RunningGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=running.url, timeout=60) as client:
        yield client


def refused(response: httpx.Response, status: int, field: str, *fragments: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["field"] == field, body
    assert all(fragment in body["error"] for fragment in fragments), body


def version_stats(http: httpx.Client, version: int) -> dict[str, Any]:
    answer = http.get(f"/v2/models/churn/versions/{version}/stats")
    assert answer.status_code == 200, answer.text
    (stats,) = answer.json()["model_stats"]
    assert (stats["name"], stats["version"]) == ("churn", str(version))
    return stats


def delta(after: dict[str, Any], before: dict[str, Any], phase: str, what: str = "count") -> int:
    return int(after["inference_stats"][phase][what] - before["inference_stats"][phase][what])


def batches(stats: dict[str, Any]) -> dict[int, int]:
    return {b["batch_size"]: b["compute_infer"]["count"] for b in stats["batch_stats"]}


def test_the_index_lists_each_routed_version_and_its_state(http: httpx.Client) -> None:
    ready = [{"name": "churn", "version": str(v), "state": "READY", "reason": ""} for v in (1, 2)]
    assert http.post("/v2/repository/index").json() == ready  # no body, as tritonclient sends it
    assert http.post("/v2/repository/index", json={}).json() == ready
    assert http.post("/v2/repository/index", json={"ready": True}).json() == ready
    refused(http.post("/v2/repository/index", json={"ready": "yes"}), 422, "ready", "true or false")
    refused(http.post("/v2/repository/index", json=[1]), 422, "body", "JSON object")


def test_statistics_count_the_requests_sent_rows_and_model_calls(http: httpx.Client, running: RunningGateway) -> None:
    singles, hundreds = 7, 3
    before, other = version_stats(http, 1), version_stats(http, 2)
    started_ms = time.time() * 1000
    for _ in range(singles):
        assert http.post("/v2/models/churn/versions/1/infer", json=oip([ROW])).status_code == 200
    for _ in range(hundreds):
        assert http.post("/v2/models/churn/versions/1/infer", json=oip([ROW] * 100)).status_code == 200
    after = version_stats(http, 1)
    requests = singles + hundreds
    assert after["inference_count"] - before["inference_count"] == singles + 100 * hundreds
    assert after["execution_count"] - before["execution_count"] == requests  # one at a time: one model call each
    assert delta(after, before, "success") == requests and delta(after, before, "fail") == 0
    for phase in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert delta(after, before, phase) == requests, phase
        assert delta(after, before, phase, "ns") > 0, phase
    success_ns = delta(after, before, "success", "ns")
    assert delta(after, before, "compute_infer", "ns") <= success_ns
    assert delta(after, before, "queue", "ns") + delta(after, before, "compute_infer", "ns") <= success_ns
    grown = {size: count - batches(before).get(size, 0) for size, count in batches(after).items()}
    assert grown[1] == singles and grown[100] == hundreds
    assert started_ms - 1 <= after["last_inference"] <= time.time() * 1000 + 1
    assert version_stats(http, 2) == other  # pinned to version 1: version 2 saw none of it

    # a request the version refuses counts as failed; protocols other than OIP v2 count the same
    missing = {"inputs": [t for t in oip([ROW])["inputs"] if t["name"] != "age"]}
    refused(http.post("/v2/models/churn/versions/1/infer", json=missing), 422, "age", "missing input column")
    assert http.post("/models/churn/invocations", json={"dataframe_records": [ROW, ROW]}).status_code == 200
    latest = [version_stats(http, v) for v in (1, 2)]
    assert sum(delta(s, b, "fail") for s, b in zip(latest, (after, other), strict=True)) == 1
    assert sum(delta(s, b, "success") for s, b in zip(latest, (after, other), strict=True)) == 1
    assert sum(s["inference_count"] - b["inference_count"] for s, b in zip(latest, (after, other), strict=True)) == 2

    every = http.get("/v2/models/stats").json()["model_stats"]
    assert [(s["name"], s["version"]) for s in every] == [("churn", "1"), ("churn", "2")]
    assert http.get("/v2/models/churn/stats").json()["model_stats"] == every
    assert running.gateway.stats.snapshot("churn", 1)["model_stats"] == [version_stats(http, 1)]
    refused(http.get("/v2/models/nope/stats"), 404, "model_name", "nope")
    refused(http.get("/v2/models/churn/versions/9/stats"), 404, "model_version", "9")
    refused(http.get("/v2/models/churn/versions/x/stats"), 404, "model_version")


def test_tritonclient_reads_the_index_and_the_statistics_and_loads(running: RunningGateway,
                                                                   tokens: dict[str, dict[str, str]]) -> None:
    from tritonclient.http import InferenceServerClient
    from tritonclient.utils import InferenceServerException

    client = InferenceServerClient(running.url.removeprefix("http://"))
    try:
        index = client.get_model_repository_index()
        assert [(m["name"], m["version"], m["state"]) for m in index] == [("churn", "1", "READY"), ("churn", "2", "READY")]
        stats = client.get_inference_statistics("churn", "1")["model_stats"]
        assert stats[0]["inference_count"] > 0 and stats[0]["inference_stats"]["success"]["count"] > 0
        assert len(client.get_inference_statistics()["model_stats"]) == 2
        with pytest.raises(InferenceServerException, match="deployer|token") as refusal:
            client.unload_model("churn")
        assert refusal.value.status() == "401"
        with pytest.raises(InferenceServerException, match="nope"):
            client.get_inference_statistics("nope")
        client.load_model("churn", headers=tokens["deployer"])  # loaded already: nothing changes
        assert client.is_model_ready("churn")
        client.unload_model("churn", headers=tokens["deployer"])
        assert not client.is_model_ready("churn")
        assert {m["state"] for m in client.get_model_repository_index()} == {"UNLOADED"}
        client.load_model("churn", headers=tokens["deployer"])
        assert client.is_model_ready("churn")
    finally:
        client.close()


def test_a_protected_gateway_wants_a_viewer_token_for_the_index_and_statistics(
        root: Path, tokens: dict[str, dict[str, str]]) -> None:
    project = Project.open(root, overrides={"serve": {"protect_predict": True, "compile": False, "isolation": "thread"}})
    try:
        with start_gateway(project, port=0) as protected, httpx.Client(base_url=protected.url, timeout=60) as http:
            refused(http.post("/v2/repository/index"), 401, "authorization")
            refused(http.get("/v2/models/stats"), 401, "authorization")
            assert http.post("/v2/repository/index", headers=tokens["viewer"]).status_code == 200
            assert http.get("/v2/models/churn/versions/1/stats", headers=tokens["viewer"]).status_code == 200
    finally:
        project.close()


def test_unload_stops_serving_without_touching_the_routing_table_and_load_serves_it_again(
        http: httpx.Client, project: Project, running: RunningGateway, tokens: dict[str, dict[str, str]]) -> None:
    pool = running.gateway.pool
    refused(http.post("/v2/repository/models/churn/unload"), 401, "authorization")
    refused(http.post("/v2/repository/models/churn/unload", headers=tokens["viewer"]), 403, "authorization", "deployer")
    refused(http.post("/v2/repository/models/nope/unload", headers=tokens["deployer"]), 404, "model_name", "nope")
    refused(http.post("/v2/repository/models/nope/load", headers=tokens["deployer"]), 404, "model_name", "nope")
    refused(http.post("/v2/repository/models/churn/load", headers=tokens["deployer"], json={"parameters": {"config": "{}"}}),
            422, "parameters.config", "registered versions")
    table = project.store.route("churn")
    assert table is not None
    counted = version_stats(http, 1)
    unloads = len(project.store.events(subject="churn", kinds=["gateway.unload"]))

    unloaded = http.post("/v2/repository/models/churn/unload", headers=tokens["deployer"],
                         json={"parameters": {"unload_dependents": False}})
    assert unloaded.status_code == 200 and unloaded.json() == {"name": "churn", "unloaded": True}
    assert not [key for key in pool.runtimes if key[0] == "churn"]
    for path in ("/v2/models/churn/infer", "/v2/models/churn/versions/1/infer"):
        refused(http.post(path, json=oip([ROW])), 503, "model_name", UNLOADED, "POST /v2/repository/models/churn/load")
    refused(http.post("/models/churn/invocations", json={"dataframe_records": [ROW]}), 503, "model_name", UNLOADED)
    assert [(m["version"], m["state"]) for m in http.post("/v2/repository/index").json()] == [("1", "UNLOADED"), ("2", "UNLOADED")]
    assert UNLOADED in http.post("/v2/repository/index").json()[0]["reason"]
    assert http.post("/v2/repository/index", json={"ready": True}).json() == []
    assert version_stats(http, 1) == counted  # statistics outlive the unloading
    stored = project.store.route("churn")
    assert stored is not None and (stored.revision, stored.variants) == (table.revision, table.variants)
    (event,) = project.store.events(subject="churn", kinds=["gateway.unload"])[unloads:]
    assert event.actor.startswith("token:") and event.data["routing"] == "unchanged"

    # the routing changes meanwhile (the controller's); refreshes read it, and load nothing
    set_routing(project.store, RoutingTable.build("churn", [{"name": "champion", "version": 2}]), actor="test",
                reason="only 2 now")
    wait_until(lambda: [m["version"] for m in http.post("/v2/repository/index").json()] == ["2"], timeout=10)
    time.sleep(0.3)  # several refreshes
    assert not [key for key in pool.runtimes if key[0] == "churn"]
    refused(http.post("/v2/models/churn/infer", json=oip([ROW])), 503, "model_name", UNLOADED)

    loaded = http.post("/v2/repository/models/churn/load", headers=tokens["deployer"])
    assert loaded.status_code == 200 and loaded.json() == {"name": "churn", "loaded": True}
    answer = http.post("/v2/models/churn/infer", json=oip([ROW]))  # ready at once: load answered when it was
    assert answer.status_code == 200 and answer.headers["x-rung-model-version"] == "2"
    assert http.post("/v2/repository/index").json() == [{"name": "churn", "version": "2", "state": "READY", "reason": ""}]
    assert http.get("/v2/health/ready").json()["not_served"] == []
    assert version_stats(http, 2)["inference_stats"]["success"]["count"] >= 1
