"""`normscope.arch` on tensor names: roles, modules, layers, MTP depths and parametrizations.

Expectations are written from docs/architectures.md (and the real name lists in
fixtures/realnames), never read back from the rule tables. Tensors are `TensorRef`s with made-up
offsets: classification only looks at names, shapes and config.json.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import load_make_fixtures

from normscope import arch
from normscope.errors import ArchError
from normscope.schema import NormInfo, Parametrization, Role, TensorRef, Tower
from normscope.scope import parse_scope

# The fixtures' expectation table (written from docs/architectures.md#input-and-output-norms),
# not the code's rule.
ROLE_GROUP = load_make_fixtures().ROLE_GROUP
DEFAULT_SCOPE = parse_scope("default")  # the norms gates look at unless told otherwise

REALNAMES = Path(__file__).resolve().parent.parent / "fixtures" / "realnames"

STD, ZC = "standard", "offset"
H = 16  # hidden size of the synthetic name sets


def ref(name: str, shape: tuple[int, ...], dtype: str = "BF16") -> TensorRef:
    return TensorRef(name, "model.safetensors", dtype, shape, 0, 0)


def _default_shape(name: str) -> tuple[int, ...]:
    """1-D [H] for anything whose name says norm/ln/LayerNorm, else a 2-D matrix."""
    if name.endswith((".bias", ".weight", ".layer_norm_weight", ".layer_norm_bias")):
        base = name.rsplit(".", 1)[0].lower()
        last = base.rsplit(".", 1)[-1]
        if "norm" in last or last.startswith("ln") or name.endswith(".layer_norm_weight"):
            return (H,)
        if name.endswith(".layer_norm_bias"):
            return (H,)
    return (H, H)


def classify(
    names: Iterable[str] | Mapping[str, tuple[int, ...]],
    config: Mapping[str, Any] | None,
    parametrization: Parametrization | None = None,
) -> arch.Classification:
    """Classify a name list (shapes by `_default_shape` unless given)."""
    if isinstance(names, Mapping):
        tensors = {n: ref(n, tuple(s)) for n, s in names.items()}
    else:
        tensors = {n: ref(n, _default_shape(n)) for n in names}
    return arch.classify(tensors, config, parametrization)


def by_name(c: arch.Classification) -> dict[str, NormInfo]:
    return {n.name: n for n in c.norms}


def facts(info: NormInfo) -> tuple[Any, ...]:
    """(role, module, mtp_depth, layer, group, parametrization) as plain values."""
    return (
        info.role.value,
        info.module.value,
        info.mtp_depth,
        info.layer,
        info.group.value if info.group else None,
        info.parametrization.value,
    )


def E(role: str, layer: int | None = None, param: str = STD, *, mtp: int | None = None) -> tuple:
    """Expected facts; the group follows docs/architectures.md#input-and-output-norms.

    (Our own table, not the code's.)
    """
    group = ROLE_GROUP[role]
    return (role, "mtp" if mtp else "main", mtp, layer, group, param)


# --- per-family name sets ----------------------------------------------------------------------


def _llama_names(prefix: str = "model.", layers: int = 2, qk: bool = False) -> list[str]:
    out = [f"{prefix}embed_tokens.weight", f"{prefix}norm.weight", "lm_head.weight"]
    for i in range(layers):
        p = f"{prefix}layers.{i}."
        out += [f"{p}input_layernorm.weight", f"{p}post_attention_layernorm.weight"]
        out += [f"{p}self_attn.{x}_proj.weight" for x in "qkvo"]
        out += [f"{p}mlp.{x}_proj.weight" for x in ("gate", "up", "down")]
        if qk:
            out += [f"{p}self_attn.q_norm.weight", f"{p}self_attn.k_norm.weight"]
    return out


LLAMA_EXPECT = {
    "model.layers.0.input_layernorm.weight": E("attn_input", 0),
    # Llama naming trap: post_attention_layernorm is the pre-MLP INPUT norm.
    "model.layers.1.post_attention_layernorm.weight": E("mlp_input", 1),
    "model.norm.weight": E("final"),
}


@pytest.mark.parametrize(
    "config",
    [
        {"model_type": "llama", "architectures": ["LlamaForCausalLM"]},
        {"model_type": "mistral"},
        {"model_type": "mixtral"},
        {"model_type": "qwen2"},
        {"model_type": "phi3"},
    ],
    ids=lambda c: c["model_type"],
)
def test_llama_like(config: dict[str, Any]) -> None:
    c = classify(_llama_names(), config)
    got = by_name(c)
    assert len(got) == 5
    for name, expected in LLAMA_EXPECT.items():
        assert facts(got[name]) == expected, name
    assert c.warnings == []
    assert c.mtp_depth == 0


def test_qwen2_linear_biases_are_not_norms() -> None:
    names = {n: _default_shape(n) for n in _llama_names()}
    for x, d in (("q", 16), ("k", 8), ("v", 8)):
        names[f"model.layers.0.self_attn.{x}_proj.bias"] = (d,)
    got = by_name(classify(names, {"model_type": "qwen2"}))
    assert len(got) == 5
    assert all(n.bias_name is None for n in got.values())


@pytest.mark.parametrize("model_type", ["qwen3", "qwen3_moe"])
def test_qwen3_per_head_qk_norms(model_type: str) -> None:
    names = {n: _default_shape(n) for n in _llama_names(qk=True)}
    names["model.layers.0.self_attn.q_norm.weight"] = (8,)  # [head_dim]
    names["model.layers.0.self_attn.k_norm.weight"] = (8,)
    got = by_name(classify(names, {"model_type": model_type, "head_dim": 8}))
    assert len(got) == 9
    assert facts(got["model.layers.0.self_attn.q_norm.weight"]) == E("qk", 0)
    assert facts(got["model.layers.1.self_attn.k_norm.weight"]) == E("qk", 1)
    assert facts(got["model.layers.1.post_attention_layernorm.weight"]) == E("mlp_input", 1)


def _qwen_next_names(lm: str) -> dict[str, tuple[int, ...]]:
    """Two GDN layers (0, 1), one full-attention layer (2... here 3 by interval 4), MTP."""
    names: dict[str, tuple[int, ...]] = {}
    for i in range(4):
        p = f"{lm}layers.{i}."
        names[f"{p}input_layernorm.weight"] = (H,)
        names[f"{p}post_attention_layernorm.weight"] = (H,)
        if i == 3:
            names[f"{p}self_attn.q_norm.weight"] = (8,)
            names[f"{p}self_attn.k_norm.weight"] = (8,)
            names[f"{p}self_attn.q_proj.weight"] = (32, H)
        else:
            names[f"{p}linear_attn.norm.weight"] = (4,)
            names[f"{p}linear_attn.A_log"] = (4,)
            names[f"{p}linear_attn.dt_bias"] = (4,)
            names[f"{p}linear_attn.out_proj.weight"] = (H, 16)
        names[f"{p}mlp.gate.weight"] = (2, H)
        names[f"{p}mlp.shared_expert_gate.weight"] = (1, H)
    names[f"{lm}norm.weight"] = (H,)
    names["mtp.fc.weight"] = (H, 2 * H)
    for n in ("mtp.pre_fc_norm_embedding", "mtp.pre_fc_norm_hidden", "mtp.norm"):
        names[f"{n}.weight"] = (H,)
    for n in ("input_layernorm", "post_attention_layernorm"):
        names[f"mtp.layers.0.{n}.weight"] = (H,)
    names["mtp.layers.0.self_attn.q_norm.weight"] = (8,)
    names["mtp.layers.0.self_attn.k_norm.weight"] = (8,)
    return names


QWEN_NEXT_EXPECT = {
    "layers.0.input_layernorm.weight": E("attn_input", 0, ZC),
    "layers.0.post_attention_layernorm.weight": E("mlp_input", 0, ZC),
    # The gated DeltaNet output norm is STANDARD inside an offset model.
    "layers.1.linear_attn.norm.weight": E("linear_attn", 1, STD),
    "layers.3.self_attn.q_norm.weight": E("qk", 3, ZC),
    "norm.weight": E("final", None, ZC),
}
QWEN_MTP_EXPECT = {
    "mtp.pre_fc_norm_embedding.weight": E("mtp_embedding", param=ZC, mtp=1),
    "mtp.pre_fc_norm_hidden.weight": E("mtp_hidden", param=ZC, mtp=1),
    "mtp.layers.0.input_layernorm.weight": E("attn_input", param=ZC, mtp=1),
    "mtp.layers.0.post_attention_layernorm.weight": E("mlp_input", param=ZC, mtp=1),
    "mtp.layers.0.self_attn.k_norm.weight": E("qk", param=ZC, mtp=1),
    "mtp.norm.weight": E("mtp_final", param=ZC, mtp=1),
}


def test_qwen3_next_offset_except_linear_attn_norm_and_mtp_without_config_key() -> None:
    # The real Qwen3-Next config has no MTP key at all: the tensors decide.
    config = {"model_type": "qwen3_next", "hidden_size": H, "num_hidden_layers": 4}
    c = classify(_qwen_next_names("model."), config)
    got = by_name(c)
    for name, expected in QWEN_NEXT_EXPECT.items():
        assert facts(got["model." + name]) == expected, name
    for name, expected in QWEN_MTP_EXPECT.items():
        assert facts(got[name]) == expected, name
    assert len(got) == 4 * 2 + 3 + 2 + 1 + 7
    assert c.mtp_depth == 1
    assert c.num_layers == 4
    assert not any("MTP" in w for w in c.warnings)
    # A_log / dt_bias are 1-D per-head vectors, not norms.
    assert not any(n.endswith(("A_log", "dt_bias")) for n in got)


def test_qwen3_5_vlm_nested_config_prefix_vision_and_mtp() -> None:
    names = _qwen_next_names("model.language_model.")
    for j in range(2):
        for n in ("norm1", "norm2"):
            names[f"model.visual.blocks.{j}.{n}.weight"] = (8,)
            names[f"model.visual.blocks.{j}.{n}.bias"] = (8,)
        names[f"model.visual.blocks.{j}.attn.qkv.weight"] = (24, 8)
        names[f"model.visual.blocks.{j}.attn.qkv.bias"] = (24,)
    names["model.visual.merger.norm.weight"] = (8,)
    names["model.visual.merger.norm.bias"] = (8,)
    config = {
        "model_type": "qwen3_5",
        "architectures": ["Qwen3_5ForConditionalGeneration"],
        "text_config": {
            "model_type": "qwen3_5_text",
            "hidden_size": H,
            "num_hidden_layers": 4,
            "mtp_num_hidden_layers": 1,
        },
        "vision_config": {"hidden_size": 8},
    }
    c = classify(names, config)
    got = by_name(c)
    for name, expected in QWEN_NEXT_EXPECT.items():
        assert facts(got["model.language_model." + name]) == expected, name
    for name, expected in QWEN_MTP_EXPECT.items():
        assert facts(got[name]) == expected, name
    for name, role in (
        ("model.visual.blocks.1.norm2.weight", "mlp_input"),
        ("model.visual.merger.norm.weight", "final"),
    ):
        info = got[name]
        # Vision LayerNorms: the block vocabulary's roles, standard, never in a gate's default
        # scope (the vision tower's final norm feeds the projector, not the LM head).
        assert facts(info) == E(role, None, STD)
        assert not DEFAULT_SCOPE(info)
        assert info.bias_name == name[: -len("weight")] + "bias"
    assert c.mtp_depth == 1
    assert c.num_layers == 4
    assert c.warnings == []


def _deepseek_names(layers: int, mtp: int, *, with_mtp_tensors: bool = True) -> dict[str, tuple]:
    names: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (32, H),
        "model.norm.weight": (H,),
        "lm_head.weight": (32, H),
    }
    last = layers + (mtp if with_mtp_tensors else 0)
    for i in range(last):
        p = f"model.layers.{i}."
        names[f"{p}input_layernorm.weight"] = (H,)
        names[f"{p}post_attention_layernorm.weight"] = (H,)
        names[f"{p}self_attn.q_a_proj.weight"] = (8, H)
        names[f"{p}self_attn.q_a_proj.weight_scale_inv"] = (1,)  # 1-D on purpose: a trap
        names[f"{p}self_attn.q_a_layernorm.weight"] = (8,)
        names[f"{p}self_attn.kv_a_proj_with_mqa.weight"] = (6, H)
        names[f"{p}self_attn.kv_a_layernorm.weight"] = (4,)
        names[f"{p}mlp.gate.weight"] = (2, H)
        names[f"{p}mlp.gate.e_score_correction_bias"] = (2,)
        if i >= layers:
            names[f"{p}embed_tokens.weight"] = (32, H)
            names[f"{p}enorm.weight"] = (H,)
            names[f"{p}hnorm.weight"] = (H,)
            names[f"{p}eh_proj.weight"] = (H, 2 * H)
            names[f"{p}shared_head.norm.weight"] = (H,)
            names[f"{p}shared_head.head.weight"] = (32, H)
    return names


def _deepseek_config(layers: int, mtp: int) -> dict[str, Any]:
    return {
        "model_type": "deepseek_v3",
        "hidden_size": H,
        "num_hidden_layers": layers,
        "num_nextn_predict_layers": mtp,
        "q_lora_rank": 8,
        "kv_lora_rank": 4,
    }


def test_deepseek_v3_mtp_is_layer_n_and_latent_norms() -> None:
    c = classify(_deepseek_names(3, 1), _deepseek_config(3, 1))
    got = by_name(c)
    assert facts(got["model.layers.0.self_attn.q_a_layernorm.weight"]) == E("latent", 0)
    assert facts(got["model.layers.2.self_attn.kv_a_layernorm.weight"]) == E("latent", 2)
    assert facts(got["model.layers.2.post_attention_layernorm.weight"]) == E("mlp_input", 2)
    assert facts(got["model.norm.weight"]) == E("final")
    # Layer N (= num_hidden_layers) is MTP depth 1, not trunk layer N.
    assert facts(got["model.layers.3.enorm.weight"]) == E("mtp_embedding", mtp=1)
    assert facts(got["model.layers.3.hnorm.weight"]) == E("mtp_hidden", mtp=1)
    assert facts(got["model.layers.3.shared_head.norm.weight"]) == E("mtp_final", mtp=1)
    assert facts(got["model.layers.3.input_layernorm.weight"]) == E("attn_input", mtp=1)
    assert facts(got["model.layers.3.post_attention_layernorm.weight"]) == E("mlp_input", mtp=1)
    assert facts(got["model.layers.3.self_attn.q_a_layernorm.weight"]) == E("latent", mtp=1)
    assert len(got) == 3 * 4 + 1 + 4 + 3
    assert c.mtp_depth == 1
    assert c.num_layers == 3
    assert c.warnings == []
    assert not any(n.endswith(("weight_scale_inv", "e_score_correction_bias")) for n in got)


def test_deepseek_two_mtp_depths() -> None:
    got = by_name(classify(_deepseek_names(3, 2), _deepseek_config(3, 2)))
    assert facts(got["model.layers.4.enorm.weight"]) == E("mtp_embedding", mtp=2)
    assert facts(got["model.layers.4.input_layernorm.weight"]) == E("attn_input", mtp=2)
    assert facts(got["model.layers.3.hnorm.weight"]) == E("mtp_hidden", mtp=1)


def test_deepseek_mtp_found_from_tensors_without_config() -> None:
    c = classify(_deepseek_names(3, 1), None)
    assert c.family == "deepseek_v3"
    got = by_name(c)
    assert facts(got["model.layers.3.input_layernorm.weight"]) == E("attn_input", mtp=1)
    assert facts(got["model.layers.2.input_layernorm.weight"]) == E("attn_input", 2)


def test_config_advertises_mtp_that_was_not_stored() -> None:
    c = classify(_deepseek_names(3, 1, with_mtp_tensors=False), _deepseek_config(3, 1))
    assert c.mtp_depth == 0
    assert all(n.module.value == "main" for n in c.norms)
    assert any("advertises 1 MTP depth" in w and "no MTP norms" in w for w in c.warnings)


def test_deepseek_v32_indexer_layernorm_not_gated() -> None:
    names = _deepseek_names(1, 0, with_mtp_tensors=False)
    names["model.layers.0.self_attn.indexer.k_norm.weight"] = (128,)
    names["model.layers.0.self_attn.indexer.k_norm.bias"] = (128,)
    info = by_name(classify(names, {"model_type": "deepseek_v32"}))[
        "model.layers.0.self_attn.indexer.k_norm.weight"
    ]
    assert info.role is Role.unknown
    assert not DEFAULT_SCOPE(info)
    assert info.bias_name == "model.layers.0.self_attn.indexer.k_norm.bias"


def test_glm4_moe_qk_norms_and_deepseek_mtp_layout() -> None:
    names = {n: _default_shape(n) for n in _llama_names(qk=True)}
    p = "model.layers.2."
    for n in ("enorm", "hnorm", "shared_head.norm", "input_layernorm", "post_attention_layernorm"):
        names[f"{p}{n}.weight"] = (H,)
    names[f"{p}self_attn.q_norm.weight"] = (8,)
    names[f"{p}eh_proj.weight"] = (H, 2 * H)
    config = {
        "model_type": "glm4_moe",
        "num_hidden_layers": 2,
        "num_nextn_predict_layers": 1,
        "use_qk_norm": True,
    }
    c = classify(names, config)
    got = by_name(c)
    assert facts(got["model.layers.1.self_attn.q_norm.weight"]) == E("qk", 1)
    assert facts(got["model.layers.2.enorm.weight"]) == E("mtp_embedding", mtp=1)
    assert facts(got["model.layers.2.hnorm.weight"]) == E("mtp_hidden", mtp=1)
    assert facts(got["model.layers.2.shared_head.norm.weight"]) == E("mtp_final", mtp=1)
    assert facts(got["model.layers.2.self_attn.q_norm.weight"]) == E("qk", mtp=1)
    assert facts(got["model.layers.2.input_layernorm.weight"]) == E("attn_input", mtp=1)
    assert c.mtp_depth == 1
    assert c.warnings == []


def test_mimo_mtp_layers_hidden_and_token_norms() -> None:
    names = _llama_names()
    p = "model.mtp_layers.0."
    names += [
        f"{p}{n}.weight"
        for n in (
            "token_layernorm",
            "hidden_layernorm",
            "input_proj",
            "input_layernorm",
            "post_attention_layernorm",
            "final_layernorm",
        )
    ]
    c = classify(
        names, {"model_type": "mimo", "num_hidden_layers": 2, "num_nextn_predict_layers": 1}
    )
    got = by_name(c)
    assert facts(got[f"{p}token_layernorm.weight"]) == E("mtp_embedding", mtp=1)
    assert facts(got[f"{p}hidden_layernorm.weight"]) == E("mtp_hidden", mtp=1)
    assert facts(got[f"{p}final_layernorm.weight"]) == E("mtp_final", mtp=1)
    # `model.mtp_layers.0.input_layernorm` contains `layers.0.input_layernorm`: anchored, it is
    # the MTP block's norm, not trunk layer 0's.
    assert facts(got[f"{p}input_layernorm.weight"]) == E("attn_input", mtp=1)
    assert facts(got[f"{p}post_attention_layernorm.weight"]) == E("mlp_input", mtp=1)
    assert facts(got["model.layers.0.input_layernorm.weight"]) == E("attn_input", 0)
    assert len(got) == 10
    assert c.warnings == []


def test_gemma1_offset_with_llama_roles() -> None:
    got = by_name(classify(_llama_names(), {"model_type": "gemma"}))
    assert facts(got["model.layers.0.input_layernorm.weight"]) == E("attn_input", 0, ZC)
    assert facts(got["model.layers.0.post_attention_layernorm.weight"]) == E("mlp_input", 0, ZC)
    assert facts(got["model.norm.weight"]) == E("final", None, ZC)


def _sandwich_names(prefix: str, qk: bool) -> list[str]:
    out = _llama_names(prefix, qk=qk)
    for i in range(2):
        out += [
            f"{prefix}layers.{i}.pre_feedforward_layernorm.weight",
            f"{prefix}layers.{i}.post_feedforward_layernorm.weight",
        ]
    return out


def _check_sandwich(got: Mapping[str, NormInfo], prefix: str) -> None:
    p = f"{prefix}layers.1."
    assert facts(got[f"{p}input_layernorm.weight"]) == E("attn_input", 1, ZC)
    # Gemma-2/3 trap: post_attention_layernorm is an OUTPUT norm there.
    assert facts(got[f"{p}post_attention_layernorm.weight"]) == E("attn_output", 1, ZC)
    assert facts(got[f"{p}pre_feedforward_layernorm.weight"]) == E("mlp_input", 1, ZC)
    assert facts(got[f"{p}post_feedforward_layernorm.weight"]) == E("mlp_output", 1, ZC)
    assert facts(got[f"{prefix}norm.weight"]) == E("final", None, ZC)


def test_gemma2_sandwich_output_norms() -> None:
    got = by_name(classify(_sandwich_names("model.", False), {"model_type": "gemma2"}))
    _check_sandwich(got, "model.")
    assert len(got) == 9


def test_gemma3_vlm_prefix_vision_standard_and_projector_norm() -> None:
    names = {n: _default_shape(n) for n in _sandwich_names("language_model.model.", True)}
    v = "vision_tower.vision_model."
    for n in ("encoder.layers.0.layer_norm1", "encoder.layers.0.layer_norm2", "post_layernorm"):
        names[f"{v}{n}.weight"] = (8,)
        names[f"{v}{n}.bias"] = (8,)
    names[f"{v}encoder.layers.0.mlp.fc1.bias"] = (16,)
    names["multi_modal_projector.mm_soft_emb_norm.weight"] = (8,)
    names["multi_modal_projector.mm_input_projection_weight"] = (8, H)
    config = {
        "model_type": "gemma3",
        "text_config": {"model_type": "gemma3_text", "hidden_size": H, "num_hidden_layers": 2},
    }
    c = classify(names, config)
    got = by_name(c)
    _check_sandwich(got, "language_model.model.")
    assert facts(got["language_model.model.layers.0.self_attn.q_norm.weight"]) == E("qk", 0, ZC)
    for n, role in (("encoder.layers.0.layer_norm1", "attn_input"), ("post_layernorm", "final")):
        info = got[f"{v}{n}.weight"]
        # SigLIP LayerNorms are standard even inside an offset model, and never gated by default.
        assert facts(info) == E(role, None, STD)
        assert not DEFAULT_SCOPE(info)
        assert info.bias_name == f"{v}{n}.bias"
    proj = got["multi_modal_projector.mm_soft_emb_norm.weight"]
    assert facts(proj) == E("projector", None, ZC)  # Gemma3RMSNorm: offset
    assert not DEFAULT_SCOPE(proj)
    assert len(got) == 13 + 3 + 1
    assert c.num_layers == 2


def test_gemma3_text_only() -> None:
    got = by_name(classify(_sandwich_names("model.", True), {"model_type": "gemma3_text"}))
    _check_sandwich(got, "model.")
    assert facts(got["model.layers.0.self_attn.k_norm.weight"]) == E("qk", 0, ZC)


def test_olmo2_no_input_norms_post_norms_are_outputs_full_width_qk() -> None:
    names: dict[str, tuple[int, ...]] = {"model.norm.weight": (H,), "lm_head.weight": (32, H)}
    for i in range(2):
        p = f"model.layers.{i}."
        names[f"{p}self_attn.q_norm.weight"] = (16,)  # num_heads * head_dim
        names[f"{p}self_attn.k_norm.weight"] = (8,)  # num_kv_heads * head_dim
        names[f"{p}post_attention_layernorm.weight"] = (H,)
        names[f"{p}post_feedforward_layernorm.weight"] = (H,)
    got = by_name(classify(names, {"model_type": "olmo2"}))
    assert facts(got["model.layers.0.post_attention_layernorm.weight"]) == E("attn_output", 0)
    assert facts(got["model.layers.1.post_feedforward_layernorm.weight"]) == E("mlp_output", 1)
    assert facts(got["model.layers.1.self_attn.q_norm.weight"]) == E("qk", 1)
    assert facts(got["model.norm.weight"]) == E("final")
    assert not any(n.role is Role.attn_input for n in got.values())


@pytest.mark.parametrize("prefix", ["", "transformer."])
def test_gpt2_layernorms_and_mask_buffer(prefix: str) -> None:
    names: dict[str, tuple[int, ...]] = {f"{prefix}wte.weight": (32, H)}
    for i in range(2):
        p = f"{prefix}h.{i}."
        for ln in ("ln_1", "ln_2"):
            names[f"{p}{ln}.weight"] = (H,)
            names[f"{p}{ln}.bias"] = (H,)
        names[f"{p}attn.bias"] = (1, 1, 8, 8)  # the causal-mask buffer
        names[f"{p}attn.masked_bias"] = ()
        names[f"{p}attn.c_attn.bias"] = (3 * H,)
        names[f"{p}attn.c_proj.bias"] = (H,)
    names[f"{prefix}ln_f.weight"] = (H,)
    names[f"{prefix}ln_f.bias"] = (H,)
    got = by_name(classify(names, {"model_type": "gpt2", "n_embd": H, "n_layer": 2}))
    assert set(got) == {
        f"{prefix}h.{i}.{ln}.weight" for i in range(2) for ln in ("ln_1", "ln_2")
    } | {f"{prefix}ln_f.weight"}
    assert facts(got[f"{prefix}h.0.ln_1.weight"]) == E("attn_input", 0)
    assert facts(got[f"{prefix}h.1.ln_2.weight"]) == E("mlp_input", 1)
    assert facts(got[f"{prefix}ln_f.weight"]) == E("final")
    assert got[f"{prefix}h.1.ln_2.weight"].bias_name == f"{prefix}h.1.ln_2.bias"


def test_gpt2_family_from_names_alone() -> None:
    names = {
        "h.0.ln_1.weight": (H,),
        "h.0.ln_2.weight": (H,),
        "ln_f.weight": (H,),
        "h.0.attn.bias": (1, 1, 8, 8),
        "wte.weight": (32, H),
    }
    c = classify(names, None)
    assert c.family == "gpt2"
    assert len(c.norms) == 3


@pytest.mark.parametrize("prefix", ["", "bert."])
def test_bert_post_ln(prefix: str) -> None:
    names: dict[str, tuple[int, ...]] = {}
    for n in (
        "embeddings.LayerNorm",
        "encoder.layer.0.attention.output.LayerNorm",
        "encoder.layer.1.output.LayerNorm",
    ):
        names[f"{prefix}{n}.weight"] = (H,)
        names[f"{prefix}{n}.bias"] = (H,)
    names[f"{prefix}encoder.layer.0.attention.output.dense.bias"] = (H,)
    names[f"{prefix}embeddings.position_ids"] = (1, 8)
    got = by_name(classify(names, {"model_type": "bert"}))
    assert facts(got[f"{prefix}embeddings.LayerNorm.weight"]) == E("embedding")
    assert facts(got[f"{prefix}encoder.layer.0.attention.output.LayerNorm.weight"]) == E(
        "attn_output", 0
    )
    assert facts(got[f"{prefix}encoder.layer.1.output.LayerNorm.weight"]) == E("mlp_output", 1)
    assert len(got) == 3
    assert all(n.bias_name for n in got.values())


def _megatron_names(block: str = "mtp_model_layer") -> dict[str, tuple[int, ...]]:
    names: dict[str, tuple[int, ...]] = {"embedding.word_embeddings.weight": (32, H)}
    for p in ("decoder.layers.0.", "decoder.layers.1.", f"mtp.layers.0.{block}."):
        a = f"{p}self_attention."
        names[f"{a}linear_qkv.layer_norm_weight"] = (H,)
        names[f"{a}linear_qkv.weight"] = (3 * H, H)
        names[f"{a}linear_qkv._extra_state"] = (8,)
        names[f"{a}q_layernorm.weight"] = (4,)
        names[f"{a}k_layernorm.weight"] = (4,)
        names[f"{a}linear_proj._extra_state"] = (8,)
        names[f"{p}mlp.linear_fc1.layer_norm_weight"] = (H,)
        names[f"{p}mlp.linear_fc1._extra_state"] = (8,)
    names["decoder.layers.1.pre_mlp_layernorm.weight"] = (H,)
    names["decoder.layers.1.mlp.router.expert_bias"] = (2,)
    names["decoder.final_layernorm.weight"] = (H,)
    for n in ("enorm", "hnorm", "final_layernorm"):
        names[f"mtp.layers.0.{n}.weight"] = (H,)
    names["mtp.layers.0.eh_proj.weight"] = (H, 2 * H)
    names["mtp.layers.0.eh_proj._extra_state"] = (8,)
    return names


@pytest.mark.parametrize("block", ["mtp_model_layer", "transformer_layer"])
def test_megatron_core_naming_without_config(block: str) -> None:
    c = classify(_megatron_names(block), None)
    assert c.family == "megatron"
    got = by_name(c)
    d0 = "decoder.layers.0."
    assert facts(got[f"{d0}self_attention.linear_qkv.layer_norm_weight"]) == E("attn_input", 0)
    assert facts(got[f"{d0}mlp.linear_fc1.layer_norm_weight"]) == E("mlp_input", 0)
    assert facts(got[f"{d0}self_attention.q_layernorm.weight"]) == E("qk", 0)
    assert facts(got["decoder.layers.1.pre_mlp_layernorm.weight"]) == E("mlp_input", 1)
    assert facts(got["decoder.final_layernorm.weight"]) == E("final")
    assert facts(got["mtp.layers.0.enorm.weight"]) == E("mtp_embedding", mtp=1)
    assert facts(got["mtp.layers.0.hnorm.weight"]) == E("mtp_hidden", mtp=1)
    assert facts(got["mtp.layers.0.final_layernorm.weight"]) == E("mtp_final", mtp=1)
    m = f"mtp.layers.0.{block}."
    assert facts(got[f"{m}self_attention.linear_qkv.layer_norm_weight"]) == E("attn_input", mtp=1)
    assert facts(got[f"{m}self_attention.k_layernorm.weight"]) == E("qk", mtp=1)
    assert facts(got[f"{m}mlp.linear_fc1.layer_norm_weight"]) == E("mlp_input", mtp=1)
    assert len(got) == 3 * 4 + 1 + 1 + 3
    assert not any("_extra_state" in n or "expert_bias" in n for n in got)
    assert c.mtp_depth == 1
    assert c.num_layers == 2
    # The checkpoint cannot say whether --apply-layernorm-1p was used: the report must say so.
    assert any("layernorm_zero_centered_gamma" in w for w in c.warnings)


def test_megatron_mla_q_layernorm_is_latent_when_q_down_proj_exists() -> None:
    a = "decoder.layers.0.self_attention."
    names = {
        f"{a}linear_q_down_proj.weight": (8, H),
        f"{a}q_layernorm.weight": (8,),
        f"{a}kv_layernorm.weight": (4,),
        f"{a}linear_kv_down_proj.weight": (6, H),
        "decoder.layers.0.input_layernorm.weight": (H,),
        "decoder.layers.1.self_attention.linear_q_up_proj.layer_norm_weight": (8,),
        "decoder.layers.1.self_attention.linear_kv_up_proj.layer_norm_weight": (4,),
        "decoder.layers.1.input_layernorm.weight": (H,),
        "decoder.final_layernorm.weight": (H,),
    }
    got = by_name(classify(names, None))
    assert facts(got[f"{a}q_layernorm.weight"]) == E("latent", 0)
    assert facts(got[f"{a}kv_layernorm.weight"]) == E("latent", 0)
    assert facts(got["decoder.layers.0.input_layernorm.weight"]) == E("attn_input", 0)
    up = "decoder.layers.1.self_attention."
    assert facts(got[f"{up}linear_q_up_proj.layer_norm_weight"]) == E("latent", 1)
    assert facts(got[f"{up}linear_kv_up_proj.layer_norm_weight"]) == E("latent", 1)


def test_megatron_gdn_and_fused_layernorm_bias() -> None:
    a = "decoder.layers.0.self_attention."
    names = {
        f"{a}in_proj.layer_norm_weight": (H,),
        f"{a}in_proj.weight": (4 * H, H),
        f"{a}out_norm.weight": (4,),
        "decoder.layers.0.mlp.linear_fc1.layer_norm_weight": (H,),
        "decoder.layers.0.mlp.linear_fc1.layer_norm_bias": (H,),
        "decoder.final_layernorm.weight": (H,),
    }
    got = by_name(classify(names, None))
    assert facts(got[f"{a}in_proj.layer_norm_weight"]) == E("attn_input", 0)
    assert facts(got[f"{a}out_norm.weight"]) == E("linear_attn", 0)
    fc1 = got["decoder.layers.0.mlp.linear_fc1.layer_norm_weight"]
    assert fc1.bias_name == "decoder.layers.0.mlp.linear_fc1.layer_norm_bias"


def test_megatron_parametrization_override() -> None:
    c = classify(_megatron_names(), None, parametrization=Parametrization.offset)
    assert {n.parametrization for n in c.norms} == {Parametrization.offset}
    assert not any("layernorm_zero_centered_gamma" in w for w in c.warnings)


def test_phi2_parallel_block_shared_input() -> None:
    names = {
        "model.layers.0.input_layernorm.weight": (H,),
        "model.layers.0.input_layernorm.bias": (H,),
        "model.final_layernorm.weight": (H,),
        "model.final_layernorm.bias": (H,),
    }
    got = by_name(classify(names, {"model_type": "phi"}))
    assert facts(got["model.layers.0.input_layernorm.weight"]) == E("attn_input", 0)
    assert facts(got["model.final_layernorm.weight"]) == E("final")


def test_nemotron_layernorm1p_is_offset_with_bias() -> None:
    names = {
        f"{n}.{p}": (H,)
        for n in (
            "model.layers.0.input_layernorm",
            "model.layers.0.post_attention_layernorm",
            "model.norm",
        )
        for p in ("weight", "bias")
    }
    got = by_name(classify(names, {"model_type": "nemotron"}))
    assert facts(got["model.layers.0.post_attention_layernorm.weight"]) == E("mlp_input", 0, ZC)
    assert got["model.norm.weight"].bias_name == "model.norm.bias"


def test_cohere_2d_qk_norm() -> None:
    names = {
        "model.layers.0.input_layernorm.weight": (H,),
        "model.norm.weight": (H,),
        "model.layers.0.self_attn.q_norm.weight": (4, 4),
    }
    got = by_name(classify(names, {"model_type": "cohere"}))
    assert facts(got["model.layers.0.self_attn.q_norm.weight"]) == E("qk", 0)
    assert facts(got["model.layers.0.input_layernorm.weight"]) == E("attn_input", 0)


def test_glm4_0414_sandwich_norms() -> None:
    names = _llama_names() + [
        "model.layers.0.post_self_attn_layernorm.weight",
        "model.layers.0.post_mlp_layernorm.weight",
    ]
    got = by_name(classify(names, {"model_type": "glm4"}))
    assert facts(got["model.layers.0.post_self_attn_layernorm.weight"]) == E("attn_output", 0)
    assert facts(got["model.layers.0.post_mlp_layernorm.weight"]) == E("mlp_output", 0)
    assert facts(got["model.layers.0.post_attention_layernorm.weight"]) == E("mlp_input", 0)


# --- traps (docs/architectures.md#traps) ----------------------------------------------------------


NON_NORM_1D = [
    "model.layers.0.mlp.down_proj.SCB",  # bitsandbytes 8-bit row scales
    "model.layers.0.mlp.down_proj.weight_format",
    "model.layers.0.mlp.down_proj.biases",  # MLX quantization offsets
    "model.layers.0.mlp.down_proj.scales",
    "model.layers.0.self_attn.q_proj.weight_scale_inv",  # FP8 block scales
    "model.layers.0.self_attn.q_proj.input_scale",
    "model.layers.0.self_attn.k_scale",
    "model.layers.0.self_attn.v_scale",
    "model.layers.0.self_attn.sinks",
    "model.layers.0.self_attn.attn_sink",
    "model.layers.0.self_attn.attention_sink_bias",
    "model.layers.0.self_attn.q_proj.bias",  # a Linear bias of length H
    "model.layers.0.self_attn.o_proj.bias",
    "model.layers.0.mlp.gate.e_score_correction_bias",
    "model.layers.0.linear_attn.A_log",
    "model.layers.0.linear_attn.dt_bias",
    "model.layers.0.self_attention.linear_qkv._extra_state",
    "model.layers.0.rotary_emb.inv_freq",
]


@pytest.mark.parametrize("model_type", ["llama", "qwen3_next", "deepseek_v3", None])
def test_non_norm_1d_tensors_are_never_norms(model_type: str | None) -> None:
    names = {n: _default_shape(n) for n in _llama_names()}
    for n in NON_NORM_1D:
        names[n] = (H,)
    config = {"model_type": model_type} if model_type else None
    c = classify(names, config)
    assert sorted(n.name for n in c.norms) == sorted(n for n in names if n.endswith("norm.weight"))
    assert all(n.bias_name is None for n in c.norms)
    assert not any("match no" in w for w in c.warnings)


def test_longcat_doubled_sublayers_and_per_head_norms_are_read_not_unknown() -> None:
    # LongCat `input_layernorm.{0,1}` and StableLM `q_layernorm.norms.{h}` end in an index: the
    # index is structure (trap 18). Issue #10 changed this from role `unknown` (the bug).
    names = {
        "model.layers.0.input_layernorm.0.weight": (H,),
        "model.layers.0.input_layernorm.1.weight": (H,),
        "model.layers.0.self_attn.q_layernorm.norms.3.weight": (4,),
        "model.norm.weight": (H,),
    }
    c = classify(names, {"model_type": "longcat_flash"})
    got = by_name(c)
    assert set(got) == set(names)
    assert facts(got["model.layers.0.input_layernorm.1.weight"]) == E("attn_input", 0)
    assert facts(got["model.layers.0.input_layernorm.0.weight"]) == E("attn_input", 0)
    # StableLM naming inside a LongCat table: read by the Hugging Face vocabulary, with a warning.
    assert facts(got["model.layers.0.self_attn.q_layernorm.norms.3.weight"]) == E("qk", 0)
    assert got["model.layers.0.self_attn.q_layernorm.norms.3.weight"].vocabulary == "hf"
    assert any("naming vocabulary 'hf'" in w for w in c.warnings)
    assert c.unknown == []


def test_unknown_architecture_generic_fallback() -> None:
    names = {
        "blocks.0.attn_norm.weight": (H,),
        "blocks.0.ffn_norm.weight": (H,),
        "blocks.0.wq.weight": (H, H),
        "out_norm.weight": (H,),
        "blocks.0.wq.bias": (H,),
    }
    c = classify(names, {"model_type": "brand_new"})
    assert c.family == "generic"
    assert {n.name for n in c.norms} == {
        "blocks.0.attn_norm.weight",
        "blocks.0.ffn_norm.weight",
        "out_norm.weight",
    }
    # The block and stack vocabularies read names no family lists: `attn_norm`/`ffn_norm` in
    # any stack of blocks, `out_norm` where the stack ends.
    roles = {n.name: (n.role, n.parametrization) for n in c.norms}
    assert roles == {
        "blocks.0.attn_norm.weight": (Role.attn_input, Parametrization.standard),
        "blocks.0.ffn_norm.weight": (Role.mlp_input, Parametrization.standard),
        "out_norm.weight": (Role.final, Parametrization.standard),
    }
    assert by_name(c)["blocks.0.ffn_norm.weight"].layer == 0
    assert c.unknown == []
    assert any("naming vocabulary 'blocks' (2), 'stack' (1)" in w for w in c.warnings)


def test_no_norms_at_all_is_an_error() -> None:
    with pytest.raises(ArchError):
        classify(
            {"model.embed_tokens.weight": (32, H), "lm_head.weight": (32, H)},
            {"model_type": "olmo"},
        )


# --- choosing the family -------------------------------------------------------------------------


def test_family_from_model_type() -> None:
    assert classify(_llama_names(qk=True), {"model_type": "qwen3"}).family == "qwen3"


def test_family_from_text_config_model_type() -> None:
    config = {"model_type": "some_vlm_wrapper", "text_config": {"model_type": "gemma3_text"}}
    c = classify(_sandwich_names("language_model.model.", True), config)
    assert c.family == "gemma3"
    assert {n.parametrization for n in c.norms} == {Parametrization.offset}


def test_family_from_architectures() -> None:
    names = _llama_names() + ["model.mtp_layers.0.token_layernorm.weight"]
    c = classify(names, {"architectures": ["MiMoForCausalLM"]})
    assert c.family == "mimo"
    assert c.mtp_depth == 1


def test_family_from_names_when_config_missing() -> None:
    c = classify(_sandwich_names("model.", False), None)
    assert c.family in ("gemma2", "gemma3")
    assert {n.parametrization for n in c.norms} == {Parametrization.offset}
    assert any("tensor names match" in w for w in c.warnings)


def test_llama_names_alone_warn_that_offset_rules_fit_too() -> None:
    c = classify(_llama_names(), None)
    assert {n.parametrization for n in c.norms} == {Parametrization.standard}
    assert any("offset/standard differ" in w for w in c.warnings)


def test_read_config_nested_and_mtp_keys() -> None:
    f = arch.read_config(
        {
            "model_type": "qwen3_5",
            "text_config": {
                "hidden_size": 2048,
                "num_hidden_layers": 40,
                "mtp_num_hidden_layers": 1,
            },
        }
    )
    assert (f.hidden_size, f.num_layers, f.mtp_depth) == (2048, 40, 1)
    f = arch.read_config({"model_type": "gpt2", "n_embd": 768, "n_layer": 12})
    assert (f.hidden_size, f.num_layers, f.mtp_depth) == (768, 12, None)
    assert arch.read_config({"num_nextn_predict_layers": 1}).mtp_depth == 1
    assert arch.read_config(None).model_type is None


# --- every Role is produced by some family ----------------------------------------------------


ROLE_EXAMPLES: dict[
    Role, tuple[dict[str, Any] | None, list[str] | dict[str, tuple[int, ...]], str]
] = {
    Role.attn_input: (
        {"model_type": "llama"},
        _llama_names(),
        "model.layers.0.input_layernorm.weight",
    ),
    Role.mlp_input: (
        {"model_type": "llama"},
        _llama_names(),
        "model.layers.0.post_attention_layernorm.weight",
    ),
    Role.attn_output: (
        {"model_type": "gemma2"},
        _sandwich_names("model.", False),
        "model.layers.0.post_attention_layernorm.weight",
    ),
    Role.mlp_output: (
        {"model_type": "gemma2"},
        _sandwich_names("model.", False),
        "model.layers.0.post_feedforward_layernorm.weight",
    ),
    Role.qk: (
        {"model_type": "qwen3"},
        _llama_names(qk=True),
        "model.layers.0.self_attn.q_norm.weight",
    ),
    Role.latent: (
        _deepseek_config(3, 1),
        list(_deepseek_names(3, 1)),
        "model.layers.0.self_attn.kv_a_layernorm.weight",
    ),
    Role.linear_attn: (
        {"model_type": "qwen3_next"},
        list(_qwen_next_names("model.")),
        "model.layers.0.linear_attn.norm.weight",
    ),
    Role.final: ({"model_type": "llama"}, _llama_names(), "model.norm.weight"),
    Role.mtp_embedding: (
        _deepseek_config(3, 1),
        list(_deepseek_names(3, 1)),
        "model.layers.3.enorm.weight",
    ),
    Role.mtp_hidden: (
        _deepseek_config(3, 1),
        list(_deepseek_names(3, 1)),
        "model.layers.3.hnorm.weight",
    ),
    Role.mtp_final: (
        _deepseek_config(3, 1),
        list(_deepseek_names(3, 1)),
        "model.layers.3.shared_head.norm.weight",
    ),
    Role.embedding: (
        {"model_type": "bert"},
        ["embeddings.LayerNorm.weight"],
        "embeddings.LayerNorm.weight",
    ),
    # Chameleon's VQ image tokenizer: unknown by its rule, on purpose.
    Role.unknown: (
        {"model_type": "chameleon"},
        ["model.vqmodel.encoder.norm_out.weight", "model.norm.weight"],
        "model.vqmodel.encoder.norm_out.weight",
    ),
    # Roles from structure (normscope/arch/infer.py): Kosmos-2's sub-LNs, by a word and by the
    # width between the MLP's projections; BERT's MLM head; Gemma-3's connector.
    Role.attn_inner: (
        {"model_type": "kosmos-2"},
        {
            **{f"layers.0.self_attn.{p}_proj.weight": (16, 16) for p in "qkvo"},
            "layers.0.self_attn.inner_attn_ln.weight": (16,),
            "layers.0.self_attn_layer_norm.weight": (16,),
        },
        "layers.0.self_attn.inner_attn_ln.weight",
    ),
    Role.mlp_inner: (
        {"model_type": "kosmos-2"},
        {
            "layers.0.ffn.fc1.weight": (32, 16),
            "layers.0.ffn.fc2.weight": (16, 32),
            "layers.0.ffn.ffn_layernorm.weight": (32,),
            "layers.0.final_layer_norm.weight": (16,),
        },
        "layers.0.ffn.ffn_layernorm.weight",
    ),
    Role.head: (
        {"model_type": "bert"},
        ["cls.predictions.transform.LayerNorm.weight"],
        "cls.predictions.transform.LayerNorm.weight",
    ),
    Role.projector: (
        {"model_type": "gemma3"},
        ["multi_modal_projector.mm_soft_emb_norm.weight", "language_model.model.norm.weight"],
        "multi_modal_projector.mm_soft_emb_norm.weight",
    ),
    # Whisper (pre-LN: each stack ends in a final norm) and BART (post-LN: none).
    Role.cross_attn_input: (
        {"model_type": "whisper"},
        [
            "model.decoder.layers.0.encoder_attn_layer_norm.weight",
            "model.decoder.layer_norm.weight",
        ],
        "model.decoder.layers.0.encoder_attn_layer_norm.weight",
    ),
    Role.cross_attn_output: (
        {"model_type": "bart"},
        ["model.decoder.layers.0.encoder_attn_layer_norm.weight"],
        "model.decoder.layers.0.encoder_attn_layer_norm.weight",
    ),
}


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
def test_every_role_is_produced_by_some_family(role: Role) -> None:
    # No member is impossible: `unknown` comes from vision/indexer rules and the generic fallback.
    config, names, name = ROLE_EXAMPLES[role]
    assert by_name(classify(names, config))[name].role is role


def test_role_examples_cover_the_enum() -> None:
    assert set(ROLE_EXAMPLES) == set(Role)


# --- the real name lists (fixtures/realnames) ----------------------------------------------------


def _real(name: str) -> tuple[dict[str, Any], list[str]]:
    d = REALNAMES / name
    config = json.loads((d / "config.json").read_text())
    names = list(json.loads((d / "model.safetensors.index.json").read_text())["weight_map"])
    return config, names


def _real_shape(name: str, config: Mapping[str, Any]) -> tuple[int, ...]:
    """A plausible shape from config.json: 1-D norms of the right width, real 1-D traps."""
    text = config.get("text_config", config)
    vision = config.get("vision_config", {})
    hidden = text["hidden_size"]
    head_dim = text.get("head_dim") or hidden // text["num_attention_heads"]
    in_vision = name.startswith(("vision_tower.", "model.visual.", "model.vision_tower."))
    width = vision.get("hidden_size", hidden) if in_vision or "mm_soft_emb_norm" in name else hidden
    if name.endswith(".SCB"):
        return (hidden,)
    if name.endswith(".weight_format"):
        return ()
    if name.endswith((".scales", ".biases")):
        return (hidden, hidden // 64)
    if name.endswith(("A_log", "dt_bias")):
        return (text["linear_num_value_heads"],)
    if name.endswith(("q_norm.weight", "k_norm.weight")):
        return (head_dim,)
    if name.endswith("linear_attn.norm.weight"):
        return (text["linear_value_head_dim"],)
    last = name.rsplit(".", 2)[-2].lower()
    if ("norm" in last) and name.endswith((".weight", ".bias")):
        return (width,)
    if name.endswith(".bias"):
        return (width,)  # Linear biases: 1-D too
    return (hidden, hidden)


def _classify_real(name: str) -> arch.Classification:
    config, names = _real(name)
    return classify({n: _real_shape(n, config) for n in names}, config)


def _counts(c: arch.Classification) -> Counter[tuple[str, str]]:
    return Counter((n.module.value, n.role.value) for n in c.norms)


def test_real_mimo_7b() -> None:
    c = _classify_real("MiMo-7B")
    assert c.family == "mimo"
    assert _counts(c) == {
        ("main", "attn_input"): 36,
        ("main", "mlp_input"): 36,
        ("main", "final"): 1,
        ("mtp", "mtp_embedding"): 1,
        ("mtp", "mtp_hidden"): 1,
        ("mtp", "attn_input"): 1,
        ("mtp", "mlp_input"): 1,
        ("mtp", "mtp_final"): 1,
    }
    assert len(c.norms) == 36 * 2 + 1 + 5
    assert {n.layer for n in c.norms if n.module.value == "main"} == {*range(36), None}
    assert {n.mtp_depth for n in c.norms if n.module.value == "mtp"} == {1}
    assert c.mtp_depth == 1
    assert c.num_layers == 36
    assert c.warnings == []
    assert {n.parametrization for n in c.norms} == {Parametrization.standard}


def test_real_qwen3_5_reap_dropped_mtp_warns() -> None:
    c = _classify_real("Qwen3.5-35B-A3B-REAP18B-derived")
    assert c.family == "qwen3_5"
    assert c.mtp_depth == 0
    assert any("advertises 1 MTP depth" in w and "no MTP norms" in w for w in c.warnings)
    assert _counts(c) == {
        ("main", "attn_input"): 40,
        ("main", "mlp_input"): 40,
        ("main", "qk"): 20,
        ("main", "linear_attn"): 30,
        ("main", "final"): 1,
    }
    got = by_name(c)
    lm = "model.language_model."
    assert facts(got[f"{lm}layers.0.linear_attn.norm.weight"]) == E("linear_attn", 0, STD)
    assert facts(got[f"{lm}layers.3.self_attn.q_norm.weight"]) == E("qk", 3, ZC)
    assert facts(got[f"{lm}layers.39.post_attention_layernorm.weight"]) == E("mlp_input", 39, ZC)
    assert facts(got[f"{lm}norm.weight"]) == E("final", None, ZC)
    assert {n.layer for n in c.norms if n.role is Role.qk} == set(range(3, 40, 4))
    params = Counter(n.parametrization.value for n in c.norms)
    assert params == {ZC: 101, STD: 30}


def test_real_llama_bnb8bit_ignores_scb() -> None:
    c = _classify_real("Llama-3.1-8B-finetune-bnb8bit")
    assert c.family == "llama"
    assert len(c.norms) == 32 * 2 + 1
    assert not any(n.name.endswith((".SCB", ".weight_format")) for n in c.norms)
    assert c.warnings == []
    assert facts(by_name(c)["model.layers.31.post_attention_layernorm.weight"]) == E(
        "mlp_input", 31
    )


@pytest.mark.parametrize(("name", "layers"), [("Qwen3-14B-MLX-4bit", 40), ("Qwen3-1.7B", 28)])
def test_real_qwen3(name: str, layers: int) -> None:
    c = _classify_real(name)
    assert c.family == "qwen3"
    assert _counts(c) == {
        ("main", "attn_input"): layers,
        ("main", "mlp_input"): layers,
        ("main", "qk"): 2 * layers,
        ("main", "final"): 1,
    }
    assert not any(n.name.endswith((".biases", ".scales")) for n in c.norms)
    assert all(n.bias_name is None for n in c.norms)  # MLX `.biases` are not LayerNorm biases
    assert c.warnings == []


def test_real_mixtral_56_layers() -> None:
    c = _classify_real("WizardLM-2-8x22B_mixtral")
    assert c.family == "llama"
    assert len(c.norms) == 56 * 2 + 1
    assert c.num_layers == 56
    assert {n.layer for n in c.norms} == {*range(56), None}
    assert c.warnings == []


def test_real_phi3() -> None:
    c = _classify_real("Phi3-mini-merge_3PRYMMAL")
    assert _counts(c) == {
        ("main", "attn_input"): 32,
        ("main", "mlp_input"): 32,
        ("main", "final"): 1,
    }
    assert c.warnings == []


def test_real_gemma_2b_offset() -> None:
    c = _classify_real("gemma-2b_v1")
    assert c.family == "gemma"
    assert len(c.norms) == 18 * 2 + 1
    assert {n.parametrization for n in c.norms} == {Parametrization.offset}
    assert facts(by_name(c)["model.layers.17.post_attention_layernorm.weight"]) == E(
        "mlp_input", 17, ZC
    )


def test_real_medgemma_gemma3_vlm() -> None:
    c = _classify_real("medgemma-27b-it_gemma3")
    assert c.family == "gemma3"
    assert c.num_layers == 62
    text = [n for n in c.norms if n.name.startswith("language_model.model.")]
    assert Counter(n.role.value for n in text) == {
        "attn_input": 62,
        "attn_output": 62,
        "mlp_input": 62,
        "mlp_output": 62,
        "qk": 124,
        "final": 1,
    }
    assert {n.parametrization for n in text} == {Parametrization.offset}
    assert all(n.role is not Role.unknown for n in text)
    vision = [n for n in c.norms if n.name.startswith("vision_tower.")]
    assert len(vision) == 27 * 2 + 1
    assert Counter(n.role.value for n in vision) == {
        "attn_input": 27,
        "mlp_input": 27,
        "final": 1,
    }
    for n in vision:
        assert (n.tower, n.parametrization, DEFAULT_SCOPE(n)) == (
            Tower.vision,
            Parametrization.standard,
            False,
        )
        assert n.bias_name == n.name[: -len("weight")] + "bias"
    proj = by_name(c)["multi_modal_projector.mm_soft_emb_norm.weight"]
    assert (proj.role, proj.parametrization, DEFAULT_SCOPE(proj)) == (
        Role.projector,
        Parametrization.offset,
        False,
    )
    assert len(c.norms) == len(text) + len(vision) + 1
    assert c.warnings == []


def test_realnames_provenance_is_recorded() -> None:
    sources = (REALNAMES / "SOURCES.md").read_text()
    for d in sorted(p for p in REALNAMES.iterdir() if p.is_dir()):
        assert d.name in sources
        assert (d / "config.json").is_file()
        assert (d / "model.safetensors.index.json").is_file()


def test_vision_tower_inside_an_offset_family_is_standard_and_has_no_layer() -> None:
    # PaliGemma: a Gemma-1 (offset) language model under `language_model.model.` and a SigLIP
    # tower whose LayerNorms are plain (ones at init): read as 1 + w they would be gain 2.
    names = [
        "language_model.model.layers.0.input_layernorm.weight",
        "language_model.model.layers.0.post_attention_layernorm.weight",
        "language_model.model.norm.weight",
        "vision_tower.vision_model.encoder.layers.0.layer_norm1.weight",
        "vision_tower.vision_model.encoder.layers.0.layer_norm1.bias",
        "vision_tower.vision_model.post_layernorm.weight",
        "vision_tower.vision_model.post_layernorm.bias",
    ]
    config = {"model_type": "paligemma", "text_config": {"model_type": "gemma", "hidden_size": H}}
    c = classify(names, config)
    infos = by_name(c)
    assert c.family == "gemma"
    assert facts(infos["language_model.model.norm.weight"]) == E("final", param=ZC)
    for name, role in (
        ("vision_tower.vision_model.encoder.layers.0.layer_norm1.weight", Role.attn_input),
        ("vision_tower.vision_model.post_layernorm.weight", Role.final),
    ):
        info = infos[name]
        assert (info.role, info.parametrization, info.layer, info.tower) == (
            role,
            Parametrization.standard,
            None,
            Tower.vision,
        )
        assert info.bias_name == name[: -len("weight")] + "bias"
        assert not DEFAULT_SCOPE(info)
    assert c.warnings == []


def test_a_gain_named_scale_is_read_only_under_a_norm() -> None:
    # ERGO's expert_output_norm.scale ([experts, d]) is a gain; a quantization scale is not.
    assert arch.split_param("m.feed_forward.expert_output_norm.scale") == (
        "m.feed_forward.expert_output_norm",
        "weight",
    )
    assert arch.split_param("m.self_attn.q_proj.scale") is None
    c = classify(
        {
            "model.layers.0.feed_forward.expert_output_norm.scale": (4, 16),
            "model.layers.0.self_attn.q_proj.scale": (16,),
            "model.norm.weight": (16,),
        },
        None,
    )
    assert [n.name for n in c.norms] == [
        "model.layers.0.feed_forward.expert_output_norm.scale",
        "model.norm.weight",
    ]
