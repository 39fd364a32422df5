"""Per-version inference statistics, in the shape of Triton's statistics extension (``GET /v2/models/stats``).

Each figure is measured where its time is spent:

* ``queue``: from a request's arrival in its version's queue
  (:class:`~rung.serving.batching.Runtime`) to the start of the batch it
  went in, the wait for company included;
* ``compute_input``: merging the batch's requests into one set of columns;
* ``compute_infer``: the model call, timed in the prediction thread (with a
  worker process, the round trip to it);
* ``compute_output``: cutting the batch's outputs back into each request's;
* ``success`` and ``fail``: a whole request, from its arrival to its
  answer (:meth:`~rung.serving.gateway.Gateway.infer`, shadow copies too).

As in Triton, every request in a batch is charged the whole batch's compute
times, so a request's queue and compute never exceed its ``success`` time;
``batch_stats`` counts model calls by their rows, ``inference_count`` counts
rows and ``execution_count`` model calls. Queue and compute are counted for
successful batches only.

Counting costs a few integer additions a request, all on the event loop (no
locks); the prediction thread's time comes back with its outputs. The
gateway keeps the statistics (``Gateway.stats``), not the loaded versions:
they outlive a version's unloading and go on counting when it loads again.
"""

from __future__ import annotations

import time
from typing import Any

from rung.errors import NotFound

__all__ = ["MAX_BATCH_SIZES", "Stats", "VersionStats"]

MAX_BATCH_SIZES = 1024  # distinct batch sizes listed per version; calls of further sizes count in the totals only


class VersionStats:
    """The counters of one model version; plain integers, added to on the event loop."""

    __slots__ = ("batches", "computed", "execution_count", "fail_count", "fail_ns", "infer_ns", "inference_count",
                 "input_ns", "last_inference", "output_ns", "queue_ns", "success_count", "success_ns")

    def __init__(self) -> None:
        self.last_inference = 0  # ms since the epoch
        self.inference_count = 0  # rows predicted
        self.execution_count = 0  # model calls
        self.success_count = self.success_ns = 0
        self.fail_count = self.fail_ns = 0
        self.computed = 0  # requests in successful batches: the count of queue and of each compute phase
        self.queue_ns = self.input_ns = self.infer_ns = self.output_ns = 0
        self.batches: dict[int, list[int]] = {}  # rows -> [calls, input ns, infer ns, output ns]

    def executed(self, requests: int, rows: int, queue_ns: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """One successful model call of ``rows`` rows for ``requests`` requests, which waited ``queue_ns`` in all."""
        self.execution_count += 1
        self.inference_count += rows
        self.computed += requests
        self.queue_ns += queue_ns
        self.input_ns += requests * input_ns
        self.infer_ns += requests * infer_ns
        self.output_ns += requests * output_ns
        batch = self.batches.get(rows)
        if batch is None:
            if len(self.batches) >= MAX_BATCH_SIZES:
                return
            batch = self.batches[rows] = [0, 0, 0, 0]
        batch[0] += 1
        batch[1] += input_ns
        batch[2] += infer_ns
        batch[3] += output_ns

    def succeeded(self, seconds: float) -> None:
        """A request answered after ``seconds``."""
        self.success_count += 1
        self.success_ns += int(seconds * 1e9)
        self.last_inference = time.time_ns() // 1_000_000  # a record of when, not a decision: the wall clock

    def failed(self, seconds: float) -> None:
        """A request refused or failed after ``seconds`` (its input, the model, its worker)."""
        self.fail_count += 1
        self.fail_ns += int(seconds * 1e9)
        self.last_inference = time.time_ns() // 1_000_000

    def to_dict(self, model: str, version: int) -> dict[str, Any]:
        """Triton's ``model_stat`` object (``version`` as a string, durations as ``{"count", "ns"}``)."""
        computed = self.computed
        return {
            "name": model,
            "version": str(version),
            "last_inference": self.last_inference,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": _duration(self.success_count, self.success_ns),
                "fail": _duration(self.fail_count, self.fail_ns),
                "queue": _duration(computed, self.queue_ns),
                "compute_input": _duration(computed, self.input_ns),
                "compute_infer": _duration(computed, self.infer_ns),
                "compute_output": _duration(computed, self.output_ns),
            },
            "batch_stats": [
                {"batch_size": rows, "compute_input": _duration(calls, input_ns),
                 "compute_infer": _duration(calls, infer_ns), "compute_output": _duration(calls, output_ns)}
                for rows, (calls, input_ns, infer_ns, output_ns) in sorted(self.batches.items())
            ],
        }


class Stats:
    """Every version's :class:`VersionStats` since the gateway started, by model and version."""

    def __init__(self) -> None:
        self._versions: dict[tuple[str, int], VersionStats] = {}

    def version(self, model: str, version: int) -> VersionStats:
        """The counters of ``model:version`` (new ones the first time it is asked for)."""
        key = (model, version)
        stats = self._versions.get(key)
        if stats is None:
            stats = self._versions[key] = VersionStats()
        return stats

    def snapshot(self, model: str | None = None, version: int | None = None) -> dict[str, Any]:
        """Triton's statistics answer, ``{"model_stats": [...]}``: every version's, ``model``'s, or one version's.

        ``model`` ``None`` or empty means all models; a model or version
        with no statistics here (never loaded by this gateway) is
        :class:`~rung.errors.NotFound`.
        """
        keys = sorted(self._versions)
        if model:
            keys = [k for k in keys if k[0] == model]
            if not keys:
                known = ", ".join(sorted({m for m, _ in self._versions})) or "none"
                raise NotFound(f"model {model!r} has no statistics here: this gateway never loaded it (models: {known})",
                               field="model_name")
            if version is not None:
                if (model, version) not in self._versions:
                    versions = ", ".join(str(v) for _, v in keys)
                    raise NotFound(f"version {version} of {model!r} has no statistics here: this gateway never loaded it "
                                   f"(versions: {versions})", field="model_version")
                keys = [(model, version)]
        return {"model_stats": [self._versions[k].to_dict(*k) for k in keys]}


def _duration(count: int, ns: int) -> dict[str, int]:
    return {"count": count, "ns": ns}
