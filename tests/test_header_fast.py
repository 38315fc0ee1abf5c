"""The fast header path's tiling check (`safetensors._tile`), column-wise since issue 29.

`_tile` checks and keeps every tensor of a header with `map`/`compress` over columns instead of
a loop per tensor. The reference here is that loop, written out plainly (`_loop_tile`: the code
`_tile` replaced, with `gain_shaped` itself for what a light parse keeps): on random headers the
two must give the same refs in the same order, the same names and dtype summary, and None on the
same headers. And on every header the fast path defers, `parse_header` must answer exactly as
its general path does.
"""

from __future__ import annotations

import math
import random

import pytest

from normscope.errors import SourceError
from normscope.schema import TensorRef, gain_shaped
from normscope.sources.safetensors import (
    DTYPE_BITS,
    U64_MAX,
    ShardHeader,
    _Entry,
    _Light,
    _parse_fast,
    _tile,
    parse_header,
)


def _loop_tile(
    entries: dict[str, _Entry], shard: str, base: int, data_len: int, light: _Light | None
) -> dict[str, TensorRef] | None:
    """The per-tensor loop, as plainly as it can be written."""
    tensors: dict[str, TensorRef] = {}
    position = 0
    for name, entry in entries.items():
        begin, end = entry.data_offsets
        bits = DTYPE_BITS.get(entry.dtype)
        if begin != position or bits is None:
            return None
        nbits = math.prod(entry.shape) * bits
        if nbits != (end - begin) * 8 or nbits > U64_MAX:
            return None
        if nbits == 0 and len(entry.shape) > 1:
            return None
        position = end
        if light is None or gain_shaped(name, entry.shape):
            tensors[name] = TensorRef(
                name, shard, entry.dtype, entry.shape, base + begin, base + end
            )
    if position != data_len or "__metadata__" in entries:
        return None
    if light is not None:
        light.names = list(entries)
        for entry in entries.values():
            summary = light.dtypes.setdefault(entry.dtype, [0, 0])
            summary[0] += 1
            summary[1] += entry.data_offsets[1] - entry.data_offsets[0]
    return tensors


_NAMES = ["w", "model.norm.weight", "q_NORM", "layernorm", "Norm.bias", "x.proj", "nor.m", "ln"]
_DTYPES = ["F32", "BF16", "F8_E4M3", "F4", "F6_E2M3", "U8", "I64", "F99"]


