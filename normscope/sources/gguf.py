"""GGUF files (llama.cpp) as a checkpoint source: the header parsed here, the norms read by range.

A GGUF file is `GGUF`, a version (2 or 3), the tensor and key/value counts, the key/value pairs
(`general.architecture`, `<arch>.block_count`, ... and the tokenizer's arrays), one info per tensor
(name, dims, ggml type, offset from the data section) and, aligned to `general.alignment` (32 by
default), the tensor data. Layout from llama.cpp's `gguf-py/gguf/gguf_reader.py` and
`constants.py` (gguf 0.19.0: GGUFValueType, GGMLQuantizationType, GGML_QUANT_SIZES).

Written by hand rather than with the `gguf` package, by what each reads: `gguf.GGUFReader`
memory-maps the whole file (`np.memmap(path)`) and builds a numpy view of every key, array element
and tensor; what it touches is paged in by the kernel, so what was read cannot be counted, and it
pulls in numpy and PyYAML for a header walk. This parser reads the header in 64 KiB blocks with
positioned reads until the tensor infos end, then only the byte ranges of the norms, and counts
both (`io.bytes_read`). The tests use the `gguf` package as the independent decoder.

Tensor names stay verbatim (`blk.3.attn_norm.weight`); what they are is `normscope.arch.gguf`'s
job (llama.cpp's names, MTP blocks, and the +1 llama.cpp's converter bakes into offset norms).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from normscope.errors import SourceError
from normscope.schema import TensorRef
from normscope.sources.local import SingleFileStore, pread_spans
from normscope.sources.safetensors import ShardHeader
from normscope.sources.store import MAX_SMALL_FILE, Checkpoint, Span

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
_BLOCK = 1 << 16
"""Header bytes read at once."""
MAX_HEADER = MAX_SMALL_FILE
"""A header (with the tokenizer's vocabulary) larger than this is no GGUF normscope trusts: the
header is held in memory while it is parsed, so this bounds what a crafted file can make it take.
Real headers are far below it: Gemma-3-270M's (262k-token vocabulary) 6.8 MB, Qwen2.5-0.5B's
6.1 MB. The bound of every small file normscope holds whole (config, index): 64 MiB."""
MAX_COUNT = 1 << 24
"""Most tensors, keys or array elements one header may declare."""

# ggml type id -> (name, elements per block, bytes per block): llama.cpp gguf-py/gguf/constants.py
# (GGMLQuantizationType, GGML_QUANT_SIZES; gguf 0.19.0). The float types keep the safetensors
# dtype names normscope decodes; the rest keep llama.cpp's names and are not decoded.
_QK_K = 256
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 40),
    10: ("Q2_K", _QK_K, 2 + 2 + _QK_K // 16 + _QK_K // 4),
    11: ("Q3_K", _QK_K, 2 + _QK_K // 4 + _QK_K // 8 + 12),
    12: ("Q4_K", _QK_K, 2 + 2 + _QK_K // 2 + 12),
    13: ("Q5_K", _QK_K, 2 + 2 + _QK_K // 2 + _QK_K // 8 + 12),
    14: ("Q6_K", _QK_K, 2 + _QK_K // 2 + _QK_K // 4 + _QK_K // 16),
    15: ("Q8_K", _QK_K, 4 + _QK_K + _QK_K // 8),
    16: ("IQ2_XXS", _QK_K, 2 + _QK_K // 4),
    17: ("IQ2_XS", _QK_K, 2 + _QK_K // 4 + _QK_K // 32),
    18: ("IQ3_XXS", _QK_K, 2 + _QK_K // 4 + _QK_K // 8),
    19: ("IQ1_S", _QK_K, 2 + _QK_K // 8 + _QK_K // 16),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", _QK_K, 2 + _QK_K // 4 + _QK_K // 8 + _QK_K // 32 + 4),
    22: ("IQ2_S", _QK_K, 2 + _QK_K // 4 + _QK_K // 16),
    23: ("IQ4_XS", _QK_K, 2 + 2 + _QK_K // 2 + _QK_K // 64),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", _QK_K, _QK_K // 8 + _QK_K // 16 + _QK_K // 32),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", _QK_K, 2 + 4 * 13),
    35: ("TQ2_0", _QK_K, 2 + 64),
    39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18),
}
FLOAT_TYPES = frozenset({"F32", "F16", "BF16", "F64"})

# GGUFValueType -> struct format of a scalar (8 = string, 9 = array: read apart).
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q"}
_SCALARS |= {11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class GGUFError(SourceError):
    """A file that starts like GGUF but is not a well-formed one."""


@dataclass(frozen=True, slots=True)
class GGUFHeader:
    """What the header of a GGUF file says."""

    version: int
    metadata: dict[str, Any]
    """Key/value pairs; arrays of more than 64 elements are kept as their length only."""
    tensors: dict[str, tuple[str, tuple[int, ...], int, int]]
    """name -> (type name, shape outer-first, absolute start, absolute end)."""
    data_start: int
    header_bytes: int
    """Bytes read from the file to parse the header (whole blocks)."""


class _Reader:
    """Sequential parsing over positioned reads of whole blocks, every byte read counted."""

    def __init__(self, fd: int, size: int, where: str) -> None:
        self.fd, self.size, self.where = fd, size, where
        self.buf = bytearray()
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > self.size:
            raise GGUFError(f"truncated GGUF header: it ends inside the header ({self.where})")
        if end > len(self.buf):
            if end > MAX_HEADER:
                raise GGUFError(f"GGUF header larger than {MAX_HEADER} bytes ({self.where})")
            want = min(self.size, -(-end // _BLOCK) * _BLOCK) - len(self.buf)
            chunk = os.pread(self.fd, want, len(self.buf))
            if len(chunk) != want:
                raise GGUFError(f"short read of the GGUF header ({self.where})")
            self.buf += chunk
        out = bytes(self.buf[self.pos : end])
        self.pos = end
        return out

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def count(self, what: str) -> int:
        n = int(self.scalar("<Q"))
        if n > MAX_COUNT:
            raise GGUFError(f"GGUF header declares {n} {what}: not a real file ({self.where})")
        return n

    def string(self) -> str:
        n = int(self.scalar("<Q"))
        if n > MAX_HEADER:
            raise GGUFError(f"GGUF string of {n} bytes: a corrupt header ({self.where})")
        raw = self.take(n)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("utf-8", errors="replace")

    def value(self, kind: int, depth: int = 0) -> Any:
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY and depth == 0:
            inner = int(self.scalar("<I"))
            n = self.count("array elements")
            if inner in _SCALARS and n > 64:  # a tokenizer's scores or types: skip in one read
                self.take(n * struct.calcsize(_SCALARS[inner]))
                return n
            if inner == _STRING and n > 64:  # a tokenizer's vocabulary: lengths only
                for _ in range(n):
                    self.take(int(self.scalar("<Q")))
                return n
            items = [self.value(inner, depth + 1) for _ in range(n)]
            return items if n <= 64 else n
        raise GGUFError(f"unknown GGUF value type {kind} ({self.where})")


def parse_gguf_header(path: Path, where: str) -> GGUFHeader:
    """Parse a GGUF file's header: keys, tensor infos, alignment; check every extent fits."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise SourceError(f"cannot open file: {exc.strerror} ({where})") from None
    try:
        size = os.fstat(fd).st_size
        r = _Reader(fd, size, where)
        if r.take(4) != MAGIC:
            raise GGUFError(f"not a GGUF file ({where})")
        version = int(r.scalar("<I"))
        if version not in (2, 3):
            swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
            detail = "a big-endian GGUF" if swapped in (2, 3) else f"version {version}"
            raise GGUFError(
                f"unsupported GGUF file: {detail}; normscope reads little-endian GGUF v2/v3 "
                f"({where})"
            )
        n_tensors = r.count("tensors")
        n_keys = r.count("keys")
        metadata: dict[str, Any] = {}
        for _ in range(n_keys):
            key = r.string()
            metadata[key] = r.value(int(r.scalar("<I")))
        infos = [_tensor_info(r) for _ in range(n_tensors)]
        alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise GGUFError(f"GGUF general.alignment {alignment!r} is no power of two ({where})")
        data_start = -(-r.pos // alignment) * alignment
    finally:
        os.close(fd)
    tensors: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
    for name, dims, type_id, offset in infos:
        entry = _extent(name, dims, type_id, offset, data_start, size, alignment, where)
        if name in tensors:
            raise GGUFError(f"GGUF tensor '{name}' is declared twice ({where})")
        tensors[name] = entry
    return GGUFHeader(version, metadata, tensors, data_start, len(r.buf))


def _tensor_info(r: _Reader) -> tuple[str, tuple[int, ...], int, int]:
    name = r.string()
    n_dims = int(r.scalar("<I"))
    if n_dims > 8:
        raise GGUFError(f"GGUF tensor '{name}' has {n_dims} dimensions ({r.where})")
    dims = tuple(int(r.scalar("<Q")) for _ in range(n_dims))
    return name, dims, int(r.scalar("<I")), int(r.scalar("<Q"))


def _extent(
    name: str,
    dims: tuple[int, ...],
    type_id: int,
    offset: int,
    data_start: int,
    size: int,
    alignment: int,
    where: str,
) -> tuple[str, tuple[int, ...], int, int]:
    """(type, shape outer-first, start, end) of one tensor, checked against the file."""
    if type_id not in GGML_TYPES:
        raise GGUFError(f"GGUF tensor '{name}' has unknown ggml type {type_id} ({where})")
    type_name, block, block_bytes = GGML_TYPES[type_id]
    numel = 1
    for d in dims:
        numel *= d
    if dims and dims[0] % block:
        raise GGUFError(
            f"GGUF tensor '{name}' ({type_name}) has {dims[0]} columns, not a multiple of its "
            f"block of {block} ({where})"
        )
    start = data_start + offset
    end = start + numel // block * block_bytes
    if offset % alignment or end > size:
        problem = "is not aligned" if offset % alignment else "ends past the end of the file"
        raise GGUFError(
            f"GGUF tensor '{name}' {problem} (bytes {start}..{end} of {size}): the file is "
            f"truncated or corrupt ({where})"
        )
    # NOTE: ggml writes ne[0] (the contiguous axis) first; shapes here are outer-first like
    # safetensors' and numpy's.
    return type_name, tuple(reversed(dims)), start, end


class GGUFStore(SingleFileStore):
    """One GGUF file: positioned reads of the ranges asked for, counted."""

    def fetch(self, name: str) -> bytes | None:
        return None  # everything a GGUF knows is in its header

    def read(self, spans: Mapping[str, Sequence[Span]]) -> dict[tuple[str, int, int], bytes]:
        out: dict[tuple[str, int, int], bytes] = {}
        for shard, ranges in spans.items():
            out.update(pread_spans(self.file, shard, ranges))
        return out

    def missing_shard(self, name: str, index: str) -> SourceError:
        return SourceError(f"a GGUF file has no shards to miss ('{name}', {index})")

    def no_shards(self) -> SourceError:
        return SourceError(f"no tensors in the GGUF file ({self.file})")


def open_gguf_checkpoint(path: Path, source: str) -> Checkpoint:
    """Open a GGUF file: parse its header, describe its tensors; read no tensor data yet.

    The config is what the header says, under `gguf` (architecture, keys) plus the Hugging Face
    style fields normscope reads (`hidden_size`, `num_hidden_layers`, MTP depth);
    `normscope.arch.gguf` maps the names.
    """
    where = str(path)
    header = parse_gguf_header(path, where)
    store = GGUFStore(path)
    store.counter.bytes_read += header.header_bytes
    arch = header.metadata.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise GGUFError(f"GGUF file without general.architecture ({where})")
    refs = {
        name: TensorRef(name, where, dtype, shape, start, end)
        for name, (dtype, shape, start, end) in header.tensors.items()
    }
    if not refs:
        raise store.no_shards()

    def key(name: str) -> Any:
        value = header.metadata.get(f"{arch}.{name}")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    blocks, nextn = key("block_count"), key("nextn_predict_layers") or 0
    if blocks is not None and nextn > blocks:
        raise GGUFError(
            f"GGUF {arch}.nextn_predict_layers is {nextn}, more than its {blocks} blocks: a "
            f"corrupt header ({where})"
        )
    config: dict[str, Any] = {
        "gguf": {
            "architecture": arch,
            "version": header.version,
            "name": header.metadata.get("general.name"),
            "file_type": header.metadata.get("general.file_type"),
            "block_count": blocks,
            "nextn_predict_layers": nextn,
        },
        "hidden_size": key("embedding_length"),
        # NOTE: llama.cpp counts the MTP (NextN) blocks in block_count and stores them as
        # blk.{n_layer + k} (conversion/glm.py Glm4MoeModel: block_count = num_hidden_layers +
        # num_nextn_predict_layers).
        "num_hidden_layers": None if blocks is None else blocks - nextn,
        "num_nextn_predict_layers": nextn,
    }
    size = path.stat().st_size
    shards = [ShardHeader(where, size, header.header_bytes, dict(refs), {})]
    return Checkpoint(source, config, shards, refs, store, store.warnings, kind="gguf")
