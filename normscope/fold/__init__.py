"""normscope fold: each norm gain γ against the matrices it feeds, streamed to the device.

`fold(source, options)` scans the checkpoint (the light scan: headers and norm vectors), finds
for every norm the matrices that read its output (`consumers.py`), streams only their byte ranges
through a bounded pipeline (`pipeline.py`) to reduce them to per-channel column norms c on the
CPU or a GPU (`metrics.py`), and reports the folded ratio ‖γ ⊙ c‖/‖c‖, compensation,
concentration and the MTP input balance (computed in `metrics.py`).

torch is needed (`pip install "normscope[torch]"`) and imported only when `fold` runs: this
package itself imports without it, so a CLI can import `fold` and turn `TorchMissing` into exit 2.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from normscope.arch import RuleSet
from normscope.enums import FoldStatus
from normscope.errors import NormscopeError, UsageError
from normscope.executors import ClusterSpec
from normscope.fold.consumers import Axis, ExpertChoice, Plan, plan_all
from normscope.schema import Band, BandCounts, Parametrization, Role, TensorRef, Thresholds
from normscope.schema.fold import (
    FOLD_SCHEMA_VERSION,
    FoldNorm,
    FoldPlan,
    FoldReport,
    FoldSummary,
)
from normscope.scope import DEFAULT, Selector, parse_scope

if TYPE_CHECKING:
    import numpy as np
    import torch

    from normscope.fold.metrics import NormMetrics
    from normscope.fold.pipeline import LoadStats, ProgressCallback, Task
    from normscope.schema import NormStats, Report
    from normscope.sources import Checkpoint, SourceSpec

__all__ = [
    "FoldNorm",
    "FoldOptions",
    "FoldPlan",
    "FoldReport",
    "FoldStatus",
    "TorchMissing",
    "fold",
    "parse_memory",
]

TORCH_HINT = 'pip install "normscope[torch]"'
DEFAULT_MAX_MEMORY = 2 * 1000**3


class TorchMissing(NormscopeError):
    """`fold` needs torch, which is an optional extra."""

    def __init__(self) -> None:
        super().__init__("normscope fold needs torch, which is not installed", hint=TORCH_HINT)


@dataclass(frozen=True, slots=True)
class FoldOptions:
    """Everything a fold can be told."""

    device: str = "auto"
    """auto (CUDA when torch sees one), cpu, cuda or cuda:N."""
    max_memory: int = DEFAULT_MAX_MEMORY
    """Bytes of row blocks alive at once (read, queued, reducing, staged)."""
    experts: str = "8"
    """shared, all, or N routed experts per MoE layer (spread over the range)."""
    dry_run: bool = False
    """Plan only: list consumers and the bytes a fold would read; read no matrix."""
    thresholds: Thresholds = field(default_factory=Thresholds)
    parametrization: Parametrization | None = None
    scope: Selector = DEFAULT
    """Which folded norms `fold_summary.gated_out_of_band` counts (a text is parsed)."""
    rules: RuleSet = field(default_factory=RuleSet)
    """User architecture rules (`normscope.arch.load_rules`), as for a scan."""
    cluster: ClusterSpec | None = None
    """Reduce the matrices on a Dask cluster (`normscope.executors`), in tensor sets; None: here."""
    cache: bool = True
    """Reuse a local checkpoint's cached layout (`--no-cache`: False)."""
    verbose: bool = False
    """Let huggingface_hub's own log lines reach stderr (`-v`)."""

    def __post_init__(self) -> None:
        if isinstance(self.scope, str):  # the library's edge: parse a scope given as text
            object.__setattr__(self, "scope", parse_scope(self.scope))


_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)


def parse_memory(text: str) -> int:
    """'256MB', '2GB', '1.5GiB', '4096' (bytes) -> bytes."""
    m = _MEMORY.match(text)
    if m is None:
        raise UsageError(f"cannot read '{text}' as a size (e.g. 256MB, 2GB)", "--max-memory")
    unit = (m.group(2) or "").lower().rstrip("b")
    base = 1024 if unit.endswith("i") else 1000
    power = " kmgt".index(unit[:1]) if unit else 0
    return int(float(m.group(1)) * base**power)


def _import_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise TorchMissing() from None


