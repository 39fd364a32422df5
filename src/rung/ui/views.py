"""What each dashboard page shows, read from the store: plain dicts for the templates, no HTML here.

Pages read aggregates only (monitoring windows, events, deployments),
never the raw request log, so a model with millions of logged predictions
loads as fast as one with a hundred. The one exception is the feature page,
which reads one window of one feature from the log (DuckDB, column pruning).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from rung import charts
from rung.errors import NotFound
from rung.timeline import ICONS, chains_of, describe

if TYPE_CHECKING:
    from rung.project import Project

__all__ = ["overview", "model_page", "monitoring", "feature", "timeline", "maturity"]

PERFORMANCE = ("accuracy", "roc_auc", "f1", "log_loss", "rmse", "mae")


def _models(project: Project) -> list[str]:
    names = {v.name for v in project.store.list_model_versions()} | {r.model for r in project.store.routes()}
    return sorted(names or {project.settings.model_name})


def overview(project: Project) -> dict[str, Any]:
    from rung.delivery.rollout import current
    from rung.delivery.routing import RoutingTable

    store = project.store
    aliases = project.tracking.aliases()
    tables = {r.model: RoutingTable.from_record(r) for r in store.routes()}
    endpoints = []
    for name in _models(project):
        deployments = store.deployments(name, limit=50)
        rollout = current(deployments) if deployments else None
        routing = tables.get(name)
        traffic = [{"version": v.version, "name": v.name, "share": routing.share(v.name)} for v in routing.variants] \
            if routing else []
        alerts = _open_alerts(project, name)
        decisions = store.events(name, limit=50, kinds=("rollout",))
        last = decisions[-1] if decisions else None
        windows = store.windows(name, limit=1)
        endpoints.append({
            "name": name, "aliases": aliases.get(name, {}), "traffic": traffic,
            "shadows": [v.version for v in routing.shadows] if routing else [],
            "rollout": None if rollout is None else {
                "id": rollout.id, "version": rollout.version, "baseline": rollout.baseline, "strategy": rollout.strategy,
                "state": rollout.state, "step": rollout.step, "steps": len(rollout.plan.get("steps", []) or [1]),
                "active": rollout.active},
            "health": _health(windows[-1] if windows else None, alerts),
            "alerts": alerts,
            "last_decision": None if last is None else {"time": last.time, "text": describe(last), "actor": last.actor},
            "last_window": windows[-1] if windows else None,
        })
    return {"endpoints": endpoints, "events": store.events(limit=12)}


def _open_alerts(project: Project, model: str) -> list[dict[str, Any]]:
    """Alerts whose last notice is "firing" (a "resolved" notice closes one)."""
    latest: dict[tuple[str, str], Any] = {}
    for e in project.store.events(model, limit=500, kinds=("alert",)):
        latest[(e.data.get("rule", ""), e.data.get("subject", ""))] = e
    return [{"rule": e.data.get("rule"), "subject": e.data.get("subject"), "severity": e.data.get("severity", "warning"),
             "metric": e.data.get("metric"), "value": e.data.get("value"), "since": e.time}
            for e in latest.values() if e.data.get("status") == "firing"]


def _health(window: Any, alerts: list[dict[str, Any]]) -> dict[str, str]:
    if any(a["severity"] == "critical" for a in alerts):
        return {"state": "critical", "why": f"{len(alerts)} open alerts"}
    if alerts:
        return {"state": "warning", "why": f"{len(alerts)} open alerts"}
    if window is None:
        return {"state": "unknown", "why": "no monitoring window yet"}
    error_rate = window.metrics.get("ops.error_rate", 0.0)
    if error_rate > 0.05:
        return {"state": "warning", "why": f"error rate {error_rate:.1%}"}
    return {"state": "ok", "why": f"last window {window.end:%Y-%m-%d %H:%M}: {window.rows} rows"}


def model_page(project: Project, name: str, *, mlflow_url: str | None = None) -> dict[str, Any]:
    store = project.store
    versions = [v for v in store.list_model_versions(name)]
    if not versions:
        raise NotFound(f"no registered version of a model named {name!r} (`rung run` registers one)", field="name")
    aliases = project.tracking.aliases().get(name, {})
    certifications: dict[int, Any] = {}
    for e in store.events(limit=2000, kinds=("certification",)):
        if e.subject.startswith(f"{name}:"):
            certifications[int(e.subject.split(":")[1])] = e
    deployments = store.deployments(name, limit=200)
    rows = []
    for v in sorted(versions, key=lambda r: -r.version):
        cert = certifications.get(v.version)
        data = v.lineage.get("data") or {}
        code = v.lineage.get("code") or {}
        deployed = [d for d in deployments if d.version == v.version]
        rows.append({
            "version": v.version, "aliases": sorted(a for a, n in aliases.items() if n == v.version),
            "metrics": v.metrics.get("overall", {}), "created_at": v.created_at, "run_id": v.run_id,
            "mlflow_run_id": v.mlflow_run_id, "flavor": v.flavor,
            "certification": None if cert is None else {"certified": cert.data.get("certified"),
                                                         "checks": cert.data.get("checks", []), "time": cert.time},
            "lineage": charts.flow([
                ("data", f"{str(data.get('snapshot', '?'))[:8]} · {data.get('rows', '?')} rows", None),
                ("code", f"{str(code.get('git_commit') or 'no git')[:10]}{' (dirty)' if code.get('git_dirty') else ''}", None),
                ("run", v.run_id[:8], f"{mlflow_url.rstrip('/')}/#/experiments/0/runs/{v.mlflow_run_id}" if mlflow_url else None),
                ("version", f"{name}:{v.version} {' '.join('@' + a for a, n in aliases.items() if n == v.version)}", None),
                ("deployment", f"{deployed[0].strategy} → {deployed[0].state}" if deployed else "not deployed", None),
            ]),
            "card": _card(project, v, cert),
        })
    return {"name": name, "versions": rows, "mlflow_url": mlflow_url}


def _card(project: Project, v: Any, cert: Any) -> dict[str, Any]:
    """A model card from what rung recorded: intended data, metrics, slices, checks, lineage."""
    lineage = v.lineage
    slices = v.metrics.get("slices", {})
    return {
        "task": project.settings.task, "target": project.settings.data.target,
        "trained_on": (lineage.get("data") or {}).get("rows"), "source": (lineage.get("data") or {}).get("source"),
        "params": lineage.get("params", {}), "slices": slices if isinstance(slices, dict) else {},
        "certified": None if cert is None else cert.data.get("certified"),
        "packages": {k: val for k, val in ((lineage.get("environment") or {}).get("packages") or {}).items()
                     if k in ("scikit-learn", "xgboost", "lightgbm", "pandas", "mlflow", "rung")},
    }


def monitoring(project: Project, name: str, *, last: int = 60) -> dict[str, Any]:
    windows = project.store.windows(name, limit=max(last, 1) * 4)
    if not windows and name not in _models(project):
        raise NotFound(f"no model named {name!r}", field="name")
    versions = sorted({w.version for w in windows})
    latest = versions[-1] if versions else None
    drift_windows = [w for w in windows if w.report.get("drift")][-last:]
    features: list[str] = []
    cells: dict[tuple[datetime, int], dict[str, dict[str, Any]]] = {}
    for w in drift_windows:
        for f in w.report["drift"].get("features", []):
            if f["name"] not in features:
                features.append(f["name"])
        cells[(w.end, w.version)] = {f["name"]: f for f in w.report["drift"].get("features", [])}
    columns = sorted(cells)
    heat = charts.heatmap(features, [c[0] for c in columns], [[cells[c].get(f) for c in columns] for f in features],
                          links=[f"/models/{quote(name, safe='')}/features/{quote(f, safe='')}" for f in features])
    trained = _trained_metrics(project, name)
    performance = []
    for metric in PERFORMANCE:
        lines: list[tuple[str, list[tuple[datetime, float]]]] = []
        bands: list[list[tuple[datetime, float, float]]] = []
        for version in versions:
            mine = [w for w in windows if w.version == version]
            pts = [(w.end, w.metrics[f"performance.{metric}"]) for w in mine if f"performance.{metric}" in w.metrics]
            est = [(w.end, w.metrics[f"estimated.{metric}"]) for w in mine if f"estimated.{metric}" in w.metrics]
            if pts:
                lines.append((f"v{version} live", pts))
                bands.append([b for b in (_interval(w, metric) for w in mine) if b is not None])
            if est:
                lines.append((f"v{version} estimated", est))
                bands.append([])  # bands line up with lines: an estimate has none
        if lines:
            performance.append({"metric": metric, "chart": charts.line_chart(
                lines, reference=trained.get(latest or 0, {}).get(metric), reference_label=f"v{latest} at training",
                bands=bands)})
    ops = []
    for key, label in (("ops.p99_ms", "p99 latency (ms)"), ("ops.error_rate", "error rate"),
                       ("ops.throughput_rps", "throughput (rows/s)"), ("ops.requests", "requests per window"),
                       ("ops.cpu_percent", "CPU (% of one core, gateway and workers)"),
                       ("ops.memory_mb", "memory (MB, peak)"), ("ops.gpu_utilization", "GPU utilisation"),
                       ("ops.gpu_memory_mb", "GPU memory (MB, peak)")):
        lines = [(f"v{v}", [(w.end, w.metrics[key]) for w in windows if w.version == v and key in w.metrics])
                 for v in versions]
        if any(points for _, points in lines) or not key.startswith(("ops.cpu", "ops.memory", "ops.gpu")):
            ops.append({"label": label, "chart": charts.line_chart([line for line in lines if line[1]], width=540,
                                                                   height=190)})
    return {"name": name, "versions": versions, "heatmap": heat, "features": features, "performance": performance,
            "ops": ops, "windows": len(windows), "last": last,
            "latest": windows[-1] if windows else None}


def _interval(window: Any, metric: str) -> tuple[datetime, float, float] | None:
    """The live metric's 95% interval in a window, when it has one."""
    ci = (window.report.get("performance") or {}).get(metric)
    if not isinstance(ci, dict) or ci.get("low") is None or ci.get("high") is None:
        return None
    return window.end, float(ci["low"]), float(ci["high"])


