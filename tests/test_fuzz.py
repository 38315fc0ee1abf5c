"""Issue #12: property tests of the input boundary (bounded: a few seconds in the suite).

1. Acceptance matches safetensors: a header `safetensors.safe_open` refuses, normscope refuses too.
   Documented exceptions, each normscope being stricter or more forward-compatible:
   - a dtype name safetensors does not know, shaped like its names (`[A-Z][A-Z0-9_]{0,31}`):
     normscope reads the other tensors (a newer format's dtype) and skips that one;
   normscope also refuses some headers safetensors accepts: a duplicate tensor name (safetensors
   keeps the last), a header not starting with `{`, a number of more than 308 digits.
2. Any bytes -> a Report or a NormscopeError, never anything else, and a Report renders in
   every format. benchmarks/fuzz.py runs the same idea at scale (>= 100,000 cases).
"""

from __future__ import annotations

import io
import json
import re
import struct
from pathlib import Path
from typing import Any

import pytest
from conftest import llama_config, llama_tensors, write_checkpoint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

import normscope
from normscope.errors import NormscopeError, SourceError
from normscope.render.common import render_json
from normscope.render.scan import render_csv, render_markdown, render_table
from normscope.sources import open_checkpoint
from normscope.sources.safetensors import DTYPE_BITS, ShardHeader, _parse_fast, parse_header

safetensors = pytest.importorskip("safetensors")

_FORWARD_DTYPE = re.compile(r"[A-Z][A-Z0-9_]{0,31}")
# Small numbers mostly, so that sizes often agree; then the edges of u64 and beyond.
_INTS = st.one_of(
    st.integers(0, 16),
    st.sampled_from([2**32, 2**63, 2**64 - 1, 2**64, 10**30, -1]),
)
_DTYPES = st.one_of(
    st.sampled_from(sorted(DTYPE_BITS)),
    st.sampled_from(["F99", "f32", "C128", "U64 ", "", "\ud800", "F32\x00"]),
)
_NAMES = st.one_of(
    st.sampled_from(["model.norm.weight", "model.layers.0.input_layernorm.weight", "w"]),
    st.text(max_size=6),  # lone surrogates included
)


def _value(draw: Any, depth: int) -> str:
    """Raw JSON text of an odd value: nesting around the limit, floats, literals, strings."""
    kind = draw(st.sampled_from(["deep", "float", "literal", "string", "int"]))
    if kind == "deep":
        n = draw(st.sampled_from([1, 120, 125, 126, 127, 128, 300]))
        return "[" * n + "]" * n
    if kind == "float":
        return draw(st.sampled_from(["1.5", "1e400", "-1e309", "NaN", "Infinity", "1e-400"]))
    if kind == "literal":
        return draw(st.sampled_from(["null", "true", "false", "{}", "[]"]))
    if kind == "int":
        return str(draw(_INTS))
    return json.dumps(draw(st.text(max_size=4)))


@st.composite
def headers(draw: Any) -> tuple[bytes, bytes]:
    """A header (raw JSON text, with duplicates and odd values as generated) and its data."""
    pairs: list[str] = []
    position = 0
    if draw(st.booleans()):
        meta = draw(
            st.one_of(
                st.just("null"),
                st.just("{}"),
                st.builds(
                    lambda k, v: json.dumps({k: v}), st.text(max_size=3), st.text(max_size=3)
                ),
                st.sampled_from(['{"a":1}', '{"a":null}', "[]", '"x"', '{"a":"b","a":"c"}']),
            )
        )
        pairs.append(f'"__metadata__":{meta}')
    for _ in range(draw(st.integers(0, 3))):
        dtype = draw(_DTYPES)
        shape = draw(st.lists(_INTS, max_size=3))
        numel = 1
        for d in shape:
            numel *= d
        bits = DTYPE_BITS.get(dtype, 8)
        size = numel * bits // 8 if numel >= 0 else 0
        if draw(st.booleans()) or size > 64:
            size = draw(st.integers(0, 8))
        begin = draw(st.sampled_from([position, position, 0, position + 1]))
        end = begin + size
        position = max(position, end)
        fields = [
            f'"dtype":{json.dumps(dtype)}',
            f'"shape":{json.dumps(shape)}',
            f'"data_offsets":[{begin},{end}]',
        ]
        if draw(st.integers(0, 5)) == 0:
            fields.append(f'"extra":{_value(draw, 2)}')
        if draw(st.integers(0, 9)) == 0:
            fields.append(fields[0])  # a duplicate field
        if draw(st.integers(0, 9)) == 0:
            fields.pop(draw(st.integers(0, len(fields) - 1)))  # a missing field
        pairs.append(f"{json.dumps(draw(_NAMES))}:{{{','.join(fields)}}}")
    if draw(st.integers(0, 5)) == 0:
        pairs.append(f'"odd":{_value(draw, 1)}')
    if pairs and draw(st.integers(0, 9)) == 0:
        pairs.append(pairs[0])  # a duplicate key
    text = "{" + ",".join(pairs) + "}" + draw(st.sampled_from(["", " ", "\n", "x"]))
    data_len = position + draw(st.sampled_from([0, 0, 0, 1]))
    return text.encode("utf-8", "surrogatepass"), b"\0" * data_len


