"""normscope.fold: every metric against an independent numpy computation on real matrices.

Each fixture is written with the safetensors library (torch for BF16/FP8); the reference side
reads it back with `safe_open(framework="pt")`, dequantises FP8 with numpy block arithmetic,
builds the folded matrix W·diag(γ) explicitly and measures it: the fold's streamed column
reductions are never reused. Consumers are named here by hand, per architecture.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, write_checkpoint
from safetensors import safe_open

from normscope.errors import NormscopeError, UsageError
from normscope.fold import (
    FoldNorm,
    FoldOptions,
    FoldReport,
    FoldStatus,
    TorchMissing,
    fold,
    parse_memory,
    pipeline,
    tasks,
)
from normscope.fold.consumers import ExpertChoice
from normscope.fold.metrics import spearman, top_count
from normscope.render.fold import (
    render_fold_csv,
    render_fold_json,
    render_fold_markdown,
    render_fold_table,
)
from normscope.sources.store import read_cache_file

CPU = FoldOptions(device="cpu")
Cols = tuple[int, int] | None


# --- fixtures ----------------------------------------------------------------------------------


class Maker:
    """Random matrices with uneven column scales (so c is not flat) and uneven gains."""

    def __init__(self, seed: int = 0) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.out: dict[str, torch.Tensor] = {}

    def mat(self, name: str, rows: int, cols: int, dtype: torch.dtype = torch.bfloat16) -> None:
        scale = torch.rand(cols, generator=self.gen) * 2 + 0.1
        w = torch.randn(rows, cols, generator=self.gen) * scale * 0.05
        self.out[name] = w.to(dtype)

    def fp8(self, name: str, rows: int, cols: int) -> None:
        w = torch.randn(rows, cols, generator=self.gen) * (
            torch.rand(cols, generator=self.gen) + 0.5
        )
        self.out[name] = w.to(torch.float8_e4m3fn)
        blocks = (-(-rows // 128), -(-cols // 128))
        self.out[name + "_scale_inv"] = torch.rand(*blocks, generator=self.gen) * 0.02 + 0.001

    def gain(self, name: str, n: int, offset: bool = False) -> None:
        g = 0.3 + 1.4 * torch.rand(n, generator=self.gen)
        self.out[name] = (g - 1.0 if offset else g).to(torch.bfloat16)


def llama(m: Maker, hidden: int = 64, layers: int = 2, tied: bool = False) -> dict[str, Any]:
    m.mat("model.embed_tokens.weight", 96, hidden)
    for i in range(layers):
        p = f"model.layers.{i}"
        m.gain(f"{p}.input_layernorm.weight", hidden)
        for proj, rows in (("q_proj", hidden), ("k_proj", hidden // 2), ("v_proj", hidden // 2)):
            m.mat(f"{p}.self_attn.{proj}.weight", rows, hidden)
        m.mat(f"{p}.self_attn.o_proj.weight", hidden, hidden)
        m.gain(f"{p}.post_attention_layernorm.weight", hidden)
        m.mat(f"{p}.mlp.gate_proj.weight", 2 * hidden, hidden)
        m.mat(f"{p}.mlp.up_proj.weight", 2 * hidden, hidden)
        m.mat(f"{p}.mlp.down_proj.weight", hidden, 2 * hidden)
    m.gain("model.norm.weight", hidden)
    if not tied:
        m.mat("lm_head.weight", 96, hidden)
    return {"model_type": "llama", "hidden_size": hidden, "num_hidden_layers": layers}


def deepseek(m: Maker, hidden: int = 128, experts: int = 16, split: bool = False) -> dict[str, Any]:
    """MLA + FP8 block scales + MoE (layers 1, 2) + one MTP depth at layer 3."""

    def layer(p: str, dense: bool) -> None:
        m.gain(f"{p}.input_layernorm.weight", hidden)
        m.fp8(f"{p}.self_attn.q_a_proj.weight", 64, hidden)
        m.gain(f"{p}.self_attn.q_a_layernorm.weight", 64)
        m.fp8(f"{p}.self_attn.q_b_proj.weight", 192, 64)
        m.fp8(f"{p}.self_attn.kv_a_proj_with_mqa.weight", 40, hidden)  # ragged: 40 rows
        m.gain(f"{p}.self_attn.kv_a_layernorm.weight", 32)
        m.fp8(f"{p}.self_attn.kv_b_proj.weight", 160, 32)
        m.fp8(f"{p}.self_attn.o_proj.weight", hidden, hidden)
        m.gain(f"{p}.post_attention_layernorm.weight", hidden)
        if dense:
            m.fp8(f"{p}.mlp.gate_proj.weight", 256, hidden)
            m.fp8(f"{p}.mlp.up_proj.weight", 256, hidden)
            m.fp8(f"{p}.mlp.down_proj.weight", hidden, 256)
            return
        m.mat(f"{p}.mlp.gate.weight", experts, hidden)
        for e in [*(f"experts.{i}" for i in range(experts)), "shared_experts"]:
            m.fp8(f"{p}.mlp.{e}.gate_proj.weight", 32, hidden)
            m.fp8(f"{p}.mlp.{e}.up_proj.weight", 32, hidden)
            m.fp8(f"{p}.mlp.{e}.down_proj.weight", hidden, 32)

    m.mat("model.embed_tokens.weight", 200, hidden)
    for i in range(3):
        layer(f"model.layers.{i}", dense=i == 0)
    m.gain("model.norm.weight", hidden)
    m.mat("lm_head.weight", 200, hidden)
    p = "model.layers.3"
    m.gain(f"{p}.enorm.weight", hidden)
    m.gain(f"{p}.hnorm.weight", hidden)
    if split:
        m.mat(f"{p}.e_proj.weight", hidden, hidden)
        m.mat(f"{p}.h_proj.weight", hidden, hidden)
    else:
        m.mat(f"{p}.eh_proj.weight", hidden, 2 * hidden)
    layer(p, dense=False)
    m.gain(f"{p}.shared_head.norm.weight", hidden)
    m.mat(f"{p}.shared_head.head.weight", 200, hidden)
    return {
        "model_type": "deepseek_v3",
        "hidden_size": hidden,
        "num_hidden_layers": 3,
        "num_nextn_predict_layers": 1,
        "q_lora_rank": 64,
        "kv_lora_rank": 32,
    }


def mimo(m: Maker, hidden: int = 64) -> dict[str, Any]:
    config = llama(m, hidden, layers=1)
    p = "model.mtp_layers.0"
    m.gain(f"{p}.token_layernorm.weight", hidden)
    m.gain(f"{p}.hidden_layernorm.weight", hidden)
    # The hidden half is made 4x larger, so a swapped attribution changes every number.
    w = torch.randn(hidden, 2 * hidden, generator=m.gen) * 0.02
    w[:, :hidden] *= 4
    m.out[f"{p}.input_proj.weight"] = w.to(torch.bfloat16)
    m.gain(f"{p}.final_layernorm.weight", hidden)
    return {**config, "model_type": "mimo", "num_nextn_predict_layers": 1}


def write(tmp_path: Path, name: str, build: Any, **kw: Any) -> Path:
    m = Maker()
    config = build(m, **kw)
    return write_checkpoint(tmp_path / name, m.out, config, shards=2)


# --- the independent reference -------------------------------------------------------------------


def _load(directory: Path) -> dict[str, np.ndarray]:
    out = {}
    for shard in sorted(directory.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            for k in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                out[k] = f.get_tensor(k).to(torch.float64).numpy()
    # Dequantise FP8 by explicit 128 x 128 block expansion.
    for k in [k for k in out if k.endswith("_scale_inv")]:
        w = out[k[: -len("_scale_inv")]]
        s = np.kron(out[k], np.ones((128, 128)))[: w.shape[0], : w.shape[1]]
        out[k[: -len("_scale_inv")]] = w * s
    return out


def reference(
    t: Mapping[str, np.ndarray],
    gain: np.ndarray,
    parts: Sequence[tuple[str, Cols]],
    rows_axis: bool = False,
) -> dict[str, float]:
    """Metrics of W·diag(γ), W the consumers (their column ranges) stacked row-wise."""
    mats = []
    for name, cols in parts:
        w = t[name].T if rows_axis else t[name]
        mats.append(w if cols is None else w[:, cols[0] : cols[1]])
    w = np.vstack(mats)
    folded = w * gain[None, :]
    col = np.sqrt((folded**2).sum(0))  # |γ_i| c_i
    c = np.sqrt((w**2).sum(0))
    order = np.sort(col**2)[::-1]
    k = max(1, gain.size // 100)
    ra, rb = _average_ranks(np.abs(gain)), _average_ranks(c)
    return {
        "folded_ratio": float(np.linalg.norm(folded) / np.linalg.norm(w)),
        "compensation": float(np.corrcoef(ra, rb)[0, 1]),
        "top_share": float(order[:k].sum() / order.sum()),
        "max_over_median": float(col.max() / np.median(col)),
        "frob": float(np.linalg.norm(folded)),
    }


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ordinal ranks, then every group of equal values given its mean rank (bf16 gains tie)."""
    ranks = np.empty(x.size)
    ranks[np.argsort(x, kind="stable")] = np.arange(1, x.size + 1)
    for value in np.unique(x):
        same = x == value
        ranks[same] = ranks[same].mean()
    return ranks


