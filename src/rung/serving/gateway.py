"""The gateway: an ASGI app (Starlette) that serves a project's models.

* Open Inference Protocol v2 (``/v2/...``) and MLflow scoring
  (``/models/{name}/invocations``, ``/invocations``), described in
  ``/openapi.json``.
* Each model has a routing table in the metadata store. A background task
  polls the tables' revisions every ``serve.refresh_s``; a changed table
  has its new versions loaded off the request path (in a thread), and only
  then replaces the old table in one assignment. Requests in flight finish
  on the table they started with.
* Every response names the model version and variant that answered
  (``X-Rung-Model-Version``, ``X-Rung-Variant`` and the body) and carries a
  request id (``X-Request-Id``, taken from the request when given).
* Bad input is a 4xx naming the field; a model that raises is a 500 for
  that request only, never a dead worker.
* A version that cannot be loaded (files that fail their sha256, a version
  not registered) is not served, and ``/v2/health/ready`` and the model's
  metadata and readiness say which and why. A running gateway keeps the
  table it had; one that starts serves every other model and version.
* The event loop never waits for the database: routing polls, token
  lookups and control-API reads run in a few threads of their own
  (``DB_THREADS``), so a slow or locked database delays them, not the
  predictions of versions already loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from rung import __version__
from rung.delivery.clock import SYSTEM, Clock
from rung.errors import AuthError, ConfigError, DeployRefused, IntegrityError, NotFound, RungError, StaleDeployment, StaleRoute
from rung.serving import auth
from rung.serving.batching import Runtime
from rung.serving.compiled import CompiledPipeline, compile_model
from rung.serving.control import control_routes
from rung.serving.loader import InputError, LoadedModel, fetch_verified, load_version, training_inputs
from rung.monitor.requestlog import open_request_log
from rung.serving.metrics import GatewayMetrics
from rung.serving.worker import ModelWorker, WorkerDied
from rung.serving.protocols import check_columns, oip_datatype, oip_outputs, parse_mlflow, parse_oip, to_jsonable
from rung.serving.routing import RoutingTable, set_routing, single_version

if TYPE_CHECKING:
    from rung.project import Project
    from rung.store.records import ModelVersionRecord

__all__ = ["Gateway", "create_app"]

log = logging.getLogger("rung.gateway")

JSON = "application/json"
MAX_SHADOW_PENDING = 256
RETIRE_AFTER_S = 30.0  # how long an unrouted version stays loaded for requests already routed to it
TOKEN_CACHE_S = 1.0  # how long prediction and feedback routes trust a token check, either way
WATCH_S = 0.5  # how often model workers are checked for a process that died while idle
DB_THREADS = 8  # the gateway's database calls at once (the PostgreSQL pool holds more)

T = TypeVar("T")


class HTTPError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


class Gateway:
    """The serving state of one project: loaded versions and routing tables.

    ``clock`` stamps the request log (and feedback): an in-process gateway
    under a manual clock logs simulated time, so the demo and tests judge
    rollouts over hours that take seconds.
    """

    def __init__(self, project: Project, *, clock: Clock = SYSTEM) -> None:
        self.project = project
        self.clock = clock
        self.settings = project.settings.serve
        self.store = project.store
        self.metrics = GatewayMetrics()
        self.tables: dict[str, RoutingTable] = {}
        self.runtimes: dict[tuple[str, int], Runtime] = {}
        self.ready = False
        self.draining = False
        self.shadow_pending = 0
        self.rejected: dict[str, int] = {}  # model -> routing revision that could not be loaded
        self.unserved: dict[str, dict[int, str]] = {}  # model -> {version named by its table: why it is not served}
        self._retiring: dict[tuple[str, int], asyncio.TimerHandle] = {}
        self.max_body = int(self.settings.max_body_mb * 1024 * 1024)
        self._tasks: list[asyncio.Task[None]] = []
        self._token_cache: dict[str, tuple[float, str | AuthError]] = {}
        self._db = ThreadPoolExecutor(DB_THREADS, thread_name_prefix="rung-db")
        self.requests = open_request_log(project, clock=clock, on_drop=self.metrics.request_log_dropped)  # None: off

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._ensure_default_route)
        await self.refresh()
        if self.requests is not None:
            self.requests.start()
        self.ready = True
        self._tasks = [asyncio.create_task(self._refresh_forever()), asyncio.create_task(self._watch_workers())]

    async def stop(self) -> None:
        self.ready = False
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for runtime in self.runtimes.values():
            runtime.close()
        if self.requests is not None:
            await asyncio.to_thread(self.requests.stop)  # write what is queued
        self._db.shutdown(wait=False)

    async def db(self, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)`` in one of the gateway's database threads: the event loop goes on meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(self._db, partial(call, *args))

    def _ensure_default_route(self) -> None:
        """A project model without a routing table is served by its ``champion``."""
        name = self.project.settings.model_name
        if self.store.route(name) is not None:
            return
        champion = self.project.tracking.aliases().get(name, {}).get("champion")
        if champion is not None:
            with contextlib.suppress(StaleRoute):
                set_routing(self.store, single_version(name, champion), actor="gateway", reason="champion at start",
                            expected_revision=0)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.refresh_s)
            try:
                await self.refresh()
            except Exception:  # a bad table or a store hiccup must not stop serving the current one
                log.exception("routing refresh failed; serving the previous tables")

    async def refresh(self) -> None:
        """Load what changed tables need, then swap them in.

        A table naming a version that cannot be loaded is refused while a
        previous one serves; without one (at start, or a model new to this
        gateway) the versions that did load serve, and the rest are listed
        in :attr:`unserved`. Either way, it is tried again only when the
        table changes.
        """
        revisions = await self.db(self.store.route_revisions)
        for model, revision in revisions.items():
            current = self.tables.get(model)
            if (current is not None and current.revision == revision) or self.rejected.get(model) == revision:
                continue
            record = await self.db(self.store.route, model)
            if record is None:
                continue
            try:
                table = RoutingTable.from_record(record)
            except ConfigError as exc:  # written around set_routing: nothing to load, keep what serves
                self.rejected[model] = revision
                log.error("routing table %s revision %s is malformed, not used: %s", model, revision, exc)
                continue
            failed = await self._load_versions(table)
            if failed:
                self.rejected[model] = revision
                if current is not None:
                    self.unserved[model] = failed
                    log.error("routing table %s revision %s refused, still serving revision %s: %s", model, revision,
                              current.revision, "; ".join(failed.values()))
                    continue
                served = _served_part(table, failed)
                log.error("routing table %s revision %s: %s; %s", model, revision, "; ".join(failed.values()),
                          f"serving version(s) {', '.join(map(str, sorted(served.versions)))}" if served else "not serving it")
                self.unserved[model] = failed
                if served is None:
                    continue
                table = served
            else:
                self.unserved.pop(model, None)
            self.tables[model] = table  # the swap: one assignment
            self.metrics.routing_revision.labels(model).set(table.revision)
            if current is not None and table.updated_at is not None:
                lag = max(0.0, time.time() - table.updated_at.timestamp())
                self.metrics.routing_lag.labels(model).observe(lag)
        self._unload_unused()

    async def _load_versions(self, table: RoutingTable) -> dict[int, str]:
        """Load the table's versions not loaded yet (each in a thread); why each that could not be, by version."""
        failed: dict[int, str] = {}
        for version in sorted(table.versions):
            if (table.model, version) in self.runtimes:
                continue
            try:
                self.runtimes[(table.model, version)] = await asyncio.to_thread(self._load, table.model, version)
            except Exception as exc:  # one version that cannot load must not stop the others
                failed[version] = str(exc) if isinstance(exc, RungError) else f"{table.model}:{version}: {type(exc).__name__}: {exc}"
        return failed

    def _record(self, model: str, version: int) -> ModelVersionRecord:
        record = self.store.get_model_version(model, version)
        if record is None:
            raise ConfigError(f"{model}:{version} is not a registered version")
        return record

    def verify(self, model: str, version: int) -> None:
        """Raise unless ``model:version`` is registered and its files match their sha256 (blocking)."""
        fetch_verified(self.project, self._record(model, version))

    def _load(self, model: str, version: int) -> Runtime:
        """Download, verify and load a version, start its worker, warm it up (off the event loop)."""
        record = self._record(model, version)
        loaded = load_version(self.project, record)
        not_compiled = "serve.compile is false"
        if self.settings.compile:
            loaded.compiled, not_compiled = self._compile(loaded, record)
        workers: list[ModelWorker] = []
        if self.settings.isolation == "process":
            try:
                restarted = self.metrics.worker_restarts.labels(model, str(version)).inc
                for _ in range(self.settings.workers):
                    workers.append(ModelWorker(loaded, threads=self.settings.model_threads, on_restart=restarted))
            except Exception as exc:  # e.g. a pyfunc model that cannot be pickled: predict in a thread instead
                for worker in workers:
                    worker.close()
                workers = []
                log.warning("%s predicts in a thread of the gateway: no worker process (%s)", loaded.ref, exc)
        batching = self.settings.batching
        runtime = Runtime(
            loaded,
            workers=workers,
            max_batch_size=batching.max_batch_size,
            max_wait_ms=batching.max_wait_ms,
            batching=batching.enabled,
            threads=self.settings.model_threads,
            on_batch=lambda m, rows: self.metrics.batch_rows.labels(m.name, str(m.version)).observe(rows),
        )
        runtime.warm_up()
        if loaded.compiled is None:
            runtime.note = f"not compiled: {not_compiled}"
        log.info("loaded %s", runtime.describe())
        return runtime

    def _compile(self, loaded: LoadedModel, record: ModelVersionRecord) -> tuple[CompiledPipeline | None, str]:
        """The compiled route when it gives the estimator's answers on the version's training rows; else why not."""
        try:
            sample = training_inputs(self.project, record)
        except RungError as exc:
            return None, str(exc)
        return compile_model(loaded, sample)

    def _unload_unused(self) -> None:
        """Unload versions no table needs after a grace period.

        Requests routed just before a swap still finish on them, and a table
        that wants one back within the grace period gets it without a reload.
        """
        needed = {(m, v) for m, t in self.tables.items() for v in t.versions}
        loop = asyncio.get_running_loop()
        for key in list(self._retiring):
            if key in needed:
                self._retiring.pop(key).cancel()
        for key in self.runtimes:
            if key not in needed and key not in self._retiring:
                self._retiring[key] = loop.call_later(RETIRE_AFTER_S, self._retire, key)

    def _retire(self, key: tuple[str, int]) -> None:
        self._retiring.pop(key, None)
        runtime = self.runtimes.pop(key, None)
        if runtime is not None:
            runtime.close()

    async def _watch_workers(self) -> None:
        """Start again, between requests, the model workers that died while idle (counted in the metrics)."""
        while True:
            await asyncio.sleep(WATCH_S)
            workers = [w for r in self.runtimes.values() for w in r.workers if isinstance(w, ModelWorker)]
            for worker in workers:
                try:
                    await asyncio.to_thread(worker.revive)
                except Exception:  # it stays dead: the next request gets a 503 and tries again
                    log.exception("model worker of %s could not be started again", worker.model.ref)

    def not_served(self, model: str | None = None) -> list[dict[str, Any]]:
        """What routing tables name but this gateway does not serve, and why (all models, or ``model``'s)."""
        return [{"model": m, "version": v, "reason": why} for m, failed in sorted(self.unserved.items())
                if model in (None, m) for v, why in sorted(failed.items())]

    # -- prediction ---------------------------------------------------------------------------

    def table(self, model: str) -> RoutingTable:
        table = self.tables.get(model)
        if table is None and model in self.unserved:
            why = "; ".join(self.unserved[model].values())
            raise HTTPError(503, f"model {model!r} is not served: {why}; route it to a version that loads", "model_name")
        if table is None:
            raise HTTPError(404, f"model {model!r} is not served here; served: {', '.join(sorted(self.tables)) or 'none'}", "model_name")
        return table

    def pinned(self, model: str, version: int) -> Runtime:
        table = self.table(model)
        runtime = self.runtimes.get((model, version))
        why = self.unserved.get(model, {}).get(version)
        if runtime is None and why is not None:
            raise HTTPError(503, f"version {version} of {model!r} is not served: {why}", "model_version")
        if runtime is None:
            served = ", ".join(str(v) for v in sorted(table.versions))
            raise HTTPError(404, f"version {version} of {model!r} is not served (served: {served}); deploy it first", "model_version")
        return runtime

    def pick(self, model: str, version: int | None, key: str | None) -> tuple[Runtime, str, RoutingTable]:
        """Who answers: the routed variant, or the pinned version."""
        table = self.table(model)
        if version is None:
            variant = table.choose(key)
            return self.runtimes[(model, variant.version)], variant.name, table
        name = next((v.name for v in table.variants + table.shadows if v.version == version), "pinned")
        return self.pinned(model, version), name, table

    def primary(self, model: str) -> tuple[Runtime, str, RoutingTable]:
        """The variant with the largest share (what model metadata describes)."""
        table = self.table(model)
        top = max(table.variants, key=lambda v: v.weight)
        return self.runtimes[(model, top.version)], top.name, table

    def columns(self, model: str, version: int | None) -> list[Any]:
        """The input columns to parse a request with (the pinned or the primary version's)."""
        runtime = self.pinned(model, version) if version is not None else self.primary(model)[0]
        return runtime.model.columns

    def shadow(self, table: RoutingTable, columns: dict[str, list[Any]], rows: int, answer: dict[str, Any], request_id: str) -> None:
        """Send a copy to the table's shadows; never awaited by the request."""
        for target in table.shadows:
            runtime = self.runtimes.get((table.model, target.version))
            if runtime is None:
                continue
            if self.shadow_pending >= MAX_SHADOW_PENDING:
                self.metrics.shadow.labels(table.model, str(target.version), "dropped").inc()
                continue
            self.shadow_pending += 1
            asyncio.get_running_loop().create_task(self._shadow_one(runtime, target.name, columns, rows, answer, request_id))

    async def _shadow_one(self, runtime: Runtime, variant: str, raw: dict[str, list[Any]], rows: int, answer: dict[str, Any],
                          request_id: str) -> None:
        model = runtime.model
        started = time.perf_counter()
        outputs: dict[str, Any] | None = None
        columns = raw
        try:
            columns = check_columns(_without_key(raw, runtime, self.settings.key_field), model.columns)
            outputs = await runtime.predict(columns, rows)
            same = to_jsonable(outputs["predict"]) == to_jsonable(answer["predict"])
            outcome = "agree" if same else "disagree"
        except Exception:
            outcome = "error"
        finally:
            self.shadow_pending -= 1
        self.metrics.shadow.labels(model.name, str(model.version), outcome).inc()
        self.log(request_id, model, variant, 500 if outputs is None else 200, time.perf_counter() - started, outputs,
                 columns, rows, shadow=True)

    def log(self, request_id: str, model: LoadedModel, variant: str, status: int, seconds: float,
            outputs: dict[str, Any] | None, columns: dict[str, list[Any]], rows: int, *, shadow: bool = False) -> None:
        """Hand one request to the request log: references only, converted off the event loop."""
        requests = self.requests
        if requests is None:
            return
        predictions = scores = None
        if outputs is not None:
            predictions, scores = outputs["predict"], outputs.get("proba")
        requests.record(request_id, model.name, model.version, variant, status=status, latency_s=seconds, rows=rows,
                        predictions=predictions, scores=scores, features=columns, shadow=shadow)

    # -- tokens -------------------------------------------------------------------------------

    async def authorise(self, request: Request, needed: str, *, cached: bool = True) -> str:
        """The caller's token id, if it grants ``needed``; else :class:`AuthError`.

        With ``cached`` (prediction and feedback routes) the answer, yes or
        no, is kept for ``TOKEN_CACHE_S``: a wrong token costs the database
        one lookup a second however often it is sent, and a revoked token
        may still predict that long. The control API asks the store each
        time, so a revoked token loses it at once.
        """
        header = request.headers.get("authorization")
        key = f"{needed}:{header}"
        hit = self._token_cache.get(key) if cached else None
        if hit is None or time.monotonic() - hit[0] >= TOKEN_CACHE_S:
            try:
                answer: str | AuthError = (await self.db(auth.authenticate, self.store, header, needed)).id
            except AuthError as exc:
                answer = exc
            if cached:
                if len(self._token_cache) >= 1024:
                    self._token_cache.clear()
                self._token_cache[key] = (time.monotonic(), answer)
            hit = (0.0, answer)
        if isinstance(hit[1], AuthError):
            raise AuthError(str(hit[1]), hit[1].status)  # a new one each time: a raised error keeps its traceback
        return hit[1]


