"""Pictures for the benches: line charts as hand-written SVG, so no plotting library is needed.

A `Figure` is panels stacked top to bottom; a `Panel` has a linear or logarithmic x axis,
a linear y axis, lines (straight or as steps), vertical reference lines and marks (a
small cross at each x, for events such as a lost probe), and a legend. `Figure.svg()`
is the whole picture as text; any browser or image viewer shows it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")
FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"'


@dataclass
class _Line:
    points: list[tuple[float, float]]
    label: str
    color: str
    step: bool
    dash: str


@dataclass
class _Marks:
    xs: list[float]
    y: float
    label: str
    color: str


@dataclass
class _VLine:
    x: float
    label: str
    color: str


@dataclass
class Panel:
    title: str
    x_label: str
    y_label: str
    x_log: bool = False
    y_max: float | None = None
    legend: str = "top-left"  # or "bottom-right": where the lines leave room
    lines: list[_Line] = field(default_factory=list)
    marks: list[_Marks] = field(default_factory=list)
    vlines: list[_VLine] = field(default_factory=list)

    def line(
        self,
        points: list[tuple[float, float]],
        label: str,
        color: str,
        *,
        step: bool = False,
        dash: str = "",
    ) -> None:
        self.lines.append(_Line(sorted(points), label, color, step, dash))

    def mark(self, xs: list[float], y: float, label: str, color: str) -> None:
        self.marks.append(_Marks(sorted(xs), y, label, color))

    def vline(self, x: float, label: str, color: str) -> None:
        self.vlines.append(_VLine(x, label, color))

    # -- drawing ---------------------------------------------------------------------------

    def _xs(self) -> list[float]:
        xs = [x for ln in self.lines for x, _ in ln.points]
        xs += [x for m in self.marks for x in m.xs] + [v.x for v in self.vlines]
        return [x for x in xs if x > 0] if self.x_log else xs

    def _x_range(self) -> tuple[float, float]:
        xs = self._xs() or [1.0]
        if self.x_log:
            return nice_floor(min(xs)), nice_ceiling(max(xs), steps=(1, 2, 5, 10))
        high = max(xs)
        return 0.0, nice_ceiling(high if high > 0 else 1.0)

    def _y_range(self) -> tuple[float, float]:
        if self.y_max is not None:
            return 0.0, self.y_max
        ys = [y for ln in self.lines for _, y in ln.points] or [1.0]
        return 0.0, nice_ceiling(max(max(ys), 1e-9))

    def svg(self, left: float, top: float, width: float, height: float) -> list[str]:
        """The panel's elements in the box (left, top, width, height) of the figure."""
        x0, x1 = self._x_range()
        y0, y1 = self._y_range()
        px, py, pw, ph = left + 64, top + 28, width - 64 - 16, height - 28 - 44

        def sx(x: float) -> float:
            if self.x_log:
                span = math.log10(x1) - math.log10(x0)
                return px + pw * (math.log10(max(x, x0)) - math.log10(x0)) / span
            return px + pw * (x - x0) / (x1 - x0)

        def sy(y: float) -> float:
            return py + ph - ph * (y - y0) / (y1 - y0)

        out = [
            f'<text x="{px}" y="{top + 18}" font-size="14" font-weight="bold" {FONT}>'
            f"{escape(self.title)}</text>",
            f'<rect x="{px}" y="{py}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>',
        ]
        out += self._axes(sx, sy, (x0, x1), (y0, y1), (px, py, pw, ph))
        for v in self.vlines:
            out.append(
                f'<line x1="{sx(v.x):.1f}" y1="{py}" x2="{sx(v.x):.1f}" y2="{py + ph}" '
                f'stroke="{v.color}" stroke-dasharray="4 3"/>'
            )
        for ln in self.lines:
            pts = _step_points(ln.points) if ln.step else ln.points
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
            dash = f' stroke-dasharray="{ln.dash}"' if ln.dash else ""
            out.append(
                f'<polyline points="{path}" fill="none" stroke="{ln.color}" stroke-width="2"{dash}/>'
            )
        for m in self.marks:
            y = sy(m.y)
            for x in m.xs:
                cx = sx(x)
                out.append(
                    f'<path d="M{cx - 4:.1f},{y - 4:.1f} L{cx + 4:.1f},{y + 4:.1f} '
                    f'M{cx - 4:.1f},{y + 4:.1f} L{cx + 4:.1f},{y - 4:.1f}" '
                    f'stroke="{m.color}" stroke-width="2"/>'
                )
        entries = self._entries()
        if self.legend == "bottom-right":
            width = 34 + 6.5 * max((len(label) for label, _, _ in entries), default=0)
            out += self._legend(entries, px + pw - width - 8, py + ph - 12 - 16 * len(entries))
        else:
            out += self._legend(entries, px + 8, py + 8)
        return out

    def _axes(
        self,
        sx: Callable[[float], float],
        sy: Callable[[float], float],
        xr: tuple[float, float],
        yr: tuple[float, float],
        box: tuple[float, float, float, float],
    ) -> list[str]:
        px, py, pw, ph = box
        out = []
        x_ticks = log_ticks(*xr) if self.x_log else linear_ticks(*xr)
        for t in x_ticks:
            x = sx(t)
            out.append(f'<line x1="{x:.1f}" y1="{py}" x2="{x:.1f}" y2="{py + ph}" stroke="#eee"/>')
            out.append(
                f'<text x="{x:.1f}" y="{py + ph + 16}" font-size="11" text-anchor="middle" '
                f"{FONT}>{fmt(t)}</text>"
            )
        for t in linear_ticks(*yr):
            y = sy(t)
            out.append(f'<line x1="{px}" y1="{y:.1f}" x2="{px + pw}" y2="{y:.1f}" stroke="#eee"/>')
            out.append(
                f'<text x="{px - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" '
                f"{FONT}>{fmt(t)}</text>"
            )
        out.append(
            f'<text x="{px + pw / 2}" y="{py + ph + 34}" font-size="12" text-anchor="middle" '
            f"{FONT}>{escape(self.x_label)}</text>"
        )
        out.append(
            f'<text x="{px - 48}" y="{py + ph / 2}" font-size="12" text-anchor="middle" '
            f'transform="rotate(-90 {px - 48} {py + ph / 2})" {FONT}>{escape(self.y_label)}</text>'
        )
        return out

    def _entries(self) -> list[tuple[str, str, str]]:
        """(label, color, dash or "mark") of everything drawn that has a label."""
        entries = [(ln.label, ln.color, ln.dash) for ln in self.lines]
        entries += [(m.label, m.color, "mark") for m in self.marks]
        entries += [(v.label, v.color, "4 3") for v in self.vlines]
        return [e for e in entries if e[0]]

    def _legend(self, entries: list[tuple[str, str, str]], x: float, y: float) -> list[str]:
        # A pale box behind the legend, so that a line passing under it does not hide it.
        width = 34 + 6.5 * max((len(label) for label, _, _ in entries), default=0)
        out = [
            f'<rect x="{x}" y="{y}" width="{width:.0f}" height="{16 * len(entries) + 4}" '
            'fill="white" fill-opacity="0.85"/>'
        ]
        for i, (label, color, kind) in enumerate(entries):
            ly = y + 8 + 16 * i
            if kind == "mark":
                out.append(
                    f'<path d="M{x + 6},{ly - 4} L{x + 14},{ly + 4} M{x + 6},{ly + 4} '
                    f'L{x + 14},{ly - 4}" stroke="{color}" stroke-width="2"/>'
                )
            else:
                dash = f' stroke-dasharray="{kind}"' if kind else ""
                out.append(
                    f'<line x1="{x}" y1="{ly}" x2="{x + 20}" y2="{ly}" stroke="{color}" '
                    f'stroke-width="2"{dash}/>'
                )
            out.append(
                f'<text x="{x + 26}" y="{ly + 4}" font-size="11" {FONT}>{escape(label)}</text>'
            )
        return out


