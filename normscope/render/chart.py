"""The line charts of the series pages: hand-written SVG, each in a `<figure>` with its title
as the `<figcaption>` (issue 26: a title that was a sibling in a wrapping row sat by the wrong
chart).

A chart is values against the checkpoints' steps: ticks at round numbers (1, 2, 2.5 or 5 × 10ᵏ)
inside the data's range, both axes titled, the band regions of the ratio shaded in the legend's
diverging colours with the collapse/explosion edges dashed (as `series --plot` draws them), a
marker with its full value per point up to `MAX_MARKERS` points (a 600-checkpoint run draws
lines only: the page stays small), and a key when a chart has several lines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from normscope.enums import Band
from normscope.render.html import BAND_FILL, SVG, data_value
from normscope.render.series_text import fmt_step
from normscope.schema import Thresholds

MAX_MARKERS = 60
"""Up to this many points a line gets a marker each (hover: its value); beyond, the line only."""
LINE_COLOURS = ("#222222", "#ef6c00", "#6a1b9a", "#00838f", "#ad1457", "#558b2f")
"""Dark first: the band regions are tinted blue and red, the lines must not be."""


@dataclass(frozen=True, slots=True)
class Chart:
    """One chart: lines of values at the checkpoints' steps."""

    chart_id: str
    title: str
    y_title: str
    steps: Sequence[int]
    lines: Sequence[tuple[str, Sequence[float | None]]]
    thresholds: Thresholds | None = None
    """The ratio's bands, shaded behind the lines; None for losses and gaps."""


