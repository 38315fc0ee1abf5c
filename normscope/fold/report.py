"""The `FoldReport` of one fold: one `FoldNorm` per planned norm, the counts, the plan and its cost.

`fold_rows` pools the reduced column norms c² of every matrix a norm feeds, computes the
metrics against its gain (`metrics.py`), and adds the MTP input balance of each depth.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from normscope.enums import FoldStatus
from normscope.fold.consumers import Plan
from normscope.fold.options import FoldOptions
from normscope.fold.tasks import planned_bytes
from normscope.schema import Band, BandCounts, Role
from normscope.schema.fold import (
    FOLD_SCHEMA_VERSION,
    FoldNorm,
    FoldPlan,
    FoldReport,
    FoldSummary,
)

if TYPE_CHECKING:
    import numpy as np
    import torch

    from normscope.fold.metrics import NormMetrics
    from normscope.fold.tasks import LoadStats, Task
    from normscope.schema import NormStats, Report
    from normscope.sources import Checkpoint


def build_report(
    checkpoint: Checkpoint,
    scan: Report,
    rows: list[FoldNorm],
    warnings: list[str],
    options: FoldOptions,
    device: str,
    tasks: Sequence[Task],
    skipped: Mapping[str, str],
    load: LoadStats,
    started: float,
) -> FoldReport:
    """The report: the scan's model and summary, the fold's rows, counts, plan and costs."""
    from normscope.scanner import io_stats
    from normscope.version import __version__

    summary = fold_summary(rows, options)
    io = io_stats(checkpoint, started)
    return FoldReport(
        schema_version=FOLD_SCHEMA_VERSION,
        normscope_version=__version__,
        source=checkpoint.source,
        model=scan.model,
        io=io,
        plan=fold_plan(options, device, tasks, skipped, load),
        norms=tuple(rows),
        summary=scan.summary,
        fold_summary=summary,
        warnings=tuple(scan.warnings) + tuple(warnings),
    )


def fold_summary(rows: Sequence[FoldNorm], options: FoldOptions) -> FoldSummary:
    """The counts: norms per status, folded ratios per band, out-of-band ones in the scope."""
    selector = options.scope
    counts = count_statuses(rows)
    bands = dict.fromkeys((b.value for b in Band), 0)
    for r in rows:
        if r.folded_band is not None:
            bands[r.folded_band.value] += 1
    gated = sum(
        1 for r in rows if r.folded_band is not None and r.folded_band.out_of_band and selector(r)
    )
    return FoldSummary(
        folded=counts[FoldStatus.folded],
        not_applicable=counts[FoldStatus.not_applicable],
        no_consumer=counts[FoldStatus.no_consumer],
        skipped=counts[FoldStatus.skipped],
        folded_bands=BandCounts(**bands),
        gated_out_of_band=gated,
    )


def fold_plan(
    options: FoldOptions,
    device: str,
    tasks: Sequence[Task],
    skipped: Mapping[str, str],
    load: LoadStats,
) -> FoldPlan:
    """What was planned (matrices, bytes, skips) and what the reads cost."""
    return FoldPlan(
        device=device,
        max_memory=options.max_memory,
        experts=options.experts,
        dry_run=options.dry_run,
        tensors=len(tasks),
        bytes_planned=planned_bytes(tasks),
        skipped_tensors=tuple(f"{k}: {v}" for k, v in sorted(skipped.items())),
        block_bytes=load.block_bytes,
        blocks=load.blocks,
        peak_buffered_bytes=load.peak_buffered_bytes,
        read_seconds=load.read_seconds,
        compute_seconds=load.compute_seconds,
        wait_seconds=load.wait_seconds,
    )


def count_statuses(norms: Sequence[FoldNorm]) -> dict[FoldStatus, int]:
    """How many norms ended in each status."""
    counts = dict.fromkeys(FoldStatus, 0)
    for n in norms:
        counts[n.status] += 1
    return counts


def _pooled(plan: Plan, reduced: Mapping[str, torch.Tensor], dim: int) -> torch.Tensor | None:
    """c² of one norm: every part's reduced vector (its span), per-head parts summed per channel."""
    import torch

    total = torch.zeros(dim, dtype=torch.float64)
    used = 0
    for part in (*plan.consumers, *plan.producers):
        vec = reduced.get(part.tensor)
        if vec is None:
            continue
        if part.span is not None:
            vec = vec[part.span[0] : part.span[1]]
        total += vec.reshape(-1, dim).sum(0)
        used += 1
    return total if used else None


def fold_rows(
    plans: Sequence[Plan],
    stats: Mapping[str, NormStats],
    gains: Mapping[str, np.ndarray],
    reduced: Mapping[str, torch.Tensor],
    skipped: Mapping[str, str],
    options: FoldOptions,
) -> tuple[list[FoldNorm], list[str]]:
    """One row per plan, with the MTP input balance; and the warnings for norms not folded."""
    metrics: dict[str, NormMetrics] = {}
    rows: list[FoldNorm] = []
    reasons: dict[str, list[str]] = {}
    not_applicable: list[str] = []
    for plan in plans:
        name, n = plan.info.name, stats[plan.info.name]
        status, reason, result = _outcome(plan, n.dim, gains, reduced, skipped, options.dry_run)
        if status is FoldStatus.not_applicable:
            not_applicable.append(name)
        elif status is FoldStatus.no_consumer:
            reasons.setdefault(reason or "no consumer found", []).append(name)
        elif status is FoldStatus.skipped:
            reasons.setdefault(reason or "", []).append(name)
        if result is not None:
            metrics[name] = result
        rows.append(_row(plan, n, status, reason, result, options))
    unmatched = [p for p in plans if p.unmatched]
    return _with_balance(rows, metrics), _warnings(not_applicable, unmatched, reasons)


