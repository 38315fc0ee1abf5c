"""Issue #12: no crash on any input, bounded memory.

The reproducers R1-R8 of the mutation fuzzer (benchmarks/fuzz.py), each through the CLI: exit 2,
one `Error:` line naming the input, nothing on stdout; or, for odd but valid names, a report.
Then the bounded JSON loader, the natural sort on odd names, and memory that grows with the norm
bytes, never with what a header declares or with ties.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import REPO_ROOT, llama_config, llama_tensors, write_checkpoint, write_raw_safetensors
from typer.testing import CliRunner, Result

from normscope.analysis import MAX_OUTLIERS, _outliers
from normscope.cli import app
from normscope.errors import SourceError, printable
from normscope.naming import natural_key
from normscope.sources import open_checkpoint
from normscope.sources.jsonload import MAX_DEPTH, MAX_DIGITS, JSONLimitError, load_json

runner = CliRunner()
DEEP = 100_000
HUGE = "9" * 4301  # one digit past Python's int-string conversion limit


def scan(path: Path, *args: str) -> Result:
    return runner.invoke(app, ["scan", str(path), *args])


def error_line(result: Result) -> str:
    """Exit 2, nothing on stdout, no traceback, exactly one `Error:` line (and maybe a Hint)."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines and lines[0].startswith("Error: "), result.stderr
    assert all(line.startswith("Hint: ") for line in lines[1:]), result.stderr
    return lines[0]


def one_tensor(root: Path, entry: dict[str, Any] | bytes, data: bytes = b"") -> Path:
    return write_raw_safetensors(root / "model.safetensors", entry, data)


# --- R1-R8 ----------------------------------------------------------------------------------------


def test_r1_header_nested_100000_deep(tmp_path: Path) -> None:
    path = one_tensor(tmp_path, b'{"x":' + b"[" * DEEP + b"]" * DEEP + b"}")
    assert error_line(scan(path)) == (
        f"Error: invalid safetensors header JSON: nested deeper than {MAX_DEPTH} levels ({path})"
    )


def test_r2_a_4301_digit_integer_in_a_shape(tmp_path: Path) -> None:
    header = b'{"w":{"dtype":"F32","shape":[' + HUGE.encode() + b'],"data_offsets":[0,4]}}'
    path = one_tensor(tmp_path, header, b"\0" * 4)
    assert error_line(scan(path)) == (
        f"Error: invalid safetensors header JSON: a number has more than {MAX_DIGITS} digits "
        f"({path})"
    )


def test_r3_a_shape_of_10_to_the_320_elements(tmp_path: Path) -> None:
    entry = {"w": {"dtype": "F32", "shape": [10**160, 10**160], "data_offsets": [0, 4]}}
    path = one_tensor(tmp_path, entry, b"\0" * 4)
    assert error_line(scan(path)) == f"Error: invalid header entry for tensor 'w' ({path})"
    # Within u64 each, but not their product: refused as safetensors refuses it, in exact ints.
    entry = {"w": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 4]}}
    path = one_tensor(tmp_path, entry, b"\0" * 4)
    assert error_line(scan(path)) == (
        f"Error: tensor 'w' has shape [{2**40}, {2**40}] and dtype F32: more than 2^64 bits "
        f"({path})"
    )


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[" * DEEP + "]" * DEEP, f"nested deeper than {MAX_DEPTH} levels"),
        ('{"hidden_size": ' + HUGE + "}", f"a number has more than {MAX_DIGITS} digits"),
    ],
    ids=["r4-nested", "r6-huge-number"],
)
def test_r4_r6_config_json_beyond_the_loader_limits(tmp_path: Path, text: str, says: str) -> None:
    directory = write_checkpoint(tmp_path / "m", llama_tensors(), llama_config())
    (directory / "config.json").write_text(text)
    result = scan(directory)
    assert error_line(result) == (
        f"Error: config.json is {says}: not a model config ({directory / 'config.json'})"
    )
    assert "Hint: fix or remove config.json" in result.stderr


def test_r5_index_nested_100000_deep(tmp_path: Path) -> None:
    directory = write_checkpoint(tmp_path / "m", llama_tensors(), llama_config(), shards=2)
    index = directory / "model.safetensors.index.json"
    index.write_text('{"weight_map":' + "[" * DEEP + "]" * DEEP + "}")
    assert error_line(scan(directory)) == (
        f"Error: invalid shard index: nested deeper than {MAX_DEPTH} levels ({index})"
    )


