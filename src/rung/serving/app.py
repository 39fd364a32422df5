"""The gateway's ASGI app (Starlette): prediction, health, metadata and metrics routes.

* Open Inference Protocol v2 (``/v2/...``) and MLflow scoring
  (``/models/{name}/invocations``, ``/invocations``: JSON or CSV), described
  in ``/openapi.json``; the control API (``/api/...``) and feedback come
  from :mod:`rung.serving.control`.
* A request may carry columns the model does not take: the model gets its
  own columns only, and the request log keeps the others too (up to
  ``LOGGED_EXTRAS`` distinct names per model, so that clients sending
  ever new names cannot widen the log without bound).
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
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from rung import __version__
from rung.clock import SYSTEM, Clock
from rung.errors import PredictionFailed, RungError
from rung.models.signature import Columns
from rung.serving.control import control_routes
from rung.serving.gateway import Gateway
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
from rung.serving.protocols import oip_datatype, oip_outputs, parse_csv, parse_mlflow, parse_oip, to_jsonable
from rung.serving.responses import error_body, exception_handlers

if TYPE_CHECKING:
    from rung.project import Project

__all__ = ["create_app"]

log = logging.getLogger("rung.gateway")

GENERIC = "internal error; the gateway log has the details"
MLFLOW_TYPES = (JSON, CSV)  # what /invocations reads, as `mlflow models serve` does (but Parquet)
LOGGED_EXTRAS = 16  # distinct names of columns a model does not take that the request log keeps, per model


def create_app(project: Project, *, clock: Clock = SYSTEM) -> Starlette:
    """The gateway's ASGI app for ``project`` (``rung serve`` runs it under uvicorn); ``app.state.gateway`` is its state."""
    gateway = Gateway(project, clock=clock)
    pool = gateway.pool
    settings = gateway.settings

    async def predict(request: Request, protocol: str) -> Response:
        started = time.perf_counter()
        request.state.request_id = request_id(request.headers.get("x-request-id"))
        model_name = request.path_params.get("name") or project.settings.model_name
        if settings.protect_predict:
            await gateway.authorise(request, "viewer")
        version = version_param(request)
        if protocol == "oip":
            body = await read_json(request, gateway.max_body)
            if isinstance(body, dict) and "x-request-id" not in request.headers:
                request.state.request_id = request_id(body.get("id"))
            raw, rows = parse_oip(body, pool.columns(model_name, version))
        elif media_type(request, MLFLOW_TYPES) == CSV:
            content = await read_body(request, gateway.max_body, send="a CSV with a header row")
            raw, rows = parse_csv(content, pool.columns(model_name, version))
        else:
            body = parse_json(await read_body(request, gateway.max_body))
            raw, rows = parse_mlflow(body, pool.columns(model_name, version))
        rid: str = request.state.request_id
        key = request.headers.get("x-rung-key")
        if key is None and settings.key_field and raw.get(settings.key_field):
            key = str(raw[settings.key_field][0])
        runtime, variant, table = pool.pick(model_name, version, key)
        columns = gateway.inputs(raw, runtime)
        logged = columns if len(raw) == len(columns) else with_extras(runtime.model.name, columns, raw)
        model = runtime.model
        try:
            outputs = await runtime.predict(columns, rows)
        except Exception as exc:
            gateway.log(rid, model, variant, 500, time.perf_counter() - started, None, logged, rows)
            if isinstance(exc, RungError):  # a worker that died (503, retry), input the model refused
                raise
            # the model raised: this request fails, the gateway lives on
            raise PredictionFailed(f"the model failed on this input: {type(exc).__name__}: {exc}") from exc
        if table.shadows:
            gateway.shadow(table, raw, rows, outputs, rid)
        headers = {"x-request-id": rid, "x-rung-model-version": str(model.version), "x-rung-variant": variant,
                   "x-rung-routing-revision": str(table.revision)}
        if protocol == "oip":
            body_out: dict[str, Any] = {
                "model_name": model.name,
                "model_version": str(model.version),
                "id": rid,
                "parameters": {"variant": variant, "routing_revision": table.revision},
                "outputs": oip_outputs(outputs),
            }
        else:
            body_out = {
                "predictions": to_jsonable(outputs["predict"]),
                "rung": {"model": model.name, "version": model.version, "variant": variant, "request_id": rid},
            }
            if "proba" in outputs:
                body_out["probabilities"] = to_jsonable(outputs["proba"])
        elapsed = time.perf_counter() - started
        gateway.metrics.observe(model.name, model.version, variant, protocol, 200, elapsed)
        gateway.log(rid, model, variant, 200, elapsed, outputs, logged, rows)
        return json_response(body_out, headers=headers)

    extras: dict[str, set[str]] = {}  # model -> the names of columns it does not take that the log keeps

    def with_extras(model_name: str, columns: Columns, raw: Columns) -> Columns:
        """What the request log keeps: the model's columns, then the request's others (bounded names per model)."""
        kept = extras.setdefault(model_name, set())
        logged = dict(columns)
        for name, values in raw.items():
            if name in logged:
                continue
            if name not in kept:
                if len(kept) >= LOGGED_EXTRAS:
                    continue
                kept.add(name)
            logged[name] = values
        return logged

    def endpoint(protocol: str) -> Any:
        in_flight = gateway.metrics.in_flight

        async def answer(request: Request) -> Response:
            in_flight.inc()
            try:
                return await predict(request, protocol)
            finally:
                in_flight.dec()

        return answer

    infer, invocations = endpoint("oip"), endpoint("mlflow")

    async def live(request: Request) -> Response:
        return json_response({"live": True})

    async def ready(request: Request) -> Response:
        ok = gateway.ready and not gateway.draining
        return json_response({"ready": ok, "not_served": pool.not_served()}, 200 if ok else 503)

    async def server_metadata(request: Request) -> Response:
        return json_response({"name": "rung", "version": __version__, "extensions": ["rung-routing"]})

    async def model_metadata(request: Request) -> Response:
        name = request.path_params["name"]
        version = version_param(request)
        runtime, _, table = pool.pick(name, version, None) if version else pool.primary(name)
        model = runtime.model
        return json_response({
            "name": name,
            "versions": [str(v) for v in sorted(table.versions)],
            "platform": f"rung-{model.flavor}",
            "inputs": [{"name": c.name, "datatype": _oip_type(c.type), "shape": [-1]} for c in model.columns],
            "outputs": [{"name": "predict", "datatype": oip_datatype(model.classes) if model.classes else "FP64", "shape": [-1]}]
            + ([{"name": "proba", "datatype": "FP64", "shape": [-1]}] if model.task == "classification" else []),
            "parameters": {"routing": table.to_dict(), "compiled": model.compiled is not None, "device": model.device,
                           "not_served": [{"version": g["version"], "reason": g["reason"]} for g in pool.not_served(name)]},
        })

    async def model_ready(request: Request) -> Response:
        name = request.path_params["name"]
        version = version_param(request)
        if version:
            pool.pinned(name, version)
        else:
            pool.table(name)
        return json_response({"name": name, "ready": gateway.ready and not gateway.draining})

    async def metrics(request: Request) -> Response:
        return Response(gateway.metrics.render(), media_type="text/plain; version=0.0.4")

    async def openapi(request: Request) -> Response:
        from rung.serving.openapi import document

        return json_response(document())

    routes = [
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2/models/{name}", model_metadata, methods=["GET"]),
        Route("/v2/models/{name}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}", model_metadata, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
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
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    app.state.gateway = gateway
    return app


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