def _safetensors_accepts(path: Path) -> bool:
    try:
        with safetensors.safe_open(str(path), "np") as f:
            f.keys()
    except Exception:
        return False
    return True


def _forward_dtype(header: bytes) -> bool:
    """The documented exception: an unknown dtype shaped like safetensors' names."""
    for m in re.finditer(rb'"dtype":("(?:[^"\\]|\\.)*")', header):
        try:
            dtype = json.loads(m.group(1))
        except ValueError:
            continue
        if dtype not in DTYPE_BITS and _FORWARD_DTYPE.fullmatch(dtype):
            return True
    return False


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=headers())
def test_a_header_safetensors_refuses_normscope_refuses(
    tmp_path: Path, case: tuple[bytes, bytes]
) -> None:
    header, data = case
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    try:
        open_checkpoint(path)
        accepted = True
    except NormscopeError:
        accepted = False
    if accepted and not _forward_dtype(header):
        assert _safetensors_accepts(path), header


# --- any bytes -> a Report or a NormscopeError, and it renders -----------------------------------


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    root = write_checkpoint(tmp_path_factory.mktemp("seed"), llama_tensors(), llama_config())
    return (root / "model.safetensors").read_bytes(), (root / "config.json").read_bytes()


def render_everything(report: normscope.Report) -> None:
    render_json(report)
    render_csv(report)
    render_markdown(report, show_all=True)
    console = Console(file=io.StringIO(), record=True, width=120, color_system=None)
    for item in render_table(report, show_all=True, width=120):
        console.print(item)


_MUTATIONS = st.lists(
    st.tuples(st.sampled_from(["flip", "cut", "insert", "digits"]), st.integers(0, 2**16)),
    min_size=1,
    max_size=4,
)


def mutate(data: bytes, steps: list[tuple[str, int]], payload: bytes) -> bytes:
    out = bytearray(data)
    for kind, at in steps:
        if not out:
            break
        at %= len(out)
        if kind == "flip":
            out[at] ^= 1 << (at % 8)
        elif kind == "cut":
            del out[at:]
        elif kind == "insert":
            out[at:at] = payload
        else:  # a digit run where a digit is: the length prefix, offsets, shapes
            m = re.search(rb"[0-9]", bytes(out[at:]))
            if m:
                i = at + m.start()
                out[i : i + 1] = b"9" * 40
    return bytes(out)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=_MUTATIONS,
    payload=st.binary(max_size=8) | st.sampled_from([b"[[[[", b'"\\ud800"', b"\xff", b"1e999"]),
    target=st.sampled_from(["shard", "config"]),
)
def test_any_bytes_give_a_report_or_a_normscope_error(
    tmp_path: Path,
    seed: tuple[bytes, bytes],
    steps: list[tuple[str, int]],
    payload: bytes,
    target: str,
) -> None:
    shard, config = seed
    if target == "shard":
        shard = mutate(shard, steps, payload)
    else:
        config = mutate(config, steps, payload)
    folder = tmp_path / "case"
    folder.mkdir(exist_ok=True)
    (folder / "model.safetensors").write_bytes(shard)
    (folder / "config.json").write_bytes(config)
    try:
        report = normscope.scan(folder)
    except NormscopeError as exc:
        assert exc.message and "\n" not in exc.message  # one line that says something
        return
    # A report is a whole one: of this folder, with every norm it lists measured.
    assert report.source == str(folder) and report.norms
    assert all(n.dim > 0 for n in report.norms)
    render_everything(report)


