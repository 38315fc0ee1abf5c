"""`--format html` (issue 14): one self-contained page per report, checked in a real headless
Chromium: it renders, the numbers in the DOM equal the JSON report, no console errors, the
tables sort. Without Chromium (Debian's `chromium`) or websocket-client the browser tests fail,
saying what to install (`browser.start_browser`). What a reader sees: tests/test_html_reader.py."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import Browser, start_browser
from conftest import REPO_ROOT
from typer.testing import CliRunner

from normscope.cli import app

runner = CliRunner()
FIX = REPO_ROOT / "fixtures"


def commands(run: Path) -> dict[str, list[str]]:
    return {
        "scan": ["scan", str(FIX / "deepseek-v3-mtp")],
        "diff": ["diff", str(FIX / "deepseek_v3-init"), str(FIX / "deepseek_v3-trained")],
        "series": ["series", str(run), "-j", "1"],
        "check": ["check", str(FIX / "deepseek-v3-mtp")],
    }


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    """Each command's HTML file (via -o) and its JSON report."""
    tmp = tmp_path_factory.mktemp("html")
    run = tmp / "run"
    shutil.copytree(FIX / "deepseek_v3-init", run / "checkpoint-0")
    shutil.copytree(FIX / "deepseek_v3-trained", run / "checkpoint-100")
    out = {}
    for name, args in commands(run).items():
        html = tmp / f"{name}.html"
        result = runner.invoke(app, [*args, "-f", "html", "-o", str(html)])
        assert result.exit_code in (0, 1), result.stderr
        data = json.loads(runner.invoke(app, [*args, "-f", "json"]).stdout)
        out[name] = (html, data)
    return out


def test_pages_are_self_contained(pages: dict[str, tuple[Path, dict]]) -> None:
    for html, _ in pages.values():
        text = html.read_text(encoding="utf-8")
        assert text.startswith("<!doctype html>")
        # Nothing fetched at view time: no external script, style, image or font.
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)
        assert "@import" not in text
        assert len(text) < 200_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    b = start_browser()
    yield b
    b.close()


def cells(page, table: str) -> list[list[tuple[str, str | None]]]:  # type: ignore[no-untyped-def]
    return page.evaluate(
        f"Array.from(document.querySelectorAll('#{table} tbody tr')).map(function(r){{"
        "return Array.from(r.cells).map(function(c){"
        "return [c.textContent, c.getAttribute('data-value')]})})"
    )


def same(dom: str | None, json_value: float | None) -> bool:
    if json_value is None:
        return dom in ("", None)
    return dom is not None and float(dom) == json_value


def test_scan_page(browser: Browser, pages: dict[str, tuple[Path, dict]]) -> None:
    html, data = pages["scan"]
    page, _ = browser.open(html)
    assert page.errors == []
    rows = cells(page, "norms")
    assert [r[0][0] for r in rows] == [n["name"] for n in data["norms"]]
    for row, norm in zip(rows, data["norms"], strict=True):
        assert same(row[3][1], norm["ratio"]) and row[4][0] == norm["band"]
        assert same(row[7][1], norm["min"]) and same(row[8][1], norm["max"])
    heat = page.evaluate(
        "Array.from(document.querySelectorAll('.cell[data-name]')).map(function(r){"
        "return [r.getAttribute('data-name'), r.getAttribute('data-value')]})"
    )
    ratios = {n["name"]: n["ratio"] for n in data["norms"]}
    assert sorted(name for name, _ in heat) == sorted(ratios)
    assert all(same(v, ratios[name]) for name, v in heat)
    # Sorting: a click on the ratio header orders the rows by ratio.
    page.evaluate("document.querySelectorAll('#norms th')[3].click()")
    sorted_ratios = [float(r[3][1]) for r in cells(page, "norms")]
    assert sorted_ratios == sorted(sorted_ratios)
    colour = page.evaluate(
        "getComputedStyle(document.querySelector('#norms .b-collapse')).backgroundColor"
    )
    assert colour == "rgb(33, 102, 172)"  # collapse: the dark blue end of the diverging scale
    assert page.errors == []


def test_diff_page(browser: Browser, pages: dict[str, tuple[Path, dict]]) -> None:
    html, data = pages["diff"]
    page, _ = browser.open(html)
    rows = cells(page, "norms")
    assert [r[0][0] for r in rows] == [d["name"] for d in data["norms"]]
    for row, d in zip(rows, data["norms"], strict=True):
        assert same(row[3][1], d["ratio_a"]) and same(row[4][1], d["ratio_b"])
        assert same(row[6][1], d["rel_change"]) and same(row[7][1], d["cosine"])
    assert page.errors == []


def test_series_page(browser: Browser, pages: dict[str, tuple[Path, dict]]) -> None:
    html, data = pages["series"]
    page, _ = browser.open(html)
    rows = cells(page, "trends")
    headline = data["summary"]["headline"]
    assert [r[0][0] for r in rows] == [t["name"] for t in headline]
    for row, t in zip(rows, headline, strict=True):
        assert same(row[1][1], t["ratio_first"]) and same(row[2][1], t["ratio_last"])
    points = page.evaluate(
        "Array.from(document.querySelectorAll('#trend-0 circle')).map(function(c){"
        "return [Number(c.getAttribute('data-step')), c.getAttribute('data-value')]})"
    )
    steps = [c["step"] for c in data["checkpoints"]]
    assert [s for s, _ in points] == steps
    assert all(same(v, r) for (_, v), r in zip(points, headline[0]["ratios"], strict=True))
    assert page.errors == []


def test_check_page(browser: Browser, pages: dict[str, tuple[Path, dict]]) -> None:
    html, data = pages["check"]
    page, _ = browser.open(html)
    rows = cells(page, "findings")
    assert len(rows) == len(data["findings"])
    failed = [r for r in rows if r[2][0] == "FAIL"]
    assert len(failed) == data["errors"] + data["warned"]
    assert page.errors == []
