"""Classify every norm of a checkpoint: which family, then per tensor the role, module, MTP depth,
layer and parametrization.

One pass over the tensors finds the candidates (1-D gains, 2-D per-head gains); each candidate's
name is parsed once (`vocab.parse_site`) and its template looked up in one combined index of all
rules (`rules.RuleIndex`), so the cost is linear in the number of tensors whatever the number of
families. Precedence, per tensor:

- role: the user's or the chosen family's rules, then a vision tower (standard, role unknown), then
  the naming vocabularies, then widths from config.json (a q/kv_lora_rank-wide norm is latent, a
  head_dim-wide one QK), else `unknown` (and listed in `Classification.unknown`);
- parametrization: `parametrization=` override > the rule's pinned value > a zero-centred flag in
  config.json > the family's default > standard. Vision towers are standard.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from normscope.arch.config import ConfigFacts, model_types, read_config
from normscope.arch.resolve import (
    STD,
    Context,
    Parsed,
    Tables,
    candidates,
    default_group,
    if_ok,
    mtp_base,
    parse_all,
    resolve,
    split_param,
    vocab_hit,
)
from normscope.arch.rules import Family, RuleSet
from normscope.arch.structure import Stacks
from normscope.arch.vocab import VOCABULARIES
from normscope.errors import ArchError
from normscope.schema import Leaves, NormInfo, Parametrization, Role, TensorRef, Tower

__all__ = [
    "Classification",
    "choose_family",
    "classify",
    "default_group",
    "present_leaves",
    "split_param",
]


@dataclass
class Classification:
    """The norms of a checkpoint and what the architecture rules say about the model."""

    family: str
    norms: list[NormInfo]
    num_layers: int | None
    mtp_depth: int
    warnings: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    """Norms no rule, vocabulary or width could place: measured with role `unknown`. A gate
    must not vouch for a model with any (vision towers and rules that say `unknown` on purpose,
    such as the V3.2 indexer norm, are not listed)."""
    expects_final_norm: bool = True
    """False for encoders without a final norm (BERT): a missing final norm is then no gap."""
    vocabularies: dict[str, int] = field(default_factory=dict)
    """Norms read by each naming vocabulary (names the family table does not list)."""
    skipped: list[str] = field(default_factory=list)
    """Tensors left out (an index too long to be a layer), each with a warning."""
    facts: ConfigFacts = field(default_factory=lambda: read_config(None))
    """What config.json says (read once per scan: the scan's model info comes from here)."""


def _select(
    config: Mapping[str, Any] | None,
    facts: ConfigFacts,
    parsed: Sequence[Parsed],
    tables: Tables,
    names: Mapping[str, Any],
) -> tuple[Family | None, list[str]]:
    warnings: list[str] = []
    for model_type in model_types(config):
        for family in tables.families:
            if model_type in family.model_types:
                return family, warnings
    for arch in facts.architectures:
        for family in tables.families:
            if arch in family.architectures:
                return family, warnings
    # No usable config: the family whose own rules read the most gain tensors wins (ties: first,
    # user families before built-in ones), unless a naming vocabulary reads more.
    counts: Counter[int] = Counter()
    vocab_read = 0
    for p in parsed:
        hits = tables.index.hits(p.site.template)
        seen = {h.table for h in hits if if_ok(h.rule, p.base, names, facts)}
        counts.update(seen)
        if vocab_hit(p.site, None, tables, p.base, names, facts) is not None:
            vocab_read += 1
    if not counts:
        return None, warnings
    best_count = max(counts.values())
    best_t = min(t for t, c in counts.items() if c == best_count)
    if vocab_read > best_count:
        return None, warnings
    best = tables.families[best_t]
    said = f"model_type '{facts.model_type}'" if facts.model_type else "no usable config.json"
    message = f"architecture not recognised ({said}); tensor names match the '{best.name}' rules"
    for t, c in sorted(counts.items()):
        other = tables.families[t]
        if c == best_count and other.parametrization is not best.parametrization:
            message += (
                f", and the '{other.name}' rules (offset/standard differ) fit as well: gains "
                f"are read as {best.parametrization.value}; pass --parametrization if wrong"
            )
            break
    warnings.append(message)
    return best, warnings


def choose_family(
    config: Mapping[str, Any] | None,
    tensors: Mapping[str, TensorRef],
    rules: RuleSet | None = None,
) -> tuple[Family | None, list[str]]:
    """Pick the family from the config, else from the tensor names; None means generic (the
    naming vocabularies read the names)."""
    facts = read_config(config)
    weights = [(n, b) for n, (b, p) in candidates(tensors).items() if p == "weight"]
    tables = Tables.get(rules)
    return _select(config, facts, parse_all(weights, tables, [], []), tables, tensors)


def _said(facts: ConfigFacts) -> str:
    return f"model_type '{facts.model_type}'" if facts.model_type else "no usable config.json"


def _mtp_claim(
    facts: ConfigFacts, found: int, tensors: Mapping[str, TensorRef], warnings: list[str]
) -> None:
    """Compare the MTP depth config.json advertises with the MTP norms found (trap 12)."""
    if facts.mtp_depth is None or facts.mtp_depth == found:
        return
    if found:
        warnings.append(
            f"config.json advertises {facts.mtp_depth} MTP depth(s) but the checkpoint holds "
            f"norms of {found}"
        )
        return
    # Only say "dropped" when no tensor looks like an MTP module at all (checked once, on the
    # rare path where the config advertises MTP and no MTP norm was read).
    looks = next((n for n in tensors if "mtp" in n or "eh_proj" in n or "nextn" in n), None)
    if looks is None:
        warnings.append(
            f"config.json advertises {facts.mtp_depth} MTP depth(s) but the checkpoint holds "
            "no MTP norms (Hugging Face re-saves drop MTP weights)"
        )
    else:
        warnings.append(
            f"config.json advertises {facts.mtp_depth} MTP depth(s) and the checkpoint has MTP "
            f"tensors (e.g. '{looks}'), but none of their norms was recognised"
        )


def _text_vocabularies(norms: Sequence[NormInfo]) -> Counter[str]:
    """Norms read by each vocabulary; another tower's are the expected case, not counted."""
    return Counter(n.vocabulary for n in norms if n.vocabulary and n.tower is Tower.text)


def _stacks(parsed: Sequence[Parsed]) -> Stacks:
    """The stacks of blocks the parsed names hold (`structure.Stacks`)."""
    return Stacks.read(
        {p.site.prefix + p.site.block for p in parsed if p.site.block is not None},
        [p.base for p in parsed if p.site.block is None and not p.site.mtp],
        [p.base for p in parsed if p.site.block is not None],
    )


def _one_stack_is_none(norms: list[NormInfo]) -> list[NormInfo]:
    """`stack` tells an encoder-decoder's stacks apart; a decoder-only model whose blocks sit
    under `decoder.layers` (Megatron, OPT) has one stack: no field to fill."""
    if len({n.stack for n in norms if n.stack is not None}) >= 2:
        return norms
    return [dataclasses.replace(n, stack=None) if n.stack else n for n in norms]


def classify(
    tensors: Mapping[str, TensorRef],
    config: Mapping[str, Any] | None,
    parametrization: Parametrization | None = None,
    *,
    rules: RuleSet | None = None,
    family_note: bool = True,
) -> Classification:
    """Find and classify every norm of a checkpoint.

    `parametrization`, when given, overrides the rules for every norm (e.g. Megatron runs with
    --apply-layernorm-1p, or a converter that baked +1 into offset gains). `rules` adds user
    families (`load_rules`), tried before the built-in ones. `family_note=False`: the source
    warned what it knows of the parametrization; the family's note is not repeated."""
    facts = read_config(config)
    tables = Tables.get(rules)
    warnings: list[str] = []
    skipped: list[str] = []
    found = candidates(tensors)
    biases = {base: name for name, (base, p) in found.items() if p == "bias"}
    weights = [(name, base) for name, (base, p) in found.items() if p == "weight"]
    parsed = parse_all(weights, tables, warnings, skipped)
    family, chosen = _select(config, facts, parsed, tables, tensors)
    warnings[:0] = chosen
    if family_note and parametrization is None:
        warnings += _family_note(family, facts)
    ctx = Context(
        facts=facts,
        family=family,
        override=parametrization,
        mtp_base=mtp_base(family, facts, parsed, warnings),
        biases=biases,
        tensors=tensors,
        tables=tables,
        stacks=_stacks(parsed),
    )
    norms = _one_stack_is_none([info for p in parsed if (info := resolve(p, ctx)) is not None])
    if not norms:
        raise ArchError(
            f"no norm tensors found among {len(tensors)} tensors",
            hint="is this a model checkpoint? (optimizer states and OLMo-1 have no norm gains)",
        )
    vocabularies = _text_vocabularies(norms)
    unknown = [n.name for n in norms if not n.recognised]
    warnings += _reading_warnings(norms, family, facts, parametrization, vocabularies, unknown)
    depths = {n.mtp_depth for n in norms if n.mtp_depth is not None}
    mtp_depth = max(depths, default=0)
    _mtp_claim(facts, mtp_depth, tensors, warnings)
    return Classification(
        family=family.name if family else "generic",
        norms=norms,
        num_layers=_num_layers(facts, norms),
        mtp_depth=mtp_depth,
        warnings=warnings,
        unknown=unknown,
        expects_final_norm=_expects_final_norm(family, vocabularies, norms),
        vocabularies=dict(vocabularies),
        skipped=skipped,
        facts=facts,
    )


def _family_note(family: Family | None, facts: ConfigFacts) -> list[str]:
    """The family's note on what its checkpoints leave unsaid, where no config signal says it."""
    if family is None or not family.note or facts.parametrization is not None:
        return []
    return [family.note]


def _reading_warnings(
    norms: Sequence[NormInfo],
    family: Family | None,
    facts: ConfigFacts,
    parametrization: Parametrization | None,
    vocabularies: Counter[str],
    unknown: Sequence[str],
) -> list[str]:
    """How the norms were read: by naming vocabularies, with config.json's parametrization,
    placed by their width alone, or not recognised at all."""
    warnings = []
    signal = facts.parametrization
    guessed = [n.name for n in norms if n.rule == "width"]
    placed = [n.name for n in norms if n.rule == "structure"]
    if vocabularies:
        used = ", ".join(f"'{v}' ({c})" for v, c in vocabularies.most_common())
        example = next(n.name for n in norms if n.vocabulary is not None)
        if family is None:
            warnings.append(
                f"architecture not recognised ({_said(facts)}); tensor names read with the naming "
                f"vocabulary {used}"
            )
        else:
            warnings.append(
                f"{sum(vocabularies.values())} norm(s) the '{family.name}' rules do not list were "
                f"read with the naming vocabulary {used}, e.g. '{example}'"
            )
    if signal is not None and parametrization is None:
        default = family.parametrization if family is not None else STD
        if signal is not default or family is None:
            warnings.append(
                f"config.json sets {facts.parametrization_key}: norms read as {signal.value}"
                + (" (1 + w)" if signal is Parametrization.offset else "")
                + " except vision towers and norms pinned by their rule"
            )
    if guessed:
        warnings.append(
            f"{len(guessed)} norm(s) placed by their width alone (config.json q/kv_lora_rank or "
            f"head_dim), e.g. '{guessed[0]}'"
        )
    if placed:
        warnings.append(
            f"{len(placed)} norm(s) no rule names placed by the structure around them (the "
            f"sublayers beside them and the words of their names), e.g. '{placed[0]}'"
        )
    if unknown:
        param = (parametrization or signal or (family.parametrization if family else STD)).value
        if family is None and not vocabularies:
            warnings.append(
                f"unknown architecture ({_said(facts)}): {len(unknown)} norm-looking tensors "
                f"measured with role 'unknown' and {param} parametrization"
            )
        else:
            table = f"'{family.name}' rule" if family else "rule"
            warnings.append(
                f"{len(unknown)} norm-looking tensor(s) match no {table} or naming vocabulary; "
                f"measured with role 'unknown' and {param} parametrization, e.g. '{unknown[0]}'"
            )
    return warnings


def _num_layers(facts: ConfigFacts, norms: Sequence[NormInfo]) -> int | None:
    """config.json's depth, else one more than the highest layer index of a norm."""
    layers = {n.layer for n in norms if n.layer is not None}
    if facts.num_layers is None and layers:
        return max(layers) + 1
    return facts.num_layers


_POST_LN = {Role.attn_output, Role.mlp_output, Role.cross_attn_output}
_PRE_LN = {Role.attn_input, Role.mlp_input, Role.cross_attn_input}


def _expects_final_norm(
    family: Family | None, vocabularies: Counter[str], norms: Sequence[NormInfo]
) -> bool:
    """Whether the family (or every naming vocabulary the names were read with) has one; not
    when the text model's blocks were read as post-LN (BART, Marian: their sublayer norms are
    output norms because no stack ends in a final norm), whose last block norm is the last;
    not when every norm was placed and no text block holds one (parameter-free block norms:
    NeoMME)."""
    if family is not None:
        return family.final_norm
    text = [n for n in norms if n.tower is Tower.text and n.layer is not None]
    if norms and not text and all(n.role is not Role.unknown for n in norms):
        return False  # every norm placed, none in a text block (NeoMME's are parameter-free)
    roles = {n.role for n in text}
    if roles & _POST_LN and not roles & _PRE_LN and not any(n.role is Role.final for n in norms):
        return False
    read = [v for v in VOCABULARIES if v.name in vocabularies and v.name != "mtp"]
    return all(v.final_norm for v in read)


def present_leaves(rules: RuleSet | None = None) -> Leaves:
    """The relative tensor names the rules' `if_present` conditions ask about (the built-in
    families and vocabularies, and `rules`): what a scan's light layout keeps the names of."""
    return Tables.get(rules).leaves
