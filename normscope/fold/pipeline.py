"""The bounded streaming loader: consumer matrices from the shards to the device, block by block.

A reader thread reads row blocks with `Checkpoint.read_span` (positioned reads of local shards,
ranged GETs on the Hub) into a bounded queue while the calling thread reduces the previous block
on the device: I/O and compute overlap, and at most `depth + 2` blocks exist at once (one being
read, `depth` queued, one being reduced; plus two pinned staging buffers on CUDA). Block size is
derived from the memory budget, so a matrix larger than the budget (a 405B-class head, ~4 GB) is
read and reduced in row blocks and never exists whole in memory, in any precision.

On CUDA each block is copied into a pinned host buffer and sent with a non-blocking copy; the two
staging buffers alternate, each guarded by an event, so the copy of block k+1 overlaps the
kernels of block k. On the CPU the block's bytes are viewed in place (no copy).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from normscope.errors import SourceError
from normscope.fold.metrics import CHUNK_ELEMENTS, TORCH_DTYPES, Reducer, Workspace
from normscope.schema import TensorRef
from normscope.sources import Checkpoint
from normscope.sources.local import LocalStore

MiB = 1 << 20
DEPTH = 2
"""Blocks queued between the reader and the reducer."""
MAX_BLOCK = 64 * MiB
"""Largest row block, whatever the budget: smaller blocks overlap reading and compute sooner."""
RESERVE = 48 * MiB
"""Working memory besides the blocks: float32 chunks, scale expansions, accumulators."""
MIN_MEMORY = 128 * MiB


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


def resolve_device(spec: str) -> torch.device:
    """'auto' (CUDA when torch sees one), 'cpu', 'cuda' or 'cuda:N'."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"unknown device '{spec}' (auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: torch sees no CUDA device (a CPU-only torch build?)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise ValueError(f"unsupported device '{spec}' (auto, cpu, cuda or cuda:N)")
    return device


def block_bytes(max_memory: int, device: torch.device) -> int:
    """The row-block size that keeps every block in flight within `max_memory`."""
    if max_memory < MIN_MEMORY:
        raise ValueError(f"--max-memory must be at least {MIN_MEMORY // MiB} MB")
    slots = DEPTH + 2 + (2 if device.type == "cuda" else 0)
    return min(MAX_BLOCK, (max_memory - RESERVE) // slots)


def row_blocks(ref: TensorRef, limit: int) -> list[tuple[int, int]]:
    """Row ranges [r0, r1) of a 2-D tensor, each at most `limit` bytes (at least one row)."""
    rows = ref.shape[0]
    row_bytes = max(1, ref.nbytes // max(1, rows))
    step = max(1, limit // row_bytes)
    return [(r, min(rows, r + step)) for r in range(0, rows, step)]


def _pread_into(buffer: bytearray, ref: TensorRef, offset: int, n: int) -> memoryview:
    """Bytes [offset, offset + n) of a local tensor, read into `buffer` (no allocation)."""
    view = memoryview(buffer)[:n]
    fd = os.open(ref.shard, os.O_RDONLY)
    try:
        got = 0
        while got < n:
            read = os.preadv(fd, [view[got:]], ref.start + offset + got)
            if read == 0:
                raise SourceError(
                    f"short read of tensor '{ref.name}': the file changed or is truncated "
                    f"({ref.shard})"
                )
            got += read
    finally:
        os.close(fd)
    return view


def _view(data: bytes | memoryview) -> torch.Tensor:
    # NOTE: the block is only read, never written; torch warns that the bytes are immutable.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.frombuffer(data, dtype=torch.uint8)


def _scale_tensor(data: bytes, ref: TensorRef, device: torch.device) -> torch.Tensor:
    t = _view(data).view(TORCH_DTYPES[ref.dtype]).reshape(ref.shape or (1,))
    return t.to(device=device, dtype=torch.float32)


_STOP = object()


@dataclass(frozen=True, slots=True)
class _Block:
    """Rows [row0, row0 + n) of one task's matrix, as read (and its scale, with the first)."""

    task: Task
    row0: int
    data: bytes | memoryview
    scale: bytes | None
    buffer: bytearray | None = None
    """The recycled buffer `data` lives in (local shards), given back once reduced."""


def load(
    checkpoint: Checkpoint,
    tasks: Sequence[Task],
    device: torch.device,
    max_memory: int,
    progress: ProgressCallback | None = None,
) -> tuple[dict[str, torch.Tensor], LoadStats]:
    """Reduce every task's matrix; return squared norms (float64, on the CPU) by tensor name."""
    stats = LoadStats(block_bytes=block_bytes(max_memory, device))
    items = [(task, r0, r1) for task in tasks for r0, r1 in row_blocks(task.ref, stats.block_bytes)]
    total = sum(task.ref.nbytes + (task.scale.nbytes if task.scale else 0) for task in tasks)
    q: queue.Queue[object] = queue.Queue(maxsize=DEPTH)
    stop = threading.Event()
    held = [0]  # bytes of blocks alive (reader + queue + reducer)
    held_lock = threading.Lock()

    def hold(n: int) -> None:
        with held_lock:
            held[0] += n
            stats.peak_buffered_bytes = max(stats.peak_buffered_bytes, held[0])

    def put(item: object) -> bool:
        """Queue an item, unless the calling thread has stopped listening."""
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                q.put(item, timeout=0.1)
                return True
        return False

    def reader() -> None:
        try:
            for task, r0, r1 in items:
                if stop.is_set():
                    return
                row_bytes = task.ref.nbytes // task.ref.shape[0]
                scale = None
                if task.scale is not None and r0 == 0:
                    scale = checkpoint.read([task.scale])[task.scale.name]
                n = (r1 - r0) * row_bytes
                buffer = None
                if local:
                    buffer = free.get()  # blocks while every buffer is in flight
                hold(n)
                started = time.perf_counter()
                if buffer is not None:
                    data: bytes | memoryview = _pread_into(buffer, task.ref, r0 * row_bytes, n)
                    checkpoint.counter.bytes_read += n
                    checkpoint.counter.reads += 1
                else:
                    data = checkpoint.read_span(task.ref, r0 * row_bytes, r1 * row_bytes)
                stats.read_seconds += time.perf_counter() - started
                if not put(_Block(task, r0, data, scale, buffer)):
                    return
            put(_STOP)
        except BaseException as exc:  # handed to the calling thread, which raises it
            put(exc)

    # NOTE: local shards are read into a fixed pool of recycled buffers. Fresh `bytes` per block
    # let glibc's per-thread arenas keep freed blocks: on the DeepSeek-V3 replica (25 GB of
    # consumers, 256 MB budget) RSS reached 8.7 GB with them, and page faults cost time.
    local = isinstance(checkpoint.store, LocalStore)
    free: queue.Queue[bytearray] = queue.Queue()
    if local:
        size = max((min(task.ref.nbytes, stats.block_bytes) for task in tasks), default=0)
        for _ in range(DEPTH + 2):
            free.put(bytearray(size))
    thread = threading.Thread(target=reader, name="normscope-fold-reader", daemon=True)
    reducers: dict[str, Reducer] = {}
    finished: dict[str, torch.Tensor] = {}
    remaining: dict[str, int] = {}
    for task, _, _ in items:
        remaining[task.ref.name] = remaining.get(task.ref.name, 0) + 1
    widest = max((task.ref.shape[1] for task in tasks), default=1)
    workspace = Workspace(max(CHUNK_ELEMENTS, widest), device)
    cuda = device.type == "cuda"
    staging: list[torch.Tensor] = []
    events: list[torch.cuda.Event | None] = [None, None]
    if cuda:
        staging = [
            torch.empty(stats.block_bytes, dtype=torch.uint8, pin_memory=True) for _ in range(2)
        ]
    started = time.perf_counter()
    done = 0
    threads = torch.get_num_threads()
    if not cuda:
        # NOTE: leave a core to the reader thread. torch's OpenMP workers spin while they wait,
        # and with every core busy they stall behind the reader's memcpy: on 2 cores, 2 workers
        # plus the reader reduced at 0.15-0.35 GB/s, 1 worker at 1.2+ GB/s (page-cached BF16).
        torch.set_num_threads(max(1, min(threads, _cpus() - 1)))
    thread.start()
    try:
        while True:
            t0 = time.perf_counter()
            item = q.get()
            stats.wait_seconds += time.perf_counter() - t0
            if item is _STOP:
                break
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, _Block)
            task, r0, data, scale_bytes = item.task, item.row0, item.data, item.scale
            t0 = time.perf_counter()
            name = task.ref.name
            if name not in reducers:
                scale = None
                if scale_bytes is not None and task.scale is not None:
                    scale = _scale_tensor(scale_bytes, task.scale, device)
                reducers[name] = Reducer(
                    task.ref.dtype,
                    (task.ref.shape[0], task.ref.shape[1]),
                    task.rows_axis,
                    workspace,
                    scale,
                )
            raw = _view(data)
            if cuda:
                slot = stats.blocks % 2
                event = events[slot]
                if event is not None:
                    event.synchronize()  # the previous copy out of this buffer is done
                pinned = staging[slot][: raw.numel()]
                pinned.copy_(raw)
                raw = pinned.to(device, non_blocking=True)
                event = torch.cuda.Event()
                event.record()
                events[slot] = event
            reducers[name].add(raw, r0)
            del raw
            remaining[name] -= 1
            if not remaining[name]:  # free the scale and indices now, keep the vector
                finished[name] = reducers.pop(name).acc
            stats.compute_seconds += time.perf_counter() - t0
            stats.blocks += 1
            n = len(data)
            stats.bytes_read += n + (len(scale_bytes) if scale_bytes else 0)
            done += n + (len(scale_bytes) if scale_bytes else 0)
            if item.buffer is not None:
                free.put(item.buffer)
            del data, item
            hold(-n)
            if progress is not None:
                progress(FoldProgress(done, total, time.perf_counter() - started))
        t0 = time.perf_counter()
        out = {name: acc.to("cpu") for name, acc in finished.items()}  # waits for the device
        stats.compute_seconds += time.perf_counter() - t0
    finally:
        stop.set()
        thread.join()
        torch.set_num_threads(threads)
    return out, stats


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
