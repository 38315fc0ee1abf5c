"""Per tensor: which rule reads a norm's name and what it says, once the family is chosen.

`Tables` holds the families (user first, then built-in) and the naming vocabularies with their
combined indexes; `parse_all` parses each candidate's name once (names differing only in numbers
share a parse); `resolve` applies the precedence described in `classify.py`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from normscope.arch.config import ConfigFacts
from normscope.arch.families import FAMILIES
from normscope.arch.infer import Inference
from normscope.arch.rules import Family, Hit, NormRule, RuleIndex, RuleSet
from normscope.arch.structure import Stacks, stack_of, tower_of
from normscope.arch.vocab import (
    GENERIC_FROM,
    LEAF_WRAPPERS,
    MTP_BLOCK_CONTAINERS,
    MTP_MARKERS,
    VOCABULARIES,
    IndexTooLong,
    Site,
    SiteCache,
    container_words,
    mtp_local,
)
from normscope.errors import ArchError
from normscope.schema import (
    Group,
    Leaves,
    Module,
    NormInfo,
    Parametrization,
    Role,
    TensorMap,
    TensorRef,
    gain_shaped,
)

STD = Parametrization.standard

_INPUT_ROLES = {
    Role.attn_input,
    Role.mlp_input,
    Role.final,
    Role.latent,
    Role.linear_attn,
    Role.mtp_embedding,
    Role.mtp_hidden,
    Role.mtp_final,
    Role.cross_attn_input,
    Role.attn_inner,
    Role.mlp_inner,
    Role.head,
}
_OUTPUT_ROLES = {Role.attn_output, Role.mlp_output, Role.embedding, Role.cross_attn_output}
_SUBLAYER_ROLES = {
    Role.cross_attn_input,
    Role.cross_attn_output,
    Role.attn_input,
    Role.mlp_input,
    Role.attn_output,
    Role.mlp_output,
    Role.final,
    Role.embedding,
    Role.mtp_embedding,
    Role.mtp_hidden,
    Role.mtp_final,
}
# Names that look like a norm's gain: a last component naming a norm.
# `_ln` / `_rms` endings: GTE `attn_ln`, Nomic-BERT `emb_ln`, RWKV `pre_ln`, Kosmos-2
# `inner_attn_ln`, Hunyuan-VL `before_rms`/`after_rms`.
_NORMISH = re.compile(r"(?i)(norm|^ln(_\w+|\d+)?$|^layer_norm|_ln\d*$|_rms$)")


def default_group(role: Role) -> Group | None:
    """Input norms feed a linear map; output norms join the residual stream.

    docs/architectures.md#input-and-output-norms
    """
    if role in _INPUT_ROLES:
        return Group.input
    if role in _OUTPUT_ROLES:
        return Group.output
    return None


def split_param(name: str) -> tuple[str, str] | None:
    """Split a tensor name into (norm base, 'weight' | 'bias'), or None for other tensors."""
    for suffix, param in (
        (".layer_norm_weight", "weight"),
        (".layer_norm_bias", "bias"),
        (".weight", "weight"),
        (".bias", "bias"),
        # TF-era names, kept by transformers' ESM save: `LayerNorm.gamma`/`LayerNorm.beta`.
        (".gamma", "weight"),
        (".beta", "bias"),
        # A norm module's gain named `scale` (ERGO's `expert_output_norm.scale`, a [experts, d]
        # stack, and `shared_expert_output_norm.scale`); only under a norm-named module, as a
        # quantization `scale` sits under a linear map.
        (".scale", "weight"),
    ):
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            if suffix == ".scale" and "norm" not in base.rsplit(".", 1)[-1].lower():
                return None
            if suffix.startswith(".layer_norm"):
                base += ".layer_norm"
            return base, param
    return None


def candidates(tensors: Mapping[str, TensorRef]) -> dict[str, tuple[str, str]]:
    """Gain/bias tensors that could be norms: 1-D, or 2-D with 'norm' in the name (per-head):
    `gain_shaped`, which a light open (`TensorMap`) keeps the refs of."""
    out = {}
    refs = tensors.kept if isinstance(tensors, TensorMap) else tensors
    for name, ref in refs.items():
        if gain_shaped(name, ref.shape):
            split = split_param(name)
            if split is not None:
                out[name] = split
    return out


class Tables:
    """The families (user first, then built-in) and vocabularies, with their combined indexes."""

    _builtin: Tables | None = None

    def __init__(self, user: Sequence[Family]) -> None:
        self.families: tuple[Family, ...] = (*user, *FAMILIES)
        self.index = RuleIndex(self.families)
        self.vocab_index = RuleIndex(VOCABULARIES)
        self.block_words, self.mtp_words = container_words(
            [r.pattern for f in (*self.families, *VOCABULARIES) for r in f.rules]
        )
        self.keys = self.index.keys() | self.vocab_index.keys()
        heads = self.index.wild_heads() | self.vocab_index.wild_heads()
        self._wild = re.compile("|".join(re.escape(h) for h in sorted(heads))) if heads else None
        self._leaf: dict[str, bool] = {}
        self.leaves = Leaves(
            r.if_present
            for f in (*self.families, *VOCABULARIES)
            for r in f.rules
            if r.if_present is not None
        )
        """The relative names the rules' `if_present` asks about: what a light layout keeps the
        names of (`schema.Leaves`)."""

    def may_be_norm(self, base: str) -> bool:
        """False when no rule can match the name and its last component names no norm: the
        cheap test that keeps a header of 500k non-norm 1-D tensors out of the parser."""
        last = base.rsplit(".", 1)[-1]
        if last.isdigit() or last in LEAF_WRAPPERS:
            return True
        known = self._leaf.get(last)
        if known is None:
            known = self._leaf[last] = bool(last in self.keys or _NORMISH.search(last))
        return known or (self._wild is not None and self._wild.search(base) is not None)

    @classmethod
    def get(cls, rules: RuleSet | None) -> Tables:
        if rules:
            return cls(rules.families)
        if cls._builtin is None:
            cls._builtin = cls(())
        return cls._builtin


def if_ok(
    rule: NormRule,
    base: str,
    names: Mapping[str, Any],
    facts: ConfigFacts,
    stacks: Stacks | None = None,
) -> bool:
    """The rule's conditions hold for this norm (structural ones need `stacks`)."""
    if rule.if_block_type and facts.block_type not in rule.if_block_type:
        return False
    if rule.at_stack_end and (
        stacks is None
        or not (stacks.ends_here(base) if rule.role is Role.final else stacks.at_root(base))
    ):
        return False
    if rule.if_final_norm is not None and (
        stacks is None or stacks.pre_ln(base) is not rule.if_final_norm
    ):
        return False
    if rule.if_present is not None:
        parts = base.split(".")
        while len(parts) > 1 and parts[-1].isdigit():  # LongCat `post_attention_layernorm.1`
            parts.pop()
        return ".".join([*parts[:-1], rule.if_present]) in names
    return True


