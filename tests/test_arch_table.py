"""Issue #10: one table, for every family and every naming vocabulary: names -> (module, MTP
depth, layer, role, parametrization). Written from docs/architectures.md (the section in each
comment), never from the rule tables; a test checks that every family and vocabulary has a row."""

from __future__ import annotations

from typing import Any

import pytest

from normscope import arch
from normscope.schema import TensorRef

H, Q, KV, HD = 16, 8, 4, 2
S, Z = "standard", "offset"
M, T = "main", "mtp"

# (config, {name: (module, depth, layer, role, parametrization)}); shapes are [H] unless the
# name is in WIDTH.
WIDTH = {"q_a_layernorm": Q, "kv_a_layernorm": KV, "attn.q_norm": Q, "attn.kv_norm": KV}
LL = {  # Llama naming (#llama)
    "model.layers.0.input_layernorm.weight": (M, None, 0, "attn_input"),
    "model.layers.1.post_attention_layernorm.weight": (M, None, 1, "mlp_input"),
    "model.norm.weight": (M, None, None, "final"),
}
QKN = {"model.layers.1.self_attn.q_norm.weight": (M, None, 1, "qk")}
SAND = {  # Gemma-2/3 sandwich (#gemma)
    "model.layers.0.input_layernorm.weight": (M, None, 0, "attn_input"),
    "model.layers.0.post_attention_layernorm.weight": (M, None, 0, "attn_output"),
    "model.layers.0.pre_feedforward_layernorm.weight": (M, None, 0, "mlp_input"),
    "model.layers.0.post_feedforward_layernorm.weight": (M, None, 0, "mlp_output"),
    "model.norm.weight": (M, None, None, "final"),
}
DS_MTP = {  # #deepseek-v3: layer N+k (N = 2 here)
    "model.layers.2.enorm.weight": (T, 1, None, "mtp_embedding"),
    "model.layers.2.hnorm.weight": (T, 1, None, "mtp_hidden"),
    "model.layers.2.shared_head.norm.weight": (T, 1, None, "mtp_final"),
    "model.layers.2.input_layernorm.weight": (T, 1, None, "attn_input"),
}
QN_MTP = {  # #qwen3-next
    "mtp.pre_fc_norm_embedding.weight": (T, 1, None, "mtp_embedding"),
    "mtp.pre_fc_norm_hidden.weight": (T, 1, None, "mtp_hidden"),
    "mtp.layers.0.input_layernorm.weight": (T, 1, None, "attn_input"),
    "mtp.norm.weight": (T, 1, None, "mtp_final"),
}
XQ = {"model.layers.0.self_attn.query_layernorm.weight": (M, None, 0, "qk")}

