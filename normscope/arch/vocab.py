"""Naming vocabularies: how a tensor name is built, independently of `model_type`.

`parse_site` reads the structure of a norm's name once: the wrapper prefix, the container it
lives in (a trunk block `layers.N`, `h.N`, `blocks.N`, `encoder.layer.N`, `decoder.layers.N`; an
MTP module in any of the layouts of docs/architectures.md#mtp-layouts and trap 9; a vision tower),
the container's index, and the path inside it. Sublayer and head indices (`input_layernorm.1`,
`q_layernorm.norms.3`) and leaf wrappers (`enorm.m`) are structure, not new names (trap 18).

`VOCABULARIES` are rule tables in the family format for the naming conventions in use across the
field; they read the names a family table does not list, or every name when no family fits.
They match the *normalised* name: an MTP module's norms become `mtp.{k}.<path inside>` whatever
the layout (`mtp.layers.k`, `model.mtp.layers.k`, `model.mtp_layers.k`, `model.mtp_*.k`, DeepSeek
`model.layers.{N+k}`), and the block norms inside an MTP module are read by the block rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from normscope.arch.rules import Family, parse_family
from normscope.arch.structure import GENERIC_VOCABULARIES
from normscope.errors import ArchError

# Wrapper prefixes removed before matching (trap 17), longest first; applied repeatedly so that
# `module.model.` (DDP around a HF model) is removed too.
PREFIXES = (
    "model.language_model.",
    "language_model.model.",
    "language_model.",
    "_orig_mod.",
    "module.",
    "model.",
    "transformer.",
    "roberta.",
    "bert.",
)
# Words whose next component is a trunk block's index.
BLOCK_WORDS = frozenset({"layers", "layer", "h", "blocks", "block", "resblocks"})
# Wrappers between an MTP module and its block norms: Megatron `mtp_model_layer` (formerly
# `transformer_layer`, Megatron-LM 9d71cb1), LongCat `transformer_layer`, Step-3.5 `transformer`.
INNER_BLOCKS = frozenset({"mtp_model_layer", "transformer_layer", "transformer"})
# `model.mtp_<word>.N` containers that hold a whole block rather than one norm (ERNIE-4.5).
MTP_BLOCK_WORDS = frozenset({"mtp_block", "mtp_blocks", "mtp_layers", "mtp_layer"})
LEAF_WRAPPERS = frozenset({"m"})
VISION_ROOTS = frozenset(
    {"visual", "vision_tower", "vision_model", "vision_encoder", "vision", "image_encoder"}
)
# Last components of the norms that mark a trunk layer as an MTP module (DeepSeek-V3 layout).
MTP_MARKERS = frozenset({"enorm", "hnorm", "shared_head"})
MAX_INDEX_DIGITS = 6
"""A layer or MTP index longer than this is no index normscope trusts: the checkpoint is
refused (`IndexTooLong`), the number never converted (a 5,000-digit int() raises ValueError)."""


class IndexTooLong(ArchError):
    """A container index with more than MAX_INDEX_DIGITS digits."""

    def __init__(self, message: str, digits: int) -> None:
        super().__init__(message)
        self.digits = digits


@dataclass(frozen=True, slots=True)
class Site:
    """The structure of one norm's name."""

    prefix: str
    """The wrapper prefix removed (`model.`, `language_model.model.`, ...)."""
    canonical: str
    """Prefix, sublayer indices and leaf wrappers removed; the container index kept."""
    template: str
    """`canonical` with the container index written as 0: the key rules are matched on."""
    index: int | None
    """The container index (layer, or MTP module as written)."""
    block: str | None
    """The trunk container (`layers`, `h`, `decoder.layers`, ...) when in a trunk block."""
    local: str
    """The path inside the container (inner MTP wrappers removed); the whole name otherwise."""
    mtp: bool
    """In an MTP container (not counting `layers.{N+k}`, which needs the config or markers)."""
    vision: bool
    leaf: str
    """The last component: what says whether this is a norm at all."""


_PREFIX_PARTS = tuple(tuple(p.rstrip(".").split(".")) for p in PREFIXES)
_PREFIX_HEADS = frozenset(p[0] for p in _PREFIX_PARTS)


