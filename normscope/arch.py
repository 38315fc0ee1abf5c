"""Architecture knowledge, kept as data: which tensors are norms, and what each one is.

Each `Family` is a table of `NormRule`s citing the upstream source that defines the norms. A
family is chosen by `model_type` (top level or in `text_config`) or `architectures` from
config.json; without a usable config, by which family's rules match the most tensor names; failing
that, a generic fallback measures every norm-looking 1-D tensor with role `unknown`.

Rules match the tensor name without its parameter suffix (`.weight`/`.bias`, or Transformer
Engine's fused `.layer_norm_weight`/`.layer_norm_bias`), anchored at both ends after one of the
family's prefixes. In a pattern `.` is a literal dot, `(a|b)` an alternative, `{L}` a trunk layer
index, `{M}` a 0-based MTP index, `{ANY}` any text and `{NORM}`
one name component that names a norm.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from normscope.errors import ArchError
from normscope.schema import Group, Module, NormInfo, Parametrization, Role, TensorRef

STD = Parametrization.standard
ZC = Parametrization.offset

_INPUT_ROLES = {
    Role.attn_input,
    Role.mlp_input,
    Role.final,
    Role.latent,
    Role.linear_attn,
    Role.mtp_embedding,
    Role.mtp_hidden,
    Role.mtp_final,
}
_OUTPUT_ROLES = {Role.attn_output, Role.mlp_output, Role.embedding}


def default_group(role: Role) -> Group | None:
    """Input norms feed a linear map; output norms join the residual stream (DOMAIN.md 5)."""
    if role in _INPUT_ROLES:
        return Group.input
    if role in _OUTPUT_ROLES:
        return Group.output
    return None


@dataclass(frozen=True, slots=True)
class NormRule:
    """One norm name pattern and what a match means."""

    pattern: str
    role: Role
    module: Module = Module.main
    parametrization: Parametrization | None = None
    """None: the family's default."""
    group: Group | None = None
    """None: derived from the role by `default_group`."""
    prefixed: bool = True
    """False: the pattern is matched from the start of the name (e.g. Qwen3-Next's `mtp.*`)."""
    if_present: str | None = None
    """Only match if this sibling tensor (the norm's last name component replaced) exists."""


@dataclass(frozen=True, slots=True)
class Family:
    """The norm rules of one architecture family."""

    name: str
    model_types: tuple[str, ...]
    architectures: tuple[str, ...]
    parametrization: Parametrization
    rules: tuple[NormRule, ...]
    source: str
    """Where the rules come from (repository @ commit : path)."""
    prefixes: tuple[str, ...] = (
        "model.language_model.",
        "language_model.model.",
        "language_model.",
        "model.",
        "",
    )
    mtp_in_layers: bool = False
    """MTP modules are stored as extra trunk layers `layers.{N+k}` (DeepSeek-V3, GLM-4.5)."""
    mtp_marker: str | None = None
    """Tensor-name regex whose group 1 is the layer index of an MTP layer (mtp_in_layers)."""
    note: str | None = None
    """A caveat shown as a warning whenever this family is used."""


def _r(pattern: str, role: Role, **kw: Any) -> NormRule:
    return NormRule(pattern, role, **kw)


