"""The serving state of one project: its loaded versions, and the glue of a request's path.

A :class:`Gateway` holds the :class:`~rung.serving.pool.VersionPool`, the
metrics, the request log and the token checks, and starts and stops them
with the app (:func:`rung.serving.app.create_app` serves it).

* :meth:`Gateway.infer` is the one request path every protocol takes (OIP v2
  over REST, JSON or binary, and over gRPC; KServe v1; MLflow scoring): a
  protocol decodes its body into columns, and routing, batching, shadows,
  the request log and the metrics are the same for all of them.
* Every response names the model version and variant that answered; every
  prediction is handed to the request log (references only, converted off
  the event loop) and shadows get a copy without being awaited.
* A request may carry columns the model does not take: the model gets its
  own columns only, and the request log keeps the others too (up to
  ``LOGGED_EXTRAS`` distinct names per model, so that clients sending ever
  new names cannot widen the log without bound).
* The event loop never waits for the database: routing polls, token
  lookups and control-API reads run in a few threads of their own
  (``DB_THREADS``), so a slow or locked database delays them, not the
  predictions of versions already loaded.
* Each gateway is one replica among those sharing the store
  (:attr:`Gateway.replica`, see :mod:`rung.serving.replica`): it heartbeats
  the revision it serves per model from a thread of its own, and on
  PostgreSQL hears routing changes as they commit instead of polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from rung.clock import SYSTEM, Clock
from rung.delivery.routing import RoutingTable
from rung.errors import AuthError, InputError, PredictionFailed, RungError
from rung.models.loaded import LoadedModel
from rung.models.signature import Columns
from rung.monitor.requestlog import open_request_log
from rung.serving import auth
from rung.serving.batching import Runtime
from rung.serving.metrics import GatewayMetrics
from rung.serving.pool import VersionPool
from rung.serving.protocols import check_columns, to_jsonable
from rung.serving.replica import Heartbeat, Replica, RouteWatcher, replica_id
from rung.serving.stats import Stats

if TYPE_CHECKING:
    from rung.project import Project

__all__ = ["Gateway", "Inference", "InferenceRequest"]

MAX_SHADOW_PENDING = 256
LOGGED_EXTRAS = 16  # distinct names of columns a model does not take that the request log keeps, per model
TOKEN_CACHE_S = 1.0  # how long prediction and feedback routes trust a token check, either way
DB_THREADS = 8  # the gateway's database calls at once (the PostgreSQL pool holds more)

T = TypeVar("T")


@dataclass
class InferenceRequest:
    """A prediction request, decoded from whichever protocol it came by.

    ``columns`` are the request's raw columns (``{name: values}``, lists or
    numpy arrays of ``rows`` values each), the model's and any others;
    ``protocol`` labels the metrics (``oip``, ``grpc``, ``kserve``, ``mlflow``).
    """

    model: str
    version: int | None
    columns: Columns
    rows: int
    request_id: str
    protocol: str
    key: str | None = None  # the routing key (X-Rung-Key); else ``serve.key_field``'s value, if the request has it
    started: float = field(default_factory=time.perf_counter)
    outputs: tuple[str, ...] = ()  # the outputs asked for (none: all), checked before the model is called


@dataclass
class Inference:
    """What answered a request and what it said: ``outputs`` maps output names (``predict``, ``proba``) to arrays."""

    model: LoadedModel
    variant: str
    table: RoutingTable
    outputs: dict[str, Any]
    request_id: str

    def headers(self) -> dict[str, str]:
        """The response headers (HTTP) or trailing metadata (gRPC) naming what answered."""
        return {"x-request-id": self.request_id, "x-rung-model-version": str(self.model.version),
                "x-rung-variant": self.variant, "x-rung-routing-revision": str(self.table.revision)}


class Gateway:
    """The serving state of one project: loaded versions and routing tables (:attr:`pool`), tokens, the request log.

    ``clock`` stamps the request log (and feedback): an in-process gateway
    under a manual clock logs simulated time, so the demo and tests judge
    rollouts over hours that take seconds. ``host`` and ``port`` are where
    it listens (default ``serve.host`` and ``serve.port``): they name the
    replica (``replica`` and ``serve.replica`` unset) and give its URL in
    the registry.
    """

    def __init__(self, project: Project, *, clock: Clock = SYSTEM, host: str | None = None, port: int | None = None,
                 replica: str | None = None) -> None:
        self.project = project
        self.clock = clock
        self.settings = project.settings.serve
        self.store = project.store
        self.host, self.port = host or self.settings.host, port or self.settings.port
        self.replica = replica or replica_id(self.settings.replica, self.port)  # this gateway's name among the replicas
        self.metrics = GatewayMetrics()
        self.ready = False
        self.draining = False
        self.shadow_pending = 0
        self.max_body = int(self.settings.max_body_mb * 1024 * 1024)
        self._tasks: list[asyncio.Task[None]] = []
        self._token_cache: dict[str, tuple[float, str | AuthError]] = {}
        self._db = ThreadPoolExecutor(DB_THREADS, thread_name_prefix="rung-db")
        self.stats = Stats()  # per version, Triton's statistics extension (rung.serving.stats)
        self.pool = VersionPool(project, self.metrics, self.db, self.stats)
        self.requests = open_request_log(project, clock=clock, on_drop=self.metrics.request_log_dropped,
                                         replica=self.replica)  # None: off
        self._extras: dict[str, set[str]] = {}  # model -> the names of columns it does not take that the log keeps
        self._heartbeat: Heartbeat | None = None
        self._watcher: RouteWatcher | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Load what the routing tables name, then serve: readiness, the refresh loop, the heartbeat.

        The change channel is heard from before the first refresh, so a
        change committed while the versions load is not missed.
        """
        loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.pool.ensure_default_route)
        self._watcher = RouteWatcher.create(self.store, lambda: _on_loop(loop, self.pool.wake),
                                            lambda up: _on_loop(loop, self._listening, up),
                                            name=f"rung-listen {self.replica}")
        if self._watcher is not None:
            self._watcher.start()
        try:
            await self.pool.refresh(wait=True)
        except BaseException:
            if self._watcher is not None:
                await asyncio.to_thread(self._watcher.stop)
            raise
        if self.requests is not None:
            self.requests.start()
        self._heartbeat = Heartbeat(self.store, Replica.here(self.replica, self.host, self.port), lambda: self.pool.applied)
        self.pool.on_applied = self._heartbeat.soon
        self._heartbeat.start()
        self.ready = True
        self._tasks = [asyncio.create_task(self.pool.refresh_forever()), asyncio.create_task(self.pool.watch_workers())]

    def _listening(self, up: bool) -> None:
        """The change channel came or went (on the event loop): the poll slows down, or speeds up at once."""
        self.pool.listening = up
        self.metrics.routing_listening.set(1 if up else 0)
        if not up:
            self.pool.wake()

    async def stop(self) -> None:
        self.ready = False
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for service in (self._watcher, self._heartbeat):  # the heartbeat's last word removes this replica's row
            if service is not None:
                await asyncio.to_thread(service.stop)
        self.pool.close()
        if self.requests is not None:
            await asyncio.to_thread(self.requests.stop)  # write what is queued
        self._db.shutdown(wait=False)

    async def db(self, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)`` in one of the gateway's database threads: the event loop goes on meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(self._db, partial(call, *args))

    # -- a request's path ---------------------------------------------------------------------

    async def infer(self, request: InferenceRequest) -> Inference:
        """Route, predict, shadow, log and count one request: the path every protocol shares.

        Raises rung's errors (bad input, a version not served, a worker that
        died); an exception from the model itself becomes
        :class:`~rung.errors.PredictionFailed` for this request only.
        """
        raw = request.columns
        key = request.key
        key_field = self.settings.key_field
        if key is None and key_field and key_field in raw and len(raw[key_field]):
            first = raw[key_field][0]
            key = None if first is None or first != first else str(first)  # NaN: a binary tensor's missing value
        runtime, variant, table = self.pool.pick(request.model, request.version, key)
        try:
            columns = self.inputs(raw, runtime)
            _check_outputs(request.outputs, runtime.model)
        except InputError:
            runtime.stats.failed(time.perf_counter() - request.started)
            raise
        logged = columns if len(raw) == len(columns) else self._with_extras(runtime.model.name, columns, raw)
        model = runtime.model
        try:
            outputs = await runtime.predict(columns, request.rows)
        except Exception as exc:
            runtime.stats.failed(time.perf_counter() - request.started)
            self.log(request.request_id, model, variant, 500, time.perf_counter() - request.started, None, logged, request.rows)
            if isinstance(exc, RungError):  # a worker that died (503, retry), input the model refused
                raise
            # the model raised: this request fails, the gateway lives on
            raise PredictionFailed(f"the model failed on this input: {type(exc).__name__}: {exc}") from exc
        if table.shadows:
            self.shadow(table, raw, request.rows, outputs, request.request_id)
        elapsed = time.perf_counter() - request.started
        runtime.stats.succeeded(elapsed)
        self.metrics.observe(model.name, model.version, variant, request.protocol, 200, elapsed)
        self.log(request.request_id, model, variant, 200, elapsed, outputs, logged, request.rows)
        return Inference(model, variant, table, outputs, request.request_id)

    def _with_extras(self, model_name: str, columns: Columns, raw: Columns) -> Columns:
        """What the request log keeps: the model's columns, then the request's others (bounded names per model)."""
        kept = self._extras.setdefault(model_name, set())
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

    def inputs(self, raw: Columns, runtime: Runtime) -> Columns:
        """The request's columns checked against ``runtime``'s signature, minus the routing key unless the model takes it."""
        key_field = self.settings.key_field
        if key_field and key_field in raw and all(c.name != key_field for c in runtime.model.columns):
            raw = {k: v for k, v in raw.items() if k != key_field}
        return check_columns(raw, runtime.model.columns)

    def shadow(self, table: RoutingTable, columns: Columns, rows: int, answer: dict[str, Any], request_id: str) -> None:
        """Send a copy to the table's shadows; never awaited by the request."""
        for target in table.shadows:
            runtime = self.pool.runtimes.get((table.model, target.version))
            if runtime is None:
                continue
            if self.shadow_pending >= MAX_SHADOW_PENDING:
                self.metrics.shadow.labels(table.model, str(target.version), "dropped").inc()
                continue
            self.shadow_pending += 1
            asyncio.get_running_loop().create_task(self._shadow_one(runtime, target.name, columns, rows, answer, request_id))

    async def _shadow_one(self, runtime: Runtime, variant: str, raw: Columns, rows: int, answer: dict[str, Any],
                          request_id: str) -> None:
        model = runtime.model
        started = time.perf_counter()
        outputs: dict[str, Any] | None = None
        columns = raw
        try:
            columns = self.inputs(raw, runtime)
            outputs = await runtime.predict(columns, rows)
            same = to_jsonable(outputs["predict"]) == to_jsonable(answer["predict"])
            outcome = "agree" if same else "disagree"
        except Exception:
            outcome = "error"
        finally:
            self.shadow_pending -= 1
        (runtime.stats.failed if outputs is None else runtime.stats.succeeded)(time.perf_counter() - started)
        self.metrics.shadow.labels(model.name, str(model.version), outcome).inc()
        self.log(request_id, model, variant, 500 if outputs is None else 200, time.perf_counter() - started, outputs,
                 columns, rows, shadow=True)

    def log(self, request_id: str, model: LoadedModel, variant: str, status: int, seconds: float,
            outputs: dict[str, Any] | None, columns: Columns, rows: int, *, shadow: bool = False) -> None:
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

    async def authorise(self, header: str | None, needed: str, *, cached: bool = True) -> str:
        """The id of the token in ``header`` (``Bearer ...``), if it grants ``needed``; else :class:`~rung.errors.AuthError`.

        With ``cached`` (prediction and feedback routes) the answer, yes or
        no, is kept for ``TOKEN_CACHE_S``: a wrong token costs the database
        one lookup a second however often it is sent, and a revoked token
        may still predict that long. The control API asks the store each
        time, so a revoked token loses it at once.
        """
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
            raise type(hit[1])(str(hit[1]))  # a new one each time: a raised error keeps its traceback
        return hit[1]


def _on_loop(loop: asyncio.AbstractEventLoop, call: Callable[..., None], *args: Any) -> None:
    """``call(*args)`` on ``loop`` from another thread; nothing once the loop is closed (the gateway stopped)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(call, *args)


def _check_outputs(names: tuple[str, ...], model: LoadedModel) -> None:
    """Refuse an output the model does not give before it is called (``outputs[i].name``, listing what it gives)."""
    for i, name in enumerate(names):
        if name not in model.output_names:
            raise InputError(f"outputs[{i}].name: the model has no output {name!r}; it gives {', '.join(model.output_names)}",
                             field=f"outputs[{i}].name")