# -- HTTP -------------------------------------------------------------------------------------


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


def _error(status: int, message: str, field: str | None = None, request_id: str | None = None) -> Response:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    headers = {"x-request-id": request_id} if request_id else None
    return _json(body, status, headers)


async def _read_json(request: Request, limit: int) -> Any:
    content_type = request.headers.get("content-type")
    if content_type and content_type.split(";")[0].strip().lower() not in (JSON, "application/*+json", "text/json"):
        raise HTTPError(415, f"content type {content_type!r} is not supported; send application/json", "content-type")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise HTTPError(413, f"the body is {int(length)} bytes; the limit is {limit} (serve.max_body_mb)", "body")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, f"the body is over the limit of {limit} bytes (serve.max_body_mb)", "body")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        raise HTTPError(400, "the body is empty; send a JSON object", "body")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HTTPError(400, f"the body is not valid JSON: {exc}", "body") from None


def _version_param(request: Request) -> int | None:
    """The path's version number: ASCII digits only (``str.isdigit`` also takes ``²`` and ``١``)."""
    raw = request.path_params.get("version")
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9 and int(raw) >= 1):
        raise HTTPError(404, f"version {raw[:20]!r} is not a model version number", "model_version")
    return int(raw)


def _served_part(table: RoutingTable, failed: dict[int, str]) -> RoutingTable | None:
    """``table`` without the versions in ``failed`` (weights renormalised); ``None`` when no variant is left to answer."""
    try:
        return RoutingTable.build(table.model, [v for v in table.variants if v.version not in failed],
                                  [v for v in table.shadows if v.version not in failed], revision=table.revision,
                                  updated_at=table.updated_at, updated_by=table.updated_by, reason=table.reason)
    except ConfigError:
        return None


