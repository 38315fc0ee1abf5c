"""The local header cache (sources/headercache.py): a re-scan reuses the parsed layout, and never
serves a stale one — touch, truncate, replace, `cp -p` over a shard, a new shard — or a corrupt
entry; it can be turned off."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import llama_config, llama_tensors, write_checkpoint
from typer.testing import CliRunner

import normscope
from normscope.cli import app
from normscope.errors import SourceError
from normscope.settings import build_settings
from normscope.sources import headercache, open_checkpoint

SETTLE = 0.05


@pytest.fixture(autouse=True)
def _quick_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files written by a test count as settled after SETTLE seconds (not 2)."""
    monkeypatch.setattr(headercache, "RACY_SECONDS", SETTLE)


def _settle() -> None:
    time.sleep(3 * SETTLE)


def _ckpt(root: Path, name: str = "ckpt", shards: int = 2, rename: str | None = None) -> Path:
    tensors = llama_tensors()
    if rename is not None:  # same length: the header keeps its size
        tensors = {k.replace("model.norm.", rename): v for k, v in tensors.items()}
    path = write_checkpoint(root / name, tensors, llama_config(), shards=shards)
    _settle()
    return path


def _hit(path: Path) -> bool:
    """True when opening `path` was served by the cache (no header or index byte read)."""
    ckpt = open_checkpoint(path)
    return ckpt.counter.bytes_read == 0 and ckpt.counter.metadata_bytes == 0


def _names(path: Path) -> set[str]:
    return set(open_checkpoint(path).tensors)


def test_a_rescan_of_an_unchanged_checkpoint_is_served_by_the_cache(tmp_path: Path) -> None:
    path = _ckpt(tmp_path)
    first = open_checkpoint(path)
    assert first.counter.bytes_read > 0
    second = open_checkpoint(path)
    assert second.counter.bytes_read == 0 and second.counter.metadata_bytes == 0
    assert second.tensors == first.tensors and second.config == first.config
    assert list(second.tensors) == list(first.tensors)  # the same order, too
    assert second.shards == first.shards  # paths, sizes, header bytes, refs, metadata
    assert [s.metadata for s in second.shards] == [s.metadata for s in first.shards]
    assert second.read(list(second.tensors.values())) == first.read(list(first.tensors.values()))


def test_a_single_file_checkpoint_is_cached_too(tmp_path: Path) -> None:
    path = _ckpt(tmp_path, shards=1) / "model.safetensors"
    assert not _hit(path)
    assert _hit(path)


def _shard(path: Path) -> Path:
    return sorted(path.glob("*.safetensors"))[0]


def test_touch_invalidates(tmp_path: Path) -> None:
    path = _ckpt(tmp_path)
    open_checkpoint(path)
    _shard(path).touch()
    _settle()
    assert not _hit(path)
    assert _hit(path)


def test_truncate_invalidates_and_the_truncation_is_reported(tmp_path: Path) -> None:
    path = _ckpt(tmp_path)
    open_checkpoint(path)
    shard = _shard(path)
    os.truncate(shard, shard.stat().st_size - 1)
    _settle()
    with pytest.raises(SourceError, match=r"truncated|data section"):
        open_checkpoint(path)


def test_replacing_a_shard_invalidates(tmp_path: Path) -> None:
    path = _ckpt(tmp_path)
    other = _ckpt(tmp_path, "other", rename="model.nrom.")
    open_checkpoint(path)
    for shard in other.glob("*.safetensors"):
        tmp = path / f".{shard.name}.tmp"
        shutil.copyfile(shard, tmp)
        os.replace(tmp, path / shard.name)  # a new inode, as a fresh download writes
    shutil.copyfile(other / "model.safetensors.index.json", path / "model.safetensors.index.json")
    _settle()
    assert "model.nrom.weight" in _names(path)


def test_cp_p_over_a_shard_keeping_size_and_mtime_invalidates(tmp_path: Path) -> None:
    """`cp -p` keeps size and mtime and writes into the same inode: only ctime changes."""
    path = _ckpt(tmp_path)
    other = _ckpt(tmp_path, "other", rename="model.nrom.")
    names = _names(path)
    assert "model.norm.weight" in names
    changed = [
        s.name
        for s in other.glob("*.safetensors")
        if s.read_bytes() != (path / s.name).read_bytes()
    ]
    assert changed
    for name in [*changed, "model.safetensors.index.json"]:
        before = (path / name).stat()
        src = other / name
        assert src.stat().st_size == before.st_size
        os.utime(src, ns=(before.st_atime_ns, before.st_mtime_ns))
        shutil.copy2(src, path / name)  # cp -p: content, then the source's times
        after = (path / name).stat()
        assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
            before.st_size,
            before.st_mtime_ns,
            before.st_ino,
        )
    _settle()
    assert "model.nrom.weight" in _names(path)


def test_a_new_shard_file_invalidates(tmp_path: Path) -> None:
    path = _ckpt(tmp_path)
    open_checkpoint(path)
    shutil.copyfile(_shard(path), path / "extra.safetensors")
    _settle()
    ckpt = open_checkpoint(path)
    assert ckpt.counter.bytes_read > 0
    assert any("not named in the index" in w for w in ckpt.warnings)


