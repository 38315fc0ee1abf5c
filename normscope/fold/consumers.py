"""Which matrices read each norm's output (consumers), or write its input (producers).

Resolution is by name structure and role, not by family tables: a norm's block prefix (the name
up to its own leaf) plus the leaf names each role feeds across the naming vocabularies seen in
docs/architectures.md (HF transformers, DeepSeek's official inference names, Megatron-Core and
Transformer Engine, GPT-2 Conv1D, BERT post-LN). The consumers/producers a rule names
(`NormInfo.consumers`: patterns of the rule grammar — `(a|b)`, `(x.)?`, `{ANY}` — matched as
anchored regular expressions, `.weight` optional, at the norm's nearest ancestor where any
matches) win over the generic resolution; role logic still applies to them (the half of an MTP
projection, routed-expert sampling, GPT-2's Conv1D axis).

Pure: tensor names and shapes in, `Plan`s out; no I/O, no torch.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from normscope.enums import Closed
from normscope.fold.names import Names, ancestors, consumer_regex
from normscope.fold.names import base as base_of
from normscope.fold.names import parent as parent_of
from normscope.fold.options import ExpertChoice
from normscope.schema import NormInfo, Role, TensorRef

__all__ = ["Axis", "ExpertChoice", "Half", "Part", "Plan", "consumer_regex", "plan_all"]


class Axis(Closed):
    """Which axis of a stored 2-D matrix indexes the norm's channels."""

    cols = "cols"
    """A linear layer reading the norm (W[out, in]), or a Conv1D writing it (GPT-2 c_proj)."""
    rows = "rows"
    """A linear layer writing the norm's input (producers), or a Conv1D reading it (GPT-2)."""


class Half(Closed):
    """Which input of an MTP projection a column range belongs to."""

    embedding = "embedding"
    hidden = "hidden"


@dataclass(frozen=True, slots=True)
class Part:
    """One matrix (or a column range of it) that reads or writes one norm's channels."""

    tensor: str
    axis: Axis
    span: tuple[int, int] | None = None
    """Range of the reduced vector that belongs to this norm (MTP halves); None: all of it."""
    half: Half | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """What one norm is folded against."""

    info: NormInfo
    consumers: tuple[Part, ...] = ()
    producers: tuple[Part, ...] = ()
    not_applicable: bool = False
    reason: str | None = None
    """Why nothing was found (or why it does not apply)."""
    experts_sampled: int | None = None
    experts_total: int | None = None
    unmatched: tuple[str, ...] = ()
    """The rule's consumer/producer patterns when none matched a tensor (names decided)."""


