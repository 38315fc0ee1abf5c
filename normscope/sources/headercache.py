"""The local header cache: a re-scan of an unchanged local checkpoint skips parsing its layout.

A scan of DeepSeek-V3 (163 shards, 92k tensors) spends most of its own time reading and
validating 11.5 MB of headers and the 8.9 MB index. For a local checkpoint whose files have not
changed since the last scan, the result of that work — the config, every shard's validated
header (its `TensorRef`s and metadata) and the warnings — is kept in one file under normscope's
cache folder (`<cache>/layouts/`) and read back instead.

NOTE: why serving the cached result is safe. The entry is keyed on every file the layout was
read from (config.json, the index, each shard, and which of them exist), each by its size,
mtime_ns, ctime_ns, inode and device, taken BEFORE the files were read. A file's bytes cannot
change without changing one of these: writing moves mtime and ctime, truncating moves the size,
replacing (`mv`, a fresh download) moves the inode, and `cp -p` over a shard (same size, mtime
set back) moves the ctime, which no unprivileged call can set. The one gap is the timestamp
clock's granularity: a file written in the same clock tick as the stat could keep its times (the
"racy git" problem), so a layout holding a file changed less than `RACY_SECONDS` before the
stat is not cached. Stats taken before reading also mean a file changed while it was being read
is recorded with its old times, so the entry can never match again. Every entry carries the
SHA-256 of its content (`store.write_cache_file`): an entry changed on disk since (a flipped bit,
an edit that keeps the checkpoint's stats) is dropped, said once, and the checkpoint parsed
again; anything else unexpected (another version's format) is a quiet miss.
Writes are atomic (a temporary file, then `os.replace`) and best-effort (a cache that cannot be
written is a warning, never an error). `--no-cache` (or `NORMSCOPE_NO_CACHE=1`, which
`normscope.settings` reads) turns it off.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

import msgspec

from normscope.schema import Leaves, TensorRef
from normscope.sources.safetensors import INDEX_SUFFIX, ShardHeader
from normscope.sources.store import cache_root, read_cache_file, write_cache_file
from normscope.version import __version__

FORMAT = 6
"""Bumped when the entry's layout or the validation it stands for changes."""
RACY_SECONDS = 2.0
"""Files changed this recently (seconds before the stat) are not trusted to be settled."""
MAX_BYTES = 1 << 30
"""The layouts kept in all: past this, the least recently written entries are removed (a
DeepSeek-V3 entry is ~7 MB; a series over hundreds of checkpoints must not fill the disk)."""

Stat = tuple[int, int, int, int, int]
"""(size, mtime_ns, ctime_ns, inode, device) of one file."""