def test_a_just_written_checkpoint_is_not_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(headercache, "RACY_SECONDS", 3600.0)
    path = _ckpt(tmp_path)
    assert not _hit(path)
    assert not _hit(path)


@pytest.mark.parametrize("damage", ["garbage", "truncate", "empty"])
def test_a_corrupt_entry_is_a_miss(tmp_path: Path, damage: str) -> None:
    path = _ckpt(tmp_path)
    first = open_checkpoint(path)
    entries = list((headercache.cache_root() / "layouts").rglob("*"))
    entry = next(p for p in entries if p.is_file())
    data = entry.read_bytes()
    entry.write_bytes(
        {"garbage": b"\x00not msgpack", "truncate": data[: len(data) // 2], "empty": b""}[damage]
    )
    again = open_checkpoint(path)
    assert again.counter.bytes_read > 0 and again.tensors == first.tensors
    assert _hit(path)  # rewritten


def test_the_cache_can_be_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _ckpt(tmp_path)
    open_checkpoint(path, cache=False)
    again = open_checkpoint(path, cache=False)
    assert again.counter.metadata_bytes > 0  # parsed again, not served by a cache
    assert not (headercache.cache_root() / "layouts").exists()
    # NORMSCOPE_NO_CACHE is read once, by the options builder, into the scan options.
    monkeypatch.setenv("NORMSCOPE_NO_CACHE", "1")
    assert build_settings().scan.cache is False
    normscope.scan(path)
    assert not (headercache.cache_root() / "layouts").exists()
    monkeypatch.setenv("NORMSCOPE_NO_CACHE", "0")
    assert build_settings().scan.cache is True


def test_no_cache_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NORMSCOPE_NO_CACHE", raising=False)
    path = _ckpt(tmp_path)
    result = CliRunner().invoke(app, ["scan", str(path), "--format", "json", "--no-cache"])
    assert result.exit_code == 0, result.output
    assert not (headercache.cache_root() / "layouts").exists()
    # The switch lasts for the command only: nothing leaks into the process afterwards.
    assert "NORMSCOPE_NO_CACHE" not in os.environ
    result = CliRunner().invoke(app, ["scan", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert (headercache.cache_root() / "layouts").exists()


def test_a_cached_scan_reports_the_same_norms(tmp_path: Path) -> None:
    import normscope

    path = _ckpt(tmp_path)
    cold, warm = normscope.scan(path), normscope.scan(path)
    assert [n.l2 for n in cold.norms] == [n.l2 for n in warm.norms]
    assert np.isfinite([n.ratio for n in warm.norms]).all()


def test_normscope_cache_lists_and_clears_the_layouts(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from normscope.cli import app

    path = _ckpt(tmp_path)
    assert not _hit(path)
    assert _hit(path)
    runner = CliRunner()
    listing = runner.invoke(app, ["cache"])
    assert listing.exit_code == 0 and "(local checkpoint layouts)" in listing.stdout
    cleared = runner.invoke(app, ["cache", "--clear"])
    assert cleared.exit_code == 0, cleared.stderr
    assert not _hit(path)  # parsed again: the layout was removed


def test_the_layouts_stay_within_their_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A series over many big checkpoints must not fill the disk: past the budget the least
    # recently written layouts go, never the one just written.
    first, second = _ckpt(tmp_path, "a"), _ckpt(tmp_path, "b")
    assert not _hit(first)
    folder = headercache.cache_root() / "layouts"
    [entry] = list(folder.glob("*/*"))
    monkeypatch.setattr(headercache, "MAX_BYTES", entry.stat().st_size + 1)
    time.sleep(0.01)
    assert not _hit(second)  # written, and the first one pruned to stay within the budget
    remaining = list(folder.glob("*/*"))
    assert len(remaining) == 1 and remaining != [entry]
    assert _hit(second) and not _hit(first)


def test_an_edited_entry_with_the_stats_unchanged_is_dropped_and_said(tmp_path: Path) -> None:
    """Issue 28: an entry edited in place (another `model_type`, a norm pointed at another
    tensor's bytes), the checkpoint's stats untouched, was trusted: silently wrong reports. Its
    digest no longer matches: dropped, said once, the checkpoint parsed again."""
    import msgspec

    from normscope.sources.store import CACHE_MAGIC, CORRUPT_CACHE

    path = _ckpt(tmp_path)
    first = open_checkpoint(path)
    entry = next(p for p in (headercache.cache_root() / "layouts").rglob("*") if p.is_file())
    raw = entry.read_bytes()
    head = len(CACHE_MAGIC) + 32
    assert raw.startswith(CACHE_MAGIC)
    doc = msgspec.msgpack.decode(raw[head:])
    doc["config"]["model_type"] = "gemma"
    tensors = doc["shards"][0]["tensors"]
    tensors[0][3], tensors[1][3] = tensors[1][3], tensors[0][3]  # swap two tensors' starts
    tensors[0][4], tensors[1][4] = tensors[1][4], tensors[0][4]
    entry.write_bytes(raw[:head] + msgspec.msgpack.encode(doc))  # the old digest kept
    again = open_checkpoint(path)
    assert again.config == first.config and again.config["model_type"] == "llama"
    assert again.tensors == first.tensors
    assert again.counter.bytes_read > 0  # parsed again
    assert sum(w.startswith(CORRUPT_CACHE) for w in again.warnings) == 1
    assert _hit(path)  # rewritten intact