def _first(
    hits: Sequence[Hit],
    table: int,
    base: str,
    names: Mapping[str, Any],
    facts: ConfigFacts,
    stacks: Stacks | None,
) -> Hit | None:
    for hit in hits:
        if hit.table == table and if_ok(hit.rule, base, names, facts, stacks):
            return hit
    return None


@dataclass(slots=True)
class Parsed:
    name: str
    base: str
    site: Site
    index: int | None
    """The layer or MTP index of this name (`site.index` is that of the shared parse)."""


def parse_all(
    weights: Sequence[tuple[str, str]], tables: Tables, warnings: list[str], skipped: list[str]
) -> list[Parsed]:
    out = []
    cache = SiteCache(tables.block_words, tables.mtp_words)
    for name, base in weights:
        if not tables.may_be_norm(base):
            continue
        try:
            out.append(Parsed(name, base, *cache.parse(base)))
        except IndexTooLong as exc:
            # A report without this norm would be silently partial: refuse the checkpoint.
            raise ArchError(
                f"tensor '{name}' has a layer index of {exc.digits} digits: far beyond any "
                "model's layers, not a checkpoint normscope can read",
                hint="is the file corrupt, or was the name mangled by a conversion?",
            ) from None
    return out


def vocab_hit(
    site: Site,
    mtp_index: int | None,
    tables: Tables,
    base: str,
    names: Mapping[str, Any],
    facts: ConfigFacts,
    stacks: Stacks | None = None,
) -> Hit | None:
    """The first vocabulary rule reading this norm (MTP norms in their normalised form)."""
    if site.mtp or mtp_index is not None:
        local = site.local if site.mtp else mtp_local(site)
        forms = [f"mtp.0.{local}"] + [f"{c}.0.{local}" for c in MTP_BLOCK_CONTAINERS]
    else:
        forms = [site.template]
    # The generic vocabularies (any stack of blocks) come after every specific one in every
    # form: DeepSeek's `mtp.0.attn.q_norm` is the meta vocabulary's latent norm.
    fallback: Hit | None = None
    for form in forms:
        for hit in tables.vocab_index.hits(form):
            if if_ok(hit.rule, base, names, facts, stacks):
                if hit.table < GENERIC_FROM:
                    return hit
                fallback = fallback or hit
    return fallback


