"""Micro-batching: many concurrent requests to one version, one ``predict``.

Each loaded version has one prediction thread. Requests queue up while it
works; when it is free it may wait up to ``max_wait_ms`` for more, takes
everything queued (up to ``max_batch_size`` rows) and predicts once. A
tabular model pays a fixed cost per call (pandas, column transformers), so
one ``predict`` of 64 rows costs about as much as one of a single row. The
wait lets concurrent clients' requests meet; it pays only for a costly call,
so by default :meth:`Runtime.warm_up` measures a call and decides.
The event loop never blocks on a model: it parses, routes and answers while
the thread predicts, or (``serve.isolation: process``, the default) while the
thread waits on the version's worker process (:mod:`rung.serving.worker`).
Each batch's queue and compute times go to the version's
:class:`~rung.serving.stats.VersionStats` as it is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from itertools import chain
from typing import Any

import numpy as np

from rung.models.loaded import LoadedModel
from rung.models.signature import Columns, to_frame
from rung.serving.stats import VersionStats

__all__ = ["AUTO_WAIT_MS", "Runtime", "predict_columns", "wait_for"]

AUTO_WAIT_MS = 1.0
WARM_UP_CALLS = 10
WARM_UP_BUDGET_S = 0.25
RECHECK_CALLS = 256
FINISH_WITHIN_S = 30.0  # how long an unloaded version's queue may take to be answered before it closes anyway


def predict_columns(model: LoadedModel, columns: Columns) -> dict[str, Any]:
    """One ``predict`` over plain columns, off the event loop: the compiled route if the model has one."""
    if model.compiled is not None:
        return model.outputs(model.compiled, columns)
    return model.predict(to_frame(model.columns, columns))


@dataclass
class _Pending:
    columns: Columns
    rows: int
    future: asyncio.Future[dict[str, Any]]
    queued: int  # perf_counter_ns() when it joined the queue


@dataclass
class Runtime:
    """A loaded version with its queue, its prediction threads and their worker processes (if any).

    With several workers, batches run side by side: while one worker
    predicts, the next batch gathers and goes to the other.
    """

    model: LoadedModel
    workers: list[Callable[[Columns], dict[str, Any]]] = field(default_factory=list)
    max_batch_size: int = 64
    max_wait_ms: float | None = None  # None: warm_up decides from what one call costs
    batching: bool = True
    threads: int = 1
    on_batch: Callable[[LoadedModel, int], None] | None = None
    stats: VersionStats = field(default_factory=VersionStats)  # the gateway's, which outlive this runtime
    call_s: float | None = None  # the fastest call lately (warm_up, then every RECHECK_CALLS calls)
    note: str = ""  # shown by describe(), e.g. why the version is not compiled
    _queue: deque[_Pending] = field(default_factory=deque)
    _drains: int = 0
    _fastest: float = math.inf
    _calls: int = 0

    def __post_init__(self) -> None:
        self._auto_wait = self.max_wait_ms is None
        self._predictors = list(self.workers) or [partial(predict_columns, self.model)]
        self._free = list(self._predictors)
        # OpenMP/BLAS thread limits are per thread: set them in the prediction threads themselves.
        self._pool = ThreadPoolExecutor(len(self._predictors), thread_name_prefix="rung-predict",
                                        initializer=_limit_threads, initargs=(self.threads,))

    async def predict(self, columns: Columns, rows: int) -> dict[str, Any]:
        """The model's outputs for these rows (alone or within a batch)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._queue.append(_Pending(columns, rows, future, time.perf_counter_ns()))
        if self._drains < len(self._predictors):
            self._drains += 1
            loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                if self.max_wait_ms:
                    await self._gather()
                if not self._queue:
                    break
                started = time.perf_counter_ns()
                batch = self._take()
                merged = batch[0].columns if len(batch) == 1 else _merge([p.columns for p in batch])
                rows = sum(p.rows for p in batch)
                merged_at = time.perf_counter_ns()
                predictor = self._free.pop()
                try:
                    outputs, infer_ns = await loop.run_in_executor(self._pool, _timed, predictor, merged)
                except BaseException as exc:  # a model error fails this batch's requests, not the gateway
                    for pending in batch:
                        if not pending.future.done():
                            pending.future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
                    if not isinstance(exc, Exception):
                        raise
                    continue
                finally:
                    self._free.append(predictor)
                if self._auto_wait:
                    self._observe(infer_ns / 1e9)
                if self.on_batch is not None:
                    self.on_batch(self.model, rows)
                cutting = time.perf_counter_ns()
                start = 0
                for pending in batch:
                    end = start + pending.rows
                    if not pending.future.done():
                        pending.future.set_result({k: v[start:end] for k, v in outputs.items()})
                    start = end
                self.stats.executed(len(batch), rows, len(batch) * started - sum(p.queued for p in batch),
                                    merged_at - started, infer_ns, time.perf_counter_ns() - cutting)
        finally:
            self._drains -= 1
            if self._drains == 0:
                for pending in self._queue:  # only left here if the loop itself is going away
                    if not pending.future.done():
                        pending.future.set_exception(RuntimeError("the gateway is shutting down"))
                self._queue.clear()

    async def _gather(self) -> None:
        """Wait up to ``max_wait_ms`` for concurrent requests to join the batch."""
        if len(self._queue) < self.max_batch_size:
            await asyncio.sleep((self.max_wait_ms or 0) / 1000)

    def warm_up(self) -> float | None:
        """A few calls on a made-up row (blocking); returns the fastest call's seconds, ``None`` if it could not run.

        The first real request then does not pay for lazy initialisation,
        and with ``max_wait_ms`` unset the cost decides whether waiting for
        company pays (:func:`wait_for`).
        """
        if self.model.columns:
            row = {c.name: [0.0 if c.numeric else ""] for c in self.model.columns}
            spent, first = 0.0, math.inf
            for predictor in self._predictors[1:]:  # every worker pays its own lazy initialisation here, not on a request
                with contextlib.suppress(Exception):
                    predictor(row)
            for call in range(WARM_UP_CALLS):  # a slow model (no use batching-wise) stops after the first calls
                try:
                    seconds = _timed(self._predictors[0], row)[1] / 1e9
                except Exception:
                    break
                if call == 0:  # lazy initialisation (about 10 calls' worth, more on a busy host) is no call's cost
                    first = seconds
                    continue
                self._fastest, spent = min(self._fastest, seconds), spent + seconds
                if spent > WARM_UP_BUDGET_S:
                    break
            if self._fastest == math.inf:  # the first call is all there is
                self._fastest = first
        fastest = self._fastest if self._fastest < math.inf else None
        self._fastest = math.inf
        self.call_s = fastest
        if self._auto_wait:
            self.max_wait_ms = wait_for(fastest)
        return fastest

    def _observe(self, seconds: float) -> None:
        """Decide again every ``RECHECK_CALLS`` calls, from the fastest of them.

        The fastest call is what the model costs when nothing else competes
        for the cores; a warm-up measured while another version loaded
        beside it is corrected here.
        """
        self._fastest = min(self._fastest, seconds)
        self._calls += 1
        if self._calls >= RECHECK_CALLS:
            self.call_s, self.max_wait_ms = self._fastest, wait_for(self._fastest)
            self._fastest, self._calls = math.inf, 0

    def describe(self) -> str:
        """One line for the operator: how this version predicts and what a call costs."""
        route = "compiled pipeline" if self.model.compiled is not None else f"{self.model.flavor} estimator"
        if self.model.flavor in ("pytorch", "onnx"):
            route += f" on {self.model.device}"
        where = f"{len(self.workers)} worker process{'es' if len(self.workers) > 1 else ''}" if self.workers else "a thread"
        cost = f"{self.call_s * 1000:.2f} ms a call" if self.call_s is not None else "cost unmeasured"
        note = f" ({self.note})" if self.note else ""
        return f"{self.model.ref}: {route}{note} in {where}, {cost}, batches wait {self.max_wait_ms or 0:g} ms"

    def _take(self) -> list[_Pending]:
        if not self.batching:
            return [self._queue.popleft()]
        batch: list[_Pending] = []
        rows = 0
        while self._queue and (not batch or rows + self._queue[0].rows <= self.max_batch_size):
            pending = self._queue.popleft()
            batch.append(pending)
            rows += pending.rows
        return batch

    async def finish(self) -> None:
        """:meth:`close` once the requests already queued have their answers (up to ``FINISH_WITHIN_S``).

        For a version unloaded while requests wait on it: they are answered,
        and no new one can reach it any more.
        """
        deadline = time.monotonic() + FINISH_WITHIN_S
        while self._drains and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        self.close()

    def close(self) -> None:
        """Stop the prediction thread (and the worker) once they have finished what they were given."""
        for worker in self.workers:
            close = getattr(worker, "close", None)
            if close is not None:
                self._pool.submit(close)
        self._pool.shutdown(wait=False)


