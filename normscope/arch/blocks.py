"""A module's children read from the checkpoint's tensor names: the words of a name, what a
module holds (its sublayers and their kinds: attention, cross-attention, MLP), its norms, its layer
scales. `infer.py` places a norm from what this reads; each word list cites the transformers
5.25.0 model code that uses it (docs/architectures.md#roles-from-structure).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ATTN, CROSS, MLP = "attn", "cross", "mlp"

# Words of a norm's or a module's name that name a sublayer. Attention and what takes its place
# in a block (Mamba/Nemotron-H `mixer`, LFM2 `operator`, a conformer's `conv` module, xLSTM
# `mlstm`, RecurrentGemma `temporal`, DaViT `spatial`, FNet `fourier`); cross-attention (Dia
# `ca`, T5Gemma `cross_attn`, NLLB `cross_attention`, Pix2Struct `encoder_decoder_attention`);
# the MLP (Dia `mlp`, Pixtral `ffn`, granite-speech `ff1`, NeMo `feed_forward1`,
# RecurrentGemma `channel`).
SUBLAYER_WORDS: dict[str, str] = {
    **dict.fromkeys(
        [
            "attn",
            "att",
            "attention",
            "attentions",
            "self",
            "sa",
            "mixer",
            "operator",
            "conv",
            "temporal",
            "mlstm",
            "mamba",
            "spatial",
            "ssm",
            "rel",
            "mha",
            "msa",
            "attend",
            "attends",
            "fourier",
        ],
        ATTN,
    ),
    **dict.fromkeys(["cross", "ca", "crossattention", "encdec"], CROSS),
    **dict.fromkeys(
        [
            "mlp",
            "ffn",
            "ffns",
            "ff",
            "ff1",
            "ff2",
            "feed",
            "forward",
            "feedforward",
            "ffw",
            "channel",
            "moe",
        ],
        MLP,
    ),
}
NORM_WORDS = frozenset(
    ["norm", "norms", "layernorm", "ln", "rms", "rmsnorm", "groupnorm", "batchnorm"]
)
# Words that belong to a norm's name without naming one alone (`layer_norm`, `batch_norm`).
NORM_PARTS = NORM_WORDS | {"layer", "batch", "group"}
IN, OUT = "in", "out"
POSITION_WORDS = {
    **dict.fromkeys(["pre", "before", "input", "in"], IN),
    **dict.fromkeys(["post", "after", "output", "out"], OUT),
}
INNER_WORDS = frozenset({"inner", "sub"})
QK_WORDS = frozenset({"q", "k", "query", "key"})
# A module's content: the projection names of an attention (or a state-space / linear-attention
# mixer) and of an MLP, as transformers' model code names them (NeMo's `query_net`/`key_net`/
# `value_net` and `dense_in`: the Cohere-ASR decoder's `first/second/third_sub_layer`).
CONTENT: dict[str, str] = {
    **dict.fromkeys(
        [
            "q_proj",
            "k_proj",
            "v_proj",
            "qkv",
            "qkv_proj",
            "query",
            "key",
            "value",
            "wqkv",
            "c_attn",
            "wq",
            "wk",
            "wv",
            "query_key_value",
            "to_q",
            "to_k",
            "to_v",
            "linear_q",
            "linear_k",
            "linear_v",
            "linear_qkv",
            "q_a_proj",
            "kv_a_proj_with_mqa",
            "kv_proj",
            "in_proj",
            "conv1d",
            "a_log",
            "dt_bias",
            "x_proj",
            "dt_proj",
            "query_net",
            "key_net",
            "value_net",
        ],
        ATTN,
    ),
    **dict.fromkeys(
        [
            "gate_proj",
            "up_proj",
            "gate_up_proj",
            "fc1",
            "w1",
            "w3",
            "wi",
            "wi_0",
            "c_fc",
            "dense_h_to_4h",
            "experts",
            "linear1",
            "linear_fc1",
            "dense_in",
        ],
        MLP,
    ),
}
# Marks of a linear attention (its output norm is `linear_attn`): Mamba-2 / gated delta nets.
LINEAR_MARKS = frozenset({"a_log", "dt_bias", "conv1d"})
# Per-channel layer scales (ConvNeXt/VibeVoice `gamma`/`ffn_gamma`, InternViT `ls1`/`ls2`, CaiT
# `layer_scale`): they scale a sublayer's output before the residual add of a pre-LN block.
_LAYER_SCALE = re.compile(r"^(gamma|\w+_gamma|ls\d|layer_scale\w*|lambda\d?)$")
EMBED_WORDS = frozenset(
    ["emb", "embed", "embeddings", "embedding", "embd", "subsampling", "feature_projection"]
)
_WORD = re.compile(r"[a-z]+|[0-9]+")


def words(component: str) -> list[str]:
    """A name component as words: `norm_feed_forward1` -> norm, feed, forward, 1."""
    return _WORD.findall(component.lower())


def kind_of_words(ws: Iterable[str]) -> str | None:
    kinds = {SUBLAYER_WORDS[w] for w in ws if w in SUBLAYER_WORDS}
    for kind in (CROSS, ATTN, MLP):  # cross_attn is cross; self_attn is attention
        if kind in kinds:
            return kind
    return None


@dataclass
class Tree:
    """The checkpoint's tensor names, sorted once, for a module's children."""

    names: list[str]
    _under: dict[str, list[str]] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, tensors: Mapping[str, Any]) -> Tree:
        return cls(sorted(tensors))

    def under(self, path: str) -> list[str]:
        """Names below `path`, relative to it (each path sliced once: the norms of 256 experts
        in one layer share their block's)."""
        found = self._under.get(path)
        if found is None:
            if not path:
                found = list(self.names)
            else:
                start = path + "."
                lo = bisect.bisect_left(self.names, start)
                hi = bisect.bisect_left(self.names, path + "/")  # "/" sorts right after "."
                found = [n[len(start) :] for n in self.names[lo:hi]]
            self._under[path] = found
        return found

    def children(self, path: str) -> dict[str, list[str]]:
        """Child component -> the names below it (relative to the child)."""
        out: dict[str, list[str]] = {}
        for rel in self.under(path):
            head, _, rest = rel.partition(".")
            out.setdefault(head, []).append(rest)
        return out


def content_kind(rel_names: Iterable[str]) -> str | None:
    """attention or MLP from the projections a module holds (attention wins: it may hold an
    output projection an MLP would too)."""
    kinds = {CONTENT.get(part.lower()) for rel in rel_names for part in rel.split(".")}
    if ATTN in kinds and MLP in kinds:
        return None  # a whole block
    return ATTN if ATTN in kinds else MLP if MLP in kinds else None


def module_kind(name: str, rel_names: list[str]) -> str | None:
    """A sublayer's kind: cross by its name, else its content, else its name's words."""
    by_name = kind_of_words(words(name))
    if by_name == CROSS:
        return CROSS
    return content_kind(rel_names) or by_name


_PARAM = re.compile(r"^([0-9]+\.)?(weight|bias|running_mean|running_var|num_batches_tracked)$")
# In-block names whose meaning transformers fixed (the sublayer and, where it says, the side):
# LlamaDecoderLayer `input_layernorm` (attention) and `post_attention_layernorm` (the MLP's
# input, unless the block also has `post_feedforward_layernorm`: Gemma-2's sandwich, where it is
# the attention's output); fairseq/BART `self_attn_layer_norm`, `encoder_attn_layer_norm`,
# `final_layer_norm` (the MLP's; input or output by the stack).
NAMED: dict[str, tuple[str, str | None]] = {
    "input_layernorm": (ATTN, IN),
    "post_attention_layernorm": (MLP, IN),
    "pre_feedforward_layernorm": (MLP, IN),
    "post_feedforward_layernorm": (MLP, OUT),
    "self_attn_layer_norm": (ATTN, None),
    "encoder_attn_layer_norm": (CROSS, None),
    "final_layer_norm": (MLP, None),
    "final_layernorm": (MLP, None),
}
# MLA's latent norms (DeepSeek-V2 DeepseekV2Attention `q_a_layernorm`, `kv_a_layernorm`).
LATENT = frozenset({"q_a_layernorm", "kv_a_layernorm"})


def is_norm_leaf(child: str) -> bool:
    """A child named like a norm (`ffn_norm`, `inner_attn_ln`, `LayerNorm`, `ln_1`)."""
    return bool(set(words(child)) & NORM_WORDS) or child.lower().endswith("ln")


def _embedding_named(child: str) -> bool:
    return bool(set(words(child)) & EMBED_WORDS)


@dataclass
class Block:
    """A module's direct norms and sublayers: what a norm in it can serve."""

    path: str
    norms: list[str] = field(default_factory=list)
    subs: dict[str, str] = field(default_factory=dict)
    """Sublayer child -> kind."""
    sub_norms: dict[str, int] = field(default_factory=dict)
    """Sublayer child -> how many norms it holds (batch norms not counted)."""
    batch: set[str] = field(default_factory=set)
    """Norm paths (relative) that keep running statistics: BatchNorms."""
    scaled: bool = False
    """It holds a layer scale (pre-LN)."""

    @property
    def is_block(self) -> bool:
        """A block of a stack (`layers.3`) or a module holding two kinds of sublayer
        (Perceiver's `cross_attention`, DaViT's `spatial_block`)."""
        return self.path.rpartition(".")[2].isdigit() or len(set(self.subs.values())) >= 2

    def kind_of(self, leaf: str) -> tuple[str | None, str | None]:
        """The sublayer and side a direct norm's name says."""
        named = NAMED.get(leaf)
        if named is not None:
            kinds = set(self.subs.values())
            if leaf == "post_attention_layernorm":
                if "post_feedforward_layernorm" in self.norms:
                    return ATTN, OUT
                if CROSS in kinds and ATTN in kinds and len(self.norms) == 3:
                    return CROSS, IN  # Moonshine: input, post_attention, final_layernorm
            if named[0] == ATTN and CROSS in kinds and ATTN not in kinds:
                return CROSS, named[1]  # Idefics' gated cross-attention layer
            return named
        plain = [w for w in words(leaf) if not w.isdigit()]
        kind = kind_of_words(plain)
        position = next((POSITION_WORDS[w] for w in plain if w in POSITION_WORDS), None)
        if kind is not None and position is None and plain and plain[0] in NORM_PARTS:
            position = IN  # `norm_X`, `ln_attn`: X's input norm
        return kind, position

    def covered(self, kind: str) -> bool:
        """Every sublayer of this kind has a norm of the block naming it."""
        named = sum(1 for n in self.norms if self.kind_of(n)[0] == kind)
        return named >= sum(1 for k in self.subs.values() if k == kind) > 0

    def norm_count(self) -> int:
        direct = [n for n in self.norms if not _embedding_named(n) and n not in self.batch]
        return len(direct) + sum(self.sub_norms.values())


def read_block(tree: Tree, path: str) -> Block:
    """The block at `path`: a child holding only a gain (and bias) named like a norm is a norm
    (a ModuleList of them too: XLM `layer_norm1.N`); a child holding modules is a sublayer when
    its content or name says which; a child that is one layer (`ffn.weight`: ALBERT) is a
    sublayer by its name alone (never a single convolution)."""
    block = Block(path)
    for child, rel in tree.children(path).items():
        if rel == [""]:  # a parameter of the block itself
            block.scaled = block.scaled or bool(_LAYER_SCALE.match(child))
            continue
        if any(r.endswith("running_mean") for r in rel):
            block.batch.update(
                child + "." + r[: -len(".running_mean")] if "." in r else child
                for r in rel
                if r.endswith("running_mean")
            )
        leafy = all(_PARAM.match(r) for r in rel)
        if leafy and is_norm_leaf(child) and any(r.endswith("weight") for r in rel):
            block.norms.append(child)
            continue
        if leafy:
            kind = kind_of_words(w for w in words(child) if w != "conv")
        else:
            kind = module_kind(child, rel)
        if kind is not None:
            block.subs[child] = kind
            block.sub_norms[child] = sum(
                1
                for r in rel
                if r.endswith(".weight")
                and is_norm_leaf(r.rsplit(".", 2)[-2])
                and f"{child}.{r[: -len('.weight')]}" not in block.batch
            )
    return block


def number(leaf: str) -> int | None:
    ws = words(leaf)
    return int(ws[-1]) if len(ws) > 1 and ws[-1].isdigit() else None
