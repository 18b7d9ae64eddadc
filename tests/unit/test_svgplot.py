"""bench/svgplot.py, the benches' pictures: valid SVG with what was drawn in it, and its scales."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from svgplot import (
    Figure,
    Panel,
    ecdf,
    linear_ticks,
    log_ticks,
    nice_ceiling,
    nice_floor,
)

SVG = "{http://www.w3.org/2000/svg}"


def test_a_figure_is_svg_with_a_line_per_series_and_a_cross_per_mark() -> None:
    top = Panel("switched", "s", "pods", y_max=20)
    top.line([(0.0, 0.0), (1.0, 5.0), (2.5, 20.0)], "pods switched", "#1f77b4", step=True)
    top.mark([0.7, 1.2, 1.3], 0.0, "a lost probe", "#d62728")
    top.vline(1.8, "floor", "#555")
    bottom = Panel("latency", "ms", "fraction", x_log=True, y_max=1.0)
    bottom.line(ecdf([3.0, 5.0, 40.0]), "adds", "#ff7f0e", step=True, dash="5 3")
    root = ET.fromstring(Figure("title & <more>", [top, bottom], note="n").svg())
    assert root.tag == f"{SVG}svg"
    lines = root.findall(f"{SVG}polyline")
    assert len(lines) == 2
    # A step line holds each value until the next x: 3 points become 5.
    assert len(lines[0].get("points", "").split()) == 5
    crosses = [p for p in root.findall(f"{SVG}path") if p.get("stroke") == "#d62728"]
    assert len(crosses) == 3 + 1  # the marks and the legend's
    texts = {t.text for t in root.iter(f"{SVG}text")}
    assert {"title & <more>", "a lost probe", "floor", "pods switched", "adds"} <= texts
    assert {"2", "5", "10", "20", "50"} <= texts  # the log axis around 3..40 ms


def test_scales_and_the_distribution() -> None:
    assert [nice_ceiling(v) for v in (0.7, 3, 7.5, 12, 2.2)] == [1, 5, 10, 20, 2.5]
    assert linear_ticks(0, 20) == [0, 5, 10, 15, 20]
    assert log_ticks(1, 100) == [1, 2, 5, 10, 20, 50, 100]
    assert log_ticks(5, 200) == [5, 10, 20, 50, 100, 200]
    assert [nice_floor(v) for v in (8.7, 25, 0.3)] == [5, 20, 0.2]
    assert ecdf([2.0, 1.0]) == [(1.0, 0.0), (1.0, 0.5), (2.0, 1.0)]
    assert ecdf([]) == []
