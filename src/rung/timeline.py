"""The event log in words: causal chains of retraining and one line per event (CLI and dashboard)."""

from __future__ import annotations

from typing import Any

__all__ = ["CHAIN_KINDS", "ICONS", "chains_of", "describe", "traffic"]

CHAIN_KINDS = ("retrain.triggered", "retrain.refused", "retrain.run", "certification", "deploy", "rollout",
               "retrain.failed", "retrain.rejected", "alert")
# Glyphs every system font has: the terminal, and the dashboard's screenshots from a browser without emoji fonts.
ICONS = {"retrain.triggered": "⚡", "retrain.run": "⚙", "certification": "✔", "deploy": "➤", "rollout": "⇄",
         "retrain.failed": "✖", "retrain.rejected": "✖", "retrain.refused": "⏸", "alert": "⚠", "routing": "⇉",
         "model.registered": "▣"}


def chains_of(project: Any, model: str, last: int) -> list[tuple[Any, list[Any]]]:
    """The newest ``last`` retrainings of ``model`` (oldest first), each with the events of its chain."""
    return [(r, project.store.events(chain=r.id, limit=500)) for r in reversed(project.store.retrains(model, limit=last))]


def traffic(routing: dict[str, Any]) -> str:
    """A routing table in words: each version's share of traffic, then the shadows."""
    variants = routing.get("variants", [])
    total = sum(float(v.get("weight", 1)) for v in variants) or 1.0
    shown = [f"v{v['version']} {float(v.get('weight', 1)) / total:.0%}" for v in variants]
    return ", ".join(shown + [f"v{s['version']} shadow" for s in routing.get("shadows", [])])


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
        return f"revision {d.get('revision')}: {traffic(d)}"
    if kind == "model.registered":
        aliases = " ".join("@" + a for a in d.get("aliases", []))
        return f"version {d.get('version')} registered from run {str(d.get('run_id'))[:8]} {aliases}".rstrip()
    if kind in ("retrain.failed", "retrain.rejected"):
        return d.get("error", "")
    if kind == "retrain.refused":
        return d.get("refused", "")
    return ", ".join(f"{k}={v}" for k, v in list(d.items())[:4])
