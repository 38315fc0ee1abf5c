"""`normscope fold` on a cluster: the matrices of one checkpoint, in tensor sets, as units of work.

The unit is what `pipeline.load` does for the whole checkpoint, for a share of its matrices: each
worker opens the checkpoint itself (a path, a Hub repo, an object-store URL its nodes can read),
reads and reduces its matrices, and sends back one float64 vector per matrix. Every matrix is
reduced whole within one unit, so the pooled `c` of each norm — the driver sums the vectors as a
local fold does — is the same to the bit as the local executor's. A unit whose worker is lost is
retried (`executors`); one that is lost every time becomes a skipped matrix with the reason, so
its norms are reported `skipped`, never folded from part of their consumers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from normscope.executors import ClusterSpec, Lost, cluster
from normscope.sources.spec import SourceSpec

if TYPE_CHECKING:
    import numpy as np
    import torch

    from normscope.fold.tasks import LoadStats, ProgressCallback, Task


@dataclass(frozen=True, slots=True)
class Unit:
    """One unit of work: a checkpoint and the names of the matrices to reduce in it."""

    source: str | SourceSpec
    """The checkpoint as parsed on the driver (`sources.SourceSpec` pickles: no re-parsing)."""
    tensors: tuple[tuple[str, bool, str | None], ...]
    """(matrix name, reduce over rows, dequantisation scale name) per matrix."""
    device: str
    max_memory: int
    token: str | None = field(default=None, repr=False)
    """The `--token` of a Hub source, for the worker's reads (None: the worker's own)."""


@dataclass(frozen=True, slots=True)
class Reduced:
    """What a unit sends back: one float64 vector per matrix, and what it cost."""

    vectors: dict[str, np.ndarray]
    bytes_read: int
    blocks: int
    peak_buffered_bytes: int
    read_seconds: float
    compute_seconds: float
    wait_seconds: float


def reduce_unit(unit: Unit) -> Reduced:
    """Open the checkpoint on this worker and reduce the unit's matrices (runs on the worker)."""
    import torch  # noqa: F401  # the worker needs it: fail here, not mid-read

    from normscope.fold.pipeline import load, resolve_device
    from normscope.fold.tasks import Task
    from normscope.sources import open_checkpoint

    checkpoint = open_checkpoint(unit.source, token=unit.token)
    tensors = checkpoint.tensors
    tasks = [
        Task(tensors[name], rows, tensors[scale] if scale else None)
        for name, rows, scale in unit.tensors
    ]
    reduced, stats = load(checkpoint, tasks, resolve_device(unit.device), unit.max_memory)
    return Reduced(
        {name: vec.numpy() for name, vec in reduced.items()},
        stats.bytes_read,
        stats.blocks,
        stats.peak_buffered_bytes,
        stats.read_seconds,
        stats.compute_seconds,
        stats.wait_seconds,
    )


def split(tasks: Sequence[Task], units: int) -> list[list[Task]]:
    """`units` tensor sets of about equal bytes, each in file order (longest first, greedy)."""
    bins: list[list[Task]] = [[] for _ in range(max(1, min(units, len(tasks))))]
    sizes = [0] * len(bins)
    for task in sorted(tasks, key=lambda t: -t.ref.nbytes):
        k = sizes.index(min(sizes))
        bins[k].append(task)
        sizes[k] += task.ref.nbytes + (task.scale.nbytes if task.scale else 0)
    return [sorted(b, key=lambda t: (t.ref.shard, t.ref.start)) for b in bins if b]


def load_on_cluster(
    source: str | os.PathLike[str] | SourceSpec,
    tasks: Sequence[Task],
    device: str,
    max_memory: int,
    spec: ClusterSpec,
    progress: ProgressCallback | None = None,
    token: str | None = None,
) -> tuple[dict[str, torch.Tensor], LoadStats, dict[str, str]]:
    """Reduce `tasks` on the cluster; return the vectors, the summed costs and the matrices
    lost (name -> reason)."""
    import torch

    from normscope.fold.tasks import FoldProgress, LoadStats

    reduced: dict[str, torch.Tensor] = {}
    lost: dict[str, str] = {}
    stats = LoadStats()
    total = sum(t.ref.nbytes + (t.scale.nbytes if t.scale else 0) for t in tasks)
    with cluster(spec) as engine:
        groups = split(tasks, 2 * engine.slots)
        units = [
            _unit(
                source if isinstance(source, SourceSpec) else os.fspath(source),
                group,
                device,
                max_memory,
                token,
            )
            for group in groups
        ]
        for group, result in zip(groups, engine.map_ordered(reduce_unit, units), strict=True):
            if isinstance(result, Lost):
                lost.update({t.ref.name: f"lost on the cluster: {result.reason}" for t in group})
                continue
            reduced.update({k: torch.from_numpy(v) for k, v in result.vectors.items()})
            _add(stats, result)
            if progress is not None:
                progress(FoldProgress(stats.bytes_read, total, stats.read_seconds))
    return reduced, stats, lost


def _unit(
    source: str | SourceSpec,
    group: Sequence[Task],
    device: str,
    max_memory: int,
    token: str | None = None,
) -> Unit:
    entries = tuple((t.ref.name, t.rows_axis, t.scale.name if t.scale else None) for t in group)
    return Unit(source, entries, device, max_memory, token)


def _add(stats: LoadStats, result: Reduced) -> None:
    stats.bytes_read += result.bytes_read
    stats.blocks += result.blocks
    stats.peak_buffered_bytes = max(stats.peak_buffered_bytes, result.peak_buffered_bytes)
    stats.read_seconds += result.read_seconds
    stats.compute_seconds += result.compute_seconds
    stats.wait_seconds += result.wait_seconds


def vectors_of(reduced: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The reduced vectors as numpy arrays (for comparisons in tests and benchmarks)."""
    return {k: v.numpy() for k, v in reduced.items()}