def wait_for(call_s: float | None) -> float:
    """Wait ``AUTO_WAIT_MS`` for company only when a call costs at least twice that (unknown: wait).

    A batch shares one call's fixed cost, so waiting pays for a costly
    call. A cheap one (a compiled pipeline: about 0.6 ms) is better sent at
    once, while the loop answers the batch before it. In
    ``bench/gateway.py`` at 8 connections: 4,300 req/s against 2,800 with
    the wait for a compiled pipeline; 1,650 against 1,400 without it for a
    model at 2-3 ms a call.
    """
    return 0.0 if call_s is not None and call_s * 1000 < 2 * AUTO_WAIT_MS else AUTO_WAIT_MS


def _timed(predictor: Callable[[Columns], dict[str, Any]], columns: Columns) -> tuple[dict[str, Any], int]:
    """``predictor``'s outputs and the nanoseconds it took, measured in the thread that ran it."""
    started = time.perf_counter_ns()
    outputs = predictor(columns)
    return outputs, time.perf_counter_ns() - started


def _limit_threads(threads: int) -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)


def _merge(parts: list[Columns]) -> Columns:
    """One batch's columns: numpy columns joined by numpy (one dtype kept), the others as one list."""
    merged: Columns = {}
    for name in parts[0]:
        pieces = [part[name] for part in parts]
        if all(isinstance(p, np.ndarray) for p in pieces):
            merged[name] = np.concatenate(pieces)
        else:
            merged[name] = list(chain.from_iterable(pieces))
    return merged

