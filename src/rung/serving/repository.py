"""Triton's model repository and statistics extensions over REST, as standard inference clients call them.

* ``POST /v2/repository/index`` (body optional, ``{"ready": true}`` for the
  ready versions only): each version the routing tables name, ``READY``,
  ``UNAVAILABLE`` (the reason says why) or ``UNLOADED``.
* ``POST /v2/repository/models/{name}/load`` and ``.../unload``: what this
  gateway has loaded, never what is routed. The routing table is the
  controller's; unloading marks the model so that refreshes leave it
  unloaded (predictions get a 503 saying how to load it), loading serves
  what its table names now. Both need a deployer token, asked of the store
  each time, and are recorded as events (``gateway.unload``, ``gateway.load``).
* ``GET /v2/models[/{name}[/versions/{version}]]/stats``: per-version
  statistics (:mod:`rung.serving.stats`) in Triton's JSON shape.

The index and the statistics are open like model metadata (a viewer token
when ``serve.protect_predict``). Triton's load parameters that replace a
model's configuration or files are refused: rung loads registered versions
only. :func:`load_model` and :func:`unload_model` are what the gRPC service
(:mod:`rung.serving.grpc.service`) calls too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rung.errors import InputError
from rung.serving.http import json_response, media_type, parse_json, read_body, version_param

if TYPE_CHECKING:
    from rung.serving.gateway import Gateway

__all__ = ["load_model", "repository_routes", "unload_model"]

BODY_LIMIT = 64 * 1024


def repository_routes(gateway: Gateway) -> list[Route]:
    """The repository and statistics routes of ``gateway``'s app (listed before ``/v2/models/{name}``)."""
    pool, stats = gateway.pool, gateway.stats

    async def reader(request: Request) -> None:
        if gateway.settings.protect_predict:
            await gateway.authorise(request.headers.get("authorization"), "viewer")

    async def index(request: Request) -> Response:
        await reader(request)
        ready = (await _body(request)).get("ready", False)
        if not isinstance(ready, bool):
            raise InputError(f"ready: expected true or false, got {ready!r}"[:200], "ready")
        return json_response(pool.repository_index(ready=ready))

    async def load(request: Request) -> Response:
        actor = await gateway.authorise(request.headers.get("authorization"), "deployer", cached=False)
        name = request.path_params["name"]
        parameters = (await _body(request)).get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InputError("parameters: expected an object", "parameters")
        await load_model(gateway, name, list(parameters), actor)
        return json_response({"name": name, "loaded": True})

    async def unload(request: Request) -> Response:
        actor = await gateway.authorise(request.headers.get("authorization"), "deployer", cached=False)
        name = request.path_params["name"]
        await _body(request)  # unload_dependents and the like: rung's models have none
        await unload_model(gateway, name, actor)
        return json_response({"name": name, "unloaded": True})

    async def statistics(request: Request) -> Response:
        await reader(request)
        return json_response(stats.snapshot(request.path_params.get("name"), version_param(request)))

    return [
        Route("/v2/repository/index", index, methods=["POST"]),
        Route("/v2/repository/models/{name}/load", load, methods=["POST"]),
        Route("/v2/repository/models/{name}/unload", unload, methods=["POST"]),
        Route("/v2/models/stats", statistics, methods=["GET"]),
        Route("/v2/models/{name}/stats", statistics, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/stats", statistics, methods=["GET"]),
    ]


async def load_model(gateway: Gateway, name: str, parameters: list[str], actor: str) -> None:
    """Load ``name`` for ``actor`` (a deployer token's id; REST and gRPC), and record it as an event.

    ``parameters`` are the names of the request's load parameters: Triton's
    that replace a model's configuration or files are refused.
    """
    for key in parameters:
        if key == "config" or str(key).startswith("file:"):
            raise InputError(f"parameters.{key}: rung loads the registered versions its routing table names and "
                             "takes no model configuration or files; register a version with `rung run` and "
                             "route it", f"parameters.{key}")
    await gateway.pool.load_model(name)
    await _audit(gateway, "gateway.load", name, actor)


async def unload_model(gateway: Gateway, name: str, actor: str) -> None:
    """Unload ``name`` for ``actor`` (REST and gRPC), and record it as an event."""
    await gateway.pool.unload_model(name)
    await _audit(gateway, "gateway.unload", name, actor)


async def _audit(gateway: Gateway, kind: str, model: str, actor: str) -> None:
    pool = gateway.pool
    versions = sorted(pool.tables[model].versions) if model in pool.tables else []
    data: dict[str, Any] = {"versions": versions, "routing": "unchanged"}
    await gateway.db(lambda: gateway.store.append_event(kind, actor=f"token:{actor}", subject=model, data=data,
                                                        time=gateway.clock.now()))


async def _body(request: Request) -> dict[str, Any]:
    """The optional JSON object these calls take: ``{}`` when the body is empty (as tritonclient sends the index's)."""
    media_type(request)
    if request.headers.get("content-length") in (None, "0") and not request.headers.get("transfer-encoding"):
        return {}
    raw = await read_body(request, BODY_LIMIT, send="a JSON object, or nothing")
    if not raw.strip():
        return {}
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise InputError("the body must be a JSON object (or empty)", "body")
    return body