def parse_site(base: str) -> Site:
    """Read the structure of a norm base name (no `.weight`); raise IndexTooLong for an index
    longer than MAX_INDEX_DIGITS digits (never int()-converted)."""
    return _parse(base)[0]


# A whole name component that is a number (ASCII digits only, as `_parse` reads them).
_NUMBER = re.compile(r"(?<![^.])[0-9]+(?![^.])")


class SiteCache:
    """`parse_site` for many names: names that differ only in their numbers share one parse
    (`model.layers.#.mlp.experts.#.norm`), so a header costs two C-level regex passes per name."""

    def __init__(
        self, block_words: frozenset[str] = BLOCK_WORDS, mtp_words: frozenset[str] = frozenset()
    ) -> None:
        self._memo: dict[str, tuple[Site, int]] = {}
        self._words = (block_words, mtp_words)

    def parse(self, base: str) -> tuple[Site, int | None]:
        """The name's structure (its `index` field is not this name's) and its index."""
        key = _NUMBER.sub("#", base)
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = _parse(key.replace("#", "0"), *self._words)
        site, ordinal = found
        if ordinal < 0 or site.index is None:
            return site, None
        number = _NUMBER.findall(base)[ordinal]
        if len(number) > MAX_INDEX_DIGITS:
            raise IndexTooLong(_too_long(base, number), len(number))
        return site, int(number)


def _too_long(base: str, number: str) -> str:
    return (
        f"skipped '{base}': its index has {len(number)} digits, more than {MAX_INDEX_DIGITS}; "
        "not a layer normscope can place"
    )


def container_words(patterns: list[str]) -> tuple[frozenset[str], frozenset[str]]:
    """Block and MTP container words: the built-in ones plus the word before `{L}` / `{M}` in
    any of `patterns` (a user rule `stack.{L}.x` makes `stack` a block container)."""
    blocks = set(BLOCK_WORDS)
    mtps = set()
    for p in patterns:
        blocks.update(re.findall(r"(?:^|[.(|])([A-Za-z0-9_\-]+)\.\{L\}", p))
        for word in re.findall(r"(?:^|[.(|])([A-Za-z0-9_\-]+)\.\{M\}", p):
            if word not in BLOCK_WORDS and not word.startswith("mtp"):
                mtps.add(word)
    return frozenset(blocks - mtps), frozenset(mtps)


def _parse(
    base: str, block_words: frozenset[str] = BLOCK_WORDS, mtp_words: frozenset[str] = frozenset()
) -> tuple[Site, int]:
    """The Site and the ordinal of the index among the name's number components (-1: none)."""
    parts = base.split(".")
    start = _prefix_end(parts)
    prefix = "".join(p + "." for p in parts[:start])
    out, index, at, ordinal = _components(base, parts, start, block_words, mtp_words)
    if len(out) > 1 and out[-1] in LEAF_WRAPPERS:
        out.pop()
    template = ".".join(out)
    if at >= 0:
        out[at] = str(index)
    canonical = ".".join(out)
    first = out[0]
    mtp, block, local = _structure(out, at, template, block_words, mtp_words)
    site = Site(
        prefix=prefix,
        canonical=canonical,
        template=template,
        index=index if (mtp or block is not None) else None,
        block=block,
        local=local,
        mtp=mtp,
        vision=first in VISION_ROOTS,
        leaf=out[-1],
    )
    return site, ordinal


def _prefix_end(parts: list[str]) -> int:
    """How many leading components are a wrapper prefix (`model.`, `language_model.model.`)."""
    start = 0
    while start < len(parts) - 1 and parts[start] in _PREFIX_HEADS:
        for pre in _PREFIX_PARTS:
            end = start + len(pre)
            if end < len(parts) and tuple(parts[start:end]) == pre:
                start = end
                break
        else:
            break
    return start


def _components(
    base: str,
    parts: list[str],
    start: int,
    block_words: frozenset[str],
    mtp_words: frozenset[str],
) -> tuple[list[str], int | None, int, int]:
    """The name's components after the prefix, with the block (or MTP) index as `0` and the
    other numbers (sublayer, head) dropped; the index, its place, its ordinal (-1: none)."""
    out: list[str] = []
    index: int | None = None
    at = -1  # position of the index in `out`
    ordinal, numbers = -1, sum(1 for p in parts[:start] if p.isdigit() and p.isascii())
    prev = ""
    for part in parts[start:]:
        if part.isdigit() and part.isascii():
            if index is None and (
                prev in block_words or prev.startswith("mtp") or prev in mtp_words
            ):
                if len(part) > MAX_INDEX_DIGITS:
                    raise IndexTooLong(_too_long(base, part), len(part))
                index, at, ordinal = int(part), len(out), numbers
                out.append("0")
            numbers += 1
            prev = part
            continue  # a sublayer or head index: structure, not a name
        out.append(part)
        prev = part
    return out, index, at, ordinal


