"""Reports drawn from an assessment's JSON document: Markdown, and HTML that needs no network.

Both take the document (``Assessment.to_dict()`` or a stored result), so a
report can be drawn again from history. The HTML page is one file: inline
CSS, one SVG chart per model (a ladder of its levels, a row per
dimension) and, with history, a chart of how the levels moved, both drawn
by :mod:`rung.charts`.
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any

from rung import charts
from rung.assess.catalogue import model as maturity_model

__all__ = ["to_markdown", "to_html", "level_text", "STATUS_MARK"]

STATUS_MARK = {"met": "✔ met", "partial": "◐ partly", "not_met": "✖ not met", "unknown": "? unknown"}
_COLOURS = {"met": "#2e7d32", "partial": "#ef8f00", "not_met": "#c62828", "unknown": "#757575"}
_MODEL_COLOURS = {"azure": "#0078d4", "google": "#34a853", "aws": "#ff9900", "gigaom": "#8e24aa"}


def level_text(m: dict[str, Any]) -> str:
    if m["level"] is None:
        return "not assessed"
    if m["model"] == "aws":
        return f"{m['level_name']} (stage {m['level'] + 1} of {m['top'] + 1})"
    return m["level_name"] if m["level_name"] == f"Level {m['level']}" else f"{m['level']} · {m['level_name']}"


def _evidence_text(c: dict[str, Any]) -> str:
    return "; ".join(f"{e['kind']} {e['ref']}" + (f" ({e['detail']})" if e["detail"] else "") for e in c["evidence"])


def to_markdown(doc: dict[str, Any]) -> str:
    lines = [f"# MLOps maturity: {doc['target']}", "",
             f"Assessed {doc['time']} from {'rung records, files and answers' if doc['mode'] == 'project' else 'files and answers'}"
             f" (rung {doc['rung']}, schema {doc['schema']}).", ""]
    lines += [f"> **Partial:** {note}" for note in doc["partial"]]
    if doc["partial"]:
        lines.append("")
    lines += ["| model | level | unknown criteria |", "|---|---|---|"]
    for m in doc["models"]:
        lines.append(f"| {m['title']} | {level_text(m)} | {len(m['unknown'])} |")
    lines.append("")
    for m in doc["models"]:
        lines.append(f"## {m['title']}: {level_text(m)}")
        lines.append("")
        for d in m["dimensions"]:
            if d["name"] != "overall":
                lines.append(f"- {d['name']}: {'not assessed (answer its questions)' if d['level'] is None else d['level']}")
        if m["gaps"]:
            lines.append("")
            lines.append("What stops the next level:")
            lines.append("")
            for g in m["gaps"]:
                lines.append(f"- **{g['title']}** ({g['dimension']}, level {g['level']}, {STATUS_MARK[g['status']]}): "
                             f"{g['next_step']}")
        lines.append("")
    lines += ["## Next steps", ""]
    for i, step in enumerate(doc["next_steps"], 1):
        lines.append(f"{i}. **{step['title']}**: {step['next_step']} (unblocks {', '.join(step['unblocks'])})")
    lines += ["", "## Criteria", "", "| criterion | status | confidence | found | evidence |", "|---|---|---|---|---|"]
    for c in doc["criteria"]:
        lines.append(f"| {c['title']} (`{c['id']}`) | {STATUS_MARK[c['status']]} | {c['confidence']} | "
                     f"{c['summary'].replace('|', '/')} | {_evidence_text(c).replace('|', '/') or '-'} |")
    return "\n".join(lines) + "\n"


def _ladder(m: dict[str, Any]) -> str:
    """One row per dimension, one cell per level, filled up to the level reached."""
    rows = [(d["name"] if d["name"] != "overall" else "level", d["name"], d["level"]) for d in m["dimensions"]]
    return charts.ladder(rows, top=maturity_model(m["model"]).top, colour=_MODEL_COLOURS.get(m["model"], "#555"),
                         label=f"{m['title']}: {level_text(m)}")


def _history_chart(history: list[dict[str, Any]]) -> str:
    """Each model's level over the stored assessments, as a share of its top level."""
    lines = [(key, colour, maturity_model(key).top, [(item.get("levels") or {}).get(key) for item in history])
             for key, colour in _MODEL_COLOURS.items()]
    chart = charts.level_history([_date(item["time"]) for item in history], lines)
    legend = "".join(f"<span class='key'><i style='background:{c}'></i>{escape(k)}</span>"
                     for k, c in _MODEL_COLOURS.items())
    return chart + f"<div class='legend'>{legend} <span class='meta'>level as a share of each model's top</span></div>"