def by_name(report: FoldReport) -> dict[str, FoldNorm]:
    return {n.name: n for n in report.norms}


def assert_matches(
    n: FoldNorm, t: Mapping[str, np.ndarray], parts: Sequence[tuple[str, Cols]], **kw: Any
) -> dict[str, float]:
    assert n.status is FoldStatus.folded, (n.name, n.reason)
    assert sorted(n.consumers or n.producers) == sorted({p for p, _ in parts})
    gain = t[n.name] + (1.0 if n.parametrization.value == "offset" else 0.0)
    ref = reference(t, gain, parts, **kw)
    assert n.folded_ratio == pytest.approx(ref["folded_ratio"], rel=1e-6)
    assert n.compensation == pytest.approx(ref["compensation"], abs=1e-9)
    assert n.top_share == pytest.approx(ref["top_share"], rel=1e-6)
    assert n.max_over_median == pytest.approx(ref["max_over_median"], rel=1e-6)
    assert n.folded_band is not None
    return ref


# --- metrics on each architecture ---------------------------------------------------------------


def test_dense_llama(tmp_path: Path) -> None:
    d = write(tmp_path, "llama", llama)
    report = fold(d, CPU)
    t, n = _load(d), by_name(report)
    for i in range(2):
        p = f"model.layers.{i}"
        assert_matches(
            n[f"{p}.input_layernorm.weight"],
            t,
            [(f"{p}.self_attn.{x}_proj.weight", None) for x in "qkv"],
        )
        assert_matches(
            n[f"{p}.post_attention_layernorm.weight"],
            t,
            [(f"{p}.mlp.gate_proj.weight", None), (f"{p}.mlp.up_proj.weight", None)],
        )
    # The final norm over the head: the folded ratio is the logit scale ‖W·diag γ‖_F / ‖W‖_F.
    final = n["model.norm.weight"]
    assert_matches(final, t, [("lm_head.weight", None)])
    w, g = t["lm_head.weight"], t["model.norm.weight"]
    assert final.folded_ratio == pytest.approx(np.linalg.norm(w * g) / np.linalg.norm(w), rel=1e-6)
    assert report.fold_summary.folded == 5
    assert report.io.bytes_read == report.io.bytes_read  # set
    assert report.plan.bytes_planned == sum(
        t[k].size * 2 for k in {c for x in report.norms for c in x.consumers}
    )


