"""The built-in family tables, written in the rules-file format (see `rules.py` and the README).

Each table is exactly what a `[[family]]` entry of a user's rules file holds (dicts here, TOML
there; `dump_rules(FAMILIES)` writes them out and `load_rules` reads them back to equal families,
which a test checks). A table keeps what is truly family-specific: which norms an architecture
has, what `post_attention_layernorm` means in it, offsets and exceptions; naming that is common
across families lives in `vocab.py`. Every table cites its section of `docs/architectures.md`
(where the facts are written out, each with its public source) and the upstream source that was
read (repository @ commit : path).
"""

from __future__ import annotations

from typing import Any

from normscope.arch.rules import Family, parse_family


def _n(pattern: str, role: str | list[str], **kw: Any) -> dict[str, Any]:
    return {"pattern": pattern, "role": role, **kw}


# Llama naming: `post_attention_layernorm` is the pre-MLP INPUT norm (LlamaDecoderLayer applies it
# before self.mlp; llama.cpp tensor_mapping.py lists it under FFN_NORM "llama-hf").
# NOTE: no `consumers`: they decide fold's matrices, and MLA (DeepSeek-V2-Lite: q_proj AND
# kv_a_proj_with_mqa) and MoE families share this table; fold's name vocabulary finds them all.
LLAMA = [
    _n("layers.{L}.input_layernorm", "attn_input"),
    _n("layers.{L}.post_attention_layernorm", "mlp_input"),
    _n("norm", "final"),
]
QK = [_n("layers.{L}.self_attn.(q_norm|k_norm)", "qk")]
MLA = [_n("layers.{L}.self_attn.(q_a_layernorm|kv_a_layernorm)", "latent")]
# DeepSeek-V3 style MTP stored as layer N+k (deepseek-ai/DeepSeek-V3 README_WEIGHTS.md @9b4e978:
# "MTP Module's layer ID is 61"; vllm deepseek_mtp.py @03356f8: enorm, hnorm, shared_head.norm).
# The structure (vocab.MTP_MARKERS) moves layers N+k to the MTP module.
DEEPSEEK_MTP = [
    _n("layers.{L}.enorm", "mtp_embedding", consumers=["layers.{L}.eh_proj"]),
    _n("layers.{L}.hnorm", "mtp_hidden", consumers=["layers.{L}.eh_proj"]),
    # shared_head.norm feeds shared_head.head where the checkpoint stores one, else the shared
    # lm_head (GLM-4.5 exports): fold's structure decides, so no consumer pattern here.
    _n("layers.{L}.shared_head.norm", "mtp_final"),
]
# Gemma-2/3 sandwich norms (transformers models/gemma2/modular_gemma2.py): post_attention_layernorm
# is an OUTPUT norm there; pre_feedforward_layernorm is the MLP input.
SANDWICH = [
    _n("layers.{L}.input_layernorm", "attn_input"),
    _n("layers.{L}.post_attention_layernorm", "attn_output"),
    _n("layers.{L}.pre_feedforward_layernorm", "mlp_input"),
    _n("layers.{L}.post_feedforward_layernorm", "mlp_output"),
    _n("norm", "final"),
]
# Qwen3-Next / Qwen3.5 MTP, top level `mtp.*` (vllm qwen3_next_mtp.py @055e47c).
QWEN_NEXT_MTP = [
    _n("mtp.pre_fc_norm_embedding", "mtp_embedding", module="mtp", consumers=["mtp.fc"]),
    _n("mtp.pre_fc_norm_hidden", "mtp_hidden", module="mtp", consumers=["mtp.fc"]),
    _n("mtp.norm", "mtp_final", module="mtp"),
    _n("mtp.layers.{M}.input_layernorm", "attn_input", module="mtp"),
    _n("mtp.layers.{M}.post_attention_layernorm", "mlp_input", module="mtp"),
    _n("mtp.layers.{M}.self_attn.(q_norm|k_norm)", "qk", module="mtp"),
]
# Qwen3NextRMSNormGated: torch.ones, weight * x: STANDARD inside an offset model (trap 2).
GATED = [_n("layers.{L}.linear_attn.norm", "linear_attn", parametrization="standard")]


