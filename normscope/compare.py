"""Compare the norms of two checkpoints: pairing, drift, band transitions, top-moving channels.

Pure functions of two `Measured` scans (Report + effective gains); `diff()` runs both scans.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from normscope.analysis import relative_change
from normscope.arch.vocab import qk_side
from normscope.errors import AnalysisError
from normscope.scanner import Measured, ScanOptions, measure
from normscope.schema import (
    SCHEMA_VERSION,
    DiffReport,
    MatchedBy,
    Module,
    Mover,
    NormDiff,
    NormStats,
    Role,
    RoleDrift,
)
from normscope.version import __version__

if TYPE_CHECKING:
    from normscope.sources import Source, SourceSpec

MAX_MOVERS = 5


def _identity(n: NormStats) -> tuple[object, ...]:
    """What makes a norm the same norm under another naming (e.g. Megatron vs HF): its place,
    and for a QK norm the projection its name says (`q_layernorm` is `q_norm`)."""
    side = qk_side(n.name) if n.role is Role.qk else None
    return (n.module, n.mtp_depth, n.layer, n.role, n.dim, side)


def pair_norms(
    a: Sequence[NormStats], b: Sequence[NormStats]
) -> tuple[list[tuple[NormStats, NormStats, MatchedBy]], list[str], list[str]]:
    """Pair norms by name, then the rest by unambiguous identity; return pairs and leftovers."""
    by_name_b = {n.name: n for n in b}
    pairs: list[tuple[NormStats, NormStats, MatchedBy]] = []
    rest_a = []
    for n in a:
        other = by_name_b.pop(n.name, None)
        if other is None:
            rest_a.append(n)
        else:
            pairs.append((n, other, MatchedBy.name))
    rest_b = list(by_name_b.values())
    # Identity matching only where the key is unique on both sides: two q/k norms of one layer
    # share role and dim, and guessing which is which would be a silently wrong number.
    keys_a: dict[tuple[object, ...], list[NormStats]] = {}
    keys_b: dict[tuple[object, ...], list[NormStats]] = {}
    for n in rest_a:
        keys_a.setdefault(_identity(n), []).append(n)
    for n in rest_b:
        keys_b.setdefault(_identity(n), []).append(n)
    matched_a, matched_b = set(), set()
    for key, group_a in keys_a.items():
        group_b = keys_b.get(key, [])
        if len(group_a) == 1 and len(group_b) == 1 and key[3] is not Role.unknown:
            pairs.append((group_a[0], group_b[0], MatchedBy.identity))
            matched_a.add(group_a[0].name)
            matched_b.add(group_b[0].name)
    only_a = [n.name for n in rest_a if n.name not in matched_a]
    only_b = [n.name for n in rest_b if n.name not in matched_b]
    return pairs, only_a, only_b


def compare_gains(ga: np.ndarray, gb: np.ndarray) -> tuple[float, float, tuple[Mover, ...]]:
    """Relative change ‖gb−ga‖/‖ga‖, cosine similarity and the channels that moved most."""
    delta = gb - ga
    rel = relative_change(ga, gb)
    with np.errstate(all="ignore"):
        norm_a = float(np.sqrt(np.dot(ga, ga)))
        norm_b = float(np.sqrt(np.dot(gb, gb)))
        cosine = float(np.dot(ga, gb)) / (norm_a * norm_b) if norm_a and norm_b else math.nan
    moved = np.abs(delta)
    order = np.argsort(-np.nan_to_num(moved, nan=np.inf), kind="stable")[:MAX_MOVERS]
    movers = tuple(Mover(int(i), float(ga[i]), float(gb[i])) for i in order if moved[i] != 0)
    return rel, cosine, movers


def diff_measured(a: Measured, b: Measured) -> DiffReport:
    """Compare two scans."""
    pairs, only_a, only_b = pair_norms(a.report.norms, b.report.norms)
    rows = []
    for na, nb, how in pairs:
        if na.dim != nb.dim:
            raise AnalysisError(
                f"norm '{nb.name}' has {na.dim} entries in {a.report.source} but {nb.dim} in "
                f"{b.report.source}: these are not checkpoints of the same model"
            )
        rel, cosine, movers = compare_gains(a.gains[na.name], b.gains[nb.name])
        rows.append(
            NormDiff(
                name=nb.name,
                name_a=na.name,
                matched_by=how,
                module=nb.module,
                mtp_depth=nb.mtp_depth,
                layer=nb.layer,
                role=nb.role,
                group=nb.group,
                dim=nb.dim,
                ratio_a=na.ratio,
                ratio_b=nb.ratio,
                delta_ratio=nb.ratio - na.ratio,
                rel_change=rel,
                cosine=cosine,
                band_a=na.band,
                band_b=nb.band,
                band_changed=na.band is not nb.band,
                movers=movers,
                anomaly_a=na.anomaly,
                anomaly_b=nb.anomaly,
            )
        )
    rows.sort(key=lambda d: (-_finite_or_inf(d.rel_change), d.name))
    warnings = [f"A: {w}" for w in a.report.warnings] + [f"B: {w}" for w in b.report.warnings]
    if only_a or only_b:
        warnings.append(
            f"{len(only_a)} norm(s) only in A and {len(only_b)} only in B are listed, not compared"
        )
    if not rows:
        raise AnalysisError(
            f"no norm of {a.report.source} matches one of {b.report.source}",
            hint="diff compares checkpoints of the same model (or its conversion)",
        )
    return DiffReport(
        schema_version=SCHEMA_VERSION,
        normscope_version=__version__,
        a=a.report.source,
        b=b.report.source,
        model_a=a.report.model,
        model_b=b.report.model,
        norms=tuple(rows),
        only_a=tuple(only_a),
        only_b=tuple(only_b),
        roles=tuple(_role_drift(rows)),
        band_changes=sum(1 for d in rows if d.band_changed),
        warnings=tuple(warnings),
    )


def _finite_or_inf(x: float) -> float:
    return math.inf if math.isnan(x) else x


def _role_drift(rows: Sequence[NormDiff]) -> list[RoleDrift]:
    groups: dict[tuple[Module, Role], list[float]] = {}
    for d in rows:
        groups.setdefault((d.module, d.role), []).append(d.rel_change)
    order = list(Role)
    return [
        RoleDrift(module, role, len(values), statistics.median(values), max(values))
        for (module, role), values in sorted(
            groups.items(), key=lambda kv: (kv[0][0] is Module.mtp, order.index(kv[0][1]))
        )
    ]


def diff(
    a: Source | SourceSpec, b: Source | SourceSpec, options: ScanOptions | None = None
) -> DiffReport:
    """Scan two checkpoints and compare their norms."""
    return diff_measured(measure(a, options), measure(b, options))
