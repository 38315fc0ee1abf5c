"""One fold: the light scan, the plans, the matrices to read, the reads (here or on a cluster).

A matrix that cannot be decoded (bitsandbytes int8, MLX group-quantised, an unknown dtype, not
2-D, empty) is not read: it is listed with the reason, and the norms it feeds say so.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from normscope.errors import UsageError
from normscope.fold.consumers import plan_all
from normscope.fold.options import ExpertChoice, FoldOptions, require_torch
from normscope.fold.report import build_report, fold_rows
from normscope.fold.tasks import LoadStats, block_bytes, parse_device, plan_tasks
from normscope.schema.fold import FoldReport

if TYPE_CHECKING:
    import torch

    from normscope.fold.tasks import ProgressCallback, Task
    from normscope.sources import Checkpoint, SourceSpec


def fold(
    source: str | os.PathLike[str] | SourceSpec | Checkpoint,
    options: FoldOptions | None = None,
    progress: ProgressCallback | None = None,
) -> FoldReport:
    """Fold every norm of a checkpoint into the matrices it feeds; return the FoldReport.

    `source` is what `normscope scan` takes (a file, a folder, a Hub repo) or an opened
    Checkpoint. `progress` is called after each row block with bytes done, total and time.
    torch is imported once the plan is known, and a dry run (the plan only) never imports it.
    """
    options = options or FoldOptions()
    experts, device = _checked(options)
    if not options.dry_run:
        require_torch(load=False)  # missing: say so before the scan, still importing nothing
    from normscope.scanner import ScanOptions, analyze_checkpoint
    from normscope.sources import Checkpoint, open_checkpoint

    started = time.perf_counter()
    if isinstance(source, Checkpoint):
        checkpoint = source
    else:
        checkpoint = open_checkpoint(
            source, cache=options.cache, verbose=options.verbose, token=options.token
        )
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
    tasks, skipped = plan_tasks(plans, checkpoint.tensors)
    if options.dry_run:
        # NOTE: the device as asked for: `auto` stays `auto` (which one torch would pick is
        # known only with torch imported), and the block size is the one that fits either.
        reduced: dict[str, torch.Tensor] = {}
        lost: dict[str, str] = {}
        load_stats = LoadStats(block_bytes=block_bytes(options.max_memory, device))
    else:
        device, reduced, load_stats, lost = _reduce(
            source, checkpoint, tasks, device, options, progress
        )
    skipped = {**skipped, **lost}
    rows, warnings = fold_rows(plans, stats, measured.gains, reduced, skipped, options)
    return build_report(
        checkpoint, scan, rows, warnings, options, device, tasks, skipped, load_stats, started
    )


def _checked(options: FoldOptions) -> tuple[ExpertChoice, str]:
    """The expert choice and the device as asked for, or a UsageError naming the flag that is
    wrong; without torch (whether torch sees a CUDA device is checked when the reads start)."""
    try:
        experts = ExpertChoice.parse(options.experts)
    except ValueError as exc:
        raise UsageError(str(exc), "--experts") from None
    try:
        device = parse_device(options.device)
    except ValueError as exc:
        raise UsageError(str(exc), "--device") from None
    try:
        block_bytes(options.max_memory, device)
    except ValueError as exc:
        raise UsageError(str(exc), "--max-memory") from None
    return experts, device


def _reduce(
    source: str | os.PathLike[str] | SourceSpec | Checkpoint,
    checkpoint: Checkpoint,
    tasks: Sequence[Task],
    device: str,
    options: FoldOptions,
    progress: ProgressCallback | None,
) -> tuple[str, dict[str, torch.Tensor], LoadStats, dict[str, str]]:
    """Import torch, resolve the device; every task's squared column norms, reduced here or on
    the cluster, what the reads cost, and the matrices lost on the cluster with the reason."""
    require_torch()
    from normscope.fold.pipeline import device_name, load, resolve_device
    from normscope.sources import Checkpoint

    try:
        where = resolve_device(device)
    except ValueError as exc:
        raise UsageError(str(exc), "--device") from None
    name = device_name(where)
    if not tasks:
        return name, {}, LoadStats(block_bytes=block_bytes(options.max_memory, name)), {}
    if options.cluster is None:
        reduced, load_stats = load(checkpoint, tasks, where, options.max_memory, progress)
        return name, reduced, load_stats, {}
    from normscope.fold.distributed import load_on_cluster

    if isinstance(source, Checkpoint):
        raise UsageError("fold on a cluster needs a path or URL, not an opened checkpoint")
    reduced, load_stats, lost = load_on_cluster(
        source, tasks, options.device, options.max_memory, options.cluster, progress, options.token
    )
    load_stats.block_bytes = block_bytes(options.max_memory, name)
    return name, reduced, load_stats, lost