def fold(
    source: str | os.PathLike[str] | SourceSpec | Checkpoint,
    options: FoldOptions | None = None,
    progress: ProgressCallback | None = None,
) -> FoldReport:
    """Fold every norm of a checkpoint into the matrices it feeds; return the FoldReport.

    `source` is what `normscope scan` takes (a file, a folder, a Hub repo) or an opened
    Checkpoint. `progress` is called after each row block with bytes done, total and time.
    """
    options = options or FoldOptions()
    _import_torch()
    from normscope.scanner import ScanOptions, analyze_checkpoint
    from normscope.sources import Checkpoint, open_checkpoint

    started = time.perf_counter()
    try:
        experts = ExpertChoice.parse(options.experts)
    except ValueError as exc:
        raise UsageError(str(exc), "--experts") from None
    from normscope.fold.pipeline import block_bytes, load, resolve_device

    try:
        device = resolve_device(options.device)
        block_bytes(options.max_memory, device)
    except ValueError as exc:
        raise UsageError(str(exc), "--device" if "device" in str(exc) else "--max-memory") from None
    if isinstance(source, Checkpoint):
        checkpoint = source
    else:
        checkpoint = open_checkpoint(source, cache=options.cache, verbose=options.verbose)
    scan_options = ScanOptions(
        options.thresholds, options.parametrization, options.scope, rules=options.rules
    )
    measured = analyze_checkpoint(checkpoint, scan_options, started)
    scan = measured.report
    stats = {n.name: n for n in scan.norms}
    # The scan's order (`analysis.sort_key`): main before MTP, layers in natural order
    # (0, 1, 2, 10), final last; a layer-stacked DCP save lists its tensors role by role.
    by_name = {info.name: info for info in measured.infos}
    infos = [by_name[n.name] for n in scan.norms if n.name in by_name]
    plans = plan_all(infos, checkpoint.tensors, scan.model.family, experts)

    tasks, skipped = _tasks(plans, checkpoint.tensors)
    planned = sum(t.ref.nbytes + (t.scale.nbytes if t.scale else 0) for t in tasks)
    from normscope.fold.pipeline import LoadStats

    reduced: dict[str, torch.Tensor] = {}
    load_stats = LoadStats(block_bytes=block_bytes(options.max_memory, device))
    if not options.dry_run and tasks and options.cluster is not None:
        from normscope.fold.distributed import load_on_cluster

        if isinstance(source, Checkpoint):
            raise UsageError("fold on a cluster needs a path or URL, not an opened checkpoint")
        reduced, load_stats, lost = load_on_cluster(
            source, tasks, options.device, options.max_memory, options.cluster, progress
        )
        load_stats.block_bytes = block_bytes(options.max_memory, device)
        skipped = {**skipped, **lost}
    elif not options.dry_run and tasks:
        reduced, load_stats = load(checkpoint, tasks, device, options.max_memory, progress)
    rows, warnings = _rows(plans, stats, measured.gains, reduced, skipped, options)
    where = device.type if device.index is None else f"{device.type}:{device.index}"
    return _report(
        checkpoint,
        scan,
        rows,
        warnings,
        options,
        where,
        tasks,
        planned,
        skipped,
        load_stats,
        started,
    )


def _scale_of(name: str, tensors: Mapping[str, TensorRef]) -> TensorRef | None:
    stem = name[: -len("weight")] if name.endswith("weight") else name + "_"
    for suffix in ("weight_scale_inv", "weight_scale", "scale_inv", "scale"):
        ref = tensors.get(stem + suffix)
        if ref is not None and ref.dtype in ("F32", "BF16", "F16", "F64"):
            return ref
    return None


def _undecodable(ref: TensorRef, tensors: Mapping[str, TensorRef]) -> str | None:
    from normscope.fold.metrics import TORCH_DTYPES

    stem = ref.name[: -len("weight")] if ref.name.endswith("weight") else ref.name + "."
    if stem + "SCB" in tensors:
        return "bitsandbytes int8 (SCB) is not decoded"
    if stem + "scales" in tensors or stem + "biases" in tensors:
        return "MLX/group-quantised weights (scales, biases) are not decoded"
    if ref.dtype not in TORCH_DTYPES:
        return f"dtype {ref.dtype} is not decoded (BF16, F16, F32, F8_E4M3, F8_E5M2 are)"
    if len(ref.shape) != 2:
        return f"{len(ref.shape)}-D weights {list(ref.shape)} are not decoded (2-D only)"
    if ref.nbytes == 0:
        return "empty tensor"
    return None


def _tasks(
    plans: Sequence[Plan], tensors: Mapping[str, TensorRef]
) -> tuple[list[Task], dict[str, str]]:
    from normscope.fold.pipeline import Task

    tasks: dict[str, Task] = {}
    skipped: dict[str, str] = {}
    for plan in plans:
        for part in (*plan.consumers, *plan.producers):
            if part.tensor in tasks or part.tensor in skipped:
                continue
            ref = tensors[part.tensor]
            why = _undecodable(ref, tensors)
            if why is not None:
                skipped[part.tensor] = why
                continue
            scale = _scale_of(ref.name, tensors) if ref.dtype.startswith("F8") else None
            tasks[part.tensor] = Task(ref, part.axis is Axis.rows, scale)
    # Read in file order: sequential positioned reads, fewer seeks on cold storage.
    ordered = sorted(tasks.values(), key=lambda t: (t.ref.shard, t.ref.start))
    return list(ordered), skipped


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