# Transformer Engine's LayerNormLinear (extensions/transformer_engine.py) fuses a norm into the
# linear map it feeds: `<module>.layer_norm_weight` feeds exactly `<module>.weight` of the same
# layer. The local spec saves the same names (gpt_layer_specs.py sharded_state_dict_keys_map
# "input_layernorm." -> "self_attention.linear_qkv.layer_norm_"; read in megatron-core 0.16.1
# saves). Consumers are written relative to the layer: fold anchors a pattern at the norm's
# nearest ancestor holding a match, so an MTP layer's norm finds its own linear_qkv.
_TE_FUSED = [
    ("self_attention.linear_qkv", "attn_input"),
    ("mlp.linear_fc1", "mlp_input"),
    ("self_attention.linear_q_up_proj", "latent"),  # MLA
    ("self_attention.linear_kv_up_proj", "latent"),
    ("self_attention.in_proj", "attn_input"),  # gated delta net
]


def _megatron_layer(prefix: str) -> list[dict[str, Any]]:
    """Megatron-Core transformer-layer norms under `prefix` (NVIDIA/Megatron-LM @d98e8a6)."""
    return [_n(prefix + m + ".layer_norm", role, consumers=[m]) for m, role in _TE_FUSED] + [
        _n(prefix + "input_layernorm", "attn_input"),
        _n(prefix + "pre_mlp_layernorm", "mlp_input"),
        # MLA (multi_latent_attention.py): q_layernorm/kv_layernorm are LATENT norms when the
        # layer has a q/kv down-projection (or their width is q_lora_rank); otherwise QK norms.
        _n(
            prefix + "self_attention.q_layernorm",
            "latent",
            if_present="linear_q_down_proj.weight",
        ),
        _n(prefix + "self_attention.kv_layernorm", "latent"),
        _n(prefix + "self_attention.q_layernorm", ["qk", "latent"]),
        _n(prefix + "self_attention.k_layernorm", "qk"),
        _n(prefix + "self_attention.out_norm", "linear_attn"),
    ]


def _family(name: str, model_types: list[str], archs: list[str], param: str, **kw: Any) -> Any:
    return {
        "name": name,
        "model_types": model_types,
        "architectures": archs,
        "parametrization": param,
        **kw,
    }


