"""The model zoo (issue 25): every architecture transformers builds, replayed as sparse
checkpoints and scored against the answer key read from the model object (`tests/zoo.py`,
`fixtures/zoo/make_zoo.py`).

The targets are floors that the current rules reach; a change that loses an architecture
fails here, with the list of what broke.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner
from zoo import ArchScore, held_out, load_zoo, score_all, summary, write_sparse

from normscope.cli import app

# Floors on the pinned release (fixtures/zoo/zoo-<version>.json.gz); see README "The model zoo".
# 5.25.0: 321 of 332 built exact (96.7%), 122 of 4,380 norms role unknown (2.8%); held-out 39
# of 41 exact, 23 of 728 unknown (3.2%). Floors keep a margin for the held-out set.
MIN_EXACT_FRACTION = 0.95
MAX_UNKNOWN_FRACTION = 0.05
MIN_HELD_OUT_EXACT_FRACTION = 0.90
MAX_HELD_OUT_UNKNOWN_FRACTION = 0.05


@pytest.fixture(scope="module")
def scored() -> tuple[list[ArchScore], list[dict]]:
    return score_all()


def _lines(scores: list[ArchScore]) -> str:
    return "\n".join(f"{s.model_type}: {', '.join(s.kinds())}" for s in scores if not s.exact)


def test_every_candidate_is_scored_or_failed_with_a_reason(scored: tuple) -> None:
    scores, failed = scored
    zoo = load_zoo()
    assert len(scores) + len(failed) == len(zoo["architectures"])  # the denominator stays all
    assert len(scores) >= 330
    for arch in failed:
        assert arch["status"] == "failed" and arch["reason"].strip(), arch["model_type"]
    # The key is the model's, not normscope's: every built architecture has a class and norms
    # found through the constant-fill round trip.
    keyed = [a for a in zoo["architectures"] if a["status"] == "ok"]
    assert sum(len(n["tensors"]) for a in keyed for n in a["norms"]) >= 4300


def test_targets(scored: tuple) -> None:
    scores, _ = scored
    total = summary(scores)
    assert total["decoys"] == 0, [s.decoys for s in scores if s.decoys]
    assert total["param_right"] == total["param_scored"], [
        (s.model_type, s.param_wrong[:2]) for s in scores if s.param_wrong
    ]
    exact = total["exact"] / total["architectures"]
    assert exact >= MIN_EXACT_FRACTION, _lines(scores)
    assert total["found"] >= 0.99 * total["norms"]
    assert total["unknown"] <= MAX_UNKNOWN_FRACTION * total["found"]


def test_held_out_architectures_generalise(scored: tuple) -> None:
    """Architectures added to transformers after the earlier release the fixture names were
    never looked at while the rules were written: the mechanisms must carry to them."""
    scores, _ = scored
    hidden = held_out(load_zoo())
    held = [s for s in scores if s.model_type in hidden]
    assert len(held) >= 20
    assert sum(s.exact for s in held) >= MIN_HELD_OUT_EXACT_FRACTION * len(held), _lines(held)
    total = summary(held)
    assert total["unknown"] <= MAX_HELD_OUT_UNKNOWN_FRACTION * total["found"]


def test_no_inferred_input_role_is_contradicted_by_the_forward(tmp_path: Path) -> None:
    """Every input role the structure inferred (`infer.py`) agrees with the module the
    model's forward called right after the norm (the key's `next`): an `attn_input` never
    feeds an MLP matrix, an `mlp_input` never an attention's."""
    from zoo import contradicts

    from normscope.scanner import measure

    checked = 0
    wrong = []
    for arch in load_zoo()["architectures"]:
        if arch["status"] != "ok":
            continue
        nexts = {t: n.get("next") for n in arch["norms"] for t in n["tensors"]}
        try:
            infos = measure(write_sparse(arch, tmp_path / arch["model_type"])).infos
        except Exception:
            continue
        for info in infos:
            if info.rule != "structure" or not info.role.value.endswith("_input"):
                continue
            following = nexts.get(info.name)
            checked += following is not None
            if contradicts(info.role.value, following):
                wrong.append((arch["model_type"], info.name, info.role.value, following))
    assert checked >= 100
    assert wrong == []


def _arch(model_type: str) -> dict:
    return next(a for a in load_zoo()["architectures"] if a["model_type"] == model_type)


def test_sparse_replay_holds_only_the_values_it_needs(tmp_path: Path) -> None:
    """The replay writes the header of every tensor and the bytes of the 1-D ones only: the
    file is as long as the real one, its matrices are holes (zeros when read)."""
    arch = _arch("llama")
    folder = write_sparse(arch, tmp_path / "llama")
    from safetensors.numpy import load_file

    loaded = load_file(folder / "model.safetensors")
    assert set(loaded) == {t[0] for t in arch["tensors"]}
    assert (loaded["model.norm.weight"] == 1).all()
    assert not loaded["model.embed_tokens.weight"].any()


