"""Tables that fit (issue 14): structural names, cuts that keep the end, movers that moved,
no norm in two tables of a view, one sparkline scale per role, `--wide`."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO_ROOT
from typer.testing import CliRunner

from normscope.cli import app
from normscope.naming import fit_name, structural_name
from normscope.render.series_text import sparkline

runner = CliRunner()
FIXTURES = REPO_ROOT / "fixtures"


@pytest.mark.parametrize(
    ("name", "depth", "layer", "expected"),
    [
        ("model.layers.3.input_layernorm.weight", None, 3, "input_layernorm"),
        ("model.layers.61.shared_head.norm.weight", 1, None, "shared_head.norm"),
        ("model.layers.61.enorm.weight", 1, None, "enorm"),
        ("model.norm.weight", None, None, "model.norm"),
        ("vision_tower.vision_model.encoder.layers.3.layer_norm1.weight", None, None,
         "vision L3 layer_norm1"),
        ("model.layers.2.mlp.experts.5.norm.weight", None, 2, "mlp.experts.5.norm"),
        ("decoder.layers.0.self_attention.linear_qkv.layer_norm_weight", None, 0,
         "self_attention.linear_qkv.layer_norm"),
    ],
)  # fmt: skip
def test_structural_name(name: str, depth: int | None, layer: int | None, expected: str) -> None:
    assert structural_name(name, depth, layer) == expected


def test_structural_name_with_layer() -> None:
    assert structural_name("model.layers.61.enorm.weight", 1, None, True) == "mtp1 enorm"
    assert structural_name("model.layers.3.input_layernorm", None, 3, True) == "L3 input_layernorm"


def test_fit_name_keeps_the_end() -> None:
    assert fit_name("self_attn.kv_a_layernorm", 24) == "self_attn.kv_a_layernorm"
    assert fit_name("self_attn.kv_a_layernorm", 20) == "…kv_a_layernorm"
    assert fit_name("post_attention_layernorm", 10) == "…layernorm"


def test_sparkline_shared_scale() -> None:
    # A change of 3e-5 on its own scale is flat; on a shared scale it sits where it belongs.
    assert sparkline([1.0, 1.00003], 2) == "▄▅"
    assert sparkline([1.0, 1.00003], 2, (0.5, 1.0)) == "██"
    assert sparkline([0.5, 1.0], 2, (0.5, 1.0)) == "▁█"


def run(args: list[str], width: int = 80) -> str:
    result = runner.invoke(app, args, env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.stderr
    return result.stdout


def test_diff_of_identical_checkpoints_lists_no_movers() -> None:
    a = str(FIXTURES / "llama-trained")
    text = run(["diff", a, a])
    assert "biggest movers" not in text
    assert "no norm moved" in text


def test_diff_band_column_never_cut_at_80() -> None:
    text = run(["diff", str(FIXTURES / "deepseek_v3-init"), str(FIXTURES / "deepseek_v3-trained")])
    assert "balanced→explosion" in text
    assert all(len(line) <= 80 for line in text.splitlines())
    # Each band transition is listed once: the movers table already shows it.
    assert text.count("balanced→explosion") == 1


def test_wide_keeps_full_names(tmp_path: Path) -> None:
    text = run(["scan", str(FIXTURES / "deepseek-v3-mtp"), "--wide"], width=80)
    assert "model.layers.4.shared_head.norm" in text
    assert " min " in text  # every column
    narrow = run(["scan", str(FIXTURES / "deepseek-v3-mtp")], width=80)
    assert "model.layers.4.shared_head.norm" not in narrow
    assert "shared_head.norm" in narrow
