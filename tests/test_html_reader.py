"""What a reader sees in each HTML report (issue 26), in a real headless Chromium at 1280 px.

Every page is rendered by the command line (tests/html_reports.py): scan of the DeepSeek-V3-style
MTP fixture (q_a_layernorm beside kv_a_layernorm) and of the Qwen3 fixture (q_norm beside
k_norm), diff, a 600-checkpoint series with TensorBoard losses, check and fold. The assertions are
about the rendered page, not its source: a norm's cell is the element the browser hits at the
cell's centre, its value is text inside it, a chart's title is the caption nearest above it,
nothing reaches past the window's right edge. Without Chromium these tests fail, not skip.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import Browser, Page, start_browser
from conftest import REPO_ROOT
from html_reports import invoke_all, render_all
from typer.testing import CliRunner

from normscope.cli import app

WIDTH = 1280
BANDS = ("collapse", "shrink", "balanced", "grow", "explosion", "nonfinite")


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any]]:
    """Each report's page and its JSON report (the independent side of each comparison)."""
    folder = tmp_path_factory.mktemp("reader")
    html, data = render_all(folder), invoke_all(folder, "json")
    return {name: (html[name], data[name]) for name in html}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    b = start_browser()
    yield b
    b.close()


def show(browser: Browser, path: Path) -> Page:
    page, _ = browser.open(path)
    page.viewport(WIDTH)
    assert page.errors == []
    return page


# --- every norm a visible cell of its own ------------------------------------------------------

CELLS = """(function(){
  return Array.from(document.querySelectorAll('.cell[data-name]')).map(function(c){
    c.scrollIntoView({block: 'center'});
    var r = c.getBoundingClientRect(), x = r.left + r.width / 2, y = r.top + r.height / 2;
    var hit = document.elementFromPoint(x, y);
    var range = document.createRange(); range.selectNodeContents(c);
    var t = range.getBoundingClientRect(), s = getComputedStyle(c);
    return {name: c.getAttribute('data-name'), value: c.getAttribute('data-value'),
      width: r.width, height: r.height, own: hit !== null && (hit === c || c.contains(hit)),
      text: c.textContent, inside: t.width > 0 && t.left >= r.left - 0.5 &&
        t.right <= r.right + 0.5 && t.top >= r.top - 0.5 && t.bottom <= r.bottom + 0.5,
      colour: s.color, background: s.backgroundColor || s.fill, size: parseFloat(s.fontSize),
      visible: s.visibility === 'visible' && s.opacity === '1',
      band: c.getAttribute('data-band')};
  });
})()"""


def heat_cells(page: Page) -> list[dict[str, Any]]:
    cells: list[dict[str, Any]] = page.evaluate(CELLS)
    return cells


def norm_values(name: str, data: Any) -> dict[str, tuple[float, str]]:
    """norm -> (the ratio its cell shows, its band), from the JSON report."""
    if name == "diff":
        return {d["name"]: (d["ratio_b"], d["band_b"]) for d in data["norms"]}
    return {n["name"]: (n["ratio"], n["band"]) for n in data["norms"]}


@pytest.mark.parametrize("name", ["scan", "scan-qwen3", "diff"])
def test_every_norm_is_a_visible_cell_of_its_own(
    browser: Browser, pages: dict[str, tuple[Path, Any]], name: str
) -> None:
    path, data = pages[name]
    page = show(browser, path)
    cells = heat_cells(page)
    expected = norm_values(name, data)
    assert sorted(c["name"] for c in cells) == sorted(expected)  # each norm once, none left out
    for c in cells:
        ratio, band = expected[c["name"]]
        assert c["width"] >= 20 and c["height"] >= 10, c
        assert c["own"], f"{c['name']}: another element covers its cell"
        assert float(c["value"]) == ratio
        # Its value (and band when out of the balanced band) is written in it, readable.
        assert f"{ratio:.3f}" in c["text"], c
        assert band == "balanced" or band in c["text"], c
        assert c["inside"] and c["visible"] and c["size"] >= 10, c
        assert c["colour"] != c["background"], c


def test_q_and_k_norms_and_mla_latents_have_their_own_columns(
    browser: Browser, pages: dict[str, tuple[Path, Any]]
) -> None:
    """The two cases issue 26 reported: norms of one layer and role that shared a cell."""
    for name, pair in (
        ("scan", ("self_attn.q_a_layernorm", "self_attn.kv_a_layernorm")),
        ("scan-qwen3", ("self_attn.q_norm", "self_attn.k_norm")),
    ):
        page = show(browser, pages[name][0])
        boxes = page.evaluate(
            "Array.from(document.querySelectorAll('.cell[data-name]')).map(function(c){"
            "var r = c.getBoundingClientRect(); return [c.getAttribute('data-name'), "
            "r.left, r.top]})"
        )
        at = {n: (x, y) for n, x, y in boxes}
        for layer in (0, 1):
            a, b = (at[f"model.layers.{layer}.{leaf}.weight"] for leaf in pair)
            assert a[1] == b[1] and a[0] != b[0]  # one row (the layer), two columns