def _structure(
    out: list[str],
    at: int,
    template: str,
    block_words: frozenset[str],
    mtp_words: frozenset[str],
) -> tuple[bool, str | None, str]:
    """Whether the name is in an MTP module, its block container, and its path inside."""
    first = out[0]
    if first == "mtp" or ((first.startswith("mtp_") or first in mtp_words) and at == 1):
        if at == 1:  # mtp.K.x, mtp_layers.K.x, mtp_emb_norm.K
            whole = first == "mtp" or first in MTP_BLOCK_WORDS or first in mtp_words
            rest = out[2:] if whole else [first, *out[2:]]
        elif at == 2 and out[1] in BLOCK_WORDS:  # mtp.layers.K.x
            rest = out[3:]
        else:  # mtp.norm, mtp.pre_fc_norm_embedding: the one module, depth 1
            rest = out[1:]
        while len(rest) > 1 and rest[0] in INNER_BLOCKS:
            rest = rest[1:]
        return True, None, ".".join(rest)
    if at >= 1 and out[at - 1] in block_words:
        return False, ".".join(out[:at]), ".".join(out[at + 1 :])
    return False, None, template


# The projection a QK norm normalises, as every vocabulary below names it: q_norm / k_norm (HF,
# OLMo-core), q_layernorm / k_layernorm (Megatron-Core, StableLM's per-head `.norms.{h}`),
# query_layernorm / key_layernorm.
_QK_SIDE = re.compile(r"(?:^|\.)(q|k|query|key)_(?:norm|layernorm)(?:\.|$)")


def qk_side(name: str) -> str | None:
    """'q' or 'k': which projection a QK norm's name says it normalises; None when it says
    neither (then a layer's two QK norms cannot be told apart by their place alone)."""
    m = _QK_SIDE.search(name)
    return m.group(1)[0] if m else None


def mtp_local(site: Site) -> str:
    """The path inside an MTP module stored as a trunk layer (`layers.61.transformer.x` -> x)."""
    parts = site.local.split(".")
    while len(parts) > 1 and parts[0] in INNER_BLOCKS:
        parts = parts[1:]
    return ".".join(parts)


def _n(pattern: str, role: str | list[str], **kw: Any) -> dict[str, Any]:
    return {"pattern": pattern, "role": role, **kw}


# The block rules of a vocabulary are also tried, with `layers.0.` (or the vocabulary's own block
# container) in front, on the norms inside an MTP module.
MTP_BLOCK_CONTAINERS = ("layers", "decoder.layers", "blocks", "h")

_OLMO_OUT = ["reordered_norm", "moe_reordered_norm", "moe_hybrid_reordered_norm"]
_OLMO_IN = ["default", "moe", "moe_hybrid"]

