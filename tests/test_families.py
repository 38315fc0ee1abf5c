"""Scan every committed fixture and check normscope against what was written.

- classification: each norm's role/module/layer/MTP depth/parametrization/group/kind/dim equals the
  table `fixtures/make_fixtures.py` records while writing it, and the per-role counts equal the
  hand-written `COUNTS` below;
- `-init` fixtures: every effective gain is exactly the identity;
- `-trained` fixtures: every statistic equals an independent torch float64 computation on the
  tensors loaded with `safetensors.torch.load_file` (+1 for offset norms per the written table);
- the deliberately out-of-band norms land in their bands, and nothing else leaves the act band;
- bytes read on a sparse DeepSeek-V3-like layout stay within 1.05 x (headers + norms).
"""

from __future__ import annotations

import functools
import json
import math
import os
import struct
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import load_make_fixtures
from safetensors.torch import load_file

import normscope
from normscope.errors import NormscopeError
from normscope.schema import Report

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"


mf = load_make_fixtures()

NAMES: list[str] = mf.fixture_names()
INIT = [n for n in NAMES if n.endswith("-init")]
TRAINED = [n for n in NAMES if not n.endswith("-init")]

# Hand-written per-family counts: "role" for main-model norms, "mtp:role" for MTP norms.
COUNTS: dict[str, dict[str, int]] = {
    "llama": {"attn_input": 2, "mlp_input": 2, "final": 1},
    "mistral": {"attn_input": 2, "mlp_input": 2, "final": 1},
    "mixtral": {"attn_input": 2, "mlp_input": 2, "final": 1},
    "qwen2": {"attn_input": 2, "mlp_input": 2, "final": 1},
    "qwen3": {"attn_input": 2, "mlp_input": 2, "qk": 4, "final": 1},
    "qwen3_moe": {"attn_input": 2, "mlp_input": 2, "qk": 4, "final": 1},
    "qwen3_next": {
        "attn_input": 4,
        "mlp_input": 4,
        "linear_attn": 3,
        "qk": 2,
        "final": 1,
        "mtp:mtp_embedding": 1,
        "mtp:mtp_hidden": 1,
        "mtp:attn_input": 1,
        "mtp:qk": 2,
        "mtp:mlp_input": 1,
        "mtp:mtp_final": 1,
    },
    "qwen3_5": {  # the vision tower's norms read by the block and stack vocabularies (#25)
        "attn_input": 6,
        "mlp_input": 6,
        "linear_attn": 3,
        "qk": 2,
        "final": 2,
        "mtp:mtp_embedding": 1,
        "mtp:mtp_hidden": 1,
        "mtp:attn_input": 1,
        "mtp:qk": 2,
        "mtp:mlp_input": 1,
        "mtp:mtp_final": 1,
    },
    "deepseek_v3": {
        "attn_input": 2,
        "latent": 4,
        "mlp_input": 2,
        "final": 1,
        "mtp:mtp_embedding": 1,
        "mtp:mtp_hidden": 1,
        "mtp:attn_input": 1,
        "mtp:latent": 2,
        "mtp:mlp_input": 1,
        "mtp:mtp_final": 1,
    },
    "glm4_moe": {
        "attn_input": 2,
        "qk": 4,
        "mlp_input": 2,
        "final": 1,
        "mtp:mtp_embedding": 1,
        "mtp:mtp_hidden": 1,
        "mtp:attn_input": 1,
        "mtp:qk": 2,
        "mtp:mlp_input": 1,
        "mtp:mtp_final": 1,
    },
    "mimo": {
        "attn_input": 2,
        "mlp_input": 2,
        "final": 1,
        "mtp:mtp_embedding": 1,
        "mtp:mtp_hidden": 1,
        "mtp:attn_input": 1,
        "mtp:mlp_input": 1,
        "mtp:mtp_final": 1,
    },
    "gemma": {"attn_input": 2, "mlp_input": 2, "final": 1},
    "gemma2": {"attn_input": 2, "attn_output": 2, "mlp_input": 2, "mlp_output": 2, "final": 1},
    "gemma3": {  # SigLIP's norms read by the block and stack vocabularies (#25)
        "attn_input": 4,
        "attn_output": 2,
        "mlp_input": 4,
        "mlp_output": 2,
        "qk": 4,
        "final": 2,
        "projector": 1,  # Gemma3MultiModalProjector's mm_soft_emb_norm
    },
    "olmo2": {"qk": 4, "attn_output": 2, "mlp_output": 2, "final": 1},
    "phi3": {"attn_input": 2, "mlp_input": 2, "final": 1},
    "gpt2": {"attn_input": 2, "mlp_input": 2, "final": 1},
    "bert": {"embedding": 1, "attn_output": 2, "mlp_output": 2},
    "megatron": {
        "attn_input": 2,
        "qk": 4,
        "mlp_input": 2,
        "final": 1,
        "mtp:mtp_embedding": 1,
        "mtp:mtp_hidden": 1,
        "mtp:attn_input": 1,
        "mtp:qk": 2,
        "mtp:mlp_input": 1,
        "mtp:mtp_final": 1,
    },
    "deepseek-v3-mtp": {
        "attn_input": 4,
        "latent": 8,
        "mlp_input": 4,
        "final": 1,
        "mtp:mtp_embedding": 1,
        "mtp:mtp_hidden": 1,
        "mtp:attn_input": 1,
        "mtp:latent": 2,
        "mtp:mlp_input": 1,
        "mtp:mtp_final": 1,
    },
}


