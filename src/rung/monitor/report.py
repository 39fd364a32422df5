"""A drift report as one self-contained HTML page: inline CSS and SVG, nothing fetched.

The page has to open from a CI artifact, an e-mail attachment or an
air-gapped laptop, so it carries no script, font or stylesheet from a CDN.
Drifted features come first and are highlighted: that is what a reader came
for. Each feature gets a plot of both distributions on the same axes
(overlaid histograms for numbers, side-by-side bars for categories) next to
the statistic and the decision; :mod:`rung.charts` draws them, this module
picks the bins and the categories.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from rung import charts
from rung.charts import CURRENT_COLOUR, REFERENCE_COLOUR

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from rung.monitor.drift import DriftReport, FeatureReport

__all__ = ["html_report"]

BINS = 30
TOP_CATEGORIES = 20

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}.verdict{font-size:1.1em;margin:.4em 0 1.2em}
table{border-collapse:collapse;width:100%;margin-bottom:1.5em}th,td{padding:4px 8px;border-bottom:1px solid #ddd;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}tr.drift td{background:#fdecea}tr.quality td{background:#fff8e1}
.bad{color:#b71c1c;font-weight:600}.ok{color:#2e7d32}.warn{color:#8d6e00}
section{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;margin:0 0 1em}section.drift{border-color:#e57373;background:#fffafa}
section h2{font-size:1.1em;margin:.2em 0}.facts{color:#555;margin:.2em 0 .5em}
svg text{font:11px system-ui,sans-serif;fill:#444}.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}
"""


def html_report(report: DriftReport, reference: pd.DataFrame, current: pd.DataFrame, *, title: str = "Data drift") -> str:
    """The whole page as a string; write it to a ``.html`` file."""
    ordered = sorted(report.features, key=lambda f: (not f.drifted, not f.all_missing))
    by_name = {str(c): c for c in reference.columns}
    cur_by_name = {str(c): c for c in current.columns}
    sections = [
        _section(i, f, reference[by_name[f.name]], current[cur_by_name[f.name]]) for i, f in enumerate(ordered)
    ]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<p class='verdict'>{_verdict(report)}</p>",
        _summary(ordered),
        _columns_note(report),
        "<p class='legend'>Distributions:<span style='background:" + REFERENCE_COLOUR + "'></span>reference"
        "<span style='background:" + CURRENT_COLOUR + "'></span>current</p>",
        *sections,
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


def _verdict(report: DriftReport) -> str:
    compared = report.compared
    share = (
        f"{len(report.drifted_features)} of {len(compared)} features drifted ({report.drift_share:.0%}; "
        f"the data set counts as drifted at {report.dataset_share:.0%}). "
        f"{report.reference_rows:,} reference rows, {report.current_rows:,} current rows."
    )
    head = "<span class='bad'>Dataset drift.</span>" if report.dataset_drifted else "<span class='ok'>No dataset drift.</span>"
    mv = report.multivariate
    tail = ""
    if mv is not None and mv.auc is not None:
        word = "<span class='bad'>drift</span>" if mv.drifted else "no drift"
        tail = f" Domain classifier ROC AUC {mv.auc:.3f}: {word} (alert above {mv.threshold:g})."
    elif mv is not None:
        tail = f" Domain classifier not run: {escape(mv.reason)}."
    return f"{head} {escape(share)}{tail}"


