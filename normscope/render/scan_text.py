"""What every scan renderer says: the header facts, the one-line headline, the per-role summary,
a norm in a few words. Pure text; the table, Markdown and HTML views lay it out.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from normscope.enums import Band, Module, Role, Tower
from normscope.render.common import SEVERITY, fmt, human_bytes
from normscope.schema import NormStats, Report
from normscope.scope import DEFAULT, Selector


@dataclasses.dataclass(frozen=True, slots=True)
class RoleSummary:
    """One line of the per-role summary."""

    module: str
    """`main`, `mtp`, or the part of a multi-stack model: `encoder`, `decoder`, `vision`, ..."""
    role: str
    count: int
    ratio_min: float
    ratio_median: float
    ratio_max: float
    worst: Band


def part(n: NormStats) -> str:
    """Where a norm is: `mtp`, another tower (`vision`, `audio`, `projector`), a stack of an
    encoder-decoder (`encoder`, `decoder`), else `main`."""
    if n.module is Module.mtp:
        return "mtp"
    if n.tower is not Tower.text:
        return n.tower.value
    return n.stack.value if n.stack is not None else "main"


_PARTS = ("main", "encoder", "decoder", "mtp", "vision", "audio", "projector")


def summarize_roles(norms: Sequence[NormStats]) -> list[RoleSummary]:
    """Per (part, role): count, ratio min/median/max and the worst band."""
    import statistics  # with fractions, ~3 ms: only the views that summarise roles

    groups: dict[tuple[str, Role], list[NormStats]] = {}
    for n in norms:
        groups.setdefault((part(n), n.role), []).append(n)
    out = []
    order = list(Role)
    for (module, role), rows in sorted(
        groups.items(), key=lambda kv: (_PARTS.index(kv[0][0]), order.index(kv[0][1]))
    ):
        ratios = [r.ratio for r in rows if math.isfinite(r.ratio)]
        worst = max((r.band for r in rows), key=lambda b: SEVERITY[b])
        out.append(
            RoleSummary(
                module,
                role.value,
                len(rows),
                min(ratios, default=math.nan),
                statistics.median(ratios) if ratios else math.nan,
                max(ratios, default=math.nan),
                worst,
            )
        )
    return out


def norm_label(n: NormStats) -> str:
    """`final norm`, `MTP 1 embedding`, `layer 10 mlp_output`: a norm in a few words."""
    if n.module is Module.mtp:
        role = n.role.value[4:] if n.role.value.startswith("mtp_") else n.role.value
        return f"MTP {n.mtp_depth} {role}"
    if n.role is Role.final:
        where = part(n)
        return "final norm" if where == "main" else f"{where} final norm"
    return f"layer {n.layer} {n.role.value}" if n.layer is not None else n.role.value


def _watched_text(report: Report) -> str:
    parts = []
    for h in report.summary.headline:
        label = "final norm" if h.mtp_depth is None else f"MTP {h.mtp_depth} {h.role.value[4:]}"
        parts.append(f"{label} {fmt(h.ratio)} ({h.band.value})")
    return "; ".join(parts) if parts else "no final or MTP norm identified"


def _distance(n: NormStats) -> float:
    """How far a ratio is from 1 on a log scale (non-finite: farthest of all)."""
    if not math.isfinite(n.ratio) or n.ratio <= 0:
        return math.inf
    return abs(math.log(n.ratio))


def headline_text(report: Report, scope: Selector = DEFAULT) -> str:
    """What the numbers mean, in one line: the worst gated norm, the anomalies, the next step."""
    gated = scope.matching(report.norms)
    bad = [n for n in gated if n.band.out_of_band]
    anomalies = report.summary.anomalies
    if bad:
        worst = max(bad, key=_distance)
        parts = [
            f"{len(bad)} of {len(gated)} gated norm(s) out of band, worst {norm_label(worst)} "
            f"{fmt(worst.ratio)} ({worst.band.value})"
        ]
    elif gated:
        parts = [f"the {len(gated)} gated norm(s) are in band"]
    else:
        parts = [f"no norm in the gate scope '{scope.text}'"]
    parts.append(
        f"{anomalies} anomal{'y' if anomalies == 1 else 'ies'} (a layer that left its peers)"
        if anomalies
        else "no anomaly"
    )
    parts.append("next: normscope check for advice" if bad or anomalies else "healthy")
    return "; ".join(parts)


def header_lines(report: Report, scope: Selector = DEFAULT) -> list[tuple[str, str]]:
    """The facts of the header panel as (label, value) pairs."""
    m, i = report.model, report.io
    share = 100.0 * i.bytes_read / i.bytes_total if i.bytes_total else 0.0
    bands = dataclasses.asdict(report.summary.bands)
    band_text = ", ".join(f"{v} {k}" for k, v in bands.items() if v)
    return [
        ("source", report.source),
        (
            "model",
            f"{m.model_type or '?'} (rules: {m.family}), hidden {m.hidden_size or '?'}, "
            f"{m.num_layers if m.num_layers is not None else '?'} layers, "
            f"MTP depth {m.mtp_depth}",
        ),
        ("headline", headline_text(report, scope)),
        ("watched", _watched_text(report)),
        ("norms", f"{len(report.norms)}: {band_text}"),
        (
            "read",
            f"{human_bytes(i.bytes_read)} of {human_bytes(i.bytes_total)} "
            f"({share:.4g}%) from {i.files} file(s) in {i.seconds:.2f} s",
        ),
    ]
