"""The gateway's ASGI app (Starlette): prediction, health, metadata and metrics routes.

* Open Inference Protocol v2 (``/v2/...``: JSON, or Triton's binary tensor
  data extension, :mod:`rung.serving.oip`), KServe v1
  (``/v1/models/{name}:predict``) and MLflow scoring
  (``/models/{name}/invocations``, ``/invocations``: JSON or CSV), described
  in ``/openapi.json``; the repository and statistics extensions come from
  :mod:`rung.serving.repository`, the control API (``/api/...``) and
  feedback from :mod:`rung.serving.control`.
* Every protocol decodes its body into columns and hands them to
  :meth:`~rung.serving.gateway.Gateway.infer`, the one request path.
* Every response names the model version and variant that answered
  (``X-Rung-Model-Version``, ``X-Rung-Variant`` and the body) and carries a
  request id (``X-Request-Id``, taken from the request when given).
* Routes raise rung's errors; :mod:`rung.serving.responses` answers them:
  bad input is a 4xx naming the field, a model that raises is a 500 for
  that request only, never a dead worker, and a version that cannot be
  loaded is a 503 that says why.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from rung import __version__
from rung.clock import SYSTEM, Clock
from rung.errors import RungError
from rung.serving.control import control_routes
from rung.serving.gateway import Gateway, Inference, InferenceRequest
from rung.serving.http import (
    CSV,
    JSON,
    json_response,
    media_type,
    parse_json,
    read_body,
    read_json,
    request_id,
    version_param,
)
from rung.serving.oip import HEADER_LENGTH, Asked, asked_outputs, infer_body, parse_oip, split_body
from rung.serving.protocols import parse_csv, parse_kserve, parse_mlflow, to_jsonable
from rung.serving.repository import repository_routes
from rung.serving.responses import error_body, exception_handlers
from rung.serving.tensors import datatype_of

if TYPE_CHECKING:
    from rung.project import Project

__all__ = ["GatewayApp", "create_app", "describe_model", "model_is_ready"]

log = logging.getLogger("rung.gateway")

GENERIC = "internal error; the gateway log has the details"
EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics", "rung-routing"]  # what server metadata lists, over REST and gRPC
OCTET_STREAM = "application/octet-stream"  # an OIP answer with binary outputs, as Triton sends it
MLFLOW_TYPES = (JSON, CSV)  # what /invocations reads, as `mlflow models serve` does (but Parquet)


def create_app(project: Project, *, clock: Clock = SYSTEM, host: str | None = None, port: int | None = None,
               replica: str | None = None) -> GatewayApp:
    """The gateway's ASGI app for ``project`` (``rung serve`` runs it under uvicorn, on ``host:port``); ``app.state.gateway`` is its state.

    ``replica`` names this gateway among those sharing the store (``None``:
    ``serve.replica``, else ``<hostname>-<port>``).
    """
    gateway = Gateway(project, clock=clock, host=host, port=port, replica=replica)
    pool = gateway.pool
    settings = gateway.settings

    async def predict(request: Request, protocol: str) -> Response:
        started = time.perf_counter()
        request.state.request_id = request_id(request.headers.get("x-request-id"))
        model_name = request.path_params.get("name") or project.settings.model_name
        if settings.protect_predict:
            await gateway.authorise(request.headers.get("authorization"), "viewer")
        version = version_param(request)
        columns = pool.columns(model_name, version)
        asked = None
        if protocol == "oip":
            length = request.headers.get(HEADER_LENGTH)
            if length is None:  # under the binary extension a body may say any content type, as Triton takes it
                media_type(request)
            body, binary = split_body(await read_body(request, gateway.max_body), length)
            if isinstance(body, dict) and "x-request-id" not in request.headers:
                request.state.request_id = request_id(body.get("id"))
            asked = asked_outputs(body)
            raw, rows = parse_oip(body, columns, binary)
        elif protocol == "kserve":
            raw, rows = parse_kserve(await read_json(request, gateway.max_body), columns)
        elif media_type(request, MLFLOW_TYPES) == CSV:
            content = await read_body(request, gateway.max_body, send="a CSV with a header row")
            raw, rows = parse_csv(content, columns)
        else:
            raw, rows = parse_mlflow(parse_json(await read_body(request, gateway.max_body)), columns)
        answer = await gateway.infer(InferenceRequest(model_name, version, raw, rows, request.state.request_id, protocol,
                                                      request.headers.get("x-rung-key"), started,
                                                      tuple(asked.names) if asked else ()))
        return _render(protocol, answer, asked)

    def endpoint(protocol: str) -> Any:
        in_flight = gateway.metrics.in_flight

        async def answer(request: Request) -> Response:
            in_flight.inc()
            try:
                return await predict(request, protocol)
            finally:
                in_flight.dec()

        return answer

    infer, invocations, kserve_predict = endpoint("oip"), endpoint("mlflow"), endpoint("kserve")

    async def live(request: Request) -> Response:
        return json_response({"live": True})

    async def ready(request: Request) -> Response:
        ok = gateway.ready and not gateway.draining
        return json_response({"ready": ok, "not_served": pool.not_served()}, 200 if ok else 503)

    async def server_metadata(request: Request) -> Response:
        return json_response({"name": "rung", "version": __version__, "extensions": EXTENSIONS})

    async def model_metadata(request: Request) -> Response:
        return json_response(describe_model(gateway, request.path_params["name"], version_param(request)))

    async def model_ready(request: Request) -> Response:
        name = request.path_params["name"]
        return json_response({"name": name, "ready": model_is_ready(gateway, name, version_param(request))})

    async def kserve_live(request: Request) -> Response:
        return json_response({"status": "alive"})

    async def kserve_model(request: Request) -> Response:
        name = request.path_params["name"]
        return json_response({"name": name, "ready": model_is_ready(gateway, name, None)})

    async def metrics(request: Request) -> Response:
        return Response(gateway.metrics.render(), media_type="text/plain; version=0.0.4")

    async def openapi(request: Request) -> Response:
        from rung.serving.openapi import document

        return json_response(document())

    routes = [
        *repository_routes(gateway),  # first: /v2/models/stats is not a model's metadata
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2/models/{name}", model_metadata, methods=["GET"]),
        Route("/v2/models/{name}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}", model_metadata, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
        Route("/v1/models/{name}:predict", kserve_predict, methods=["POST"]),
        Route("/v1/models/{name}", kserve_model, methods=["GET"]),
        Route("/", kserve_live, methods=["GET"]),
        Route("/models/{name}/invocations", invocations, methods=["POST"]),
        Route("/invocations", invocations, methods=["POST"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *control_routes(gateway),
    ]

    def after(request: Request, response: Response) -> None:
        """A prediction's error answer carries its request id and is counted by status."""
        rid = getattr(request.state, "request_id", None)
        if rid is not None:
            response.headers["x-request-id"] = rid
            gateway.metrics.errors.labels(str(response.status_code)).inc()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    handlers = exception_handlers(log, generic=GENERIC, after=after) | {404: _not_found, 405: _not_allowed}
    predict_routes = [(re.compile(p), e) for p, e in (
        (r"^/v2/models/(?P<name>[^/]+)/infer$", infer),
        (r"^/v2/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)/infer$", infer),
        (r"^/invocations$", invocations),
        (r"^/models/(?P<name>[^/]+)/invocations$", invocations),
        (r"^/v1/models/(?P<name>[^/]+):predict$", kserve_predict),
    )]
    app = GatewayApp(routes=routes, lifespan=lifespan, exception_handlers=handlers, predict_routes=predict_routes)
    app.state.gateway = gateway
    return app


