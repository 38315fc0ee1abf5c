"""A DCP save presented as a `Checkpoint`: synthetic tensors, read from their chunks.

Every model tensor of the `.metadata` becomes a `TensorRef` (optimizer state never does), and
Megatron's layer-stacked tensors (`decoder.layers.<param>` with a leading layer axis) become one
tensor per layer, named `decoder.layers.<i>.<param>` as an unstacked save names them. So the
architecture rules classify a DCP save by names and shapes alone, and only then are bytes read.

The refs live in a virtual file: `TensorRef.shard` is the DCP folder, and `start`/`end` are
offsets in the concatenation of the presented tensors, each laid out row-major, little-endian,
in its dtype (what a safetensors file would hold). `DcpStore.read` maps a span back to the
chunks that hold it, reads each chunk's `(offset, length)` of its `.distcp` file once, loads it
as torch's `FileSystemReader` does (`torch.load(..., weights_only=True)`, after the stream
transforms the metadata names) and assembles the tensor. `ReadCounter.bytes_read` counts the
`.metadata` and the chunk bytes read from disk; `metadata_bytes` the small side files and the
common state.
"""

from __future__ import annotations

import bisect
import importlib
import io
import math
import os
import sys
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from normscope.errors import SourceError
from normscope.schema import TensorRef
from normscope.sources.dcp.bounds import CHUNK_SLACK, show
from normscope.sources.dcp.unpickle import BytesEntry, ChunkInfo, DcpMetadata, TensorEntry
from normscope.sources.local import pread_spans, read_small_file
from normscope.sources.safetensors import DTYPE_BITS
from normscope.sources.store import (
    MAX_READ_ELEMENTS,
    MAX_SMALL_FILE,
    Checkpoint,
    ReadCounter,
    ShortRead,
    Span,
    check_read_budget,
)

if TYPE_CHECKING:
    import torch

# State-dict roots that hold optimizer state (Megatron `optimizer.state.<exp_avg|...>.<param>`,
# torchtitan `optimizer.*`, OLMo-core `optim.*`): never model weights, even when the key ends
# in a norm's name.
_OPTIMIZER_ROOTS = frozenset({"optimizer", "optimizers", "optim"})
_OPTIMIZER_LEAVES = frozenset({"exp_avg", "exp_avg_sq", "momentum_buffer", "fp32_param"})
# Megatron-Core TransformerBlock prefixes whose `layers.` may be stacked (transformer_block.py
# `sharded_state_dict`: homogeneous layers share one key with the PP offset prepended).
_STACK_OWNERS = frozenset({"decoder", "encoder"})
ZSTD = "stream.zstd"


def is_optimizer_state(fqn: str) -> bool:
    """True for optimizer state keys, whatever they end in."""
    parts = fqn.split(".")
    return parts[0] in _OPTIMIZER_ROOTS or parts[-1] in _OPTIMIZER_LEAVES


def stacked_name(fqn: str, layer: int) -> str | None:
    """`decoder.layers.<param>` -> `decoder.layers.<layer>.<param>`; None when not stacked."""
    parts = fqn.split(".")
    for k in range(1, len(parts) - 1):
        if parts[k] == "layers" and parts[k - 1] in _STACK_OWNERS:
            if parts[k + 1].isdigit():
                return None
            return ".".join([*parts[: k + 1], str(layer), *parts[k + 1 :]])
    return None


@dataclass(frozen=True, slots=True)
class Piece:
    """A presented tensor: a DCP entry, or one layer (`layer`) of a layer-stacked entry."""

    entry: TensorEntry
    layer: int | None
    ref: TensorRef

    @property
    def box(self) -> list[tuple[int, int]]:
        """The piece's region of the entry, as [lo, hi) per axis."""
        shape = self.entry.shape
        if self.layer is None:
            return [(0, n) for n in shape]
        return [(self.layer, self.layer + 1)] + [(0, n) for n in shape[1:]]


def _itemsize(dtype: str) -> int:
    bits = DTYPE_BITS.get(dtype)
    if bits is None or bits % 8:
        raise SourceError(f"dtype {dtype} has no whole-byte size")
    return bits // 8


