"""llama.cpp's GGUF names as data: which tensors are norms, what each one is, what the converter
did to its values.

llama.cpp names tensors by what they do, the same way for every architecture (its converter maps
each family's Hugging Face names onto them: `gguf-py/gguf/tensor_mapping.py`), so one table of
leaf names gives the role of a norm of any `general.architecture` — the same role vocabulary as
every other source. Sources: ggml-org/llama.cpp `gguf-py/gguf/constants.py` (TENSOR_NAMES,
MODEL_ARCH_NAMES; gguf 0.19.0) and `tensor_mapping.py`; the converter
(`convert_hf_to_gguf.py`, split into `conversion/*.py` @061b8c5); written up in
docs/architectures.md#gguf-llamacpp.

MTP: llama.cpp stores NextN/MTP modules as extra blocks after the trunk, `blk.{n_layer + k}`,
counted in `<arch>.block_count` and announced by `<arch>.nextn_predict_layers`
(`conversion/glm.py` Glm4MoeModel); `nextn.enorm`, `nextn.hnorm`, `nextn.shared_head_norm` are
the MTP input and output norms, the block's other norms the MTP block's own.

Offsets: llama.cpp has one RMSNorm (`x * w`), so its converter bakes the `+1` of zero-centred
(`1 + w`) norms into the stored values (`BAKED_OFFSET`). The GGUF then holds the effective gain;
normscope reports such a norm as `offset` (the model's parametrization) with `stored_offset`
1.0: the model's own weight is the stored value − 1, its effective gain the stored value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from normscope.arch.classify import Classification
from normscope.arch.config import read_config
from normscope.arch.resolve import default_group
from normscope.enums import Module, Parametrization, Role
from normscope.schema import NormInfo, TensorRef

SOURCE = (
    "docs/architectures.md#gguf-llamacpp: ggml-org/llama.cpp gguf-py/gguf/constants.py "
    "(TENSOR_NAMES; gguf 0.19.0), gguf-py/gguf/tensor_mapping.py, conversion/*.py @061b8c5"
)

BLOCK_NORMS: dict[str, Role] = {
    "attn_norm": Role.attn_input,  # ATTN_NORM: input_layernorm, ln_1, attention_norm, ...
    "attn_norm_2": Role.mlp_input,  # ATTN_NORM_2: Falcon-40B ln_mlp
    "ffn_norm": Role.mlp_input,  # FFN_NORM / FFN_PRE_NORM: Llama's post_attention_layernorm
    "attn_q_norm": Role.qk,  # ATTN_Q_NORM: q_norm, q_layernorm
    "attn_k_norm": Role.qk,  # ATTN_K_NORM
    "post_attention_norm": Role.attn_output,  # ATTN_POST_NORM: Gemma-2/3, OLMo-2 post norms
    "post_ffw_norm": Role.mlp_output,  # FFN_POST_NORM: post_feedforward_layernorm
    "attn_output_norm": Role.attn_output,  # ATTN_OUT_NORM: BERT attention.output.LayerNorm
    "layer_output_norm": Role.mlp_output,  # LAYER_OUT_NORM: BERT output.LayerNorm
    "attn_q_a_norm": Role.latent,  # ATTN_Q_A_NORM: DeepSeek MLA q_a_layernorm
    "attn_kv_a_norm": Role.latent,  # ATTN_KV_A_NORM: kv_a_layernorm
    "ssm_norm": Role.linear_attn,  # SSM_NORM: Qwen3-Next/3.5 linear_attn.norm (gated, standard)
    "nextn.enorm": Role.mtp_embedding,  # NEXTN_ENORM
    "nextn.hnorm": Role.mtp_hidden,  # NEXTN_HNORM
    "nextn.shared_head_norm": Role.mtp_final,  # NEXTN_SHARED_HEAD_NORM
}
"""`blk.{i}.<leaf>` -> role (constants.py TENSOR_NAMES; tensor_mapping.py for what maps there)."""

TOP_NORMS: dict[str, Role] = {
    "output_norm": Role.final,  # OUTPUT_NORM: model.norm, ln_f, norm_f
    "token_embd_norm": Role.embedding,  # TOKEN_EMBD_NORM: BERT embeddings.LayerNorm
}

HF_MODEL_TYPES: dict[str, str] = {
    "gemma-embedding": "gemma3_text",
    "qwen2moe": "qwen2_moe",
    "qwen3moe": "qwen3_moe",
    "qwen3next": "qwen3_next",
    "qwen35": "qwen3_5",
    "qwen35moe": "qwen3_5_moe",
    "deepseek2": "deepseek_v3",
    "glm4moe": "glm4_moe",
}
"""`general.architecture` -> Hugging Face `model_type` where the two differ (else the same)."""


@dataclass(frozen=True, slots=True)
class Baked:
    """What llama.cpp's converter adds to an architecture's norm weights before writing them."""

    shift: float
    source: str
    except_leaves: frozenset[str] = frozenset()
    """Norms the converter leaves alone (standard norms of an offset family)."""


_QWEN35 = "conversion/qwen.py _LinearAttentionVReorderBase(Qwen3NextModel)"
_GEMMA = "conversion/gemma.py GemmaModel.modify_tensors: norm.weight + 1"
BAKED_OFFSET: dict[str, Baked] = {
    "gemma": Baked(1.0, _GEMMA),
    "gemma2": Baked(1.0, "conversion/gemma.py Gemma2Model.modify_tensors: norm.weight + 1"),
    "gemma3": Baked(1.0, "conversion/gemma.py Gemma3Model.norm_shift: norm.weight -> 1.0"),
    "gemma-embedding": Baked(1.0, "conversion/gemma.py EmbeddingGemma(Gemma3Model)"),
    "nemotron": Baked(1.0, "conversion/nemotron.py NemotronModel.modify_tensors (layernorm1p)"),
    "qwen3next": Baked(
        1.0,
        "conversion/qwen.py Qwen3NextModel.modify_tensors: norm.weight + 1 except linear_attn.norm",
        frozenset({"ssm_norm"}),
    ),
    "qwen35": Baked(1.0, _QWEN35, frozenset({"ssm_norm"})),
    "qwen35moe": Baked(1.0, _QWEN35, frozenset({"ssm_norm"})),
}
"""Architectures whose GGUF norms hold 1 + w (the effective gain of a zero-centred norm). Every
other architecture known to llama.cpp is written as stored (Llama, Qwen2/3, Gemma-4 —
conversion/gemma.py Gemma4: `norm_shift` 0.0 —, Gemma-3n: 'not the case on gemma3n')."""

KNOWN_ARCHITECTURES = frozenset(
    {
        "llama",
        "llama4",
        "mistral3",
        "qwen2",
        "qwen2moe",
        "qwen3",
        "qwen3moe",
        "qwen3next",
        "qwen35",
        "qwen35moe",
        "gemma",
        "gemma2",
        "gemma3",
        "gemma3n",
        "gemma4",
        "gemma-embedding",
        "phi2",
        "phi3",
        "olmo",
        "olmo2",
        "deepseek2",
        "glm4",
        "glm4moe",
        "nemotron",
        "granite",
        "granitemoe",
        "bert",
        "nomic-bert",
        "gpt2",
        "falcon",
        "stablelm",
        "command-r",
        "cohere2",
        "mimo2",
        "minicpm",
        "internlm2",
        "exaone",
        "smollm3",
    }
)
"""Architectures whose converter normscope has read (MODEL_ARCH_NAMES): their norms are stored
as `BAKED_OFFSET` says. For any other, the values are read as stored, with a warning."""

_BLOCK = re.compile(r"blk\.([0-9]{1,6})\.(.+)")


def classify_gguf(
    tensors: Mapping[str, TensorRef],
    config: Mapping[str, Any],
    parametrization: Parametrization | None = None,
) -> tuple[Classification, str]:
    """Classify the norms of a GGUF file by llama.cpp's names; return them and the model_type.

    `parametrization` overrides what the converter table says (`--parametrization`).
    """
    meta = config["gguf"]
    arch: str = meta["architecture"]
    n_layer = config.get("num_hidden_layers")
    nextn = int(config.get("num_nextn_predict_layers") or 0)
    known = arch in KNOWN_ARCHITECTURES
    baked = BAKED_OFFSET.get(arch)
    norms: list[NormInfo] = []
    unknown: list[str] = []
    for name in tensors:
        if not name.endswith(".weight"):
            continue
        base = name[: -len(".weight")]
        info = _norm_info(name, base, n_layer, nextn, tensors, baked, parametrization)
        if info is None:
            continue
        norms.append(info)
        if not info.recognised:
            unknown.append(name)
    warnings: list[str] = []
    if not known:
        warnings.append(
            f"GGUF architecture '{arch}' is not one whose llama.cpp converter normscope has "
            f"read: norms read as stored (gain = stored value); if its converter bakes +1 into "
            f"zero-centred norms, pass --parametrization"
        )
    if unknown:
        warnings.append(
            f"{len(unknown)} norm-looking GGUF tensor(s) are not llama.cpp norm names normscope "
            f"knows; measured with role 'unknown', e.g. '{unknown[0]}'"
        )
    quantized = sorted({tensors[n.name].dtype for n in norms} - {"F32", "F16", "BF16", "F64"})
    if quantized:
        count = sum(1 for n in norms if tensors[n.name].dtype in quantized)
        warnings.append(
            f"{count} norm(s) are stored quantized ({', '.join(quantized)}) in this GGUF: "
            f"normscope decodes F32/F16/BF16/F64 norms only; those are not measured"
        )
    depths = {n.mtp_depth for n in norms if n.mtp_depth is not None}
    layers = {n.layer for n in norms if n.layer is not None}
    num_layers = n_layer if n_layer is not None else (max(layers) + 1 if layers else None)
    cls = Classification(
        family=f"gguf:{arch}",
        norms=norms,
        num_layers=num_layers,
        mtp_depth=max(depths, default=0),
        warnings=warnings,
        unknown=unknown,
        expects_final_norm=arch not in ("bert", "nomic-bert"),
        facts=read_config(config),
    )
    return cls, HF_MODEL_TYPES.get(arch, arch)


def _norm_info(
    name: str,
    base: str,
    n_layer: int | None,
    nextn: int,
    tensors: Mapping[str, TensorRef],
    baked: Baked | None,
    override: Parametrization | None,
) -> NormInfo | None:
    """What one tensor is, or None when it is no norm (matrices, embeddings, 2-D+ tensors)."""
    ref = tensors[name]
    if len(ref.shape) != 1 and not (len(ref.shape) == 2 and "norm" in base):
        return None
    layer: int | None = None
    depth: int | None = None
    match = _BLOCK.fullmatch(base)
    if match is not None:
        index, leaf = int(match.group(1)), match.group(2)
        role = BLOCK_NORMS.get(leaf)
        if n_layer is not None and nextn and n_layer <= index < n_layer + nextn:
            depth = index - n_layer + 1
        elif leaf.startswith("nextn."):
            depth = 1 if n_layer is None or index < n_layer else index - n_layer + 1
        else:
            layer = index
    else:
        leaf = base
        role = TOP_NORMS.get(leaf)
    if role is None and "norm" not in leaf.rsplit(".", 1)[-1]:
        return None
    recognised = role is not None
    role = role or Role.unknown
    stored_offset = 0.0
    param = Parametrization.standard
    if baked is not None and leaf not in baked.except_leaves:
        stored_offset, param = baked.shift, Parametrization.offset
    if override is not None:
        # The user says how to read the stored values: as they are (standard) or as 1 + w.
        param, stored_offset = override, 0.0
    bias = base + ".bias"
    return NormInfo(
        name=name,
        module=Module.mtp if depth is not None else Module.main,
        mtp_depth=depth,
        layer=layer,
        role=role,
        group=default_group(role),
        parametrization=param,
        bias_name=bias if bias in tensors else None,
        rule=f"gguf:{leaf}" if recognised else "generic",
        vocabulary="llama.cpp",
        recognised=recognised,
        stored_offset=stored_offset,
    )
