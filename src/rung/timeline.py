"""The event log in words: causal chains of retraining and one line per event (CLI and dashboard)."""

from __future__ import annotations

from typing import Any

__all__ = ["CHAIN_KINDS", "ICONS", "UI_ICONS", "chains_of", "describe"]

CHAIN_KINDS = ("retrain.triggered", "retrain.refused", "retrain.run", "certification", "deploy", "rollout",
               "retrain.failed", "retrain.rejected", "alert")
# Glyphs every system font has (the dashboard's screenshots come from a headless browser without emoji fonts).
UI_ICONS = {"retrain.triggered": "⚡", "retrain.run": "⚙", "certification": "✔", "deploy": "➤", "rollout": "⇄",
            "retrain.failed": "✖", "retrain.rejected": "✖", "retrain.refused": "⏸", "alert": "⚠", "routing": "⇉",
            "model.registered": "▣"}
ICONS = {"retrain.triggered": "⚡", "retrain.run": "⚙", "certification": "✔", "deploy": "🚀", "rollout": "⇄",
         "retrain.failed": "✖", "retrain.rejected": "✖", "retrain.refused": "⏸", "alert": "🔔"}


def chains_of(project: Any, model: str, last: int) -> list[tuple[Any, list[Any]]]:
    """The newest ``last`` retrainings of ``model`` (oldest first), each with the events of its chain."""
    return [(r, project.store.events(chain=r.id, limit=500)) for r in reversed(project.store.retrains(model, limit=last))]


def describe(event: Any) -> str:
    """One line for an event, in words."""
    d = event.data
    kind = event.kind
    if kind == "retrain.triggered":
        return d.get("why", "")
    if kind == "retrain.run":
        metrics = d.get("metrics", {})
        shown = ", ".join(f"{k} {v:.3f}" for k, v in list(metrics.items())[:3] if isinstance(v, (int, float)))
        return f"pipeline run {str(d.get('run_id'))[:8]} registered version {d.get('version')} ({shown})"
    if kind == "certification":
        failed = [c["name"] for c in d.get("checks", []) if c.get("status") == "fail"]
        return f"{event.subject}: {'certified' if d.get('certified') else 'failed ' + ', '.join(failed)}"
    if kind == "deploy":
        return f"version {d.get('version')} with {d.get('strategy')} against champion {d.get('champion')}"
    if kind == "rollout":
        return f"{d.get('from')} → {d.get('to')}: {d.get('why', '')}"
    if kind == "alert":
        return d.get("message", "")
    if kind == "routing":
        traffic = ", ".join(f"v{v.get('version')} {float(v.get('share', 0)):.0%}" for v in d.get("variants", []))
        shadows = ", ".join(f"v{v.get('version')} shadow" for v in d.get("shadows", []))
        return f"revision {d.get('revision')}: {traffic}" + (f", {shadows}" if shadows else "")
    if kind == "model.registered":
        aliases = " ".join("@" + a for a in d.get("aliases", []))
        return f"version {d.get('version')} registered from run {str(d.get('run_id'))[:8]} {aliases}".rstrip()
    if kind in ("retrain.failed", "retrain.rejected"):
        return d.get("error", "")
    if kind == "retrain.refused":
        return d.get("refused", "")
    return ", ".join(f"{k}={v}" for k, v in list(d.items())[:4])