SCANNED = sorted(
    d.name
    for d in (REPO_ROOT / "fixtures").iterdir()
    if d.is_dir() and (d / "config.json").is_file() and not d.name.startswith("broken")
)


def assert_every_norm_has_its_cell(browser: Browser, page_path: Path, source: str) -> None:
    result = CliRunner().invoke(app, ["scan", source, "-f", "json"])
    assert result.exit_code in (0, 1), result.stderr
    names = [n["name"] for n in json.loads(result.stdout)["norms"]]
    page = show(browser, page_path)
    cells = heat_cells(page)
    assert sorted(c["name"] for c in cells) == sorted(names), source
    assert all(c["own"] and c["inside"] for c in cells), [c for c in cells if not c["own"]]
    scroll_width, inner, over = page.evaluate(OVERFLOW)
    assert scroll_width <= inner and over == [], (source, over)


def test_every_fixture_and_real_model_draws_every_norm(
    browser: Browser, tmp_path: Path, smollm2_file: Path, gemma3: Path
) -> None:
    """Every family's fixture (towers, encoder-decoders, Megatron's MTP block, offset gains) and
    two released models (SmolLM2-135M, Gemma-3-270M, as GGUF): a cell per norm, none covered,
    nothing past the window."""
    sources = [str(REPO_ROOT / "fixtures" / name) for name in SCANNED]
    for i, source in enumerate([*sources, str(smollm2_file), str(gemma3)]):
        page_path = tmp_path / f"{i}.html"
        result = CliRunner().invoke(app, ["scan", source, "-f", "html", "-o", str(page_path)])
        assert result.exit_code in (0, 1), result.stderr
        assert_every_norm_has_its_cell(browser, page_path, source)


# --- colours and their legend ------------------------------------------------------------------


def rgb(css: str) -> tuple[int, int, int]:
    r, g, b = (int(x) for x in re.findall(r"\d+", css)[:3])
    return r, g, b


def luminance(colour: tuple[int, int, int]) -> float:
    def channel(v: int) -> float:
        c = v / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = map(channel, colour)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


@pytest.mark.parametrize("name", ["scan", "scan-qwen3", "diff", "series", "fold"])
def test_a_legend_names_every_band_in_colours_apart(
    browser: Browser, pages: dict[str, tuple[Path, Any]], name: str
) -> None:
    page = show(browser, pages[name][0])
    items = page.evaluate(
        "Array.from(document.querySelectorAll('#legend li')).map(function(li){"
        "var s = getComputedStyle(li); return [li.textContent, s.backgroundColor, s.color]})"
    )
    assert [text for text, _, _ in items][: len(BANDS)] and len(items) == len(BANDS)
    colours = {}
    for band, (text, background, ink) in zip(BANDS, items, strict=True):
        assert text.startswith(band)  # the band's name is written, not only its colour
        colours[band] = rgb(background)
        assert abs(luminance(rgb(background)) - luminance(rgb(ink))) > 0.3  # readable on it
    assert len(set(colours.values())) == len(BANDS)
    # A diverging scale: blue below the balanced band, red above, darker the farther out.
    for low_side in ("collapse", "shrink"):
        r, _, b = colours[low_side]
        assert b > r + 40
    for high_side in ("grow", "explosion"):
        r, _, b = colours[high_side]
        assert r > b + 40
    assert luminance(colours["collapse"]) < luminance(colours["shrink"])
    assert luminance(colours["explosion"]) < luminance(colours["grow"])
    assert luminance(colours["balanced"]) > luminance(colours["shrink"])
    assert luminance(colours["balanced"]) > luminance(colours["grow"])
    if name.startswith("scan"):  # ranges as the report's band says them
        th = pages[name][1]["summary"]["thresholds"]
        texts = [t for t, _, _ in items]
        assert f"< {th['low']:g}" in texts[0] and f"> {th['high']:g}" in texts[4]
    # Every coloured cell wears its band's legend colour.
    for c in heat_cells(page):
        assert rgb(c["background"]) == colours[c["band"]], c


# --- the series charts --------------------------------------------------------------------------

CHARTS = """(function(){
  var captions = Array.from(document.querySelectorAll('figcaption, h1, h2, h3'));
  return Array.from(document.querySelectorAll('svg.trend')).map(function(svg){
    svg.scrollIntoView({block: 'center'});
    var r = svg.getBoundingClientRect(), fig = svg.closest('figure');
    var own = fig ? fig.querySelector('figcaption') : null, best = null, gap = Infinity;
    captions.forEach(function(c){
      var b = c.getBoundingClientRect();
      if (b.bottom <= r.top + 1 && b.right > r.left && b.left < r.right && r.top - b.bottom < gap)
        { gap = r.top - b.bottom; best = c; }
    });
    function texts(sel){ return Array.from(svg.querySelectorAll(sel)).map(function(t){
      var b = t.getBoundingClientRect();
      return [t.textContent, b.left >= r.left - 0.5 && b.right <= r.right + 0.5 &&
        b.top >= r.top - 0.5 && b.bottom <= r.bottom + 0.5]; }); }
    return {id: svg.id, caption: own ? own.textContent : null,
      nearest: best === own && own !== null,
      x: texts('text.tick.x'), y: texts('text.tick.y'), xtitle: texts('text.axis-title.x'),
      ytitle: texts('text.axis-title.y'), edges: svg.querySelectorAll('line.edge').length,
      width: r.width};
  });
})()"""