def _summary(features: list[FeatureReport]) -> str:
    rows = []
    for i, f in enumerate(features):
        css = "drift" if f.drifted else ("quality" if f.all_missing or f.type_errors or f.unseen else "")
        rows.append(
            f"<tr class='{css}'><td><a href='#f{i}'>{escape(f.name)}</a></td><td>{f.kind}</td>"
            f"<td>{escape(f.method or '-')}</td><td class='n'>{_value(f)}</td><td class='n'>{_limit(f)}</td>"
            f"<td>{_decision(f)}</td><td class='n'>{100 * f.missing_reference:.1f} / {100 * f.missing_current:.1f}</td>"
            f"<td>{escape('; '.join(f.notes))}</td></tr>"
        )
    head = (
        "<tr><th>feature</th><th>kind</th><th>method</th><th>value</th><th>threshold</th>"
        "<th>drift</th><th>missing % ref / cur</th><th>notes</th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>"


def _columns_note(report: DriftReport) -> str:
    notes = []
    if report.missing_columns:
        notes.append(f"In the reference only (not compared): {escape(', '.join(report.missing_columns))}.")
    if report.extra_columns:
        notes.append(f"In current only (not compared): {escape(', '.join(report.extra_columns))}.")
    for name, reason in report.skipped.items():
        notes.append(f"{escape(name)}: {escape(reason)}.")
    return "".join(f"<p class='warn'>{n}</p>" for n in notes)


def _value(f: FeatureReport) -> str:
    if f.statistic is None:
        return "-"
    if f.p_value is not None:
        return f"p = {_fmt(f.p_value)}"
    return _fmt(f.statistic)


def _limit(f: FeatureReport) -> str:
    if f.threshold is None:
        return "-"
    return f"p &lt; {f.threshold:g}" if f.p_value is not None else f"&ge; {f.threshold:g}"


def _decision(f: FeatureReport) -> str:
    if f.method is None:
        return "<span class='warn'>not compared</span>"
    return "<span class='bad'>drift</span>" if f.drifted else "<span class='ok'>no</span>"


def _fmt(value: float) -> str:
    return f"{value:.1e}" if value != 0 and abs(value) < 1e-3 else f"{value:.4f}"


def _section(index: int, f: FeatureReport, reference: pd.Series, current: pd.Series) -> str:
    facts = [f"{f.kind}", f"{f.method or 'not compared'}"]
    if f.statistic is not None:
        facts.append(f"value {_value(f)} (threshold {_limit(f)})")
    facts.append(f"{f.reference_values:,} / {f.current_values:,} values compared")
    if f.out_of_range:
        facts.append(f"{f.out_of_range:.1%} outside the reference range")
    if f.unseen:
        facts.append(f"unseen: {escape(', '.join(f.unseen))} ({(f.unseen_share or 0):.1%} of current)")
    plot = _plot(f, reference, current)
    css = " class='drift'" if f.drifted else ""
    return (
        f"<section id='f{index}'{css}><h2>{escape(f.name)} {_decision(f)}</h2>"
        f"<p class='facts'>{' · '.join(facts)}</p>{plot}</section>"
    )


def _plot(f: FeatureReport, reference: pd.Series, current: pd.Series) -> str:
    if f.all_missing:
        return "<p class='warn'>No values to plot.</p>"
    if f.kind == "numeric":
        return _histograms(reference, current)
    return _bars(reference, current)


def _finite(series: pd.Series) -> np.ndarray:
    import numpy as np
    import pandas as pd

    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return values[np.isfinite(values)]


def _histograms(reference: pd.Series, current: pd.Series) -> str:
    """Both samples on the same bins, over the central 99.8% of the two together so outliers do not squash the plot."""
    import numpy as np

    ref, cur = _finite(reference), _finite(current)
    both = np.concatenate((np.quantile(ref, [0.001, 0.999]), np.quantile(cur, [0.001, 0.999])))
    low, high = float(both.min()), float(both.max())
    if high <= low:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, BINS + 1)
    ref_share = np.histogram(np.clip(ref, low, high), edges)[0] / ref.size
    cur_share = np.histogram(np.clip(cur, low, high), edges)[0] / cur.size
    return charts.overlaid_histograms(ref_share.tolist(), cur_share.tolist(), low, high)


def _bars(reference: pd.Series, current: pd.Series) -> str:
    """Reference and current share of each category side by side, the most frequent first."""
    import pandas as pd

    ref = reference.dropna().astype(str).value_counts(normalize=True)
    cur = current.dropna().astype(str).value_counts(normalize=True)
    shares = pd.concat([ref.rename("ref"), cur.rename("cur")], axis=1).fillna(0.0)
    shares = shares.loc[shares.max(axis=1).sort_values(ascending=False).index[:TOP_CATEGORIES]]
    if shares.empty:
        return "<p class='warn'>No values to plot.</p>"
    names = [str(name) for name in shares.index]
    return charts.category_bars(names, shares["ref"].tolist(), shares["cur"].tolist())