# --- shared rule sets --------------------------------------------------------------------------
# Llama naming: `post_attention_layernorm` is the pre-MLP INPUT norm (LlamaDecoderLayer applies it
# before self.mlp; llama.cpp tensor_mapping.py lists it under FFN_NORM "llama-hf").
LLAMA = (
    _r("layers.{L}.input_layernorm", Role.attn_input),
    _r("layers.{L}.post_attention_layernorm", Role.mlp_input),
    _r("norm", Role.final),
)
QK = (_r("layers.{L}.self_attn.(q_norm|k_norm)", Role.qk),)
MLA = (_r("layers.{L}.self_attn.(q_a_layernorm|kv_a_layernorm)", Role.latent),)
# DeepSeek-V3 style MTP stored as layer N+k (deepseek-ai/DeepSeek-V3 README_WEIGHTS.md @9b4e978:
# "MTP Module's layer ID is 61"; vllm deepseek_mtp.py @03356f8: enorm, hnorm, shared_head.norm).
DEEPSEEK_MTP = (
    _r("layers.{L}.enorm", Role.mtp_embedding),
    _r("layers.{L}.hnorm", Role.mtp_hidden),
    _r("layers.{L}.shared_head.norm", Role.mtp_final),
)
DEEPSEEK_MARKER = r"(?:^|\.)layers\.(\d+)\.(?:enorm|hnorm|eh_proj|shared_head)\."
# Gemma-2/3 sandwich norms (transformers models/gemma2/modular_gemma2.py): post_attention_layernorm
# is an OUTPUT norm there; pre_feedforward_layernorm is the MLP input.
SANDWICH = (
    _r("layers.{L}.input_layernorm", Role.attn_input),
    _r("layers.{L}.post_attention_layernorm", Role.attn_output),
    _r("layers.{L}.pre_feedforward_layernorm", Role.mlp_input),
    _r("layers.{L}.post_feedforward_layernorm", Role.mlp_output),
    _r("norm", Role.final),
)
# Qwen3-Next / Qwen3.5 MTP, top level `mtp.*` (vllm qwen3_next_mtp.py @055e47c).
QWEN_NEXT_MTP = (
    _r("mtp.pre_fc_norm_embedding", Role.mtp_embedding, module=Module.mtp, prefixed=False),
    _r("mtp.pre_fc_norm_hidden", Role.mtp_hidden, module=Module.mtp, prefixed=False),
    _r("mtp.norm", Role.mtp_final, module=Module.mtp, prefixed=False),
    _r("mtp.layers.{M}.input_layernorm", Role.attn_input, module=Module.mtp, prefixed=False),
    _r(
        "mtp.layers.{M}.post_attention_layernorm", Role.mlp_input, module=Module.mtp, prefixed=False
    ),
    _r("mtp.layers.{M}.self_attn.(q_norm|k_norm)", Role.qk, module=Module.mtp, prefixed=False),
)
# Vision towers, appended to every family's rules: measured with role `unknown` (so never in a
# gate's default scope, which is the final and MTP norms), plain LayerNorm (standard), no layer.
VISION = (
    _r(
        "(model.)?visual.({ANY}.)?{NORM}",
        Role.unknown,
        parametrization=STD,
        prefixed=False,
    ),
    _r(
        "(model.)?vision_tower.({ANY}.)?{NORM}",
        Role.unknown,
        parametrization=STD,
        prefixed=False,
    ),
    _r(
        "(model.)?vision_model.({ANY}.)?{NORM}",
        Role.unknown,
        parametrization=STD,
        prefixed=False,
    ),
)


def _megatron_layer(prefix: str, module: Module) -> tuple[NormRule, ...]:
    """Megatron-Core transformer-layer norms under `prefix` (NVIDIA/Megatron-LM @d98e8a6)."""
    m = {"module": module}
    return (
        # Transformer Engine fuses the input norms into the next linear layer.
        _r(prefix + "self_attention.linear_qkv.layer_norm", Role.attn_input, **m),
        _r(prefix + "input_layernorm", Role.attn_input, **m),
        _r(prefix + "mlp.linear_fc1.layer_norm", Role.mlp_input, **m),
        _r(prefix + "pre_mlp_layernorm", Role.mlp_input, **m),
        # MLA (multi_latent_attention.py): q_layernorm/kv_layernorm are LATENT norms when the
        # layer has a q/kv down-projection; otherwise q_layernorm/k_layernorm are QK norms.
        _r(
            prefix + "self_attention.q_layernorm",
            Role.latent,
            if_present="linear_q_down_proj.weight",
            **m,
        ),
        _r(prefix + "self_attention.kv_layernorm", Role.latent, **m),
        _r(prefix + "self_attention.(q_layernorm|k_layernorm)", Role.qk, **m),
        _r(
            prefix + "self_attention.(linear_q_up_proj|linear_kv_up_proj).layer_norm",
            Role.latent,
            **m,
        ),
        _r(prefix + "self_attention.in_proj.layer_norm", Role.attn_input, **m),
        _r(prefix + "self_attention.out_norm", Role.linear_attn, **m),
    )


