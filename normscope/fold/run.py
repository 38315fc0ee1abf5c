"""One fold: the light scan, the plans, the matrices to read, the reads (here or on a cluster).

A matrix that cannot be decoded (bitsandbytes int8, MLX group-quantised, an unknown dtype, not
2-D, empty) is not read: it is listed with the reason, and the norms it feeds say so.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from normscope.errors import UsageError
from normscope.fold.consumers import Axis, Plan, plan_all
from normscope.fold.options import ExpertChoice, FoldOptions, require_torch
from normscope.fold.report import build_report, fold_rows
from normscope.schema import TensorRef
from normscope.schema.fold import FoldReport

if TYPE_CHECKING:
    import torch

    from normscope.fold.pipeline import LoadStats, ProgressCallback, Task
    from normscope.sources import Checkpoint, SourceSpec


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
    require_torch()
    from normscope.scanner import ScanOptions, analyze_checkpoint
    from normscope.sources import Checkpoint, open_checkpoint

    started = time.perf_counter()
    experts, device = _checked(options)
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
    tasks, skipped = _tasks(plans, checkpoint.tensors)
    reduced, load_stats, lost = _reduce(source, checkpoint, tasks, device, options, progress)
    skipped = {**skipped, **lost}
    rows, warnings = fold_rows(plans, stats, measured.gains, reduced, skipped, options)
    where = device.type if device.index is None else f"{device.type}:{device.index}"
    return build_report(
        checkpoint, scan, rows, warnings, options, where, tasks, skipped, load_stats, started
    )


def _checked(options: FoldOptions) -> tuple[ExpertChoice, torch.device]:
    """The expert choice and the device, or a UsageError naming the flag that is wrong."""
    try:
        experts = ExpertChoice.parse(options.experts)
    except ValueError as exc:
        raise UsageError(str(exc), "--experts") from None
    from normscope.fold.pipeline import block_bytes, resolve_device

    try:
        device = resolve_device(options.device)
        block_bytes(options.max_memory, device)
    except ValueError as exc:
        raise UsageError(str(exc), "--device" if "device" in str(exc) else "--max-memory") from None
    return experts, device


def _reduce(
    source: str | os.PathLike[str] | SourceSpec | Checkpoint,
    checkpoint: Checkpoint,
    tasks: Sequence[Task],
    device: torch.device,
    options: FoldOptions,
    progress: ProgressCallback | None,
) -> tuple[dict[str, torch.Tensor], LoadStats, dict[str, str]]:
    """Every task's squared column norms, reduced here or on the cluster (none for a dry run),
    what the reads cost, and the matrices lost on the cluster with the reason."""
    from normscope.fold.pipeline import LoadStats, block_bytes, load
    from normscope.sources import Checkpoint

    if options.dry_run or not tasks:
        return {}, LoadStats(block_bytes=block_bytes(options.max_memory, device)), {}
    if options.cluster is None:
        reduced, load_stats = load(checkpoint, tasks, device, options.max_memory, progress)
        return reduced, load_stats, {}
    from normscope.fold.distributed import load_on_cluster

    if isinstance(source, Checkpoint):
        raise UsageError("fold on a cluster needs a path or URL, not an opened checkpoint")
    reduced, load_stats, lost = load_on_cluster(
        source, tasks, options.device, options.max_memory, options.cluster, progress, options.token
    )
    load_stats.block_bytes = block_bytes(options.max_memory, device)
    return reduced, load_stats, lost


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
    """The tasks to read (file order) and the matrices skipped, each with its reason."""
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
