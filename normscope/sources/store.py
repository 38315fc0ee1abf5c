"""The store interface every checkpoint source implements, and the opened `Checkpoint`.

A store is where a checkpoint's files live: a local folder, a Hub repo at one commit, an
object-store prefix, the chunks of a DCP save. It answers three questions — which files are
there, what are the bytes of a small file, what are the bytes at these ranges of a shard — and
counts what it reads. Everything about the safetensors layout (index, shards, headers, tiling)
is checked once, in `layout.py`, over this interface.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from normscope.errors import AnalysisError, SourceError
from normscope.schema import TensorMap, TensorRef
from normscope.sources.safetensors import ShardHeader, summarise


@dataclass
class ReadCounter:
    """Bytes and read calls, counted at the one place data is read."""

    bytes_read: int = 0
    metadata_bytes: int = 0
    reads: int = 0
    requests: int = 0
    """HTTP requests made (Hub sources only)."""
    bytes_transferred: int = 0
    """Response body bytes received over the network (Hub sources only)."""


class ProgressTask(Protocol):
    """One progress bar: advanced from worker threads, closed once."""

    def advance(self, amount: int) -> None: ...

    def close(self) -> None: ...


ProgressFactory = Callable[[str, int], ProgressTask]
"""`factory(description, total)`: how a caller (the CLI) shows long transfers; None: quiet."""

MAX_NORM_ELEMENTS = 1 << 24
"""The widest norm normscope reads: 16.7M channels, 1,000x the widest model's hidden size (16,384
for Llama-3-405B). A header may declare any shape (a sparse file costs nothing on disk); reading
and measuring a norm costs ~40 bytes of memory per element, so this bounds one norm to ~0.7 GB."""
MAX_READ_ELEMENTS = 1 << 25
"""All tensors read at once (the norms of one checkpoint): 8x those of Llama-3-405B (4.1M)."""

MAX_SMALL_FILE = 64 << 20
"""The largest small file read whole: config.json, a shard index, a run configuration (the
largest index known, DeepSeek-V3's, is 8.9 MB). Local, Hub and object-store reads all refuse a
bigger one before reading it, but for a local shard index, which is bounded by the shards' headers
instead (`local.INDEX_PER_HEADER_BYTE`)."""
MAX_DCP_METADATA = 512 << 20
"""The largest DCP `.metadata` read (a pickle of every tensor's chunks, optimizer state
included)."""

Span = tuple[int, int]
"""An absolute byte range [start, end) of a shard."""


class ShortRead(SourceError):
    """A shard ended before a span did: the file changed or is truncated."""

    def __init__(self, shard: str, start: int, end: int) -> None:
        super().__init__(
            f"short read of bytes {start}..{end}: the file changed or is truncated ({shard})"
        )
        self.shard, self.start, self.end = shard, start, end


class Store(Protocol):
    """Where a checkpoint's files are, and how to read byte ranges of them."""

    counter: ReadCounter
    warnings: list[str]

    def path(self, name: str) -> str:
        """How a file is named in messages and in `TensorRef.shard` (a path, `org/name@rev/f`)."""
        ...

    def names(self, suffix: str) -> list[str]:
        """Top-level file names ending in `suffix`."""
        ...

    def size(self, name: str) -> int | None:
        """The size of a file named by the index (None: missing)."""
        ...

    def fetch(self, name: str) -> bytes | None:
        """The whole bytes of a small file (config.json, the index); None when absent."""
        ...

    def headers(self, names: Sequence[str], weight_map: Mapping[str, str] | None) -> list[bytes]:
        """Each shard's 8-byte length prefix and JSON header, in order."""
        ...

    def read(self, spans: Mapping[str, Sequence[Span]]) -> dict[tuple[str, int, int], bytes]:
        """The bytes of each span, by (shard, start, end); shards named as by `path`."""
        ...

    def missing_shard(self, name: str, index: str) -> SourceError:
        """The error for a shard the index names but the store lacks."""
        ...

    def no_shards(self) -> SourceError:
        """The error for a store with no safetensors file."""
        ...


@dataclass
class Checkpoint:
    """An opened checkpoint: its config, its shard headers and a way to read byte ranges."""

    source: str
    config: dict[str, Any] | None
    shards: list[ShardHeader]
    tensors: Mapping[str, TensorRef]
    """Every tensor by name; after a light open (a scan) a `TensorMap`: the names, the refs of
    the gain-shaped and scalar tensors only (`schema.light_kept`)."""
    store: Store
    warnings: list[str] = field(default_factory=list)
    kind: str = "safetensors"
    """The file format: `safetensors` (and the formats read as its layout), or `gguf`, whose
    llama.cpp names `normscope.arch.gguf` classifies."""
    parametrization_said: bool = False
    """The source has warned what it knows of the gains' parametrization (a Megatron save whose
    flag sits in a pickle it never opens): the family's note on it is not said again."""

    @property
    def counter(self) -> ReadCounter:
        """What was read so far (the store counts it)."""
        return self.store.counter

    def dtype_counts(self) -> dict[str, list[int]]:
        """Per dtype, [tensors, bytes] over every tensor of the checkpoint."""
        if not isinstance(self.tensors, TensorMap):
            return summarise(self.tensors.values())
        out: dict[str, list[int]] = {}
        for shard in self.shards:
            for dtype, (count, size) in shard.dtype_counts.items():
                entry = out.setdefault(dtype, [0, 0])
                entry[0] += count
                entry[1] += size
        return out

    @property
    def bytes_total(self) -> int:
        """Total size of the shards."""
        return sum(s.size for s in self.shards)

    def read(self, refs: Sequence[TensorRef]) -> dict[str, bytes]:
        """Read the bytes of each tensor in `refs` (and nothing else); return them by name.

        Refuses (AnalysisError) a tensor wider than MAX_NORM_ELEMENTS, and more than
        MAX_READ_ELEMENTS in all, before reading anything: memory stays bounded whatever a
        header declares.
        """
        check_read_budget(refs, self.source)
        spans: dict[str, list[Span]] = {}
        for ref in refs:
            spans.setdefault(ref.shard, []).append((ref.start, ref.end))
        try:
            data = self.store.read(spans)
        except ShortRead as exc:
            span = (exc.shard, exc.start, exc.end)
            name = next((r.name for r in refs if (r.shard, r.start, r.end) == span), "?")
            raise SourceError(
                f"short read of tensor '{name}': the file changed or is truncated ({exc.shard})"
            ) from None
        out = {ref.name: data[(ref.shard, ref.start, ref.end)] for ref in refs}
        self.counter.bytes_read += sum(len(v) for v in out.values())
        self.counter.reads += len(out)
        return out

    def read_span(self, ref: TensorRef, start: int, end: int) -> bytes:
        """Bytes [start, end) of one tensor's data, offsets relative to the tensor (row blocks)."""
        if not 0 <= start <= end <= ref.nbytes:
            raise ValueError(f"span {start}..{end} outside tensor '{ref.name}' ({ref.nbytes} B)")
        key = (ref.shard, ref.start + start, ref.start + end)
        data = self.store.read({ref.shard: [key[1:]]})[key]
        self.counter.bytes_read += len(data)
        self.counter.reads += 1
        return data


def check_read_budget(refs: Sequence[TensorRef], source: str) -> None:
    """Refuse (AnalysisError) a tensor wider than MAX_NORM_ELEMENTS, or more than
    MAX_READ_ELEMENTS in all, before anything is read: every store's `Checkpoint.read` calls it,
    so memory stays bounded whatever a header or a DCP `.metadata` declares."""
    total = 0
    for ref in refs:
        if ref.numel > MAX_NORM_ELEMENTS:
            raise AnalysisError(
                f"tensor '{ref.name}' has {ref.numel} elements (shape {list(ref.shape)}): "
                f"wider than any model's norm (at most {MAX_NORM_ELEMENTS}); not read "
                f"({ref.shard})"
            )
        total += ref.numel
    if total > MAX_READ_ELEMENTS:
        raise AnalysisError(
            f"the {len(refs)} norm tensors to read hold {total} elements in all, more than "
            f"any model's norms (at most {MAX_READ_ELEMENTS}) ({source})"
        )


def hf_cache_folder(kind: str) -> Path:
    """huggingface_hub's `hub` or `assets` cache folder, as its `constants` computes it, without
    importing it: $HF_<KIND>_CACHE, else the legacy $HUGGINGFACE_<KIND>_CACHE, else
    $HF_HOME/<kind>, with HF_HOME defaulting to `$XDG_CACHE_HOME/huggingface` or
    `~/.cache/huggingface`."""
    upper = kind.upper()
    folder = os.environ.get(f"HF_{upper}_CACHE") or os.environ.get(f"HUGGINGFACE_{upper}_CACHE")
    if not folder:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        home = os.environ.get("HF_HOME") or os.path.join(xdg, "huggingface")
        folder = os.path.join(home, kind)
    return Path(os.path.expandvars(folder)).expanduser()


def cache_root() -> Path:
    """normscope's cache folder: $NORMSCOPE_CACHE, else `normscope/` in HF's assets cache."""
    explicit = os.environ.get("NORMSCOPE_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    return hf_cache_folder("assets") / "normscope"


CACHE_MAGIC = b"normscope cache\x01"
"""The first 16 bytes of every cache entry, then the SHA-256 of its content, then the content."""
_DIGEST = 32
"""The size of a SHA-256 digest (hashlib and secrets are imported when a cache entry is read or
written: ~5 ms of every `--no-cache` start-up otherwise)."""
CORRUPT_CACHE = "a corrupt entry of the normscope cache was dropped and read again from the source"


def write_cache_file(path: Path, data: bytes, *, digest: bool = True) -> None:
    """Write one file of normscope's cache atomically: a temporary file beside it, then
    `os.replace`, so a reader sees the old file or the new one, never half of one. The folder is
    created; on failure the temporary file is removed and the OSError raised (each cache decides
    how to say it: caches are best-effort, never an error).

    With `digest` (every entry; not CACHEDIR.TAG, whose first line is a standard), the content
    is framed by `CACHE_MAGIC` and its SHA-256, which `read_cache_file` checks."""
    import hashlib
    import secrets

    path.parent.mkdir(parents=True, exist_ok=True)
    # NOTE: the name is chosen before the file exists (not mkstemp), so that an interrupt
    # (SIGINT, SIGTERM: raised between any two bytecodes) can never leave a file that the
    # cleanup below does not know of.
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            if digest:
                handle.write(CACHE_MAGIC + hashlib.sha256(data).digest())
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_cache_file(path: Path, warnings: list[str]) -> bytes | None:
    """The content of a cache entry that `write_cache_file` wrote, if it is intact; None when
    there is none. An entry whose digest does not match (a flipped bit, an edit, a torn or
    foreign file) is deleted and reads as a miss, so the caller fetches it again; the first
    such entry of a run is said once in `warnings`, with the way to empty the cache."""
    import hashlib

    try:
        raw = path.read_bytes()
    except OSError:
        return None
    head = len(CACHE_MAGIC) + _DIGEST
    body = memoryview(raw)[head:]
    if (
        raw[: len(CACHE_MAGIC)] == CACHE_MAGIC
        and hashlib.sha256(body).digest() == raw[len(CACHE_MAGIC) : head]
    ):
        return bytes(body)
    with contextlib.suppress(OSError):
        path.unlink()
    if not any(w.startswith(CORRUPT_CACHE) for w in warnings):
        warnings.append(
            f"{CORRUPT_CACHE} ({path}); if it happens again, check the disk, or empty the cache "
            "with `normscope cache --clear`"
        )
    return None