_MTP_BLOCK = "mtp.layers.{M}.(mtp_model_layer|transformer_layer)."

FAMILIES: tuple[Family, ...] = (
    Family(
        "llama",
        ("llama", "mistral", "mixtral", "granite", "granitemoe"),
        ("LlamaForCausalLM", "MistralForCausalLM", "MixtralForCausalLM"),
        STD,
        LLAMA,
        "huggingface/transformers @0022728 models/llama/modeling_llama.py (LlamaRMSNorm: "
        "torch.ones, weight * x); Mistral/Mixtral/Granite RMSNorm are Llama copies",
    ),
    Family(
        "qwen2",
        ("qwen2", "qwen2_moe"),
        ("Qwen2ForCausalLM", "Qwen2MoeForCausalLM"),
        STD,
        LLAMA,
        "huggingface/transformers models/qwen2 (Qwen2RMSNorm: torch.ones, weight * x)",
    ),
    Family(
        "phi3",
        ("phi3",),
        ("Phi3ForCausalLM",),
        STD,
        LLAMA,
        "huggingface/transformers models/phi3 (Phi3RMSNorm, a Llama copy)",
    ),
    Family(
        "qwen3",
        ("qwen3", "qwen3_moe"),
        ("Qwen3ForCausalLM", "Qwen3MoeForCausalLM"),
        STD,
        LLAMA + QK,
        "huggingface/transformers @02e8340 models/qwen3/modular_qwen3.py (q_norm/k_norm over "
        "head_dim; Qwen3RMSNorm(Qwen2RMSNorm))",
    ),
    Family(
        "qwen3_next",
        ("qwen3_next",),
        ("Qwen3NextForCausalLM",),
        ZC,
        LLAMA
        + QK
        # Qwen3NextRMSNormGated: torch.ones, weight * x: STANDARD inside an offset model.
        + (_r("layers.{L}.linear_attn.norm", Role.linear_attn, parametrization=STD),)
        + QWEN_NEXT_MTP,
        "huggingface/transformers @043bb8d models/qwen3_next/modular_qwen3_next.py "
        "(Qwen3NextRMSNorm(Gemma3RMSNorm): 1 + w; Qwen3NextRMSNormGated: w); "
        "vllm @055e47c qwen3_next_mtp.py",
    ),
    Family(
        "qwen3_5",
        ("qwen3_5", "qwen3_5_moe", "qwen3_5_text", "qwen3_5_moe_text"),
        (
            "Qwen3_5ForConditionalGeneration",
            "Qwen3_5MoeForConditionalGeneration",
            "Qwen3_5ForCausalLM",
            "Qwen3_5MoeForCausalLM",
        ),
        ZC,
        LLAMA
        + QK
        + (_r("layers.{L}.linear_attn.norm", Role.linear_attn, parametrization=STD),)
        + QWEN_NEXT_MTP,
        "huggingface/transformers @009e78d models/qwen3_5/modular_qwen3_5.py "
        "(Qwen3_5RMSNorm(Qwen3NextRMSNorm): 1 + w; gated linear_attn.norm: w); "
        "vllm @01d9980 qwen3_5_mtp.py",
    ),
    Family(
        "deepseek_v3",
        ("deepseek_v3", "deepseek_v32", "deepseek_v2", "kimi_k2"),
        ("DeepseekV3ForCausalLM", "DeepseekV32ForCausalLM", "DeepseekV2ForCausalLM"),
        STD,
        LLAMA
        + MLA
        + DEEPSEEK_MTP
        # V3.2 sparse-attention indexer LayerNorm: measured, not gated by default.
        + (_r("layers.{L}.self_attn.indexer.k_norm", Role.unknown),),
        "huggingface/transformers @000c33f models/deepseek_v3/modular_deepseek_v3.py "
        "(DeepseekV3RMSNorm(LlamaRMSNorm)); deepseek-ai/DeepSeek-V3 @9b4e978 README_WEIGHTS.md",
        mtp_in_layers=True,
        mtp_marker=DEEPSEEK_MARKER,
    ),
    Family(
        "glm4_moe",
        ("glm4_moe", "glm4_moe_lite"),
        ("Glm4MoeForCausalLM", "Glm4MoeLiteForCausalLM"),
        STD,
        LLAMA + QK + MLA + DEEPSEEK_MTP,
        "huggingface/transformers @000c33f models/glm4_moe/modeling_glm4_moe.py (q_norm/k_norm "
        "if use_qk_norm); vllm @028aedf glm4_moe_mtp.py (DeepSeek MTP naming at layer N+k)",
        mtp_in_layers=True,
        mtp_marker=DEEPSEEK_MARKER,
    ),
    Family(
        "mimo",
        ("mimo",),
        ("MiMoForCausalLM",),
        STD,
        LLAMA
        + (
            _r("mtp_layers.{M}.token_layernorm", Role.mtp_embedding, module=Module.mtp),
            _r("mtp_layers.{M}.hidden_layernorm", Role.mtp_hidden, module=Module.mtp),
            _r("mtp_layers.{M}.final_layernorm", Role.mtp_final, module=Module.mtp),
            _r("mtp_layers.{M}.input_layernorm", Role.attn_input, module=Module.mtp),
            _r("mtp_layers.{M}.post_attention_layernorm", Role.mlp_input, module=Module.mtp),
        ),
        "vllm @0bb55d6 mimo_mtp.py; jj8127/mimo_kor @1bdf82c modeling_mimo.py (Qwen2RMSNorm)",
    ),
    Family(
        "gemma",
        ("gemma",),
        ("GemmaForCausalLM",),
        ZC,
        LLAMA,
        "huggingface/transformers @008e574 models/gemma/modular_gemma.py (GemmaRMSNorm: "
        "torch.zeros, x * (1 + w))",
    ),
    Family(
        "gemma2",
        ("gemma2",),
        ("Gemma2ForCausalLM",),
        ZC,
        SANDWICH,
        "huggingface/transformers models/gemma2/modular_gemma2.py (Gemma2RMSNorm(GemmaRMSNorm); "
        "post_attention/post_feedforward are output norms)",
    ),
    Family(
        "gemma3",
        ("gemma3", "gemma3_text"),
        ("Gemma3ForCausalLM", "Gemma3ForConditionalGeneration"),
        ZC,
        SANDWICH
        + QK
        + (
            # Gemma3RMSNorm over the vision width: offset, but not a text-model norm.
            _r(
                "multi_modal_projector.mm_soft_emb_norm",
                Role.unknown,
                prefixed=False,
            ),
            _r(
                "model.multi_modal_projector.mm_soft_emb_norm",
                Role.unknown,
                prefixed=False,
            ),
        ),
        "huggingface/transformers @0033204 models/gemma3/modular_gemma3.py (Gemma3RMSNorm: "
        "1 + w, also q_norm/k_norm over head_dim)",
    ),
    Family(
        "olmo2",
        ("olmo2", "olmo3"),
        ("Olmo2ForCausalLM",),
        STD,
        (
            # OLMo-2 has no input norms: post_attention_layernorm is an OUTPUT norm here, and
            # q_norm/k_norm span the full projection width.
            _r("layers.{L}.self_attn.(q_norm|k_norm)", Role.qk),
            _r("layers.{L}.post_attention_layernorm", Role.attn_output),
            _r("layers.{L}.post_feedforward_layernorm", Role.mlp_output),
            _r("norm", Role.final),
        ),
        "huggingface/transformers @008f5c8 models/olmo2/modular_olmo2.py "
        "(Olmo2RMSNorm(LlamaRMSNorm))",
    ),
    Family(
        "phi",
        ("phi",),
        ("PhiForCausalLM",),
        STD,
        (
            # Parallel block: one LayerNorm feeds attention and MLP (shared input -> attn_input).
            _r("layers.{L}.input_layernorm", Role.attn_input),
            _r("final_layernorm", Role.final),
        ),
        "huggingface/transformers models/phi (PhiDecoderLayer: nn.LayerNorm, parallel block)",
    ),
    Family(
        "gpt2",
        ("gpt2",),
        ("GPT2LMHeadModel", "GPT2Model"),
        STD,
        (
            _r("h.{L}.ln_1", Role.attn_input),
            _r("h.{L}.ln_2", Role.mlp_input),
            _r("h.{L}.ln_cross_attn", Role.unknown),
            _r("ln_f", Role.final),
        ),
        "huggingface/transformers @0010f60 models/gpt2/modeling_gpt2.py (nn.LayerNorm ln_1, ln_2, "
        "ln_f; original safetensors have no `transformer.` prefix)",
        prefixes=("transformer.", ""),
    ),
    Family(
        "bert",
        ("bert", "roberta", "xlm-roberta"),
        ("BertModel", "BertForMaskedLM"),
        STD,
        (
            # Post-LN: every LayerNorm normalises the residual stream itself (output group).
            _r("embeddings.LayerNorm", Role.embedding),
            _r("encoder.layer.{L}.attention.output.LayerNorm", Role.attn_output),
            _r("encoder.layer.{L}.output.LayerNorm", Role.mlp_output),
            _r(
                "cls.predictions.transform.LayerNorm",
                Role.unknown,
                prefixed=False,
            ),
        ),
        "huggingface/transformers models/bert/modeling_bert.py (post-LN nn.LayerNorm); "
        "llama.cpp gguf-py/gguf/tensor_mapping.py @0024aa7 (bert: ATTN_OUT_NORM, LAYER_OUT_NORM)",
        prefixes=("bert.", "roberta.", ""),
    ),
    Family(
        "nemotron",
        ("nemotron",),
        ("NemotronForCausalLM",),
        ZC,
        LLAMA,
        "NemotronLayerNorm1P (LayerNorm with bias, weight + 1); NVIDIA-NeMo/Megatron-Bridge "
        "@067f987 nemotron_bridge.py (layernorm_zero_centered_gamma = True)",
    ),
    Family(
        "cohere",
        ("cohere", "cohere2"),
        ("CohereForCausalLM", "Cohere2ForCausalLM"),
        STD,
        (
            _r("layers.{L}.input_layernorm", Role.attn_input),
            _r("layers.{L}.self_attn.(q_norm|k_norm)", Role.qk),
            _r("norm", Role.final),
        ),
        "huggingface/transformers models/cohere (CohereLayerNorm: mean-centred, weight only; "
        "parallel block)",
    ),
    Family(
        "glm4",
        ("glm4",),
        ("Glm4ForCausalLM",),
        STD,
        LLAMA
        + (
            _r("layers.{L}.post_self_attn_layernorm", Role.attn_output),
            _r("layers.{L}.post_mlp_layernorm", Role.mlp_output),
        ),
        "llama.cpp gguf-py/gguf/tensor_mapping.py @0024aa7 "
        "(glm-4-0414 ATTN_POST_NORM, FFN_POST_NORM)",
    ),
    Family(
        "megatron",
        (),
        (),
        STD,
        _megatron_layer("decoder.layers.{L}.", Module.main)
        + (_r("decoder.final_layernorm", Role.final),)
        + (
            _r("mtp.layers.{M}.enorm", Role.mtp_embedding, module=Module.mtp),
            _r("mtp.layers.{M}.hnorm", Role.mtp_hidden, module=Module.mtp),
            _r("mtp.layers.{M}.final_layernorm", Role.mtp_final, module=Module.mtp),
        )
        + _megatron_layer(_MTP_BLOCK, Module.mtp),
        "NVIDIA/Megatron-LM @d98e8a6 megatron/core/models/gpt/gpt_layer_specs.py, "
        "transformer/multi_token_prediction.py (mtp_model_layer, formerly transformer_layer)",
        prefixes=("module.", "model.", ""),
        note=(
            "Megatron-Core checkpoints do not record layernorm_zero_centered_gamma "
            "(--apply-layernorm-1p); gains are read as standard unless --parametrization offset"
        ),
    ),
)

