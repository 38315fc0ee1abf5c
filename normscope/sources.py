"""Checkpoint sources: find the shards, parse their headers, read only the byte ranges asked for.

A source is a `.safetensors` file or a directory of shards (with or without
`model.safetensors.index.json`), usually with a `config.json` beside it.

What runs where, and why: a scan needs the headers (a few MB even for a 688 GB checkpoint) and
the norm vectors (a millionth of the bytes). So this module parses headers itself and reads the
tensors it is asked for with positioned reads (`os.pread`), counting every byte. It never maps or
reads a whole shard, and it never imports torch: `import torch` alone costs about 1 s here, five
times the whole useful work of a scan of a 160-shard DeepSeek-V3-sized layout.

NOTE: the header is parsed by hand because `safetensors.safe_open` does not expose a tensor's
byte offsets (needed to read exactly its range and to count bytes) and its numpy framework refuses
BF16. The checks below mirror the ones safetensors itself applies when it opens a file (header
size limit, contiguous data_offsets that cover the data section exactly, sizes that match
shape x dtype), so a file normscope accepts is one safetensors accepts.
"""

from __future__ import annotations

import gc
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from normscope.errors import SourceError
from normscope.schema import TensorRef

# safetensors refuses headers above 100 MB (safetensors/src/tensor.rs MAX_HEADER_SIZE).
MAX_HEADER_SIZE = 100_000_000

# Size in bits of each safetensors dtype (safetensors/src/tensor.rs `Dtype::bitsize`).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E4M3": 8,
    "F8_E5M2": 8,
    "F8_E8M0": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "I64": 64,
    "U64": 64,
    "F64": 64,
    "C64": 64,
}

INDEX_SUFFIX = ".safetensors.index.json"


@dataclass(frozen=True, slots=True)
class ShardHeader:
    """One parsed safetensors file."""

    path: str
    size: int
    """File size in bytes."""
    header_bytes: int
    """8 + the JSON header's length: what reading the header costs."""
    tensors: dict[str, TensorRef]
    metadata: dict[str, str]


def parse_header(raw: bytes, shard: str, file_size: int) -> ShardHeader:
    """Parse and validate the JSON header `raw` (without its 8-byte length prefix).

    Raises SourceError naming the shard (and tensor) for every inconsistency safetensors itself
    would refuse, plus a truncated data section.
    """
    header_len = len(raw)
    data_len = file_size - 8 - header_len
    if data_len < 0:
        raise SourceError(f"truncated safetensors header ({shard})")
    if not raw[:1] == b"{":
        raise SourceError(f"not a safetensors file: header does not start with '{{' ({shard})")
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"invalid safetensors header JSON: {exc} ({shard})") from None
    if not isinstance(obj, dict):
        raise SourceError(f"invalid safetensors header: not a JSON object ({shard})")
    metadata = obj.pop("__metadata__", None) or {}
    # safetensors requires a map of strings to strings (it refuses other values).
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SourceError(
            f"invalid safetensors header: __metadata__ is not an object of strings ({shard})"
        )

    base = 8 + header_len
    tensors: dict[str, TensorRef] = {}
    # NOTE: this loop runs once per tensor (92k in DeepSeek-V3): keep it lean. Files written by
    # safetensors list tensors in data order: check the tiling on the fly, and sort (in
    # _check_tiling) only a header in some other order.
    position, in_order = 0, True
    for name, info in obj.items():
        try:
            dtype = info["dtype"]
            shape = tuple(info["shape"])
            begin, end = info["data_offsets"]
            ok = type(dtype) is str and type(begin) is int and type(end) is int
            for d in shape:
                if type(d) is not int or d < 0:
                    ok = False
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise SourceError(f"invalid header entry for tensor '{name}' ({shard})")
        if not 0 <= begin <= end:
            raise SourceError(f"invalid data_offsets [{begin}, {end}] of tensor '{name}' ({shard})")
        if end > data_len:
            raise SourceError(
                f"tensor '{name}' ends at byte {end} but the data section has {data_len} bytes: "
                f"the file is truncated or its data_offsets are out of bounds ({shard})"
            )
        bits = DTYPE_BITS.get(dtype)
        if bits is not None:
            nbits = math.prod(shape) * bits
            if nbits % 8 or nbits // 8 != end - begin:
                raise SourceError(
                    f"tensor '{name}' has shape {list(shape)} and dtype {dtype} "
                    f"({nbits / 8:g} bytes) but data_offsets span {end - begin} bytes ({shard})"
                )
        if begin == position:
            position = end
        else:
            in_order = False
        tensors[name] = TensorRef(name, shard, dtype, shape, base + begin, base + end)
    if not (in_order and position == data_len):
        _check_tiling(tensors, base, data_len, shard)
    return ShardHeader(shard, file_size, 8 + header_len, tensors, dict(metadata))


