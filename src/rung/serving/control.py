"""The gateway's control API: routing tables (``/api/routes``), rollouts (``/api/deployments``) and feedback.

Reading needs a viewer token, changing a deployer token; each call asks the
store, so a revoked token loses the API at once. Feedback (``/v2/feedback``)
is open like prediction (a viewer token when ``serve.protect_predict``).
Feedback for a request the log does not hold (yet) is kept: the join
happens when the log is read (see :mod:`rung.delivery.feedback`).

Bodies are checked by the pydantic models of :mod:`rung.serving.bodies`;
every refusal is a rung error, answered by :mod:`rung.serving.responses`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rung.delivery import feedback, rollout
from rung.delivery.routing import RoutingTable, set_routing
from rung.errors import ConfigError, InputError, IntegrityError, ModelVersionNotFound, NotFound, StoreConflict
from rung.serving.bodies import DeploymentBody, RouteBody, parse_body
from rung.serving.http import json_response, read_json

if TYPE_CHECKING:
    from rung.serving.gateway import Gateway

__all__ = ["control_routes", "deployment_dict"]

ROUTE_BODY_LIMIT = 1024 * 1024
DEPLOYMENT_BODY_LIMIT = 64 * 1024

Handler = Callable[[Request, str], Awaitable[Response]]


def deployment_dict(d: Any) -> dict[str, Any]:
    return {
        "id": d.id, "model": d.model, "version": d.version, "champion": d.baseline, "strategy": d.strategy, "state": d.state,
        "step": d.step, "weight": rollout.weight(d), "forced": d.forced, "created_at": d.created_at.isoformat(),
        "updated_at": d.updated_at.isoformat(), "created_by": d.created_by, "reason": d.reason, "evidence": d.evidence,
    }


def control_routes(gateway: Gateway) -> list[Route]:
    """The control API's routes for ``gateway``'s app."""

    def guarded(needed: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """``handler(request, token id)`` once the caller's token grants ``needed`` (asked of the store each time)."""
        async def endpoint(request: Request) -> Response:
            actor = await gateway.authorise(request.headers.get("authorization"), needed, cached=False)
            return await handler(request, actor)

        return endpoint

    async def list_routes(request: Request, actor: str) -> Response:
        records = await gateway.db(gateway.store.routes)
        return json_response([RoutingTable.from_record(r).to_dict() for r in records])

    async def get_route(request: Request, actor: str) -> Response:
        name = request.path_params["name"]
        record = await gateway.db(gateway.store.route, name)
        if record is None:
            raise NotFound(f"no routing table for {name!r}", field="name")
        return json_response(RoutingTable.from_record(record).to_dict())

    async def put_route(request: Request, actor: str) -> Response:
        name = request.path_params["name"]
        body = parse_body(RouteBody, await read_json(request, ROUTE_BODY_LIMIT))
        table = RoutingTable.build(name, body.variants, body.shadows)
        # Every gateway will have to load these versions: refuse one that is unregistered or fails its sha256 now.
        places = {f"variants[{i}]": v.version for i, v in enumerate(table.variants)}
        places |= {f"shadows[{i}]": v.version for i, v in enumerate(table.shadows)}
        for version in sorted(table.versions):
            try:
                await asyncio.to_thread(gateway.pool.verify, name, version)
            except (ConfigError, ModelVersionNotFound, IntegrityError) as exc:
                where = next(place for place, v in places.items() if v == version)
                raise InputError(f"{where}.version: {exc}", f"{where}.version") from exc
        stored = await gateway.db(lambda: set_routing(gateway.store, table, actor=f"token:{actor}", reason=body.reason,
                                                      expected_revision=body.expected_revision))
        return json_response(stored.to_dict())

    async def post_feedback(request: Request) -> Response:
        if gateway.settings.protect_predict:
            await gateway.authorise(request.headers.get("authorization"), "viewer")
        body = await read_json(request, gateway.max_body)
        if not isinstance(body, dict):
            raise InputError("the body must be a JSON object: {request_id, value} or {feedback: [...]}", "body")
        items = feedback.parse_items(body)  # ConfigError naming the field
        outcome = await gateway.db(partial(feedback.record, gateway.store, items, source="http", clock=gateway.clock))
        if len(items) == 1 and "feedback" not in body and outcome["conflict"]:
            raise StoreConflict(f"request {items[0][0]!r} already has a different feedback value; the first one stands",
                                field="value")
        counts: dict[str, Any] = {k: len(v) for k, v in outcome.items()}
        # Not checked against the request log here (that needs a scan); it is joined when the log is read.
        return json_response(counts | {"unmatched": None, "conflict_ids": outcome["conflict"][:100]})

    async def list_deployments(request: Request, actor: str) -> Response:
        model = request.query_params.get("model")
        found = await gateway.db(partial(gateway.store.deployments, model, limit=100))
        return json_response([deployment_dict(d) for d in found])

    async def create_deployment(request: Request, actor: str) -> Response:
        body = parse_body(DeploymentBody, await read_json(request, DEPLOYMENT_BODY_LIMIT))
        made = await asyncio.to_thread(rollout.deploy, gateway.project, f"{body.model}:{body.version}", strategy=body.strategy,
                                       force=body.force, actor=f"token:{actor}", reason=body.reason_text)
        return json_response(deployment_dict(made), 201)

    async def rollback(request: Request, actor: str) -> Response:
        done = await asyncio.to_thread(rollout.rollback, gateway.project, request.path_params["name"], actor=f"token:{actor}")
        return json_response(deployment_dict(done))

    async def approve(request: Request, actor: str) -> Response:
        done = await asyncio.to_thread(rollout.approve, gateway.project, request.path_params["name"], actor=f"token:{actor}")
        return json_response(deployment_dict(done))

    return [
        Route("/api/routes", guarded("viewer", list_routes), methods=["GET"]),
        Route("/api/routes/{name}", guarded("viewer", get_route), methods=["GET"]),
        Route("/api/routes/{name}", guarded("deployer", put_route), methods=["PUT"]),
        Route("/v2/feedback", post_feedback, methods=["POST"]),
        Route("/api/deployments", guarded("viewer", list_deployments), methods=["GET"]),
        Route("/api/deployments", guarded("deployer", create_deployment), methods=["POST"]),
        Route("/api/deployments/{name}/rollback", guarded("deployer", rollback), methods=["POST"]),
        Route("/api/deployments/{name}/approve", guarded("deployer", approve), methods=["POST"]),
    ]