def _trained_metrics(project: Project, name: str) -> dict[int, dict[str, float]]:
    return {v.version: v.metrics.get("overall", {}) for v in project.store.list_model_versions(name)}


def feature(project: Project, name: str, feature_name: str, *, version: int | None = None,
            end: datetime | None = None) -> dict[str, Any]:
    """One feature: its drift statistic over time, and its distribution in one window against the reference."""
    import numpy as np
    import pandas as pd

    from rung.clock import SYSTEM
    from rung.monitor.logreader import RequestLogReader
    from rung.monitor.requestlog import log_root
    from rung.monitor.windows import Monitor

    windows = [w for w in project.store.windows(name, limit=2000) if w.report.get("drift")]
    known = {f["name"] for w in windows for f in w.report["drift"].get("features", [])}
    if feature_name not in known:
        raise NotFound(f"no monitored feature {feature_name!r} of {name!r}", field="feature")
    chosen = [w for w in windows if (version is None or w.version == version) and (end is None or w.end == end)]
    window = chosen[-1] if chosen else windows[-1]
    report = next(f for f in window.report["drift"]["features"] if f["name"] == feature_name)
    series: dict[int, list[tuple[datetime, float]]] = {}
    for w in windows:
        value = w.metrics.get(f"drift.feature.{feature_name}")
        if value is not None:
            series.setdefault(w.version, []).append((w.end, value))
    over_time = charts.line_chart([(f"v{v}", pts) for v, pts in sorted(series.items())],
                                  reference=report.get("threshold"), reference_label="threshold")
    reference = Monitor(project, SYSTEM).reference(name, window.version)
    current = RequestLogReader(log_root(project)).window(name, window.start, window.end, version=window.version,
                                                         shadow=False, columns=[feature_name])
    ref_values = reference.features.get(feature_name)
    cur_values = current.get(feature_name)
    labels: list[str] = []
    ref_share: list[float] = []
    cur_share: list[float] = []
    if ref_values is not None and cur_values is not None:
        if report.get("kind") == "numeric":
            ref_num = pd.to_numeric(ref_values, errors="coerce").to_numpy(dtype=float)
            cur_num = pd.to_numeric(cur_values, errors="coerce").to_numpy(dtype=float)  # a type error is a gap
            both = np.concatenate([ref_num[np.isfinite(ref_num)], cur_num[np.isfinite(cur_num)]])
            if both.size:
                edges = np.histogram_bin_edges(both, bins=20)
                ref_counts, _ = np.histogram(ref_num[np.isfinite(ref_num)], bins=edges)
                cur_counts, _ = np.histogram(cur_num[np.isfinite(cur_num)], bins=edges)
                labels = [f"{edges[i]:.3g}" for i in range(len(edges) - 1)]
                ref_share = list(ref_counts / max(ref_counts.sum(), 1))
                cur_share = list(cur_counts / max(cur_counts.sum(), 1))
        else:
            ref_freq = ref_values.astype(str).value_counts(normalize=True)
            cur_freq = cur_values.astype(str).value_counts(normalize=True)
            labels = sorted(set(ref_freq.index) | set(cur_freq.index), key=lambda k: -ref_freq.get(k, 0))[:30]
            ref_share = [float(ref_freq.get(k, 0.0)) for k in labels]
            cur_share = [float(cur_freq.get(k, 0.0)) for k in labels]
    return {"name": name, "feature": feature_name, "window": window, "report": report, "over_time": over_time,
            "distribution": charts.paired_bars(labels, ref_share, cur_share),
            "windows": [(w.version, w.end) for w in windows[-60:]], "reference_missing": reference.missing}