def _check_tiling(tensors: dict[str, TensorRef], base: int, data_len: int, shard: str) -> None:
    """Tensors must tile the data section exactly: no overlap, no gap, nothing left over."""
    spans = sorted((ref.start - base, ref.end - base, name) for name, ref in tensors.items())
    position, previous = 0, None
    for begin, end, name in spans:
        if begin < position:
            raise SourceError(
                f"data_offsets of tensors '{previous}' and '{name}' overlap ({shard})"
            )
        if begin > position:
            raise SourceError(
                f"gap before tensor '{name}': bytes {position}..{begin} belong to no tensor "
                f"({shard})"
            )
        position, previous = end, name
    if position != data_len:
        raise SourceError(
            f"the data section has {data_len} bytes but the tensors cover {position} ({shard})"
        )


def _header_length(prefix: bytes, shard: str, file_size: int) -> int:
    """Decode and bound-check the 8-byte little-endian header length."""
    if len(prefix) < 8:
        raise SourceError(f"file too short to be safetensors ({len(prefix)} bytes) ({shard})")
    n = int.from_bytes(prefix, "little")
    if n > MAX_HEADER_SIZE:
        raise SourceError(f"header length {n} is absurdly large: not a safetensors file ({shard})")
    if n > file_size - 8:
        raise SourceError(
            f"header length {n} is larger than the file ({file_size} bytes): truncated or not "
            f"safetensors ({shard})"
        )
    return n


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


@dataclass
class Checkpoint:
    """An opened checkpoint: its config, its shard headers and a way to read byte ranges."""

    source: str
    config: dict[str, Any] | None
    shards: list[ShardHeader]
    tensors: dict[str, TensorRef]
    counter: ReadCounter = field(default_factory=ReadCounter)
    warnings: list[str] = field(default_factory=list)

    @property
    def bytes_total(self) -> int:
        """Total size of the shards."""
        return sum(s.size for s in self.shards)

    def read(self, refs: Sequence[TensorRef]) -> dict[str, bytes]:
        """Read the bytes of each tensor in `refs` (and nothing else); return them by name."""
        out: dict[str, bytes] = {}
        by_shard: dict[str, list[TensorRef]] = {}
        for ref in refs:
            by_shard.setdefault(ref.shard, []).append(ref)
        for shard, shard_refs in by_shard.items():
            data = pread_tensors(shard, shard, shard_refs)
            self.counter.bytes_read += sum(len(d) for d in data.values())
            self.counter.reads += len(data)
            out.update(data)
        return out


def pread_tensors(
    path: str | os.PathLike[str], shard: str, refs: Sequence[TensorRef]
) -> dict[str, bytes]:
    """Positioned reads of exactly the byte ranges of `refs` from one local file."""
    out: dict[str, bytes] = {}
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise SourceError(f"cannot open shard: {exc.strerror} ({path})") from None
    try:
        for ref in sorted(refs, key=lambda r: r.start):
            data = os.pread(fd, ref.nbytes, ref.start)
            if len(data) != ref.nbytes:
                raise SourceError(
                    f"short read of tensor '{ref.name}': the file changed or is truncated ({shard})"
                )
            out[ref.name] = data
    finally:
        os.close(fd)
    return out


