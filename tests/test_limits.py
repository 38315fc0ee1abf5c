"""Issue 28, item 2: small inputs that asked for gigabytes. Every read has a documented limit
(`sources.store.MAX_SMALL_FILE`, `MAX_DCP_METADATA`, `MAX_NORM_ELEMENTS`, safetensors'
100 MB header), refused before the bytes are read; benchmarks/fuzz.py measures the memory."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import llama_config, llama_tensors, write_checkpoint
from safetensors import safe_open
from typer.testing import CliRunner

from normscope.cli import app
from normscope.errors import SourceError
from normscope.sources import local, open_checkpoint
from normscope.sources.local import read_small_file
from normscope.sources.safetensors import _parse_fast, parse_header
from normscope.sources.store import MAX_SMALL_FILE, ReadCounter

runner = CliRunner()


def _sparse(path: Path, size: int, head: bytes = b"{") -> None:
    """A file of `size` bytes that costs nothing on disk."""
    with path.open("wb") as handle:
        handle.write(head)
        handle.truncate(size)


@pytest.mark.parametrize("name", ["config.json", "model.safetensors.index.json"])
def test_a_huge_sparse_config_or_index_is_refused_unread(tmp_path: Path, name: str) -> None:
    """A 6 GiB sparse file once took the process to 23.6 GB: now refused from its size."""
    folder = write_checkpoint(tmp_path / "m", llama_tensors(), llama_config(), shards=2)
    _sparse(folder / name, 6 << 30)
    result = runner.invoke(app, ["scan", str(folder)])
    assert result.exit_code == 2, result.output
    assert f"{name} is {6 << 30} bytes, more than normscope reads" in result.stderr
    assert f"(at most {MAX_SMALL_FILE})" in result.stderr


def _headers(folder: Path) -> int:
    """The header lengths the shards' prefixes declare (an independent reading)."""
    return sum(struct.unpack("<Q", p.read_bytes()[:8])[0] for p in folder.glob("*.safetensors"))


def test_an_index_over_the_small_file_limit_is_bounded_by_its_headers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 29: DeepSeek-V3 at 16x its layers (1.5M tensors) has a 148 MB index, over
    MAX_SMALL_FILE, and was refused. An index over that limit is read when it is at most
    INDEX_PER_HEADER_BYTE times the shards' headers. Scaled down: the limit is set below this
    index's size; the report is the one an unbounded read gives, with the 8-byte prefix of each
    shard read (and counted) once more for the bound."""
    folder = write_checkpoint(tmp_path / "m", llama_tensors(), llama_config(), shards=2)
    index = folder / "model.safetensors.index.json"
    argv = ["scan", str(folder), "--format", "json", "--no-cache"]
    expected = json.loads(runner.invoke(app, argv).stdout)
    size, headers = index.stat().st_size, _headers(folder)
    assert size < local.INDEX_PER_HEADER_BYTE * headers
    monkeypatch.setattr(local, "MAX_SMALL_FILE", size - 1)
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert got["io"].pop("metadata_bytes") == expected["io"].pop("metadata_bytes") + 2 * 8
    got["io"].pop("seconds"), expected["io"].pop("seconds")  # a wall time
    assert got == expected

    # An index more than 8x its headers (here: padded with whitespace, still valid JSON) is
    # refused unread, with the bound it broke.
    index.write_bytes(index.read_bytes() + b" " * (local.INDEX_PER_HEADER_BYTE * headers))
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    bound = local.INDEX_PER_HEADER_BYTE * headers
    assert (
        f"model.safetensors.index.json is {index.stat().st_size} bytes, more than normscope "
        f"reads of a metadata file (at most {bound})"
    ) in result.stderr
    assert "Traceback" not in result.output


def test_read_small_file_never_reads_past_its_limit(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 101)
    counter = ReadCounter()
    with pytest.raises(SourceError, match="is 101 bytes, more than"):
        read_small_file(path, counter, limit=100)
    assert counter.metadata_bytes == 0
    assert read_small_file(path, counter, limit=101) == b"x" * 101
    assert read_small_file(tmp_path / "none", counter) is None


def _header_with_metadata(metadata: bytes) -> bytes:
    return (
        b'{"__metadata__":{'
        + metadata
        + b'"format":"pt"},"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}'
    )


@pytest.mark.parametrize(
    "filler",
    [b" " * (4 << 20), b"".join(b'"k%d":"v",' % i for i in range(1 << 18))],
    ids=["whitespace", "many-keys"],
)
def test_a_big_metadata_skips_the_regex_and_matches_safetensors(
    tmp_path: Path, filler: bytes
) -> None:
    """4 MB of whitespace (or of keys) inside `__metadata__`: the fast path's regex used to keep
    a backtracking frame per character (32 MB: 4.5 GB, 95 MB: MemoryError). It now looks at the
    first 64 KiB only and leaves the rest to the general path, which gives safetensors' answer."""
    raw = _header_with_metadata(filler)
    assert _parse_fast(raw, "x", 16) is None
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + np.ones(4, np.float32).tobytes())
    header = parse_header(raw, "x", path.stat().st_size)
    with safe_open(path, "np") as f:
        assert header.metadata == f.metadata()
        assert list(header.tensors) == list(f.keys())
    checkpoint = open_checkpoint(path)
    assert np.array_equal(
        np.frombuffer(checkpoint.read([checkpoint.tensors["w"]])["w"], np.float32), np.ones(4)
    )