# --- the fast header path (msgspec) agrees with the general one -----------------------------------


def _both(header: bytes, data_len: int) -> tuple[object, object]:
    """(fast path's answer or None, general path's ShardHeader or the SourceError it raised)."""
    size = 8 + len(header) + data_len
    fast = _parse_fast(header, "s", data_len) if header[:1] == b"{" else None
    try:
        slow: object = parse_header(header, "s", size, fast=False)
    except SourceError as exc:
        slow = exc
    return fast, slow


@settings(max_examples=400, deadline=None)
@given(case=headers())
def test_the_fast_header_path_takes_only_what_the_general_path_accepts(
    case: tuple[bytes, bytes],
) -> None:
    header, data = case
    fast, slow = _both(header, len(data))
    if fast is not None:
        assert not isinstance(slow, SourceError), (header, slow)
        assert isinstance(slow, ShardHeader)
        assert fast == (slow.tensors, slow.metadata), header


def _entry(name: str, begin: int, *extra: str) -> str:
    fields = ['"dtype":"F32"', '"shape":[1]', f'"data_offsets":[{begin},{begin + 4}]', *extra]
    return f'"{name}":{{{",".join(fields)}}}'


@pytest.mark.parametrize(
    ("body", "data_len"),
    [
        # msgspec keeps the last of duplicate keys silently: the colon count must see them
        ('{"__metadata__":{"format":"pt"},' + _entry("a", 0) + "," + _entry("a", 0) + "}", 4),
        ("{" + _entry("a", 0, '"dtype":"F32"') + "}", 4),
        ("{" + _entry("a", 0, '"shape":[1]') + "}", 4),
        ('{"__metadata__":{"a":"b","a":"c"},' + _entry("a", 0) + "}", 4),
        # escaped key spellings of a duplicate field
        ('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"d\\u0074ype":"F16"}}', 4),
        # a later __metadata__, metadata that is not strings, a colon in a name
        (
            "{" + _entry("a", 0) + ',"__metadata__":{"dtype":"F32","shape":[1],'
            '"data_offsets":[4,8]}}',
            8,
        ),
        ('{"__metadata__":{"a":1},' + _entry("a", 0) + "}", 4),
        ("{" + _entry("a:b", 0) + "}", 4),
        # out of u64, a zero-size tensor with a huge dimension, a float dimension
        ('{"a":{"dtype":"F32","shape":[18446744073709551616,0],"data_offsets":[0,0]}}', 0),
        ('{"a":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}}', 4),
        # out of data order, a gap, a short data section, an unknown dtype
        ("{" + _entry("b", 4) + "," + _entry("a", 0) + "}", 8),
        ("{" + _entry("a", 0) + "," + _entry("b", 8) + "}", 12),
        ("{" + _entry("a", 0) + "}", 8),
        ('{"a":{"dtype":"F99","shape":[1],"data_offsets":[0,4]}}', 4),
    ],
)
def test_the_fast_header_path_defers_every_doubtful_header(body: str, data_len: int) -> None:
    fast, _ = _both(body.encode(), data_len)
    assert fast is None


def test_the_fast_header_path_takes_what_safetensors_writes() -> None:
    header = '{"__metadata__":{"format":"pt"},' + _entry("a", 0) + "," + _entry("b", 4) + "}"
    header += " " * (-len(header) % 8)
    fast, slow = _both(header.encode(), 8)
    assert fast is not None and isinstance(slow, ShardHeader)
    assert fast == (slow.tensors, slow.metadata) and fast[1] == {"format": "pt"}


@pytest.mark.parametrize(
    "doc",
    [
        b'{"a":1,"a":2}',
        b'{"weight_map":{"x":"a","x":"b"}}',
        b'{"a":{"b":1,"b":1}}',
        b'{"a":"x:y"}',
        b'{"a":1.5}',
        b'{"a":NaN}',
        b'{"a":' + b"1" * 309 + b"}",
        b"[" * 128 + b"]" * 128,
        b'{"a\\u0041":1}',
        '{"a":"\u00e9"}'.encode(),
    ],
)
def test_the_fast_json_path_defers_what_it_cannot_prove(doc: bytes) -> None:
    from normscope.sources.jsonload import _DEFER, _load_fast

    assert _load_fast(doc) is _DEFER