# --- leaf vocabularies -----------------------------------------------------------------------
_ATTN_MOD = r"(?:self_attn|attn|attention|self_attention|linear_attn|mixer)"
_ATTN_LEAF = (
    r"(?:q_proj|k_proj|v_proj|qkv_proj|query_key_value|W_pack|wqkv|c_attn|q_a_proj"
    r"|kv_a_proj_with_mqa|wq|wk|wv|wq_a|wkv_a|linear_qkv|linear_q_proj|linear_q_down_proj"
    r"|linear_kv_down_proj|in_proj|in_proj_qkvz|in_proj_ba|in_proj_qkv|in_proj_z|in_proj_a"
    r"|in_proj_b|g_proj|query|key|value)"
)
# DeepSeek-V3.2's sparse-attention indexer reads the normed hidden state too (wk, weights_proj).
_ATTN = re.compile(
    rf"^{_ATTN_MOD}\.(?:{_ATTN_LEAF}|indexer\.(?:wk|weights_proj))\.weight$|"
    r"^attention\.self\.(?:query|key|value)\.weight$"
)
_MLP_MOD = r"(?:mlp|feed_forward|ffn|block_sparse_moe)"
_MLP_LEAF = r"(?:gate_proj|up_proj|gate_up_proj|c_fc|fc1|dense_h_to_4h|w1|w3|linear_fc1)"
_MLP_DENSE = re.compile(
    rf"^{_MLP_MOD}\.(?:shared_experts?\.)?{_MLP_LEAF}\.weight$|^intermediate\.dense\.weight$"
)
_ROUTER = re.compile(rf"^{_MLP_MOD}\.(?:gate|router|shared_expert_gate)\.weight$")
_EXPERT = re.compile(
    rf"^(?P<group>{_MLP_MOD}\.experts\.(?:local_experts\.)?)(?P<e>\d+)\.{_MLP_LEAF}\.weight$"
    rf"|^(?P<tgroup>{_MLP_MOD}\.experts\.linear_fc1\.weight)(?P<te>\d+)$"
)
_ATTN_OUT = re.compile(rf"^{_ATTN_MOD}\.(?:o_proj|dense|c_proj|wo|linear_proj|out_proj)\.weight$")
_MLP_OUT_LEAF = r"(?:down_proj|c_proj|fc2|dense_4h_to_h|w2|linear_fc2)"
_MLP_OUT = re.compile(rf"^{_MLP_MOD}\.(?:shared_experts?\.)?{_MLP_OUT_LEAF}\.weight$")
_EXPERT_OUT = re.compile(
    rf"^(?P<group>{_MLP_MOD}\.experts\.(?:local_experts\.)?)(?P<e>\d+)\.{_MLP_OUT_LEAF}\.weight$"
)
# Latent norms (MLA): the up-projection reading the compressed latent, in each vocabulary.
_LATENT = {
    "q_a_layernorm": ("q_b_proj",),
    "kv_a_layernorm": ("kv_b_proj",),
    "q_norm": ("wq_b",),  # DeepSeek official inference naming
    "kv_norm": ("wkv_b",),
    "q_layernorm": ("linear_q_up_proj",),  # Megatron MLA, unfused
    "kv_layernorm": ("linear_kv_up_proj",),
}
_HEADS = ("lm_head", "output", "head", "output_layer", "embed_out")
_TIED = ("embed_tokens", "wte", "embedding.word_embeddings", "tok_embeddings", "embed")
_MTP_PROJ = ("eh_proj", "fc", "input_proj")
# Names that say which role an unclassified norm plays (DeepSeek official `attn_norm`/`ffn_norm`).
_LEAF_ROLE = {
    "attn_norm": Role.attn_input,
    "attention_norm": Role.attn_input,
    "ffn_norm": Role.mlp_input,
    "mlp_norm": Role.mlp_input,
}
# MiMo concatenates [hidden | embedding] (vllm mimo_mtp.py @0bb55d6); every other family the
# other way round (docs/architectures.md#traps, trap 11).
HIDDEN_FIRST_FAMILIES = frozenset({"mimo"})
_CONV1D_FAMILIES = frozenset({"gpt2"})


def plan_all(
    norms: Sequence[NormInfo],
    tensors: Mapping[str, TensorRef],
    family: str,
    experts: ExpertChoice,
) -> list[Plan]:
    """A `Plan` for every norm: its consumers (input norms) or producers (output norms)."""
    names = Names(tensors)
    conv1d = family in _CONV1D_FAMILIES
    blocks_with_mlp_norm = {parent_of(base_of(n.name)) for n in norms if n.role is Role.mlp_input}
    ctx = _Context(names, family, experts, conv1d, blocks_with_mlp_norm)
    return [_checked(_plan(info, ctx), tensors, conv1d) for info in norms]


@dataclass(frozen=True, slots=True)
class _Context:
    """What every norm's resolution shares: the names, the family and the choices."""

    names: Names
    family: str
    experts: ExpertChoice
    conv1d: bool
    blocks_with_mlp_norm: set[str]

    @property
    def cons_axis(self) -> Axis:
        return Axis.rows if self.conv1d else Axis.cols

    @property
    def prod_axis(self) -> Axis:
        return Axis.cols if self.conv1d else Axis.rows


def _plan(info: NormInfo, ctx: _Context) -> Plan:
    base = base_of(info.name)
    if info.role is Role.qk:
        return Plan(info, not_applicable=True, reason="QK norms feed no linear map")
    declared = _declared(info, ctx.names, base, ctx.experts, ctx.cons_axis, ctx.prod_axis)
    if declared is not None:
        if info.role in (Role.mtp_embedding, Role.mtp_hidden):
            tensors = ctx.names.tensors
            return _mtp_input(info, base, parent_of(base), tensors, ctx.family, declared.consumers)
        return declared
    plan = _by_name(info, ctx)
    patterns = (*info.consumers, *info.producers)
    return dataclasses.replace(plan, unmatched=patterns) if patterns else plan