@pytest.mark.parametrize(
    ("model_type", "final"),
    [
        ("t5", ["encoder.final_layer_norm.weight", "decoder.final_layer_norm.weight"]),
        ("mbart", ["model.encoder.layer_norm.weight", "model.decoder.layer_norm.weight"]),
        ("mamba", ["backbone.norm_f.weight"]),
        ("lfm2", ["model.embedding_norm.weight"]),
    ],
)
def test_final_norms_in_every_naming(tmp_path: Path, model_type: str, final: list[str]) -> None:
    from normscope.scanner import measure

    report = measure(write_sparse(_arch(model_type), tmp_path / model_type)).report
    assert sorted(n.name for n in report.norms if n.role.value == "final") == sorted(final)
    assert {n.stack.value for n in report.norms if n.stack} <= {"encoder", "decoder"}


def test_encoder_decoder_roles_and_stacks(tmp_path: Path) -> None:
    """mBART is pre-LN (each stack ends in a final norm): its fairseq names are input
    norms; BART is post-LN (no final norm): the same names are output norms."""
    from normscope.scanner import measure

    mbart = measure(write_sparse(_arch("mbart"), tmp_path / "w")).report
    by_name = {n.name: n for n in mbart.norms}
    cross = by_name["model.decoder.layers.0.encoder_attn_layer_norm.weight"]
    assert (cross.role.value, cross.stack.value) == ("cross_attn_input", "decoder")
    enc = by_name["model.encoder.layers.0.self_attn_layer_norm.weight"]
    assert (enc.role.value, enc.stack.value) == ("attn_input", "encoder")
    bart = measure(write_sparse(_arch("bart"), tmp_path / "b")).report
    roles = {n.name: n.role.value for n in bart.norms}
    assert roles["model.encoder.layers.0.self_attn_layer_norm.weight"] == "attn_output"
    assert roles["model.decoder.layers.0.encoder_attn_layer_norm.weight"] == "cross_attn_output"
    assert roles["model.encoder.layernorm_embedding.weight"] == "embedding"
    assert not any(r == "final" for r in roles.values())


def test_towers(tmp_path: Path) -> None:
    from normscope.scanner import measure

    report = measure(write_sparse(_arch("qwen2_vl"), tmp_path / "q")).report
    towers = {n.name: n.tower.value for n in report.norms}
    assert towers["visual.blocks.0.norm1.weight"] == "vision"
    assert towers["visual.merger.ln_q.weight"] == "projector"
    assert towers["model.layers.0.input_layernorm.weight"] == "text"


@pytest.mark.parametrize(
    ("model_type", "name", "role"),
    [
        # Sublayer words and side words of a name (Dia, T5Gemma, conformers, xLSTM).
        ("dia", "model.decoder.layers.0.pre_ca_norm.weight", "cross_attn_input"),
        ("t5gemma", "model.decoder.layers.0.post_cross_attn_layernorm.weight", "cross_attn_output"),
        ("cohere_asr", "model.encoder.layers.0.norm_feed_forward1.weight", "mlp_input"),
        ("cohere_asr", "model.encoder.layers.0.norm_out.weight", "mlp_output"),
        ("xlstm", "backbone.blocks.0.norm_mlstm.weight", "attn_input"),
        # A plain norm beside one sublayer: Nemotron-H's mixer, by what the mixer holds.
        ("nemotron_h", "backbone.layers.1.norm.weight", "mlp_input"),
        # Numbered norms in sublayer order; three in a decoder: self, cross, MLP (NeMo).
        (
            "cohere_asr",
            "model.transf_decoder._decoder.layers.0.layer_norm_2.weight",
            "cross_attn_input",
        ),
        ("florence2", "model.vision_tower.blocks.0.0.spatial_block.norm2.weight", "mlp_input"),
        # A vision tower is pre-LN without a final norm of its own (RADIO: the forward calls
        # q_proj right after norm1; InternViT, with its layer scales ls1/ls2).
        ("nemotron_h_omni", "vision_model.radio_model.model.blocks.0.norm1.weight", "attn_input"),
        ("qianfan_ocr", "vision_model.encoder.layers.0.norm2.weight", "mlp_input"),
        # ConvNeXt-style blocks (VibeVoice's tokenizer stages): a layer scale says pre-LN.
        ("vibevoice", "model.audio_tower.encoder.stem.stage.0.norm.weight", "attn_input"),
        # Inside a sublayer: the input (pre-LN), the output (post-LN), a sub-LN.
        (
            "phi4_multimodal",
            "model.embed_tokens_extend.audio_embed.encoder.encoders.0.conv.layer_norm.weight",
            "attn_input",
        ),
        ("funnel", "funnel.encoder.blocks.0.0.attention.layer_norm.weight", "attn_output"),
        ("fnet", "fnet.encoder.layer.0.fourier.output.LayerNorm.weight", "attn_output"),
        ("kosmos-2", "text_model.model.layers.0.self_attn.inner_attn_ln.weight", "attn_inner"),
        ("kosmos-2", "text_model.model.layers.0.ffn.ffn_layernorm.weight", "mlp_inner"),
        ("cohere_asr", "model.encoder.layers.0.conv.batch_norm.weight", "attn_inner"),
        ("bamba", "model.layers.0.mamba.norm.weight", "linear_attn"),
        # ERGO's `[experts, d]` expert-output norm, its gain named `scale`.
        ("ergo", "layers.1.feed_forward.expert_output_norm.scale", "mlp_output"),
        # Outside every block: heads, connectors, embeddings.
        ("roberta", "lm_head.layer_norm.weight", "head"),
        ("bert", "cls.predictions.transform.LayerNorm.weight", "head"),
        ("mistral3", "multi_modal_projector.norm.weight", "projector"),
        ("bloom", "transformer.word_embeddings_layernorm.weight", "embedding"),
    ],
)
def test_roles_from_structure(tmp_path: Path, model_type: str, name: str, role: str) -> None:
    from normscope.scanner import measure

    infos = {i.name: i for i in measure(write_sparse(_arch(model_type), tmp_path / "m")).infos}
    assert infos[name].role.value == role
    assert infos[name].recognised