def test_fused_qkv_and_tied_head(tmp_path: Path) -> None:
    m = Maker(1)
    hidden = 48
    m.mat("model.embed_tokens.weight", 80, hidden)
    m.gain("model.layers.0.input_layernorm.weight", hidden)
    m.mat("model.layers.0.self_attn.qkv_proj.weight", 3 * hidden, hidden)
    m.mat("model.layers.0.self_attn.o_proj.weight", hidden, hidden)
    m.gain("model.layers.0.post_attention_layernorm.weight", hidden)
    m.mat("model.layers.0.mlp.gate_up_proj.weight", 4 * hidden, hidden)
    m.mat("model.layers.0.mlp.down_proj.weight", hidden, 2 * hidden)
    m.gain("model.norm.weight", hidden)
    config = {"model_type": "phi3", "hidden_size": hidden, "num_hidden_layers": 1}
    d = write_checkpoint(tmp_path / "phi3", m.out, config)
    t, n = _load(d), by_name(fold(d, CPU))
    assert_matches(
        n["model.layers.0.input_layernorm.weight"],
        t,
        [("model.layers.0.self_attn.qkv_proj.weight", None)],
    )
    assert_matches(
        n["model.layers.0.post_attention_layernorm.weight"],
        t,
        [("model.layers.0.mlp.gate_up_proj.weight", None)],
    )
    assert_matches(n["model.norm.weight"], t, [("model.embed_tokens.weight", None)])


def test_deepseek_mla_fp8_moe_mtp(tmp_path: Path) -> None:
    d = write(tmp_path, "ds", deepseek)
    report = fold(d, CPU)
    t, n = _load(d), by_name(report)
    sampled = sorted({round(k * 15 / 7) for k in range(8)})
    for p in ("model.layers.1", "model.layers.3"):  # a trunk MoE layer and the MTP block
        assert_matches(
            n[f"{p}.input_layernorm.weight"],
            t,
            [
                (f"{p}.self_attn.q_a_proj.weight", None),
                (f"{p}.self_attn.kv_a_proj_with_mqa.weight", None),
            ],
        )
        assert_matches(
            n[f"{p}.self_attn.q_a_layernorm.weight"], t, [(f"{p}.self_attn.q_b_proj.weight", None)]
        )
        assert_matches(
            n[f"{p}.self_attn.kv_a_layernorm.weight"],
            t,
            [(f"{p}.self_attn.kv_b_proj.weight", None)],
        )
        moe = [(f"{p}.mlp.gate.weight", None)] + [
            (f"{p}.mlp.{e}.{x}_proj.weight", None)
            for e in ["shared_experts", *(f"experts.{i}" for i in sampled)]
            for x in ("gate", "up")
        ]
        row = n[f"{p}.post_attention_layernorm.weight"]
        assert_matches(row, t, moe)
        assert (row.experts_sampled, row.experts_total) == (8, 16)
    assert_matches(
        n["model.layers.0.post_attention_layernorm.weight"],
        t,
        [
            ("model.layers.0.mlp.gate_proj.weight", None),
            ("model.layers.0.mlp.up_proj.weight", None),
        ],
    )
    # MTP: [embedding | hidden] halves of eh_proj; the MTP head; the balance on both norms.
    e = assert_matches(
        n["model.layers.3.enorm.weight"], t, [("model.layers.3.eh_proj.weight", (0, 128))]
    )
    h = assert_matches(
        n["model.layers.3.hnorm.weight"], t, [("model.layers.3.eh_proj.weight", (128, 256))]
    )
    balance = math.log2(e["frob"] / h["frob"])
    assert n["model.layers.3.enorm.weight"].input_balance == pytest.approx(balance, rel=1e-6)
    assert n["model.layers.3.hnorm.weight"].input_balance == pytest.approx(balance, rel=1e-6)
    assert_matches(
        n["model.layers.3.shared_head.norm.weight"],
        t,
        [("model.layers.3.shared_head.head.weight", None)],
    )
    assert_matches(n["model.norm.weight"], t, [("lm_head.weight", None)])


