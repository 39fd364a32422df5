"""Gateway routes for delivery: feedback (``/v2/feedback``) and rollouts (``/api/deployments``).

Feedback is open like prediction (a viewer token when ``serve.protect_predict``);
rollouts need a deployer token to change and a viewer token to read. Feedback
for a request the log does not hold (yet) is kept: the join happens when the
log is read (see :mod:`rung.delivery.feedback`).
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rung.delivery import feedback, rollout
from rung.errors import AuthError, ConfigError

if TYPE_CHECKING:
    from rung.serving.gateway import Gateway

__all__ = ["control_routes", "deployment_dict"]


def deployment_dict(d: Any) -> dict[str, Any]:
    return {
        "id": d.id, "model": d.model, "version": d.version, "champion": d.baseline, "strategy": d.strategy, "state": d.state,
        "step": d.step, "weight": rollout.weight(d), "forced": d.forced, "created_at": d.created_at.isoformat(),
        "updated_at": d.updated_at.isoformat(), "created_by": d.created_by, "reason": d.reason, "evidence": d.evidence,
    }


def control_routes(gateway: Gateway, guarded: Any) -> list[Route]:
    from rung.serving.gateway import HTTPError, _error, _json, _read_json

    async def post_feedback(request: Request) -> Response:
        try:
            if gateway.settings.protect_predict:
                await gateway.authorise(request, "viewer")
            body = await _read_json(request, gateway.max_body)
            if not isinstance(body, dict):
                raise HTTPError(422, "the body must be a JSON object: {request_id, value} or {feedback: [...]}", "body")
            items = feedback.parse_items(body)
        except HTTPError as exc:
            return _error(exc.status, exc.message, exc.field)
        except AuthError as exc:
            return _error(exc.status, str(exc), "authorization")
        except ConfigError as exc:
            message = str(exc)
            return _error(422, message, message.split(":")[0])
        outcome = await gateway.db(partial(feedback.record, gateway.store, items, source="http", clock=gateway.clock))
        if len(items) == 1 and "feedback" not in body and outcome["conflict"]:
            return _error(409, f"request {items[0][0]!r} already has a different feedback value; the first one stands",
                          "value")
        counts: dict[str, Any] = {k: len(v) for k, v in outcome.items()}
        # Not checked against the request log here (that needs a scan); it is joined when the log is read.
        return _json(counts | {"unmatched": None, "conflict_ids": outcome["conflict"][:100]})

    async def list_deployments(request: Request, actor: str) -> Response:
        model = request.query_params.get("model")
        found = await gateway.db(partial(gateway.store.deployments, model, limit=100))
        return _json([deployment_dict(d) for d in found])

    async def create_deployment(request: Request, actor: str) -> Response:
        body = await _read_json(request, 64 * 1024)
        if not isinstance(body, dict):
            raise HTTPError(422, "expected an object with model and version (and optional strategy, force, reason)", "body")
        unknown = set(body) - {"model", "version", "strategy", "force", "reason"}
        if unknown:
            raise HTTPError(422, f"unknown field {sorted(unknown)[0]!r}", sorted(unknown)[0])
        model, version = body.get("model"), body.get("version")
        if not isinstance(model, str) or not model:
            raise HTTPError(422, "model: the registered model's name", "model")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise HTTPError(422, "version: a registered version number", "version")
        strategy, force, reason = body.get("strategy"), body.get("force", False), body.get("reason")
        if strategy is not None and strategy not in rollout.STRATEGIES:
            raise HTTPError(422, f"strategy: one of {', '.join(rollout.STRATEGIES)}", "strategy")
        if not isinstance(force, bool):
            raise HTTPError(422, "force must be true or false", "force")
        made = await asyncio.to_thread(rollout.deploy, gateway.project, f"{model}:{version}", strategy=strategy,
                                       force=force, actor=f"token:{actor}", reason=reason if isinstance(reason, str) else None)
        return _json(deployment_dict(made), 201)

    async def rollback(request: Request, actor: str) -> Response:
        done = await asyncio.to_thread(rollout.rollback, gateway.project, request.path_params["name"], actor=f"token:{actor}")
        return _json(deployment_dict(done))

    async def approve(request: Request, actor: str) -> Response:
        done = await asyncio.to_thread(rollout.approve, gateway.project, request.path_params["name"], actor=f"token:{actor}")
        return _json(deployment_dict(done))

    return [
        Route("/v2/feedback", post_feedback, methods=["POST"]),
        Route("/api/deployments", guarded("viewer", list_deployments), methods=["GET"]),
        Route("/api/deployments", guarded("deployer", create_deployment), methods=["POST"]),
        Route("/api/deployments/{name}/rollback", guarded("deployer", rollback), methods=["POST"]),
        Route("/api/deployments/{name}/approve", guarded("deployer", approve), methods=["POST"]),
    ]
