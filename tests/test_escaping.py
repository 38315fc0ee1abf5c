"""Issue 28, item 4: names are data. A tensor name holding terminal escape sequences, a
bidirectional override, a pipe, a backtick and a newline reaches no view for people as it is:
tables (on a terminal and through a pipe), Markdown, HTML, GitHub annotations, JUnit and the
warning lines on stderr show it visibly escaped; JSON keeps it exactly; CSV keeps it, with a text
cell that a spreadsheet would run as a formula neutralised (OWASP)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from conftest import llama_config, llama_tensors, write_checkpoint
from typer.testing import CliRunner

from normscope.cli import app
from normscope.render.common import frame_csv, spreadsheet_safe, visible

EVIL = "\x1b]0;pwned\x07\x1b[2J\u202e|`\n"
SHOWN = "\\x1b]0;pwned\\x07\\x1b[2J\\u202e|`\\n"
"""What a view for people shows of EVIL (Markdown also escapes `|` and the backtick)."""
SHOWN_MD = "\\x1b]0;pwned\\x07\\x1b[2J\\u202e\\|\\x60\\n"
RAW = ("\x1b", "\x07", "\u202e")

runner = CliRunner()


@pytest.fixture
def evil(tmp_path: Path) -> Path:
    """A Llama whose final norm and one input norm carry EVIL in their names."""
    tensors = {}
    for name, value in llama_tensors().items():
        if name in ("model.norm.weight", "model.layers.0.input_layernorm.weight"):
            name = name.removesuffix(".weight") + EVIL + ".weight"
        tensors[name] = value
    return write_checkpoint(tmp_path / "evil", tensors, llama_config())


def _clean(text: str) -> None:
    for raw in RAW:
        assert raw not in text, repr(text[:400])


@pytest.mark.parametrize(
    ("fmt", "shown"),
    [("table", SHOWN), ("markdown", SHOWN_MD), ("html", SHOWN)],
)
def test_views_for_people_show_escape_codes_escaped(evil: Path, fmt: str, shown: str) -> None:
    result = runner.invoke(app, ["scan", str(evil), "--all", "--wide", "--format", fmt])
    assert result.exit_code == 0, result.output
    _clean(result.stdout)
    _clean(result.stderr)
    if fmt == "html":
        import html

        assert html.escape(shown) in result.stdout
    else:
        assert shown in result.stdout
    assert "Warning: " in result.stderr and SHOWN in result.stderr  # the stderr warning line


def test_a_markdown_row_keeps_its_cells(evil: Path) -> None:
    result = runner.invoke(app, ["scan", str(evil), "--all", "--format", "markdown"])
    rows = [line for line in result.stdout.splitlines() if "pwned" in line and line.startswith("|")]
    assert rows
    header = next(line for line in result.stdout.splitlines() if line.startswith("| name |"))
    cells = header.count(" | ")
    for row in rows:
        # An escaped pipe is not a cell boundary in GitHub's tables.
        assert row.replace("\\|", "").count(" | ") == cells


@pytest.mark.parametrize("fmt", ["github", "junit", "text"])
def test_check_outputs_show_escape_codes_escaped(evil: Path, fmt: str) -> None:
    result = runner.invoke(
        app, ["check", str(evil), "--allow-unknown", "--scope", "all", "--format", fmt]
    )
    assert result.exit_code in (0, 1), result.output
    _clean(result.stdout)
    _clean(result.stderr)


def test_on_a_terminal_too(evil: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With colour forced (a TTY), the only escape sequences are the colours rich draws."""
    import re

    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    result = runner.invoke(app, ["scan", str(evil), "--all", "--wide"], color=True)
    assert result.exit_code == 0, result.output
    assert "\x1b[" in result.stdout  # colours are on
    without_colours = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)
    _clean(without_colours)
    assert "\u202e" not in result.stdout
    assert SHOWN in without_colours


def test_json_keeps_the_names_exactly(evil: Path) -> None:
    result = runner.invoke(app, ["scan", str(evil), "--all", "--format", "json"])
    names = {n["name"] for n in json.loads(result.stdout)["norms"]}
    assert "model.norm" + EVIL + ".weight" in names
    assert "\\u001b" in result.stdout  # escaped by JSON itself, never raw
    _clean(result.stdout)


def test_csv_keeps_names_and_neutralises_formulas(tmp_path: Path) -> None:
    import numpy as np

    tensors = {}
    final = np.linspace(-0.5, 1.5, 8, dtype=np.float32)  # a minimum below zero
    for name, value in llama_tensors(final=final).items():
        if name == "model.norm.weight":
            name = '=HYPERLINK("http://x")+model.norm.weight'
        tensors[name] = value
    path = write_checkpoint(tmp_path / "formula", tensors, llama_config())
    result = runner.invoke(app, ["scan", str(path), "--all", "--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    names = [r["name"] for r in rows]
    assert '\'=HYPERLINK("http://x")+model.norm.weight' in names
    # Numbers stay numbers: a negative minimum is written as a number, never prefixed.
    assert any(float(r["min"]) < 0 for r in rows)
    assert not any(r["min"].startswith("'") for r in rows)


def test_the_shared_functions() -> None:
    assert visible(EVIL) == SHOWN
    assert visible(EVIL, markdown=True) == SHOWN_MD
    assert visible("model.layers.0.input_layernorm.weight") == (
        "model.layers.0.input_layernorm.weight"
    )
    for bidi in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c":
        assert visible(bidi) == ascii(bidi)[1:-1]
    for cell, out in [("=1+1", "'=1+1"), ("+1", "'+1"), ("-x", "'-x"), ("@SUM(A1)", "'@SUM(A1)"),
                      ("\tx", "'\tx"), ("\rx", "'\rx"), ("a=b", "a=b"), (-0.5, -0.5)]:  # fmt: skip
        assert spreadsheet_safe(cell) == out
    import pandas as pd

    text = frame_csv(pd.DataFrame({"name": ["-a", "b"], "min": [-0.25, 1.0]}))
    assert text == "name,min\n'-a,-0.25\nb,1.0\n"