def test_experts_all_and_shared(tmp_path: Path) -> None:
    d = write(tmp_path, "ds", deepseek)
    t = _load(d)
    p = "model.layers.1"
    every = by_name(fold(d, FoldOptions(device="cpu", experts="all")))
    parts = [(f"{p}.mlp.gate.weight", None)] + [
        (f"{p}.mlp.{e}.{x}_proj.weight", None)
        for e in ["shared_experts", *(f"experts.{i}" for i in range(16))]
        for x in ("gate", "up")
    ]
    assert_matches(every[f"{p}.post_attention_layernorm.weight"], t, parts)
    shared = by_name(fold(d, FoldOptions(device="cpu", experts="shared")))
    parts = [(f"{p}.mlp.gate.weight", None)] + [
        (f"{p}.mlp.shared_experts.{x}_proj.weight", None) for x in ("gate", "up")
    ]
    row = shared[f"{p}.post_attention_layernorm.weight"]
    assert_matches(row, t, parts)
    assert row.experts_sampled == 0
    assert ExpertChoice.parse("3").pick(16) == [0, 8, 15]
    with pytest.raises(UsageError):
        fold(d, FoldOptions(device="cpu", experts="many"))


def test_split_e_h_projections(tmp_path: Path) -> None:
    d = write(tmp_path, "ds-split", deepseek, split=True)
    t, n = _load(d), by_name(fold(d, CPU))
    e = assert_matches(
        n["model.layers.3.enorm.weight"], t, [("model.layers.3.e_proj.weight", None)]
    )
    h = assert_matches(
        n["model.layers.3.hnorm.weight"], t, [("model.layers.3.h_proj.weight", None)]
    )
    assert n["model.layers.3.enorm.weight"].input_balance == pytest.approx(
        math.log2(e["frob"] / h["frob"]), rel=1e-6
    )


def test_mimo_concatenates_hidden_first(tmp_path: Path) -> None:
    d = write(tmp_path, "mimo", mimo)
    t, n = _load(d), by_name(fold(d, CPU))
    p = "model.mtp_layers.0"
    e = assert_matches(n[f"{p}.token_layernorm.weight"], t, [(f"{p}.input_proj.weight", (64, 128))])
    h = assert_matches(n[f"{p}.hidden_layernorm.weight"], t, [(f"{p}.input_proj.weight", (0, 64))])
    balance = n[f"{p}.token_layernorm.weight"].input_balance
    assert balance == pytest.approx(math.log2(e["frob"] / h["frob"]), rel=1e-6)
    assert balance is not None and balance < -1  # the 4x hidden half dominates
    assert_matches(n[f"{p}.final_layernorm.weight"], t, [("lm_head.weight", None)])