def mtp_base(
    family: Family | None, facts: ConfigFacts, parsed: Sequence[Parsed], warnings: list[str]
) -> int | None:
    """First trunk-layer index that is an MTP module (DeepSeek-V3, GLM, Step, MiniMax-M2 store
    MTP as layers N+k; trap 8-9): the first layer holding enorm/hnorm/shared_head norms, or,
    for families that say so or configs that advertise MTP, config's num_hidden_layers."""
    marked = set()
    top = -1
    for p in parsed:
        s = p.site
        if s.block == "layers" and p.index is not None:
            top = max(top, p.index)
            head = s.local.split(".", 1)[0]
            if head in MTP_MARKERS:
                marked.add(p.index)
    n = facts.num_layers
    if not marked:
        wants = (family is not None and family.mtp_in_layers) or bool(facts.mtp_depth)
        return n if wants and n is not None and top >= n else None
    first = min(marked)
    if n is not None and first != n:
        warnings.append(
            f"MTP tensors start at layer {first} but config.json says num_hidden_layers = "
            f"{n}; layers from {first} on are treated as MTP"
        )
    return first


def _sequential_gain(p: Parsed, ref: TensorRef) -> bool:
    """A 1-D `weight` of a Sequential member (`visual_projection.1.weight`, InternVL's
    `mlp1.0.weight`, SAM's `neck.1.weight`): a 1-D weight is an elementwise gain, a norm's in
    every transformers model (the model zoo holds no other); its role is unknown."""
    return len(ref.shape) == 1 and p.name.endswith(".weight") and p.base[-1:].isdigit()


def _fits(role: Role, width: int, numel: int, facts: ConfigFacts) -> bool:
    sizes = {width, numel}
    if role is Role.latent:
        return bool(sizes & {facts.q_lora_rank, facts.kv_lora_rank} - {None})
    if role is Role.qk:
        return bool(sizes & facts.qk_widths())
    if role is Role.linear_attn:
        return facts.linear_value_head_dim is not None and width == facts.linear_value_head_dim
    if role in _SUBLAYER_ROLES:
        return facts.hidden_size is not None and width == facts.hidden_size
    return False


def _by_width(rule: NormRule, ref: TensorRef, facts: ConfigFacts) -> Role:
    """The rule's role, unless exactly one of its alternatives has the norm's width."""
    if not rule.alt_roles or not ref.shape:
        return rule.role
    width = ref.shape[-1]
    fitting = [r for r in (rule.role, *rule.alt_roles) if _fits(r, width, ref.numel, facts)]
    return fitting[0] if len(fitting) == 1 else rule.role


def _guess_by_width(shape: tuple[int, ...], facts: ConfigFacts) -> Role | None:
    """A norm no rule names: latent or QK when its width says so and nothing else fits."""
    if not shape:
        return None
    width, numel = shape[-1], math.prod(shape)
    fits = [r for r in (Role.latent, Role.qk, Role.attn_input) if _fits(r, width, numel, facts)]
    return fits[0] if len(fits) == 1 and fits[0] is not Role.attn_input else None


def _fill(patterns: tuple[str, ...], layer: int | None, mtp: int | None) -> tuple[str, ...]:
    """Rule patterns with the norm's indices filled in. NOTE: no wrapper prefix is prepended:
    a consumer may sit above it (`lm_head` beside `model.`), so fold anchors each pattern at
    the norm's ancestors (`fold.consumers`)."""
    out = []
    for p in patterns:
        if layer is not None:
            p = p.replace("{L}", str(layer))
        if mtp is not None:
            p = p.replace("{M}", str(mtp))
        out.append(p)
    return tuple(out)


@dataclass
class Context:
    facts: ConfigFacts
    family: Family | None
    override: Parametrization | None
    mtp_base: int | None
    biases: Mapping[str, str]
    tensors: Mapping[str, TensorRef]
    tables: Tables
    stacks: Stacks | None = None
    guesses: dict[tuple[int, ...], Role | None] = field(default_factory=dict)
    inference: Inference | None = None
    """Roles from structure (`infer.py`), for the norms no rule or vocabulary names."""

    def __post_init__(self) -> None:
        if self.inference is None:
            self.inference = Inference(self.tensors, self.stacks)