def _by_name(info: NormInfo, ctx: _Context) -> Plan:
    """The generic resolution: the block's names in each vocabulary, by role."""
    tensors = ctx.names.tensors
    base = base_of(info.name)
    parent = parent_of(base)
    leaf = base.rsplit(".", 1)[-1]
    if info.name.endswith(".layer_norm_weight"):
        # Transformer Engine's LayerNormLinear: the norm feeds exactly the linear map it is
        # fused into, `<module>.weight` beside `<module>.layer_norm_weight` (in a layer-stacked
        # save, both are presented per layer, so this is the layer's slice).
        target = base + ".weight"
        if target in tensors:
            return Plan(info, consumers=(Part(target, ctx.cons_axis),))
    role = _role_by_leaf(info.role, leaf, parent, tensors)
    if ctx.family == "bert" or base.endswith("LayerNorm"):
        bert = _bert(info, base, tensors)
        if bert is not None:
            return bert
    if role in (Role.attn_input, Role.mlp_input):
        return _block_input(info, role, parent, ctx)
    if role is Role.latent:
        missing = f"no up-projection beside '{base}'"
        return _beside(info, parent, tensors, _LATENT.get(leaf, ()), missing)
    if role is Role.linear_attn:
        outs = ("out_proj", "linear_proj", "o_proj")
        return _beside(info, parent, tensors, outs, f"no out_proj beside '{base}'")
    if role in (Role.final, Role.mtp_final):
        return _head(info, base, parent, tensors, ctx.cons_axis)
    if role in (Role.mtp_embedding, Role.mtp_hidden):
        return _mtp_input(info, base, parent, tensors, ctx.family)
    if role in (Role.attn_output, Role.mlp_output):
        return _block_output(info, role, parent, ctx)
    return Plan(info, reason=f"role '{info.role.value}' has no known consumer")


def _role_by_leaf(role: Role, leaf: str, parent: str, tensors: Mapping[str, TensorRef]) -> Role:
    """An unclassified norm's role from its own name, where that is unambiguous."""
    if role is not Role.unknown:
        return role
    role = _LEAF_ROLE.get(leaf, role)
    if leaf in ("q_norm", "kv_norm") and not any(
        parent + c + ".weight" in tensors for c in _LATENT[leaf]
    ):
        role = Role.unknown
    elif leaf in ("q_norm", "kv_norm"):
        role = Role.latent
    return role


def _block_input(info: NormInfo, role: Role, parent: str, ctx: _Context) -> Plan:
    """An attention or MLP input norm: the projections of its block that read its output."""
    axis, with_mlp_norm = ctx.cons_axis, ctx.blocks_with_mlp_norm
    rel = [n[len(parent) :] for n in ctx.names.under(parent)]
    parts = [Part(parent + r, axis) for r in rel if _wants(role, r)]
    if role is Role.attn_input and parent not in with_mlp_norm:
        # Parallel block (Phi-2, Cohere, GPT-J): one norm feeds attention and MLP.
        parts += [Part(parent + r, axis) for r in rel if _wants(Role.mlp_input, r)]
    sample: tuple[int, int] | None = None
    if role is Role.mlp_input or parent not in with_mlp_norm:
        routed, sample = _experts(parent, rel, ctx.experts, _EXPERT)
        parts += [Part(n, axis) for n in routed]
    return Plan(
        info,
        consumers=tuple(parts),
        reason=None if parts else f"no attention/MLP weights under '{parent}'",
        experts_sampled=sample[0] if sample else None,
        experts_total=sample[1] if sample else None,
    )


def _block_output(info: NormInfo, role: Role, parent: str, ctx: _Context) -> Plan:
    """An attention or MLP output norm: the projections of its block that write its input."""
    rel = [n[len(parent) :] for n in ctx.names.under(parent)]
    pattern = _ATTN_OUT if role is Role.attn_output else _MLP_OUT
    parts = [Part(parent + r, ctx.prod_axis) for r in rel if pattern.match(r)]
    sample = None
    if role is Role.mlp_output:
        routed, sample = _experts(parent, rel, ctx.experts, _EXPERT_OUT)
        parts += [Part(n, ctx.prod_axis) for n in routed]
    return Plan(
        info,
        producers=tuple(parts),
        reason=None if parts else f"no output projection under '{parent}'",
        experts_sampled=sample[0] if sample else None,
        experts_total=sample[1] if sample else None,
    )


def _beside(
    info: NormInfo,
    parent: str,
    tensors: Mapping[str, TensorRef],
    candidates: Sequence[str],
    missing: str,
) -> Plan:
    """The first of `candidates` beside the norm that exists, read along its columns."""
    for c in candidates:
        if parent + c + ".weight" in tensors:
            return Plan(info, consumers=(Part(parent + c + ".weight", Axis.cols),))
    return Plan(info, reason=missing)


def _wants(role: Role, rel: str) -> bool:
    if role is Role.attn_input:
        return bool(_ATTN.match(rel))
    return bool(_MLP_DENSE.match(rel) or _ROUTER.match(rel))