# Our own band table (docs/architectures.md#the-ratio-and-its-bands, defaults).
def band_of(ratio: float) -> str:
    if not math.isfinite(ratio):
        return "nonfinite"
    if ratio < 0.4:
        return "collapse"
    if ratio > 1.8:
        return "explosion"
    if ratio < 0.9:
        return "shrink"
    if ratio > 1.12:
        return "grow"
    return "balanced"


OUT_OF_BAND = {"collapse", "explosion", "nonfinite"}


@functools.cache
def report(name: str) -> Report:
    return normscope.scan(FIXTURES / name)


@functools.cache
def expected(name: str) -> Any:
    return mf.build_fixture(name)


@functools.cache
def loaded(name: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for shard in sorted((FIXTURES / name).glob("*.safetensors")):
        out.update(load_file(str(shard)))
    return out


def _key(name: str) -> str:
    return name if name == mf.SHOWCASE else name.rpartition("-")[0]


# --- the committed files ---------------------------------------------------------------------


def test_fixtures_rebuild_byte_for_byte(tmp_path: Path) -> None:
    dirs = mf.build_all(tmp_path)
    assert sorted(d.name for d in dirs) == sorted([*NAMES, *mf.BROKEN])
    for d in dirs:
        committed = FIXTURES / d.name
        built = sorted(p.name for p in d.iterdir())
        assert sorted(p.name for p in committed.iterdir()) == built, d.name
        for file in built:
            assert (d / file).read_bytes() == (committed / file).read_bytes(), f"{d.name}/{file}"


def test_fixtures_stay_small() -> None:
    total = 0
    for name in [*NAMES, *mf.BROKEN]:
        size = sum(p.stat().st_size for p in (FIXTURES / name).iterdir())
        assert size < 64 * 1024, name
        total += size
    total += sum(p.stat().st_size for p in (FIXTURES / "realnames").rglob("*") if p.is_file())
    assert total < 2 * 1024 * 1024


def test_every_family_has_counts() -> None:
    assert set(COUNTS) == {*mf.SPECS, mf.SHOWCASE}


# --- classification --------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_classification(name: str) -> None:
    r = report(name)
    fx = expected(name)
    got = {n.name: n for n in r.norms}
    want = {n.name: n for n in fx.norms}
    assert sorted(got) == sorted(want)
    for key, e in want.items():
        g = got[key]
        assert (
            g.role.value,
            g.module.value,
            g.layer,
            g.mtp_depth,
            g.parametrization.value,
            g.group.value if g.group else None,
            g.kind.value,
            g.dim,
        ) == (e.role, e.module, e.layer, e.mtp_depth, e.parametrization, e.group, e.kind, e.dim), (
            key
        )
    counts = Counter(
        n.role.value if n.module.value == "main" else f"mtp:{n.role.value}" for n in r.norms
    )
    assert counts == COUNTS[_key(name)]
    assert r.model.model_type == fx.model_type
    assert r.model.hidden_size == fx.hidden_size or (
        fx.hidden_size is None and r.model.hidden_size == 16
    )
    assert r.model.num_layers == fx.num_layers
    assert r.model.mtp_depth == fx.mtp_depth


def test_config_facts() -> None:
    # Qwen3-Next: MTP found although config.json has no MTP key; Qwen3.5: nested text_config.
    assert "mtp" not in json.dumps(
        json.loads((FIXTURES / "qwen3_next-init/config.json").read_text())
    )
    qwen35 = json.loads((FIXTURES / "qwen3_5-init/config.json").read_text())
    assert qwen35["text_config"]["mtp_num_hidden_layers"] == 1
    assert "hidden_size" not in qwen35
    assert not (FIXTURES / "megatron-init/config.json").exists()
    for name in ("qwen3_next-init", "qwen3_5-init", "deepseek_v3-init", "megatron-init"):
        assert report(name).model.mtp_depth == 1
        assert not any("advertises" in w for w in report(name).warnings)


@pytest.mark.parametrize("name", NAMES)
def test_warnings(name: str) -> None:
    warnings = report(name).warnings
    if _key(name) == "megatron":
        # No config.json: names decide, and the parametrization cannot be known.
        assert len(warnings) == 2
        assert "tensor names match the 'megatron' rules" in warnings[0]
        assert "layernorm_zero_centered_gamma" in warnings[1]
    else:
        assert warnings == ()


def test_dtypes_as_written() -> None:
    # Qwen3.5 stores linear_attn.norm in F32 next to BF16 norms; DeepSeek FP8 linears, BF16 norms.
    t = loaded("qwen3_5-trained")
    assert t["model.language_model.layers.0.linear_attn.norm.weight"].dtype == torch.float32
    assert t["model.language_model.layers.0.input_layernorm.weight"].dtype == torch.bfloat16
    d = loaded("deepseek_v3-trained")
    assert d["model.layers.1.self_attn.q_a_proj.weight"].dtype == torch.float8_e4m3fn
    assert d["model.layers.2.enorm.weight"].dtype == torch.bfloat16
    assert loaded("mistral-trained")["model.norm.weight"].dtype == torch.float16
    assert loaded("gpt2-trained")["h.0.attn.bias"].shape == (1, 1, 8, 8)


# --- statistics ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", INIT)
def test_init_is_identity(name: str) -> None:
    r = report(name)
    for n in r.norms:
        assert n.identity is True, n.name
        assert n.ratio == 1.0
        assert n.l2 == math.sqrt(n.dim)
        assert (n.mean, n.std, n.min, n.max, n.negative) == (1.0, 0.0, 1.0, 1.0, 0)
        assert n.band.value == "balanced"
        assert n.outliers == ()
        if n.kind.value == "layernorm":
            assert (n.bias_l2, n.bias_abs_max) == (0.0, 0.0)
        else:
            assert n.bias_l2 is None
    assert r.summary.out_of_band == 0
    assert r.summary.gated_out_of_band == 0


def _same(got: float, want: float) -> bool:
    if math.isnan(want):
        return math.isnan(got)
    return got == pytest.approx(want, rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("name", TRAINED)
def test_trained_statistics_match_torch(name: str) -> None:
    tensors = loaded(name)
    got = {n.name: n for n in report(name).norms}
    for e in expected(name).norms:
        g = tensors[e.name].to(torch.float64).reshape(-1)
        if e.parametrization == "offset":
            g = g + 1.0
        l2 = float(torch.linalg.vector_norm(g))
        n = got[e.name]
        assert _same(n.l2, l2), e.name
        assert _same(n.ratio, l2 / math.sqrt(g.numel())), e.name
        assert _same(n.mean, float(g.mean())), e.name
        assert _same(n.std, float(g.std(correction=0))), e.name
        assert _same(n.min, float(g.min())), e.name
        assert _same(n.max, float(g.max())), e.name
        assert n.negative == int((g < 0).sum()), e.name
        assert n.identity is False
        if e.bias:
            b = tensors[e.bias].to(torch.float64)
            assert _same(n.bias_l2, float(torch.linalg.vector_norm(b))), e.name
            assert _same(n.bias_abs_max, float(b.abs().max())), e.name
        else:
            assert n.bias_l2 is None and n.bias_abs_max is None
        assert n.band.value == band_of(l2 / math.sqrt(g.numel())), e.name


@pytest.mark.parametrize("name", TRAINED)
def test_trained_bands(name: str) -> None:
    r = report(name)
    got = {n.name: n for n in r.norms}
    targets = {e.name: e.target for e in expected(name).norms if e.target}
    assert targets, "every trained fixture pushes at least one norm into a chosen band"
    for norm_name, band in targets.items():
        assert got[norm_name].band.value == band, norm_name
    # Nothing else leaves the act band [0.4, 1.8].
    stray = [n.name for n in r.norms if n.band.value in OUT_OF_BAND and n.name not in targets]
    assert stray == []
    oob = [e for e in expected(name).norms if e.target in OUT_OF_BAND]
    assert r.summary.out_of_band == len(oob)
    # The default gate: the final norm and every MTP norm, never vision/auxiliary norms.
    gated = [e for e in oob if e.in_default_scope and (e.module == "mtp" or (e.role == "final"))]
    assert r.summary.gated_out_of_band == len(gated)


def test_showcase_headline() -> None:
    r = report(mf.SHOWCASE)
    head = {(h.role.value, h.mtp_depth): h for h in r.summary.headline}
    assert set(head) == {("final", None), ("mtp_embedding", 1), ("mtp_hidden", 1), ("mtp_final", 1)}
    assert head[("final", None)].band.value == "collapse"
    assert head[("final", None)].ratio == pytest.approx(0.27, abs=0.01)
    assert head[("mtp_embedding", 1)].band.value == "explosion"
    assert head[("mtp_hidden", 1)].band.value == "balanced"
    assert head[("mtp_final", 1)].band.value == "grow"
    assert r.summary.gated_out_of_band == 2
    assert r.io.files == 2


def test_offset_collapse_is_read_on_the_effective_gain() -> None:
    # Qwen3-Next's final norm stores w around -0.73: effective 1 + w = 0.27, a real collapse;
    # its init twin stores zeros, which is the identity, not a collapse.
    stored = loaded("qwen3_next-trained")["model.norm.weight"].to(torch.float64)
    assert float(stored.mean()) < -0.5
    r = {n.name: n for n in report("qwen3_next-trained").norms}
    assert r["model.norm.weight"].band.value == "collapse"
    assert r["model.layers.0.linear_attn.norm.weight"].parametrization.value == "standard"
    init = {n.name: n for n in report("qwen3_next-init").norms}
    assert float(loaded("qwen3_next-init")["model.norm.weight"].abs().max()) == 0.0
    assert init["model.norm.weight"].identity is True


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", mf.BROKEN)
def test_broken_fixtures_raise(name: str) -> None:
    with pytest.raises(NormscopeError):
        normscope.scan(FIXTURES / name)


# --- bytes read ------------------------------------------------------------------------------


def _parse_header(path: Path) -> tuple[int, dict[str, Any]]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return 8 + n, header


def test_sparse_layout_reads_only_headers_and_norms(tmp_path: Path) -> None:
    layout = mf.write_sparse_checkpoint(tmp_path / "ds")
    header_bytes = norm_bytes = 0
    norms = set(layout.norm_names)
    seen = set()
    for shard in layout.shards:
        size, header = _parse_header(shard)
        header_bytes += size
        for tensor, info in header.items():
            begin, end = info["data_offsets"]
            # Norm gains and any LayerNorm bias next to them (there is none in this layout).
            base = tensor.rsplit(".", 1)[0]
            if tensor in norms or (tensor.endswith(".bias") and f"{base}.weight" in norms):
                norm_bytes += end - begin
                seen.add(tensor)
    assert seen == norms
    total = sum(os.path.getsize(p) for p in layout.shards)
    assert norm_bytes / total < 2e-4  # norms are ~1e-4 of the checkpoint

    r = normscope.scan(layout.directory)
    assert {n.name for n in r.norms} == norms
    assert r.io.bytes_total == total
    assert r.io.files == len(layout.shards)
    assert header_bytes + norm_bytes <= r.io.bytes_read <= 1.05 * (header_bytes + norm_bytes)
    assert r.model.mtp_depth == 1
    assert all(n.identity for n in r.norms)
