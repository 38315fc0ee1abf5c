"""What every `--format html` page shares: one self-contained page (no network when viewed).

`page` wraps a report's sections with the header facts, the style and the few lines of vanilla
JS that sort a table by a click on its header; `table` and its cells (`num`, `band`, `text`);
`legend`, the colour key of the bands (one diverging scale, `BAND_FILL`, on every page); the
line charts are `chart.py`, the scan's layer × norm grid `heatmap.py`. Each report's page is built
beside its other renderers (`scan.py`, `diff.py`, `series.py`, `check.py`, `fold.py`). Measured
against plotly inlined (README, "HTML report"), a scan page is ~20 kB instead of ~4.8 MB and
renders in tens of ms. Every number cell carries its full precision in `data-value` (the text
is rounded for people): tests compare the DOM with the JSON.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from normscope.enums import Band
from normscope.render.common import fmt
from normscope.schema import Thresholds

SVG = "http://www.w3.org/2000/svg"
Cell = tuple[str, float | None, str]
"""(text, full-precision value or None, css class)."""

# One diverging scale for every page, as `series --plot` draws its heatmap (matplotlib's RdBu):
# blue below the balanced band, red above it, darker the farther out; light grey in the band.
# Blue against red stays apart for red-green colour blindness, and every band is also written
# (cell text, legend, the tables' band column), so no reader depends on colour alone.
BAND_FILL = {
    Band.collapse: "#2166ac",
    Band.shrink: "#92c5de",
    Band.balanced: "#e8e8e8",
    Band.grow: "#f4a582",
    Band.explosion: "#b2182b",
    Band.nonfinite: "#1a1a1a",
}
_DARK = (Band.collapse, Band.explosion, Band.nonfinite)
BAND_INK = {b: "#fff" if b in _DARK else "#111" for b in Band}
"""The text colour on each fill: white on the dark ends, near black elsewhere."""

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
dl.head{display:grid;grid-template-columns:max-content auto;gap:2px 16px}dt{font-weight:600}
dd{margin:0;overflow-wrap:anywhere}
table.data{border-collapse:collapse;margin:8px 0}
table.data th{cursor:pointer;text-align:left;border-bottom:2px solid #888;padding:2px 8px;
user-select:none;vertical-align:bottom}
table.data th.sorted-asc::after{content:" ▲"}table.data th.sorted-desc::after{content:" ▼"}
table.data td{padding:2px 8px;border-bottom:1px solid #eee;white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums}
table.data td.name{font-family:monospace;white-space:normal;min-width:20ch}
table.data td.prose{white-space:normal;min-width:10em}table.data td.wrap{white-space:normal}
span.badge{border-radius:3px;padding:1px 6px}
td.fail-error{color:#b2182b;font-weight:700}td.fail-warn{color:#b35806;font-weight:700}
p.note{color:#555;margin:4px 0}
.legend{margin:12px 0}.legend ol{display:flex;flex-wrap:wrap;list-style:none;padding:0;margin:4px 0;
max-width:900px}
.legend li{flex:1 1 0;min-width:92px;padding:3px 8px;text-align:center;font-size:13px}
.legend li small{display:block;font-size:11px}
.legend li.b-nonfinite{margin-left:8px;flex:0 1 auto}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(440px,1fr));gap:8px 24px}
figure.chart{margin:8px 0}figure.chart figcaption{font-weight:600;font-size:15px}
figure.chart svg{width:100%;height:auto;max-width:620px;display:block}
.keys{font-size:12px;color:#444}.keys span{margin-right:14px;white-space:nowrap}
.keys i{display:inline-block;width:18px;height:0;border-top:2px solid;vertical-align:middle;
margin-right:4px}
.scroll{overflow-x:auto}
table.heat{border-collapse:separate;border-spacing:2px;margin:8px 0;font-size:12px}
table.heat th{font-weight:600;padding:1px 4px;text-align:center;white-space:nowrap}
table.heat th.leaf{white-space:normal;vertical-align:bottom}
table.heat th.role{border-bottom:1px solid #999;font-weight:400;color:#555}
table.heat th.row{text-align:right;padding-right:8px}
table.heat td.cell{padding:2px 6px;text-align:center;white-space:nowrap;
font-variant-numeric:tabular-nums;border:1px solid rgba(0,0,0,.18)}
""" + "".join(
    f".b-{b.value}{{background:{BAND_FILL[b]};color:{BAND_INK[b]};"
    f"font-weight:{700 if b.out_of_band else 400}}}"
    for b in Band
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
        + "\n"
        + "\n".join(s for s in sections if s)
        + f"\n<script>{_JS}</script></body></html>\n"
    )


