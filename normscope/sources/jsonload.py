"""A bounded JSON loader for safetensors headers, config.json and shard indexes.

`json.loads` alone is unsafe on untrusted input in three ways: it recurses once per nesting level
(100,000 `[` raise RecursionError), it converts integers of any length (4,301 digits exceed
Python's int-string limit and raise a ValueError that is no JSONDecodeError) and it silently keeps
the last of duplicate keys. `load_json` refuses all three before or while parsing, and raises only
`ValueError` (JSONDecodeError included), whose message says what is wrong.

NOTE: the nesting depth is measured before parsing, without recursion and at C speed: the bytes
are split on `"` (strings are the odd parts, when no string holds an escaped quote; else a regex
removes them), the structure left is reduced to its brackets, and adjacent `[]` pairs are
removed round after round: each round lowers the deepest nesting by one, so a header of depth 3
costs 3 `bytes.replace` calls. On the 163 headers of DeepSeek-V3 (11.5 MB, 92k tensors) the
pre-scan costs ~20 ms beside ~85 ms of parsing (benchmarks/RESULTS.md).

`strict=True` (safetensors headers) also applies serde_json's rules as safetensors uses them, so
that a header `safetensors.safe_open` refuses is refused here: UTF-8 only, no lone surrogate
escapes, no NaN/Infinity literals, no number out of f64 range.

NOTE: `load_json` first tries `_load_fast` (msgspec, C speed: the 8.9 MB index of DeepSeek-V3
in ~15 ms instead of ~80 ms with the pre-scan), which answers only for a document it can prove
the general path would accept with the same result, and otherwise defers to it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection
from typing import Any, Literal

import msgspec

MAX_DEPTH = 127
"""Nested arrays/objects accepted: serde_json's recursion limit of 128 as safetensors 0.8 applies
it (127 levels parse, 128 are refused: "recursion limit exceeded")."""
MAX_DIGITS = 308
"""The longest run of digits in a number: any longer integer exceeds every float64 (serde_json:
"number out of range"), and stays far below Python's 4,300-digit int conversion limit."""

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPEN_CLOSE = bytes.maketrans(b"{}", b"[]")
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * (MAX_DIGITS + 1)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class JSONLimitError(ValueError):
    """The document breaks one of the loader's limits (depth, number length, duplicate keys)."""


def check_limits(data: bytes) -> None:
    """Refuse nesting deeper than MAX_DEPTH and digit runs longer than MAX_DIGITS, not recursing.

    For invalid JSON the depth is an upper bound of what a parser would reach before failing.
    """
    # Without escaped quotes, the even parts of a split on `"` are outside strings (an
    # unterminated string hides only what no parser reads); else a regex finds the strings.
    escaped = b'\\"' in data
    skeleton = _STRING.sub(b'""', data) if escaped else b'""'.join(data.split(b'"')[0::2])
    if _LONG_RUN in skeleton.translate(_DIGITS_TO_ZERO):
        raise JSONLimitError(f"a number has more than {MAX_DIGITS} digits")
    brackets = skeleton.translate(_OPEN_CLOSE, _NOT_BRACKETS)
    if len(brackets) <= 2 * MAX_DEPTH and brackets.count(b"[") <= MAX_DEPTH:
        return
    rounds = 0
    while b"[]" in brackets:
        if rounds == MAX_DEPTH:
            raise JSONLimitError(f"nested deeper than {MAX_DEPTH} levels")
        brackets = brackets.replace(b"[]", b"")
        rounds += 1
    # Unbalanced (invalid JSON): what is left is `]]...[[`, the openers bound the rest.
    if rounds + len(brackets) > MAX_DEPTH:
        raise JSONLimitError(f"nested deeper than {MAX_DEPTH} levels")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JSONLimitError(f"duplicate key '{key[:80]}'")
            seen.add(key)
    return out


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise JSONLimitError(f"number out of range: {text[:40]}")
    return value


def _no_constant(text: str) -> Any:
    raise JSONLimitError(f"{text} is not JSON")