def create_app(project: Project, *, clock: Clock = SYSTEM) -> Starlette:
    """The gateway's ASGI app for ``project`` (``rung serve`` runs it under uvicorn)."""
    gateway = Gateway(project, clock=clock)
    settings = gateway.settings

    async def predict(request: Request, protocol: str) -> Response:
        started = time.perf_counter()
        request_id = _request_id(request.headers.get("x-request-id"))
        model_name = request.path_params.get("name") or project.settings.model_name
        try:
            if settings.protect_predict:
                await gateway.authorise(request, "viewer")
            version = _version_param(request)
            body = await _read_json(request, gateway.max_body)
            key = request.headers.get("x-rung-key")
            if protocol == "oip" and isinstance(body, dict) and "x-request-id" not in request.headers:
                request_id = _request_id(body.get("id"))
            parse = parse_oip if protocol == "oip" else parse_mlflow
            raw, rows = parse(body, gateway.columns(model_name, version))
            if key is None and settings.key_field and raw.get(settings.key_field):
                key = str(raw[settings.key_field][0])
            runtime, variant, table = gateway.pick(model_name, version, key)
            columns = check_columns(_without_key(raw, runtime, settings.key_field), runtime.model.columns)
            try:
                outputs = await runtime.predict(columns, rows)
            except Exception:
                gateway.log(request_id, runtime.model, variant, 500, time.perf_counter() - started, None, columns, rows)
                raise
            if table.shadows:
                gateway.shadow(table, raw, rows, outputs, request_id)
        except HTTPError as exc:
            gateway.metrics.errors.labels(str(exc.status)).inc()
            return _error(exc.status, exc.message, exc.field, request_id)
        except InputError as exc:
            gateway.metrics.errors.labels("422").inc()
            return _error(422, str(exc), exc.field, request_id)
        except AuthError as exc:
            gateway.metrics.errors.labels(str(exc.status)).inc()
            return _error(exc.status, str(exc), "authorization", request_id)
        except WorkerDied as exc:  # not the input's fault: the worker is being restarted, try again
            gateway.metrics.errors.labels("503").inc()
            return _error(503, f"{exc}; a new one is starting, retry the request", None, request_id)
        except Exception as exc:  # the model raised: this request fails, the gateway lives on
            log.exception("prediction failed for %s", model_name)
            gateway.metrics.errors.labels("500").inc()
            return _error(500, f"the model failed on this input: {type(exc).__name__}: {exc}", None, request_id)
        model = runtime.model
        headers = {"x-request-id": request_id, "x-rung-model-version": str(model.version), "x-rung-variant": variant,
                   "x-rung-routing-revision": str(table.revision)}
        if protocol == "oip":
            body_out: dict[str, Any] = {
                "model_name": model.name,
                "model_version": str(model.version),
                "id": request_id,
                "parameters": {"variant": variant, "routing_revision": table.revision},
                "outputs": oip_outputs(outputs),
            }
        else:
            body_out = {
                "predictions": to_jsonable(outputs["predict"]),
                "rung": {"model": model.name, "version": model.version, "variant": variant, "request_id": request_id},
            }
            if "proba" in outputs:
                body_out["probabilities"] = to_jsonable(outputs["proba"])
        elapsed = time.perf_counter() - started
        gateway.metrics.observe(model.name, model.version, variant, protocol, 200, elapsed)
        gateway.log(request_id, model, variant, 200, elapsed, outputs, columns, rows)
        return _json(body_out, headers=headers)

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
        return _json({"live": True})

    async def ready(request: Request) -> Response:
        ok = gateway.ready and not gateway.draining
        return _json({"ready": ok, "not_served": gateway.not_served()}, 200 if ok else 503)

    async def server_metadata(request: Request) -> Response:
        return _json({"name": "rung", "version": __version__, "extensions": ["rung-routing"]})

    async def model_metadata(request: Request) -> Response:
        try:
            name = request.path_params["name"]
            version = _version_param(request)
            runtime, _, table = gateway.pick(name, version, None) if version else gateway.primary(name)
        except HTTPError as exc:
            return _error(exc.status, exc.message, exc.field)
        model = runtime.model
        return _json({
            "name": name,
            "versions": [str(v) for v in sorted(table.versions)],
            "platform": f"rung-{model.flavor}",
            "inputs": [{"name": c.name, "datatype": _oip_type(c.type), "shape": [-1]} for c in model.columns],
            "outputs": [{"name": "predict", "datatype": oip_datatype(model.classes) if model.classes else "FP64", "shape": [-1]}]
            + ([{"name": "proba", "datatype": "FP64", "shape": [-1]}] if model.task == "classification" else []),
            "parameters": {"routing": table.to_dict(), "compiled": model.compiled is not None,
                           "not_served": [{"version": g["version"], "reason": g["reason"]} for g in gateway.not_served(name)]},
        })

    async def model_ready(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            version = _version_param(request)
            if version:
                gateway.pinned(name, version)
            else:
                gateway.table(name)
        except HTTPError as exc:
            return _error(exc.status, exc.message, exc.field)
        return _json({"name": name, "ready": gateway.ready and not gateway.draining})

    async def metrics(request: Request) -> Response:
        return Response(gateway.metrics.render(), media_type="text/plain; version=0.0.4")

    async def openapi(request: Request) -> Response:
        from rung.serving.openapi import document

        return _json(document())

    async def api(request: Request, needed: str, handler: Any) -> Response:
        try:
            actor = await gateway.authorise(request, needed, cached=False)
            return await handler(request, actor)
        except AuthError as exc:
            return _error(exc.status, str(exc), "authorization")
        except HTTPError as exc:
            return _error(exc.status, exc.message, exc.field)
        except StaleRoute as exc:
            return _error(409, str(exc), "expected_revision")
        except (DeployRefused, StaleDeployment) as exc:
            return _error(409, str(exc), "version")
        except ConfigError as exc:
            message = str(exc)
            return _error(422, message, message.split(":")[0])
        except NotFound as exc:
            return _error(404, str(exc))
        except RungError as exc:
            return _error(400, str(exc))

    async def list_routes(request: Request, actor: str) -> Response:
        return _json([t.to_dict() for t in (RoutingTable.from_record(r) for r in await gateway.db(gateway.store.routes))])

    async def get_route(request: Request, actor: str) -> Response:
        record = await gateway.db(gateway.store.route, request.path_params["name"])
        if record is None:
            raise HTTPError(404, f"no routing table for {request.path_params['name']!r}", "name")
        return _json(RoutingTable.from_record(record).to_dict())

    async def put_route(request: Request, actor: str) -> Response:
        name = request.path_params["name"]
        body = await _read_json(request, 1024 * 1024)
        if not isinstance(body, dict):
            raise HTTPError(422, "expected an object with variants (and optional shadows, reason, expected_revision)", "body")
        unknown = set(body) - {"variants", "shadows", "reason", "expected_revision"}
        if unknown:
            raise HTTPError(422, f"unknown field {sorted(unknown)[0]!r}", sorted(unknown)[0])
        variants, shadows = body.get("variants"), body.get("shadows", [])
        if not isinstance(variants, list) or not isinstance(shadows, list):
            raise HTTPError(422, "variants and shadows must be lists", "variants" if not isinstance(variants, list) else "shadows")
        expected = body.get("expected_revision")
        if expected is not None and (isinstance(expected, bool) or not isinstance(expected, int)):
            raise HTTPError(422, "expected_revision must be an integer", "expected_revision")
        reason = body.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise HTTPError(422, "reason must be a string", "reason")
        table = RoutingTable.build(name, variants, shadows)
        # Every gateway will have to load these versions: refuse one that is unregistered or fails its sha256 now.
        places = {f"variants[{i}]": v.version for i, v in enumerate(table.variants)}
        places |= {f"shadows[{i}]": v.version for i, v in enumerate(table.shadows)}
        for version in sorted(table.versions):
            try:
                await asyncio.to_thread(gateway.verify, name, version)
            except (ConfigError, IntegrityError) as exc:
                where = next(place for place, v in places.items() if v == version)
                raise HTTPError(422, f"{where}.version: {exc}", f"{where}.version") from None
        stored = await gateway.db(
            lambda: set_routing(gateway.store, table, actor=f"token:{actor}", reason=reason, expected_revision=expected)
        )
        return _json(stored.to_dict())

    def guarded(needed: str, handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            return await api(request, needed, handler)

        return endpoint

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
        Route("/api/routes", guarded("viewer", list_routes), methods=["GET"]),
        Route("/api/routes/{name}", guarded("viewer", get_route), methods=["GET"]),
        Route("/api/routes/{name}", guarded("deployer", put_route), methods=["PUT"]),
        *control_routes(gateway, guarded),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: _not_found, 405: _not_allowed, 500: _server_error})
    app.state.gateway = gateway
    return app


REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=@-]{1,128}$")


def _request_id(given: Any) -> str:
    """The caller's request id when it is safe to echo in a header; otherwise a fresh one."""
    if isinstance(given, str) and REQUEST_ID.match(given):
        return given
    return os.urandom(8).hex()


def _without_key(raw: dict[str, list[Any]], runtime: Runtime, key_field: str | None) -> dict[str, list[Any]]:
    """The request's columns minus the routing key field, unless the model takes it as an input."""
    if key_field and key_field in raw and all(c.name != key_field for c in runtime.model.columns):
        return {k: v for k, v in raw.items() if k != key_field}
    return raw


def _oip_type(signature_type: str) -> str:
    return {"double": "FP64", "float": "FP32", "long": "INT64", "integer": "INT32", "boolean": "BOOL"}.get(signature_type, "BYTES")


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error(404, f"no route {request.url.path}; see /openapi.json", "path")


async def _not_allowed(request: Request, exc: Exception) -> Response:
    """405 with ``Allow``: the methods of every route on this path (a path can have one route per method)."""
    allowed = sorted({m for route in request.app.routes if isinstance(route, Route) and route.methods
                      and route.matches(request.scope)[0] is not Match.NONE for m in route.methods})
    response = _error(405, f"{request.method} is not allowed on {request.url.path}; use {', '.join(allowed)}", "method")
    response.headers["allow"] = ", ".join(allowed)
    return response


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s", request.url.path, exc_info=exc)
    return _error(500, "internal error; the gateway log has the details")