def _outcome(
    plan: Plan,
    dim: int,
    gains: Mapping[str, np.ndarray],
    reduced: Mapping[str, torch.Tensor],
    skipped: Mapping[str, str],
    dry_run: bool,
) -> tuple[FoldStatus, str | None, NormMetrics | None]:
    """What became of one norm: its status, the reason it was not (fully) folded, its metrics."""
    parts = (*plan.consumers, *plan.producers)
    if plan.not_applicable:
        return FoldStatus.not_applicable, plan.reason, None
    if not parts:
        return FoldStatus.no_consumer, plan.reason, None
    if dry_run:
        return FoldStatus.planned, None, None
    csq = _pooled(plan, reduced, dim)
    if csq is None:
        why = "; ".join(sorted({skipped[p.tensor] for p in parts if p.tensor in skipped}))
        return FoldStatus.skipped, why, None
    import torch

    from normscope.fold.metrics import norm_metrics

    gain = torch.from_numpy(gains[plan.info.name]).reshape(-1)
    partial = [p.tensor for p in parts if p.tensor in skipped]
    reason = f"{len(partial)} of {len(parts)} matrices not decodable" if partial else None
    return FoldStatus.folded, reason, norm_metrics(gain, csq)


def _row(
    plan: Plan,
    n: NormStats,
    status: FoldStatus,
    reason: str | None,
    result: NormMetrics | None,
    options: FoldOptions,
) -> FoldNorm:
    info = plan.info
    return FoldNorm(
        name=info.name,
        module=info.module,
        mtp_depth=info.mtp_depth,
        layer=info.layer,
        role=info.role,
        parametrization=info.parametrization,
        dim=n.dim,
        ratio=n.ratio,
        group=info.group,
        status=status,
        consumers=tuple(p.tensor for p in plan.consumers),
        producers=tuple(p.tensor for p in plan.producers),
        experts_sampled=plan.experts_sampled,
        experts_total=plan.experts_total,
        folded_ratio=finite_or_none(result.folded_ratio) if result else None,
        folded_band=(options.thresholds.classify(result.folded_ratio) if result else None),
        compensation=finite_or_none(result.compensation) if result else None,
        top_share=finite_or_none(result.top_share) if result else None,
        max_over_median=finite_or_none(result.max_over_median) if result else None,
        input_balance=None,
        reason=reason,
    )


def _warnings(
    not_applicable: Sequence[str], unmatched: Sequence[Plan], reasons: Mapping[str, Sequence[str]]
) -> list[str]:
    """One line for the QK norms, one for rule patterns that matched nothing, one per reason
    norms were not folded; each with an example."""
    warnings = []
    if not_applicable:
        warnings.append(
            f"{len(not_applicable)} QK norm(s) feed no linear map (they normalise q and k per "
            f"head before the dot product): not applicable, e.g. '{not_applicable[0]}'"
        )
    if unmatched:
        warnings.append(
            f"{len(unmatched)} norm(s): the rules' consumer pattern(s) matched no tensor, the "
            f"matrices were found by name instead, e.g. '{unmatched[0].info.name}' "
            f"({', '.join(repr(p) for p in unmatched[0].unmatched)})"
        )
    for reason, names in reasons.items():
        warnings.append(f"{len(names)} norm(s) not folded: {reason}, e.g. '{names[0]}'")
    return warnings


def _with_balance(rows: list[FoldNorm], metrics: Mapping[str, NormMetrics]) -> list[FoldNorm]:
    """log2(‖W_e·diag γ_e‖_F / ‖W_h·diag γ_h‖_F) on both MTP input norms of each depth."""
    by_depth: dict[int | None, dict[Role, FoldNorm]] = {}
    for r in rows:
        if r.role in (Role.mtp_embedding, Role.mtp_hidden) and r.name in metrics:
            by_depth.setdefault(r.mtp_depth, {})[r.role] = r
    balance: dict[str, float | None] = {}
    for pair in by_depth.values():
        e, h = pair.get(Role.mtp_embedding), pair.get(Role.mtp_hidden)
        if e is None or h is None:
            continue
        fe, fh = metrics[e.name].folded_sq, metrics[h.name].folded_sq
        value = 0.5 * math.log2(fe / fh) if fe > 0 and fh > 0 else math.nan
        balance[e.name] = balance[h.name] = finite_or_none(value)
    if not balance:
        return rows
    import dataclasses

    return [
        dataclasses.replace(r, input_balance=balance[r.name]) if r.name in balance else r
        for r in rows
    ]


def finite_or_none(value: float | None) -> float | None:
    """NaN/inf to None (JSON null) at the dataclass level, so every view agrees."""
    if value is None or not math.isfinite(value):
        return None
    return value