FAMILY_BY_NAME = {f.name: f for f in FAMILIES}


def expects_final(family: str) -> bool:
    """Whether models of a family end in a final norm: any family whose rules name one (post-LN
    encoders such as BERT have none); an unknown family is assumed to be a decoder that does."""
    rules = FAMILY_BY_NAME.get(family)
    return rules is None or any(r.role is Role.final for r in rules.rules)


# Names that look like a norm's gain to the generic fallback: a last component naming a norm.
_NORMISH = re.compile(r"(?i)(norm|^ln(_\w+|\d+)?$|^layer_norm)")
_LAYER_IN_NAME = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")
_MTP_CONFIG_KEYS = (
    "num_nextn_predict_layers",
    "mtp_num_hidden_layers",
    "mtp_num_layers",
    "num_mtp_modules",
)


def split_param(name: str) -> tuple[str, str] | None:
    """Split a tensor name into (norm base, 'weight' | 'bias'), or None for other tensors."""
    for suffix, param in (
        (".layer_norm_weight", "weight"),
        (".layer_norm_bias", "bias"),
        (".weight", "weight"),
        (".bias", "bias"),
    ):
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            if suffix.startswith(".layer_norm"):
                base += ".layer_norm"
            return base, param
    return None


def _compile(pattern: str) -> str:
    out = pattern.replace(".", r"\.").replace("(", "(?:")
    out = out.replace("{L}", r"(?P<layer>\d+)").replace("{M}", r"(?P<mtp>\d+)")
    out = out.replace("{NORM}", r"(?:[^.]*(?:norm|Norm)[^.]*|ln_?[^.]*)")
    return out.replace("{ANY}", ".*")