VOCABULARY_TABLES: list[dict[str, Any]] = [
    {
        "name": "mtp",
        "source": "docs/architectures.md#mtp-layouts (trap 10): DeepSeek/GLM/Step/Megatron "
        "enorm, hnorm, "
        "shared_head.norm|final_layernorm; Qwen3-Next pre_fc_norm_embedding/hidden, norm; "
        "MiMo token_layernorm/hidden_layernorm/final_layernorm; ERNIE mtp_emb_norm/"
        "mtp_hidden_norm; LongCat enorm.m/hnorm.m, model.mtp.norm; DeepSeek original enorm/"
        "hnorm/norm (vllm deepseek_mtp.py @03356f8, qwen3_next_mtp.py @055e47c, mimo_mtp.py "
        "@0bb55d6, ernie_mtp.py @028aedf, longcat_flash_mtp.py @0bb55d6)",
        "norm": [
            _n(
                "mtp.{M}.(enorm|pre_fc_norm_embedding|token_layernorm|mtp_emb_norm|embed_norm)",
                "mtp_embedding",
            ),
            _n(
                "mtp.{M}.(hnorm|pre_fc_norm_hidden|hidden_layernorm|mtp_hidden_norm|hidden_norm)",
                "mtp_hidden",
            ),
            _n("mtp.{M}.(shared_head.norm|final_layernorm|norm|mtp_final_norm)", "mtp_final"),
        ],
    },
    {
        "name": "hf",
        "source": "docs/architectures.md#naming-vocabularies; Hugging Face transformers names: "
        "input_layernorm, post_attention_layernorm (MLP input, or an output norm when the layer "
        "also has post_feedforward_layernorm: Gemma-2/3, OLMo-2, trap 4), q_norm/k_norm, "
        "q_a/kv_a_layernorm, linear_attn.norm (Qwen3NextRMSNormGated, ones-init)",
        "norm": [
            _n("layers.{L}.input_layernorm", "attn_input"),
            _n(
                "layers.{L}.post_attention_layernorm",
                "attn_output",
                if_present="post_feedforward_layernorm.weight",
            ),
            _n("layers.{L}.post_attention_layernorm", "mlp_input"),
            _n("layers.{L}.pre_feedforward_layernorm", "mlp_input"),
            _n("layers.{L}.post_feedforward_layernorm", "mlp_output"),
            _n("layers.{L}.post_self_attn_layernorm", "attn_output"),
            _n("layers.{L}.post_mlp_layernorm", "mlp_output"),
            _n("layers.{L}.self_attn.(q_norm|k_norm)", "qk"),
            _n("layers.{L}.self_attn.(q_layernorm|k_layernorm).norms", "qk"),
            _n("layers.{L}.self_attn.(q_layernorm|k_layernorm)", "qk"),
            _n("layers.{L}.(self_attn|attention).(query_layernorm|key_layernorm)", "qk"),
            _n("layers.{L}.self_attn.(q_a_layernorm|kv_a_layernorm)", "latent"),
            _n("layers.{L}.linear_attn.norm", "linear_attn", parametrization="standard"),
            _n("layers.{L}.self_attn.indexer.k_norm", "unknown"),
            _n("(norm|final_layernorm|final_norm)", "final"),
        ],
    },
    {
        "name": "meta",
        "source": "docs/architectures.md#naming-vocabularies; DeepSeek/Meta original inference "
        "naming: deepseek-ai/DeepSeek-V3 @9b4e978 "
        "inference/convert.py (input_layernorm->attn_norm, post_attention_layernorm->ffn_norm, "
        "q_a_layernorm->q_norm, kv_a_layernorm->kv_norm, no model. prefix); Meta Llama "
        "attention_norm/ffn_norm",
        "norm": [
            _n("layers.{L}.(attn_norm|attention_norm)", "attn_input"),
            _n("layers.{L}.ffn_norm", "mlp_input"),
            # MLA latent norms; a head_dim-wide q_norm would be a QK norm (width decides).
            _n("layers.{L}.attn.q_norm", ["latent", "qk"]),
            _n("layers.{L}.attn.kv_norm", "latent"),
            _n("layers.{L}.attn.indexer.k_norm", "unknown"),
            _n("layers.{L}.attention.(q_norm|k_norm)", "qk"),
            _n("norm", "final"),
        ],
    },
    {
        "name": "olmo-core",
        "source": "docs/architectures.md#naming-vocabularies; "
        "allenai/OLMo-core TransformerBlock (attention_norm, feed_forward_norm: input "
        "norms) and ReorderedNormTransformerBlock (the same names normalise the sublayer OUTPUT, "
        "OLMo-2); the block type is config block.name; lm_head.norm is the final norm",
        "norm": [
            _n("blocks.{L}.attention_norm", "attn_output", if_block_type=_OLMO_OUT),
            _n("blocks.{L}.attention_norm", "attn_input", if_block_type=_OLMO_IN),
            _n("blocks.{L}.feed_forward_norm", "mlp_output", if_block_type=_OLMO_OUT),
            _n("blocks.{L}.feed_forward_norm", "mlp_input", if_block_type=_OLMO_IN),
            _n("blocks.{L}.attention.(q_norm|k_norm)", "qk"),
            # OLMo-core LMHead(norm, w_out) (allenai/OLMo-core @020907a src/olmo_core/nn/
            # lm_head.py); ModernBERT's lm_head(dense, act, norm) is a head norm, not a final.
            _n("lm_head.norm", "final", if_present="w_out.weight"),
        ],
    },
    {
        "name": "gpt2",
        "source": "docs/architectures.md#naming-vocabularies; "
        "GPT-2 / Falcon / Phi-1 remote code: transformers models/gpt2/modeling_gpt2.py "
        "@0010f60 (ln_1, ln_2, ln_f); llama.cpp gguf-py/gguf/tensor_mapping.py @0024aa7 (falcon "
        "ln_attn, ln_mlp, input_layernorm; phi2 transformer.h.N.ln, lm_head.ln)",
        "norm": [
            # GPT-2 (pre-LN, ends in ln_f) vs OpenAI GPT-1 (post-LN: ln_1/ln_2 after each
            # sublayer, no final norm): whether the stack ends in a final norm tells them apart.
            _n("h.{L}.ln_1", "attn_input", if_final_norm=True),
            _n("h.{L}.ln_1", "attn_output", if_final_norm=False),
            _n("h.{L}.(ln_attn|input_layernorm|ln)", "attn_input"),
            _n("h.{L}.ln_2", "mlp_input", if_final_norm=True),
            _n("h.{L}.ln_2", "mlp_output", if_final_norm=False),
            _n("h.{L}.(ln_mlp|post_attention_layernorm)", "mlp_input"),
            _n("h.{L}.ln_cross_attn", "cross_attn_input"),
            _n("(ln_f|lm_head.ln)", "final"),
        ],
    },
    {
        "name": "bert",
        "source": "docs/architectures.md#bert; "
        "transformers models/bert/modeling_bert.py (post-LN); llama.cpp tensor_mapping "
        "@0024aa7 (bert TOKEN_EMBD_NORM, ATTN_OUT_NORM, LAYER_OUT_NORM)",
        "final_norm": False,
        "norm": [
            _n("embeddings.LayerNorm", "embedding"),
            _n("encoder.layer.{L}.attention.output.LayerNorm", "attn_output"),
            _n("encoder.layer.{L}.output.LayerNorm", "mlp_output"),
            _n("cls.predictions.transform.LayerNorm", "head"),
        ],
    },
    {
        "name": "megatron",
        "source": "docs/architectures.md#megatron-core; "
        "NVIDIA/Megatron-LM @d98e8a6 gpt_layer_specs.py (TE fused layer_norm_weight), "
        "multi_latent_attention.py, transformer_block.py (decoder.final_layernorm)",
        "norm": [
            _n("decoder.layers.{L}.self_attention.linear_qkv.layer_norm", "attn_input"),
            _n("decoder.layers.{L}.input_layernorm", "attn_input"),
            _n("decoder.layers.{L}.mlp.linear_fc1.layer_norm", "mlp_input"),
            _n("decoder.layers.{L}.pre_mlp_layernorm", "mlp_input"),
            _n(
                "decoder.layers.{L}.self_attention.q_layernorm",
                "latent",
                if_present="linear_q_down_proj.weight",
            ),
            _n("decoder.layers.{L}.self_attention.q_layernorm", ["qk", "latent"]),
            _n("decoder.layers.{L}.self_attention.k_layernorm", "qk"),
            _n("decoder.layers.{L}.self_attention.kv_layernorm", "latent"),
            _n(
                "decoder.layers.{L}.self_attention.(linear_q_up_proj|linear_kv_up_proj).layer_norm",
                "latent",
            ),
            _n("decoder.layers.{L}.self_attention.in_proj.layer_norm", "attn_input"),
            _n("decoder.layers.{L}.self_attention.out_norm", "linear_attn"),
            _n("decoder.final_layernorm", "final"),
        ],
    },
]

# The generic vocabularies come last: a family table or a vocabulary above reads a name first.
GENERIC_FROM = len(VOCABULARY_TABLES)
"""Index of the first generic vocabulary (`stack`, `blocks`)."""
VOCABULARY_TABLES += GENERIC_VOCABULARIES

VOCABULARIES: tuple[Family, ...] = tuple(
    parse_family(t, f"vocabulary[{i}]", "normscope.arch.vocab")
    for i, t in enumerate(VOCABULARY_TABLES)
)
VOCABULARY_BY_NAME = {v.name: v for v in VOCABULARIES}