def _date(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)[:16].replace("T", " ")


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#1d232a;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.meta{color:#5f6b76}.partial{background:#fff4e5;border-left:4px solid #ef8f00;padding:.5rem .8rem;margin:.5rem 0}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:1rem;margin:1rem 0}
.card{border:1px solid #dde3e8;border-radius:8px;padding:.8rem 1rem}.card .lvl{font-size:1.3rem;font-weight:600;margin:.2rem 0 .5rem}
.legend{font-size:12px;color:#44515c}.key{margin-right:1rem}.key i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:4px;vertical-align:-1px}
.ladder text.dim,.ladder text.axis,.history text.axis{font-size:11px;fill:#44515c}.ladder text.na{font-size:11px;fill:#757575}
table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{border-bottom:1px solid #e6eaee;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}.badge{display:inline-block;border-radius:10px;padding:0 .5rem;color:#fff;font-size:12px;white-space:nowrap}
code{background:#f2f4f6;padding:0 .25rem;border-radius:3px}.ev{color:#44515c;font-size:12px}
"""


def to_html(doc: dict[str, Any], history: list[dict[str, Any]] | None = None) -> str:
    """A self-contained page: no script, no font, no image fetched from anywhere."""
    e = escape
    out = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>MLOps maturity: {e(doc['target'])}</title>"
           f"<style>{_CSS}</style></head><body>",
           f"<h1>MLOps maturity: {e(doc['target'])}</h1>",
           f"<p class='meta'>Assessed {e(_date(doc['time']))} from "
           f"{'rung records, files and answers' if doc['mode'] == 'project' else 'the repository files and answers'} "
           f"· rung {e(doc['rung'])} · schema {e(doc['schema'])}</p>"]
    out += [f"<div class='partial'><b>Partial result:</b> {e(note)}</div>" for note in doc["partial"]]
    out.append("<div class='cards'>")
    for m in doc["models"]:
        count = len(m["unknown"])
        unknown = f"<div class='meta'>{count} {'criterion' if count == 1 else 'criteria'} unknown</div>" if count else ""
        out.append(f"<div class='card' id='card-{e(m['model'])}'><div class='meta'>{e(m['title'])}</div>"
                   f"<div class='lvl'>{e(level_text(m))}</div>{unknown}{_ladder(m)}</div>")
    out.append("</div>")
    if history and len(history) > 1:
        out.append(f"<h2>History</h2>{_history_chart(history)}")
    out.append("<h2>Next steps</h2><ol>")
    out += [f"<li><b>{e(step['title'])}</b>: {_code(step['next_step'])} "
            f"<span class='meta'>(unblocks {e(', '.join(step['unblocks']))})</span></li>" for step in doc["next_steps"]]
    out.append("</ol>")
    for m in doc["models"]:
        out.append(f"<h2 id='model-{e(m['model'])}'>{e(m['title'])}: {e(level_text(m))}</h2>")
        if m["level"] == m["top"]:
            out.append("<p>The top level: nothing stops it.</p>")
        if m["unknown"]:
            out.append(f"<p class='meta'>Unknown, set aside: {e(', '.join(m['unknown']))}. "
                       "Answer them with <code>--answers FILE</code>.</p>")
        if m["gaps"]:
            out.append("<p>What stops the next level:</p><ul>")
            out += [f"<li><b>{e(g['title'])}</b> ({e(g['dimension'])}, level {g['level']}, "
                    f"{_badge(g['status'])}): {_code(g['next_step'])}</li>" for g in m["gaps"]]
            out.append("</ul>")
    out.append("<h2>Criteria and evidence</h2><table><tr><th>criterion</th><th>status</th><th>confidence</th>"
               "<th>found</th><th>evidence</th></tr>")
    for c in doc["criteria"]:
        evidence = "<br>".join(f"{e(x['kind'])} <code>{e(x['ref'])}</code> {e(x['detail'])}" for x in c["evidence"])
        placements = ", ".join(f"{p['model']} {p['dimension'] if p['dimension'] != 'overall' else ''} L{p['level']}"
                               .replace("  ", " ") for p in c["placements"])
        out.append(f"<tr id='c-{e(c['id'])}'><td><b>{e(c['title'])}</b><div class='ev'><code>{e(c['id'])}</code> · "
                   f"{e(placements)}</div></td><td>{_badge(c['status'])}</td><td>{e(c['confidence'])}</td>"
                   f"<td>{e(c['summary'])}</td><td class='ev'>{evidence or '-'}</td></tr>")
    out.append("</table></body></html>")
    return "".join(out)


def _badge(status: str) -> str:
    return f"<span class='badge' style='background:{_COLOURS[status]}'>{escape(STATUS_MARK[status])}</span>"


def _code(text: str) -> str:
    """Backticks in a next step become <code>."""
    pieces = escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))