def present(metadata: DcpMetadata, virtual: str) -> dict[str, Piece]:
    """The model tensors of a save, stacked ones split per layer, laid out in a virtual file."""
    pieces: dict[str, Piece] = {}
    position = 0
    for fqn, entry in metadata.tensors.items():
        if is_optimizer_state(fqn):
            continue
        if entry.dtype not in DTYPE_BITS:  # e.g. torch.complex32: not presented, never read
            continue
        size = _itemsize(entry.dtype)
        first = stacked_name(fqn, 0) if entry.shape else None
        layers: list[tuple[str, int | None, tuple[int, ...]]]
        if first is None:
            layers = [(fqn, None, entry.shape)]
        else:
            layers = [
                (stacked_name(fqn, i) or fqn, i, entry.shape[1:]) for i in range(entry.shape[0])
            ]
        for name, layer, shape in layers:
            if name in pieces:
                raise SourceError(
                    f"tensor '{name}' is saved twice: stacked in '{fqn}' and on its own ({virtual})"
                )
            end = position + math.prod(shape) * size
            ref = TensorRef(name, virtual, entry.dtype, shape, position, end)
            pieces[name] = Piece(entry, layer, ref)
            position = end
    return pieces


class DcpStore:
    """A DCP folder: `.metadata`, `__<rank>_<i>.distcp` files and small side files."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.counter = ReadCounter()
        self.warnings: list[str] = []
        self.virtual = str(directory)
        self.pieces: dict[str, Piece] = {}
        self._starts: list[int] = []
        self._order: list[Piece] = []

    def set_pieces(self, pieces: dict[str, Piece]) -> None:
        """The presented tensors (see `present`); their virtual spans index `read`."""
        self.pieces = pieces
        self._order = sorted(pieces.values(), key=lambda p: p.ref.start)
        self._starts = [p.ref.start for p in self._order]

    def path(self, name: str) -> str:
        return str(self.directory / name)

    def names(self, suffix: str) -> list[str]:
        return [p.name for p in self.directory.glob("*" + suffix) if p.is_file()]

    def size(self, name: str) -> int | None:
        path = self.directory / name
        return path.stat().st_size if path.is_file() else None

    def fetch(self, name: str) -> bytes | None:
        return read_small_file(self.directory / name, self.counter)

    def headers(self, names: Sequence[str], weight_map: Mapping[str, str] | None) -> list[bytes]:
        return []  # a DCP save has no per-file headers: `.metadata` describes every file

    def missing_shard(self, name: str, index: str) -> SourceError:
        return SourceError(f"the DCP metadata names '{name}' but it is missing ({index})")

    def no_shards(self) -> SourceError:
        return SourceError(f"no .distcp files in the DCP folder ({self.directory})")

    def read(self, spans: Mapping[str, Sequence[Span]]) -> dict[tuple[str, int, int], bytes]:
        """Bytes of virtual spans (whole tensors or row blocks of one), read from their chunks."""
        out: dict[tuple[str, int, int], bytes] = {}
        blobs: dict[ChunkInfo, torch.Tensor] = {}  # each chunk is read once per call
        for shard, shard_spans in spans.items():
            if shard != self.virtual:
                raise SourceError(f"no such DCP folder in this checkpoint ({shard})")
            for start, end in shard_spans:
                out[(shard, start, end)] = self._read_span(start, end, blobs)
        return out

    def _read_span(self, start: int, end: int, blobs: dict[ChunkInfo, torch.Tensor]) -> bytes:
        i = bisect.bisect_right(self._starts, start) - 1
        piece = self._order[i] if i >= 0 else None
        if piece is None or not (piece.ref.start <= start <= end <= piece.ref.end):
            raise ShortRead(self.virtual, start, end)
        ref = piece.ref
        size = _itemsize(ref.dtype)
        row = size * math.prod(ref.shape[1:]) if ref.shape else ref.nbytes
        box = piece.box
        rows = (0, 1)
        if ref.shape and row:
            rows = ((start - ref.start) // row, -(-(end - ref.start) // row))
            axis = 0 if piece.layer is None else 1
            box[axis] = (rows[0], rows[1])
        data = self._assemble(piece.entry, box, blobs)
        skip = ref.start + rows[0] * row if ref.shape else ref.start
        return data[start - skip : end - skip]

    def _assemble(
        self,
        entry: TensorEntry,
        box: list[tuple[int, int]],
        blobs: dict[ChunkInfo, torch.Tensor],
    ) -> bytes:
        """The bytes of `box` of `entry`, copied from every chunk that overlaps it."""
        import torch

        shape = [hi - lo for lo, hi in box]
        if math.prod(shape) == 0:
            return b""
        out = None
        # Which elements a chunk filled: two chunks that overlap are an inconsistent save,
        # however their volumes add up.
        filled = torch.zeros(shape, dtype=torch.bool)
        for chunk in entry.chunks:
            inter = [
                (max(lo, o), min(hi, o + n))
                for (lo, hi), o, n in zip(box, chunk.offsets, chunk.sizes, strict=True)
            ]
            if any(lo >= hi for lo, hi in inter):
                continue
            tensor = blobs.get(chunk)
            if tensor is None:
                tensor = blobs[chunk] = self._load_chunk(entry, chunk)
            if out is None:
                out = torch.empty(shape, dtype=tensor.dtype)
            src = tuple(
                slice(lo - o, hi - o) for (lo, hi), o in zip(inter, chunk.offsets, strict=True)
            )
            dst = tuple(slice(lo - b, hi - b) for (lo, hi), (b, _) in zip(inter, box, strict=True))
            if bool(filled[dst].any()):
                raise SourceError(
                    f"chunks of tensor '{entry.fqn}' overlap at {[list(i) for i in inter]} "
                    f"(an inconsistent save) ({self.virtual})"
                )
            out[dst] = tensor[src]
            filled[dst] = True
        if out is None or not bool(filled.all()):
            raise SourceError(
                f"the chunks of tensor '{entry.fqn}' do not cover {[list(b) for b in box]} "
                f"(a partial or inconsistent save) ({self.virtual})"
            )
        return bytes(out.contiguous().view(torch.uint8).numpy())

    def _load_chunk(self, entry: TensorEntry, chunk: ChunkInfo) -> torch.Tensor:
        import torch

        where = f"{entry.fqn} chunk {list(chunk.offsets)} in {chunk.file}"
        numel = math.prod(chunk.sizes)
        if numel > MAX_READ_ELEMENTS:
            raise SourceError(
                f"{where} holds {numel} elements, more than normscope reads at once (at most "
                f"{MAX_READ_ELEMENTS}) ({self.virtual})"
            )
        data_bytes = numel * _itemsize(entry.dtype)
        blob = self.read_blob(
            chunk.file,
            chunk.offset,
            chunk.length,
            chunk.transforms,
            where,
            data_bytes + CHUNK_SLACK,
        )
        _check_members(blob, data_bytes + CHUNK_SLACK, f"{where} ({self.virtual})")
        try:
            tensor = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a bad blob
            raise SourceError(
                f"cannot load {where}: {type(exc).__name__}: {_first_line(exc)} ({self.virtual})"
            ) from None
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != chunk.sizes:
            got = list(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor)
            raise SourceError(
                f"{where} holds {got}, not a tensor of shape {list(chunk.sizes)} ({self.virtual})"
            )
        from normscope.sources.dcp.unpickle import TORCH_DTYPES

        dtype = TORCH_DTYPES.get(str(tensor.dtype).removeprefix("torch."))
        if dtype != entry.dtype:
            raise SourceError(f"{where} is {tensor.dtype}, the metadata says {entry.dtype}")
        return tensor

    def read_blob(
        self,
        file: str,
        offset: int,
        length: int,
        transforms: Sequence[str],
        where: str,
        limit: int = MAX_SMALL_FILE,
    ) -> bytes:
        """One item's bytes, counted in `bytes_read`, with its stream transforms undone; at
        most `limit` bytes, read or inflated (SourceError past it)."""
        if length > limit:
            raise SourceError(
                f"{where} is {length} bytes, more than normscope reads of it (at most {limit}) "
                f"({self.directory})"
            )
        path = self.directory / file
        try:
            data = pread_spans(path, str(path), [(offset, offset + length)])
        except ShortRead:
            raise SourceError(
                f"short read of {where}: the file changed or is truncated ({path})"
            ) from None
        blob = data[(str(path), offset, offset + length)]
        self.counter.bytes_read += length
        self.counter.reads += 1
        for descriptor in reversed(transforms):
            blob = _untransform(descriptor, blob, f"{where} ({path})", limit)
        return blob


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type when it has none."""
    lines = str(exc).splitlines()
    return show(lines[0]) if lines else type(exc).__name__