def step_value(label: str) -> float:
    """`2.5k` -> 2500, `10k` -> 10000, `600` -> 600."""
    scale = {"k": 1e3, "M": 1e6}.get(label[-1:], 1.0)
    return float(label[:-1] if scale != 1.0 else label) * scale


def round_spacing(values: list[float]) -> bool:
    """Ticks equally spaced at 1, 2, 2.5 or 5 × 10ᵏ, each a multiple of the spacing."""
    if len(values) < 2:
        return True
    spacing = values[1] - values[0]
    mantissa = spacing / 10 ** math.floor(math.log10(spacing))
    steps = [b - a for a, b in itertools.pairwise(values)]
    return (
        any(math.isclose(mantissa, m) for m in (1, 2, 2.5, 5))
        and all(math.isclose(s, spacing, rel_tol=1e-6) for s in steps)
        and all(abs(v / spacing - round(v / spacing)) < 1e-6 for v in values)
    )


def test_each_chart_has_its_title_axes_and_round_ticks(
    browser: Browser, pages: dict[str, tuple[Path, Any]]
) -> None:
    path, data = pages["series"]
    page = show(browser, path)
    charts = {c["id"]: c for c in page.evaluate(CHARTS)}
    headline = data["summary"]["headline"]
    expected = {f"trend-{i}": t["name"].removesuffix(".weight") for i, t in enumerate(headline)}
    expected |= {
        "trinity-loss": "main and MTP loss",
        "trinity-gap": "gap (MTP − main)",
        "trinity-ratio": "final norm ratio",
    }
    assert set(charts) == set(expected)
    steps = [c["step"] for c in data["checkpoints"]]
    assert len(steps) == 600
    for chart_id, c in charts.items():
        assert c["caption"] and c["caption"].startswith(expected[chart_id]), c
        assert c["nearest"], f"{chart_id}: another title sits nearer above it than its own"
        assert c["xtitle"] == [["step", True]]
        assert len(c["ytitle"]) == 1 and c["ytitle"][0][0] and c["ytitle"][0][1]
        assert all(inside for _, inside in c["x"] + c["y"]), f"{chart_id}: a tick label is cut"
        xs = [step_value(t) for t, _ in c["x"]]
        ys = [float(t) for t, _ in c["y"]]
        assert 4 <= len(xs) <= 8 and 3 <= len(ys) <= 8, c
        assert round_spacing(xs) and round_spacing(ys), c
        assert min(steps) <= xs[0] and xs[-1] <= max(steps)  # ticks within the run
        assert max(steps) - xs[-1] < xs[1] - xs[0]  # up to the run's end
        if chart_id.startswith("trend") or chart_id == "trinity-ratio":
            assert c["edges"] >= 2  # the band's edges drawn
        assert c["width"] >= 400


def test_a_long_run_lists_a_summary_of_its_checkpoints(
    browser: Browser, pages: dict[str, tuple[Path, Any]]
) -> None:
    path, data = pages["series"]
    page = show(browser, path)
    rows = page.evaluate(
        "Array.from(document.querySelectorAll('#trinity tbody tr')).map(function(r){"
        "return Number(r.cells[0].getAttribute('data-value'))})"
    )
    steps = [r["step"] for r in data["trinity"]["rows"]]
    assert len(steps) == 600 and 2 <= len(rows) <= 24
    assert rows[0] == steps[0] and rows[-1] == steps[-1] and rows == sorted(rows)
    worst = max(data["trinity"]["rows"], key=lambda r: abs(math.log(r["final_ratio"])))
    assert worst["step"] in rows
    text = page.evaluate("document.body.innerText")
    assert f"{len(rows)} of 600 checkpoints" in text and f"{600 - len(rows)} more" in text
    assert len(path.read_bytes()) < 150_000  # the page of 600 checkpoints stays small


# --- nothing runs off the page -------------------------------------------------------------------

OVERFLOW = """(function(){
  var out = [];
  document.querySelectorAll('body *').forEach(function(e){
    var r = e.getBoundingClientRect();
    if (r.width > 0 && r.right > innerWidth + 0.5) out.push(e.tagName + ' ' + e.className + ' '
      + (e.textContent || '').slice(0, 40) + ' ' + Math.round(r.right));
  });
  return [document.documentElement.scrollWidth, innerWidth, out.slice(0, 5)];
})()"""


@pytest.mark.parametrize("name", ["scan", "scan-qwen3", "diff", "series", "check", "fold"])
def test_nothing_overflows_a_1280_pixel_window(
    browser: Browser, pages: dict[str, tuple[Path, Any]], name: str
) -> None:
    page = show(browser, pages[name][0])
    scroll_width, inner, over = page.evaluate(OVERFLOW)
    assert scroll_width <= inner and over == [], over
