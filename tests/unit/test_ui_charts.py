"""The dashboard's SVG charts: what they draw from given numbers (pure functions)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from rung import charts

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _points(svg: str) -> int:
    return int(re.search(r'data-points="(\d+)"', svg).group(1))  # type: ignore[union-attr]


def test_a_line_chart_draws_each_point_its_reference_and_legend() -> None:
    series = [("v1 live", [(T0 + timedelta(hours=h), 0.8 + h / 100) for h in range(5)]),
              ("v2 live", [(T0 + timedelta(hours=h), 0.7) for h in range(3)])]
    svg = charts.line_chart(series, reference=0.78, reference_label="training")
    assert _points(svg) == 8 and svg.count("<circle") == 8 and svg.count("<polyline") == 2
    assert "training: 0.78" in svg and "v2 live" in svg
    assert "empty" in charts.line_chart([], empty="nothing") and "nothing" in charts.line_chart([], empty="nothing")


def test_heatmap_cells_follow_the_tests_own_decision() -> None:
    ends = [T0, T0 + timedelta(days=1)]
    calm = {"statistic": 0.02, "threshold": 0.1, "p_value": None, "drifted": False, "method": "wasserstein"}
    drifted = {"statistic": 0.3, "threshold": 0.1, "p_value": None, "drifted": True, "method": "wasserstein"}
    by_p = {"statistic": 12.0, "threshold": 0.05, "p_value": 0.001, "drifted": True, "method": "chisquare"}
    svg = charts.heatmap(["a", "b"], ends, [[calm, drifted], [None, by_p]], links=["/f/a", "/f/b"])
    fills = re.findall(r'<rect [^>]*fill="([^"]+)"', svg)
    assert len(fills) == 4 and _points(svg) == 4
    calm_fill, drifted_fill, missing_fill, p_fill = fills
    assert calm_fill.startswith("rgb(255,") and missing_fill == "#eceff1"
    assert int(drifted_fill[4:].split(",")[0]) < 255 and int(p_fill[4:].split(",")[0]) < 255  # red, not pale
    assert "wasserstein 0.300 (threshold 0.1): drifted" in svg and "p 0.001" in svg
    assert svg.count('class="feature-link"') == 2 and 'href="/f/b"' in svg


def test_paired_bars_and_flow() -> None:
    bars = charts.paired_bars(["a", "b", "c"], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5])
    assert _points(bars) == 6 and bars.count("<rect") == 6 and "a: 50.0%" in bars
    flow = charts.flow([("data", "abc", None), ("run", "r1", "http://mlflow/run"), ("version", "churn:2", None)])
    assert _points(flow) == 3 and flow.count("marker-end") == 2 and 'href="http://mlflow/run"' in flow
    assert "<script" not in bars + flow


def test_the_reports_charts_escape_their_labels_and_are_well_formed() -> None:
    from xml.etree import ElementTree

    hist = charts.overlaid_histograms([0.0, 0.25, 0.75], [0.5, 0.5, 0.0], -1.0, 2.0)
    assert hist.count("<rect") == 4 and ">-1<" in hist and ">2<" in hist  # empty bins are not drawn
    bars = charts.category_bars(["a<b>", "it's a long name"], [0.6, 0.4], [0.1, 0.9])
    assert "a&lt;b&gt;: reference 60.0%" in bars and "it&#x27;s a lo…" in bars
    ladder = charts.ladder([("level", "overall", 1), ("x & y", "x & y", None)], top=3, colour="#000",
                           label='"quoted" model: 1')
    assert ladder.count("<rect") == 8 and ladder.count('fill="#000"') == 2 and "not assessed" in ladder
    assert 'aria-label="&quot;quoted&quot; model: 1"' in ladder and "x &amp; y: level 0 not reached" in ladder
    history = charts.level_history(["2026-01-01", "2026-02-01 <b>"], [("a<", "#111", 4, [1, 2]), ("b", "#222", 2, [None, None])])
    assert history.count("<polyline") == 1 and "<title>a&lt;</title>" in history and "2026-02-01 &lt;b&gt;" in history
    for svg in (hist, bars, ladder, history):
        ElementTree.fromstring(svg)
