"""The dashboard's web app: pages, live refresh, and actions behind API tokens.

Pages are HTML rendered on the server (Jinja2) with inline SVG charts; the
one script (``static/rung.js``, served by rung, nothing from a CDN) asks
``/api/state`` every ``ui.refresh_s`` seconds and swaps the page's main
part in place when the event log has moved, so a page left open follows
``rung up`` without a reload.

Who may do what:

- reading: open by default (the dashboard binds to 127.0.0.1); with
  ``ui.read: token`` every page needs a viewer token;
- acting (deploy, roll back, approve, retrain): a deployer token, always.
  Each action is recorded as an event whose actor is ``ui:<token name>``.
  Assessing again (``/maturity?refresh=1``) writes an assessment, so it
  needs a deployer token too; without one the page shows the stored
  assessment, with the status of the refusal (401 or 403).

A token is entered once on the page and kept in an HttpOnly, SameSite=Strict
cookie; scripts may also send ``Authorization: Bearer``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from rung.errors import AuthError, NotFound, RequestInvalid, RungError
from rung.serving.responses import Status, error_body, error_response, exception_handlers
from rung.ui import views

if TYPE_CHECKING:
    from rung.project import Project
    from rung.store.records import TokenRecord

__all__ = ["create_app", "ACTIONS"]

STATIC = Path(__file__).parent / "static"
TEMPLATES = Path(__file__).parent / "templates"
COOKIE = "rung_token"
ACTIONS = {"rollback": "deployer", "approve": "deployer", "deploy": "deployer", "retrain": "deployer"}
ASSESS_ROLE = "deployer"  # /maturity?refresh=1 stores a new assessment
GENERIC = "internal error; the dashboard log has the details"

log = logging.getLogger("rung.ui")


def _environment() -> Any:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]))
    env.filters["pct"] = lambda v: "-" if v is None else f"{v:.0%}"
    env.filters["num"] = lambda v, d=3: "-" if not isinstance(v, (int, float)) else f"{v:.{d}f}"
    env.filters["when"] = lambda v: "-" if not isinstance(v, datetime) else v.strftime("%Y-%m-%d %H:%M")
    return env


def create_app(project: Project) -> Starlette:
    """The dashboard for ``project`` (its store, settings and MLflow); serve it with uvicorn."""
    settings = project.settings.ui
    env = _environment()
    lock = threading.Lock()  # one action at a time: each is a short transaction, a retraining runs in the background

    def token_of(request: Request, needed: str) -> TokenRecord:
        from rung.serving.auth import authenticate

        header = request.headers.get("authorization") or (
            f"Bearer {request.cookies[COOKIE]}" if request.cookies.get(COOKIE) else None)
        return authenticate(project.store, header, needed)

    def reader(handler: Any) -> Any:
        """A page: with ``ui.read: token``, nothing is read (or assessed) before a viewer token is checked."""
        async def guarded(request: Request) -> Response:
            if settings.read == "token":
                token_of(request, "viewer")  # AuthError: the login page, 401 or 403
            return await handler(request)
        return guarded

    def page(request: Request, template: str, status: int = 200, **context: Any) -> Response:
        context.setdefault("user", _optional_user(request))
        fragment = request.headers.get("x-rung-fragment") == "1"
        html = env.get_template(template).render(
            request=request, project=project.settings.name, refresh_s=settings.refresh_s, fragment=fragment,
            path=request.url.path, **context)
        return HTMLResponse(html, status_code=status)

    def _optional_user(request: Request) -> TokenRecord | None:
        try:
            return token_of(request, "viewer") if request.cookies.get(COOKIE) else None
        except AuthError:
            return None

    async def run(fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def overview(request: Request) -> Response:
        return page(request, "overview.html", **await run(views.overview, project))

    async def model(request: Request) -> Response:
        data = await run(views.model_page, project, request.path_params["name"], mlflow_url=settings.mlflow_url)
        return page(request, "model.html", **data)

    async def monitoring(request: Request) -> Response:
        last = _int(request, "last", 60, 1, 2000)
        return page(request, "monitoring.html", **await run(views.monitoring, project, request.path_params["name"], last=last))

    async def feature(request: Request) -> Response:
        version = _int(request, "version", None, 1, 10**9)
        end = _time(request, "end")
        data = await run(views.feature, project, request.path_params["name"], request.path_params["feature"],
                         version=version, end=end)
        return page(request, "feature.html", **data)

    async def timeline(request: Request) -> Response:
        data = await run(views.timeline, project, model=request.query_params.get("model") or None,
                         kind=request.query_params.get("kind") or None)
        return page(request, "timeline.html", **data)

    async def maturity(request: Request) -> Response:
        from rung.serving.auth import allows

        refused: AuthError | None = None
        if request.query_params.get("refresh") == "1":
            try:
                token_of(request, ASSESS_ROLE)
            except AuthError as exc:
                refused = exc  # the stored assessment is shown; nothing is written
            else:
                from rung.assess.assessment import assess_project, save

                await run(lambda: save(project.store, assess_project(project).to_dict()))
                return RedirectResponse("/maturity", status_code=303)
        user = _optional_user(request)
        return page(request, "maturity.html", status=refused.status if refused else 200, user=user,
                    refused=None if refused is None else f"Assessing again needs a {ASSESS_ROLE} token: {refused}",
                    can_assess=user is not None and allows(user.role, ASSESS_ROLE), **await run(views.maturity, project))

    async def state(request: Request) -> Response:
        events = await run(project.store.events, None, 1)
        return JSONResponse({"event": events[-1].id if events else 0, "refresh_s": settings.refresh_s})

    async def login(request: Request) -> Response:
        if request.method == "GET":
            return page(request, "login.html", next=request.query_params.get("next", "/"))
        from urllib.parse import parse_qs

        form = parse_qs((await request.body()).decode("utf-8", errors="replace"))  # a urlencoded form, two fields
        token = (form.get("token") or [""])[0].strip()
        target = (form.get("next") or ["/"])[0]
        target = target if target.startswith("/") and not target.startswith("//") else "/"
        try:
            from rung.serving.auth import authenticate

            authenticate(project.store, f"Bearer {token}", "viewer")
        except AuthError as exc:
            return page(request, "login.html", status=exc.status, error=str(exc), next=target)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
        return response

    async def logout(request: Request) -> Response:
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    async def action(request: Request) -> Response:
        name, verb = request.path_params["name"], request.path_params["action"]
        if verb not in ACTIONS:
            raise NotFound(f"action: {verb!r} is not one of {', '.join(ACTIONS)}", field="action")
        user = token_of(request, ACTIONS[verb])
        try:
            body = await request.json() if request.headers.get("content-length", "0") != "0" else {}
        except ValueError as exc:
            raise RequestInvalid("body: not valid JSON", "body") from exc
        if not isinstance(body, dict):
            raise RequestInvalid("body: expected a JSON object", "body")
        actor = f"ui:{user.name}"
        message = await run(_act, project, lock, name, verb, body, actor)
        return JSONResponse({"ok": True, "message": message, "actor": actor})

    def answer(request: Request, exc: Exception, status: Status) -> Response:
        """An error, with the status of rung's one table: JSON for scripts, a page (the login page for a token) for people.

        A refused action (nothing to roll back, an unknown version, ...) is a
        4xx with the reason; an error that is not rung's a 500 without its details.
        """
        known = isinstance(exc, RungError)
        if request.url.path.startswith(("/actions/", "/api/")):
            return error_response(exc) if isinstance(exc, RungError) else JSONResponse(error_body(GENERIC), status.http)
        if isinstance(exc, AuthError):
            return page(request, "login.html", status=status.http, error=str(exc), next=request.url.path)
        extra = {"user": None} if status.http >= 500 else {}  # what failed may be the store the user is read from
        return page(request, "error.html", status=status.http, error=str(exc) if known else GENERIC, **extra)

    routes = [
        Route("/", reader(overview)),
        Route("/models/{name}", reader(model)),
        Route("/models/{name}/monitoring", reader(monitoring)),
        Route("/models/{name}/features/{feature:path}", reader(feature)),  # a feature's name may hold a "/"
        Route("/timeline", reader(timeline)),
        Route("/maturity", reader(maturity)),
        Route("/api/state", reader(state)),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/actions/{name}/{action}", action, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=str(STATIC)), name="static"),
    ]
    return Starlette(routes=routes, exception_handlers=exception_handlers(log, generic=GENERIC, answer=answer))


def _int(request: Request, name: str, default: int | None, low: int, high: int) -> Any:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise RequestInvalid(f"{name}: {raw!r} is not a whole number", name) from None
    if not low <= value <= high:
        raise RequestInvalid(f"{name}: {value} is outside {low}..{high}", name)
    return value


def _time(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        raise RequestInvalid(f"{name}: {raw!r} is not an ISO 8601 time", name) from None


def _act(project: Project, lock: threading.Lock, model: str, verb: str, body: dict[str, Any], actor: str) -> str:
    """Carry out one action as ``actor``; the rollout functions record the event."""
    from rung.delivery import rollout
    from rung.delivery.controller import Controller

    reason = body.get("reason") if isinstance(body.get("reason"), str) else None
    with lock:
        if verb == "rollback":
            done = rollout.rollback(project, model, actor=actor, reason=reason)
            message = f"rolled back: all traffic to {model}:{done.baseline}"
        elif verb == "approve":
            done = rollout.approve(project, model, actor=actor)
            message = f"approved: {done.ref} promoted"
        elif verb == "deploy":
            version = body.get("version")
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise RequestInvalid("version: give the version number to deploy (a whole number ≥ 1)", "version")
            strategy = body.get("strategy") if body.get("strategy") in ("direct", "canary", "ab", "shadow") else None
            created = rollout.deploy(project, f"{model}:{version}", strategy=strategy, actor=actor, reason=reason)
            message = f"deploying {created.ref} with {created.strategy}"
        if verb != "retrain":
            Controller(project, holder="ui").sync()  # traffic follows at once, controller running or not, as the CLI does
            return message
    # retrain: the chain runs for minutes; start it and answer now (its events tell the rest)
    from rung.clock import SYSTEM
    from rung.triggers.decision import TriggerReason
    from rung.triggers.retrain import retrain

    why = reason or f"requested in the dashboard by {actor}"
    threading.Thread(target=retrain, args=(project, TriggerReason("manual", why)), daemon=True,
                     kwargs={"clock": SYSTEM, "actor": actor, "manual": True}, name="ui-retrain").start()
    return f"retraining started: {why} (follow it on the timeline)"
