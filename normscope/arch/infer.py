"""Roles from structure, for norms no rule or naming vocabulary names.

The last step before `unknown` (`resolve._rule_and_role`). It reads what a norm sits beside, in
the checkpoint's own tensor names, and what the words of its name say:

- **the words of a name**: a norm's leaf split into words (`norm_feed_forward1` -> norm, feed,
  forward, 1) says which sublayer it serves (`SUBLAYER_WORDS`: attention, the convolution or
  state-space mixer that takes its place, cross-attention, the MLP) and where (`pre`/`before`/
  `in` -> input, `post`/`after`/`out` -> output; a name that starts with the norm word, `norm_X`,
  is X's input norm: Falcon `ln_attn`, NeMo conformer `norm_self_att`, Phi-4-MM `layer_norm_att`,
  xLSTM `norm_mlstm`);
- **the block**: the norm's parent module holds the block's sublayers (a child module named by a
  sublayer word, or holding an attention's or an MLP's projections: `CONTENT`). A plain `norm`
  beside one sublayer is that sublayer's (Nemotron-H `layers.N.norm` + `mixer`, whose content
  says attention, Mamba or MLP); numbered norms follow the sublayers' order (`norm1` attention,
  `norm2` MLP; three with a cross-attention: self, cross, MLP); a plain norm in a block whose
  every sublayer already has one is the block's output norm (conformer `norm_out`, Phi-4-MM's
  block `layer_norm`, Granite-Speech `post_norm`);
- **inside a sublayer**: a norm in the attention or MLP module itself is that sublayer's input
  (pix2struct `self_attention.layer_norm`, conformer `feed_forward_in.layer_norm`) or, in a
  post-LN stack, its output (Funnel `attention.layer_norm`, XLNet `rel_attn.layer_norm`); a sub-LN
  between the sublayer's projections is `attn_inner`/`mlp_inner` (Kosmos-2 `inner_attn_ln` by its
  word, `ffn_layernorm` by its width, the MLP's hidden width; BitNet `attn_sub_norm`); a norm
  named for the output in a linear attention is `linear_attn`;
- **pre-LN or post-LN** where the name does not say: the stack's final norm (`structure.Stacks`),
  else a block's layer scale (ConvNeXt/CaiT `gamma`, InternViT `ls1`: only a pre-LN residual
  scales the sublayer's output), an extra block output norm, or a lone sublayer;
- **outside every block**: an output head's norm (`head`: BERT `cls.predictions.transform`,
  RoBERTa `lm_head.layer_norm`, ELECTRA `generator_predictions`, SigLIP's pooling `head`), an
  embedding norm (BLOOM `word_embeddings_layernorm`, XLM `layer_norm_emb`, wav2vec2
  `feature_projection.layer_norm`), a connector's norm (`projector`: any norm in the projector
  tower no rule places).

Each naming is cited in docs/architectures.md#roles-from-structure with the transformers 5.25.0
models that use it; the model zoo (`tests/test_zoo.py`) checks every inference against the
module the model's forward calls next.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from normscope.arch.blocks import (
    ATTN,
    CROSS,
    EMBED_WORDS,
    IN,
    INNER_WORDS,
    LATENT,
    LINEAR_MARKS,
    MLP,
    NORM_PARTS,
    OUT,
    POSITION_WORDS,
    QK_WORDS,
    SUBLAYER_WORDS,
    Block,
    Tree,
    is_norm_leaf,
    kind_of_words,
    module_kind,
    number,
    read_block,
    words,
)
from normscope.arch.structure import FINAL_LEAVES, Stacks, stack_of, tower_of
from normscope.enums import Role, Tower
from normscope.schema import is_matrix

# A connector's words outside the projector tower's own (Mistral-Large-3 `pre_mm_projector_norm`,
# LightOnOCR `vision_projection`: a projection named for a modality).
MODALITY_WORDS = frozenset({"vision", "visual", "image", "audio", "speech", "mm"})
HEAD_WORDS = frozenset({"head", "predictions", "vocab", "cls"})
_INDEX = re.compile(r"\.[0-9]+(?=\.|$)")


@dataclass
class Inference:
    """Everything the inference reads, built lazily once per classification."""

    tensors: Mapping[str, Any]
    stacks: Stacks | None
    _blocks: dict[str, Block] = field(default_factory=dict)
    _modules: dict[str, tuple[int, str | None]] = field(default_factory=dict)

    @cached_property
    def tree(self) -> Tree:
        return Tree.of(self.tensors)

    def block(self, path: str) -> Block:
        found = self._blocks.get(path)
        if found is None:
            found = self._blocks[path] = read_block(self.tree, path)
        return found

    def role(self, base: str, width: int | None) -> Role | None:
        """The role the structure says, or None."""
        while base.rpartition(".")[2].isdigit() and "." in base:  # `layer_norm1.3`, `head.0`
            base = base.rsplit(".", 1)[0]
        parent, _, leaf = base.rpartition(".")
        ws = {w for w in words(leaf) if not w.isdigit()}
        if leaf in LATENT:
            return Role.latent
        if (
            ws & QK_WORDS
            and not ws & (set(SUBLAYER_WORDS) | set(POSITION_WORDS))
            and _sublayer_above(base) is not None
        ):
            return Role.qk  # in an attention: `norm_q`, `k_rope_only_layernorm`
        if not parent:
            return self._outside(base, leaf)
        if ws <= NORM_PARTS and is_norm_leaf(parent.rpartition(".")[2]):
            return None  # a norm wrapped in a norm-named module: the wrapper's name decides
        block = self.block(parent)
        if block.is_block and leaf in block.norms:
            found = self._in_block(base, leaf, block)
            if found is not None:
                return found
        found = self._output_module(parent)
        if found is not None:
            return found
        above = _sublayer_above(parent)
        if above is not None:
            named, holder, module = above
            matrices, kind = self._module(module)
            if matrices >= 2:  # a sublayer, not one projection named so
                kind = kind or named
                return self._in_sublayer(base, leaf, width, parent, kind, holder)
        return self._outside(base, leaf)

    def _output_module(self, parent: str) -> Role | None:
        """The residual's norm in a sublayer's output module (one projection at most): BERT
        `output.LayerNorm` (the MLP's) and `attention.output.LayerNorm`, FNet
        `fourier.output.LayerNorm`, BLIP-2 Q-Former `output_query.LayerNorm`, SqueezeBERT
        `post_attention.layernorm`."""
        holder, _, module = parent.rpartition(".")
        if OUT not in [POSITION_WORDS.get(w) for w in words(module)] or self._module(parent)[0] > 1:
            return None
        if self.block(holder).is_block:
            return _ROLE[kind_of_words(words(module)) or MLP, OUT]
        outer, _, sublayer = holder.rpartition(".")
        kind = kind_of_words(words(sublayer))
        if kind is not None and outer and self.block(outer).is_block:
            return _ROLE[kind, OUT]
        return None

    def _module(self, module: str) -> tuple[int, str | None]:
        """How many tensors of two or more dimensions `module` holds, and its kind (once per
        module: the norms of a layer's 256 experts share their MLP's)."""
        found = self._modules.get(module)
        if found is None:
            rel = self.tree.under(module)
            found = (
                sum(1 for r in rel if is_matrix(self.tensors, f"{module}.{r}")),
                module_kind(module.rpartition(".")[2], rel),
            )
            self._modules[module] = found
        return found

    def _outside(self, base: str, leaf: str) -> Role | None:
        """A norm no block places: an output head's, a connector's, an embedding's."""
        comps = [c.lower() for c in base.split(".")]
        ws = {w for c in comps for w in words(c)}
        if ws & HEAD_WORDS or "lm_head" in comps or "transform" in comps:
            return Role.head
        if tower_of(base + ".x") is Tower.projector or _connector_named(ws):
            return Role.projector
        if _INDEX.search(base):
            return None
        if ws & EMBED_WORDS or set(comps) & EMBED_WORDS or "post_conv" in leaf.lower():
            return Role.embedding
        return None

    def _pre_ln(self, base: str, block: Block) -> bool | None:
        """Whether the block is pre-LN: a layer scale or a norm more than its sublayers (a block
        output norm) say so; else its stack's final norm (a vision tower is pre-LN even without
        one: its last norm may sit in its projector); else a lone sublayer, or a final norm at
        the root of the container holding it. None when nothing says."""
        if block.scaled or block.norm_count() > len(block.subs):
            return True
        if len(block.subs) == 1 and len(block.norms) == 1 and not any(block.sub_norms.values()):
            return True  # one norm before one mixer (Mamba, a diffusion head's adaLN block)
        stacks = self.stacks
        if stacks is not None and any(base.startswith(c + ".") for c in stacks.containers):
            return stacks.pre_ln(base)
        return self._loose_final(block.path)

    def _loose_final(self, path: str) -> bool | None:
        """A final-norm leaf at the root of the container holding `path` (`encoders.3`)."""
        container, _, index = path.rpartition(".")
        if not index.isdigit() or "." not in container:
            return None
        kids = self.tree.children(container.rpartition(".")[0])
        return True if any(k in FINAL_LEAVES and "weight" in r for k, r in kids.items()) else None

    def _in_block(self, base: str, leaf: str, block: Block) -> Role | None:
        kind, position = block.kind_of(leaf)
        if kind is None:
            kind, position = _place_plain(leaf, position, block)
        if kind is None:
            return None
        if position is None:
            pre = self._pre_ln(base, block)
            if pre is None:
                return None
            position = IN if pre else OUT
        return _ROLE[kind, position]

    def _in_sublayer(
        self, base: str, leaf: str, width: int | None, parent: str, kind: str, grand: str
    ) -> Role | None:
        """A norm inside an attention or MLP module (`grand`: the module holding it)."""
        plain = {w for w in words(leaf) if not w.isdigit()}
        block = self.block(grand)
        marks = {p.lower() for r in self.tree.under(parent) for p in r.split(".")}
        if plain & INNER_WORDS or base[len(grand) + 1 :] in block.batch:
            return _INNER[kind]  # a sub-LN by its word; a BatchNorm after a convolution
        if plain & {"o", "out", "output"} and kind != MLP:
            return Role.linear_attn if marks & LINEAR_MARKS else _INNER[kind]
        position = next((POSITION_WORDS[w] for w in plain if w in POSITION_WORDS), None)
        if position is not None:
            return _ROLE[kind, position]
        if block.covered(kind):  # the block feeds this sublayer through a norm of its own
            if kind == ATTN and marks & LINEAR_MARKS and plain <= NORM_PARTS:
                return Role.linear_attn  # Mamba-2's gated norm before out_proj
            return _INNER[kind]
        widths = {self._width(f"{grand}.{n}") for n in block.norms} - {None}
        if width is not None and widths and width not in widths:
            return _INNER[kind]  # over another width than the block's: between projections
        pre = self._pre_ln(base, block)
        if pre is None:
            return None
        return _ROLE[kind, IN if pre else OUT]

    def _width(self, base: str) -> int | None:
        ref = self.tensors.get(base + ".weight")
        shape = getattr(ref, "shape", None)
        return int(shape[-1]) if shape else None


def _connector_named(ws: set[str]) -> bool:
    return "projector" in ws or ("projection" in ws and bool(ws & MODALITY_WORDS))


def _sublayer_above(parent: str) -> tuple[str, str, str] | None:
    """The sublayer module holding a norm (its kind by name, the path of the module holding it,
    its own path): the nearest of the norm's three nearest named ancestors that a sublayer word
    names (`ffn.0.output.LayerNorm`: the `ffn`)."""
    parts = parent.split(".")
    seen = 0
    for i in range(len(parts) - 1, -1, -1):
        if parts[i].isdigit():
            continue
        kind = kind_of_words(words(parts[i]))
        if kind is not None:
            return kind, ".".join(parts[:i]), ".".join(parts[: i + 1])
        seen += 1
        if seen == 3:
            break
    return None


def _place_plain(leaf: str, position: str | None, block: Block) -> tuple[str | None, str | None]:
    """A norm whose name names no sublayer: by its number (`norm1`, `layer_norm_2`, `norm0`: the
    sublayers in order), else by the one sublayer no other norm serves; the block's output norm
    when every sublayer already has its own."""
    numbered = sorted((n, x) for x in block.norms if (n := number(x)) is not None)
    if number(leaf) is not None:
        order = [ATTN, MLP] if len(numbered) == 2 else []
        kinds = sorted(block.subs.values())
        if len(numbered) == 3 and (
            CROSS in kinds or (kinds == [ATTN, ATTN, MLP] and stack_of(block.path + ".x"))
        ):
            order = [ATTN, CROSS, MLP]  # self-attention, cross-attention, MLP (NeMo)
        at = [x for _, x in numbered].index(leaf)
        return (order[at], position) if at < len(order) else (None, None)
    uncovered = [k for sub, k in block.subs.items() if not block.sub_norms.get(sub)]
    for other in block.norms:
        kind = block.kind_of(other)[0] if other != leaf else None
        if kind in uncovered:
            uncovered.remove(kind)
    if not uncovered and len(block.subs) >= 2:
        return MLP, OUT  # the block's output: after its last sublayer, the MLP
    rivals = [
        n for n in block.norms if n != leaf and block.kind_of(n)[0] is None and number(n) is None
    ]
    if len(uncovered) == 1 and not rivals:  # two plain norms for one sublayer: neither is sure
        return uncovered[0], position
    return None, None


_ROLE = {
    (ATTN, IN): Role.attn_input,
    (ATTN, OUT): Role.attn_output,
    (MLP, IN): Role.mlp_input,
    (MLP, OUT): Role.mlp_output,
    (CROSS, IN): Role.cross_attn_input,
    (CROSS, OUT): Role.cross_attn_output,
}
_INNER = {ATTN: Role.attn_inner, CROSS: Role.attn_inner, MLP: Role.mlp_inner}
