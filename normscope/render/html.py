"""What every `--format html` page shares: one self-contained page (no network when viewed).

`page` wraps a report's sections with the header facts, the style and the few lines of vanilla
JS that sort a table by a click on its header; `table` and its cells (`num`, `band`, `text`);
`trend_svg`, the hand-written SVG line plot of the series pages. Each report's page is built
beside its other renderers (`scan.py`, `diff.py`, `series.py`, `check.py`, `fold.py`). Measured
against plotly inlined (README, "HTML report"), a scan page is ~20 kB instead of ~4.8 MB and
renders in tens of ms. Every number cell carries its full precision in `data-value` (the text
is rounded for people): tests compare the DOM with the JSON.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from normscope.enums import Band
from normscope.render.common import fmt
from normscope.schema import Thresholds

SVG = "http://www.w3.org/2000/svg"
Cell = tuple[str, float | None, str]
"""(text, full-precision value or None, css class)."""

BAND_COLOUR = {
    Band.collapse: "#c62828",
    Band.shrink: "#b58900",
    Band.balanced: "#2e7d32",
    Band.grow: "#b58900",
    Band.explosion: "#c62828",
    Band.nonfinite: "#8e24aa",
}
HEAT = {
    Band.collapse: "#e57373",
    Band.shrink: "#fff59d",
    Band.balanced: "#a5d6a7",
    Band.grow: "#ffe082",
    Band.explosion: "#ef5350",
    Band.nonfinite: "#ce93d8",
}

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
dl.head{display:grid;grid-template-columns:max-content auto;gap:2px 16px}dt{font-weight:600}
table.data{border-collapse:collapse;margin:8px 0}
table.data th{cursor:pointer;text-align:left;border-bottom:2px solid #888;padding:2px 8px;
user-select:none}
table.data th.sorted-asc::after{content:" ▲"}table.data th.sorted-desc::after{content:" ▼"}
table.data td{padding:2px 8px;border-bottom:1px solid #eee;white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums}td.name{font-family:monospace}
""" + "".join(
    f".b-{b.value}{{color:{c};font-weight:{700 if b.out_of_band else 400}}}"
    for b, c in BAND_COLOUR.items()
)
_JS = """
document.querySelectorAll('table.data').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th,i){th.addEventListener('click',function(){
    var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);
    var asc=!th.classList.contains('sorted-asc');
    t.querySelectorAll('th').forEach(function(h){h.classList.remove('sorted-asc','sorted-desc')});
    th.classList.add(asc?'sorted-asc':'sorted-desc');
    function key(r){var c=r.cells[i],v=c.getAttribute('data-value');
      return v===null?c.textContent:(v===''?NaN:parseFloat(v));}
    rows.sort(function(a,b){var x=key(a),y=key(b);
      if(typeof x==='number'&&typeof y==='number'){
        if(isNaN(x))return 1;if(isNaN(y))return -1;return asc?x-y:y-x;}
      return asc?String(x).localeCompare(String(y)):String(y).localeCompare(String(x));});
    rows.forEach(function(r){body.appendChild(r)});});});});
"""


def page(title: str, head: Sequence[tuple[str, str]], sections: Sequence[str]) -> str:
    """The whole page: the title, the header facts, the sections, the style and the script."""
    facts = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in head)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        f'<h1>{escape(title)}</h1><dl class="head">{facts}</dl>'
        + "".join(sections)
        + f"<script>{_JS}</script></body></html>\n"
    )


def data_value(x: float | None) -> str:
    """A number at full precision for `data-value`; empty for null and non-finite values."""
    return "" if x is None or not math.isfinite(x) else repr(float(x))


def num(x: float | None, digits: int = 3) -> Cell:
    """A number cell: rounded text, the full value for sorting and tests."""
    return (fmt(x, digits), x if x is not None else math.nan, "num")


def band(b: Band) -> Cell:
    """A band cell, coloured as in the terminal."""
    return (b.value, None, f"band b-{b.value}")


def text(s: str, css: str = "") -> Cell:
    """A text cell."""
    return (s, None, css)


