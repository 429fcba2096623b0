"""The report's inline SVG charts."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from evaluator import svg_charts

SVG = "{http://www.w3.org/2000/svg}"


def bar_titles(svg: str) -> list[str]:
    root = ET.fromstring(svg)  # well-formed XML, or this raises
    return [r.find(f"{SVG}title").text for r in root.iter(f"{SVG}rect")]


def test_histogram_counts_each_value_in_its_bin():
    svg = svg_charts.histogram([0, 4.9, 5, 99, 100, 100, -3], 0, 100, 20, "Scores", "score /100")
    titles = bar_titles(svg)
    assert len(titles) == 20
    # Out-of-range values are clamped; the top edge belongs to the last bin.
    assert titles[0] == "0-5: 3" and titles[1] == "5-10: 1" and titles[-1] == "95-100: 3"
    assert sum(int(t.rsplit(": ", 1)[1]) for t in titles) == 7


def test_bars_escape_labels_and_keep_their_order():
    svg = svg_charts.hbars(["<script>x</script>", "b&c"], [12.5, 80], 0, 100, "Per question", "mean")
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert bar_titles(svg) == ["<script>x</script>: 12.5", "b&c: 80"]
    widths = [float(w) for w in re.findall(r'<rect [^>]*width="([0-9.]+)"', svg)]
    assert widths[1] / widths[0] == pytest.approx(80 / 12.5, rel=1e-3)