def _has_lone_surrogate(obj: Any) -> bool:
    """Walk the parsed document (its depth is bounded) for a str holding a lone surrogate."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


_DEFER = object()
_PLAIN = {str, int, bool, type(None)}
_BIG = 10**MAX_DIGITS


def _load_fast(data: bytes) -> Any:
    """`data` parsed by msgspec when that provably equals what the general path returns, else
    `_DEFER`. Taken only for ASCII without a backslash (no encodings, escapes or surrogates to
    judge) and a result without floats (a float may have hidden a 309-digit literal, or been
    NaN or out of range). Duplicate keys, which msgspec collapses silently, are excluded by
    counting: in valid JSON every `:` outside a string is one key, so as many colons in the
    document as keys in the parsed objects proves none was repeated (and no string holds a
    colon). Depth and integer length are checked on the result, without recursion."""
    if not data.isascii() or b"\\" in data:
        return _DEFER
    try:
        obj = msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return _DEFER
    keys = 0
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            keys += len(item)
            values: Any = item.values()
        elif isinstance(item, list):
            values = item
        else:
            continue
        if depth > MAX_DEPTH:
            return _DEFER
        kinds = set(map(type, values))  # C speed for a map of 92k names
        if kinds <= _PLAIN:
            if int in kinds and any(type(v) is int and not -_BIG < v < _BIG for v in values):
                return _DEFER
            continue
        for value in values:
            kind = type(value)
            if kind is dict or kind is list:
                stack.append((value, depth + 1))
            elif kind is float or (kind is int and not -_BIG < value < _BIG):
                return _DEFER
    if keys != data.count(b":"):
        return _DEFER
    return obj


def load_json(data: bytes, *, strict: bool = False, duplicates: bool = False) -> Any:
    """Parse `data` within the limits above; raise ValueError saying what is wrong.

    `strict`: safetensors' rules for headers (see the module doc). `duplicates`: keep the last of
    duplicate keys, as `json.loads` and transformers do (config.json); else they are refused.
    """
    if not strict and not duplicates:
        obj = _load_fast(data)
        if obj is not _DEFER:
            return obj
    if strict:
        text = data.decode("utf-8")
    else:  # as json.loads(bytes) reads them: UTF-8 (with or without BOM), UTF-16 or UTF-32
        text = data.decode(json.detect_encoding(data), "surrogatepass")
        if text.startswith("\ufeff"):
            text = text[1:]
        if not data.isascii():
            data = text.encode("utf-8", "surrogatepass")
    check_limits(data)
    hook = None if duplicates else _unique
    try:
        if strict:
            obj = json.loads(
                text,
                object_pairs_hook=hook,
                parse_float=_finite_float,
                parse_constant=_no_constant,
            )
        else:
            obj = json.loads(text, object_pairs_hook=hook)
    except RecursionError:  # NOTE: unreachable after check_limits; kept as a backstop
        raise JSONLimitError(f"nested deeper than {MAX_DEPTH} levels") from None
    if strict and _SURROGATE_ESCAPE.search(data) and _has_lone_surrogate(obj):
        raise JSONLimitError("a string holds a lone surrogate escape (\\ud800-\\udfff)")
    return obj


_TOP = msgspec.json.Decoder(dict[str, msgspec.Raw])


def load_name_map(data: bytes, key: str, values: Collection[str]) -> dict[str, str] | None:
    """`load_json(data)[key]` for an object whose `key` maps names to strings among `values`
    (a shard index's `weight_map` and its shards), each value one shared `str` of `values`;
    None: not provably that (the caller takes `load_json`, which accepts or refuses it).

    NOTE: issue 29: the 148 MB index of a 1.5M-tensor checkpoint decoded by `load_json` holds
    1.5M copies of its 2,562 shard names (123 MB); msgspec's `Literal` decoding returns the one
    `values` string for each. The same proof as `_load_fast`: ASCII without a backslash; every
    other member of the document through `_load_fast` (depth, numbers, duplicates); and as many
    `:` in the document as keys counted (the other members', one for `key`, one per name), so
    no key is repeated anywhere (a repeated top-level key, collapsed by the decoding, would
    leave a colon over) and no string holds a colon.
    """
    if not values or not data.isascii() or b"\\" in data:
        return None
    try:
        top = _TOP.decode(data)
        raw = top.pop(key)
        mapping = msgspec.json.decode(raw, type=dict[str, Literal[tuple(values)]])  # type: ignore[misc]
    except (msgspec.DecodeError, KeyError, RecursionError):
        return None
    rest = b"{" + b",".join(msgspec.json.encode(k) + b":" + bytes(v) for k, v in top.items()) + b"}"
    if _load_fast(rest) is _DEFER or data.count(b":") != rest.count(b":") + 1 + len(mapping):
        return None
    return mapping