@dataclass(frozen=True, slots=True)
class _Frame:
    """Where a (step, value) lands: the axes' ranges inside the SVG's pixels."""

    lo: float
    hi: float
    s0: float
    s1: float
    width: int = 560
    height: int = 270
    left: int = 66
    right: int = 26
    top: int = 10
    bottom: int = 48

    def x(self, s: float) -> float:
        inner = self.width - self.left - self.right
        return self.left + (s - self.s0) / (self.s1 - self.s0) * inner

    def y(self, v: float) -> float:
        return self.top + (self.hi - v) / (self.hi - self.lo) * (
            self.height - self.top - self.bottom
        )


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """At most `count` ticks in [lo, hi] at a round spacing: 1, 2, 2.5 or 5 × 10ᵏ."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    spacing = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / spacing - 1e-9)
    ticks = []
    k = first
    while k * spacing <= hi + spacing * 1e-9:
        ticks.append(round(k * spacing, 12))
        k += 1
    return ticks


def tick_labels(ticks: Sequence[float]) -> list[str]:
    """The ticks with as many decimals as their spacing needs, the same for all of them."""
    if len(ticks) < 2:
        return [f"{t:g}" for t in ticks]
    spacing = ticks[1] - ticks[0]
    decimals = max(0, -math.floor(math.log10(spacing) + 1e-9))
    if round(spacing / 10 ** math.floor(math.log10(spacing) + 1e-9), 6) == 2.5:
        decimals += 1
    return [f"{t:.{decimals}f}" for t in ticks]


def step_ticks(s0: int, s1: int) -> tuple[list[int], list[str]]:
    """Round steps inside [s0, s1] and their labels (`4k` from 10,000 on, as the tables say)."""
    ticks = sorted({int(t) for t in nice_ticks(s0, s1) if float(t).is_integer()}) or [s0]
    compact = max(abs(s0), abs(s1)) >= 10_000
    return ticks, [fmt_step(t) if compact else str(t) for t in ticks]


def figure(chart: Chart) -> str:
    """`<figure>`: the title as caption, the key (several lines), the SVG; '' if nothing to draw."""
    frame = _frame(chart)
    if frame is None:
        return ""
    f = frame
    out = [
        f'<figure class="chart" id="fig-{chart.chart_id}"><figcaption>{escape(chart.title)}'
        f"</figcaption>{_keys(chart)}"
        f'<svg class="trend" id="{chart.chart_id}" xmlns="{SVG}" viewBox="0 0 {f.width} '
        f'{f.height}" width="{f.width}" height="{f.height}" font-size="13" '
        f'font-family="sans-serif" role="img" aria-label="{escape(chart.title)}">'
    ]
    if chart.thresholds is not None:
        out += _bands(f, chart.thresholds)
    out += _axes(f, chart)
    for index, (label, values) in enumerate(chart.lines):
        out += _line(f, index, label, chart.steps, values)
    out.append("</svg></figure>")
    return "\n".join(out)


def charts(figures: Sequence[str]) -> str:
    """Figures side by side, as many per row as the page holds."""
    return '<div class="charts">' + "".join(figures) + "</div>"


def _frame(chart: Chart) -> _Frame | None:
    """The value range (widened to the collapse/explosion edges when banded, padded)."""
    finite = [v for _, vs in chart.lines for v in vs if v is not None and math.isfinite(v)]
    if not finite or not chart.steps:
        return None
    lo, hi = min(finite), max(finite)
    if chart.thresholds is not None:
        lo, hi = min(lo, chart.thresholds.low), max(hi, chart.thresholds.high)
    pad = (hi - lo) * 0.06 or max(abs(hi) * 0.1, 0.5)
    s0, s1 = min(chart.steps), max(chart.steps)
    if s0 == s1:
        s0, s1 = s0 - 1, s1 + 1
    return _Frame(lo - pad, hi + pad, s0, s1)


def _bands(f: _Frame, th: Thresholds) -> list[str]:
    """The five band regions tinted, the collapse/explosion edges dashed, each region named."""
    edges = [f.lo, th.low, th.balanced_low, th.balanced_high, th.high, f.hi]
    bands = (Band.collapse, Band.shrink, Band.balanced, Band.grow, Band.explosion)
    inner = f.width - f.left - f.right
    out = []
    for b, below, above in zip(bands, edges, edges[1:], strict=False):
        bottom, top = max(below, f.lo), min(above, f.hi)
        if top <= bottom:
            continue
        y0, y1 = f.y(top), f.y(bottom)
        opacity = 0.55 if b is Band.balanced else 0.28
        out.append(
            f'<rect class="band-{b.value}" x="{f.left}" y="{y0:.1f}" width="{inner}" '
            f'height="{y1 - y0:.1f}" fill="{BAND_FILL[b]}" fill-opacity="{opacity}"/>'
        )
        if y1 - y0 >= 16 and b not in (Band.collapse, Band.explosion):
            out.append(_region_label(f, (y0 + y1) / 2 + 4, b.value))
    # The edges of the out-of-band regions: dashed, named on their side (those regions can be
    # too thin for a name); the balanced band's edges dotted.
    if f.lo < th.high < f.hi:
        out += [
            _hline(f, th.high, "6 3"),
            _region_label(f, f.y(th.high) - 4, f"explosion > {th.high:g}"),
        ]
    if f.lo < th.low < f.hi:
        out += [
            _hline(f, th.low, "6 3"),
            _region_label(f, f.y(th.low) + 13, f"collapse < {th.low:g}"),
        ]
    out += [_hline(f, e, "2 3") for e in (th.balanced_low, th.balanced_high) if f.lo < e < f.hi]
    return out


def _region_label(f: _Frame, y: float, text: str) -> str:
    return (
        f'<text class="region" x="{f.width - f.right - 6}" y="{y:.1f}" text-anchor="end" '
        f'font-size="11" fill="#444">{escape(text)}</text>'
    )


def _hline(f: _Frame, value: float, dash: str) -> str:
    return (
        f'<line class="edge" x1="{f.left}" x2="{f.width - f.right}" y1="{f.y(value):.1f}" '
        f'y2="{f.y(value):.1f}" stroke="#444" stroke-dasharray="{dash}"/>'
    )


def _axes(f: _Frame, chart: Chart) -> list[str]:
    """Both axes with their round ticks, light grid lines, and the axis titles."""
    bottom, right = f.height - f.bottom, f.width - f.right
    out = []
    y_ticks = nice_ticks(f.lo, f.hi)
    for v, label in zip(y_ticks, tick_labels(y_ticks), strict=True):
        y = f.y(v)
        out.append(
            f'<line x1="{f.left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#000" '
            f'stroke-opacity="0.08"/><text class="tick y" x="{f.left - 6}" y="{y + 4:.1f}" '
            f'text-anchor="end">{label}</text>'
        )
    s0, s1 = min(chart.steps), max(chart.steps)
    for s, label in zip(*step_ticks(s0, s1), strict=True):
        x = f.x(s)
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 5}" stroke="#555"/>'
            f'<text class="tick x" x="{x:.1f}" y="{bottom + 18}" text-anchor="middle">'
            f"{label}</text>"
        )
    mid = (f.top + bottom) / 2
    out.append(
        f'<path d="M{f.left},{f.top}V{bottom}H{right}" fill="none" stroke="#555"/>'
        f'<text class="axis-title x" x="{(f.left + right) / 2:.1f}" y="{f.height - 6}" '
        f'text-anchor="middle">step</text>'
        f'<text class="axis-title y" x="16" y="{mid:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 16 {mid:.1f})">{escape(chart.y_title)}</text>'
    )
    return out


def _dash(index: int) -> str:
    return "6 3" if index % 2 else ""  # lines at one value stay apart


def _keys(chart: Chart) -> str:
    """Which line is which, when a chart has more than one."""
    if len(chart.lines) < 2:
        return ""
    keys = "".join(
        f'<span><i style="border-color:{LINE_COLOURS[i % len(LINE_COLOURS)]};'
        f'border-top-style:{"dashed" if _dash(i) else "solid"}"></i>{escape(label)}</span>'
        for i, (label, _) in enumerate(chart.lines)
    )
    return f'<div class="keys">{keys}</div>'


def _line(
    f: _Frame, index: int, label: str, steps: Sequence[int], values: Sequence[float | None]
) -> list[str]:
    """One line, broken where a value is missing; a marker per point for short runs."""
    colour = LINE_COLOURS[index % len(LINE_COLOURS)]
    dash = f' stroke-dasharray="{_dash(index)}"' if _dash(index) else ""
    segments: list[list[tuple[int, float]]] = [[]]
    for s, v in zip(steps, values, strict=True):
        if v is None or not math.isfinite(v):
            segments.append([])
        else:
            segments[-1].append((s, v))
    out = []
    for segment in (s for s in segments if s):
        path = " ".join(f"{f.x(s):.1f},{f.y(v):.1f}" for s, v in segment)
        out.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} '
            f'data-series="{escape(label)}" points="{path}"/>'
        )
    points = [p for segment in segments for p in segment]
    if len(points) <= MAX_MARKERS:
        out += [
            f'<circle cx="{f.x(s):.1f}" cy="{f.y(v):.1f}" r="3" fill="{colour}" '
            f'data-series="{escape(label)}" data-step="{s}" data-value="{data_value(v)}">'
            f"<title>{escape(label)} at step {s}: {v:.4g}</title></circle>"
            for s, v in points
        ]
    return out