def test_output_norms_report_producers(tmp_path: Path) -> None:
    m = Maker(2)
    hidden = 32
    m.mat("model.embed_tokens.weight", 50, hidden)
    p = "model.layers.0"
    for norm in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm"):
        m.gain(f"{p}.{norm}.weight", hidden, offset=True)
    m.gain(f"{p}.post_feedforward_layernorm.weight", hidden, offset=True)
    for proj in ("q_proj", "k_proj", "v_proj"):
        m.mat(f"{p}.self_attn.{proj}.weight", hidden, hidden)
    m.mat(f"{p}.self_attn.o_proj.weight", hidden, hidden)
    m.mat(f"{p}.mlp.gate_proj.weight", 64, hidden)
    m.mat(f"{p}.mlp.up_proj.weight", 64, hidden)
    m.mat(f"{p}.mlp.down_proj.weight", hidden, 64)
    m.gain("model.norm.weight", hidden, offset=True)
    config = {"model_type": "gemma2", "hidden_size": hidden, "num_hidden_layers": 1}
    d = write_checkpoint(tmp_path / "gemma2", m.out, config)
    t, n = _load(d), by_name(fold(d, CPU))
    post = n[f"{p}.post_attention_layernorm.weight"]
    assert post.consumers == ()
    assert_matches(post, t, [(f"{p}.self_attn.o_proj.weight", None)], rows_axis=True)
    assert_matches(
        n[f"{p}.post_feedforward_layernorm.weight"],
        t,
        [(f"{p}.mlp.down_proj.weight", None)],
        rows_axis=True,
    )
    # Offset (1 + w) gains are folded as effective gains; the head is the tied embedding.
    assert_matches(
        n[f"{p}.pre_feedforward_layernorm.weight"],
        t,
        [(f"{p}.mlp.gate_proj.weight", None), (f"{p}.mlp.up_proj.weight", None)],
    )
    assert_matches(n["model.norm.weight"], t, [("model.embed_tokens.weight", None)])


def test_gpt2_conv1d_consumers_are_rows(tmp_path: Path) -> None:
    m = Maker(3)
    hidden = 32
    m.mat("wte.weight", 60, hidden, torch.float32)
    m.out["h.0.ln_1.weight"] = torch.rand(hidden, generator=m.gen) + 0.5
    m.out["h.0.ln_1.bias"] = torch.zeros(hidden)
    m.mat("h.0.attn.c_attn.weight", hidden, 3 * hidden, torch.float32)  # Conv1D: (in, out)
    m.out["h.0.ln_2.weight"] = torch.rand(hidden, generator=m.gen) + 0.5
    m.mat("h.0.mlp.c_fc.weight", hidden, 4 * hidden, torch.float32)
    m.out["ln_f.weight"] = torch.rand(hidden, generator=m.gen) + 0.5
    config = {"model_type": "gpt2", "n_embd": hidden, "n_layer": 1}
    d = write_checkpoint(tmp_path / "gpt2", m.out, config)
    t, n = _load(d), by_name(fold(d, CPU))
    assert_matches(n["h.0.ln_1.weight"], t, [("h.0.attn.c_attn.weight", None)], rows_axis=True)
    assert_matches(n["h.0.ln_2.weight"], t, [("h.0.mlp.c_fc.weight", None)], rows_axis=True)
    assert_matches(n["ln_f.weight"], t, [("wte.weight", None)])


def test_qk_norms_are_not_applicable_once(tmp_path: Path) -> None:
    m = Maker(4)
    config = llama(m, 64, layers=2)
    for i in range(2):
        m.gain(f"model.layers.{i}.self_attn.q_norm.weight", 16)
        m.gain(f"model.layers.{i}.self_attn.k_norm.weight", 16)
    d = write_checkpoint(tmp_path / "qwen3", m.out, {**config, "model_type": "qwen3"})
    report = fold(d, CPU)
    qk = [n for n in report.norms if n.role.value == "qk"]
    assert len(qk) == 4
    assert all(n.status is FoldStatus.not_applicable and n.folded_ratio is None for n in qk)
    said = [w for w in report.warnings if "QK" in w]
    assert len(said) == 1 and said[0].startswith("4 QK norm(s)")