@pytest.mark.parametrize("model_type", ["kosmos-2", "phi4_multimodal", "vibevoice", "nemotron_h"])
def test_check_passes_what_the_structure_placed(tmp_path: Path, model_type: str) -> None:
    """At init every gain is the identity: `check` vouches for a model whose norms the
    structure placed (no rule names them), with no unknown norm to refuse."""
    result = CliRunner().invoke(app, ["check", str(write_sparse(_arch(model_type), tmp_path))])
    assert result.exit_code == 0, result.stderr


def test_check_refuses_an_architecture_only_for_its_unknown_norms(tmp_path: Path) -> None:
    """Over every built architecture: `check` says it did not understand the architecture
    exactly where more than `max_unknown` (10%) of the norms are truly unknown (no rule,
    vocabulary, width or structure placed them), and names only those; a post-LN model's
    missing final norm (BART, Marian: their blocks end the stack) is no reason."""
    import re

    from normscope.scanner import measure

    runner = CliRunner()
    refused = 0
    for arch in load_zoo()["architectures"]:
        if arch["status"] != "ok" or not arch["norms"]:
            continue
        folder = write_sparse(arch, tmp_path / arch["model_type"])
        measured = measure(folder)
        unread = set(measured.unread)
        result = runner.invoke(app, ["check", str(folder), "-q"])
        said = "did not understand this checkpoint's architecture" in result.stderr
        assert said == (len(unread) > 0.1 * len(measured.report.norms)), (
            arch["model_type"],
            result.stderr,
        )
        if said:
            refused += 1
            assert result.exit_code == 2
            assert set(re.findall(r"'([^']+\.(?:weight|scale))'", result.stderr)) <= unread
        else:
            assert "no final norm was identified" not in result.stderr, arch["model_type"]
    # 17 of 332: 11 with norms no mechanism places (ALBERT, XLM, Perceiver, ...) and 6 added
    # by the shrink fixes of #25 (the four Inkling-2 types: q/k/v_input_norm; HunYuan-VL's and
    # Muse-Spark's connector and audio patch norms).
    assert 0 < refused <= 17


def test_check_fails_closed_only_on_what_is_unknown(tmp_path: Path) -> None:
    runner = CliRunner()
    exact = write_sparse(_arch("llama"), tmp_path / "llama")
    result = runner.invoke(app, ["check", str(exact)])
    assert result.exit_code == 0, result.stderr
    # Perceiver's attention norms: nothing says whether its blocks are pre- or post-LN (no final
    # norm, no layer scale, no extra norm): left unknown, and `check` refuses, naming them.
    scores, _ = score_all({"perceiver"})
    assert scores[0].unknown > 0.1 * scores[0].found
    unread = write_sparse(_arch("perceiver"), tmp_path / "perceiver")
    result = runner.invoke(app, ["check", str(unread)])
    assert result.exit_code == 2
    assert "attention.self.layernorm1" in result.stderr
    assert "Traceback" not in result.stderr