def resolve(p: Parsed, ctx: Context) -> NormInfo | None:
    """What one candidate gain is, or None when it is no norm."""
    site = p.site
    in_mtp_layer = (
        ctx.mtp_base is not None
        and site.block == "layers"
        and p.index is not None
        and p.index >= ctx.mtp_base
    )
    hit, vocabulary = _hit(p, ctx, in_mtp_layer)
    found = _rule_and_role(p, ctx, hit)
    if found is None:
        return None
    rule, role, recognised, how = found
    mtp, depth, layer = _placement(p, ctx, rule, hit, in_mtp_layer)
    param = _parametrization(site, rule, ctx)
    if hit is None:
        rule_name = how
    elif vocabulary is not None:
        rule_name = f"vocab:{vocabulary}:{hit.rule.pattern}"
    else:
        rule_name = f"{ctx.tables.families[hit.table].name}:{hit.rule.pattern}"
    mtp_index = depth - 1 if depth is not None else None
    return NormInfo(
        name=p.name,
        module=Module.mtp if mtp else Module.main,
        mtp_depth=depth,
        layer=layer,
        role=role,
        group=(rule.group if rule is not None and rule.group else None) or default_group(role),
        parametrization=param,
        tower=tower_of(p.base),
        stack=stack_of(p.base),
        bias_name=ctx.biases.get(p.base),
        rule=rule_name,
        consumers=_fill(rule.consumers, p.index, mtp_index) if rule else (),
        producers=_fill(rule.producers, p.index, mtp_index) if rule else (),
        vocabulary=vocabulary,
        recognised=recognised,
        pinned=rule is not None and rule.parametrization is not None,
    )


def _hit(p: Parsed, ctx: Context, in_mtp_layer: bool) -> tuple[Hit | None, str | None]:
    """The rule that reads the name: the family's table first, then the naming vocabularies
    (in every tower); the vocabulary's name when one of them did."""
    site, facts = p.site, ctx.facts
    hit: Hit | None = None
    if ctx.family is not None:
        t = ctx.tables.families.index(ctx.family)
        hit = _first(
            ctx.tables.index.hits(site.template), t, p.base, ctx.tensors, facts, ctx.stacks
        )
    if hit is None:
        mtp_index = 0 if in_mtp_layer else None
        hit = vocab_hit(site, mtp_index, ctx.tables, p.base, ctx.tensors, facts, ctx.stacks)
        if hit is not None:
            return hit, VOCABULARIES[hit.table].name
    return hit, None


def _rule_and_role(
    p: Parsed, ctx: Context, hit: Hit | None
) -> tuple[NormRule | None, Role, bool, str] | None:
    """The rule, the role, whether the norm was recognised and how (no rule: `width`,
    `structure`, `vision`, `generic`); None for no norm at all. A norm-looking name no rule
    reads is placed by its width where that is unambiguous, else by the structure around it."""
    site, ref = p.site, ctx.tensors[p.name]
    if hit is not None:
        return hit.rule, _by_width(hit.rule, ref, ctx.facts), True, "rule"
    if not (_NORMISH.search(site.leaf) or _sequential_gain(p, ref)):
        return None
    if p.index is not None:
        if ref.shape not in ctx.guesses:
            ctx.guesses[ref.shape] = _guess_by_width(ref.shape, ctx.facts)
        guess = ctx.guesses[ref.shape]
        if guess is not None:
            return None, guess, True, "width"
    if ctx.inference is not None:
        inferred = ctx.inference.role(p.base, ref.shape[-1] if ref.shape else None)
        if inferred is not None:
            return None, inferred, True, "structure"
    if site.vision:
        return None, Role.unknown, True, "vision"
    return None, Role.unknown, False, "generic"


def _placement(
    p: Parsed, ctx: Context, rule: NormRule | None, hit: Hit | None, in_mtp_layer: bool
) -> tuple[bool, int | None, int | None]:
    """Module (MTP or not), MTP depth and layer: from the rule, else from the name's structure."""
    site = p.site
    mtp = (rule is not None and rule.module is Module.mtp) or site.mtp or in_mtp_layer
    if rule is not None and rule.module is Module.main:
        mtp = False
    depth: int | None = None
    layer: int | None = None
    if mtp:
        if rule is not None and rule.mtp_depth is not None:
            depth = rule.mtp_depth
        elif site.mtp:
            depth = (p.index or 0) + 1
        elif in_mtp_layer and p.index is not None and ctx.mtp_base is not None:
            depth = p.index - ctx.mtp_base + 1
        else:
            depth = (p.index or 0) + 1 if hit is not None and hit.index_kind else 1
    elif not site.vision and site.block is not None:
        layer = p.index
    return mtp, depth, layer


def _parametrization(site: Site, rule: NormRule | None, ctx: Context) -> Parametrization:
    """Per tensor: the override, vision towers standard, the rule, config.json, the family."""
    if ctx.override is not None:
        return ctx.override
    if site.vision:
        return STD
    if rule is not None and rule.parametrization is not None:
        return rule.parametrization
    if ctx.facts.parametrization is not None:
        return ctx.facts.parametrization
    if ctx.family is not None:
        return ctx.family.parametrization
    return STD