@dataclass
class Figure:
    title: str
    panels: list[Panel]
    width: int = 860
    panel_height: int = 300
    note: str = ""

    def svg(self) -> str:
        head = 34
        foot = 22 if self.note else 6
        height = head + self.panel_height * len(self.panels) + foot
        parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{height}" '
            f'viewBox="0 0 {self.width} {height}">',
            f'<rect width="{self.width}" height="{height}" fill="white"/>',
            f'<text x="12" y="22" font-size="16" font-weight="bold" {FONT}>'
            f"{escape(self.title)}</text>",
        ]
        for i, panel in enumerate(self.panels):
            parts += panel.svg(0, head + i * self.panel_height, self.width, self.panel_height)
        if self.note:
            parts.append(
                f'<text x="12" y="{height - 8}" font-size="11" fill="#555" {FONT}>'
                f"{escape(self.note)}</text>"
            )
        parts.append("</svg>")
        return "\n".join(parts) + "\n"


def _step_points(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """A step line: each value holds until the next x."""
    out: list[tuple[float, float]] = []
    for x, y in points:
        if out:
            out.append((x, out[-1][1]))
        out.append((x, y))
    return out


def nice_ceiling(value: float, steps: tuple[float, ...] = (1, 2, 2.5, 5, 10)) -> float:
    """The smallest of `steps` times a power of ten that is at least `value`."""
    power = 10.0 ** math.floor(math.log10(value))
    for m in steps:
        if m * power >= value * (1 - 1e-9):
            return m * power
    return 10 * power


def nice_floor(value: float) -> float:
    """The largest of 1, 2, 5 times a power of ten that is at most `value`."""
    power = 10.0 ** math.floor(math.log10(value))
    return max(m * power for m in (1, 2, 5) if m * power <= value * (1 + 1e-9))


def linear_ticks(low: float, high: float) -> list[float]:
    step = nice_ceiling((high - low) / 5)
    n = math.floor((high - low) / step + 1e-9)
    return [low + i * step for i in range(n + 1)]


def log_ticks(low: float, high: float) -> list[float]:
    """1, 2, 5 times each power of ten from `low` to `high`."""
    ticks, decade = [], 10.0 ** math.floor(math.log10(low))
    while decade <= high * (1 + 1e-9):
        ticks += [
            decade * m for m in (1, 2, 5) if low * (1 - 1e-9) <= decade * m <= high * (1 + 1e-9)
        ]
        decade *= 10
    return ticks


def fmt(value: float) -> str:
    return f"{value:g}"


def ecdf(values: list[float]) -> list[tuple[float, float]]:
    """The empirical distribution as step points: (value, fraction of values <= it), from 0."""
    ordered = sorted(values)
    n = len(ordered)
    return [(ordered[0], 0.0), *((v, (i + 1) / n) for i, v in enumerate(ordered))] if n else []