@settings(max_examples=300, deadline=None)
@given(case=headers())
def test_the_fast_json_path_agrees_with_the_general_one(case: tuple[bytes, bytes]) -> None:
    from normscope.sources import jsonload

    header, _ = case
    fast = jsonload._load_fast(header)
    if fast is jsonload._DEFER:
        return
    saved = jsonload._load_fast
    jsonload._load_fast = lambda data: jsonload._DEFER  # the general path alone
    try:
        assert jsonload.load_json(header) == fast  # and it does not refuse
    finally:
        jsonload._load_fast = saved


_SHARDS = ("a.safetensors", "b.safetensors")


@pytest.mark.parametrize(
    "doc",
    [
        b'{"weight_map":{"x":"a.safetensors"},"weight_map":{"y":"a.safetensors"}}',
        b'{"metadata":{},"metadata":{},"weight_map":{"x":"a.safetensors"}}',
        b'{"weight_map":{"x":"a.safetensors","x":"b.safetensors"}}',
        b'{"weight_map":{"x:y":"a.safetensors"}}',
        b'{"weight_map":{"x":"c.safetensors"}}',
        b'{"weight_map":{"x":"./a.safetensors"}}',
        b'{"weight_map":{"x":1}}',
        b'{"weight_map":["a.safetensors"]}',
        b'{"metadata":{"total_size":1.5},"weight_map":{"x":"a.safetensors"}}',
        b'{"metadata":{"k":{"z":1,"z":2}},"weight_map":{"x":"a.safetensors"}}',
        b'{"weight_map":{"x\\u0041":"a.safetensors"}}',
        '{"weight_map":{"\u00e9":"a.safetensors"}}'.encode(),
        b'{"metadata":{}}',
        b'{"weight_map":{"x":"a.safetensors"}',
    ],
)
def test_the_name_map_defers_what_it_cannot_prove(doc: bytes) -> None:
    from normscope.sources.jsonload import load_name_map

    assert load_name_map(doc, "weight_map", _SHARDS) is None


def _index_doc(pairs: list[tuple[str, str]], metadata: str, indent: bool) -> bytes:
    """An index written by hand (json.dumps would collapse repeated names), as HF lays it out
    (`indent=2`) or packed."""
    sep, pad = (",\n    ", "\n  ") if indent else (",", "")
    body = sep.join(f"{json.dumps(name)}: {json.dumps(shard)}" for name, shard in pairs)
    return f'{{{pad}"metadata": {metadata},{pad}"weight_map": {{{body}}}\n}}'.encode()


@settings(max_examples=300, deadline=None)
@given(
    pairs=st.lists(
        st.tuples(
            st.text(alphabet="ab.", min_size=1, max_size=4)
            | st.text(alphabet='ab.:"\\\u00e9', min_size=1, max_size=4),
            st.sampled_from((*_SHARDS * 4, "./a.safetensors", "c.safetensors")),
        ),
        max_size=8,
    ),
    metadata=st.sampled_from(('{"total_size": 8}', "{}", '{"a": {"b": [1, null]}}') * 3 + ("1.5",)),
    indent=st.booleans(),
)
def test_the_name_map_is_the_general_decode_of_the_index(
    pairs: list[tuple[str, str]], metadata: str, indent: bool
) -> None:
    from normscope.sources.jsonload import load_json, load_name_map

    doc = _index_doc(pairs, metadata, indent)
    fast = load_name_map(doc, "weight_map", _SHARDS)
    if fast is None:
        return
    assert fast == load_json(doc)["weight_map"]  # and the general path does not refuse it
    assert all(any(v is s for s in _SHARDS) for v in fast.values())  # one shared str per shard


def test_the_name_map_takes_a_real_index() -> None:
    from normscope.sources.jsonload import load_json, load_name_map

    doc = Path(__file__).parent.parent / "fixtures"
    for index in sorted(doc.rglob("*.safetensors.index.json")):
        data = index.read_bytes()
        weight_map = load_json(data)["weight_map"]
        shards = sorted(set(weight_map.values()))
        assert load_name_map(data, "weight_map", shards) == weight_map, index
