"""The facts normscope reads from config.json: model type, widths, depths and parametrization
signals, with `text_config` (VLM wrappers) and OLMo-core's nested `model` table merged in.

Parametrization signals (docs/architectures.md#config-signals, trap 1): a zero-centred flag at
the top level or in `text_config` decides offset (`1 + w`) vs standard for the text model's
norms, above a family's default and below an explicit `parametrization` override. Megatron stores
`layernorm_zero_centered_gamma` (`--apply-layernorm-1p`, transformer_config.py @d98e8a6), NeMo 1.0
`normalization: layernorm1p`; HF-style remote code uses `use_gemma_norm`-style booleans.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from normscope.schema import Parametrization

MTP_CONFIG_KEYS = (
    "num_nextn_predict_layers",
    "mtp_num_hidden_layers",
    "mtp_num_layers",
    "num_mtp_modules",
)
# Booleans: true means zero-centred gains (1 + w), false means standard.
OFFSET_FLAGS = (
    "layernorm_zero_centered_gamma",
    "apply_layernorm_1p",
    "layernorm1p",
    "zero_centered_gamma",
    "use_zero_centered_gamma",
    "use_gemma_norm",
    "use_gemma_rms_norm",
    "gemma_norm",
    "rms_norm_unit_offset",
    "norm_unit_offset",
)
# Strings naming the norm kind: these values mean zero-centred gains.
NORM_KIND_KEYS = ("normalization", "norm_type", "normalization_type")
OFFSET_KINDS = frozenset({"layernorm1p", "rmsnorm1p", "gemma_rmsnorm", "zero_centered_rmsnorm"})


@dataclass(frozen=True, slots=True)
class ConfigFacts:
    """The facts normscope reads from config.json (with `text_config` merged in)."""

    model_type: str | None
    architectures: tuple[str, ...]
    hidden_size: int | None
    num_layers: int | None
    mtp_depth: int | None
    """What the config advertises, or None when it has no MTP key."""
    head_dim: int | None = None
    """`head_dim`, else hidden_size // num_attention_heads."""
    num_heads: int | None = None
    num_kv_heads: int | None = None
    q_lora_rank: int | None = None
    kv_lora_rank: int | None = None
    linear_value_head_dim: int | None = None
    parametrization: Parametrization | None = None
    """What a zero-centred flag says about the text model's norms; None: no flag."""
    parametrization_key: str | None = None
    """The key that said so (`text_config.use_gemma_norm = true`), for the warning."""
    block_type: str | None = None
    """OLMo-core's transformer block type (`block.name`): `default`, `reordered_norm`, ..."""

    def qk_widths(self) -> set[int]:
        """Widths a QK norm may have: head_dim, or heads·head_dim (OLMo-2, MiniMax-M2)."""
        out = set()
        if self.head_dim:
            out.add(self.head_dim)
            for heads in (self.num_heads, self.num_kv_heads):
                if heads:
                    out.add(heads * self.head_dim)
        return out


def _int_or_none(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


def _scopes(config: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    out: list[tuple[str, Mapping[str, Any]]] = []
    text = config.get("text_config")
    if isinstance(text, dict):
        out.append(("text_config.", text))
    out.append(("", config))
    model = config.get("model")
    if isinstance(model, dict):  # OLMo-core: {"model": {"d_model": ..., "block": {...}}}
        out.append(("model.", model))
    return out


def _signal(
    scopes: list[tuple[str, Mapping[str, Any]]],
) -> tuple[Parametrization | None, str | None]:
    for where, scope in scopes:
        for key in OFFSET_FLAGS:
            value = scope.get(key)
            if isinstance(value, bool):
                param = Parametrization.offset if value else Parametrization.standard
                return param, f"{where}{key} = {str(value).lower()}"
        for key in NORM_KIND_KEYS:
            value = scope.get(key)
            if isinstance(value, str) and value.lower() in OFFSET_KINDS:
                return Parametrization.offset, f"{where}{key} = {value!r}"
    return None, None


def _block_type(scopes: list[tuple[str, Mapping[str, Any]]]) -> str | None:
    for _, scope in scopes:
        block = scope.get("block")
        if isinstance(block, dict) and isinstance(block.get("name"), str):
            return str(block["name"])
    return None


def read_config(config: Mapping[str, Any] | None) -> ConfigFacts:
    """Extract model type, widths, depths and signals from a config (nested text_config too)."""
    if not config:
        return ConfigFacts(None, (), None, None, None)
    scopes = _scopes(config)

    def first(*keys: str) -> int | None:
        for _, scope in scopes:
            for key in keys:
                if scope.get(key) is not None:
                    return _int_or_none(scope[key])
        return None

    model_type = config.get("model_type")
    archs = config.get("architectures") or ()
    hidden = first("hidden_size", "n_embd", "d_model", "dim")
    heads = first("num_attention_heads", "n_head", "n_heads")
    head_dim = first("head_dim", "kv_channels")
    if head_dim is None and hidden and heads:
        head_dim = hidden // heads
    param, key = _signal(scopes)
    return ConfigFacts(
        model_type if isinstance(model_type, str) else None,
        tuple(a for a in archs if isinstance(a, str)) if isinstance(archs, list) else (),
        hidden,
        first("num_hidden_layers", "n_layer", "num_layers", "n_layers"),
        first(*MTP_CONFIG_KEYS),
        head_dim=head_dim,
        num_heads=heads,
        num_kv_heads=first("num_key_value_heads", "n_kv_heads", "num_query_groups"),
        q_lora_rank=first("q_lora_rank"),
        kv_lora_rank=first("kv_lora_rank"),
        linear_value_head_dim=first("linear_value_head_dim"),
        parametrization=param,
        parametrization_key=key,
        block_type=_block_type(scopes),
    )


def model_types(config: Mapping[str, Any] | None) -> list[str]:
    """model_type at the top level, then in text_config."""
    if not config:
        return []
    types = [config.get("model_type")]
    text = config.get("text_config")
    if isinstance(text, dict):
        types.append(text.get("model_type"))
    return [t for t in types if isinstance(t, str)]