def test_r7_a_shard_named_with_a_superscript_digit(tmp_path: Path) -> None:
    tensors = llama_tensors()
    names = list(tensors)
    write_raw = tmp_path / "m"
    write_checkpoint(write_raw, {n: tensors[n] for n in names[:3]}, llama_config())
    (write_raw / "model.safetensors").rename(write_raw / "²1.safetensors")
    write_checkpoint(tmp_path / "rest", {n: tensors[n] for n in names[3:]})
    (tmp_path / "rest" / "model.safetensors").rename(write_raw / "1.safetensors")
    result = runner.invoke(app, ["scan", str(write_raw), "-f", "json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["io"]["files"] == 2
    assert sorted(["²1.safetensors", "1.safetensors", "10.safetensors"], key=natural_key) == [
        "1.safetensors",
        "10.safetensors",
        "²1.safetensors",
    ]


def test_r8_an_index_naming_a_shard_with_4301_digits(tmp_path: Path) -> None:
    directory = write_checkpoint(tmp_path / "m", llama_tensors(), llama_config(), shards=2)
    index = directory / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    odd = f"m{HUGE}.safetensors"
    first = next(iter(data["weight_map"]))
    data["weight_map"][first] = odd
    index.write_text(json.dumps(data))
    assert error_line(scan(directory)) == (
        f"Error: the index names shard '{odd}' but it is missing ({index})"
    )


def test_natural_key_never_converts_digit_runs() -> None:
    names = [f"m{HUGE}.safetensors", "m9.safetensors", "m10.safetensors", "m010.safetensors"]
    assert sorted(names, key=natural_key) == [
        "m9.safetensors",
        "m010.safetensors",
        "m10.safetensors",
        f"m{HUGE}.safetensors",
    ]
    # Unicode digits are text, never numbers; no name makes the key raise.
    for name in ["²1", "٣", "𝟗9", "\udcff", "", "0" * 5000, "a\x00b"]:
        natural_key(name)
    assert sorted(["x²", "x2", "x1"], key=natural_key) == ["x1", "x2", "x²"]


# --- the loader -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "nested deeper"),
        (b"[" * DEEP, "nested deeper"),  # unbalanced: never handed to the parser
        (b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1), "nested deeper"),
        (b"[" + b"1" * (MAX_DIGITS + 1) + b"]", "more than 308 digits"),
        (b'{"a":1,"a":2}', "duplicate key 'a'"),
    ],
)
def test_loader_limits(data: bytes, says: str) -> None:
    with pytest.raises(JSONLimitError, match=says):
        load_json(data)


def test_loader_accepts_up_to_the_limits_and_counts_only_structure() -> None:
    deepest = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert load_json(deepest) is not None
    # Brackets and digits inside strings (escaped quotes too) are text, not structure.
    text = json.dumps({"a": "[" * 1000, "b": "9" * 1000, 'c"[': ['"]' * 500]}).encode()
    assert load_json(text)["b"] == "9" * 1000
    assert load_json(b'{"a":1,"a":2}', duplicates=True) == {"a": 2}
    assert load_json(b'\xef\xbb\xbf{"a": NaN}')["a"] != 0  # lenient: BOM and NaN, as json.loads


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":NaN}',
        b'{"a":1e400}',
        b'{"\\ud800":1}',
        b'{"\xed\xa0\x80":1}',  # a surrogate encoded in UTF-8: not UTF-8
        '{"a":1}'.encode("utf-16"),
    ],
)
def test_strict_loader_applies_serde_rules(data: bytes) -> None:
    with pytest.raises(ValueError):
        load_json(data, strict=True)
    assert load_json(b'{"\\ud83d\\ude00":1}', strict=True) == {"\U0001f600": 1}


def test_messages_are_one_printable_line() -> None:
    exc = SourceError("tensor 'a\nb\x1b[31m\udcff' is odd", hint="x\ry")
    assert exc.message == "tensor 'a\\nb\\x1b[31m\\udcff' is odd"
    assert exc.hint == "x\\ry"
    assert printable("é ü 中") == "é ü 中"


def test_a_tensor_name_with_a_newline_gives_one_error_line(tmp_path: Path) -> None:
    entry = {"a\nb\u2028c": {"dtype": "F32", "shape": [1], "data_offsets": [0, 8]}}
    path = one_tensor(tmp_path, entry, b"\0" * 8)
    line = error_line(scan(path))
    assert "'a\\nb\\u2028c'" in line


# --- bounded memory and time ----------------------------------------------------------------------


def test_outliers_are_linear_with_ties() -> None:
    gain = np.zeros(1 << 22)
    assert _outliers(gain) == ()
    gain[[7, 3, 100, 5, 9, 11]] = [2.0, 2.0, -3.0, 2.0, 2.0, 2.0]
    assert [o.index for o in _outliers(gain)] == [100, 3, 5, 7, 9]
    gain[:] = np.nan
    assert [o.index for o in _outliers(gain)] == [0, 1, 2, 3, 4]
    # Small vectors keep the exact order of a stable sort.
    assert [o.index for o in _outliers(np.array([1.0, 3.0, -1.0, 1.0]))] == [1, 2]
    assert len(_outliers(np.arange(10.0))) == MAX_OUTLIERS