class GatewayApp(Starlette):
    """The gateway's Starlette app, whose prediction routes skip Starlette's middleware stack and router.

    A prediction is most of what a gateway answers, and under many
    connections the gateway's process is the bottleneck: Starlette's two
    middlewares, its router (every route's pattern tried in turn) and its
    per-route exception wrapper were a tenth of the process's time at 64
    connections. A POST whose path is a prediction route goes straight to
    its endpoint, with the same request object and the same exception
    handlers; everything else (and every other method) is Starlette's.
    """

    def __init__(self, *, predict_routes: list[tuple[re.Pattern[str], Callable[[Request], Awaitable[Response]]]],
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.predict_routes = predict_routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            for pattern, endpoint in self.predict_routes:
                match = pattern.match(path)
                if match is not None:
                    scope["app"] = self
                    scope["path_params"] = match.groupdict()
                    request = Request(scope, receive, send)
                    try:
                        response = await endpoint(request)
                    except ClientDisconnect:  # gone before its body was read: no one to answer
                        return
                    except Exception as exc:
                        response = await self._answer(request, exc)
                        await response(scope, receive, send)
                        if not isinstance(exc, RungError):
                            raise  # a bug: the server logs it too, as behind Starlette's middleware
                        return
                    await response(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)

    async def _answer(self, request: Request, exc: Exception) -> Response:
        """The answer of the app's exception handlers to ``exc`` (the nearest class that has one)."""
        for cls in type(exc).__mro__:
            handler = self.exception_handlers.get(cls)
            if handler is not None:
                answered = handler(request, exc)
                return await answered if inspect.isawaitable(answered) else answered
        raise exc


def _render(protocol: str, answer: Inference, asked: Asked | None = None) -> Response:
    """A prediction's answer in the body its protocol speaks; the headers name what answered.

    OIP v2 is JSON unless an output is asked for as binary (then the JSON
    header, the tensors, ``Inference-Header-Content-Length``); KServe v1 is
    ``{"predictions": [...]}``; MLflow scoring adds ``probabilities`` and
    who answered.
    """
    model, outputs, headers = answer.model, answer.outputs, answer.headers()
    if protocol == "oip":
        head = {"model_name": model.name, "model_version": str(model.version), "id": answer.request_id,
                "parameters": {"variant": answer.variant, "routing_revision": answer.table.revision}}
        content, length = infer_body(head, outputs, asked or Asked([], {}))
        if length is None:
            return Response(content, media_type=JSON, headers=headers)
        return Response(content, media_type=OCTET_STREAM, headers=headers | {HEADER_LENGTH: str(length)})
    if protocol == "kserve":
        return json_response({"predictions": to_jsonable(outputs["predict"])}, headers=headers)
    body: dict[str, Any] = {
        "predictions": to_jsonable(outputs["predict"]),
        "rung": {"model": model.name, "version": model.version, "variant": answer.variant, "request_id": answer.request_id},
    }
    if "proba" in outputs:
        body["probabilities"] = to_jsonable(outputs["proba"])
    return json_response(body, headers=headers)


def describe_model(gateway: Gateway, name: str, version: int | None) -> dict[str, Any]:
    """OIP model metadata (REST ``/v2/models/{name}``, gRPC ``ModelMetadata``): ``version`` ``None`` is the primary one."""
    pool = gateway.pool
    runtime, _, table = pool.pick(name, version, None) if version else pool.primary(name)
    model = runtime.model
    return {
        "name": name,
        "versions": [str(v) for v in sorted(table.versions)],
        "platform": f"rung-{model.flavor}",
        "inputs": [{"name": c.name, "datatype": _oip_type(c.type), "shape": [-1]} for c in model.columns],
        "outputs": [{"name": "predict", "datatype": datatype_of(model.classes) if model.classes else "FP64", "shape": [-1]}]
        + ([{"name": "proba", "datatype": "FP64", "shape": [-1]}] if "proba" in model.output_names else []),
        "parameters": {"routing": table.to_dict(), "compiled": model.compiled is not None,
                       "not_compiled": runtime.note.removeprefix("not compiled: ") or None, "device": model.device,
                       "not_served": [{"version": g["version"], "reason": g["reason"]} for g in pool.not_served(name)]},
    }


def model_is_ready(gateway: Gateway, name: str, version: int | None) -> bool:
    """Whether ``name`` (``version`` of it) takes requests now; a model or version not served is :class:`NotFound`."""
    if version:
        gateway.pool.pinned(name, version)
    else:
        gateway.pool.table(name)
    return gateway.ready and not gateway.draining


def _oip_type(signature_type: str) -> str:
    return {"double": "FP64", "float": "FP32", "long": "INT64", "integer": "INT32", "boolean": "BOOL"}.get(signature_type, "BYTES")


async def _not_found(request: Request, exc: Exception) -> Response:
    return json_response(error_body(f"no route {request.url.path}; see /openapi.json", "path"), 404)


async def _not_allowed(request: Request, exc: Exception) -> Response:
    """405 with ``Allow``: the methods of every route on this path (a path can have one route per method)."""
    allowed = sorted({m for route in request.app.routes if isinstance(route, Route) and route.methods
                      and route.matches(request.scope)[0] is not Match.NONE for m in route.methods})
    body = error_body(f"{request.method} is not allowed on {request.url.path}; use {', '.join(allowed)}", "method")
    return json_response(body, 405, {"allow": ", ".join(allowed)})