class _Tensor(msgspec.Struct, gc=False, array_like=True):
    """A `TensorRef` without its shard (the `_Shard`'s path): each name is stored once, and each
    shard's path once, not once per tensor (DeepSeek-V3: a 7.0 MB entry, not 18.5 MB)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


class _Shard(msgspec.Struct, gc=False):
    path: str
    size: int
    header_bytes: int
    metadata: dict[str, str]
    tensors: list[_Tensor]
    names: list[str] | None = None
    """A light layout's names (`ShardHeader.names`): every one up to `layout.KEEP_NAMES`
    tensors, past it those its leaves cover; None: `tensors` are all of them."""
    dtypes: dict[str, list[int]] | None = None
    count: int | None = None


class _Entry(msgspec.Struct):
    format: int
    version: str
    source: str
    files: dict[str, Stat]
    config: Any
    warnings: list[str]
    shards: list[_Shard]


_DECODER = msgspec.msgpack.Decoder(_Entry)


def snapshot(directory: Path, names: list[str]) -> dict[str, Stat] | None:
    """The stats of the layout's files in `directory`: config.json, indexes, shards (`names`).

    None when one is racy (changed within RACY_SECONDS) or not a regular file: not cacheable.
    """
    out: dict[str, Stat] = {}
    now = time.time_ns()
    racy = int(RACY_SECONDS * 1e9)
    for name in names:
        try:
            st = os.stat(directory / name)
        except (OSError, ValueError):
            if name == "config.json":
                continue  # absent: recorded by its absence from the key
            return None
        if not stat.S_ISREG(st.st_mode) or now - max(st.st_mtime_ns, st.st_ctime_ns) < racy:
            return None
        out[name] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
    return out


def layout_files(directory: Path, only: str | None) -> list[str]:
    """Every file a layout of `directory` depends on: config.json, the indexes, the shards."""
    if only is not None:
        return ["config.json", only]
    listed = sorted(
        p.name for p in directory.iterdir() if p.name.endswith((".safetensors", INDEX_SUFFIX))
    )
    return ["config.json", *listed]


def _entry_path(directory: Path, only: str | None, light: Leaves | None) -> Path:
    import hashlib  # with the cache only: --no-cache never pays its import

    # A scan's light layout and fold's full one are two entries: neither evicts the other; nor
    # do two light ones that keep the names of different leaves (user rules' `if_present`).
    where = f"{directory.resolve()}\0{only or ''}"
    if light is not None:
        where += "\0light\0" + "\0".join(light.leaves)
    digest = hashlib.sha256(where.encode("utf-8", "surrogateescape")).hexdigest()
    return cache_root() / "layouts" / digest[:2] / digest


def load(
    directory: Path,
    only: str | None,
    source: str,
    files: dict[str, Stat],
    warnings: list[str],
    light: Leaves | None = None,
) -> tuple[Any, list[ShardHeader], list[str]] | None:
    """(config, shard headers, warnings) cached for exactly these `files`; None: a miss. An
    entry whose digest fails is dropped and said in `warnings` (`store.read_cache_file`).
    `light`: the entry a light open with these leaves saved (light `ShardHeader`s, slimmed past
    `layout.KEEP_NAMES` tensors: `layout.kept_form`)."""
    data = read_cache_file(_entry_path(directory, only, light), warnings)
    if data is None:
        return None
    try:
        entry = _DECODER.decode(data)
    except (msgspec.DecodeError, ValueError, TypeError):
        return None
    if (
        entry.format != FORMAT
        or entry.version != __version__
        or entry.source != source
        or entry.files != files
    ):
        return None
    shards = [
        ShardHeader(
            s.path,
            s.size,
            s.header_bytes,
            {
                t.name: TensorRef(t.name, s.path, t.dtype, t.shape, t.start, t.end)
                for t in s.tensors
            },
            s.metadata,
            s.names,
            s.dtypes,
            s.count,
        )
        for s in entry.shards
    ]
    if any((s.names is None) is (light is not None) for s in shards):
        return None
    return entry.config, shards, entry.warnings


def save(
    directory: Path,
    only: str | None,
    source: str,
    files: dict[str, Stat],
    config: Any,
    shards: list[ShardHeader],
    warnings: list[str],
    light: Leaves | None = None,
) -> str | None:
    """Write the entry atomically; a warning's text when it could not be written, else None."""
    entry = _Entry(
        FORMAT,
        __version__,
        source,
        files,
        config,
        list(warnings),
        [
            _Shard(
                s.path,
                s.size,
                s.header_bytes,
                s.metadata,
                [_Tensor(t.name, t.dtype, t.shape, t.start, t.end) for t in s.tensors.values()],
                s.names,
                s.dtypes,
                s.count,
            )
            for s in shards
        ],
    )
    try:
        data = msgspec.msgpack.encode(entry)
    except (TypeError, ValueError, OverflowError):  # a config value msgpack cannot hold
        return None
    path = _entry_path(directory, only, light)
    try:
        write_cache_file(path, data)
    except OSError as exc:
        return f"cannot write the normscope cache ({exc.strerror}) ({path.parent.parent})"
    _prune(path.parent.parent, keep=path)
    return None


def _prune(folder: Path, keep: Path) -> None:
    """Remove the oldest entries until the layouts take at most MAX_BYTES (never `keep`)."""
    entries = []
    for entry in folder.glob("*/*"):
        try:
            info = entry.stat()
        except OSError:
            continue
        entries.append((info.st_mtime_ns, info.st_size, entry))
    total = sum(size for _, size, _ in entries)
    for _, size, entry in sorted(entries, key=lambda e: e[0]):
        if total <= MAX_BYTES:
            break
        if entry == keep:
            continue
        try:
            entry.unlink()
        except OSError:
            continue
        total -= size