def data_value(x: float | None) -> str:
    """A number at full precision for `data-value`; empty for null and non-finite values."""
    return "" if x is None or not math.isfinite(x) else repr(float(x))


def num(x: float | None, digits: int = 3) -> Cell:
    """A number cell: rounded text, the full value for sorting and tests."""
    return (fmt(x, digits), x if x is not None else math.nan, "num")


def band(b: Band) -> Cell:
    """A band cell: its name on the band's colour (the legend's)."""
    return (b.value, None, f"band b-{b.value}")


def text(s: str, css: str = "") -> Cell:
    """A text cell."""
    return (s, None, css)


def table(
    table_id: str,
    title: str,
    headers: Sequence[str],
    rows: Sequence[Sequence[Cell]],
    note: str = "",
) -> str:
    """A titled table that sorts by a click on a header; `note` (text) under the title. Long
    names and prose wrap (`name`, `prose` cells), so the table fits the page."""
    head = "".join(f"<th>{escape(h).replace('/', '/<wbr>')}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for content, value, css in row:
            td_css = " ".join(c for c in css.split() if not c.startswith("b-"))
            attrs = f' class="{td_css}"' if td_css else ""
            if value is not None:
                attrs += f' data-value="{data_value(value)}"'
            cells.append(f"<td{attrs}>{_content(content, css)}</td>")
        body.append("\n<tr>" + "".join(cells) + "</tr>")
    note_html = f'<p class="note">{escape(note)}</p>' if note else ""
    return (
        f'<h2>{escape(title)}</h2>{note_html}<div class="scroll"><table class="data" '
        f'id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
    )


def _content(content: str, css: str) -> str:
    """A cell's HTML: a band as a badge in its colour; a name that may break at its parts."""
    shown = escape(content)
    classes = css.split()
    if "name" in classes:  # long names break after a dot or an underscore, nowhere else
        shown = shown.replace(".", ".<wbr>").replace("_", "_<wbr>")
    badge = [c for c in classes if c.startswith("b-")]
    return f'<span class="badge {badge[0]}">{shown}</span>' if badge else shown


def warnings_section(warnings: Sequence[str]) -> list[str]:
    """The report's warnings as a list, or no section when there are none."""
    if not warnings:
        return []
    return ["<h2>warnings</h2><ul>" + "".join(f"<li>{escape(w)}</li>" for w in warnings) + "</ul>"]


def band_ranges(th: Thresholds | None) -> dict[Band, str]:
    """Each band's range of the ratio, as `Thresholds.classify` draws the edges (None: a report
    that does not carry its edges, e.g. diff's: names only)."""
    if th is None:
        return dict.fromkeys(Band, "")
    return {
        Band.collapse: f"< {th.low:g}",
        Band.shrink: f"{th.low:g} – {th.balanced_low:g}",
        Band.balanced: f"{th.balanced_low:g} – {th.balanced_high:g}",
        Band.grow: f"{th.balanced_high:g} – {th.high:g}",
        Band.explosion: f"> {th.high:g}",
        Band.nonfinite: "NaN, ±inf",
    }


def legend(th: Thresholds | None, note: str = "") -> str:
    """The colour key of every band: a diverging bar, each band's name and range written on it."""
    items = "".join(
        f'<li class="b-{b.value}">{b.value}'
        + (f"<small>{escape(r)}</small>" if r else "")
        + "</li>"
        for b, r in band_ranges(th).items()
    )
    extra = f" <span>{escape(note)}</span>" if note else ""
    return (
        f'<div class="legend" id="legend"><strong>bands of the ratio ‖g‖/√d</strong>{extra}'
        f"<ol>{items}</ol></div>"
    )
