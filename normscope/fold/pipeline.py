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
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from normscope.errors import SourceError
from normscope.fold.metrics import CHUNK_ELEMENTS, TORCH_DTYPES, Reducer, Workspace
from normscope.fold.tasks import (
    AUTO,
    DEPTH,
    FoldProgress,
    LoadStats,
    ProgressCallback,
    Task,
    block_bytes,
    parse_device,
    planned_bytes,
)
from normscope.schema import TensorRef
from normscope.sources import Checkpoint
from normscope.sources.local import LocalStore


def resolve_device(spec: str) -> torch.device:
    """'auto' (CUDA when torch sees one), 'cpu', 'cuda' or 'cuda:N', as torch sees it."""
    spec = parse_device(spec)
    if spec == AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: torch sees no CUDA device (a CPU-only torch build?)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s)")
    return device


def device_name(device: torch.device) -> str:
    """How the report names the device a fold ran on: `cpu`, `cuda`, `cuda:1`."""
    return device.type if device.index is None else f"{device.type}:{device.index}"


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
    return _Loader(checkpoint, tasks, device, max_memory, progress).run()


class _Loader:
    """One load: the reader thread and its bounded queue, the recycled buffers, the reducers."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        tasks: Sequence[Task],
        device: torch.device,
        max_memory: int,
        progress: ProgressCallback | None,
    ) -> None:
        self.checkpoint = checkpoint
        self.device = device
        self.progress = progress
        self.stats = stats = LoadStats(block_bytes=block_bytes(max_memory, device_name(device)))
        self.items = [(t, r0, r1) for t in tasks for r0, r1 in row_blocks(t.ref, stats.block_bytes)]
        self.total = planned_bytes(tasks)
        self.queue: queue.Queue[object] = queue.Queue(maxsize=DEPTH)
        self.stop = threading.Event()
        self.held = 0  # bytes of blocks alive (reader + queue + reducer)
        self.held_lock = threading.Lock()
        self.local, self.free = self._buffers(tasks)
        self.reducers: dict[str, Reducer] = {}
        self.finished: dict[str, torch.Tensor] = {}
        self.remaining: dict[str, int] = {}
        for task, _, _ in self.items:
            self.remaining[task.ref.name] = self.remaining.get(task.ref.name, 0) + 1
        widest = max((task.ref.shape[1] for task in tasks), default=1)
        self.workspace = Workspace(max(CHUNK_ELEMENTS, widest), device)
        self.cuda = device.type == "cuda"
        self.staging: list[torch.Tensor] = []
        self.events: list[torch.cuda.Event | None] = [None, None]
        if self.cuda:
            self.staging = [
                torch.empty(stats.block_bytes, dtype=torch.uint8, pin_memory=True) for _ in range(2)
            ]
        self.started = 0.0
        self.done = 0

    def _buffers(self, tasks: Sequence[Task]) -> tuple[bool, queue.Queue[bytearray]]:
        """Whether the shards are local, and the pool of recycled block buffers if they are."""
        # NOTE: local shards are read into a fixed pool of recycled buffers. Fresh `bytes` per
        # block let glibc's per-thread arenas keep freed blocks: on the DeepSeek-V3 replica
        # (25 GB of consumers, 256 MB budget) RSS reached 8.7 GB with them, and page faults cost
        # time.
        local = isinstance(self.checkpoint.store, LocalStore)
        free: queue.Queue[bytearray] = queue.Queue()
        if local:
            size = max((min(task.ref.nbytes, self.stats.block_bytes) for task in tasks), default=0)
            for _ in range(DEPTH + 2):
                free.put(bytearray(size))
        return local, free

    def run(self) -> tuple[dict[str, torch.Tensor], LoadStats]:
        """Read in the reader thread, reduce here, block by block; the squared norms on the CPU."""
        thread = threading.Thread(target=self._read_all, name="normscope-fold-reader", daemon=True)
        self.started = time.perf_counter()
        threads = torch.get_num_threads()
        if not self.cuda:
            # NOTE: leave a core to the reader thread. torch's OpenMP workers spin while they
            # wait, and with every core busy they stall behind the reader's memcpy: on 2 cores,
            # 2 workers plus the reader reduced at 0.15-0.35 GB/s, 1 worker at 1.2+ GB/s
            # (page-cached BF16).
            torch.set_num_threads(max(1, min(threads, _cpus() - 1)))
        thread.start()
        try:
            while (block := self._next_block()) is not None:
                self._reduce(block)
                del block
            t0 = time.perf_counter()
            out = {name: acc.to("cpu") for name, acc in self.finished.items()}  # waits for device
            self.stats.compute_seconds += time.perf_counter() - t0
        finally:
            self.stop.set()
            thread.join()
            torch.set_num_threads(threads)
        return out, self.stats

    # --- the reader thread -----------------------------------------------------------------

    def _hold(self, n: int) -> None:
        with self.held_lock:
            self.held += n
            self.stats.peak_buffered_bytes = max(self.stats.peak_buffered_bytes, self.held)

    def _put(self, item: object) -> bool:
        """Queue an item, unless the calling thread has stopped listening."""
        while not self.stop.is_set():
            with contextlib.suppress(queue.Full):
                self.queue.put(item, timeout=0.1)
                return True
        return False

    def _read_all(self) -> None:
        """The reader thread: every row block in order, then the end (or the exception)."""
        try:
            for task, r0, r1 in self.items:
                if self.stop.is_set():
                    return
                if not self._put(self._read_block(task, r0, r1)):
                    return
            self._put(_STOP)
        except BaseException as exc:  # handed to the calling thread, which raises it
            self._put(exc)

    def _read_block(self, task: Task, r0: int, r1: int) -> _Block:
        """Rows [r0, r1) of a task's matrix (and its scale, with the first block)."""
        checkpoint = self.checkpoint
        row_bytes = task.ref.nbytes // task.ref.shape[0]
        scale = None
        if task.scale is not None and r0 == 0:
            scale = checkpoint.read([task.scale])[task.scale.name]
        n = (r1 - r0) * row_bytes
        buffer = None
        if self.local:
            buffer = self.free.get()  # blocks while every buffer is in flight
        self._hold(n)
        started = time.perf_counter()
        if buffer is not None:
            data: bytes | memoryview = _pread_into(buffer, task.ref, r0 * row_bytes, n)
            checkpoint.counter.bytes_read += n
            checkpoint.counter.reads += 1
        else:
            data = checkpoint.read_span(task.ref, r0 * row_bytes, r1 * row_bytes)
        self.stats.read_seconds += time.perf_counter() - started
        return _Block(task, r0, data, scale, buffer)

    # --- the calling thread ----------------------------------------------------------------

    def _next_block(self) -> _Block | None:
        """The next block read, None at the end; an exception of the reader is raised here."""
        t0 = time.perf_counter()
        item = self.queue.get()
        self.stats.wait_seconds += time.perf_counter() - t0
        if item is _STOP:
            return None
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, _Block)
        return item

    def _reduce(self, block: _Block) -> None:
        """Add one block to its matrix's reducer; keep the vector once the matrix is done."""
        stats, task, data, scale_bytes = self.stats, block.task, block.data, block.scale
        t0 = time.perf_counter()
        name = task.ref.name
        if name not in self.reducers:
            self.reducers[name] = self._reducer_for(task, scale_bytes)
        raw = self._on_device(_view(data))
        self.reducers[name].add(raw, block.row0)
        del raw
        self.remaining[name] -= 1
        if not self.remaining[name]:  # free the scale and indices now, keep the vector
            self.finished[name] = self.reducers.pop(name).acc
        stats.compute_seconds += time.perf_counter() - t0
        stats.blocks += 1
        n = len(data)
        stats.bytes_read += n + (len(scale_bytes) if scale_bytes else 0)
        self.done += n + (len(scale_bytes) if scale_bytes else 0)
        if block.buffer is not None:
            self.free.put(block.buffer)
        del data
        self._hold(-n)
        if self.progress is not None:
            elapsed = time.perf_counter() - self.started
            self.progress(FoldProgress(self.done, self.total, elapsed))

    def _reducer_for(self, task: Task, scale_bytes: bytes | None) -> Reducer:
        scale = None
        if scale_bytes is not None and task.scale is not None:
            scale = _scale_tensor(scale_bytes, task.scale, self.device)
        shape = (task.ref.shape[0], task.ref.shape[1])
        return Reducer(task.ref.dtype, shape, task.rows_axis, self.workspace, scale)

    def _on_device(self, raw: torch.Tensor) -> torch.Tensor:
        """The block's bytes on the device: on CUDA through alternating pinned staging buffers,
        each guarded by an event, so this copy overlaps the kernels of the previous block."""
        if not self.cuda:
            return raw
        slot = self.stats.blocks % 2
        event = self.events[slot]
        if event is not None:
            event.synchronize()  # the previous copy out of this buffer is done
        pinned = self.staging[slot][: raw.numel()]
        pinned.copy_(raw)
        raw = pinned.to(self.device, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self.events[slot] = event
        return raw


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