def _experts(
    parent: str, rel: Sequence[str], choice: ExpertChoice, pattern: re.Pattern[str]
) -> tuple[list[str], tuple[int, int] | None]:
    """Routed-expert matrices under `parent`, sampled; (names, (sampled, total)) or no sample."""
    by_expert: dict[tuple[str, int], list[str]] = {}
    for r in rel:
        m = pattern.match(r)
        if m is None:
            continue
        group = m.group("group") or m.groupdict().get("tgroup") or ""
        e = m.group("e") if m.group("e") is not None else m.groupdict().get("te")
        by_expert.setdefault((group, int(e or 0)), []).append(parent + r)
    if not by_expert:
        return [], None
    groups = sorted({g for g, _ in by_expert})
    total = max(sum(1 for g2, _ in by_expert if g2 == g) for g in groups)
    chosen = set(choice.pick(total))
    picked = sorted(n for (g, e), ns in by_expert.items() if e in chosen for n in ns)
    return picked, (len(chosen), total)


def _declared(
    info: NormInfo,
    names: Names,
    base: str,
    experts: ExpertChoice,
    cons_axis: Axis,
    prod_axis: Axis,
) -> Plan | None:
    """The consumers/producers the architecture rules name, when any pattern matches."""
    parent = parent_of(base)
    found: dict[str, list[str]] = {}
    for field_name in ("consumers", "producers"):
        hits: list[str] = []
        for pattern in getattr(info, field_name, ()) or ():
            for prefix in ancestors(parent):  # the nearest ancestor that holds a match
                matched = names.matching(prefix, pattern)
                if matched:
                    hits += [m for m in matched if m not in hits]
                    break
        found[field_name] = hits
    if not found["consumers"] and not found["producers"]:
        return None
    # Routed experts among the matches are sampled as the generic resolution samples them.
    consumers, c_sample = _sampled(parent, found["consumers"], experts, _EXPERT)
    producers, p_sample = _sampled(parent, found["producers"], experts, _EXPERT_OUT)
    sample = c_sample or p_sample
    return Plan(
        info,
        consumers=tuple(Part(n, cons_axis) for n in consumers),
        producers=tuple(Part(n, prod_axis) for n in producers),
        experts_sampled=sample[0] if sample else None,
        experts_total=sample[1] if sample else None,
    )


def _sampled(
    parent: str, hits: list[str], experts: ExpertChoice, pattern: re.Pattern[str]
) -> tuple[list[str], tuple[int, int] | None]:
    routed = [h for h in hits if h.startswith(parent) and pattern.match(h[len(parent) :])]
    if not routed:
        return hits, None
    picked, sample = _experts(parent, [h[len(parent) :] for h in routed], experts, pattern)
    return [h for h in hits if h not in routed] + picked, sample


def _head(
    info: NormInfo, base: str, parent: str, tensors: Mapping[str, TensorRef], axis: Axis
) -> Plan:
    """The output head reading a final norm: its own (MTP shared_head.head), else the model's."""
    if info.role is Role.mtp_final:
        for c in ("head", "output"):
            if parent + c + ".weight" in tensors:
                return Plan(info, consumers=(Part(parent + c + ".weight", Axis.cols),))
    for names in (_HEADS, _TIED):  # an untied head first, then the tied embedding
        for prefix in ancestors(parent):
            for c in names:
                if prefix + c + ".weight" in tensors:
                    # Conv1D models store Linear-shaped heads and embeddings: always columns.
                    return Plan(info, consumers=(Part(prefix + c + ".weight", Axis.cols),))
    del axis
    return Plan(info, reason=f"no output head (lm_head or tied embeddings) for '{base}'")


