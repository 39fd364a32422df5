"""Monitoring windows: what production looked like for each served version, window by window.

Each closed window of the request log (a fixed length of time, aligned to
the epoch so every process agrees where windows start) is checked once per
served version against the version's reference, the data it was trained on:

* **data drift** per feature and multivariate, and **data quality**
  (:mod:`rung.monitor.drift`);
* **prediction drift**: the distribution of the scores against the scores the
  version gives its own training data;
* **estimated performance** from the scores alone (CBPE), marked as an
  estimate, for classifiers;
* **ops**: requests, error rate, latency percentiles, throughput.

**Live performance** needs labels, which arrive late: a window's realised
metrics are (re)computed each time the window is seen again until
``label_delay_s`` after it closed, then they stand. The flat metrics of a
window (``drift.share``, ``performance.accuracy``, ``ops.p99_ms`` ...) are
what alert rules and retraining triggers read and the dashboard draws; the
full report is kept beside them. A window's cost is the window's rows, not
the size of the log: the reader prunes segments by day.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from rung.errors import RungError
from rung.store.records import MonitorWindow

if TYPE_CHECKING:
    import pandas as pd

    from rung.clock import Clock
    from rung.monitor.performance import Task
    from rung.monitor.resources import ResourceSampler
    from rung.project import Project
    from rung.store.records import ModelVersionRecord

__all__ = ["Monitor", "window_bounds"]

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
REFERENCE_SCORE_ROWS = 5000


def window_bounds(at: datetime, length_s: float) -> tuple[datetime, datetime]:
    """The window of ``length_s`` seconds that contains ``at``, aligned to the epoch."""
    index = math.floor((at - EPOCH).total_seconds() / length_s)
    start = EPOCH + timedelta(seconds=index * length_s)
    return start, start + timedelta(seconds=length_s)


@dataclass
class Reference:
    """What a version is compared with: its training inputs, labels and its own scores on them."""

    features: pd.DataFrame
    scores: Any  # numpy array, or None for a regressor without scores
    metrics: dict[str, float]
    missing: str | None = None  # why there is no reference, when there is none


@dataclass
class Monitor:
    """Checks the closed windows of a project's served models; remembers where it stopped (``loop_state``)."""

    project: Project
    clock: Clock
    resources: ResourceSampler | None = None  # the serving process's CPU, memory and GPU, when it is this one
    _references: dict[tuple[str, int], Reference] = field(default_factory=dict)

    @property
    def settings(self) -> Any:
        return self.project.settings.monitor

    def check(self, model: str | None = None) -> list[MonitorWindow]:
        """Every window closed since the last check (at most ``max_backfill``), for every served version.

        Returns the new windows, one observation each for alert rules and
        triggers: a window whose own requests have no labels yet carries the
        live performance of the newest earlier window that has them (labels
        arrive late), so each window is observed once and performance is
        still seen. What is stored is each window's own metrics.
        """
        from dataclasses import replace

        model = model or self.project.settings.model_name
        length = self.settings.window_s
        now = self.clock.now()
        state = self.project.store.state(f"monitor:{model}")
        last_end, _ = window_bounds(now, length)  # the current window is still open: it ends the range
        first = (datetime.fromisoformat(state["checked_until"]) if state.get("checked_until")
                 else last_end - timedelta(seconds=length))
        first = max(first, last_end - timedelta(seconds=length * self.settings.max_backfill))
        new: list[MonitorWindow] = []
        start = first
        while start < last_end:
            end = start + timedelta(seconds=length)
            new += self.check_window(model, start, end)
            start = end
        if first < last_end:
            self.project.store.save_state(f"monitor:{model}", {"checked_until": last_end.isoformat()}, time=now)
        if not new:
            return []
        relabelled = self._relabel(model, first, now)  # labels that arrived since, for windows still within the delay
        observed = []
        for window in new:
            if not any(k.startswith("performance.") for k in window.metrics):
                earlier = [w for w in relabelled if w.version == window.version and w.end <= window.start]
                labelled = [w for w in earlier if any(k.startswith("performance.") for k in w.metrics)]
                if labelled:
                    carried = {k: v for k, v in labelled[-1].metrics.items() if k.startswith("performance.")}
                    window = replace(window, metrics=window.metrics | carried)
            observed.append(window)
        return observed

    def check_window(self, model: str, start: datetime, end: datetime) -> list[MonitorWindow]:
        """One window of ``model``: a :class:`MonitorWindow` per version that answered in it (stored).

        Each window's report names the replicas whose logs were read, with
        that version's rows from each and each replica's newest record
        (``report["replicas"]``), so a replica left out is visible.
        """
        out: list[MonitorWindow] = []
        for version, rows in self._rows(model, start, end, features=None):
            window = self._version_window(model, version, start, end, rows)
            self.project.store.save_window(window)
            out.append(window)
        return out

    def _rows(self, model: str, start: datetime, end: datetime, *, features: list[str] | None) -> list[tuple[int, pd.DataFrame]]:
        """The window's answered records per version, with the feedback that has arrived (``feedback``)."""
        from rung.monitor.logreader import RequestLogReader
        from rung.monitor.requestlog import feedback_id, log_root

        frame = RequestLogReader(log_root(self.project)).window(model, start, end, shadow=False, columns=features)
        if frame.empty:
            return []
        ids = [feedback_id(r, int(n)) for r, n in zip(frame["request_id"], frame["row"], strict=False)]
        values = self.project.store.feedback_values(sorted(set(ids)))
        frame = frame.assign(feedback=[values.get(i) for i in ids])
        seen = frame.attrs.get("replicas", [])
        out = []
        for version, rows in frame.groupby("version"):
            rows.attrs["replicas"] = _replicas(rows, seen)
            out.append((int(version), rows))
        return out

    def _relabel(self, model: str, first: datetime, now: datetime) -> list[MonitorWindow]:
        """Windows before ``first`` whose labels may still be arriving get their live performance again.

        Only the performance is recomputed (no features are read, no drift):
        the rest of the window has not changed since it closed.
        """
        from dataclasses import replace

        delay = timedelta(seconds=self.settings.label_delay_s)
        if delay.total_seconds() <= 0:
            return []
        length = timedelta(seconds=self.settings.window_s)
        stored = {(w.version, w.start): w for w in self.project.store.windows(model, since=first - delay - length)
                  if w.end <= first and w.end + delay >= now - length}
        out = []
        for start in sorted({start for _, start in stored}):
            for version, rows in self._rows(model, start, start + length, features=[]):
                window = stored.get((version, start))
                if window is None:
                    continue
                ok = rows[rows["status"] == 200]
                performance, metrics = self._performance(ok, self.reference(model, version),
                                                         self.project.settings.task)
                kept = {k: v for k, v in window.metrics.items() if not k.startswith("performance.")}
                window = replace(window, metrics=kept | _finite(metrics),
                                 report=window.report | {"performance": _jsonable(performance)})
                self.project.store.save_window(window)
                out.append(window)
        return sorted(out, key=lambda w: w.end)

    # -- one version's window --------------------------------------------------------------

    def _version_window(self, model: str, version: int, start: datetime, end: datetime, rows: pd.DataFrame) -> MonitorWindow:
        metrics: dict[str, float] = {}
        report: dict[str, Any] = {"rows": len(rows), "replicas": rows.attrs.get("replicas", [])}
        metrics |= _ops(rows, (end - start).total_seconds())
        if self.resources is not None:
            metrics |= self.resources.summary(start, end)
        ok = rows[rows["status"] == 200]
        reference = self.reference(model, version)
        task = self.project.settings.task
        if reference.missing:
            report["reference"] = {"missing": reference.missing}
        elif len(ok) >= self.settings.min_rows:
            report["drift"], drift_metrics = self._drift(reference, ok)
            metrics |= drift_metrics
            metrics |= self._prediction_drift(reference, ok, report)
        else:
            report["drift"] = {"skipped": f"{len(ok)} answered requests, fewer than monitor.min_rows = {self.settings.min_rows}"}
        if task == "classification" and "score" in ok and ok["score"].notna().any():
            metrics |= _estimates(ok["score"].dropna().to_numpy(dtype=float))
        performance, perf_metrics = self._performance(ok, reference, task)
        report["performance"] = performance
        metrics |= perf_metrics
        return MonitorWindow(model=model, version=version, start=start, end=end, rows=len(rows),
                             metrics=_finite(metrics), report=_jsonable(report))

    def _drift(self, reference: Reference, rows: pd.DataFrame) -> tuple[dict[str, Any], dict[str, float]]:
        from threadpoolctl import threadpool_limits

        from rung.monitor.drift import compare

        current = rows[[c for c in reference.features.columns if c in rows.columns]]
        settings = self.settings.drift
        if settings.method is None:  # distances whatever the sizes: one rule means the same for every window and version
            settings = settings.model_copy(update={"numeric_method": settings.numeric_method or "wasserstein",
                                                   "categorical_method": settings.categorical_method or "jensenshannon"})
        # one OpenMP thread: the domain classifier is small, and the gateway's workers share these cores
        with threadpool_limits(1):
            result = compare(reference.features, current, settings=settings)
        metrics = {"drift.share": result.drift_share, "drift.dataset": float(result.dataset_drifted)}
        for feature in result.features:
            if feature.statistic is not None:
                metrics[f"drift.feature.{feature.name}"] = feature.statistic
            metrics[f"quality.missing.{feature.name}"] = feature.missing_current
        if result.multivariate is not None and result.multivariate.auc is not None:
            metrics["drift.multivariate_auc"] = result.multivariate.auc
        if result.features:
            metrics["quality.missing_rate"] = max(f.missing_current for f in result.features)
            metrics["quality.type_errors"] = float(sum(f.type_errors for f in result.features))
        for name, values in (("quality.unseen_share", [f.unseen_share for f in result.features]),
                             ("quality.out_of_range_share", [f.out_of_range for f in result.features])):
            present = [v for v in values if v is not None]
            if present:
                metrics[name] = max(present)
        return result.to_dict(), metrics

    def _prediction_drift(self, reference: Reference, rows: pd.DataFrame, report: dict[str, Any]) -> dict[str, float]:
        import numpy as np

        from rung.monitor.stats import wasserstein_norm

        if reference.scores is None or "score" not in rows:
            return {}
        scores = rows["score"].dropna().to_numpy(dtype=float)
        if len(scores) < 2:
            return {}
        value = float(wasserstein_norm(np.asarray(reference.scores, dtype=float), scores))
        report["prediction_drift"] = {"method": "wasserstein (normalised)", "value": value,
                                      "reference_mean": float(np.mean(reference.scores)), "current_mean": float(scores.mean())}
        return {"prediction.drift": value, "prediction.mean": float(scores.mean())}

    def _performance(self, rows: pd.DataFrame, reference: Reference, task: Task) -> tuple[dict[str, Any], dict[str, float]]:
        """Realised metrics on the window's requests that have feedback, with intervals, against training time."""
        from rung.monitor.performance import live_metrics

        labelled = rows[rows["feedback"].notna()] if "feedback" in rows else rows.iloc[0:0]
        out: dict[str, Any] = {"labelled": int(len(labelled)), "of": int(len(rows))}
        if len(labelled) < self.settings.min_labels:
            out["skipped"] = f"{len(labelled)} requests with feedback, fewer than monitor.min_labels = {self.settings.min_labels}"
            return out, {}
        truth = labelled["feedback"].to_numpy(dtype=float)
        if task == "classification":
            predicted = labelled["prediction"].astype(float).to_numpy()
            scores = labelled["score"].to_numpy(dtype=float) if labelled["score"].notna().all() else None
            estimates = live_metrics(truth.astype(int), predicted.astype(int), scores, task=task)
        else:
            estimates = live_metrics(truth, labelled["prediction"].astype(float).to_numpy(), None, task=task)
        metrics: dict[str, float] = {"performance.labelled": float(len(labelled))}
        for name, estimate in estimates.items():
            metrics[f"performance.{name}"] = estimate.value
            entry = {"value": estimate.value, "low": estimate.low, "high": estimate.high, "n": estimate.n}
            trained = reference.metrics.get(name)
            if trained is not None:
                entry["training"] = trained
                metrics[f"performance.{name}.change"] = estimate.value - trained
            out[name] = entry
        return out, metrics

    # -- the reference ---------------------------------------------------------------------

    def reference(self, model: str, version: int) -> Reference:
        """The version's training inputs (its data snapshot), its own scores on a sample, its training metrics (cached)."""
        key = (model, version)
        if key not in self._references:
            self._references[key] = self._load_reference(model, version)
        return self._references[key]

    def _load_reference(self, model: str, version: int) -> Reference:
        from rung.models.loader import training_inputs

        record: ModelVersionRecord | None = self.project.store.get_model_version(model, version)
        if record is None:
            return Reference(features=_empty(), scores=None, metrics={}, missing=f"{model}:{version} is not registered")
        try:
            features = training_inputs(record, self.project.artifacts, self.project.settings.data.target)
        except RungError as exc:
            why = f"drift cannot be computed: {exc}"
            log.warning(why)
            return Reference(features=_empty(), scores=None, metrics={}, missing=why)
        scores = None
        try:
            loaded = self.project.models_loader.load(record)
            sample = features.sample(min(REFERENCE_SCORE_ROWS, len(features)), random_state=0)
            if loaded.columns:
                sample = sample[[c.name for c in loaded.columns if c.name in sample.columns]]
                features = features[[c.name for c in loaded.columns if c.name in features.columns]]
            outputs = loaded.predict(sample)
            scores = outputs.get("proba", outputs["predict"])
        except Exception as exc:  # the comparison of inputs still stands without the model's own scores
            log.warning("%s:%s: reference scores unavailable: %s", model, version, exc)
        overall = record.metrics.get("overall", {})
        return Reference(features=features, scores=scores,
                         metrics={k: float(v) for k, v in overall.items() if isinstance(v, (int, float))})


