"""Tables at 60, 80 and 100 columns (issue 26): every number and band whole, every name cell
telling its norm apart, nothing wider than the terminal, on the DeepSeek-V3 structure (MTP, MLA's
four norms a layer) and a Megatron save (Transformer-Engine-fused norms)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO_ROOT
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

import normscope
from normscope.render.diff import DiffView
from normscope.render.fold import FoldView
from normscope.render.scan import ScanView
from normscope.render.series import SeriesView

FIXTURES = REPO_ROOT / "fixtures"
MTP = str(FIXTURES / "deepseek-v3-mtp")
DS_INIT, DS = str(FIXTURES / "deepseek_v3-init"), str(FIXTURES / "deepseek_v3-trained")
MG_INIT, MG = str(FIXTURES / "megatron-init"), str(FIXTURES / "megatron-trained")
WIDTHS = (60, 80, 100)


@pytest.fixture(scope="module")
def bart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An encoder-decoder saved by transformers: both stacks have a `final_layer_norm` per layer."""
    from transformers import BartConfig, BartForConditionalGeneration

    config = BartConfig(
        vocab_size=64,
        d_model=16,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=32,
    )
    path = tmp_path_factory.mktemp("bart")
    BartForConditionalGeneration(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def views(tmp_path_factory: pytest.TempPathFactory, bart: Path) -> dict[str, Any]:
    run = tmp_path_factory.mktemp("run")
    for step, source in ((0, DS_INIT), (100, DS), (200, DS)):
        shutil.copytree(source, run / f"step-{step}")
    scans = {"ds": normscope.scan(MTP), "megatron": normscope.scan(MG)}
    diffs = {"ds": normscope.diff(DS_INIT, DS), "megatron": normscope.diff(MG_INIT, MG)}
    series = normscope.series(run, jobs=1, progress=False)
    folds = {k: normscope.fold(s, device="cpu") for k, s in (("ds", MTP), ("megatron", MG))}
    out: dict[str, Any] = {}
    for key in ("ds", "megatron"):
        out |= {
            f"scan {key}": ScanView(scans[key]),
            f"scan {key} --all": ScanView(scans[key], show_all=True),
            f"diff {key} --all": DiffView(diffs[key], show_all=True),
            f"fold {key} --all": FoldView(folds[key], show_all=True),
        }
    out |= {"series ds": SeriesView(series), "series ds --all": SeriesView(series, show_all=True)}
    out["scan bart --all"] = ScanView(normscope.scan(bart), show_all=True)
    return out


def _plain(cell: Any) -> str:
    return Text.from_markup(cell).plain if isinstance(cell, str) else Text(str(cell)).plain


def _tables(view: Any, width: int) -> list[tuple[Table, list[int], list[list[str]]]]:
    """Each table of the view, the column widths rich gives it at `width`, its cells by column."""
    console = Console(width=width, color_system=None, file=io.StringIO())
    found = []
    for renderable in view.table(width):
        if isinstance(renderable, Table):
            widths = renderable._calculate_column_widths(console, console.options)
            cells = [[_plain(c) for c in column._cells] for column in renderable.columns]
            found.append((renderable, widths, cells))
    return found


def _text(view: Any, width: int) -> str:
    console = Console(width=width, color_system=None, file=io.StringIO(), record=True)
    for renderable in view.table(width):
        console.print(renderable)
    return console.export_text()


@pytest.mark.parametrize("width", WIDTHS)
def test_nothing_is_wider_than_the_terminal(views: dict[str, Any], width: int) -> None:
    for key, view in views.items():
        lines = _text(view, width).splitlines()
        assert max(map(cell_len, lines)) <= width, key


@pytest.mark.parametrize("width", WIDTHS)
def test_every_cell_but_a_name_is_whole(views: dict[str, Any], width: int) -> None:
    for key, view in views.items():
        tables = _tables(view, width)
        assert tables, key
        for table, widths, columns in tables:
            for column, column_width, cells in zip(table.columns, widths, columns, strict=True):
                for cell in cells:
                    # A cell wider than its column is cut by rich ("explosi…", "0.5…").
                    assert cell_len(cell) <= column_width, (key, width, column.header, cell)


@pytest.mark.parametrize("width", WIDTHS)
def test_every_name_cell_tells_its_norm_apart(views: dict[str, Any], width: int) -> None:
    for key, view in views.items():
        for table, _, columns in _tables(view, width):
            headers = [str(c.header) for c in table.columns]
            if headers[0] not in ("name", "norm"):
                continue
            keys = list(
                zip(
                    *(columns[i] for i, h in enumerate(headers) if h in ("name", "norm", "layer")),
                    strict=True,
                )
            )
            assert len(keys) == len(set(keys)), (key, width, table.title, sorted(keys))


def test_the_mla_and_te_norms_keep_what_tells_them_apart(views: dict[str, Any]) -> None:
    for key, width in (("scan ds --all", 60), ("fold megatron --all", 80)):
        names = [
            t[2][0] for t in _tables(views[key], width) if str(t[0].columns[0].header) == "name"
        ]
        assert names, key
        for column in names:
            assert not any(n in ("…yernorm", "…layer_norm") for n in column), (key, column)


def _named_rows(view: Any, width: int) -> list[tuple[str, str]]:
    for table, _, columns in _tables(view, width):
        if table.title == "all norms":
            return list(zip(columns[0], columns[1], strict=True))
    raise AssertionError("no table of all norms")


def test_an_encoder_decoders_stacks_are_told_apart(views: dict[str, Any]) -> None:
    rows = _named_rows(views["scan bart --all"], 100)
    assert ("encoder final_layer_norm", "0") in rows and ("decoder final_layer_norm", "0") in rows
    for width in WIDTHS:  # cut to fit, they stay apart
        narrow = _named_rows(views["scan bart --all"], width)
        assert len(narrow) == len(set(narrow)) == 12, narrow
