"""The versions a gateway has loaded, and the routing tables that send requests to them.

Each model has a routing table in the metadata store. :meth:`VersionPool.refresh`
reads the tables' revisions when the store announces a change (PostgreSQL's
NOTIFY, heard by :class:`~rung.serving.replica.RouteWatcher`) or every
``serve.refresh_s`` otherwise, and brings each changed table in:

* a table whose versions are all loaded (a change of weights, a rollback
  to a version still loaded) is swapped in at once, in one assignment;
* a table that names a version not loaded yet has it loaded and warmed up
  off the event loop, in a task of its own, and is swapped in only then. A
  load holds up nothing else: other models' tables, and a newer table of
  the same model whose versions are loaded, are swapped meanwhile (the
  older table, once loaded, is dropped instead of swapped). Two tables that
  need the same version share one load; versions load one at a time.

Requests in flight finish on the table they started with; a version no
table names any more is unloaded after a grace period. What this replica
serves (:attr:`VersionPool.applied`) changes only at a swap, so it never
reports a revision whose versions are not loaded and warm.

How one version becomes a warm :class:`~rung.serving.batching.Runtime` is
:class:`~rung.serving.loading.VersionLoader`'s.

A version that cannot be loaded (files that fail their sha256, a version
not registered) is not served, and :meth:`VersionPool.not_served` says
which and why. A running gateway keeps the table it had; one that starts
serves every other model and version. A table refused for a failure that
may pass (the registry or the database out of reach) is tried again after
``RETRY_FIRST_S``, then twice as long each time up to ``RETRY_MAX_S``; one
refused for good reasons (sha256, not registered) waits for the next change.

The repository API (:mod:`rung.serving.repository`) changes what is
loaded, never what is routed: :meth:`VersionPool.unload_model` drops a
model's versions and marks it so that refreshes leave it unloaded, and
:meth:`VersionPool.load_model` loads what its routing table names now. The
table itself is the controller's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any

from rung.delivery.routing import RoutingTable, set_routing, single_version
from rung.errors import ConfigError, IntegrityError, ModelVersionNotFound, NotFound, NotServed, RungError, StaleRoute
from rung.serving.batching import Runtime
from rung.serving.loading import VersionLoader
from rung.serving.metrics import GatewayMetrics
from rung.serving.stats import Stats
from rung.serving.worker import ModelWorker

if TYPE_CHECKING:
    from rung.project import Project

__all__ = ["VersionPool"]

log = logging.getLogger("rung.gateway")

RETIRE_AFTER_S = 30.0  # how long an unrouted version stays loaded for requests already routed to it
WATCH_S = 0.5  # how often model workers are checked for a process that died while idle
LISTENING_POLL_S = 2.0  # the poll while the store announces changes: a safety net for a writer that does not
RETRY_FIRST_S, RETRY_MAX_S = 5.0, 60.0  # a table refused for a failure that may pass is tried again after these
FOR_GOOD = (IntegrityError, ModelVersionNotFound, ConfigError)  # load failures that trying again does not mend

Db = Callable[..., Awaitable[Any]]


class VersionPool:
    """Loaded versions (:class:`~rung.serving.batching.Runtime` by model and version) and the tables in effect.

    ``db`` runs a blocking store call in the gateway's database threads, so
    a slow database delays the routing poll, never the event loop. ``stats``
    are the gateway's statistics: each version loaded counts into its own.
    ``on_applied`` is called (on the event loop) after each swap: the
    gateway's heartbeat then tells the store at once.
    """

    def __init__(self, project: Project, metrics: GatewayMetrics, db: Db, stats: Stats) -> None:
        self.project = project
        self.settings = project.settings.serve
        self.store = project.store
        self.metrics = metrics
        self.db = db
        self.stats = stats
        self.loader = VersionLoader(project, metrics, stats)
        self.tables: dict[str, RoutingTable] = {}
        self.applied: dict[str, int] = {}  # model -> revision served; replaced whole at each swap (read by other threads)
        self.runtimes: dict[tuple[str, int], Runtime] = {}
        self.rejected: dict[str, int] = {}  # model -> routing revision that could not be loaded
        self.unserved: dict[str, dict[int, str]] = {}  # model -> {version named by its table: why it is not served}
        self.unloaded: dict[str, RoutingTable] = {}  # model unloaded by the repository API -> its table as last read
        self.listening = False  # the store announces changes (the poll slows down to LISTENING_POLL_S)
        self.on_applied: Callable[[], None] = lambda: None
        self._retiring: dict[tuple[str, int], asyncio.TimerHandle] = {}
        self._wanted: dict[str, RoutingTable] = {}  # model -> the newest table read, waiting for its versions to load
        self._loads: dict[tuple[str, int], asyncio.Task[Runtime]] = {}  # versions loading, shared by the tables needing them
        self._tasks: set[asyncio.Task[Any]] = set()  # tables being brought in (kept referenced until done)
        self._retry: dict[str, tuple[int, float, float]] = {}  # model -> (refused revision, when to try again, delay)
        self._refreshing = asyncio.Lock()  # one refresh pass at a time
        # One version loads at a time: the flavours' libraries are not safe to import from two threads at
        # once (skops.io half-initialised), and two loads would share the cores anyway.
        self._loading = asyncio.Lock()
        self._wake = asyncio.Event()
        self._closed = False

    def ensure_default_route(self) -> None:
        """A project model without a routing table is served by its ``champion`` (blocking)."""
        name = self.project.settings.model_name
        if self.store.route(name) is not None:
            return
        champion = self.project.tracking.aliases().get(name, {}).get("champion")
        if champion is not None:
            with contextlib.suppress(StaleRoute):
                set_routing(self.store, single_version(name, champion), actor="gateway", reason="champion at start",
                            expected_revision=0)

    def wake(self) -> None:
        """Refresh now (the store announced a change); on the event loop (``loop.call_soon_threadsafe`` from a thread)."""
        self._wake.set()

    @property
    def poll_s(self) -> float:
        """How long :meth:`refresh_forever` waits for an announcement before it polls anyway."""
        return max(self.settings.refresh_s, LISTENING_POLL_S) if self.listening else self.settings.refresh_s

    async def refresh_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            self._wake.clear()
            try:
                await self.refresh()
            except Exception:  # a bad table or a store hiccup must not stop serving the current one
                log.exception("routing refresh failed; serving the previous tables")

    async def refresh(self, *, wait: bool = False) -> None:
        """Read the changed tables and bring each in: swapped at once if loaded, else once its versions are.

        With ``wait`` (the gateway's start), return only once every table
        that had versions to load is in (or refused). A table naming a
        version that cannot be loaded is refused while a previous one
        serves; without one (at start, or a model new to this gateway) the
        versions that did load serve, and the rest are listed in
        :attr:`unserved`. A model unloaded by the repository API has its
        table read (for the index) but nothing loaded.
        """
        started: list[asyncio.Task[Any]] = []
        async with self._refreshing:
            revisions = await self.db(self.store.route_revisions)
            for model, revision in revisions.items():
                if self._settled(model, revision):
                    continue
                record = await self.db(self.store.route, model)
                if record is None or self._settled(model, record.revision):
                    continue
                try:
                    table = RoutingTable.from_record(record)
                except ConfigError as exc:  # written around set_routing: nothing to load, keep what serves
                    self.rejected[model] = record.revision
                    log.error("routing table %s revision %s is malformed, not used: %s", model, record.revision, exc)
                    continue
                task = self._take(table)
                if task is not None:
                    started.append(task)
            self._unload_unused()
        if wait and started:
            await asyncio.gather(*started, return_exceptions=True)

    def _settled(self, model: str, revision: int) -> bool:
        """Whether ``model``'s table at ``revision`` needs nothing: served, on its way in, or refused (and not due again)."""
        current = self.tables.get(model) or self.unloaded.get(model)
        wanted = self._wanted.get(model)
        if (current is not None and current.revision == revision) or (wanted is not None and wanted.revision == revision):
            return True
        if self.rejected.get(model) != revision:
            return False
        retry = self._retry.get(model)
        return retry is None or retry[0] != revision or time.monotonic() < retry[1]

    def _take(self, table: RoutingTable) -> asyncio.Task[dict[int, BaseException]] | None:
        """Serve ``table`` now if its versions are loaded; else start loading them (the task that swaps it in after)."""
        model = table.model
        if model in self.unloaded:
            self.unloaded[model] = table
            return None
        if all((model, v) in self.runtimes for v in table.versions):
            self._wanted.pop(model, None)  # an older table still loading is not swapped in over this one
            self._swap(table, {})
            return None
        return self._bring_in(table)

    def _bring_in(self, table: RoutingTable) -> asyncio.Task[dict[int, BaseException]]:
        """Load ``table``'s versions in a task of its own, then swap it in unless a newer table came meanwhile."""
        self._wanted[table.model] = table

        async def bring_in() -> dict[int, BaseException]:
            failed = await self._load_versions(table)
            if self._closed:
                return failed
            if self._wanted.get(table.model) is table:
                del self._wanted[table.model]
                self._swap(table, failed)
            self._unload_unused()  # superseded: what it loaded retires unless the newer table names it
            return failed

        task = asyncio.get_running_loop().create_task(bring_in(), name=f"rung-load-{table.model}-{table.revision}")
        self._tasks.add(task)
        task.add_done_callback(self._brought_in)
        return task

    def _brought_in(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("bringing in %s failed", task.get_name(), exc_info=task.exception())

    def _swap(self, table: RoutingTable, failed: dict[int, BaseException]) -> None:
        """Serve ``table``, its versions loaded but those in ``failed``: all of it, its part that loaded, or the previous table."""
        model, revision = table.model, table.revision
        current = self.tables.get(model)
        if failed:
            reasons = {v: _why(model, v, exc) for v, exc in failed.items()}
            self.rejected[model] = revision
            self.unserved[model] = reasons
            self._schedule_retry(model, revision, failed)
            if current is not None:
                log.error("routing table %s revision %s refused, still serving revision %s: %s", model, revision,
                          current.revision, "; ".join(reasons.values()))
                return
            served = _served_part(table, failed)
            log.error("routing table %s revision %s: %s; %s", model, revision, "; ".join(reasons.values()),
                      f"serving version(s) {', '.join(map(str, sorted(served.versions)))}" if served else "not serving it")
            if served is None:
                return
            table = served
        else:
            self.unserved.pop(model, None)
            self._retry.pop(model, None)
        self.tables[model] = table  # the swap: one assignment
        self.applied = {m: t.revision for m, t in self.tables.items()}
        self.metrics.routing_revision.labels(model).set(table.revision)
        if current is not None and current.revision != table.revision and table.updated_at is not None:
            lag = max(0.0, time.time() - table.updated_at.timestamp())
            self.metrics.routing_lag.labels(model).observe(lag)
        self.on_applied()

    def _schedule_retry(self, model: str, revision: int, failed: dict[int, BaseException]) -> None:
        """Try ``revision`` again later unless every failure is one for good (sha256, not registered)."""
        if all(isinstance(exc, FOR_GOOD) for exc in failed.values()):
            self._retry.pop(model, None)
            return
        previous = self._retry.get(model)
        delay = min(previous[2] * 2, RETRY_MAX_S) if previous is not None and previous[0] == revision else RETRY_FIRST_S
        self._retry[model] = (revision, time.monotonic() + delay, delay)

    async def _load_versions(self, table: RoutingTable) -> dict[int, BaseException]:
        """Load the table's versions not loaded yet (in a thread, one after the other); what failed, by version."""
        missing = sorted(v for v in table.versions if (table.model, v) not in self.runtimes)
        outcomes = await asyncio.gather(*(self._runtime(table.model, v) for v in missing), return_exceptions=True)
        failed: dict[int, BaseException] = {}
        for version, outcome in zip(missing, outcomes, strict=True):
            if isinstance(outcome, asyncio.CancelledError):
                raise outcome
            if isinstance(outcome, BaseException):  # one version that cannot load must not stop the others
                failed[version] = outcome
        return failed

    async def _runtime(self, model: str, version: int) -> Runtime:
        """``model:version`` loaded: at once if it is, else by the load in flight for it or a new one."""
        key = (model, version)
        runtime = self.runtimes.get(key)
        if runtime is not None:
            return runtime
        load = self._loads.get(key)
        if load is None:
            load = asyncio.get_running_loop().create_task(self._load_off_loop(model, version), name=f"rung-load-{model}:{version}")
            load.add_done_callback(_seen)  # its failure is the tables' to report; none may be left waiting for it
            self._loads[key] = load
        return await asyncio.shield(load)  # one table giving up (superseded, the gateway stopping) leaves it to the others

    async def _load_off_loop(self, model: str, version: int) -> Runtime:
        key = (model, version)
        try:
            async with self._loading:
                runtime = await asyncio.to_thread(self.loader.load, model, version)
        finally:
            self._loads.pop(key, None)
        if self._closed or model in self.unloaded:  # the gateway stopped, or the model was unloaded, meanwhile
            runtime.close()
            raise NotServed(_unloaded(model) if model in self.unloaded else "the gateway is stopping", field="model_name")
        self.runtimes[key] = runtime
        return runtime

    def verify(self, model: str, version: int) -> None:
        """Raise unless ``model:version`` is registered and its files match their sha256 (blocking)."""
        self.loader.verify(model, version)

    def _unload_unused(self) -> None:
        """Unload versions no table needs after a grace period.

        Requests routed just before a swap still finish on them, and a table
        that wants one back within the grace period gets it without a reload.
        """
        needed = {(m, v) for m, t in [*self.tables.items(), *self._wanted.items()] for v in t.versions}
        loop = asyncio.get_running_loop()
        for key in list(self._retiring):
            if key in needed:
                self._retiring.pop(key).cancel()
        for key in self.runtimes:
            if key not in needed and key not in self._retiring:
                self._retiring[key] = loop.call_later(RETIRE_AFTER_S, self._retire, key)

    def _retire(self, key: tuple[str, int]) -> None:
        runtime = self._drop(key)
        if runtime is not None:
            runtime.close()

    def _drop(self, key: tuple[str, int]) -> Runtime | None:
        """Take ``key``'s runtime out of the pool (requests already routed to it keep it); the caller closes it."""
        timer = self._retiring.pop(key, None)
        if timer is not None:
            timer.cancel()
        runtime = self.runtimes.pop(key, None)
        if runtime is not None:
            with contextlib.suppress(KeyError):
                self.metrics.loaded.remove(runtime.model.name, str(runtime.model.version), runtime.model.flavor, runtime.model.device)
        return runtime

    async def watch_workers(self) -> None:
        """Start again, between requests, the model workers that died while idle (counted in the metrics)."""
        while True:
            await asyncio.sleep(WATCH_S)
            workers = [w for r in self.runtimes.values() for w in r.workers if isinstance(w, ModelWorker)]
            for worker in workers:
                try:
                    await asyncio.to_thread(worker.revive)
                except Exception:  # it stays dead: the next request gets a 503 and tries again
                    log.exception("model worker of %s could not be started again", worker.model.ref)

    def close(self) -> None:
        """Stop bringing tables in and close every loaded version (a load still in a thread closes its own when it ends)."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for runtime in self.runtimes.values():
            runtime.close()

    def not_served(self, model: str | None = None) -> list[dict[str, Any]]:
        """What routing tables name but this gateway does not serve, and why (all models, or ``model``'s)."""
        gaps = [(m, v, why) for m, failed in self.unserved.items() for v, why in failed.items()]
        gaps += [(m, v, _unloaded(m)) for m, table in self.unloaded.items() for v in table.versions]
        return [{"model": m, "version": v, "reason": why} for m, v, why in sorted(gaps) if model in (None, m)]

    # -- the repository API ---------------------------------------------------------------------

    def repository_index(self, *, ready: bool = False) -> list[dict[str, str]]:
        """Triton's repository index: each version the routing tables name, its state and why (only READY ones with ``ready``).

        ``READY`` serves; ``UNAVAILABLE`` could not be loaded (the reason
        says why); ``UNLOADED`` was unloaded by the repository API.
        """
        states: dict[tuple[str, int], tuple[str, str]] = {}
        for model, table in self.tables.items():
            states |= {(model, v): ("READY", "") for v in table.versions if (model, v) in self.runtimes}
        for model, failed in self.unserved.items():
            states |= {(model, v): ("UNAVAILABLE", why) for v, why in failed.items()}
        for model, table in self.unloaded.items():
            states |= {(model, v): ("UNLOADED", _unloaded(model)) for v in table.versions}
        return [{"name": m, "version": str(v), "state": state, "reason": why}
                for (m, v), (state, why) in sorted(states.items()) if not ready or state == "READY"]

    async def unload_model(self, model: str) -> None:
        """Stop serving ``model`` here: its versions are unloaded, and refreshes leave it so until :meth:`load_model`.

        Its routing table in the store is not touched (it is the
        controller's); predictions for it are a 503 that says how to load it
        again. Returns once the requests already queued on its versions are
        answered. Unknown to the store: :class:`~rung.errors.NotFound`. A
        load of its versions still under way is dropped when it ends.
        """
        record = await self.db(self.store.route, model)
        if record is None:
            raise self._unknown(model)
        try:
            table = RoutingTable.from_record(record)
        except ConfigError:  # a malformed table serves nothing new: what this gateway last had is what it unloads
            table = self.tables.get(model) or self.unloaded.get(model) or _empty_table(model, record.revision)
        self.unloaded[model] = table
        self._wanted.pop(model, None)
        self._retry.pop(model, None)
        if self.tables.pop(model, None) is not None:
            self.applied = {m: t.revision for m, t in self.tables.items()}
            self.on_applied()
        self.unserved.pop(model, None)
        self.rejected.pop(model, None)
        dropped = [self._drop(key) for key in list(self.runtimes) if key[0] == model]
        for runtime in dropped:
            if runtime is not None:
                await runtime.finish()
        log.info("%s unloaded via the repository API (its routing table is unchanged)", model)

    async def load_model(self, model: str) -> None:
        """Serve ``model`` again: load, off the event loop, what its routing table names now, then swap it in.

        Clears the mark :meth:`unload_model` left (also for a table that
        cannot be loaded: refreshes then try the next revision). Returns once
        it serves; a version that could not be loaded is
        :class:`~rung.errors.NotServed` saying why (the others serve).
        """
        record = await self.db(self.store.route, model)
        if record is None:
            raise self._unknown(model)
        try:
            table = RoutingTable.from_record(record)
        except ConfigError as exc:
            raise NotServed(f"the routing table of {model!r} (revision {record.revision}) cannot be used: {exc}; "
                            "route the model again", field="model_name") from exc
        self.unloaded.pop(model, None)
        self.rejected.pop(model, None)
        self._retry.pop(model, None)
        task = self._take(table)
        failed = await task if task is not None else {}
        if failed:
            serving = self.tables.get(model)
            now = f"serving version(s) {', '.join(map(str, sorted(serving.versions)))}" if serving else "not serving it"
            why = "; ".join(f"version {v}: {_why(model, v, exc)}" for v, exc in sorted(failed.items()))
            raise NotServed(f"model {model!r} could not be loaded in full ({now}): {why}", field="model_name")
        log.info("%s loaded via the repository API: version(s) %s", model, ", ".join(map(str, sorted(table.versions))))

    def _unknown(self, model: str) -> NotFound:
        models = ", ".join(sorted(set(self.tables) | set(self.unserved) | set(self.unloaded))) or "none"
        return NotFound(f"model {model!r} has no routing table; models: {models}", field="model_name")

    # -- who answers --------------------------------------------------------------------------

    def table(self, model: str) -> RoutingTable:
        table = self.tables.get(model)
        if table is None and model in self.unloaded:
            raise NotServed(_unloaded(model), field="model_name")
        if table is None and model in self.unserved:
            why = "; ".join(self.unserved[model].values())
            raise NotServed(f"model {model!r} is not served: {why}; route it to a version that loads", field="model_name")
        if table is None:
            served = ", ".join(sorted(self.tables)) or "none"
            raise NotFound(f"model {model!r} is not served here; served: {served}", field="model_name")
        return table

    def pinned(self, model: str, version: int) -> Runtime:
        table = self.table(model)
        runtime = self.runtimes.get((model, version))
        why = self.unserved.get(model, {}).get(version)
        if runtime is None and why is not None:
            raise NotServed(f"version {version} of {model!r} is not served: {why}", field="model_version")
        if runtime is None:
            served = ", ".join(str(v) for v in sorted(table.versions))
            raise NotFound(f"version {version} of {model!r} is not served (served: {served}); deploy it first",
                           field="model_version")
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


def _seen(task: asyncio.Task[Any]) -> None:
    """Mark a load's failure as retrieved: every table that needed it got it already, or gave up waiting."""
    if not task.cancelled():
        task.exception()


def _why(model: str, version: int, exc: BaseException) -> str:
    """Why ``model:version`` could not be loaded, in words: rung's own message, or the exception named."""
    return str(exc) if isinstance(exc, RungError) else f"{model}:{version}: {type(exc).__name__}: {exc}"


def _unloaded(model: str) -> str:
    return (f"model {model!r} was unloaded via the repository API; load it again with "
            f"POST /v2/repository/models/{model}/load (a deployer token)")


def _empty_table(model: str, revision: int) -> RoutingTable:
    return RoutingTable(model, (), (), revision=revision)


def _served_part(table: RoutingTable, failed: Collection[int]) -> RoutingTable | None:
    """``table`` without the versions in ``failed`` (weights renormalised); ``None`` when no variant is left to answer."""
    try:
        return RoutingTable.build(table.model, [v for v in table.variants if v.version not in failed],
                                  [v for v in table.shadows if v.version not in failed], revision=table.revision,
                                  updated_at=table.updated_at, updated_by=table.updated_by, reason=table.reason)
    except ConfigError:
        return None