def _ops(rows: pd.DataFrame, seconds: float) -> dict[str, float]:
    import numpy as np

    latency = rows["latency_ms"].to_numpy(dtype=float)
    errors = float((rows["status"] >= 500).mean()) if len(rows) else 0.0
    return {
        "ops.requests": float(rows["request_id"].nunique()),
        "ops.rows": float(len(rows)),
        "ops.error_rate": errors,
        "ops.client_error_rate": float(((rows["status"] >= 400) & (rows["status"] < 500)).mean()) if len(rows) else 0.0,
        "ops.p50_ms": float(np.percentile(latency, 50)) if len(latency) else float("nan"),
        "ops.p99_ms": float(np.percentile(latency, 99)) if len(latency) else float("nan"),
        "ops.throughput_rps": float(rows["request_id"].nunique() / seconds) if seconds > 0 else float("nan"),
    }


def _replicas(rows: pd.DataFrame, seen: list[Any]) -> list[dict[str, Any]]:
    """Each replica the window read: this version's rows from it, and its newest record (JSON for the report)."""
    counts = rows["replica"].fillna("").value_counts().to_dict() if "replica" in rows else {}
    return [one.to_dict() | {"rows": int(counts.get(one.replica, 0))} for one in seen]


def _estimates(scores: Any) -> dict[str, float]:
    from rung.monitor.performance import estimate_performance

    if len(scores) < 2:
        return {}
    return {f"estimated.{name}": e.value for name, e in estimate_performance(scores).items()}


def _finite(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}


def _empty() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame()


def _jsonable(value: Any) -> Any:
    """Plain JSON: NaN and infinities become None, numpy scalars become Python numbers."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value
