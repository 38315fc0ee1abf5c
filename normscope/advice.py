"""Fix advice as data: which text fits a norm, its band and the model (issue #11, part 3).

Pure: no I/O, no policy. The choice depends on what the norm is (MTP norm, final norm, input or
output norm), on its band, and on whether the model has MTP at all. MTP-specific advice (the loss
weight λ, a NormFormer-style norm before the MTP projection) is given ONLY for MTP norms and for the
final norm of a model with MTP: advising "lower the MTP loss weight" for Llama is how a tool loses
its users' trust. Sources: the diagnostic playbook (seed 000) and the scale-vector paper (seed 001,
"weight decay is beneficial for Input-Norm layers but harmful for Output-Norm layers").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from normscope.enums import Band, Closed, Group, Module, Role


class Topic(Closed):
    """Which piece of advice applies; each has one text template and one source."""

    nonfinite = "nonfinite"
    mtp_collapse = "mtp_collapse"
    mtp_explosion = "mtp_explosion"
    final_collapse_mtp = "final_collapse_mtp"
    final_explosion_mtp = "final_explosion_mtp"
    final_collapse = "final_collapse"
    final_explosion = "final_explosion"
    input_norm = "input_norm"
    output_norm = "output_norm"
    unplaced_norm = "unplaced_norm"
    anomaly = "anomaly"

    @property
    def mtp(self) -> bool:
        """True for the topics whose text is about MTP training (never for a model without)."""
        return self in _MTP_TOPICS


_MTP_TOPICS = frozenset(
    {Topic.mtp_collapse, Topic.mtp_explosion, Topic.final_collapse_mtp, Topic.final_explosion_mtp}
)


@dataclass(frozen=True, slots=True)
class Advice:
    """One piece of fix advice for one norm."""

    topic: Topic
    text: str
    """What to do, in one or two sentences; no markup."""
    source: str
    """Where the advice comes from (seed and section), for the curious and for reviews."""


class AdviceSubject(Protocol):
    """What the advice reads of a norm (`NormStats` qualifies)."""

    @property
    def module(self) -> Module: ...
    @property
    def role(self) -> Role: ...
    @property
    def group(self) -> Group | None: ...
    @property
    def layer(self) -> int | None: ...
    @property
    def ratio(self) -> float: ...


# Weight decay, said for the kind of norm at hand (seed 001, abstract and section "weight decay").
_DECAY = {
    Group.input: (
        "it is an input norm (its scale folds into the next linear map), so weight decay on it "
        "is expected to pull it down and does no harm (seed 001)"
    ),
    Group.output: (
        "it is an output norm (it scales what joins the residual stream and cannot be folded "
        "away), so weight decay hurts it: exempt norm gains from weight decay (seed 001)"
    ),
}

# NOTE: the texts are templates over {label}, {ratio}, {decay}, {way}, {fold}, {median}, {peers}.
_TEMPLATES: dict[Topic, tuple[str, str]] = {
    Topic.nonfinite: (
        "training diverged or the file is corrupt: resume from the last finite checkpoint",
        "docs/architectures.md#the-ratio-and-its-bands (nonfinite is always an error)",
    ),
    # seed 000, section 06, step 4 ("Act on collapse: lower mtp_loss_scaling_factor").
    Topic.mtp_collapse: (
        "lower the MTP loss weight λ (mtp_loss_scaling_factor, e.g. 0.3 -> 0.1 or 0.1 -> 0.05; "
        "DeepSeek-V3 used 0.3, then 0.1) and watch lm_loss and mtp_1_loss together",
        "seed 000, section 06, step 4",
    ),
    # seed 000, section 06, step 5 ("Act on explosion: add NormFormer-style extra norms").
    Topic.mtp_explosion: (
        "add an RMSNorm at the input of each MTP module (NormFormer style) to cap the scale "
        "entering the MTP projection; see the outlier channels in normscope scan",
        "seed 000, section 06, step 5",
    ),
    # seed 000, section 04 (the gradient gate) + section 06, step 4.
    Topic.final_collapse_mtp: (
        "the final norm gates the MTP gradient into the trunk, which now arrives at about "
        "{ratio:.2f}x its intended size: lower the MTP loss weight λ (mtp_loss_scaling_factor, "
        "e.g. 0.3 -> 0.1); also check whether weight decay reaches norm gains: {decay}",
        "seed 000, sections 04 and 06 step 4; seed 001",
    ),
    # seed 000, section 04 (explosion floods the main loss) + section 06, step 5.
    Topic.final_explosion_mtp: (
        "the final norm amplifies the MTP gradient entering the trunk about {ratio:.2f}x: add a "
        "NormFormer-style RMSNorm before the MTP projection, and watch whether lm_loss rises "
        "while mtp_1_loss falls",
        "seed 000, sections 04 and 06 step 5",
    ),
    # seed 000, sections 02 and 06 (band), without its MTP levers; seed 001 for decay.
    Topic.final_collapse: (
        "{label} at {ratio:.2f}x its initial size: compare with earlier checkpoints (normscope "
        "series) to see when it fell, check the learning-rate warm-up, and check whether weight "
        "decay reaches norm gains: {decay}",
        "seed 000, sections 02 and 06; seed 001",
    ),
    Topic.final_explosion: (
        "{label} at {ratio:.2f}x its initial size: a few channels may dominate the logits (see "
        "the outlier channels in normscope scan); check the learning-rate warm-up and peak, and "
        "compare with earlier checkpoints (normscope series); on weight decay: {decay}",
        "seed 000, sections 02 and 06; seed 001",
    ),
    # docs/architectures.md#input-and-output-norms / seed 001: pre-norm input norms add no
    # expressivity.
    Topic.input_norm: (
        "compare with earlier checkpoints (normscope series) before acting: pre-sublayer input "
        "norms can sit far from 1 because the next linear map absorbs their scale",
        "seed 001 (input norms precondition the next linear map)",
    ),
    Topic.output_norm: (
        "{label} scales what its sublayer adds to the residual stream and cannot be folded "
        "into a linear map: compare with earlier checkpoints (normscope series); {decay}",
        "seed 001 (output norms; weight decay hurts them)",
    ),
    Topic.unplaced_norm: (
        "normscope does not know where {label} sits (input or output norm), so its band says "
        "little: compare with earlier checkpoints (normscope series) before acting",
        "docs/architectures.md#input-and-output-norms (unknown placements are reported honestly)",
    ),
    # Not in the playbook: a peer-relative signal (docs/architectures.md#the-ratio-and-its-bands:
    # drift is the other robust signal; seed 000 section 02: direction and size of a drift carry the
    # meaning).
    Topic.anomaly: (
        "{label} is {fold:.1f}x {way} the median of its {peers} peers in other layers "
        "({median:.3g}): compare it with the neighbouring layers (normscope scan --all) and "
        "with earlier checkpoints (normscope series); one layer leaving its peers points at "
        "that layer: its optimizer state (a skipped or exploding update), a merge or "
        "conversion that touched it, or, in the first layer, the embedding scale it sees",
        "peer comparison (issue #11); seed 000, section 02",
    ),
}


def label(norm: AdviceSubject) -> str:
    """How the advice names a norm: `the final norm`, `layer 3's attn_input norm`, ..."""
    if norm.role is Role.final:
        return "the final norm"
    if norm.layer is not None:
        return f"layer {norm.layer}'s {norm.role.value} norm"
    return f"the {norm.role.value} norm"


def _advice(topic: Topic, norm: AdviceSubject, **extra: object) -> Advice:
    template, source = _TEMPLATES[topic]
    decay = _DECAY.get(norm.group) if norm.group is not None else None
    text = template.format(
        label=label(norm),
        ratio=norm.ratio,
        decay=decay or "see whether weight decay reaches norm gains (seed 001)",
        **extra,
    )
    return Advice(topic, text, source)


_MTP_ROLES = frozenset({Role.mtp_embedding, Role.mtp_hidden, Role.mtp_final})


def band_topic(norm: AdviceSubject, band: Band, *, has_mtp: bool) -> Topic | None:
    """Which advice fits `norm` in `band`; None inside the act band (shrink, balanced, grow).

    NOTE: an MTP norm implies a model with MTP; `has_mtp` decides only the final norm's advice.
    Other main-model norms never get MTP advice, with or without MTP.
    """
    if band is Band.nonfinite:
        return Topic.nonfinite
    if not band.out_of_band:
        return None
    collapse = band is Band.collapse
    if norm.module is Module.mtp or norm.role in _MTP_ROLES:
        return Topic.mtp_collapse if collapse else Topic.mtp_explosion
    if norm.role is Role.final:
        if has_mtp:
            return Topic.final_collapse_mtp if collapse else Topic.final_explosion_mtp
        return Topic.final_collapse if collapse else Topic.final_explosion
    if norm.group is Group.input:
        return Topic.input_norm
    if norm.group is Group.output:
        return Topic.output_norm
    return Topic.unplaced_norm


def band_advice(norm: AdviceSubject, band: Band, *, has_mtp: bool) -> Advice | None:
    """The fix advice for `norm` in `band` on a model with or without MTP (None: in band)."""
    topic = band_topic(norm, band, has_mtp=has_mtp)
    return None if topic is None else _advice(topic, norm)


def anomaly_advice(norm: AdviceSubject, peer_median: float, *, peers: int) -> Advice:
    """The advice for a norm that left its peers (see `normscope.peers`)."""
    above = norm.ratio >= peer_median
    if norm.ratio > 0:
        fold = norm.ratio / peer_median if above else peer_median / norm.ratio
    else:
        fold = float("inf")
    return _advice(
        Topic.anomaly,
        norm,
        fold=fold,
        way="above" if above else "below",
        median=peer_median,
        peers=peers,
    )
