"""Local checkpoints: a `.safetensors` file or a folder of shards, read with positioned reads.

`os.pread` of exactly the ranges asked for: a shard is never mapped or read whole.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

from normscope.errors import SourceError
from normscope.sources.safetensors import INDEX_SUFFIX, MAX_HEADER_SIZE, header_length
from normscope.sources.store import MAX_SMALL_FILE, ReadCounter, ShortRead, Span

INDEX_PER_HEADER_BYTE = 8
"""An index over `MAX_SMALL_FILE` is read when it is at most this many times the headers of the
folder's shards: it lists each of their tensors once, with its shard's file name (an HF index
entry is the tensor's name + ~44 bytes at `indent=2`, a header entry the name + >= 45 bytes;
8x leaves room for shard names of 255 bytes). DeepSeek-V3 at 16x its layers: a 148 MB index
beside 192 MB of headers. What the index may cost is thus bounded by what the scan reads anyway,
not by a fixed size (issue 29: a 1.5M-tensor checkpoint's index was refused)."""


class LocalStore:
    """A folder (or one file of it) on a local file system."""

    def __init__(self, directory: Path, only: str | None = None) -> None:
        self.directory = directory
        self.only = only
        """One file's name: a single-file checkpoint (no index is looked for)."""
        self.counter = ReadCounter()
        self.warnings: list[str] = []

    def path(self, name: str) -> str:
        return str(self.directory / name)

    def names(self, suffix: str) -> list[str]:
        if self.only is not None:  # the one file is the shard, whatever its name
            return [] if suffix == INDEX_SUFFIX else [self.only]
        return [p.name for p in self.directory.glob("*" + suffix) if p.is_file()]

    def size(self, name: str) -> int | None:
        return _file_size(self.directory / name)

    def fetch(self, name: str) -> bytes | None:
        path = self.directory / name
        size = _file_size(path)
        if size is None:
            return None
        limit = MAX_SMALL_FILE
        if size > limit and name.endswith(INDEX_SUFFIX):
            limit = max(limit, INDEX_PER_HEADER_BYTE * self._header_bytes())
        return read_small_file(path, self.counter, limit)

    def _header_bytes(self) -> int:
        """The header lengths the folder's shards declare (each read from its 8-byte prefix,
        counted; one past safetensors' limit, or past its file, counts as the limit or the file),
        the measure of an index bigger than `MAX_SMALL_FILE`: only such an index asks for it."""
        total = 0
        for name in self.names(".safetensors"):
            # NOTE: os-level: a buffered `open` reads 8 KiB for these 8 bytes (2,562 shards:
            # 0.1 s, issue 29).
            try:
                fd = os.open(self.directory / name, os.O_RDONLY)
            except OSError:
                continue  # the layout check names an unreadable shard the index lists
            try:
                size = os.fstat(fd).st_size
                prefix = os.pread(fd, 8, 0)
            except OSError:
                continue
            finally:
                os.close(fd)
            self.counter.reads += 1
            self.counter.metadata_bytes += len(prefix)
            if len(prefix) == 8:
                total += min(int.from_bytes(prefix, "little"), MAX_HEADER_SIZE, size - 8)
        return total

    def headers(self, names: Sequence[str], weight_map: Mapping[str, str] | None) -> list[bytes]:
        return [read_header(Path(self.path(name))) for name in names]

    def read(self, spans: Mapping[str, Sequence[Span]]) -> dict[tuple[str, int, int], bytes]:
        out: dict[tuple[str, int, int], bytes] = {}
        for shard, shard_spans in spans.items():
            out.update(pread_spans(shard, shard, shard_spans))
        return out

    def missing_shard(self, name: str, index: str) -> SourceError:
        return SourceError(
            f"the index names shard '{name}' but it is missing ({index})",
            hint="the checkpoint is incomplete: download or copy every shard",
        )

    def no_shards(self) -> SourceError:
        hint = None
        if any(child.is_dir() for child in self.directory.iterdir()):
            hint = "for a folder of checkpoints, use `normscope series`"
        return SourceError(f"no .safetensors files in directory ({self.directory})", hint=hint)


class OneFile:
    """The file side of a checkpoint that is one file (`self.file`): the file is the only shard,
    and its side files (config.json) sit in its folder. Shared by the GGUF and `.pt` stores."""

    file: Path

    def path(self, name: str) -> str:
        return str(self.file.parent / name)

    def names(self, suffix: str) -> list[str]:
        return [self.file.name] if self.file.name.endswith(suffix) else []

    def size(self, name: str) -> int | None:
        return self.file.stat().st_size if name == self.file.name else None


class SingleFileStore(OneFile):
    """A checkpoint that is one file read by positioned reads (a GGUF): there are no
    safetensors headers to hand to the layout check."""

    def __init__(self, path: Path) -> None:
        self.file = path
        self.counter = ReadCounter()
        self.warnings: list[str] = []

    def headers(self, names: Sequence[str], weight_map: Mapping[str, str] | None) -> list[bytes]:
        return []


def _file_size(path: Path) -> int | None:
    """The size of a regular file; None for anything else, including a name no file system
    takes (too long, or holding a NUL byte, as an index may name one)."""
    try:
        st = path.stat()
    except (OSError, ValueError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def read_small_file(
    path: Path, counter: ReadCounter | None, limit: int = MAX_SMALL_FILE
) -> bytes | None:
    """A whole small file beside the shards (config.json, an index), counted as metadata;
    None when there is none. SourceError for one over `limit` bytes, refused before it is read
    (and never read past `limit` if it grows meanwhile, or is a pipe or a /proc file)."""
    if not path.is_file():
        return None
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            data = b"" if size > limit else handle.read(limit + 1)
    except OSError as exc:
        raise SourceError(f"cannot read {path.name}: {exc.strerror} ({path})") from None
    if size > limit or len(data) > limit:
        raise SourceError(
            f"{path.name} is {max(size, len(data))} bytes, more than normscope reads of a "
            f"metadata file (at most {limit}) ({path})",
            hint="it is not a config, an index or checkpoint metadata as their tools write them",
        )
    if counter is not None:
        counter.metadata_bytes += len(data)
    return data


def pread_spans(
    path: str | os.PathLike[str], shard: str, spans: Sequence[Span]
) -> dict[tuple[str, int, int], bytes]:
    """Positioned reads of exactly `spans` of one local file, keyed by (shard, start, end)."""
    out: dict[tuple[str, int, int], bytes] = {}
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise SourceError(f"cannot open shard: {exc.strerror} ({path})") from None
    try:
        for start, end in sorted(spans):
            data = os.pread(fd, end - start, start)
            if len(data) != end - start:
                raise ShortRead(shard, start, end)
            out[(shard, start, end)] = data
    finally:
        os.close(fd)
    return out


def read_header(path: Path, shard: str | None = None) -> bytes:
    """The 8-byte length prefix and the JSON header of one local safetensors file.

    `shard` names the file in messages (default: its path).
    """
    shard = str(path) if shard is None else shard
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise SourceError(f"cannot open shard: {exc.strerror} ({shard})") from None
    try:
        size = os.fstat(fd).st_size
        prefix = os.pread(fd, 8, 0)
        n = header_length(prefix, shard, size)
        raw = os.pread(fd, n, 8)
    finally:
        os.close(fd)
    if len(raw) != n:
        raise SourceError(f"truncated safetensors header ({shard})")
    return prefix + raw