FAMILY_TABLES: list[dict[str, Any]] = [
    _family(
        "llama",
        ["llama", "mistral", "mixtral", "granite", "granitemoe"],
        ["LlamaForCausalLM", "MistralForCausalLM", "MixtralForCausalLM"],
        "standard",
        source="docs/architectures.md#llama; "
        "huggingface/transformers @0022728 models/llama/modeling_llama.py (LlamaRMSNorm: "
        "torch.ones, weight * x); Mistral/Mixtral/Granite RMSNorm are Llama copies",
        norm=LLAMA,
    ),
    _family(
        "qwen2",
        ["qwen2", "qwen2_moe"],
        ["Qwen2ForCausalLM", "Qwen2MoeForCausalLM"],
        "standard",
        source="docs/architectures.md#qwen2; "
        "huggingface/transformers models/qwen2 (Qwen2RMSNorm: torch.ones, weight * x)",
        norm=LLAMA,
    ),
    _family(
        "phi3",
        ["phi3"],
        ["Phi3ForCausalLM"],
        "standard",
        source="docs/architectures.md#phi-3; "
        "huggingface/transformers models/phi3 (Phi3RMSNorm, a Llama copy)",
        norm=LLAMA,
    ),
    _family(
        "qwen3",
        ["qwen3", "qwen3_moe"],
        ["Qwen3ForCausalLM", "Qwen3MoeForCausalLM"],
        "standard",
        source="docs/architectures.md#qwen3; "
        "huggingface/transformers @02e8340 models/qwen3/modular_qwen3.py (q_norm/k_norm "
        "over head_dim; Qwen3RMSNorm(Qwen2RMSNorm))",
        norm=LLAMA + QK,
    ),
    _family(
        "qwen3_next",
        ["qwen3_next"],
        ["Qwen3NextForCausalLM"],
        "offset",
        source="docs/architectures.md#qwen3-next; "
        "huggingface/transformers @043bb8d models/qwen3_next/modular_qwen3_next.py "
        "(Qwen3NextRMSNorm(Gemma3RMSNorm): 1 + w; Qwen3NextRMSNormGated: w); "
        "vllm @055e47c qwen3_next_mtp.py",
        norm=LLAMA + QK + GATED + QWEN_NEXT_MTP,
    ),
    _family(
        "qwen3_5",
        ["qwen3_5", "qwen3_5_moe", "qwen3_5_text", "qwen3_5_moe_text"],
        [
            "Qwen3_5ForConditionalGeneration",
            "Qwen3_5MoeForConditionalGeneration",
            "Qwen3_5ForCausalLM",
            "Qwen3_5MoeForCausalLM",
        ],
        "offset",
        source="docs/architectures.md#qwen35; "
        "huggingface/transformers @009e78d models/qwen3_5/modular_qwen3_5.py "
        "(Qwen3_5RMSNorm(Qwen3NextRMSNorm): 1 + w; gated linear_attn.norm: w); "
        "vllm @01d9980 qwen3_5_mtp.py",
        norm=LLAMA + QK + GATED + QWEN_NEXT_MTP,
    ),
    _family(
        "deepseek_v3",
        ["deepseek_v3", "deepseek_v32", "deepseek_v2", "kimi_k2"],
        ["DeepseekV3ForCausalLM", "DeepseekV32ForCausalLM", "DeepseekV2ForCausalLM"],
        "standard",
        source="docs/architectures.md#deepseek-v3; "
        "huggingface/transformers @000c33f models/deepseek_v3/modular_deepseek_v3.py "
        "(DeepseekV3RMSNorm(LlamaRMSNorm)); deepseek-ai/DeepSeek-V3 @9b4e978 README_WEIGHTS.md",
        # V3.2 sparse-attention indexer LayerNorm: measured, not gated by default.
        norm=LLAMA + MLA + DEEPSEEK_MTP + [_n("layers.{L}.self_attn.indexer.k_norm", "unknown")],
    ),
    _family(
        "glm4_moe",
        ["glm4_moe", "glm4_moe_lite"],
        ["Glm4MoeForCausalLM", "Glm4MoeLiteForCausalLM"],
        "standard",
        source="docs/architectures.md#glm-45; "
        "huggingface/transformers @000c33f models/glm4_moe/modeling_glm4_moe.py (q_norm/"
        "k_norm if use_qk_norm); vllm @028aedf glm4_moe_mtp.py (DeepSeek MTP naming at layer N+k)",
        norm=LLAMA + QK + MLA + DEEPSEEK_MTP,
    ),
    _family(
        "mimo",
        ["mimo"],
        ["MiMoForCausalLM"],
        "standard",
        source="docs/architectures.md#mimo; "
        "vllm @0bb55d6 mimo_mtp.py; jj8127/mimo_kor @1bdf82c modeling_mimo.py "
        "(Qwen2RMSNorm); MTP concatenates [hidden | embedding] (trap 11)",
        norm=LLAMA
        + [
            _n("mtp_layers.{M}.token_layernorm", "mtp_embedding", module="mtp"),
            _n("mtp_layers.{M}.hidden_layernorm", "mtp_hidden", module="mtp"),
            _n("mtp_layers.{M}.final_layernorm", "mtp_final", module="mtp"),
            _n("mtp_layers.{M}.input_layernorm", "attn_input", module="mtp"),
            _n("mtp_layers.{M}.post_attention_layernorm", "mlp_input", module="mtp"),
        ],
    ),
    _family(
        "gemma",
        ["gemma"],
        ["GemmaForCausalLM"],
        "offset",
        source="docs/architectures.md#gemma; "
        "huggingface/transformers @008e574 models/gemma/modular_gemma.py (GemmaRMSNorm: "
        "torch.zeros, x * (1 + w))",
        norm=LLAMA,
    ),
    _family(
        "gemma2",
        ["gemma2"],
        ["Gemma2ForCausalLM"],
        "offset",
        source="docs/architectures.md#gemma; "
        "huggingface/transformers models/gemma2/modular_gemma2.py (Gemma2RMSNorm("
        "GemmaRMSNorm); post_attention/post_feedforward are output norms)",
        norm=SANDWICH,
    ),
    _family(
        "gemma3",
        ["gemma3", "gemma3_text"],
        ["Gemma3ForCausalLM", "Gemma3ForConditionalGeneration"],
        "offset",
        source="docs/architectures.md#gemma; "
        "huggingface/transformers @0033204 models/gemma3/modular_gemma3.py (Gemma3RMSNorm: "
        "1 + w, also q_norm/k_norm over head_dim)",
        # Gemma3RMSNorm over the vision width: offset, the connector's norm (Gemma3MultiModal
        # Projector: mm_soft_emb_norm before mm_input_projection).
        norm=SANDWICH + QK + [_n("multi_modal_projector.mm_soft_emb_norm", "projector")],
    ),
    _family(
        "gemma4",
        ["gemma4", "gemma4_text"],
        ["Gemma4ForCausalLM", "Gemma4ForConditionalGeneration"],
        "standard",
        source="docs/architectures.md#gemma-4; "
        "Gemma-4 is NOT zero-centred (llama.cpp norm_shift 0.0 "
        "for Gemma4; vLLM gemma4 plain RMSNorm, quoted by a porting note; INFERRED); sandwich "
        "names as Gemma-3",
        norm=SANDWICH + QK + [_n("multi_modal_projector.mm_soft_emb_norm", "projector")],
    ),
    _family(
        "olmo2",
        ["olmo2", "olmo3"],
        ["Olmo2ForCausalLM"],
        "standard",
        source="docs/architectures.md#olmo-2; "
        "huggingface/transformers @008f5c8 models/olmo2/modular_olmo2.py "
        "(Olmo2RMSNorm(LlamaRMSNorm))",
        # OLMo-2 has no input norms: post_attention_layernorm is an OUTPUT norm here, and
        # q_norm/k_norm span the full projection width.
        norm=[
            _n("layers.{L}.self_attn.(q_norm|k_norm)", "qk"),
            _n("layers.{L}.post_attention_layernorm", "attn_output"),
            _n("layers.{L}.post_feedforward_layernorm", "mlp_output"),
            _n("norm", "final"),
        ],
    ),
    _family(
        "phi",
        ["phi"],
        ["PhiForCausalLM"],
        "standard",
        source="docs/architectures.md#phi-2; "
        "huggingface/transformers models/phi (PhiDecoderLayer: nn.LayerNorm, parallel "
        "block)",
        # Parallel block: one LayerNorm feeds attention and MLP (shared input -> attn_input).
        norm=[
            _n("layers.{L}.input_layernorm", "attn_input"),
            _n("final_layernorm", "final"),
        ],
    ),
    _family(
        "gpt2",
        ["gpt2"],
        ["GPT2LMHeadModel", "GPT2Model"],
        "standard",
        source="docs/architectures.md#gpt-2; "
        "huggingface/transformers @0010f60 models/gpt2/modeling_gpt2.py (nn.LayerNorm "
        "ln_1, ln_2, ln_f; original safetensors have no `transformer.` prefix)",
        norm=[
            # OpenAI GPT-1 (read by these names when no config says otherwise) is post-LN and
            # ends in no ln_f: the stack's final norm decides (stacks-towers-and-the-model-zoo).
            _n("h.{L}.ln_1", "attn_input", if_final_norm=True),
            _n("h.{L}.ln_1", "attn_output", if_final_norm=False),
            _n("h.{L}.ln_2", "mlp_input", if_final_norm=True),
            _n("h.{L}.ln_2", "mlp_output", if_final_norm=False),
            _n("h.{L}.ln_cross_attn", "cross_attn_input"),
            _n("ln_f", "final"),
        ],
    ),
    _family(
        "bert",
        ["bert", "roberta", "xlm-roberta", "mpnet"],
        ["BertModel", "BertForMaskedLM", "MPNetModel", "MPNetForMaskedLM"],
        "standard",
        source="docs/architectures.md#bert; docs/architectures.md#mpnet; "
        "huggingface/transformers models/bert/modeling_bert.py (post-LN nn.LayerNorm), "
        "models/mpnet/modeling_mpnet.py (MPNetAttention.LayerNorm); "
        "llama.cpp gguf-py/gguf/tensor_mapping.py @0024aa7 (bert: ATTN_OUT_NORM, LAYER_OUT_NORM)",
        final_norm=False,
        # Post-LN: every LayerNorm normalises the residual stream itself (output group). MPNet
        # keeps the attention's LayerNorm on MPNetAttention itself (`attention.LayerNorm`).
        norm=[
            _n("embeddings.LayerNorm", "embedding"),
            _n("encoder.layer.{L}.attention.(output.LayerNorm|LayerNorm)", "attn_output"),
            _n("encoder.layer.{L}.output.LayerNorm", "mlp_output"),
            # BertPredictionHeadTransform, Roberta/MPNetLMHead: dense, act, LayerNorm, decoder.
            _n("(cls.predictions.transform.LayerNorm|lm_head.layer_norm)", "head"),
        ],
    ),
    _family(
        "nemotron",
        ["nemotron"],
        ["NemotronForCausalLM"],
        "offset",
        source="docs/architectures.md#nemotron; "
        "NemotronLayerNorm1P (LayerNorm with bias, weight + 1); NVIDIA-NeMo/Megatron-Bridge "
        "@067f987 nemotron_bridge.py (layernorm_zero_centered_gamma = True)",
        norm=LLAMA,
    ),
    _family(
        "cohere",
        ["cohere", "cohere2"],
        ["CohereForCausalLM", "Cohere2ForCausalLM"],
        "standard",
        source="docs/architectures.md#cohere; "
        "huggingface/transformers models/cohere (CohereLayerNorm: mean-centred, weight only;"
        " parallel block; q_norm/k_norm built as CohereLayerNorm((num_heads, head_dim)): 2-D)",
        norm=[
            _n("layers.{L}.input_layernorm", "attn_input"),
            _n("layers.{L}.self_attn.(q_norm|k_norm)", "qk"),
            _n("norm", "final"),
        ],
    ),
    _family(
        "glm4",
        ["glm4"],
        ["Glm4ForCausalLM"],
        "standard",
        source="docs/architectures.md#glm-4; "
        "llama.cpp gguf-py/gguf/tensor_mapping.py @0024aa7 "
        "(glm-4-0414 ATTN_POST_NORM, FFN_POST_NORM)",
        norm=LLAMA
        + [
            _n("layers.{L}.post_self_attn_layernorm", "attn_output"),
            _n("layers.{L}.post_mlp_layernorm", "mlp_output"),
        ],
    ),
    _family(
        "stablelm",
        ["stablelm", "stablelm_epoch"],
        ["StableLmForCausalLM"],
        "standard",
        source="docs/architectures.md#stablelm; "
        "nn.LayerNorm input/post_attention/norm; "
        "StableLmLayerNormPerHead = ModuleList of one [head_dim] LayerNorm per head, names "
        "self_attn.q_layernorm.norms.{h} (transformers models/stablelm, via find_string)",
        norm=LLAMA + [_n("layers.{L}.self_attn.(q_layernorm|k_layernorm).norms", "qk")],
    ),
    _family(
        "chameleon",
        ["chameleon"],
        ["ChameleonForConditionalGeneration", "ChameleonForCausalLM"],
        "standard",
        source="docs/architectures.md#chameleon; "
        "ChameleonLayerNorm(nn.LayerNorm) over (num_heads, "
        "head_dim): q_norm/k_norm weight and bias 2-D (transformers models/chameleon, via "
        "find_string); Llama-like trunk; the VQ image tokenizer's GroupNorms are not text norms",
        norm=LLAMA + QK + [_n("vqmodel.{ANY}", "unknown", parametrization="standard")],
    ),
    _family(
        "longcat_flash",
        ["longcat_flash"],
        ["LongcatFlashForCausalLM"],
        "standard",
        source="docs/architectures.md#longcat-flash; "
        "two attention sublayers per layer, "
        "input_layernorm.{0,1}, post_attention_layernorm.{0,1}, self_attn.{0,1}.q_a/kv_a_layernorm "
        "(transformers LongcatFlashDecoderLayer); MTP model.mtp.layers.0.{enorm.m,hnorm.m}, "
        "model.mtp.norm (vllm @0bb55d6 longcat_flash_mtp.py). Stored latent gains are "
        "multiplied by sqrt(hidden/rank) at load when mla_scale_*_lora is set (trap 16)",
        norm=LLAMA
        + MLA
        + [
            _n("mtp.layers.{M}.enorm", "mtp_embedding", module="mtp"),
            _n("mtp.layers.{M}.hnorm", "mtp_hidden", module="mtp"),
            _n("mtp.norm", "mtp_final", module="mtp", mtp_depth=1),
            _n("mtp.layers.{M}.(transformer_layer.)?input_layernorm", "attn_input", module="mtp"),
            _n(
                "mtp.layers.{M}.(transformer_layer.)?post_attention_layernorm",
                "mlp_input",
                module="mtp",
            ),
            _n(
                "mtp.layers.{M}.(transformer_layer.)?self_attn.(q_a_layernorm|kv_a_layernorm)",
                "latent",
                module="mtp",
            ),
        ],
    ),
    _family(
        "ernie4_5",
        ["ernie4_5", "ernie4_5_moe"],
        ["Ernie4_5ForCausalLM", "Ernie4_5_MoeForCausalLM"],
        "standard",
        source="docs/architectures.md#ernie-45; "
        "vllm @028aedf ernie_mtp.py: model.mtp_emb_norm.0, "
        "model.mtp_hidden_norm.0, model.mtp_linear_proj.0 [H,2H], model.mtp_block.0.* "
        "(LlamaDecoderLayer); RMSNorm standard; no MTP-specific final norm",
        norm=LLAMA
        + [
            _n("mtp_emb_norm.{M}", "mtp_embedding", consumers=["mtp_linear_proj.{M}"]),
            _n("mtp_hidden_norm.{M}", "mtp_hidden", consumers=["mtp_linear_proj.{M}"]),
            _n("mtp_block.{M}.input_layernorm", "attn_input"),
            _n("mtp_block.{M}.post_attention_layernorm", "mlp_input"),
        ],
    ),
    _family(
        "step3p5",
        ["step3p5"],
        ["Step3p5ForCausalLM"],
        "offset",
        source="docs/architectures.md#step-35; "
        "vllm @12c9ac2 step3p5_mtp.py: DeepSeek-style "
        "model.layers.{N+k}.{enorm,hnorm,shared_head.norm}, inner block under .transformer., "
        "MTP norms GemmaRMSNorm (1 + w); trunk per-head q_norm/k_norm",
        note="Step-3.5 trunk norms are read as offset (1 + w): inferred from its GemmaRMSNorm MTP "
        "norms, not verified upstream; pass --parametrization if the values disagree",
        norm=LLAMA
        + QK
        + [
            _n("layers.{L}.enorm", "mtp_embedding", parametrization="offset"),
            _n("layers.{L}.hnorm", "mtp_hidden", parametrization="offset"),
            _n("layers.{L}.shared_head.norm", "mtp_final", parametrization="offset"),
            _n("layers.{L}.transformer.input_layernorm", "attn_input"),
            _n("layers.{L}.transformer.post_attention_layernorm", "mlp_input"),
            _n("layers.{L}.transformer.self_attn.(q_norm|k_norm)", "qk"),
        ],
    ),
    _family(
        "minimax_m2",
        ["minimax_m2"],
        ["MiniMaxM2ForCausalLM"],
        "standard",
        source="docs/architectures.md#minimax-m2; "
        "vllm @01d9958 minimax_m2.py (plain RMSNorm; q_norm "
        "over head_dim * num_heads, k_norm over head_dim * num_kv_heads; MTP modules are "
        "model.layers.{num_hidden_layers + i}, inner names unverified)",
        mtp_in_layers=True,
        norm=LLAMA + QK + DEEPSEEK_MTP,
    ),
    _family(
        "megatron",
        [],
        [],
        "standard",
        source="docs/architectures.md#megatron-core; "
        "NVIDIA/Megatron-LM @d98e8a6 megatron/core/models/gpt/gpt_layer_specs.py, "
        "transformer/multi_token_prediction.py (mtp_model_layer, formerly transformer_layer)",
        note="the checkpoint does not say whether the run used layernorm_zero_centered_gamma "
        "(--apply-layernorm-1p); gains are read as standard unless --parametrization offset",
        norm=_megatron_layer("decoder.layers.{L}.")
        # The final norms feed output_layer, or the embedding when tied (Megatron-LM's default,
        # share_embeddings_and_output_weights: no output_layer is saved): fold's structure
        # decides (an untied head first), so they name no consumers.
        + [_n("decoder.final_layernorm", "final")]
        + [
            # multi_token_prediction.py `_concat_embeddings`: cat(enorm(emb), hnorm(hidden))
            # into the layer's eh_proj [H, 2H].
            _n("mtp.layers.{M}.enorm", "mtp_embedding", module="mtp", consumers=["eh_proj"]),
            _n("mtp.layers.{M}.hnorm", "mtp_hidden", module="mtp", consumers=["eh_proj"]),
            _n("mtp.layers.{M}.final_layernorm", "mtp_final", module="mtp"),
        ]
        + [
            {**r, "module": "mtp"}
            for r in _megatron_layer("mtp.layers.{M}.(mtp_model_layer|transformer_layer).")
        ],
    ),
]

FAMILIES: tuple[Family, ...] = tuple(
    parse_family(t, f"family[{i}]", "normscope.arch.families") for i, t in enumerate(FAMILY_TABLES)
)
FAMILY_BY_NAME = {f.name: f for f in FAMILIES}