def test_outliers_match_a_full_sort() -> None:
    """Against the definition, by a sort of every channel: random finite vectors, many ties."""
    rng = np.random.default_rng(29)
    for trial in range(3000):
        size = int(rng.integers(1, 40))
        pool = [rng.normal(1.0, 0.1, size), rng.integers(0, 3, size) * 0.5, np.ones(size)]
        gain = pool[trial % 3]
        deviation = np.abs(gain - np.median(gain))
        ranked = sorted(range(size), key=lambda i: (-deviation[i], i))
        expected = [i for i in ranked if deviation[i] > 0][:MAX_OUTLIERS]
        assert [o.index for o in _outliers(gain)] == expected
        assert [o.value for o in _outliers(gain)] == [float(gain[i]) for i in expected]


def _sparse_norm(directory: Path, elements: int) -> Path:
    """A BF16 final norm of `elements` zeros: a hole in a sparse file, no disk used."""
    directory.mkdir(parents=True, exist_ok=True)
    header = json.dumps(
        {
            "model.norm.weight": {
                "dtype": "BF16",
                "shape": [elements],
                "data_offsets": [0, 2 * elements],
            }
        }
    ).encode()
    path = directory / "model.safetensors"
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + 2 * elements)
    return path


# NOTE: VmHWM, not ru_maxrss: a child forked from pytest inherits pytest's ru_maxrss.
_MEASURE = """
import re, sys, time
from pathlib import Path
from typer.testing import CliRunner
from normscope.cli import app
t = time.perf_counter()
r = CliRunner().invoke(app, ["scan", sys.argv[1], "-f", "json"])
hwm = re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text())
print(r.exit_code, time.perf_counter() - t, int(hwm.group(1)) // 1024)
print(r.stderr)
"""


def _measure(path: Path) -> tuple[int, float, int, str]:
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        check=True,
    ).stdout
    first, _, stderr = out.partition("\n")
    code, seconds, mb = first.split()
    return int(code), float(seconds), int(mb), stderr.strip()


def test_a_2_to_the_27_element_norm_is_refused_before_reading(tmp_path: Path) -> None:
    path = _sparse_norm(tmp_path / "huge", 1 << 27)
    code, seconds, mb, stderr = _measure(path)
    assert code == 2 and mb < 400, (code, seconds, mb)  # seconds: reported, not asserted
    assert stderr == (
        f"Error: tensor 'model.norm.weight' has {1 << 27} elements (shape [{1 << 27}]): wider "
        f"than any model's norm (at most {1 << 24}); not read ({path})"
    )


def test_a_2_to_the_24_element_norm_is_measured_in_bounded_memory(tmp_path: Path) -> None:
    # The widest norm read: 32 MB of BF16 zeros (all ties). Before: 3.2 GB and 9.6 s.
    code, seconds, mb, _ = _measure(_sparse_norm(tmp_path / "wide", 1 << 24))
    assert code == 0 and mb < 1200, (code, seconds, mb)  # seconds: reported, not asserted


def test_the_loader_reads_a_wide_header_like_json_loads() -> None:
    # 200k tensors' worth of header: the same result as json.loads (its cost is measured in
    # benchmarks/RESULTS.md, issue 12: +31 ms on DeepSeek-V3's 163 headers, not timed here).
    entry = (
        b'"model.layers.%d.mlp.weight":{"dtype":"BF16","shape":[4096,4096],"data_offsets":[0,0]}'
    )
    raw = b"{" + b",".join(entry % i for i in range(200_000)) + b"}"
    assert load_json(raw, strict=True) == json.loads(raw)


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"", "not a safetensors file: header does not start with '{'"),
        (
            b"{",
            "invalid safetensors header JSON: Expecting property name enclosed in double quotes",
        ),
        (b"[]", "not a safetensors file: header does not start with '{'"),
        (b'{"a":1}', "invalid header entry for tensor 'a'"),
        (
            b'{"__metadata__":[]}',
            "invalid safetensors header: __metadata__ is not an object of strings",
        ),
        (b"\xff" * 8, "not a safetensors file: header does not start with '{'"),
        (b"{" * 200, f"invalid safetensors header JSON: nested deeper than {MAX_DEPTH} levels"),
    ],
)
def test_open_checkpoint_on_odd_bytes_names_the_fault(
    tmp_path: Path, raw: bytes, says: str
) -> None:
    path = one_tensor(tmp_path, raw)
    with pytest.raises(SourceError) as raised:
        open_checkpoint(path)
    assert raised.value.message.startswith(says) and raised.value.message.endswith(f"({path})")
    # The reference reader refuses the same file.
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    with pytest.raises(SafetensorError):
        load_file(path)


def test_an_empty_header_is_an_empty_checkpoint_and_no_norm_to_scan(tmp_path: Path) -> None:
    # `{}` is a valid safetensors file holding no tensor (the reference reader agrees): opening
    # it gives 0 tensors, and a scan refuses it naming why (exit 2), never an empty report.
    from safetensors.numpy import load_file

    path = one_tensor(tmp_path, b"{}")
    assert load_file(path) == {}
    checkpoint = open_checkpoint(path)
    assert checkpoint.tensors == {} and checkpoint.warnings == []
    assert error_line(scan(path)).startswith("Error: no norm tensors found among 0 tensors")