@dataclass(frozen=True, slots=True)
class _Compiled:
    rule: NormRule
    regex: re.Pattern[str]


def _compile_family(family: Family) -> list[_Compiled]:
    prefixes = "|".join(re.escape(p) for p in family.prefixes)
    out = []
    # Every family also knows vision towers (PaliGemma wraps Gemma-1/2, LLaVA-style models wrap
    # Llama): without these rules a SigLIP LayerNorm in an offset family would be read as 1 + w.
    for rule in family.rules + VISION:
        head = f"(?P<prefix>{prefixes})" if rule.prefixed else "(?P<prefix>)"
        out.append(_Compiled(rule, re.compile(f"^{head}{_compile(rule.pattern)}$")))
    return out


_COMPILED: dict[str, list[_Compiled]] = {}


def _compiled(family: Family) -> list[_Compiled]:
    if family.name not in _COMPILED:
        _COMPILED[family.name] = _compile_family(family)
    return _COMPILED[family.name]


@dataclass(frozen=True, slots=True)
class ConfigFacts:
    """The facts normscope reads from config.json (with `text_config` merged in)."""

    model_type: str | None
    architectures: tuple[str, ...]
    hidden_size: int | None
    num_layers: int | None
    mtp_depth: int | None
    """What the config advertises, or None when it has no MTP key."""


