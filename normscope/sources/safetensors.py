"""The safetensors format: the 8-byte length, the JSON header, and its validation.

NOTE: the header is parsed by hand because `safetensors.safe_open` does not expose a tensor's
byte offsets (needed to read exactly its range and to count bytes) and its numpy framework refuses
BF16. The checks below mirror the ones safetensors 0.8 applies when it opens a file (serde_json's
rules, through `jsonload.load_json(strict=True)`; header size limit; known dtypes; u64 shapes and
offsets; contiguous data_offsets that cover the data section exactly; sizes that match
shape x dtype), so a file normscope accepts is one safetensors accepts, with one exception: a
dtype name safetensors does not know yet (`_DTYPE_NAME`). tests/test_fuzz.py checks it.
"""

from __future__ import annotations

import collections
import math
import operator
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Annotated, Any

import msgspec

from normscope.errors import SourceError
from normscope.schema import Leaves, TensorRef, light_kept
from normscope.sources.jsonload import load_json

# safetensors refuses headers above 100 MB (safetensors/src/tensor.rs MAX_HEADER_SIZE).
MAX_HEADER_SIZE = 100_000_000

U64_MAX = 2**64 - 1
"""safetensors reads shapes and offsets as usize (u64) and refuses sizes whose bits overflow it."""

# Size in bits of each dtype safetensors 0.8 knows (safetensors/src/tensor.rs `Dtype`, `bitsize`);
# it refuses any other dtype name ("unknown variant").
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E4M3": 8,
    "F8_E5M2": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
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
# NOTE: the one documented difference from safetensors, which refuses a dtype it does not know:
# normscope reads the other tensors of a checkpoint written with a newer dtype (and skips that
# one with a warning), but only for a name shaped like safetensors' dtype names.
_DTYPE_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,31}")


@dataclass(frozen=True, slots=True)
class ShardHeader:
    """One parsed safetensors file."""

    path: str
    size: int
    """File size in bytes."""
    header_bytes: int
    """8 + the JSON header's length: what reading the header costs."""
    tensors: dict[str, TensorRef]
    """Every tensor's ref; light (`names` set): only the gain-shaped ones and the scalars
    (`light_kept`)."""
    metadata: dict[str, str]
    names: list[str] | None = None
    """Light, as `parse_header(light=True)` returns it: every tensor name, in header order;
    slimmed (`slim`, `count` set): only the names a rule may ask for (`Leaves`). None: `tensors`
    holds every tensor."""
    dtypes: dict[str, list[int]] | None = None
    """Light: per dtype, [tensors, bytes] over every tensor of the shard."""
    count: int | None = None
    """Slimmed (`slim`): how many tensors the shard holds. None: `names` (light) or `tensors`
    (full) are all of them."""

    @property
    def all_names(self) -> list[str]:
        """Every tensor name, in header order (not of a slimmed shard: it has not kept them)."""
        assert self.count is None, f"{self.path}: a slimmed header keeps no list of every name"
        return self.names if self.names is not None else list(self.tensors)

    @property
    def tensor_count(self) -> int:
        """How many tensors the shard holds."""
        if self.count is not None:
            return self.count
        return len(self.names) if self.names is not None else len(self.tensors)

    @property
    def dtype_counts(self) -> dict[str, list[int]]:
        """Per dtype, [tensors, bytes] over every tensor of the shard."""
        return self.dtypes if self.dtypes is not None else summarise(self.tensors.values())


def summarise(refs: Iterable[TensorRef]) -> dict[str, list[int]]:
    """Per dtype, [tensors, bytes] of `refs`."""
    out: dict[str, list[int]] = {}
    for ref in refs:
        entry = out.get(ref.dtype)
        if entry is None:
            out[ref.dtype] = [1, ref.end - ref.start]
        else:
            entry[0] += 1
            entry[1] += ref.end - ref.start
    return out