def test_a_small_metadata_still_takes_the_fast_path() -> None:
    raw = _header_with_metadata(b"")
    fast = _parse_fast(raw, "x", 16)
    assert fast is not None and fast[1] == {"format": "pt"}
    assert json.loads(raw)["__metadata__"] == fast[1]


# --- .bin/.pt state dicts: the pickle memo and nesting (torch.load weights_only) ------------------


def _torch_file(tmp_path: Path, state: object) -> Path:
    import torch

    path = tmp_path / "model" / "pytorch_model.bin"
    path.parent.mkdir()
    torch.save(state, path)
    return path


@pytest.mark.parametrize("shape", ["doubling", "itself", "deep"])
def test_a_state_dict_that_is_no_tree_is_refused_at_once(tmp_path: Path, shape: str) -> None:
    """30 dicts each holding the one below twice are 2^30 paths (a walk never ends); a dict that
    holds itself under "model" looped; 100 levels recursed. Each is one error line now."""
    import torch

    leaf: dict[str, object] = {"model.norm.weight": torch.ones(4)}
    state: dict[str, object] = leaf
    if shape == "doubling":
        for _ in range(30):
            state = {"a": state, "b": state}
    elif shape == "itself":
        state = {"model": leaf}
        state["model"] = state
    else:
        for _ in range(100):
            state = {"x": state}
    path = _torch_file(tmp_path, state)
    assert path.stat().st_size < 100_000
    result = runner.invoke(app, ["scan", str(path)])
    assert result.exit_code == 2, result.output
    why = "is nested too deep" if shape == "deep" else "holds the same dict twice"
    assert f"the PyTorch file's state dict {why}" in result.stderr


def test_a_torch_file_keeps_order_and_tied_tensors(tmp_path: Path) -> None:
    """The iterative walk flattens as the recursive one did: order, dots, a tensor met twice."""
    import torch

    from normscope.sources.torchfile import _flatten

    norm = torch.ones(3)
    state = {"model": {"b": {"x": norm}, "a": torch.zeros(2), 7: torch.ones(1)}, "tied": norm}
    out = _flatten(state, Path("x"))
    assert list(out) == ["model.b.x", "model.a", "model.7", "tied"]
    assert out["tied"] is out["model.b.x"]


def test_a_deep_config_beside_a_torch_file_is_a_warning(tmp_path: Path) -> None:
    import torch

    path = _torch_file(tmp_path, {"model.norm.weight": torch.ones(4)})
    (path.parent / "config.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    checkpoint = open_checkpoint(path)
    assert checkpoint.config is None
    assert any("config.json is not JSON" in w for w in checkpoint.warnings)


def _rezip(path: Path, replace: dict[str, bytes], deflate: tuple[str, ...] = ()) -> None:
    """Rewrite a torch.save zip with some members' bytes replaced, some deflated."""
    import zipfile

    with zipfile.ZipFile(path) as original:
        members = [(i.filename, original.read(i)) for i in original.infolist()]
    with zipfile.ZipFile(path, "w") as out:
        for name, data in members:
            leaf = name.split("/", 1)[-1]
            kind = zipfile.ZIP_DEFLATED if leaf in deflate else zipfile.ZIP_STORED
            out.writestr(zipfile.ZipInfo(name), replace.get(leaf, data), compress_type=kind)


def test_a_zip_bomb_in_a_torch_file_is_not_inflated(tmp_path: Path) -> None:
    """torch's zip reader inflates a deflated data.pkl whole: 65 MiB of pickle in ~70 kB."""
    import pickle

    import torch

    path = _torch_file(tmp_path, {"model.norm.weight": torch.ones(4)})
    bomb = pickle.dumps((b"\0" * (65 << 20), {}), protocol=2)
    _rezip(path, {"data.pkl": bomb}, deflate=("data.pkl",))
    assert path.stat().st_size < 1 << 20
    result = runner.invoke(app, ["scan", str(path)])
    assert result.exit_code == 2, result.output
    assert "member pytorch_model/data.pkl would inflate to 68157493 bytes" in result.stderr


def test_a_torch_pickle_of_empty_containers_is_refused(tmp_path: Path) -> None:
    import torch

    path = _torch_file(tmp_path, {"model.norm.weight": torch.ones(4)})
    _rezip(path, {"data.pkl": b"\x80\x02" + b"}" * 2_000_000 + b"."})
    result = runner.invoke(app, ["scan", str(path)])
    assert result.exit_code == 2, result.output
    assert "invalid PyTorch state dict: its 2000003 bytes could unpickle" in result.stderr


def test_a_deflated_but_small_torch_file_still_loads(tmp_path: Path) -> None:
    import torch

    path = _torch_file(tmp_path, {"model.norm.weight": torch.full((4,), 2.0)})
    _rezip(path, {}, deflate=("data.pkl",))
    checkpoint = open_checkpoint(path)
    ref = checkpoint.tensors["model.norm.weight"]
    assert np.array_equal(np.frombuffer(checkpoint.read([ref])[ref.name], np.float32), [2.0] * 4)