def _int_or_none(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


def read_config(config: Mapping[str, Any] | None) -> ConfigFacts:
    """Extract model type, widths, depth and MTP depth from a config (nested text_config too)."""
    if not config:
        return ConfigFacts(None, (), None, None, None)
    text = config.get("text_config")
    scopes = [text, config] if isinstance(text, dict) else [config]

    def first(*keys: str) -> Any:
        for scope in scopes:
            for key in keys:
                if scope.get(key) is not None:
                    return scope[key]
        return None

    model_type = config.get("model_type")
    archs = config.get("architectures") or ()
    return ConfigFacts(
        model_type if isinstance(model_type, str) else None,
        tuple(a for a in archs if isinstance(a, str)) if isinstance(archs, list) else (),
        _int_or_none(first("hidden_size", "n_embd", "d_model", "dim")),
        _int_or_none(first("num_hidden_layers", "n_layer", "num_layers", "n_layers")),
        _int_or_none(first(*_MTP_CONFIG_KEYS)),
    )


@dataclass
class Classification:
    """The norms of a checkpoint and what the architecture rules say about the model."""

    family: str
    norms: list[NormInfo]
    num_layers: int | None
    mtp_depth: int
    warnings: list[str] = field(default_factory=list)


def _model_types(config: Mapping[str, Any] | None) -> list[str]:
    if not config:
        return []
    types = [config.get("model_type")]
    text = config.get("text_config")
    if isinstance(text, dict):
        types.append(text.get("model_type"))
    return [t for t in types if isinstance(t, str)]


def _candidates(tensors: Mapping[str, TensorRef]) -> dict[str, tuple[str, str]]:
    """Gain/bias tensors that could be norms: 1-D, or 2-D with 'norm' in the name (per-head)."""
    out = {}
    for name, ref in tensors.items():
        ndim = len(ref.shape)
        if ndim == 1 or (ndim == 2 and "norm" in name.lower()):
            split = split_param(name)
            if split is not None:
                out[name] = split
    return out


def _match(
    family: Family, base: str, names: Mapping[str, TensorRef]
) -> tuple[NormRule, re.Match[str]] | None:
    for compiled in _compiled(family):
        m = compiled.regex.match(base)
        if m is None:
            continue
        rule = compiled.rule
        if rule.if_present is not None:
            sibling = base.rsplit(".", 1)[0] + "." + rule.if_present
            if sibling not in names:
                continue
        return rule, m
    return None


def choose_family(
    config: Mapping[str, Any] | None, tensors: Mapping[str, TensorRef]
) -> tuple[Family | None, list[str]]:
    """Pick the family from the config, else from the tensor names; None means generic."""
    warnings: list[str] = []
    for model_type in _model_types(config):
        for family in FAMILIES:
            if model_type in family.model_types:
                return family, warnings
    facts = read_config(config)
    for arch in facts.architectures:
        for family in FAMILIES:
            if arch in family.architectures:
                return family, warnings
    # No usable config: the family whose rules match the most gain tensors wins (ties: first).
    weights = [b for b, p in _candidates(tensors).values() if p == "weight"]
    best, best_count = None, 0
    for family in FAMILIES:
        count = sum(1 for base in weights if _match(family, base, tensors))
        if count > best_count:
            best, best_count = family, count
    said = f"model_type '{facts.model_type}'" if facts.model_type else "no usable config.json"
    if best is not None:
        message = (
            f"architecture not recognised ({said}); tensor names match the '{best.name}' rules"
        )
        for other in FAMILIES:
            if other.parametrization is not best.parametrization and best_count == sum(
                1 for base in weights if _match(other, base, tensors)
            ):
                message += (
                    f", and the '{other.name}' rules (offset/standard differ) fit as well: gains "
                    f"are read as {best.parametrization.value}; pass --parametrization if wrong"
                )
                break
        warnings.append(message)
    return best, warnings


def classify(
    tensors: Mapping[str, TensorRef],
    config: Mapping[str, Any] | None,
    parametrization: Parametrization | None = None,
) -> Classification:
    """Find and classify every norm of a checkpoint.

    `parametrization`, when given, overrides the rules for every norm (e.g. Megatron runs with
    --apply-layernorm-1p, or a converter that baked +1 into offset gains).
    """
    facts = read_config(config)
    family, warnings = choose_family(config, tensors)
    if family is not None and family.note and parametrization is None:
        warnings.append(family.note)
    candidates = _candidates(tensors)
    biases = {base: name for name, (base, p) in candidates.items() if p == "bias"}

    mtp_base = _mtp_base(family, facts, tensors, warnings) if family else None
    norms: list[NormInfo] = []
    unmatched: list[str] = []
    for name, (base, param) in candidates.items():
        if param != "weight":
            continue
        hit = _match(family, base, tensors) if family else None
        if hit is None:
            # The last non-numeric component: LongCat `input_layernorm.0`, StableLM
            # `q_layernorm.norms.3` end in an index (ARCHITECTURES.md 18.18).
            last = next((c for c in reversed(base.split(".")) if not c.isdigit()), "")
            if _NORMISH.search(last):
                unmatched.append(name)
                norms.append(_generic(name, base, biases, family, parametrization))
            continue
        rule, m = hit
        assert family is not None  # a hit implies a family
        norms.append(_info(name, base, rule, m, family, mtp_base, biases, parametrization))

    if family is None and norms:
        warnings.append(
            f"unknown architecture (model_type '{facts.model_type}'): {len(norms)} norm-looking "
            "tensors measured with role 'unknown' and standard parametrization"
        )
    elif unmatched:
        warnings.append(
            f"{len(unmatched)} norm-looking tensor(s) match no '{family.name if family else ''}' "
            f"rule; measured with role 'unknown' and the family's "
            f"{(parametrization or (family.parametrization if family else STD)).value} "
            f"parametrization, e.g. '{unmatched[0]}'"
        )
    if not norms:
        raise ArchError(
            f"no norm tensors found among {len(tensors)} tensors",
            hint="is this a model checkpoint? (optimizer states and OLMo-1 have no norm gains)",
        )

    depths = {n.mtp_depth for n in norms if n.mtp_depth is not None}
    mtp_depth = max(depths, default=0)
    if facts.mtp_depth is not None and facts.mtp_depth != mtp_depth:
        if mtp_depth == 0:
            warnings.append(
                f"config.json advertises {facts.mtp_depth} MTP depth(s) but the checkpoint holds "
                "no MTP norms (Hugging Face re-saves drop MTP weights)"
            )
        else:
            warnings.append(
                f"config.json advertises {facts.mtp_depth} MTP depth(s) but the checkpoint holds "
                f"norms of {mtp_depth}"
            )
    layers = {n.layer for n in norms if n.layer is not None}
    num_layers = facts.num_layers
    if num_layers is None and layers:
        num_layers = max(layers) + 1
    return Classification(
        family.name if family else "generic", norms, num_layers, mtp_depth, warnings
    )


def _mtp_base(
    family: Family, facts: ConfigFacts, tensors: Mapping[str, TensorRef], warnings: list[str]
) -> int | None:
    """First trunk-layer index that is an MTP module, for families storing MTP as layer N+k."""
    if not family.mtp_in_layers or family.mtp_marker is None:
        return None
    marker = re.compile(family.mtp_marker)
    # Cheap substring filter first: the regex over every name of a 92k-tensor checkpoint costs
    # more than the rest of the classification.
    names = [n for n in tensors if "norm" in n or "eh_proj" in n or "shared_head" in n]
    marked = {int(m.group(1)) for n in names if (m := marker.search(n))}
    if not marked:
        return facts.num_layers
    first = min(marked)
    if facts.num_layers is not None and first != facts.num_layers:
        warnings.append(
            f"MTP tensors start at layer {first} but config.json says num_hidden_layers = "
            f"{facts.num_layers}; layers from {first} on are treated as MTP"
        )
    return first


def _info(
    name: str,
    base: str,
    rule: NormRule,
    m: re.Match[str],
    family: Family,
    mtp_base: int | None,
    biases: Mapping[str, str],
    override: Parametrization | None,
) -> NormInfo:
    groups = m.groupdict()
    layer = int(groups["layer"]) if groups.get("layer") else None
    module, depth = rule.module, None
    if groups.get("mtp"):
        depth = int(groups["mtp"]) + 1
    elif module is Module.mtp:
        depth = 1
    if layer is not None and mtp_base is not None and layer >= mtp_base:
        module, depth, layer = Module.mtp, layer - mtp_base + 1, None
    if module is Module.mtp:
        layer = None
    return NormInfo(
        name=name,
        module=module,
        mtp_depth=depth,
        layer=layer,
        role=rule.role,
        group=rule.group if rule.group is not None else default_group(rule.role),
        parametrization=override or rule.parametrization or family.parametrization,
        bias_name=biases.get(base),
        rule=f"{family.name}:{rule.pattern}",
    )


def _generic(
    name: str,
    base: str,
    biases: Mapping[str, str],
    family: Family | None,
    override: Parametrization | None,
) -> NormInfo:
    m = _LAYER_IN_NAME.search(base)
    return NormInfo(
        name=name,
        module=Module.main,
        mtp_depth=None,
        layer=int(m.group(1)) if m else None,
        role=Role.unknown,
        group=None,
        parametrization=override or (family.parametrization if family else STD),
        bias_name=biases.get(base),
        rule="generic",
    )
