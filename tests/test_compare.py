"""`normscope diff` and normscope.compare: pairing, drift numbers, band changes, gates."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import llama_config, llama_tensors, write_checkpoint
from typer.testing import CliRunner

from normscope.cli import app
from normscope.compare import compare_gains, diff, pair_norms
from normscope.errors import AnalysisError
from normscope.scanner import measure
from normscope.schema import Band, MatchedBy, Role

runner = CliRunner()
H = 8


def _ckpt(root: Path, name: str, final: np.ndarray, **norms: np.ndarray) -> Path:
    extra = {f"model.layers.{k}": v for k, v in norms.items()}
    return write_checkpoint(
        root / name, llama_tensors(hidden=H, final=final, norms=extra), llama_config(hidden=H)
    )


def test_relative_change_cosine_and_movers_match_a_hand_computation(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    fa = (1 + 0.1 * rng.standard_normal(H)).astype(np.float32)
    fb = fa.copy()
    fb[3] += 0.5
    fb[6] -= 0.25
    a = _ckpt(tmp_path, "a", fa)
    b = _ckpt(tmp_path, "b", fb)
    result = diff(a, b)
    row = next(d for d in result.norms if d.name == "model.norm.weight")
    ga, gb = fa.astype(np.float64), fb.astype(np.float64)
    assert row.rel_change == pytest.approx(np.linalg.norm(gb - ga) / np.linalg.norm(ga), rel=1e-12)
    cos = float(ga @ gb / (np.linalg.norm(ga) * np.linalg.norm(gb)))
    assert row.cosine == pytest.approx(cos, rel=1e-12)
    assert row.ratio_a == pytest.approx(np.linalg.norm(ga) / math.sqrt(H), rel=1e-12)
    assert row.delta_ratio == pytest.approx(row.ratio_b - row.ratio_a)
    assert [(m.index, m.before, m.after) for m in row.movers] == [
        (3, float(fa[3]), float(fb[3])),
        (6, float(fa[6]), float(fb[6])),
    ]
    # Unchanged norms: zero change, cosine 1, no movers; the mover is listed first.
    assert result.norms[0].name == "model.norm.weight"
    untouched = [d for d in result.norms if d.name != "model.norm.weight"]
    assert all(
        d.rel_change == 0 and d.cosine == pytest.approx(1) and d.movers == () for d in untouched
    )
    assert result.only_a == () and result.only_b == ()


def test_compare_gains_edge_cases() -> None:
    zero = np.zeros(4)
    assert compare_gains(zero, zero)[0] == 0.0
    assert compare_gains(zero, np.ones(4))[0] == math.inf
    assert math.isnan(compare_gains(zero, np.ones(4))[1])


def test_band_change_is_reported(tmp_path: Path) -> None:
    a = _ckpt(tmp_path, "a", np.ones(H, np.float32))
    b = _ckpt(tmp_path, "b", np.full(H, 0.3, np.float32))
    result = diff(a, b)
    assert result.band_changes == 1
    row = result.norms[0]
    assert (row.band_a, row.band_b, row.band_changed) == (Band.balanced, Band.collapse, True)


def test_norms_on_one_side_are_listed_not_dropped(tmp_path: Path) -> None:
    a = _ckpt(tmp_path, "a", np.ones(H, np.float32))
    tensors = llama_tensors(layers=3, hidden=H)
    b = write_checkpoint(tmp_path / "b", tensors, llama_config(layers=3, hidden=H))
    result = diff(a, b)
    assert set(result.only_b) == {
        "model.layers.2.input_layernorm.weight",
        "model.layers.2.post_attention_layernorm.weight",
    }
    assert result.only_a == ()
    assert any("only in B" in w for w in result.warnings)


def test_megatron_export_pairs_with_its_hf_conversion_by_identity(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    final = (1 + 0.05 * rng.standard_normal(H)).astype(np.float32)
    hf = _ckpt(tmp_path, "hf", final)
    mcore = write_checkpoint(
        tmp_path / "mcore",
        {
            "decoder.layers.0.self_attention.linear_qkv.layer_norm_weight": np.ones(H, np.float32),
            "decoder.layers.0.self_attention.linear_qkv.weight": np.ones((3 * H, H), np.float32),
            "decoder.layers.0.mlp.linear_fc1.layer_norm_weight": np.ones(H, np.float32),
            "decoder.layers.0.mlp.linear_fc1.weight": np.ones((2 * H, H), np.float32),
            "decoder.layers.1.self_attention.linear_qkv.layer_norm_weight": np.ones(H, np.float32),
            "decoder.layers.1.mlp.linear_fc1.layer_norm_weight": np.ones(H, np.float32),
            "decoder.final_layernorm.weight": final,
        },
        None,
    )
    result = diff(mcore, hf)
    assert result.only_a == () and result.only_b == ()
    final_row = next(d for d in result.norms if d.role is Role.final)
    assert final_row.matched_by is MatchedBy.identity
    assert final_row.name_a == "decoder.final_layernorm.weight"
    assert final_row.name == "model.norm.weight"
    assert final_row.rel_change == 0.0
    assert all(d.matched_by is MatchedBy.identity for d in result.norms)


def test_ambiguous_identities_are_not_guessed(tmp_path: Path) -> None:
    norms = measure(_ckpt(tmp_path, "a", np.ones(H, np.float32))).report.norms
    pairs, only_a, only_b = pair_norms(norms, norms)
    assert len(pairs) == len(norms) and not only_a and not only_b
    assert {p[2] for p in pairs} == {MatchedBy.name}
    # Two norms sharing module/depth/layer/role/dim on each side (like a layer's q_norm and
    # k_norm) under names that differ between A and B: pairing them would be a guess.
    q = norms[0]
    side_a = [replace(q, name="a.q_norm.weight"), replace(q, name="a.k_norm.weight")]
    side_b = [replace(q, name="b.q_norm.weight"), replace(q, name="b.k_norm.weight")]
    pairs, only_a, only_b = pair_norms(side_a, side_b)
    assert pairs == []
    assert only_a == ["a.q_norm.weight", "a.k_norm.weight"]
    assert only_b == ["b.q_norm.weight", "b.k_norm.weight"]
    # One of each: an unambiguous identity pairs.
    pairs, only_a, only_b = pair_norms(side_a[:1], side_b[:1])
    assert [(p[0].name, p[1].name, p[2]) for p in pairs] == [
        ("a.q_norm.weight", "b.q_norm.weight", MatchedBy.identity)
    ]


def test_qk_norms_pair_by_the_projection_their_names_say(tmp_path: Path) -> None:
    """Megatron's q_layernorm/k_layernorm against HF's q_norm/k_norm of the same layer: each
    pairs with its own side; names saying no side (per-head `norms.0`) stay unpaired."""
    norm = measure(_ckpt(tmp_path, "a", np.ones(H, np.float32))).report.norms[0]
    qk = replace(norm, role=Role.qk, group=None)
    megatron = [
        replace(qk, name="decoder.layers.0.self_attention.q_layernorm.weight"),
        replace(qk, name="decoder.layers.0.self_attention.k_layernorm.weight"),
    ]
    hf = [
        replace(qk, name="model.layers.0.self_attn.k_norm.weight"),
        replace(qk, name="model.layers.0.self_attn.q_norm.weight"),
    ]
    pairs, only_a, only_b = pair_norms(megatron, hf)
    assert sorted((a.name.split(".")[-2], b.name.split(".")[-2]) for a, b, _ in pairs) == [
        ("k_layernorm", "k_norm"),
        ("q_layernorm", "q_norm"),
    ]
    assert not only_a and not only_b
    heads = [replace(qk, name=f"a.attn.norms.{h}.weight") for h in range(2)]
    other = [replace(qk, name=f"b.attn.norms_{h}.weight") for h in range(2)]
    pairs, only_a, only_b = pair_norms(heads, other)
    assert pairs == [] and len(only_a) == len(only_b) == 2


def test_dimension_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    a = _ckpt(tmp_path, "a", np.ones(H, np.float32))
    b = write_checkpoint(tmp_path / "b", llama_tensors(hidden=16), llama_config(hidden=16))
    with pytest.raises(AnalysisError, match=r"8 entries .* but 16"):
        diff(a, b)
    result = runner.invoke(app, ["diff", str(a), str(b)])
    assert result.exit_code == 2
    assert result.stderr.count("Error:") == 1 and "Traceback" not in result.stderr


def test_unrelated_checkpoints_are_an_error(tmp_path: Path) -> None:
    a = _ckpt(tmp_path, "a", np.ones(H, np.float32))
    b = write_checkpoint(
        tmp_path / "b",
        {
            "h.0.ln_1.weight": np.ones(4, np.float32),
            "h.0.attn.c_attn.weight": np.ones((4, 12), np.float32),
        },
        {"model_type": "gpt2", "n_embd": 4, "n_layer": 1},
    )
    result = runner.invoke(app, ["diff", str(a), str(b)])
    assert result.exit_code == 2
    assert "no norm of" in result.stderr


@pytest.fixture
def drifting(tmp_path: Path) -> tuple[Path, Path]:
    a = _ckpt(tmp_path, "a", np.ones(H, np.float32))
    b = _ckpt(
        tmp_path,
        "b",
        np.full(H, 0.3, np.float32),
        **{"0.input_layernorm.weight": np.full(H, 1.1, np.float32)},
    )
    return a, b


def test_cli_json_and_csv(drifting: tuple[Path, Path]) -> None:
    a, b = drifting
    result = runner.invoke(app, ["diff", str(a), str(b), "--format", "json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert list(data) == [
        "schema_version",
        "normscope_version",
        "a",
        "b",
        "model_a",
        "model_b",
        "norms",
        "only_a",
        "only_b",
        "roles",
        "band_changes",
        "warnings",
    ]
    assert data["band_changes"] == 1
    first = data["norms"][0]
    assert first["name"] == "model.norm.weight"
    assert first["rel_change"] == pytest.approx(0.7)
    assert first["band_a"] == "balanced" and first["band_b"] == "collapse"
    csv = runner.invoke(app, ["diff", str(a), str(b), "--format", "csv"])
    lines = csv.stdout.splitlines()
    header = "name,name_a,matched_by,module,mtp_depth,layer,role,group,dim,ratio_a"
    assert lines[0].startswith(header)
    assert len(lines) == 1 + len(data["norms"])


def test_cli_table_and_markdown(drifting: tuple[Path, Path]) -> None:
    a, b = drifting
    table = runner.invoke(app, ["diff", str(a), str(b)])
    assert table.exit_code == 0
    for text in (
        "biggest movers",
        "band transitions",
        "relative change per role",
        "70.0%",
        "balanced→collapse",
    ):
        assert text in table.stdout
    md = runner.invoke(app, ["diff", str(a), str(b), "--format", "markdown", "--all"])
    assert "| `model.norm.weight` | - | final |" in md.stdout


@pytest.mark.parametrize(
    ("args", "code"),
    [
        ([], 0),
        (["--fail-on", "band-change"], 1),
        (["--fail-on", "out-of-band"], 1),
        (["--max-drift", "0.8"], 0),
        (["--max-drift", "0.5"], 1),
        # The layer-0 input norm moved 10%: only a scope that holds it trips a 5% limit.
        (["--max-drift", "0.05", "--scope", "role=attn_input"], 1),
        (["--fail-on", "band-change", "--scope", "role=attn_input"], 0),
        (["--max-drift", "-1"], 2),
        (["--scope", "role=nonsense"], 2),
    ],
)
def test_cli_gates(drifting: tuple[Path, Path], args: list[str], code: int) -> None:
    a, b = drifting
    result = runner.invoke(app, ["diff", str(a), str(b), "-q", *args])
    assert result.exit_code == code, result.stderr
    if code == 1:
        assert "FAIL:" in result.stderr


def test_table_shows_paths_with_brackets_verbatim(tmp_path: Path) -> None:
    # `[x]` is rich markup syntax: a header value must be shown as text, not swallowed.
    a = _ckpt(tmp_path / "run[x]", "a", np.ones(H, np.float32))
    result = runner.invoke(app, ["diff", str(a), str(a), "-q"])
    assert result.exit_code == 0
    assert result.stdout.count("run[x]") == 2  # the A and B lines of the header
