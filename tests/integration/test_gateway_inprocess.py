"""The gateway's app in this process, through ``httpx.ASGITransport``: every route's answers, and its coverage measured.

tests/integration/test_gateway.py drives ``rung serve`` over real HTTP;
here the same app runs on an event loop of the test's own, so each error
path (a bad body, a token, a model that raises, a bug) is reached on
purpose and answered from the one error table.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from rung import errors
from rung.errors import RungError, WorkerDied
from rung.project import Project
from rung.serving.app import create_app
from rung.serving.auth import create_token
from rung.serving.gateway import Gateway
from rung.serving.responses import STATUSES, UNKNOWN, field_of, status_of
from tests.conftest import rung_cli
from tests.integration.test_gateway import ROW, oip

GRPC_CODES = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
              "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
              "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}


class InProcess:
    """An ASGI app on an event loop of its own, its lifespan entered, called synchronously from a test."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self._lifespan: AbstractAsyncContextManager[Any] = app.router.lifespan_context(app)
        self.loop.run_until_complete(self._lifespan.__aenter__())
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")
        # an exception that is not rung's goes on to the server after the 500 is sent: this client only sees the 500
        self.lenient = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                         base_url="http://gateway")

    @property
    def gateway(self) -> Gateway:
        return self.app.state.gateway

    def request(self, method: str, url: str, *, lenient: bool = False, **kwargs: Any) -> httpx.Response:
        client = self.lenient if lenient else self.http
        return self.loop.run_until_complete(client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", url, **kwargs)

    def close(self) -> None:
        self.loop.run_until_complete(self.http.aclose())
        self.loop.run_until_complete(self.lenient.aclose())
        self.loop.run_until_complete(self._lifespan.__aexit__(None, None, None))
        self.loop.close()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, template_project: Path) -> Path:
    """A project with churn:1 registered and served in threads (no worker processes: fast to start).

    A small model (20 boosting rounds, one OpenMP thread) trains in a second
    even on a busy machine; these tests are about the app, not the model.
    """
    root = tmp_path_factory.mktemp("inprocess") / "churn"
    shutil.copytree(template_project, root)
    config = root / "rung.yaml"
    config.write_text(config.read_text().replace("max_iter: 200", "max_iter: 20")
                      + "\nserve:\n  max_body_mb: 0.05\n  refresh_s: 0.05\n  isolation: thread\n")
    run = rung_cli("run", "--json", cwd=root, env={"OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr
    return root


@pytest.fixture(scope="module")
def project(root: Path) -> Iterator[Project]:
    project = Project.open(root)
    yield project
    project.close()


@pytest.fixture(scope="module")
def tokens(project: Project) -> dict[str, str]:
    return {role: f"Bearer {create_token(project.store, role=role)[1]}" for role in ("viewer", "deployer")}


@pytest.fixture(scope="module")
def served(project: Project) -> Iterator[InProcess]:
    running = InProcess(create_app(project))
    yield running
    running.close()


def auth(tokens: dict[str, str], role: str) -> dict[str, str]:
    return {"authorization": tokens[role]}


def refused(response: httpx.Response, status: int, field: str | None, *fragments: str) -> dict[str, Any]:
    """``response`` is the JSON error ``status`` naming ``field`` (absent when ``None``), its message holding each fragment."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body.get("field") == field, body
    assert body["error"] and "Traceback" not in body["error"]
    for fragment in fragments:
        assert fragment in body["error"], body
    return body


def test_health_and_metadata(served: InProcess) -> None:
    assert served.get("/v2/health/live").json() == {"live": True}
    assert served.get("/v2/health/ready").json() == {"ready": True, "not_served": []}
    assert served.get("/v2").json()["name"] == "rung"
    meta = served.get("/v2/models/churn").json()
    assert [i["name"] for i in meta["inputs"]] == list(ROW) and meta["versions"] == ["1"]
    assert {o["name"] for o in meta["outputs"]} == {"predict", "proba"}
    assert served.get("/v2/models/churn/versions/1").json()["parameters"]["routing"]["variants"][0]["version"] == 1
    assert served.get("/v2/models/churn/ready").json() == {"name": "churn", "ready": True}
    assert served.get("/v2/models/churn/versions/1/ready").json()["ready"] is True
    assert "/v2/models/{name}/infer" in served.get("/openapi.json").json()["paths"]
    assert "rung_requests_in_flight" in served.get("/metrics").text


def test_predict_in_both_protocols(served: InProcess) -> None:
    answer = served.post("/v2/models/churn/infer", json=oip([ROW, ROW | {"tenure_months": 1}], request_id="in-1"))
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-request-id"] == "in-1" and answer.headers["x-rung-model-version"] == "1"
    assert answer.headers["x-rung-variant"] == "champion" and answer.headers["x-rung-routing-revision"] == "1"
    body = answer.json()
    assert body["id"] == "in-1" and body["model_name"] == "churn" and body["parameters"]["variant"] == "champion"
    proba = next(o for o in body["outputs"] if o["name"] == "proba")["data"]
    pinned = served.post("/v2/models/churn/versions/1/infer", json=oip([ROW]), headers={"x-request-id": "in-2"})
    assert pinned.json()["id"] == "in-2" and pinned.headers["x-request-id"] == "in-2"
    for path in ("/invocations", "/models/churn/invocations"):
        mlflow = served.post(path, json={"dataframe_records": [ROW]}, headers={"x-request-id": "bad id with spaces"})
        assert mlflow.status_code == 200, mlflow.text
        assert mlflow.json()["probabilities"][0] == pytest.approx(proba[0]) and mlflow.json()["rung"]["version"] == 1
        assert mlflow.headers["x-request-id"] != "bad id with spaces"  # not safe to echo: a fresh one


@pytest.mark.parametrize(
    ("method", "path", "send", "status", "field"),
    [
        ("POST", "/v2/models/churn/infer", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "body"),
        ("POST", "/v2/models/churn/infer", {"content": b""}, 400, "body"),
        ("POST", "/v2/models/churn/infer", {"json": {"inputs": []}}, 422, "inputs"),
        ("POST", "/v2/models/churn/infer", {"json": oip([ROW | {"age": "old"}])}, 422, "age"),
        ("POST", "/v2/models/churn/infer", {"json": {"inputs": oip([ROW])["inputs"][1:]}}, 422, "tenure_months"),
        ("POST", "/invocations", {"json": {"dataframe_records": [ROW], "instances": [ROW]}}, 422, "body"),
        ("POST", "/invocations", {"content": b"a=1&b=2", "headers": {"content-type": "application/x-www-form-urlencoded"}}, 415, "content-type"),
        ("POST", "/invocations", {"json": {"dataframe_records": [ROW] * 2000}}, 413, "body"),
        ("POST", "/v2/models/nope/infer", {"json": oip([ROW])}, 404, "model_name"),
        ("POST", "/v2/models/churn/versions/9/infer", {"json": oip([ROW])}, 404, "model_version"),
        ("POST", "/v2/models/churn/versions/x/infer", {"json": oip([ROW])}, 404, "model_version"),
        ("GET", "/v2/models/churn/versions/²", {}, 404, "model_version"),
        ("GET", "/v2/models/nope", {}, 404, "model_name"),
        ("GET", "/v2/models/nope/ready", {}, 404, "model_name"),
        ("GET", "/v2/models/churn/versions/7/ready", {}, 404, "model_version"),
        ("GET", "/v2/models/churn/infer", {}, 405, "method"),
        ("GET", "/nowhere", {}, 404, "path"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(served: InProcess, method: str, path: str, send: dict, status: int,
                                             field: str) -> None:
    response = served.request(method, path, **send)
    refused(response, status, field)
    if path.endswith(("/infer", "/invocations")) and status != 405:
        assert response.headers["x-request-id"]  # a prediction's refusal names the request too


def test_a_body_streamed_over_the_limit_is_cut_off(served: InProcess) -> None:
    """Without a content length the body is read in chunks, and refused as soon as it passes the limit."""
    async def chunks() -> Any:
        yield b'{"dataframe_records": ['
        for _ in range(100):
            yield b'{"age": 1},' * 100

    refused(served.post("/invocations", content=chunks(), headers={"content-type": "application/json"}), 413, "body",
            "over the limit")


def test_refusals_are_counted_by_status(served: InProcess) -> None:
    def count(status: str) -> float:
        lines = served.get("/metrics").text.splitlines()
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(f'rung_request_errors_total{{status="{status}"}}'))

    before = count("422")
    served.post("/v2/models/churn/infer", json={"inputs": []})
    assert count("422") == before + 1


def test_a_model_that_raises_fails_that_request_only(served: InProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = served.gateway.pool.runtimes[("churn", 1)]

    async def explode(columns: Any, rows: int) -> Any:
        raise ValueError("boom on this row")

    async def died(columns: Any, rows: int) -> Any:
        raise WorkerDied("the process of churn:1 died while predicting (exit code -9); a new one is starting, retry the request")

    monkeypatch.setattr(runtime, "predict", explode)
    refused(served.post("/invocations", json={"dataframe_records": [ROW]}), 500, None,
            "the model failed on this input: ValueError: boom on this row")
    monkeypatch.setattr(runtime, "predict", died)
    refused(served.post("/invocations", json={"dataframe_records": [ROW]}), 503, None, "retry")
    monkeypatch.undo()
    assert served.post("/invocations", json={"dataframe_records": [ROW]}).status_code == 200


def test_an_error_that_is_not_rungs_is_a_generic_500(served: InProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    def bug(*args: Any) -> Any:
        raise KeyError("a secret detail")

    monkeypatch.setattr(served.gateway.pool, "columns", bug)
    response = served.post("/invocations", json={"dataframe_records": [ROW]}, lenient=True)
    body = refused(response, 500, None, "internal error")
    assert "secret" not in response.text and body == {"error": "internal error; the gateway log has the details"}


def test_control_api_tokens_and_bodies(served: InProcess, tokens: dict[str, str]) -> None:
    refused(served.get("/api/routes"), 401, "authorization", "Authorization: Bearer")
    refused(served.get("/api/routes", headers={"authorization": "Bearer rung_nope_nope"}), 401, "authorization", "unknown")
    tables = served.get("/api/routes", headers=auth(tokens, "viewer"))
    assert tables.status_code == 200 and tables.json()[0]["model"] == "churn"
    revision = tables.json()[0]["revision"]
    refused(served.get("/api/routes/nope", headers=auth(tokens, "viewer")), 404, "name", "no routing table")
    one = {"variants": [{"name": "champion", "version": 1}]}
    refused(served.put("/api/routes/churn", json=one, headers=auth(tokens, "viewer")), 403, "authorization", "deployer")

    def put(body: Any) -> httpx.Response:
        return served.put("/api/routes/churn", json=body, headers=auth(tokens, "deployer"))

    refused(put([1]), 422, "body", "expected an object with variants")
    refused(put({"variants": [], "colour": "red", "alpha": 1}), 422, "alpha", "unknown field 'alpha'")
    refused(put({"shadows": []}), 422, "variants", "must be lists")
    refused(put({"variants": [], "shadows": {}}), 422, "shadows", "must be lists")
    refused(put(one | {"expected_revision": True}), 422, "expected_revision", "an integer")
    refused(put(one | {"expected_revision": "1"}), 422, "expected_revision", "an integer")
    refused(put(one | {"reason": 5}), 422, "reason", "a string")
    refused(put({"variants": [{"name": "x", "version": 1, "weight": -1}]}), 422, "variants[0].weight", "variants[0].weight:")
    refused(put({"variants": []}), 422, "variants", "at least one variant")
    refused(put({"variants": [{"name": "x", "version": 1}, {"name": "y", "version": 99}]}), 422, "variants[1].version", "churn:99")
    refused(put(one | {"expected_revision": revision + 5}), 409, "expected_revision")
    assert served.get("/api/routes/churn", headers=auth(tokens, "viewer")).json()["revision"] == revision  # nothing written
    stored = put(one | {"expected_revision": revision, "reason": "in process"})
    assert stored.status_code == 200, stored.text
    assert stored.json()["revision"] == revision + 1 and stored.json()["reason"] == "in process"


def test_deployments_and_feedback(served: InProcess, tokens: dict[str, str]) -> None:
    deployer = auth(tokens, "deployer")

    def deploy(body: Any) -> httpx.Response:
        return served.post("/api/deployments", json=body, headers=deployer)

    refused(deploy("churn:1"), 422, "body", "expected an object with model and version")
    refused(deploy({"model": "churn", "version": 1, "when": "now"}), 422, "when", "unknown field 'when'")
    refused(deploy({"version": 1}), 422, "model", "model: the registered model's name")
    refused(deploy({"model": "", "version": 1}), 422, "model")
    for version in (True, 0, "2", 1.5, None):
        refused(deploy({"model": "churn", "version": version}), 422, "version", "version: a registered version number")
    refused(deploy({"model": "churn", "version": 1, "strategy": "yolo"}), 422, "strategy", "strategy: one of direct")
    refused(deploy({"model": "churn", "version": 1, "force": "yes"}), 422, "force", "true or false")
    refused(deploy({"model": "churn", "version": 1, "force": True}), 409, "version", "already the champion")
    refused(deploy({"model": "churn", "version": 7, "force": True}), 404, None, "churn:7")
    refused(served.post("/api/deployments/churn/approve", headers=deployer), 409, "version", "approval")
    refused(served.post("/api/deployments/churn/rollback", headers=auth(tokens, "viewer")), 403, "authorization")
    listed = served.get("/api/deployments?model=churn", headers=auth(tokens, "viewer"))
    assert listed.status_code == 200 and listed.json() == []

    refused(served.post("/v2/feedback", json=5), 422, "body", "JSON object")
    refused(served.post("/v2/feedback", json={"request_id": "r-1", "value": "yes"}), 422, "value", "a finite number")
    refused(served.post("/v2/feedback", json={"feedback": [{"request_id": "r-1", "value": "yes"}]}), 422, "feedback[0].value")
    refused(served.post("/v2/feedback", json={"feedback": [5]}), 422, "feedback[0]")
    refused(served.post("/v2/feedback", json={"feedback": []}), 422, "feedback")
    refused(served.post("/v2/feedback", json={"request_id": "r-1", "value": 1, "extra": 2}), 422, "extra", "unknown field")
    first = served.post("/v2/feedback", json={"request_id": "r-1", "value": 1})
    assert first.status_code == 200 and first.json()["accepted"] == 1
    assert served.post("/v2/feedback", json={"request_id": "r-1", "value": 1}).json()["duplicate"] == 1
    refused(served.post("/v2/feedback", json={"request_id": "r-1", "value": 0}), 409, "value", "the first one stands")


def test_a_protected_gateway_wants_a_token_to_predict(root: Path, tokens: dict[str, str]) -> None:
    project = Project.open(root, overrides={"serve": {"protect_predict": True, "compile": False}})
    running = InProcess(create_app(project))
    try:
        refused(running.post("/invocations", json={"dataframe_records": [ROW]}), 401, "authorization")
        refused(running.post("/v2/feedback", json={"request_id": "r-2", "value": 1}), 401, "authorization")
        for _ in range(2):  # the second answer comes from the token cache
            answered = running.post("/invocations", json={"dataframe_records": [ROW]}, headers=auth(tokens, "viewer"))
            assert answered.status_code == 200, answered.text
    finally:
        running.close()
        project.close()


def test_the_dashboard_answers_errors_from_the_same_table(project: Project, tokens: dict[str, str]) -> None:
    from rung.ui.app import create_app as dashboard

    ui = InProcess(dashboard(project))
    try:
        missing = ui.get("/models/nope")
        assert missing.status_code == 404 and "nope" in missing.text and "<html" in missing.text.lower()
        assert ui.get("/models/churn/monitoring?last=abc").status_code == 400
        refused(ui.post("/actions/churn/explode", headers=auth(tokens, "deployer")), 404, "action", "explode")
        refused(ui.post("/actions/churn/rollback"), 401, "authorization", "token")
        refused(ui.post("/actions/churn/rollback", headers=auth(tokens, "viewer")), 403, "authorization", "deployer")
        refused(ui.post("/actions/churn/deploy", headers=auth(tokens, "deployer"), json={"version": "two"}), 400, "version")
        refused(ui.post("/actions/churn/deploy", headers=auth(tokens, "deployer"), content=b"{no"), 400, "body",
                "not valid JSON")
        refused(ui.post("/actions/churn/approve", headers=auth(tokens, "deployer")), 409, "version", "approval")
    finally:
        ui.close()


def test_every_error_class_has_one_entry() -> None:
    classes = [getattr(errors, name) for name in errors.__all__]
    assert all(issubclass(cls, RungError) for cls in classes)
    assert set(STATUSES) == set(classes), "a class in rung.errors without its HTTP and gRPC status (or one listed that is gone)"
    for cls, status in STATUSES.items():
        assert 400 <= status.http < 600 and status.grpc in GRPC_CODES, cls
    assert status_of(ValueError("x")) is UNKNOWN and UNKNOWN.http == 500
    assert status_of(errors.PermissionDenied("x")).http == 403 and status_of(errors.AuthError("x")).http == 401
    assert field_of(errors.AuthError("x")) == "authorization" and field_of(errors.StaleRoute("x")) == "expected_revision"
    assert field_of(errors.ConfigError("x", field="variants")) == "variants" and field_of(errors.NotFound("x")) is None
    assert field_of(errors.InputError("x", "age")) == "age" and errors.InputError("x", field="age").field == "age"
    # errors cross the model worker's pipe: their field survives pickling
    import pickle

    again = pickle.loads(pickle.dumps(errors.NotFound("gone", field="model_name")))
    assert str(again) == "gone" and again.field == "model_name"
    assert json.dumps({"error": str(again)})  # plain text