def _check_members(blob: bytes, limit: int, where: str) -> None:
    """A chunk blob is a `torch.save` zip; refuse one whose members would inflate past
    `limit` (torch's reader inflates a compressed member whole)."""
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            total = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, ValueError, OSError):
        return  # not a zip: torch.load says what is wrong with it
    if total > limit:
        raise SourceError(
            f"{where} inflates to {total} bytes, more than its tensor's (at most {limit})"
        )


def _untransform(descriptor: str, blob: bytes, where: str, limit: int) -> bytes:
    """Undo one save-time stream transform (torch `_extension.py`: only ZStandard exists)."""
    name, _, version = descriptor.partition("/")
    if name != ZSTD or version.partition(".")[0] != "1":
        raise SourceError(f"unknown DCP stream transform '{descriptor}' for {where}")
    try:
        zstandard: Any = importlib.import_module("zstandard")
    except ImportError:
        raise SourceError(
            f"{where} is ZStandard-compressed and the zstandard package is not installed",
            hint="pip install zstandard",
        ) from None
    try:
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)) as reader:
            out = bytes(reader.read(limit + 1))
    except zstandard.ZstdError as exc:
        raise SourceError(f"corrupt ZStandard stream: {exc} ({where})") from None
    if len(out) > limit:
        raise SourceError(f"{where} inflates past {limit} bytes, more than its data can take")
    return out