def _rows(
    plans: Sequence[Plan],
    stats: Mapping[str, NormStats],
    gains: Mapping[str, np.ndarray],
    reduced: Mapping[str, torch.Tensor],
    skipped: Mapping[str, str],
    options: FoldOptions,
) -> tuple[list[FoldNorm], list[str]]:
    import torch

    from normscope.fold.metrics import norm_metrics

    metrics: dict[str, NormMetrics] = {}
    rows: list[FoldNorm] = []
    reasons: dict[str, list[str]] = {}
    not_applicable: list[str] = []
    unmatched = [p for p in plans if p.unmatched]
    for plan in plans:
        info = plan.info
        n = stats[info.name]
        parts = (*plan.consumers, *plan.producers)
        status, reason = FoldStatus.folded, plan.reason
        result = None
        if plan.not_applicable:
            status = FoldStatus.not_applicable
            not_applicable.append(info.name)
        elif not parts:
            status = FoldStatus.no_consumer
            reasons.setdefault(reason or "no consumer found", []).append(info.name)
        elif options.dry_run:
            status, reason = FoldStatus.planned, None
        else:
            csq = _pooled(plan, reduced, n.dim)
            if csq is None:
                status = FoldStatus.skipped
                reason = "; ".join(
                    sorted({skipped[p.tensor] for p in parts if p.tensor in skipped})
                )
                reasons.setdefault(reason, []).append(info.name)
            else:
                gain = torch.from_numpy(gains[info.name]).reshape(-1)
                result = norm_metrics(gain, csq)
                metrics[info.name] = result
                reason = None
                partial = [p.tensor for p in parts if p.tensor in skipped]
                if partial:
                    reason = f"{len(partial)} of {len(parts)} matrices not decodable"
        folded = finite_or_none(result.folded_ratio) if result else None
        rows.append(
            FoldNorm(
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
                folded_ratio=folded,
                folded_band=(options.thresholds.classify(result.folded_ratio) if result else None),
                compensation=finite_or_none(result.compensation) if result else None,
                top_share=finite_or_none(result.top_share) if result else None,
                max_over_median=finite_or_none(result.max_over_median) if result else None,
                input_balance=None,
                reason=reason,
            )
        )
    rows = _with_balance(rows, metrics)
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
    return rows, warnings


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


def _report(
    checkpoint: Checkpoint,
    scan: Report,
    rows: list[FoldNorm],
    warnings: list[str],
    options: FoldOptions,
    device: str,
    tasks: Sequence[Task],
    planned: int,
    skipped: Mapping[str, str],
    load: LoadStats,
    started: float,
) -> FoldReport:
    from normscope.version import __version__

    selector = options.scope
    counts = count_statuses(rows)
    bands = dict.fromkeys((b.value for b in Band), 0)
    for r in rows:
        if r.folded_band is not None:
            bands[r.folded_band.value] += 1
    gated = sum(
        1 for r in rows if r.folded_band is not None and r.folded_band.out_of_band and selector(r)
    )
    from normscope.scanner import io_stats

    io = io_stats(checkpoint, started)
    plan = FoldPlan(
        device=device,
        max_memory=options.max_memory,
        experts=options.experts,
        dry_run=options.dry_run,
        tensors=len(tasks),
        bytes_planned=planned,
        skipped_tensors=tuple(f"{k}: {v}" for k, v in sorted(skipped.items())),
        block_bytes=load.block_bytes,
        blocks=load.blocks,
        peak_buffered_bytes=load.peak_buffered_bytes,
        read_seconds=load.read_seconds,
        compute_seconds=load.compute_seconds,
        wait_seconds=load.wait_seconds,
    )
    summary = FoldSummary(
        folded=counts[FoldStatus.folded],
        not_applicable=counts[FoldStatus.not_applicable],
        no_consumer=counts[FoldStatus.no_consumer],
        skipped=counts[FoldStatus.skipped],
        folded_bands=BandCounts(**bands),
        gated_out_of_band=gated,
    )
    return FoldReport(
        schema_version=FOLD_SCHEMA_VERSION,
        normscope_version=__version__,
        source=checkpoint.source,
        model=scan.model,
        io=io,
        plan=plan,
        norms=tuple(rows),
        summary=scan.summary,
        fold_summary=summary,
        warnings=tuple(scan.warnings) + tuple(warnings),
    )


def count_statuses(norms: Sequence[FoldNorm]) -> dict[FoldStatus, int]:
    """How many norms ended in each status."""
    counts = dict.fromkeys(FoldStatus, 0)
    for n in norms:
        counts[n.status] += 1
    return counts


def finite_or_none(value: float | None) -> float | None:
    """NaN/inf to None (JSON null) at the dataclass level, so every view agrees."""
    if value is None or not math.isfinite(value):
        return None
    return value