def test_equal_column_norms_give_the_scan_ratio(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(5)
    hidden = 64
    w = torch.randn(3 * hidden, hidden, generator=gen, dtype=torch.float64)
    w = w / w.norm(dim=0, keepdim=True) * 0.7  # every column has norm 0.7
    tensors = {
        "model.layers.0.input_layernorm.weight": torch.rand(hidden, generator=gen) * 2,
        "model.layers.0.self_attn.qkv_proj.weight": w.float(),
        "model.norm.weight": torch.rand(hidden, generator=gen) * 0.5,
        "lm_head.weight": (w[:hidden] / w[:hidden].norm(dim=0, keepdim=True)).float(),
    }
    config = {"model_type": "phi3", "hidden_size": hidden, "num_hidden_layers": 1}
    d = write_checkpoint(tmp_path / "flat", tensors, config)
    report = fold(d, CPU)
    for n in report.norms:
        assert n.status is FoldStatus.folded
        assert n.folded_ratio == pytest.approx(n.ratio, rel=1e-6)


def test_real_minilm_layernorm_into_the_next_dense_layer(minilm: Path) -> None:
    d = minilm
    report = fold(d, CPU)
    t, n = _load(d), by_name(report)
    assert len(report.norms) == 13
    qkv = [f"encoder.layer.0.attention.self.{x}.weight" for x in ("query", "key", "value")]
    assert_matches(n["embeddings.LayerNorm.weight"], t, [(q, None) for q in qkv])
    for i in range(6):
        p = f"encoder.layer.{i}"
        assert_matches(
            n[f"{p}.attention.output.LayerNorm.weight"],
            t,
            [(f"{p}.intermediate.dense.weight", None)],
        )
        after = (
            [
                (f"encoder.layer.{i + 1}.attention.self.{x}.weight", None)
                for x in ("query", "key", "value")
            ]
            if i < 5
            else [("pooler.dense.weight", None)]
        )
        assert_matches(n[f"{p}.output.LayerNorm.weight"], t, after)


# --- the data path -----------------------------------------------------------------------------


def test_row_blocks_within_a_small_budget_give_the_same_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = write(tmp_path, "ds", deepseek)
    whole = fold(d, CPU)
    monkeypatch.setattr(tasks, "MAX_BLOCK", 3000)  # ~23 rows of a 128-wide FP8 matrix
    blocked = fold(d, CPU)
    assert blocked.plan.blocks > 3 * whole.plan.blocks
    assert blocked.plan.block_bytes == 3000
    # Every block in flight (reading, queued, reducing) fits the bound.
    assert blocked.plan.peak_buffered_bytes <= (pipeline.DEPTH + 2) * 3000
    for a, b in zip(whole.norms, blocked.norms, strict=True):
        for field in ("folded_ratio", "compensation", "top_share", "max_over_median"):
            x, y = getattr(a, field), getattr(b, field)
            assert (x is None and y is None) or x == pytest.approx(y, rel=1e-6), (a.name, field)


@pytest.mark.parametrize(("name", "build"), [("ds", deepseek), ("llama", llama)])
def test_the_numbers_do_not_depend_on_the_block_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, build: Any
) -> None:
    # float32 sums over fixed windows of rows, assembled across blocks: equal to the bit
    d = write(tmp_path, name, build)
    whole = fold(d, CPU)
    monkeypatch.setattr(tasks, "MAX_BLOCK", 3000)
    blocked = fold(d, CPU)
    assert blocked.plan.blocks > 3 * whole.plan.blocks
    fields = ("folded_ratio", "compensation", "top_share", "max_over_median", "input_balance")
    numbers = [[getattr(n, f) for f in fields] for n in whole.norms]
    assert [[getattr(n, f) for f in fields] for n in blocked.norms] == numbers
    assert sum(x is not None for row in numbers for x in row) > 10


def test_dry_run_reads_no_matrix(tmp_path: Path) -> None:
    d = write(tmp_path, "llama", llama)
    full = fold(d, CPU)
    dry = fold(d, FoldOptions(device="cpu", dry_run=True))
    assert dry.plan.bytes_planned == full.plan.bytes_planned > 0
    assert full.io.bytes_read - dry.io.bytes_read == full.plan.bytes_planned
    assert {n.status for n in dry.norms} == {FoldStatus.planned, FoldStatus.no_consumer} - {
        FoldStatus.no_consumer
    }
    assert all(n.folded_ratio is None for n in dry.norms)


def test_progress_is_called_with_bytes(tmp_path: Path) -> None:
    d = write(tmp_path, "llama", llama)
    seen: list[pipeline.FoldProgress] = []
    report = fold(d, CPU, progress=seen.append)
    assert seen and seen[-1].bytes_done == seen[-1].bytes_total == report.plan.bytes_planned
    assert all(p.rate >= 0 for p in seen)


def test_undecodable_consumers_are_skipped_with_the_reason(tmp_path: Path) -> None:
    m = Maker(6)
    config = llama(m, 32, layers=1)
    for proj in ("gate_proj", "up_proj"):
        name = f"model.layers.0.mlp.{proj}.weight"
        m.out[name] = torch.randint(-127, 127, (64, 32), generator=m.gen, dtype=torch.int8)
        m.out[name[: -len("weight")] + "SCB"] = torch.rand(64, generator=m.gen)
    d = write_checkpoint(tmp_path / "bnb", m.out, config)
    report = fold(d, CPU)
    row = by_name(report)["model.layers.0.post_attention_layernorm.weight"]
    assert row.status is FoldStatus.skipped and row.folded_ratio is None
    assert "bitsandbytes" in (row.reason or "")
    assert any("bitsandbytes" in w for w in report.warnings)
    assert len(report.plan.skipped_tensors) == 2


def test_hub_fold_reads_only_the_consumer_ranges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = write(tmp_path, "ds", deepseek)
    local = fold(d, CPU)
    server = _start_hub(monkeypatch, tmp_path, d)
    try:
        remote = fold("org/ds-fold", CPU)
    finally:
        server.stop()
    assert [n.folded_ratio for n in remote.norms] == [n.folded_ratio for n in local.norms]
    assert remote.io.bytes_read == local.io.bytes_read
    # What the server sent: headers, norms, config/index and the consumer ranges, within 10%.
    useful = remote.io.bytes_read + remote.io.metadata_bytes
    assert remote.io.bytes_transferred <= 1.1 * useful
    assert server.bytes_sent <= 1.1 * useful + 20_000  # + the model_info answer
    assert remote.io.bytes_read < 0.8 * remote.io.bytes_total  # o_proj, down_proj, experts left


