"""Charts as inline SVG, drawn on the server: no chart library, nothing fetched, readable without script.

Every chart of the package is drawn here, from plain numbers and labels, so
that one module decides how text reaches the markup: every label, tooltip
and link goes through :func:`html.escape` (quotes included, so attributes
in either quote style are safe). The dashboard's charts (``line_chart``,
``heatmap``, ``paired_bars``, ``flow``) return one ``<svg class="chart ...">``
element with a ``data-points`` count (what the browser test checks was
drawn) and ``<title>`` tooltips on the marks. The standalone reports' charts
(``overlaid_histograms``, ``category_bars`` for the drift report;
``ladder``, ``level_history`` for the maturity assessment) are sized for a
page read offline and styled by that page's CSS.

It imports nothing from rung, so any layer may draw with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape

__all__ = [
    "PALETTE", "line_chart", "heatmap", "paired_bars", "flow",
    "overlaid_histograms", "category_bars", "ladder", "level_history",
]

PALETTE = ("#0b6bcb", "#e8710a", "#1e8e3e", "#a142f4", "#d93025", "#12b5cb", "#f9ab00", "#5f6368")


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _empty(kind: str, message: str, width: int, height: int) -> str:
    return (f'<svg class="chart {kind} empty" data-points="0" width="100%" viewBox="0 0 {width} {height}" '
            f'xmlns="http://www.w3.org/2000/svg"><text x="{width / 2}" y="{height / 2}" text-anchor="middle" '
            f'class="muted">{escape(message)}</text></svg>')


def line_chart(series: Sequence[tuple[str, Sequence[tuple[datetime, float]]]], *, reference: float | None = None,
               reference_label: str = "training", bands: Sequence[Sequence[tuple[datetime, float, float]]] | None = None,
               width: int = 760, height: int = 220, empty: str = "no data yet") -> str:
    """Lines over time, one per series; an optional dashed reference (the training-time value) and 95% bands."""
    points = [p for _, s in series for p in s]
    if not points:
        return _empty("line", empty, width, height)
    pad_l, pad_r, pad_t, pad_b = 52, 110, 12, 26
    xs = [p[0].timestamp() for p in points]
    ys = [p[1] for p in points] + ([reference] if reference is not None else [])
    for band in bands or []:
        ys += [lo for _, lo, _ in band] + [hi for _, _, hi in band]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 0.5, y1 + 0.5
    span = (y1 - y0) * 0.08
    y0, y1 = y0 - span, y1 + span

    def sx(t: datetime) -> float:
        return pad_l + (t.timestamp() - x0) / max(x1 - x0, 1e-9) * (width - pad_l - pad_r)

    def sy(v: float) -> float:
        return pad_t + (y1 - v) / (y1 - y0) * (height - pad_t - pad_b)

    out = [f'<svg class="chart line" data-points="{len(points)}" width="100%" viewBox="0 0 {width} {height}" '
           f'preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">']
    for frac in (0.0, 0.5, 1.0):
        value = y0 + span + frac * (y1 - y0 - 2 * span)
        out.append(f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{sy(value):.1f}" y2="{sy(value):.1f}" class="grid"/>'
                   f'<text x="{pad_l - 6}" y="{sy(value) + 4:.1f}" text-anchor="end" class="axis">{_fmt(value)}</text>')
    first, last = min(p[0] for p in points), max(p[0] for p in points)
    out.append(f'<text x="{pad_l}" y="{height - 6}" class="axis">{first:%Y-%m-%d %H:%M}</text>'
               f'<text x="{width - pad_r}" y="{height - 6}" text-anchor="end" class="axis">{last:%Y-%m-%d %H:%M}</text>')
    for i, band in enumerate(bands or []):
        if len(band) > 1:
            upper = " ".join(f"{sx(t):.1f},{sy(hi):.1f}" for t, _, hi in band)
            lower = " ".join(f"{sx(t):.1f},{sy(lo):.1f}" for t, lo, _ in reversed(band))
            out.append(f'<polygon points="{upper} {lower}" fill="{PALETTE[i % len(PALETTE)]}" opacity="0.12"/>')
    if reference is not None:
        out.append(f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{sy(reference):.1f}" y2="{sy(reference):.1f}" '
                   f'class="reference"><title>{escape(reference_label)}: {_fmt(reference)}</title></line>'
                   f'<text x="{pad_l + 4}" y="{sy(reference) - 4:.1f}" class="axis">{escape(reference_label)}</text>')
    for i, (label, s) in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        ordered = sorted(s)
        if len(ordered) > 1:
            path = " ".join(f"{sx(t):.1f},{sy(v):.1f}" for t, v in ordered)
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for t, v in ordered[-400:]:
            out.append(f'<circle cx="{sx(t):.1f}" cy="{sy(v):.1f}" r="2.5" fill="{colour}">'
                       f'<title>{escape(label)} {t:%Y-%m-%d %H:%M}: {_fmt(v)}</title></circle>')
        out.append(f'<text x="{width - pad_r + 4}" y="{pad_t + 14 + 14 * i}" style="fill:{colour}" class="legend">'
                   f'{escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def heatmap(rows: Sequence[str], columns: Sequence[datetime], cells: Sequence[Sequence[dict | None]], *,
            links: Sequence[str] | None = None, width: int = 760) -> str:
    """Rows (features) × columns (windows) of drift reports: red where the feature drifted, paler the further
    from its threshold it stayed."""
    if not rows or not columns:
        return _empty("heatmap", "no monitoring windows yet", width, 120)
    label_w, top = 150, 22
    cell_w = max(4.0, (width - label_w - 10) / len(columns))
    cell_h = 18
    height = top + cell_h * len(rows) + 22
    out = [f'<svg class="chart heatmap" data-points="{len(rows) * len(columns)}" width="100%" '
           f'viewBox="0 0 {width} {height}" preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">']
    out.append(f'<text x="{label_w}" y="14" class="axis">{columns[0]:%Y-%m-%d %H:%M}</text>'
               f'<text x="{width - 10}" y="14" text-anchor="end" class="axis">{columns[-1]:%Y-%m-%d %H:%M}</text>')
    for r, name in enumerate(rows):
        y = top + r * cell_h
        label = f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end" class="label">{escape(name)}</text>'
        out.append(f'<a href="{escape(links[r])}" class="feature-link">{label}</a>' if links else label)
        for c, end in enumerate(columns):
            cell = cells[r][c]
            fill, text = _heat(cell)
            out.append(f'<rect x="{label_w + c * cell_w:.1f}" y="{y}" width="{max(cell_w - 1, 1):.1f}" height="{cell_h - 2}" '
                       f'fill="{fill}"><title>{escape(name)} · window ending {end:%Y-%m-%d %H:%M}: {escape(text)}</title></rect>')
    out.append(f'<text x="{label_w}" y="{height - 6}" class="axis">pale: no drift (darker: nearer the threshold) · '
               f'red: drifted · grey: no data</text></svg>')
    return "".join(out)


def _heat(cell: dict | None) -> tuple[str, str]:
    """A drift cell's colour and tooltip from its report: the test's own decision, then how close it came."""
    if not cell or cell.get("statistic") is None:
        return "#eceff1", "no data"
    statistic, threshold, p = cell["statistic"], cell.get("threshold") or 0.1, cell.get("p_value")
    closeness = min(threshold / max(p, 1e-12), 1.0) if p is not None else min(max(statistic, 0.0) / threshold, 1.0)
    text = f"{cell.get('method')} {statistic:.3f}" + (f", p {p:.3g}" if p is not None else "") + f" (threshold {threshold:g})"
    if cell.get("drifted"):
        over = 1.0 if p is not None else min(statistic / threshold - 1.0, 1.0)
        return f"rgb({int(215 - 80 * over)},{int(48 - 30 * over)},{int(39 - 25 * over)})", text + ": drifted"
    return f"rgb(255,{int(250 - 110 * closeness)},{int(240 - 200 * closeness)})", text


def paired_bars(labels: Sequence[str], reference: Sequence[float], current: Sequence[float], *, width: int = 760,
                height: int = 240) -> str:
    """Two distributions side by side per bin: the reference (training data) and the current window."""
    if not labels:
        return _empty("bars", "no values", width, height)
    pad_l, pad_b, pad_t = 40, 48, 24
    top = max(max(reference, default=0), max(current, default=0)) or 1.0
    slot = (width - pad_l - 10) / len(labels)
    bar = max(slot * 0.4, 1.0)
    out = [f'<svg class="chart bars" data-points="{2 * len(labels)}" width="100%" viewBox="0 0 {width} {height}" '
           f'preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">',
           f'<text x="{pad_l}" y="14" style="fill:{PALETTE[0]}" class="legend">■ reference (training data)</text>'
           f'<text x="{pad_l + 220}" y="14" style="fill:{PALETTE[1]}" class="legend">■ current window</text>']
    for i, label in enumerate(labels):
        x = pad_l + i * slot
        for j, (share, colour) in enumerate(((reference[i], PALETTE[0]), (current[i], PALETTE[1]))):
            h = share / top * (height - pad_t - pad_b)
            out.append(f'<rect x="{x + j * bar:.1f}" y="{height - pad_b - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                       f'fill="{colour}"><title>{escape(label)}: {share:.1%}</title></rect>')
        if len(labels) <= 24 or i % max(len(labels) // 12, 1) == 0:
            out.append(f'<text x="{x + bar:.1f}" y="{height - pad_b + 14}" text-anchor="middle" class="axis">'
                       f'{escape(label[:12])}</text>')
    out.append("</svg>")
    return "".join(out)


def flow(nodes: Sequence[tuple[str, str, str | None]], *, width: int = 760) -> str:
    """Boxes left to right joined by arrows: (title, detail, link) each (lineage: data ▸ run ▸ version ▸ deployment)."""
    if not nodes:
        return _empty("flow", "no lineage", width, 80)
    gap = 28
    box = (width - gap * (len(nodes) - 1)) / len(nodes)
    height = 78
    out = [f'<svg class="chart flow" data-points="{len(nodes)}" width="100%" viewBox="0 0 {width} {height}" '
           f'preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#5f6368"/></marker></defs>']
    for i, (title, detail, link) in enumerate(nodes):
        x = i * (box + gap)
        inner = (f'<rect x="{x:.1f}" y="8" width="{box:.1f}" height="58" rx="6" class="node"/>'
                 f'<text x="{x + 10:.1f}" y="30" class="node-title">{escape(title)}</text>'
                 f'<text x="{x + 10:.1f}" y="50" class="node-detail">{escape(detail[:26])}</text>')
        out.append(f'<a href="{escape(link)}">{inner}</a>' if link else inner)
        if i < len(nodes) - 1:
            out.append(f'<line x1="{x + box + 2:.1f}" y1="37" x2="{x + box + gap - 2:.1f}" y2="37" stroke="#5f6368" '
                       f'stroke-width="1.5" marker-end="url(#arrow)"/>')
    out.append("</svg>")
    return "".join(out)


# --- the drift report: both distributions of a feature on the same axes -------------------------

REPORT_WIDTH, REPORT_HEIGHT, REPORT_PAD = 560, 190, 34
REFERENCE_COLOUR, CURRENT_COLOUR = "#4c78a8", "#f58518"


def overlaid_histograms(reference_shares: Sequence[float], current_shares: Sequence[float], low: float,
                        high: float) -> str:
    """Two histograms on the same bins between ``low`` and ``high``, half transparent, reference under current."""
    width, height, pad = REPORT_WIDTH, REPORT_HEIGHT, REPORT_PAD
    top = float(max(max(reference_shares), max(current_shares), 1e-12))
    inner_w, inner_h = width - 2 * pad, height - 2 * pad
    step = inner_w / len(reference_shares)
    bars = []
    for shares, colour in ((reference_shares, REFERENCE_COLOUR), (current_shares, CURRENT_COLOUR)):
        for i, share in enumerate(shares):
            if share <= 0:
                continue
            h = inner_h * share / top
            bars.append(
                f"<rect x='{pad + i * step:.1f}' y='{pad + inner_h - h:.1f}' width='{step:.1f}' height='{h:.1f}' "
                f"fill='{colour}' fill-opacity='0.5'/>"
            )
    labels = (
        f"<text x='{pad}' y='{height - 10}'>{escape(f'{low:.3g}')}</text>"
        f"<text x='{width - pad}' y='{height - 10}' text-anchor='end'>{escape(f'{high:.3g}')}</text>"
        f"<text x='{pad - 4}' y='{pad + 4}' text-anchor='end'>{top:.0%}</text>"
    )
    return _report_svg("".join(bars) + _report_axes() + labels)


def category_bars(names: Sequence[str], reference_shares: Sequence[float], current_shares: Sequence[float]) -> str:
    """Reference and current share of each category side by side, in the order given; long names cut to 10."""
    width, height, pad = REPORT_WIDTH, REPORT_HEIGHT, REPORT_PAD
    top = float(max(max(reference_shares), max(current_shares), 1e-12))
    inner_w, inner_h = width - 2 * pad, height - 2 * pad
    slot = inner_w / len(names)
    bar = slot * 0.4
    parts = []
    for i, name in enumerate(names):
        x = pad + i * slot + slot * 0.1
        for j, (share, colour) in enumerate(((reference_shares[i], REFERENCE_COLOUR), (current_shares[i], CURRENT_COLOUR))):
            h = inner_h * float(share) / top
            parts.append(
                f"<rect x='{x + j * bar:.1f}' y='{pad + inner_h - h:.1f}' width='{bar:.1f}' height='{h:.1f}' fill='{colour}'>"
                f"<title>{escape(name)}: {'reference' if j == 0 else 'current'} {float(share):.1%}</title></rect>"
            )
        label = name if len(name) <= 10 else name[:9] + "…"
        parts.append(f"<text x='{x + bar:.1f}' y='{height - 12}' text-anchor='middle'>{escape(label)}</text>")
    parts.append(f"<text x='{pad - 4}' y='{pad + 4}' text-anchor='end'>{top:.0%}</text>")
    return _report_svg("".join(parts) + _report_axes())


def _report_axes() -> str:
    bottom = REPORT_HEIGHT - REPORT_PAD
    return (
        f"<line x1='{REPORT_PAD}' y1='{bottom}' x2='{REPORT_WIDTH - REPORT_PAD}' y2='{bottom}' stroke='#999'/>"
        f"<line x1='{REPORT_PAD}' y1='{REPORT_PAD}' x2='{REPORT_PAD}' y2='{bottom}' stroke='#999'/>"
    )


def _report_svg(body: str) -> str:
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{REPORT_WIDTH}' height='{REPORT_HEIGHT}' "
        f"viewBox='0 0 {REPORT_WIDTH} {REPORT_HEIGHT}' role='img'>{body}</svg>"
    )


# --- the maturity assessment: levels reached, and how they moved -------------------------------


def ladder(rows: Sequence[tuple[str, str, int | None]], *, top: int, colour: str, label: str) -> str:
    """One row per dimension, one cell per level 0..``top``, filled up to the level reached.

    ``rows`` are (label shown, name in the tooltip, level reached or None for
    "not assessed"); ``label`` is the chart's accessible name.
    """
    cell, gap, label_w, top_pad = 40, 4, 110, 18
    width = label_w + (top + 1) * (cell + gap)
    height = top_pad + len(rows) * 30 + 4
    parts = [f'<svg class="ladder" role="img" aria-label="{escape(label)}" '
             f'width="100%" viewBox="0 0 {width} {height}" style="max-width:{width}px" preserveAspectRatio="xMinYMin meet" '
             f'xmlns="http://www.w3.org/2000/svg">']
    for level in range(top + 1):
        x = label_w + level * (cell + gap)
        parts.append(f'<text x="{x + cell / 2}" y="12" text-anchor="middle" class="axis">{level}</text>')
    for row, (shown, name, reached_level) in enumerate(rows):
        y = top_pad + row * 30
        parts.append(f'<text x="0" y="{y + 16}" class="dim">{escape(shown)}</text>')
        for level in range(top + 1):
            x = label_w + level * (cell + gap)
            reached = reached_level is not None and level <= reached_level
            fill = colour if reached else "#eceff1"
            title = f"{name}: level {level} {'reached' if reached else 'not reached'}"
            parts.append(f'<rect x="{x}" y="{y}" width="{cell}" height="22" rx="3" fill="{fill}">'
                         f'<title>{escape(title)}</title></rect>')
        if reached_level is None:
            parts.append(f'<text x="{label_w + 6}" y="{y + 16}" class="na">not assessed</text>')
    parts.append("</svg>")
    return "".join(parts)


def level_history(times: Sequence[str], lines: Sequence[tuple[str, str, int, Sequence[int | None]]]) -> str:
    """Each line's level at each time, as a share of its top level, from ``times[0]`` to ``times[-1]``.

    ``lines`` are (name, colour, top level, level at each time or None where
    not assessed). Each line is drawn 3 px below the one before, so lines at
    equal levels stay visible.
    """
    width, height, pad = 640, 200, 30
    n = len(times)
    parts = [f'<svg class="history" role="img" aria-label="levels over time" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
             f'<line x1="{pad}" y1="{height - pad}" x2="{width - 10}" y2="{height - pad}" stroke="#999"/>']
    for offset, (name, colour, top, levels) in enumerate(lines):
        points = []
        for i, level in enumerate(levels):
            if level is None:
                continue
            x = pad + (i * (width - pad - 20) / max(n - 1, 1))
            y = (height - pad) - (level / top) * (height - 2 * pad) + offset * 3
            points.append(f"{x:.1f},{y:.1f}")
        if points:
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2.5" points="{" ".join(points)}">'
                         f'<title>{escape(name)}</title></polyline>')
    parts.append(f'<text x="{pad}" y="{height - 8}" class="axis">{escape(times[0])}</text>')
    parts.append(f'<text x="{width - 10}" y="{height - 8}" text-anchor="end" class="axis">{escape(times[-1])}</text>')
    parts.append(f'<text x="{pad - 4}" y="{pad + 4}" text-anchor="end" class="axis">top</text>')
    parts.append(f'<text x="{pad - 4}" y="{height - pad}" text-anchor="end" class="axis">0</text>')
    parts.append("</svg>")
    return "".join(parts)
