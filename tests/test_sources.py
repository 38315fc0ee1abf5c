"""sources.py: finding shards, validating headers like safetensors does, reading only what is asked.

Every bad input of issue #2 raises SourceError/ArchError naming the path, shard or tensor; every
corrupt file is also refused by the safetensors library itself, and every file it writes is
accepted, with the same tensors, shapes and bytes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    ARCH_ERRORS,
    CORRUPT_FILES,
    SOURCE_ERRORS,
    llama_config,
    llama_tensors,
    make_bad_input,
    save_shard,
    shard_name,
    write_checkpoint,
    write_raw_safetensors,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open

import normscope
from normscope.arch import classify
from normscope.errors import ArchError, NormscopeError, SourceError
from normscope.sources import MAX_HEADER_SIZE, Checkpoint, open_checkpoint, parse_header

# --- bad inputs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SOURCE_ERRORS)
def test_bad_input_raises_source_error_naming_where(kind: str, tmp_path: Path) -> None:
    path, fragment = make_bad_input(kind, tmp_path / kind)
    with pytest.raises(SourceError) as info:
        open_checkpoint(path)
    message = info.value.message
    assert fragment in message
    # Where: the checkpoint path, or the shard / index inside it.
    assert str(tmp_path / kind) in message, message
    assert "\n" not in message


@pytest.mark.parametrize("kind", SOURCE_ERRORS + ARCH_ERRORS)
def test_bad_input_through_scan(kind: str, tmp_path: Path) -> None:
    path, fragment = make_bad_input(kind, tmp_path / kind)
    expected = ArchError if kind in ARCH_ERRORS else SourceError
    with pytest.raises(expected) as info:
        normscope.scan(path)
    assert fragment in info.value.message


@pytest.mark.parametrize("kind", CORRUPT_FILES)
def test_corrupt_files_are_refused_by_safetensors_too(kind: str, tmp_path: Path) -> None:
    path, _ = make_bad_input(kind, tmp_path)
    with pytest.raises(SourceError):
        open_checkpoint(path)
    with pytest.raises(Exception), safe_open(str(path), framework="pt") as f:  # noqa: B017
        for name in f.keys():  # noqa: SIM118 - safe_open has no __iter__
            f.get_tensor(name)


def test_no_norm_is_an_arch_error(tmp_path: Path) -> None:
    path, _ = make_bad_input("no_norm", tmp_path)
    checkpoint = open_checkpoint(path)
    with pytest.raises(ArchError) as info:
        classify(checkpoint.tensors, checkpoint.config)
    assert info.value.hint


def test_empty_directory_hint_points_at_series(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(SourceError) as info:
        open_checkpoint(tmp_path / "plain")
    assert info.value.hint is None
    runs = tmp_path / "runs"
    (runs / "checkpoint-100").mkdir(parents=True)
    (runs / "checkpoint-200").mkdir()
    with pytest.raises(SourceError) as info:
        open_checkpoint(runs)
    assert str(runs) in info.value.message
    assert info.value.hint is not None and "normscope series" in info.value.hint


def test_directory_named_like_a_shard_is_not_a_shard(tmp_path: Path) -> None:
    (tmp_path / "weird.safetensors").mkdir()
    with pytest.raises(SourceError, match=r"no \.safetensors files"):
        open_checkpoint(tmp_path)
    save_shard(tmp_path / "model.safetensors", {"model.norm.weight": np.ones(4, np.float32)})
    assert [Path(s.path).name for s in open_checkpoint(tmp_path).shards] == ["model.safetensors"]


def test_missing_shard_has_a_hint(tmp_path: Path) -> None:
    path, _ = make_bad_input("index_missing_shard", tmp_path)
    with pytest.raises(SourceError) as info:
        open_checkpoint(path)
    assert "model.safetensors.index.json" in info.value.message
    assert info.value.hint


def test_duplicate_tensor_names_both_shards(tmp_path: Path) -> None:
    path, _ = make_bad_input("duplicate_tensor", tmp_path)
    with pytest.raises(SourceError) as info:
        open_checkpoint(path)
    assert "model-a.safetensors" in info.value.message
    assert "model-b.safetensors" in info.value.message


def test_header_length_limit_is_safetensors(tmp_path: Path) -> None:
    assert MAX_HEADER_SIZE == 100_000_000
    # Just above the limit: refused as absurd even before comparing with the file size.
    path = write_raw_safetensors(tmp_path / "x.safetensors", {}, b"", MAX_HEADER_SIZE + 1)
    with pytest.raises(SourceError, match="absurdly large"):
        open_checkpoint(path)


def test_header_must_start_with_brace_even_after_whitespace(tmp_path: Path) -> None:
    # The format says the header MUST begin with '{'; the safetensors library tolerates leading
    # whitespace, normscope follows the format (a deliberate, documented divergence).
    path = write_raw_safetensors(tmp_path / "x.safetensors", b" {}")
    with pytest.raises(SourceError, match="does not start with"):
        open_checkpoint(path)


def test_unknown_dtype_is_skipped_with_a_warning_never_a_number(tmp_path: Path) -> None:
    # safetensors refuses dtypes it does not know; normscope keeps reading the other tensors (a
    # newer format's dtype should not hide every other norm) and names the one it skips.
    header = {
        "model.norm.weight": {"dtype": "F99", "shape": [4], "data_offsets": [0, 16]},
        "model.layers.0.input_layernorm.weight": {
            "dtype": "F32",
            "shape": [4],
            "data_offsets": [16, 32],
        },
    }
    data = np.ones(8, np.float32).tobytes()
    path = write_raw_safetensors(tmp_path / "model.safetensors", header, data)
    (tmp_path / "config.json").write_text(json.dumps(llama_config(hidden=4)))
    report = normscope.scan(tmp_path)
    assert [n.name for n in report.norms] == ["model.layers.0.input_layernorm.weight"]
    assert any("model.norm.weight" in w and "F99" in w for w in report.warnings)
    assert path.exists()


def test_truncated_header(tmp_path: Path) -> None:
    path = save_shard(tmp_path / "model.safetensors", llama_tensors())
    n = int.from_bytes(path.read_bytes()[:8], "little")
    path.write_bytes(path.read_bytes()[: 8 + n // 2])
    with pytest.raises(SourceError, match="larger than the file") as info:
        open_checkpoint(path)
    assert str(path) in info.value.message


# --- config.json ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    ['{"model_type": "llama", ', "[1, 2, 3]", "\xff\xfe not json", ""],
    ids=["truncated", "not-an-object", "garbage", "empty"],
)
def test_malformed_config_warns_and_scan_works(config: str, tmp_path: Path) -> None:
    write_checkpoint(tmp_path, llama_tensors(hidden=8), config)
    checkpoint = open_checkpoint(tmp_path)
    assert checkpoint.config is None
    assert any("config.json" in w and str(tmp_path) in w for w in checkpoint.warnings)
    report = normscope.scan(tmp_path)
    assert report.model.hidden_size == 8  # inferred from the final norm
    assert report.model.model_type is None
    assert any("config.json" in w for w in report.warnings)
    assert {n.name for n in report.norms} >= {"model.norm.weight"}


def test_config_nested_text_config_is_read(tmp_path: Path) -> None:
    config = {"model_type": "llama", "text_config": {"hidden_size": 8, "num_hidden_layers": 2}}
    write_checkpoint(tmp_path, llama_tensors(), config)
    report = normscope.scan(tmp_path)
    assert (report.model.hidden_size, report.model.num_layers) == (8, 2)


# --- layouts that work ----------------------------------------------------------------------------


def test_single_file(tmp_path: Path) -> None:
    tensors = llama_tensors()
    path = save_shard(tmp_path / "weights.safetensors", tensors)
    checkpoint = open_checkpoint(path)
    assert checkpoint.source == str(path)
    assert checkpoint.config is None
    assert set(checkpoint.tensors) == set(tensors)
    assert [s.path for s in checkpoint.shards] == [str(path)]
    assert checkpoint.bytes_total == path.stat().st_size
    assert checkpoint.warnings == []


def test_single_file_picks_up_config_beside_it(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, llama_tensors(), llama_config())
    checkpoint = open_checkpoint(tmp_path / "model.safetensors")
    assert checkpoint.config == llama_config()


def test_directory_with_index(tmp_path: Path) -> None:
    tensors = llama_tensors(layers=3)
    write_checkpoint(tmp_path, tensors, llama_config(layers=3), shards=3)
    checkpoint = open_checkpoint(tmp_path)
    assert [Path(s.path).name for s in checkpoint.shards] == [shard_name(k, 3) for k in (1, 2, 3)]
    assert set(checkpoint.tensors) == set(tensors)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    for name, ref in checkpoint.tensors.items():
        assert Path(ref.shard).name == index["weight_map"][name]
    assert checkpoint.warnings == []
    assert checkpoint.bytes_total == sum(
        (tmp_path / shard_name(k, 3)).stat().st_size for k in (1, 2, 3)
    )
    assert checkpoint.counter.metadata_bytes == (
        (tmp_path / "model.safetensors.index.json").stat().st_size
        + (tmp_path / "config.json").stat().st_size
    )


def test_directory_without_index_natural_order(tmp_path: Path) -> None:
    names = ["model-10.safetensors", "model-9.safetensors", "model-2.safetensors"]
    for i, name in enumerate(names):
        save_shard(tmp_path / name, {f"t{i}.weight": np.ones(2, np.float32)})
    checkpoint = open_checkpoint(tmp_path)
    assert [Path(s.path).name for s in checkpoint.shards] == [
        "model-2.safetensors",
        "model-9.safetensors",
        "model-10.safetensors",
    ]


def test_extra_shard_not_in_index_is_warned_and_ignored(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, llama_tensors(), llama_config(), shards=2)
    save_shard(tmp_path / "stray.safetensors", {"stray.norm.weight": np.ones(8, np.float32)})
    checkpoint = open_checkpoint(tmp_path)
    assert "stray.norm.weight" not in checkpoint.tensors
    assert len(checkpoint.shards) == 2
    assert any(
        "stray.safetensors" in w and "not named in the index" in w for w in checkpoint.warnings
    )


def test_tensor_in_shard_but_not_in_index_is_warned(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, llama_tensors(), llama_config(), shards=2)
    index_path = tmp_path / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    del index["weight_map"]["lm_head.weight"]
    index_path.write_text(json.dumps(index))
    checkpoint = open_checkpoint(tmp_path)
    assert "lm_head.weight" in checkpoint.tensors
    assert any("lm_head.weight" in w for w in checkpoint.warnings)


def test_index_with_another_prefix_is_found(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, llama_tensors(), llama_config(), shards=2)
    (tmp_path / "model.safetensors.index.json").rename(
        tmp_path / "diffusion_pytorch_model.safetensors.index.json"
    )
    assert len(open_checkpoint(tmp_path).shards) == 2


# --- reading only what is asked -------------------------------------------------------------------


def test_header_bytes_are_counted(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, llama_tensors(), llama_config(), shards=2)
    checkpoint = open_checkpoint(tmp_path)
    assert checkpoint.counter.bytes_read == sum(s.header_bytes for s in checkpoint.shards)
    for shard in checkpoint.shards:
        n = int.from_bytes(Path(shard.path).read_bytes()[:8], "little")
        assert shard.header_bytes == 8 + n


def test_read_reads_exactly_the_requested_ranges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tensors = llama_tensors(layers=3)
    write_checkpoint(tmp_path, tensors, llama_config(layers=3), shards=2)
    checkpoint = open_checkpoint(tmp_path)
    before = checkpoint.counter.bytes_read
    wanted = [
        checkpoint.tensors[n]
        for n in ("model.norm.weight", "model.layers.0.input_layernorm.weight")
    ]
    calls: list[tuple[int, int]] = []
    real_pread = os.pread

    def spy(fd: int, n: int, offset: int) -> bytes:
        calls.append((offset, n))
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", spy)
    data = checkpoint.read(wanted)
    assert sorted(calls) == sorted((r.start, r.nbytes) for r in wanted)
    assert checkpoint.counter.bytes_read - before == sum(r.nbytes for r in wanted)
    for ref in wanted:
        assert data[ref.name] == np.asarray(tensors[ref.name]).tobytes()


def test_read_nothing(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, llama_tensors(), llama_config())
    checkpoint = open_checkpoint(tmp_path)
    before = checkpoint.counter.bytes_read
    assert checkpoint.read([]) == {}
    assert checkpoint.counter.bytes_read == before


def test_read_of_a_shard_that_shrank(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, llama_tensors(), llama_config())
    checkpoint = open_checkpoint(tmp_path)
    shard = tmp_path / "model.safetensors"
    ref = checkpoint.tensors["lm_head.weight"]
    shard.write_bytes(shard.read_bytes()[: ref.start + 4])
    with pytest.raises(SourceError, match=r"short read of tensor 'lm_head\.weight'"):
        checkpoint.read([ref])


def test_scan_reads_headers_and_norms_only(tmp_path: Path) -> None:
    tensors = llama_tensors(layers=4, hidden=64, vocab=512)
    write_checkpoint(tmp_path, tensors, llama_config(layers=4, hidden=64), shards=2)
    report = normscope.scan(tmp_path)
    checkpoint = open_checkpoint(tmp_path)
    norm_bytes = sum(checkpoint.tensors[n.name].nbytes for n in report.norms)
    header_bytes = sum(s.header_bytes for s in checkpoint.shards)
    assert report.io.bytes_read == header_bytes + norm_bytes
    assert report.io.bytes_total == checkpoint.bytes_total
    assert report.io.bytes_read < report.io.bytes_total / 10
    assert report.io.files == 2


# --- agreement with the safetensors library -------------------------------------------------------

TORCH_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _raw_bytes(t: torch.Tensor) -> bytes:
    flat = t.contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


tensor_specs = st.dictionaries(
    st.text(alphabet="abcdefghij._0123456789", min_size=1, max_size=12),
    st.tuples(
        st.sampled_from(sorted(TORCH_DTYPES)),
        st.lists(st.integers(0, 5), min_size=0, max_size=3),
    ),
    min_size=1,
    max_size=6,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    specs=tensor_specs,
    metadata=st.none() | st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
)
def test_accepts_what_safetensors_writes(
    specs: dict[str, tuple[str, list[int]]], metadata: dict[str, str] | None, tmp_path: Path
) -> None:
    generator = torch.Generator().manual_seed(0)
    tensors = {}
    for name, (dtype, shape) in specs.items():
        values = torch.randint(0, 255, tuple(shape), generator=generator, dtype=torch.uint8)
        tensors[name] = values.to(TORCH_DTYPES[dtype]) if dtype != "BOOL" else values > 127
    path = save_shard(tmp_path / "generated.safetensors", tensors, metadata)

    checkpoint = open_checkpoint(path)
    data = checkpoint.read(list(checkpoint.tensors.values()))
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == set(checkpoint.tensors)
        assert (f.metadata() or {}) == checkpoint.shards[0].metadata
        for name in f.keys():  # noqa: SIM118 - safe_open has no __iter__
            expected = f.get_tensor(name)
            ref = checkpoint.tensors[name]
            assert TORCH_DTYPES[ref.dtype] == expected.dtype
            assert ref.shape == tuple(expected.shape)
            assert data[name] == _raw_bytes(expected)


@pytest.mark.parametrize(
    "header",
    [
        {"__metadata__": None, "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8], "extra": True}},
        {
            "a": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        },
        {
            "a": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]},
            "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
        },
        b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}        ',
    ],
    ids=["null-metadata", "extra-key", "empty-tensor", "scalar", "space-padded"],
)
def test_hand_made_headers_safetensors_accepts(header: dict | bytes, tmp_path: Path) -> None:
    path = write_raw_safetensors(
        tmp_path / "x.safetensors", header, np.ones(2, np.float32).tobytes()
    )
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
    assert set(open_checkpoint(path).tensors) == keys


def test_parse_header_is_pure() -> None:
    raw = json.dumps({"a": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]}}).encode()
    header = parse_header(raw, "shard-x", 8 + len(raw) + 8)
    ref = header.tensors["a"]
    assert (ref.shard, ref.dtype, ref.shape) == ("shard-x", "BF16", (2, 2))
    assert (ref.start, ref.end, ref.nbytes, ref.numel) == (8 + len(raw), 16 + len(raw), 8, 4)
    assert header.header_bytes == 8 + len(raw)
    with pytest.raises(SourceError, match=r"\(shard-x\)"):
        parse_header(raw, "shard-x", 8 + len(raw) + 9)


def test_checkpoint_is_what_open_returns(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, llama_tensors(), llama_config())
    assert isinstance(open_checkpoint(tmp_path), Checkpoint)
    assert issubclass(SourceError, NormscopeError) and issubclass(ArchError, NormscopeError)


def test_bf16_and_fp8_norms_decode_through_scan(tmp_path: Path) -> None:
    final = torch.tensor([0.5, 1.5, 1.0, 1.0], dtype=torch.bfloat16)
    tensors = llama_tensors(hidden=4, dtype=torch.bfloat16)
    tensors["model.norm.weight"] = final
    tensors["model.layers.0.input_layernorm.weight"] = torch.full((4,), 0.25).to(
        torch.float8_e4m3fn
    )
    write_checkpoint(tmp_path, tensors, llama_config(hidden=4))
    report = normscope.scan(tmp_path)
    by_name = {n.name: n for n in report.norms}
    assert by_name["model.norm.weight"].mean == 1.0
    assert by_name["model.norm.weight"].min == 0.5
    assert by_name["model.layers.0.input_layernorm.weight"].ratio == 0.25


def test_index_naming_one_shard_two_ways_is_one_shard(tmp_path: Path) -> None:
    from conftest import llama_config, llama_tensors, write_checkpoint

    ckpt = write_checkpoint(tmp_path / "c", llama_tensors(), llama_config(), shards=2)
    index = ckpt / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    first = next(iter(data["weight_map"]))
    data["weight_map"][first] = "./" + data["weight_map"][first]
    index.write_text(json.dumps(data))
    checkpoint = open_checkpoint(ckpt)
    assert len(checkpoint.shards) == 2
    assert checkpoint.warnings == []


@pytest.mark.parametrize(
    ("variable", "below"),
    [
        ("HF_HUB_CACHE", ""),
        ("HUGGINGFACE_HUB_CACHE", ""),
        ("HF_HOME", "hub"),
        ("XDG_CACHE_HOME", "huggingface/hub"),
    ],
)
def test_a_local_folder_that_is_also_a_cached_hub_repo_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, below: str
) -> None:
    """`org/name` is read as the local folder; when the HF cache holds that repo too, say so.
    The HF cache is found as huggingface_hub finds it, whichever variable places it."""
    write_checkpoint(tmp_path / "org" / "name", llama_tensors(), llama_config())
    monkeypatch.chdir(tmp_path)
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, str(tmp_path / "hf"))
    assert not any("Hub repo" in w for w in open_checkpoint("org/name").warnings)
    (tmp_path / "hf" / below / "models--org--name").mkdir(parents=True)
    warnings = open_checkpoint("org/name").warnings
    assert (
        "'org/name' is a local folder and a Hub repo in the HF cache: read the local folder "
        "(for the Hub write hf://org/name)"
    ) in warnings


def test_a_local_scan_imports_only_what_it_uses(tmp_path: Path) -> None:
    """Start-up is paid on every scan: no Hub, DCP, object-store, torch, pandas or numpy.ma
    module for a local safetensors checkpoint (a relative `dir/name` included)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    code = (
        "import sys\n"
        "from normscope.cli import main\n"
        "sys.argv = ['normscope', 'scan', 'fixtures/deepseek-v3-mtp', '--format', 'json', '-q',"
        f" '-o', {str(tmp_path / 'out.json')!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = ('torch', 'pandas', 'numpy.ma', 'huggingface_hub', 'obstore', 'matplotlib',"
        " 'normscope.sources.hub', 'normscope.sources.dcp', 'normscope.sources.objstore')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy\n"
        "             or m.startswith(tuple(h + '.' for h in heavy))))\n"
    )
    env = os.environ | {"HF_HUB_CACHE": str(tmp_path / "hf"), "NORMSCOPE_CACHE": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True
    )
    assert json.loads((tmp_path / "out.json").read_text())["norms"]
    assert done.stdout.strip() == "[]"