def table(table_id: str, title: str, headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> str:
    """A titled table that sorts by a click on a header."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for content, value, css in row:
            attrs = f' class="{css}"' if css else ""
            if value is not None:
                attrs += f' data-value="{data_value(value)}"'
            cells.append(f"<td{attrs}>{escape(content)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<h2>{escape(title)}</h2><table class="data" id="{table_id}">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def warnings_section(warnings: Sequence[str]) -> list[str]:
    """The report's warnings as a list, or no section when there are none."""
    if not warnings:
        return []
    return ["<h2>warnings</h2><ul>" + "".join(f"<li>{escape(w)}</li>" for w in warnings) + "</ul>"]


# --- plots ---


@dataclass(frozen=True, slots=True)
class _Frame:
    """Where a value at a step lands on a line plot: the value range and the steps' span."""

    lo: float
    hi: float
    s0: float
    span: float
    width: int = 640
    height: int = 220
    left: int = 56
    right: int = 12
    top: int = 24
    bottom: int = 36

    def x(self, s: float) -> float:
        return self.left + (s - self.s0) / self.span * (self.width - self.left - self.right)

    def y(self, v: float) -> float:
        return self.top + (self.hi - v) / (self.hi - self.lo) * (
            self.height - self.top - self.bottom
        )


def trend_svg(
    plot_id: str,
    title: str,
    steps: Sequence[int],
    lines: Sequence[tuple[str, Sequence[float | None]]],
    thresholds: Thresholds | None,
) -> str:
    """One SVG line plot: values vs step, the band [low, high] shaded, ticks at the steps."""
    frame = _frame(steps, lines, thresholds)
    if frame is None:
        return ""
    out = [
        f'<h2>{escape(title)}</h2><svg class="trend" id="{plot_id}" xmlns="{SVG}" '
        f'width="{frame.width}" height="{frame.height}" font-size="11" font-family="sans-serif">'
    ]
    out += _axes(frame, steps, thresholds)
    for index, (label, values) in enumerate(lines):
        out += _line(frame, index, label, steps, values)
    out.append("</svg>")
    return "".join(out)


def _frame(
    steps: Sequence[int],
    lines: Sequence[tuple[str, Sequence[float | None]]],
    thresholds: Thresholds | None,
) -> _Frame | None:
    """The value range (widened to show the band's edges) and the steps; None: nothing to draw."""
    finite = [v for _, vs in lines for v in vs if v is not None and math.isfinite(v)]
    if not finite or not steps:
        return None
    lo, hi = min(finite), max(finite)
    if thresholds is not None:
        lo, hi = min(lo, thresholds.low * 0.9), max(hi, min(thresholds.high * 1.1, hi * 1.5 + 0.1))
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    s0, s1 = min(steps), max(steps)
    return _Frame(lo, hi, s0, (s1 - s0) or 1)


def _axes(f: _Frame, steps: Sequence[int], thresholds: Thresholds | None) -> list[str]:
    """The band shaded, step ticks (at most 12) along the bottom, five values up the side."""
    x, y, width, height = f.x, f.y, f.width, f.height
    out = []
    if thresholds is not None:
        band_top, band_bottom = y(min(thresholds.high, f.hi)), y(max(thresholds.low, f.lo))
        out.append(
            f'<rect x="{f.left}" y="{band_top:.1f}" width="{width - f.left - f.right}" '
            f'height="{max(band_bottom - band_top, 0):.1f}" fill="#e8f5e9"/>'
        )
    ticks = (
        [steps[round(i * (len(steps) - 1) / 11)] for i in range(12)] if len(steps) > 12 else steps
    )
    out.extend(
        f'<line x1="{x(s):.1f}" x2="{x(s):.1f}" y1="{height - f.bottom}" '
        f'y2="{height - f.bottom + 4}" stroke="#666"/><text x="{x(s):.1f}" '
        f'y="{height - f.bottom + 16}" text-anchor="middle">{s}</text>'
        for s in dict.fromkeys(ticks)
    )
    for k in range(5):
        v = f.lo + (f.hi - f.lo) * k / 4
        out.append(f'<text x="{f.left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>')
    return out


_LINE_COLOURS = ("#1565c0", "#ef6c00", "#6a1b9a", "#00838f", "#ad1457", "#558b2f")


def _line(
    f: _Frame, index: int, label: str, steps: Sequence[int], values: Sequence[float | None]
) -> list[str]:
    """One series: its polyline, a circle per finite value (with its full value), its label."""
    colour = _LINE_COLOURS[index % len(_LINE_COLOURS)]
    points = [
        (s, v) for s, v in zip(steps, values, strict=True) if v is not None and math.isfinite(v)
    ]
    dash = ' stroke-dasharray="6 3"' if index % 2 else ""  # lines at one value stay apart
    path = " ".join(f"{f.x(s):.1f},{f.y(v):.1f}" for s, v in points)
    out = [f'<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{path}"/>']
    for s, v in points:
        out.append(
            f'<circle cx="{f.x(s):.1f}" cy="{f.y(v):.1f}" r="3" fill="{colour}" '
            f'data-series="{escape(label)}" data-step="{s}" data-value="{data_value(v)}">'
            f"<title>{escape(label)} at step {s}: {v:.4g}</title></circle>"
        )
    out.append(
        f'<text x="{f.left + 8 + 150 * index}" y="14" fill="{colour}">{escape(label)}</text>'
    )
    return out
