"""Which matrices a fold reads, and how, decided without torch: the tasks, the device, the blocks.

Everything a fold knows before it computes — the matrices to read in file order, the ones
skipped with the reason, the device as asked for, the row-block size the memory budget gives —
is plain data here, so `fold --dry-run` (the plan only) never imports torch. torch is imported
once a fold starts reducing (`pipeline.py`, `metrics.py`), after the plan is known.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from normscope.fold.consumers import Axis, Plan
from normscope.schema import TensorRef

MiB = 1 << 20
DEPTH = 2
"""Blocks queued between the reader and the reducer."""
MAX_BLOCK = 64 * MiB
"""Largest row block, whatever the budget: smaller blocks overlap reading and compute sooner."""
CPU_BLOCK = 2 * MiB
"""Largest row block on the CPU: the reader's copy is still in the cache when the reducer reads
it. 64 MiB blocks (four 64 MiB buffers, first touched by the reads) folded the 0.7 GB of the
fold benchmark at 1.6-1.9 GB/s, 2 MiB blocks at 3.2-4.5 GB/s (benchmarks/RESULTS.md)."""
RESERVE = 48 * MiB
"""Working memory besides the blocks: float32 chunks, scale expansions, accumulators."""
MIN_MEMORY = 128 * MiB

DECODABLE: dict[str, str] = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}
"""safetensors dtypes that fold decodes, with the torch dtype's name (`metrics.TORCH_DTYPES`);
anything else (I8, U8, U32 packs, F4...) is skipped with the reason."""

AUTO = "auto"
_DEVICE = re.compile(r"^(cpu|cuda)(?::(\d+))?$")


@dataclass(frozen=True, slots=True)
class Task:
    """One matrix to reduce: its bytes, the axis, an optional dequantisation scale."""

    ref: TensorRef
    rows_axis: bool
    scale: TensorRef | None = None


@dataclass(frozen=True, slots=True)
class FoldProgress:
    """What the loader has done so far (the CLI draws it as a bar with bytes/s)."""

    bytes_done: int
    bytes_total: int
    seconds: float

    @property
    def rate(self) -> float:
        """Bytes per second so far."""
        return self.bytes_done / self.seconds if self.seconds > 0 else 0.0


ProgressCallback = Callable[[FoldProgress], None]


@dataclass
class LoadStats:
    """Where the time and memory went."""

    bytes_read: int = 0
    blocks: int = 0
    block_bytes: int = 0
    """The row-block size used (bytes)."""
    peak_buffered_bytes: int = 0
    """Most bytes of blocks held at once (read, queued, reducing)."""
    read_seconds: float = 0.0
    """Reader thread: time inside reads."""
    compute_seconds: float = 0.0
    """Calling thread: time reducing blocks (on CUDA: launching, plus the final wait)."""
    wait_seconds: float = 0.0
    """Calling thread: time waiting for the reader (I/O-bound when large)."""
    warnings: list[str] = field(default_factory=list)


def parse_device(spec: str) -> str:
    """'auto', 'cpu', 'cuda' or 'cuda:N', checked by its spelling only: whether torch sees
    that CUDA device is known once torch is imported (`pipeline.resolve_device`)."""
    if spec == AUTO or _DEVICE.match(spec):
        return spec
    raise ValueError(f"unsupported device '{spec}' (auto, cpu, cuda or cuda:N)")


def block_bytes(max_memory: int, device: str) -> int:
    """The row-block size that keeps every block in flight within `max_memory` on `device`
    ('cpu', 'cuda', 'cuda:N'; 'auto' unresolved: the CUDA size, which fits either device)."""
    if max_memory < MIN_MEMORY:
        raise ValueError(f"--max-memory must be at least {MIN_MEMORY // MiB} MB")
    cpu = device.split(":")[0] == "cpu"
    slots = DEPTH + 2 + (0 if cpu else 2)  # CUDA: plus two pinned staging buffers
    # NOTE: CUDA keeps the large blocks: each is one pinned copy and a few kernel launches.
    largest = min(MAX_BLOCK, CPU_BLOCK) if cpu else MAX_BLOCK
    return min(largest, (max_memory - RESERVE) // slots)


def plan_tasks(
    plans: Sequence[Plan], tensors: Mapping[str, TensorRef]
) -> tuple[list[Task], dict[str, str]]:
    """The tasks to read (file order) and the matrices skipped, each with its reason."""
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


def planned_bytes(tasks: Sequence[Task]) -> int:
    """The bytes a fold reads beyond the scan: every matrix and its scale."""
    return sum(t.ref.nbytes + (t.scale.nbytes if t.scale else 0) for t in tasks)


def _scale_of(name: str, tensors: Mapping[str, TensorRef]) -> TensorRef | None:
    stem = name[: -len("weight")] if name.endswith("weight") else name + "_"
    for suffix in ("weight_scale_inv", "weight_scale", "scale_inv", "scale"):
        ref = tensors.get(stem + suffix)
        if ref is not None and ref.dtype in ("F32", "BF16", "F16", "F64"):
            return ref
    return None


def _undecodable(ref: TensorRef, tensors: Mapping[str, TensorRef]) -> str | None:
    stem = ref.name[: -len("weight")] if ref.name.endswith("weight") else ref.name + "."
    if stem + "SCB" in tensors:
        return "bitsandbytes int8 (SCB) is not decoded"
    if stem + "scales" in tensors or stem + "biases" in tensors:
        return "MLX/group-quantised weights (scales, biases) are not decoded"
    if ref.dtype not in DECODABLE:
        return f"dtype {ref.dtype} is not decoded (BF16, F16, F32, F8_E4M3, F8_E5M2 are)"
    if len(ref.shape) != 2:
        return f"{len(ref.shape)}-D weights {list(ref.shape)} are not decoded (2-D only)"
    if ref.nbytes == 0:
        return "empty tensor"
    return None