def _random_entries(rng: random.Random) -> tuple[dict[str, _Entry], int]:
    """Entries mostly as safetensors writes them (by dtype, contiguous), sometimes broken."""
    entries: dict[str, _Entry] = {}
    position = 0
    dtypes = sorted(rng.sample(_DTYPES[:-1], rng.randint(1, 3)))
    for i in range(rng.randint(0, 12)):
        dtype = dtypes[min(i * len(dtypes) // 12, len(dtypes) - 1)]
        if rng.random() < 0.02:
            dtype = rng.choice(_DTYPES)
        shape = tuple(
            rng.choice([0, 1, 2, 3, 4, 8, 16]) for _ in range(rng.choice([0, 1, 1, 2, 2, 3]))
        )
        nbits = math.prod(shape) * DTYPE_BITS.get(dtype, 8)
        size = nbits // 8 + (rng.random() < 0.03) - (rng.random() < 0.03)
        begin = position + (rng.random() < 0.02) - (rng.random() < 0.02)
        name = f"{rng.choice(_NAMES)}.{i}"
        if rng.random() < 0.01:
            name = "__metadata__"
        entries[name] = _Entry(dtype, shape, (max(begin, 0), max(begin + size, 0)))
        position = max(begin + size, 0)
    return entries, position + (rng.random() < 0.03)


def test_the_column_wise_tile_is_the_loop_on_random_headers() -> None:
    rng = random.Random(29)
    taken = deferred = 0
    for _ in range(4000):
        entries, data_len = _random_entries(rng)
        for light in (False, True):
            mine, theirs = (_Light() if light else None), (_Light() if light else None)
            got = _tile(entries, "s", 64, data_len, mine)
            want = _loop_tile(entries, "s", 64, data_len, theirs)
            assert (got is None) == (want is None), entries
            if got is not None and want is not None:
                assert list(got.items()) == list(want.items()), entries
                taken += 1
            else:
                deferred += 1
            if mine is not None and theirs is not None:
                assert mine.names == theirs.names, entries
                assert list(mine.dtypes.items()) == list(theirs.dtypes.items()), entries
    assert taken > 1000 and deferred > 1000  # both outcomes exercised


def _header(*entries: tuple[str, str, list[int], int, int]) -> bytes:
    fields = [
        f'"{name}":{{"dtype":"{dtype}","shape":{shape},"data_offsets":[{begin},{end}]}}'.replace(
            " ", ""
        )
        for name, dtype, shape, begin, end in entries
    ]
    return ('{"__metadata__":{"format":"pt"},' + ",".join(fields) + "}").encode()


_A = ("a.norm", "F32", [2], 0, 8)
_B = ("b", "BF16", [2, 2], 8, 16)
DEFERRED = {
    "gap": (_header(_A, ("b", "BF16", [2, 2], 12, 20)), 20),
    "overlap": (_header(_A, ("b", "BF16", [2, 2], 4, 12)), 12),
    "ends early": (_header(_A, _B), 24),
    "ends late": (_header(_A, _B), 12),
    "first not at 0": (_header(("a", "F32", [2], 4, 12)), 12),
    "unknown dtype": (_header(_A, ("b", "F99", [2, 2], 8, 16)), 16),
    "size mismatch": (_header(_A, ("b", "BF16", [2, 3], 8, 16)), 16),
    "size mismatch, 4-bit": (_header(_A, ("b", "F4", [3], 8, 10)), 10),
    "zero-size 2-D": (_header(_A, ("b", "F32", [4, 0], 8, 8)), 8),
    "zero-size 3-D": (_header(_A, ("b", "F32", [4, 0, 2], 8, 8)), 8),
    "zero-size 3-D, overflowing": (_header(_A, ("b", "F32", [2**40, 2**40, 0], 8, 8)), 8),
    "over 2^64 bits": (_header(("a", "U8", [2**61], 0, 2**61)), 2**61),
    "__metadata__ later": (
        _header(_A, ("__metadata__", "F32", [2], 8, 16)).replace(
            b'"__metadata__":{"format":"pt"},', b""
        ),
        16,
    ),
    "not in data order": (_header(("b", "BF16", [2, 2], 8, 16), _A), 16),
}


def _answer(raw: bytes, data_len: int, fast: bool, light: bool) -> ShardHeader | str:
    try:
        return parse_header(raw, "s", 8 + len(raw) + data_len, fast=fast, light=light)
    except SourceError as exc:
        return f"SourceError: {exc}"


@pytest.mark.parametrize("case", DEFERRED, ids=str)
def test_the_fast_path_defers_and_parse_header_answers_as_the_general_path(case: str) -> None:
    raw, data_len = DEFERRED[case]
    assert _parse_fast(raw, "s", data_len) is None
    assert _parse_fast(raw, "s", data_len, _Light()) is None
    for light in (False, True):
        assert _answer(raw, data_len, True, light) == _answer(raw, data_len, False, light)


def test_the_deferred_cases_are_accepted_and_refused_as_safetensors_does() -> None:
    """The general path's verdicts the cases above must reproduce (so they test something)."""
    accepted = {"unknown dtype", "zero-size 2-D", "zero-size 3-D", "not in data order"}
    for case, (raw, data_len) in DEFERRED.items():
        answer = _answer(raw, data_len, False, True)
        assert isinstance(answer, ShardHeader) == (case in accepted), (case, answer)
    # a tensor named __metadata__ is safetensors' metadata, which must be strings
    assert "__metadata__ is not" in str(_answer(*DEFERRED["__metadata__ later"], False, False))
    assert "more than 2^64 bits" in str(_answer(*DEFERRED["over 2^64 bits"], False, False))


@pytest.mark.parametrize(
    ("raw", "data_len"),
    [
        (_header(_A, _B), 16),
        (_header(_A, _B, ("c", "F4", [2], 16, 17), ("d", "F6_E2M3", [4], 17, 20)), 20),
        (_header(_A, ("z", "F32", [0], 8, 8), ("s", "F32", [], 8, 12)), 12),
        (_header(("q.Norm", "BF16", [4, 2], 0, 16), ("k_NORM", "F32", [1, 1, 1], 16, 20)), 20),
        (b"{}", 0),
    ],
)
def test_the_fast_path_takes_what_the_general_path_gives(raw: bytes, data_len: int) -> None:
    assert _parse_fast(raw, "s", data_len) is not None
    for light in (False, True):
        fast, general = _answer(raw, data_len, True, light), _answer(raw, data_len, False, light)
        assert isinstance(fast, ShardHeader) and fast == general
        assert list(fast.tensors) == list(general.tensors) and fast.names == general.names
        assert list(fast.dtype_counts.items()) == list(general.dtype_counts.items())