def _read_header(path: Path, counter: ReadCounter) -> ShardHeader:
    shard = str(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise SourceError(f"cannot open shard: {exc.strerror} ({shard})") from None
    try:
        size = os.fstat(fd).st_size
        prefix = os.pread(fd, 8, 0)
        n = _header_length(prefix, shard, size)
        raw = os.pread(fd, n, 8)
        counter.bytes_read += len(prefix) + len(raw)
        counter.reads += 2
        if len(raw) != n:
            raise SourceError(f"truncated safetensors header ({shard})")
    finally:
        os.close(fd)
    return parse_header(raw, shard, size)


def _natural_key(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def _load_json(path: Path, counter: ReadCounter) -> Any:
    data = path.read_bytes()
    counter.metadata_bytes += len(data)
    return json.loads(data)


def _read_config(
    directory: Path, counter: ReadCounter, warnings: list[str]
) -> dict[str, Any] | None:
    path = directory / "config.json"
    if not path.is_file():
        return None
    try:
        config = _load_json(path, counter)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        warnings.append(
            f"config.json is malformed ({exc}); the architecture is inferred from tensor names "
            f"({path})"
        )
        return None
    if not isinstance(config, dict):
        warnings.append(f"config.json is not a JSON object; ignored ({path})")
        return None
    return config


def _shards_from_index(
    directory: Path, index_path: Path, counter: ReadCounter, warnings: list[str]
) -> tuple[list[Path], dict[str, str]]:
    try:
        index = _load_json(index_path, counter)
        weight_map = index["weight_map"]
        # The set of shard names is small; an unhashable value raises TypeError, caught below.
        if not isinstance(weight_map, dict) or not all(
            isinstance(v, str) for v in set(weight_map.values())
        ):
            raise TypeError("weight_map is not an object of file names")
        if not weight_map:  # else: "no .safetensors files" beside the shards it failed to name
            raise ValueError("weight_map is empty")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise SourceError(f"invalid shard index: {exc} ({index_path})") from None
    # `x.safetensors` and `./x.safetensors` are one shard: normalise before counting shards
    # (per distinct name: the map has one entry per tensor, 92k in DeepSeek-V3).
    normal = {v: os.path.normpath(v) for v in set(weight_map.values())}
    if any(k != v for k, v in normal.items()):
        weight_map = {k: normal[v] for k, v in weight_map.items()}
    names = sorted(set(weight_map.values()), key=lambda n: _natural_key(Path(n)))
    shards = []
    for name in names:
        shard = directory / name
        if not shard.is_file():
            raise SourceError(
                f"the index names shard '{name}' but it is missing ({index_path})",
                hint="the checkpoint is incomplete: download or copy every shard",
            )
        shards.append(shard)
    listed = {p.name for p in shards}
    extra = sorted(p.name for p in directory.glob("*.safetensors") if p.name not in listed)
    if extra:
        warnings.append(
            f"ignored {len(extra)} .safetensors file(s) not named in the index: "
            f"{', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''} ({directory})"
        )
    return shards, weight_map


def open_checkpoint(spec: str | os.PathLike[str]) -> Checkpoint:
    """Open a local checkpoint: parse config.json, the index and every shard header.

    Reads headers only; tensor data is read later with `Checkpoint.read`. A string that is no
    existing path but reads as a Hub repo (`org/name[@rev]`, `hf://...`) opens that repo.
    """
    path = Path(spec)
    if isinstance(spec, str) and not path.exists():
        from normscope import hub  # stdlib only: huggingface_hub is imported for Hub specs alone

        if hub.looks_like_hub(spec):
            return hub.open_hub_checkpoint(spec)
    counter = ReadCounter()
    warnings: list[str] = []
    if not path.exists():
        raise SourceError(f"no such file or directory ({path})")
    weight_map: dict[str, str] | None = None
    index_path: Path | None = None
    if path.is_file():
        directory = path.parent
        shard_paths = [path]
    elif path.is_dir():
        directory = path
        indexes = sorted(path.glob("*" + INDEX_SUFFIX))
        if indexes:
            index_path = indexes[0]
            if len(indexes) > 1:
                warnings.append(f"several shard indexes; using {index_path.name} ({path})")
            shard_paths, weight_map = _shards_from_index(path, index_path, counter, warnings)
        else:
            shard_paths = sorted(
                (p for p in path.glob("*.safetensors") if p.is_file()), key=_natural_key
            )
        if not shard_paths:
            hint = None
            if any(child.is_dir() for child in path.iterdir()):
                hint = "for a folder of checkpoints, use `normscope series`"
            raise SourceError(f"no .safetensors files in directory ({path})", hint=hint)
    else:
        raise SourceError(f"not a file or directory ({path})")

    config = _read_config(directory, counter, warnings)
    # NOTE: parsing builds ~100k long-lived dicts and TensorRefs and no reference cycles; left
    # on, the cyclic GC rescans that growing heap again and again (json.loads of DeepSeek-V3's
    # 163 headers: ~75 ms with it paused, ~200-260 ms without).
    gc_enabled = gc.isenabled()
    gc.disable()
    try:
        shards = [_read_header(p, counter) for p in shard_paths]
    finally:
        if gc_enabled:
            gc.enable()
    tensors = merge_shards(shards)
    if weight_map is not None and index_path is not None:
        _check_index(weight_map, tensors, directory, index_path, warnings)
    return Checkpoint(str(spec), config, shards, tensors, counter, warnings)


def merge_shards(shards: Sequence[ShardHeader]) -> dict[str, TensorRef]:
    """All tensors by name; a name stored in two shards is an error."""
    tensors: dict[str, TensorRef] = {}
    for shard in shards:
        tensors.update(shard.tensors)
    if len(tensors) != sum(len(s.tensors) for s in shards):  # slow path: name the duplicate
        seen: dict[str, str] = {}
        for shard in shards:
            for name in shard.tensors:
                if name in seen:
                    raise SourceError(
                        f"tensor '{name}' is stored in two shards: {seen[name]} and {shard.path}"
                    )
                seen[name] = shard.path
    return tensors


def _check_index(
    weight_map: dict[str, str],
    tensors: dict[str, TensorRef],
    directory: Path,
    index_path: Path,
    warnings: list[str],
) -> None:
    # NOTE: 92k tensors in DeepSeek-V3: build each shard's path once, not once per tensor.
    expected = {shard: str(directory / shard) for shard in set(weight_map.values())}
    for name, shard_name in weight_map.items():
        ref = tensors.get(name)
        if ref is None or ref.shard != expected[shard_name]:
            raise SourceError(
                f"tensor '{name}' is listed in the index but absent from shard '{shard_name}' "
                f"({index_path})",
                hint="the index and the shards disagree: re-save or re-download the checkpoint",
            )
    # Every index entry was found above, so extra tensors exist only if the counts differ.
    unlisted = [n for n in tensors if n not in weight_map] if len(tensors) > len(weight_map) else []
    if unlisted:
        warnings.append(
            f"{len(unlisted)} tensor(s) in the shards are not listed in the index, e.g. "
            f"'{unlisted[0]}' ({index_path})"
        )