def lighten(shard: ShardHeader) -> ShardHeader:
    """The light form of a full `shard`: the refs `light_kept` keeps, every name, the dtype
    summary."""
    if shard.names is not None:
        return shard
    kept = {n: r for n, r in shard.tensors.items() if light_kept(n, r.shape)}
    return ShardHeader(
        shard.path,
        shard.size,
        shard.header_bytes,
        kept,
        shard.metadata,
        list(shard.tensors),
        summarise(shard.tensors.values()),
    )


def slim(shard: ShardHeader, leaves: Leaves) -> ShardHeader:
    """A light `shard` without its list of every name: the refs `light_kept` keeps, the dtype
    summary, the count, and only the names `leaves` covers (what the rules' `if_present` asks
    about).

    NOTE: issue 29: the names were what a light layout held per tensor (~100 bytes each: 150 MB
    at 1.5M tensors); a lookup of any other name loads the full layout (`TensorMap`).
    A slimmed shard is returned as it is."""
    if shard.count is not None:
        return shard
    names = shard.all_names
    return replace(shard, names=leaves.select(names), count=len(names))


class _Entry(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """One tensor's header entry, as the fast path decodes it (unknown keys: the slow path)."""

    dtype: str
    shape: tuple[Annotated[int, msgspec.Meta(ge=0)], ...]
    data_offsets: tuple[Annotated[int, msgspec.Meta(ge=0)], Annotated[int, msgspec.Meta(ge=0)]]


_DECODE_ENTRIES = msgspec.json.Decoder(dict[str, _Entry])
_DTYPE_OF = operator.attrgetter("dtype")
_METADATA_FIRST = re.compile(rb'\{"__metadata__":(\{(?:[^"}]|"[^"\\]*")*\}),')
"""`{"__metadata__":{...},` as safetensors writes it (compact, metadata first, no escapes)."""
_METADATA_SCAN = 1 << 16


@dataclass(slots=True)
class _Light:
    """What a light parse gives besides the refs `light_kept` keeps (`ShardHeader.names`,
    `.dtypes`)."""

    names: list[str] = field(default_factory=list)
    dtypes: dict[str, list[int]] = field(default_factory=dict)


def _parse_fast(
    raw: bytes, shard: str, data_len: int, light: _Light | None = None
) -> tuple[dict[str, TensorRef], dict[str, str]] | None:
    """The header as safetensors writes it, parsed at C speed; None: let `parse_header`'s
    general path decide (it accepts or refuses exactly as before, with its messages).

    NOTE: an accelerator that never refuses anything. It takes a header only when it can prove
    the general path would accept it with the same result: ASCII (so valid UTF-8) without a
    single backslash (so no escapes and no lone surrogates), metadata first and made of strings,
    every tensor exactly {dtype, shape, data_offsets} with non-negative integers (msgspec's
    typed decoding: no float, no NaN, no nesting), a known dtype whose size matches, and tensors
    in data order tiling the data section. Duplicate keys, which msgspec would silently collapse,
    are excluded by counting: the document is valid JSON, so every `:` outside a string is one
    key; there are >= 1 + 3 per tensor entry, and exactly 4 x len(tensors) colons in the
    document (strings included) proves no key was repeated and no string holds a colon. Depth
    and number length need no pre-scan: the typed decoder meets nothing nested deeper than 3
    levels, and a number too long for a u64 dimension fails the size check.
    """
    if not raw.isascii() or b"\\" in raw:
        return None
    split = _metadata_first(raw)
    if split is None:
        return None
    metadata, body = split
    try:
        entries = _DECODE_ENTRIES.decode(body)
    except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
        return None
    if body.count(b":") != 4 * len(entries):
        return None
    tensors = _tile(entries, shard, 8 + len(raw), data_len, light)
    return None if tensors is None else (tensors, metadata)


def _tile(
    entries: dict[str, _Entry], shard: str, base: int, data_len: int, light: _Light | None
) -> dict[str, TensorRef] | None:
    """The refs of `entries` when they are known dtypes whose sizes match their shapes and
    tile the data section in order; None: not provably so (the general path decides). `light`:
    only the refs `light_kept` keeps, and every name and the dtype summary in `light`."""
    bits_of = DTYPE_BITS.get
    prod = math.prod
    tensors: dict[str, TensorRef] = {}
    position = start = 0
    last: str | None = None
    runs: list[tuple[str, int]] = []  # light: (dtype, bytes) of each run of one dtype
    bits = 0
    for name, entry in entries.items():
        begin, end = entry.data_offsets
        dtype, shape = entry.dtype, entry.shape
        if begin != position:
            return None
        if dtype != last:  # safetensors writes tensors by dtype: a few runs per shard
            known = bits_of(dtype)
            if known is None:
                return None
            if last is not None:
                runs.append((last, position - start))
            bits, last, start = known, dtype, begin
        nbits = prod(shape) * bits
        if nbits != (end - begin) * 8 or nbits > U64_MAX or (not nbits and len(shape) > 1):
            return None
        position = end
        # NOTE: `light_kept`, inlined in the loop that runs once per tensor (a call costs
        # ~0.1 us x 92k); tests/test_light_layout.py holds the kept refs to it.
        ndim = len(shape)
        if light is None or ndim < 2 or (ndim == 2 and "norm" in name.lower()):
            tensors[name] = TensorRef(name, shard, dtype, shape, base + begin, base + end)
    if position != data_len or "__metadata__" in entries:
        return None
    if light is not None:
        if last is not None:
            runs.append((last, position - start))
        light.names = list(entries)
        counts = collections.Counter(map(_DTYPE_OF, entries.values()))
        for dtype, size in runs:
            light.dtypes.setdefault(dtype, [counts[dtype], 0])[1] += size
    return tensors


def _metadata_first(raw: bytes) -> tuple[dict[str, str], bytes] | None:
    """The `__metadata__` strings written first, and the tensors' JSON object without them;
    None: not as safetensors writes it (the general path decides)."""
    # NOTE: the regex backtracks (Python's `re` keeps a frame per repetition: 4.5 GB for 32 MB
    # of whitespace), so it sees only the first _METADATA_SCAN bytes; a longer `__metadata__`
    # (none real is) takes the general path, whose memory is linear in the header.
    match = _METADATA_FIRST.match(raw[:_METADATA_SCAN])
    if match is None:
        if raw.startswith(b'{"__metadata__"'):
            return None
        return {}, raw
    try:
        meta = load_json(match.group(1), strict=True)
    except ValueError:
        return None
    if not all(type(v) is str for v in meta.values()):
        return None
    return meta, b"{" + raw[match.end() :]


def parse_header(
    raw: bytes, shard: str, file_size: int, *, fast: bool = True, light: bool = False
) -> ShardHeader:
    """Parse and validate the JSON header `raw` (without its 8-byte length prefix).

    Raises SourceError naming the shard (and tensor) for every header safetensors itself refuses
    (the property test in tests/test_fuzz.py holds normscope to it), plus a truncated data
    section. Stricter than safetensors on purpose: a header must start with `{`, a tensor name
    may appear once only (safetensors keeps the last), and no number may have over 308 digits.
    `fast=False` skips `_parse_fast` (the tests compare the two paths). `light`: keep the refs
    `light_kept` keeps (the gain-shaped tensors and the scalars), every name and a dtype
    summary (`ShardHeader.names`); the validation is the same.
    """
    header_len = len(raw)
    data_len = file_size - 8 - header_len
    if data_len < 0:
        raise SourceError(f"truncated safetensors header ({shard})")
    if not raw[:1] == b"{":
        raise SourceError(f"not a safetensors file: header does not start with '{{' ({shard})")
    extra = _Light() if light else None
    quick = _parse_fast(raw, shard, data_len, extra) if fast else None
    if quick is not None:
        if extra is not None:
            return ShardHeader(shard, file_size, 8 + header_len, *quick, extra.names, extra.dtypes)
        return ShardHeader(shard, file_size, 8 + header_len, *quick)
    obj, metadata = _header_object(raw, shard)
    base = 8 + header_len
    tensors: dict[str, TensorRef] = {}
    # NOTE: this loop runs once per tensor (92k in DeepSeek-V3): keep it lean. Files written by
    # safetensors list tensors in data order: check the tiling on the fly, and sort (in
    # _check_tiling) only a header in some other order.
    position, in_order = 0, True
    for name, info in obj.items():
        dtype, shape, begin, end = _entry(name, info, shard, data_len)
        if begin == position:
            position = end
        else:
            in_order = False
        tensors[name] = TensorRef(name, shard, dtype, tuple(shape), base + begin, base + end)
    if not (in_order and position == data_len):
        check_tiling(tensors, base, data_len, shard)
    full = ShardHeader(shard, file_size, 8 + header_len, tensors, dict(metadata))
    return lighten(full) if light else full


def _header_object(raw: bytes, shard: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The header's JSON object without `__metadata__`, and the metadata (strings only)."""
    try:
        obj = load_json(raw, strict=True)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise SourceError(f"invalid safetensors header JSON: {exc} ({shard})") from None
    if not isinstance(obj, dict):
        raise SourceError(f"invalid safetensors header: not a JSON object ({shard})")
    metadata = obj.pop("__metadata__", None)
    # safetensors requires null or a map of strings to strings (it refuses other values).
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict) or not all(type(v) is str for v in metadata.values()):
        raise SourceError(
            f"invalid safetensors header: __metadata__ is not an object of strings ({shard})"
        )
    return obj, metadata


def _entry(name: str, info: Any, shard: str, data_len: int) -> tuple[str, list[int], int, int]:
    """One tensor's dtype, shape and data offsets, checked as safetensors checks them."""
    try:
        dtype = info["dtype"]
        shape = info["shape"]
        offsets = info["data_offsets"]
        ok = type(dtype) is str and type(shape) is list and type(offsets) is list
        if ok:
            begin, end = offsets
            ok = type(begin) is int and type(end) is int and begin >= 0 and end <= U64_MAX
        for d in shape:
            if type(d) is not int or not 0 <= d <= U64_MAX:
                ok = False
    except (TypeError, KeyError, ValueError):
        ok = False
    if not ok:
        raise SourceError(f"invalid header entry for tensor '{name}' ({shard})")
    bits = DTYPE_BITS.get(dtype)
    if bits is None and _DTYPE_NAME.fullmatch(dtype) is None:
        raise SourceError(f"invalid dtype {dtype[:40]!a} of tensor '{name}' ({shard})")
    if not begin <= end:
        raise SourceError(f"invalid data_offsets [{begin}, {end}] of tensor '{name}' ({shard})")
    if end > data_len:
        raise SourceError(
            f"tensor '{name}' ends at byte {end} but the data section has {data_len} bytes: "
            f"the file is truncated or its data_offsets are out of bounds ({shard})"
        )
    if bits is not None:  # None: a dtype of a newer safetensors, of unknown size
        nbits = math.prod(shape) * bits
        if nbits > U64_MAX or (nbits == 0 and len(shape) > 2 and _overflows(shape, bits)):
            raise SourceError(
                f"tensor '{name}' has shape {shape} and dtype {dtype}: more than 2^64 bits "
                f"({shard})"
            )
        if nbits % 8 or nbits // 8 != end - begin:
            size = f"{nbits // 8} bytes" + (f" and {nbits % 8} bits" if nbits % 8 else "")
            raise SourceError(
                f"tensor '{name}' has shape {shape} and dtype {dtype} ({size}) but "
                f"data_offsets span {end - begin} bytes ({shard})"
            )
    return dtype, shape, begin, end


def _overflows(shape: list[int], bits: int) -> bool:
    """True when safetensors' left-to-right checked product of `shape` (then x bits) overflows
    u64 before a zero dimension brings it back to 0 (`[2**40, 2**40, 0]` is refused)."""
    n = 1
    for d in shape:
        n *= d
        if n > U64_MAX:
            return True
    return n * bits > U64_MAX


def check_tiling(tensors: dict[str, TensorRef], base: int, data_len: int, shard: str) -> None:
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


def header_length(prefix: bytes, shard: str, file_size: int) -> int:
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