def _start_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, directory: Path) -> Any:
    from hubserver import FakeHub, point_huggingface_hub_at

    server = FakeHub().start()
    server.add_repo("org/ds-fold", directory)
    point_huggingface_hub_at(server, monkeypatch, tmp_path)
    return server


# --- options, errors, renderers ----------------------------------------------------------------


def test_without_torch_fold_raises_with_the_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = write(tmp_path, "llama", llama)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    with pytest.raises(TorchMissing) as info:
        fold(d, CPU)
    assert isinstance(info.value, NormscopeError)
    assert info.value.hint == 'pip install "normscope[torch]"'


def test_importing_fold_does_not_import_torch() -> None:
    code = "import sys, normscope, normscope.fold; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


DRY_RUN = """
import contextlib, io, json, sys
from normscope.cli import main
from normscope.fold import FoldOptions, fold
from normscope.render.fold import render_fold_json
sys.argv = ["normscope", "fold", {path!r}, "--dry-run", "--device", {device!r}, "--max-memory",
            "256MB"]
text = io.StringIO()
with contextlib.redirect_stdout(text):
    try:
        main()
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code
report = fold({path!r}, FoldOptions(device={device!r}, max_memory=256 * 1000**2, dry_run=True))
print(json.dumps({{"out": text.getvalue(), "report": json.loads(render_fold_json(report)),
                  "torch": sorted(m for m in sys.modules if m.split(".")[0] == "torch")}}))
"""


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda"])
def test_dry_run_imports_no_torch_and_names_the_device_as_asked(
    tmp_path: Path, device: str
) -> None:
    d = write(tmp_path, "ds", deepseek)
    code = DRY_RUN.format(path=str(d), device=device)
    done = subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=REPO_ROOT, capture_output=True, text=True
    )
    data = json.loads(done.stdout)
    assert data["torch"] == []
    # The same plan as a dry run in a process that has torch, and as the fold that reads it.
    memory = 256 * 1000**2
    here = json.loads(render_fold_json(fold(d, FoldOptions(device="cpu", max_memory=memory))))
    dry = json.loads(
        render_fold_json(fold(d, FoldOptions(device="cpu", max_memory=memory, dry_run=True)))
    )
    plan = data["report"]["plan"]
    assert plan["bytes_planned"] == here["plan"]["bytes_planned"] > 0
    assert plan["tensors"] == here["plan"]["tensors"] > 0
    assert data["out"] == (
        f"{plan['bytes_planned']} bytes ({plan['bytes_planned'] / 1000:.1f} kB) in "
        f"{plan['tensors']} matrices would be read from {d}\n"
    )
    # `auto` stays unresolved (torch is not imported to ask it); its block size is a CUDA
    # run's: six slots (2 queued + reading + reducing + 2 pinned), at most 64 MiB; a CPU run's
    # four, at most 2 MiB (the 256 MB budget gives 34.3 and 51.4 MB).
    largest, slots = (2 << 20, 4) if device == "cpu" else (64 << 20, 6)
    assert plan["device"] == device
    assert plan["block_bytes"] == min(largest, (memory - (48 << 20)) // slots)
    for report in (data["report"], dry):
        report["io"]["seconds"] = 0.0
        report["plan"]["device"] = report["plan"]["block_bytes"] = None
    assert data["report"] == dry


def test_options_are_checked(tmp_path: Path) -> None:
    d = write(tmp_path, "llama", llama)
    with pytest.raises(UsageError, match="at least"):
        fold(d, FoldOptions(device="cpu", max_memory=1000))
    with pytest.raises(UsageError, match="device"):
        fold(d, FoldOptions(device="tpu"))
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA"):
            fold(d, FoldOptions(device="cuda"))
    assert parse_memory("256MB") == 256 * 1000**2
    assert parse_memory("2GiB") == 2 * 1024**3
    assert parse_memory("4096") == 4096
    with pytest.raises(UsageError):
        parse_memory("lots")


def test_json_contract_and_other_views(tmp_path: Path) -> None:
    d = write(tmp_path, "ds", deepseek)
    report = fold(d, CPU)
    data = json.loads(render_fold_json(report))
    for block in ("model", "io", "summary", "norms", "warnings"):
        assert block in data
    first = data["norms"][0]
    identity = ["name", "module", "mtp_depth", "layer", "role", "parametrization", "dim", "ratio"]
    assert list(first)[: len(identity)] == identity
    for key in (
        "consumers",
        "producers",
        "folded_ratio",
        "folded_band",
        "compensation",
        "top_share",
        "max_over_median",
        "input_balance",
    ):
        assert key in first
    csv = render_fold_csv(report)
    assert csv.splitlines()[0].startswith("name,module,mtp_depth,layer,role,parametrization,dim")
    assert len(csv.splitlines()) == len(report.norms) + 1
    md = render_fold_markdown(report)
    assert "model.layers.3.enorm.weight" in md and "balance" in md
    from rich.console import Console

    with open(os.devnull, "w") as sink:
        console = Console(record=True, width=120, color_system=None, file=sink)
        for r in render_fold_table(report):
            console.print(r)
        text = console.export_text()
    assert "enorm" in text and "folded" in text


def test_spearman_ties_and_top_count() -> None:
    a = torch.tensor([1.0, 2.0, 2.0, 3.0, 5.0])
    b = torch.tensor([10.0, 8.0, 9.0, 7.0, 1.0])
    # Average ranks by hand: a -> 1, 2.5, 2.5, 4, 5; b -> 5, 3, 4, 2, 1.
    ra, rb = np.array([1, 2.5, 2.5, 4, 5]), np.array([5, 3, 4, 2, 1.0])
    assert spearman(a, b) == pytest.approx(float(np.corrcoef(ra, rb)[0, 1]), abs=1e-12)
    assert spearman(torch.ones(4), b[:4]) is None
    assert [top_count(d) for d in (1, 99, 100, 2048)] == [1, 1, 1, 20]


@pytest.mark.gpu
def test_cuda_equals_cpu(tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    d = write(tmp_path, "ds", deepseek)
    cpu = fold(d, CPU)
    gpu = fold(d, FoldOptions(device="cuda"))
    assert gpu.plan.device.startswith("cuda")
    for a, b in zip(cpu.norms, gpu.norms, strict=True):
        assert (a.folded_ratio is None) == (b.folded_ratio is None)
        if a.folded_ratio is not None:
            assert a.folded_ratio == pytest.approx(b.folded_ratio, rel=1e-5)
            assert a.top_share == pytest.approx(b.top_share, rel=1e-5)


# --- the command body cli/folding.py registers --------------------------------------------------


def _cli() -> Any:
    from normscope.cli import app

    return app


def test_fold_command_json_dry_run_and_exit_codes(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    d = write(tmp_path, "ds", deepseek)
    runner = CliRunner()
    result = runner.invoke(_cli(), ["fold", str(d), "--device", "cpu", "-f", "json", "-q"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["fold_summary"]["folded"] > 0
    result = runner.invoke(_cli(), ["fold", str(d), "--device", "cpu", "--dry-run"])
    assert result.exit_code == 0
    assert result.stdout.split()[0] == str(data["plan"]["bytes_planned"])
    result = runner.invoke(_cli(), ["fold", str(d), "--device", "cpu", "-f", "table", "--all"])
    assert result.exit_code == 0 and "enorm" in result.stdout
    result = runner.invoke(
        _cli(),
        [
            "fold",
            str(d),
            "--device",
            "cpu",
            "-q",
            "--fail-on",
            "out-of-band",
            "--scope",
            "all",
            "--low",
            "0.99",
            "--high",
            "1.0",
        ],
    )
    assert result.exit_code == 1 and "FAIL" in result.stderr
    result = runner.invoke(_cli(), ["fold", str(tmp_path / "nope"), "--device", "cpu"])
    assert result.exit_code == 2 and "Error:" in result.stderr
    result = runner.invoke(_cli(), ["fold", str(d), "--max-memory", "1kB"])
    assert result.exit_code == 2 and "max-memory" in result.stderr.lower() + result.stdout


def test_fold_command_without_torch_exits_2_with_the_install_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    d = write(tmp_path, "llama", llama)
    monkeypatch.setitem(sys.modules, "torch", None)
    result = CliRunner().invoke(_cli(), ["fold", str(d)])
    assert result.exit_code == 2
    assert 'pip install "normscope[torch]"' in result.stderr


def test_hub_fold_does_not_copy_the_matrices_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Norm ranges are cached for the next scan; matrix row blocks are not (on a 700 GB
    checkpoint they would fill the disk)."""
    from normscope.sources.hub import reader

    monkeypatch.setattr(reader, "MAX_CACHED_RANGE", 4096)
    d = write(tmp_path, "ds", deepseek)
    server = _start_hub(monkeypatch, tmp_path, d)
    try:
        report = fold("org/ds-fold", CPU)
    finally:
        server.stop()
    ranges = [p for p in (tmp_path / "normscope-cache").rglob("*") if "ranges" in p.parts]
    sizes = [len(read_cache_file(p, []) or b"") for p in ranges if p.is_file()]
    assert sizes, "the norm ranges are cached"
    assert max(sizes) <= 4096  # no range over the cap was kept...
    assert sum(sizes) < 0.5 * report.plan.bytes_planned  # ...so most matrix bytes were not