def timeline(project: Project, *, model: str | None = None, kind: str | None = None, last: int = 20) -> dict[str, Any]:
    models = _models(project)
    chains = []
    for name in ([model] if model else models):
        for record, events in chains_of(project, name, last):
            shown = [e for e in events if kind is None or e.kind == kind]
            chains.append({"retrain": record, "events": [{"event": e, "text": describe(e), "icon": ICONS.get(e.kind, "•")}
                                                          for e in shown]})
    chains.sort(key=lambda c: c["retrain"].started_at, reverse=True)
    kinds = ("retrain.triggered", "retrain.run", "certification", "deploy", "rollout", "alert", "retrain.failed")
    recent = [{"event": e, "text": describe(e), "icon": ICONS.get(e.kind, "•")}
              for e in project.store.events(model, limit=60, kinds=[kind] if kind else None)]
    return {"chains": chains, "models": models, "model": model, "kind": kind, "kinds": kinds,
            "recent": list(reversed(recent))}


def maturity(project: Project) -> dict[str, Any]:
    """The latest stored assessment of the project (run one if there is none) and the history of levels."""
    from rung.assess.assessment import assess_project, save
    from rung.assess.report import level_text

    history = project.store.assessments(str(project.root))
    if not history:
        save(project.store, assess_project(project).to_dict())
        history = project.store.assessments(str(project.root))
    doc = history[-1]["result"]
    for m in doc["models"]:
        m["text"] = level_text(m)
    points = {m["model"]: [(h["time"], float(h["levels"].get(m["model"]) or 0)) for h in history
                           if h["levels"].get(m["model"]) is not None] for m in doc["models"]}
    chart = charts.line_chart([(k, v) for k, v in points.items()], empty="one assessment so far")
    return {"doc": doc, "history": history, "chart": chart, "assessed": history[-1]["time"]}