class DcpCheckpoint(Checkpoint):
    """A `Checkpoint` over a `DcpStore`: the store counts the chunk bytes it reads."""

    store: DcpStore
    parametrization_source: str | None = None
    """Where `layernorm_zero_centered_gamma` was read (None: nowhere; the user decides)."""

    def read(self, refs: Sequence[TensorRef]) -> dict[str, bytes]:
        check_read_budget(refs, self.source)
        spans: dict[str, list[Span]] = {}
        for ref in refs:
            spans.setdefault(ref.shard, []).append((ref.start, ref.end))
        data = self.store.read(spans)
        return {ref.name: data[(ref.shard, ref.start, ref.end)] for ref in refs}

    def read_span(self, ref: TensorRef, start: int, end: int) -> bytes:
        if not 0 <= start <= end <= ref.nbytes:
            raise ValueError(f"span {start}..{end} outside tensor '{ref.name}' ({ref.nbytes} B)")
        key = (ref.shard, ref.start + start, ref.start + end)
        return self.store.read({ref.shard: [key[1:]]})[key]


def check_byteorder(where: str) -> None:
    """Chunks are decoded to native bytes; normscope's bytes are little-endian."""
    if sys.byteorder != "little":
        raise SourceError(f"DCP sources need a little-endian machine ({where})")


def check_file_sizes(metadata: DcpMetadata, sizes: Mapping[str, int], directory: Path) -> None:
    """Refuse a save whose `.distcp` files end before the bytes the metadata places in them
    (a copy cut short, a disk that filled): one error naming the file and both sizes."""
    needed: dict[str, int] = {}
    items: list[ChunkInfo | BytesEntry] = [c for t in metadata.tensors.values() for c in t.chunks]
    for item in [*items, *metadata.objects.values()]:
        needed[item.file] = max(needed.get(item.file, 0), item.offset + item.length)
    for name, end in sorted(needed.items()):
        size = sizes.get(name, 0)
        if size < end:
            raise SourceError(
                f"'{name}' is {size:,} bytes but the DCP metadata places data up to byte "
                f"{end:,}: the file is truncated ({directory})",
                hint="the save or its copy was cut short: copy the iteration folder again",
            )


def file_size(path: str | os.PathLike[str]) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def common_state(metadata: DcpMetadata) -> Any:
    """Megatron's `common_state/shard_0_1` item (mid-2026 saves), or None."""
    return next((o for f, o in metadata.objects.items() if f.startswith("common_state/")), None)