ROWS: dict[str, tuple[dict[str, Any] | None, dict[str, tuple[Any, ...]], str]] = {
    "llama": ({"model_type": "llama"}, LL, S),
    "qwen2": ({"model_type": "qwen2"}, LL, S),
    "phi3": ({"model_type": "phi3"}, LL, S),
    "qwen3": ({"model_type": "qwen3"}, LL | QKN, S),
    "qwen3_next": ({"model_type": "qwen3_next"}, LL | QKN | QN_MTP, Z),
    "qwen3_5": ({"model_type": "qwen3_5_text"}, LL | QN_MTP, Z),
    "deepseek_v3": (
        {"model_type": "deepseek_v3", "num_hidden_layers": 2},
        LL | DS_MTP | {"model.layers.0.self_attn.q_a_layernorm.weight": (M, None, 0, "latent")},
        S,
    ),
    "glm4_moe": ({"model_type": "glm4_moe", "num_hidden_layers": 2}, LL | QKN | DS_MTP, S),
    "mimo": (  # #mimo
        {"model_type": "mimo"},
        LL
        | {
            "model.mtp_layers.0.token_layernorm.weight": (T, 1, None, "mtp_embedding"),
            "model.mtp_layers.0.hidden_layernorm.weight": (T, 1, None, "mtp_hidden"),
            "model.mtp_layers.0.final_layernorm.weight": (T, 1, None, "mtp_final"),
        },
        S,
    ),
    "gemma": ({"model_type": "gemma"}, LL, Z),
    "gemma2": ({"model_type": "gemma2"}, SAND, Z),
    "gemma3": ({"model_type": "gemma3_text"}, SAND | QKN, Z),
    "gemma4": ({"model_type": "gemma4_text"}, SAND | QKN, S),  # #gemma-4: NOT zero-centred
    "olmo2": (  # #olmo-2
        {"model_type": "olmo2"},
        {
            "model.layers.0.post_attention_layernorm.weight": (M, None, 0, "attn_output"),
            "model.layers.0.post_feedforward_layernorm.weight": (M, None, 0, "mlp_output"),
            "model.norm.weight": (M, None, None, "final"),
        },
        S,
    ),
    "phi": (
        {"model_type": "phi"},
        {"model.final_layernorm.weight": (M, None, None, "final")},
        S,
    ),
    "gpt2": (  # ln_1 is an input norm in a stack that ends in ln_f (GPT-1 has none: post-LN)
        {"model_type": "gpt2"},
        {"h.0.ln_1.weight": (M, None, 0, "attn_input"), "ln_f.weight": (M, None, None, "final")},
        S,
    ),
    "bert": (
        {"model_type": "bert"},
        {"encoder.layer.0.output.LayerNorm.weight": (M, None, 0, "mlp_output")},
        S,
    ),
    "nemotron": ({"model_type": "nemotron"}, LL, Z),
    "cohere": ({"model_type": "cohere"}, {"model.norm.weight": (M, None, None, "final")}, S),
    "glm4": (
        {"model_type": "glm4"},
        {"model.layers.0.post_mlp_layernorm.weight": (M, None, 0, "mlp_output")},
        S,
    ),
    "stablelm": (  # #stablelm: per-head LayerNorms
        {"model_type": "stablelm"},
        {"model.layers.0.self_attn.q_layernorm.norms.3.weight": (M, None, 0, "qk")},
        S,
    ),
    "chameleon": ({"model_type": "chameleon"}, LL | QKN, S),
    "longcat_flash": (
        {"model_type": "longcat_flash"},
        {
            "model.layers.0.input_layernorm.1.weight": (M, None, 0, "attn_input"),
            "model.mtp.layers.0.enorm.m.weight": (T, 1, None, "mtp_embedding"),
            "model.mtp.norm.weight": (T, 1, None, "mtp_final"),
        },
        S,
    ),
    "ernie4_5": (
        {"model_type": "ernie4_5"},
        {
            "model.mtp_emb_norm.0.weight": (T, 1, None, "mtp_embedding"),
            "model.mtp_block.0.post_attention_layernorm.weight": (T, 1, None, "mlp_input"),
        },
        S,
    ),
    "step3p5": (  # #step-35: GemmaRMSNorm MTP norms (offset)
        {"model_type": "step3p5", "num_hidden_layers": 2},
        LL | {"model.layers.2.enorm.weight": (T, 1, None, "mtp_embedding")},
        Z,
    ),
    "minimax_m2": (  # MTP at layers N+i even without enorm/hnorm names
        {"model_type": "minimax_m2", "num_hidden_layers": 2, "num_mtp_modules": 1},
        LL | {"model.layers.2.input_layernorm.weight": (T, 1, None, "attn_input")},
        S,
    ),
    "megatron": (  # #megatron-core
        None,
        {
            "decoder.layers.0.self_attention.linear_qkv.layer_norm_weight": (
                M,
                None,
                0,
                "attn_input",
            ),
            "decoder.final_layernorm.weight": (M, None, None, "final"),
            "mtp.layers.0.enorm.weight": (T, 1, None, "mtp_embedding"),
            "mtp.layers.0.mtp_model_layer.pre_mlp_layernorm.weight": (T, 1, None, "mlp_input"),
        },
        S,
    ),
    # --- vocabularies: an unknown model_type, and one name no family lists (Bailing/Hunyuan's
    # query_layernorm, #naming-vocabularies), so that no family table reads more names than the
    # vocabularies
    "vocab:hf": ({"model_type": "brand_new"}, SAND | XQ, S),
    "vocab:meta": (  # #naming-vocabularies, DeepSeek original
        {"model_type": "brand_new", "q_lora_rank": Q, "kv_lora_rank": KV},
        {
            "layers.0.attn_norm.weight": (M, None, 0, "attn_input"),
            "layers.0.ffn_norm.weight": (M, None, 0, "mlp_input"),
            "layers.0.attn.q_norm.weight": (M, None, 0, "latent"),
            "layers.0.attn.kv_norm.weight": (M, None, 0, "latent"),
            "norm.weight": (M, None, None, "final"),
        },
        S,
    ),
    "vocab:mtp": (
        {"model_type": "brand_new"},
        {
            "layers.0.attn_norm.weight": (M, None, 0, "attn_input"),
            "mtp.0.enorm.weight": (T, 1, None, "mtp_embedding"),
            "mtp.1.hnorm.weight": (T, 2, None, "mtp_hidden"),
            "mtp.0.norm.weight": (T, 1, None, "mtp_final"),
            "mtp.0.ffn_norm.weight": (T, 1, None, "mlp_input"),
        },
        S,
    ),
    "vocab:olmo-core": (
        {"model": {"d_model": H, "n_layers": 1, "block": {"name": "reordered_norm"}}},
        {
            "blocks.0.attention_norm.weight": (M, None, 0, "attn_output"),
            "blocks.0.feed_forward_norm.weight": (M, None, 0, "mlp_output"),
            "blocks.0.attention.q_norm.weight": (M, None, 0, "qk"),
            "lm_head.norm.weight": (M, None, None, "final"),
        },
        S,
    ),
    "vocab:gpt2": (
        {"model_type": "falcon_like"},
        {
            "transformer.h.0.ln_attn.weight": (M, None, 0, "attn_input"),
            "transformer.h.0.ln_mlp.weight": (M, None, 0, "mlp_input"),
            "transformer.ln_f.weight": (M, None, None, "final"),
        },
        S,
    ),
    "vocab:bert": (
        {"model_type": "bert_like"},
        {
            "embeddings.LayerNorm.weight": (M, None, None, "embedding"),
            "encoder.layer.0.attention.output.LayerNorm.weight": (M, None, 0, "attn_output"),
        }
        | XQ,
        S,
    ),
    "vocab:megatron": (
        {"model_type": "brand_new", "layernorm_zero_centered_gamma": True},
        {
            "decoder.layers.0.input_layernorm.weight": (M, None, 0, "attn_input"),
            "decoder.layers.0.self_attention.out_norm.weight": (M, None, 0, "linear_attn"),
            "decoder.final_layernorm.weight": (M, None, None, "final"),
        }
        | XQ,
        Z,
    ),
    # Whisper-style pre-LN encoder-decoder (each stack ends in `layer_norm`): the fairseq names
    # are input norms; the cross-attention's is its own role (#25).
    "vocab:blocks": (
        {"model_type": "brand_new_s2s"},
        {
            "model.encoder.layers.0.self_attn_layer_norm.weight": (M, None, 0, "attn_input"),
            "model.encoder.layers.0.final_layer_norm.weight": (M, None, 0, "mlp_input"),
            "model.encoder.layer_norm.weight": (M, None, None, "final"),
            "model.decoder.layers.0.encoder_attn_layer_norm.weight": (
                M,
                None,
                0,
                "cross_attn_input",
            ),
            "model.decoder.layer_norm.weight": (M, None, None, "final"),
        },
        S,
    ),
    # A stack's start and end outside its blocks (OpenCLIP-style ln_pre, ln_post).
    "vocab:stack": (
        {"model_type": "brand_new_vit"},
        {
            "trunk.ln_pre.weight": (M, None, None, "embedding"),
            "trunk.resblocks.0.ln_1.weight": (M, None, 0, "attn_input"),
            "trunk.ln_post.weight": (M, None, None, "final"),
        },
        S,
    ),
}
# Tensors that are no norms, beside a row's norms (a rule's `if_present` sibling).
SIBLINGS: dict[str, dict[str, tuple[int, ...]]] = {
    "vocab:olmo-core": {"lm_head.w_out.weight": (32, H)},  # OLMo-core LMHead(norm, w_out)
}


def _shape(name: str) -> tuple[int, ...]:
    for key, width in WIDTH.items():
        if key in name:
            return (width,)
    return (H,)


@pytest.mark.parametrize("row", list(ROWS))
def test_names_to_facts(row: str) -> None:
    config, names, param = ROWS[row]
    tensors = {n: TensorRef(n, "x", "BF16", _shape(n), 0, 0) for n in names}
    for n, shape in SIBLINGS.get(row, {}).items():
        tensors[n] = TensorRef(n, "x", "BF16", shape, 0, 0)
    c = arch.classify(tensors, config)
    got = {
        n.name: (n.module.value, n.mtp_depth, n.layer, n.role.value, n.parametrization.value)
        for n in c.norms
    }
    assert got == {k: (*v, param) for k, v in names.items()}
    if row.startswith("vocab:"):
        assert c.family == "generic"
        assert row.split(":")[1] in c.vocabularies
    else:
        assert c.family == row
    assert c.unknown == []


def test_every_family_and_vocabulary_has_a_row() -> None:
    names = {f.name for f in arch.FAMILIES} | {f"vocab:{v.name}" for v in arch.VOCABULARIES}
    assert set(ROWS) == names