def _mtp_input(
    info: NormInfo,
    base: str,
    parent: str,
    tensors: Mapping[str, TensorRef],
    family: str,
    declared: Sequence[Part] = (),
) -> Plan:
    """The half of the MTP input projection that reads enorm's (or hnorm's) output: of the
    projection the rules name (`declared`), else of the one found by name."""
    half = Half.embedding if info.role is Role.mtp_embedding else Half.hidden
    first = Half.hidden if family in HIDDEN_FIRST_FAMILIES else Half.embedding
    for part in declared:
        shape = tensors[part.tensor].shape
        if len(shape) == 2:
            cols = shape[1]
            span = (0, cols // 2) if half is first else (cols // 2, cols)
            return Plan(info, consumers=(Part(part.tensor, Axis.cols, span=span, half=half),))
    prefixes = [parent]
    if base.endswith(".m"):  # LongCat `enorm.m`
        prefixes.append(parent_of(parent.rstrip(".")))
    for prefix in prefixes:
        split = prefix + ("e_proj" if half is Half.embedding else "h_proj") + ".weight"
        if split in tensors:
            return Plan(info, consumers=(Part(split, Axis.cols, half=half),))
        for c in _MTP_PROJ:
            name = prefix + c + ".weight"
            ref = tensors.get(name)
            if ref is None or len(ref.shape) != 2:
                continue
            cols = ref.shape[1]
            span = (0, cols // 2) if half is first else (cols // 2, cols)
            return Plan(info, consumers=(Part(name, Axis.cols, span=span, half=half),))
    # ERNIE-4.5: model.mtp_emb_norm.{k} -> model.mtp_linear_proj.{k} (cat [emb, hidden]).
    m = re.match(r"^(.*)mtp_(?:emb|hidden)_norm\.(\d+)$", base)
    if m:
        name = f"{m.group(1)}mtp_linear_proj.{m.group(2)}.weight"
        ref = tensors.get(name)
        if ref is not None and len(ref.shape) == 2:
            cols = ref.shape[1]
            span = (0, cols // 2) if half is Half.embedding else (cols // 2, cols)
            return Plan(info, consumers=(Part(name, Axis.cols, span=span, half=half),))
    return Plan(info, reason=f"no MTP input projection (eh_proj, fc, input_proj) for '{base}'")


_BERT_LAYER = re.compile(
    r"^(?P<pre>.*?)encoder\.layer\.(?P<i>\d+)\.(?P<what>attention\.output|output)\.LayerNorm$"
)


def _bert(info: NormInfo, base: str, tensors: Mapping[str, TensorRef]) -> Plan | None:
    """Post-LN (BERT): the LayerNorm's output is the residual stream the next dense layers read."""

    def qkv(pre: str, i: int) -> list[str]:
        return [
            f"{pre}encoder.layer.{i}.attention.self.{p}.weight"
            for p in ("query", "key", "value")
            if f"{pre}encoder.layer.{i}.attention.self.{p}.weight" in tensors
        ]

    if base.endswith("embeddings.LayerNorm"):
        pre = base[: -len("embeddings.LayerNorm")]
        found = qkv(pre, 0)
    else:
        m = _BERT_LAYER.match(base)
        if m is None:
            return None
        pre, i = m.group("pre"), int(m.group("i"))
        if m.group("what") == "attention.output":
            found = [
                n for n in (f"{pre}encoder.layer.{i}.intermediate.dense.weight",) if n in tensors
            ]
        else:
            found = qkv(pre, i + 1) or [n for n in (f"{pre}pooler.dense.weight",) if n in tensors]
    if not found:
        return Plan(info, reason=f"no next dense layer after '{base}'")
    return Plan(info, consumers=tuple(Part(n, Axis.cols) for n in found))


def _checked(plan: Plan, tensors: Mapping[str, TensorRef], conv1d: bool) -> Plan:
    """Drop parts whose shape does not fit the norm's width (and say so)."""
    if plan.not_applicable:
        return plan
    ref = tensors.get(plan.info.name)
    dim = math.prod(ref.shape) if ref is not None else 0
    kept_c = [p for p in plan.consumers if fits(p, tensors[p.tensor], dim)]
    kept_p = [p for p in plan.producers if fits(p, tensors[p.tensor], dim)]
    dropped = [p.tensor for p in (*plan.consumers, *plan.producers) if p not in (*kept_c, *kept_p)]
    reason = plan.reason
    if dropped and not kept_c and not kept_p:
        reason = f"matrices found do not fit width {dim}: {', '.join(dropped[:3])}"
    return Plan(
        plan.info,
        tuple(kept_c),
        tuple(kept_p),
        plan.not_applicable,
        reason,
        plan.experts_sampled,
        plan.experts_total,
        plan.unmatched,
    )


def axis_length(part: Part, ref: TensorRef) -> int:
    """Length of the reduced vector of `ref` along the part's axis (3-D: per expert)."""
    shape = ref.shape
    if len(shape) == 3:
        return shape[2] if part.axis is Axis.cols else shape[1]
    if len(shape) != 2:
        return 0
    return shape[1] if part.axis is Axis.cols else shape[0]


def fits(part: Part, ref: TensorRef, dim: int) -> bool:
    """The part's channels are the norm's, or whole heads of it (a per-head shared norm)."""
    if dim <= 0:
        return False
    start, end = part.span or (0, axis_length(part, ref))
    length = end - start
    return length > 0 and length % dim == 0
