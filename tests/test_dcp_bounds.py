"""Issue 28, items 1 and 2: a DCP save crafted to hang normscope or to take gigabytes.

Each reproducer starts from a real `dcp.save` (torchtitan layout), edits torch's own reading of
its `.metadata` and pickles it back, as an attacker would. Every one must end in one clear
error (exit 2) before anything large is built or read.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dcp_fixtures import (
    Save,
    chunks_on_one_blob,
    process_group,
    replace_item,
    torch_metadata,
    write_megatron,
    write_torchtitan,
)
from typer.testing import CliRunner

from normscope.cli import app
from normscope.errors import AnalysisError, SourceError
from normscope.sources import open_checkpoint
from normscope.sources.dcp.bounds import MAX_DEPTH, check_graph, show
from normscope.sources.store import MAX_NORM_ELEMENTS

NORM = "norm.weight"


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Save]]:
    import torch.distributed as dist

    # test_dcp.py's session-wide group, if it is up; else one for this module.
    group = (
        contextlib.nullcontext()
        if dist.is_initialized()
        else process_group(tmp_path_factory.mktemp("pg"))
    )
    with group:
        yield {
            "titan": write_torchtitan(tmp_path_factory.mktemp("titan") / "step-10"),
            "megatron": write_megatron(tmp_path_factory.mktemp("mcore") / "iter_0000100"),
        }


@pytest.fixture
def titan(written: dict[str, Save]) -> Save:
    return written["titan"]


@pytest.fixture
def megatron(written: dict[str, Save]) -> Save:
    return written["megatron"]


def _copy(save: Save, tmp_path: Path) -> tuple[Path, Any]:
    folder = tmp_path / save.path.name
    shutil.copytree(save.path, folder)
    return folder, torch_metadata(folder)


def _doubling(levels: int) -> Any:
    """A list structure in which each level refers twice to the one below: `levels` list
    objects in the pickle (the memo shares them), a tree of 2**levels leaves."""
    value: Any = [0]
    for _ in range(levels):
        value = [value, value]
    return value


def _scan_fails(folder: Path, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        checkpoint = open_checkpoint(folder)
        checkpoint.read([checkpoint.tensors[NORM]])
    result = CliRunner().invoke(app, ["scan", str(folder)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.stderr
    assert len(result.stderr) < 2000


@pytest.mark.parametrize("levels", [20, 30])
@pytest.mark.parametrize("field", ["size", "dtype", "relative_path", "offset"])
def test_memo_doubling_in_any_field_is_refused_at_once(
    titan: Save, tmp_path: Path, field: str, levels: int
) -> None:
    """2**levels leaves in a few hundred bytes. Formatting it for a message (or converting it)
    never ends; 30 levels are also too deep, 20 are not."""
    folder, metadata = _copy(titan, tmp_path)
    item = metadata.state_dict_metadata[NORM]
    info = next(v for k, v in metadata.storage_data.items() if k.fqn == NORM)
    if field == "size":
        item.size = _doubling(levels)
    elif field == "dtype":
        item.properties.dtype = _doubling(levels)
    else:
        setattr(info, field, _doubling(levels))
    raw = pickle.dumps(metadata)
    assert len(raw) < 32_000  # the real metadata is ~17 kB; the doubling adds ~200 bytes
    (folder / ".metadata").write_bytes(raw)
    _scan_fails(folder, "unfolds to more than" if levels == 20 else "nested more than 32")


def test_small_doubling_is_formatted_within_a_budget(titan: Save, tmp_path: Path) -> None:
    """Under the tree limit the field check refuses it, and its message stays short."""
    folder, metadata = _copy(titan, tmp_path)
    metadata.state_dict_metadata[NORM].size = _doubling(8)
    (folder / ".metadata").write_bytes(pickle.dumps(metadata))
    with pytest.raises(SourceError, match="not a shape") as info:
        open_checkpoint(folder)
    assert len(str(info.value)) < 400


def _splice(metadata: Any, field_value: bytes) -> bytes:
    """The metadata pickle with the norm's `size` replaced by raw pickle opcodes."""
    marker = "@@NORMSCOPE-MARKER@@"
    metadata.state_dict_metadata[NORM].size = marker
    raw = pickle.dumps(metadata, protocol=4)
    encoded = b"\x8c" + bytes([len(marker)]) + marker.encode()
    assert raw.count(encoded) == 1
    return raw.replace(encoded, field_value)


@pytest.mark.parametrize("n", [5 * 10**4, 10**6])
def test_a_million_nested_lists_is_refused_without_recursion(
    titan: Save, tmp_path: Path, n: int
) -> None:
    """10^6: refused from its bytes before unpickling (56 MB of lists from 2 MB); 5 x 10^4 pass
    that check and is refused by the walk, which never recurses."""
    folder, metadata = _copy(titan, tmp_path)
    # EMPTY_LIST n times, then APPEND n-1 times: each list holds the next one.
    (folder / ".metadata").write_bytes(_splice(metadata, b"]" * n + b"a" * (n - 1)))
    _scan_fails(
        folder, "could unpickle into" if n == 10**6 else f"nested more than {MAX_DEPTH} levels"
    )


def test_a_pickle_of_empty_containers_is_refused_before_unpickling(
    titan: Save, tmp_path: Path
) -> None:
    """9.5 MB of EMPTY_DICT made 672 MB of dicts on the unpickler's stack."""
    folder, _ = _copy(titan, tmp_path)
    (folder / ".metadata").write_bytes(b"\x80\x04" + b"}" * 9_500_000 + b".")
    _scan_fails(folder, "could unpickle into 608000000 bytes of empty containers")


def test_a_cycle_is_refused(titan: Save, tmp_path: Path) -> None:
    folder, metadata = _copy(titan, tmp_path)
    loop: list[Any] = []
    loop.append(loop)
    metadata.state_dict_metadata[NORM].size = loop
    (folder / ".metadata").write_bytes(pickle.dumps(metadata))
    _scan_fails(folder, "holds itself")


@pytest.mark.parametrize(
    ("length", "message"),
    [
        (0, r"is bytes \d+\.\.\d+ of __0_0.distcp, which has"),
        (2**40, "the DCP metadata places data up to byte 1,099,511,"),  # a truncated file
        (2**64, "an integer of 65 bits"),
    ],
)
def test_chunk_lengths_outside_the_file_are_refused(
    titan: Save, tmp_path: Path, length: int, message: str
) -> None:
    folder, metadata = _copy(titan, tmp_path)
    for key, info in metadata.storage_data.items():
        if key.fqn == NORM:
            info.length = length
    (folder / ".metadata").write_bytes(pickle.dumps(metadata))
    _scan_fails(folder, message)


def test_chunks_of_one_blob_cannot_pass_the_norm_width_limit(titan: Save, tmp_path: Path) -> None:
    """64 chunks all pointing at one 2 MB blob of 2**20 elements: a 2**26-element norm. The
    width limit holds for DCP as for every store: refused before any chunk is read."""
    folder, metadata = _copy(titan, tmp_path)
    chunks_on_one_blob(folder, metadata, NORM)
    checkpoint = open_checkpoint(folder)
    before = checkpoint.counter.bytes_read
    with pytest.raises(AnalysisError, match=f"at most {MAX_NORM_ELEMENTS}"):
        checkpoint.read([checkpoint.tensors[NORM]])
    assert checkpoint.counter.bytes_read == before
    result = CliRunner().invoke(app, ["scan", str(folder), "--scope", "all"])
    assert result.exit_code == 2, result.output


def test_overlapping_chunks_are_refused(titan: Save, tmp_path: Path) -> None:
    """Two chunks over the same half (the other half in none): the volumes add up, the bytes
    would not be the tensor's."""
    folder, metadata = _copy(titan, tmp_path)
    item = metadata.state_dict_metadata[NORM]
    first, second = item.chunks
    keys = {k.offset: k for k in metadata.storage_data if k.fqn == NORM}
    info = metadata.storage_data[keys[first.offsets]]
    # Re-point the second chunk at the first's place and bytes.
    del metadata.storage_data[keys[second.offsets]]
    second.offsets = first.offsets
    item.chunks = [first, second]
    metadata.storage_data[type(keys[first.offsets])(NORM, first.offsets, 1)] = info
    (folder / ".metadata").write_bytes(pickle.dumps(metadata))
    with pytest.raises(SourceError, match="overlap at"):
        checkpoint = open_checkpoint(folder)
        checkpoint.read([checkpoint.tensors[NORM]])


def test_a_zip_bomb_in_the_common_state_is_not_inflated(megatron: Save, tmp_path: Path) -> None:
    """A 64 MiB+ pickle deflated to a few hundred KB, in Megatron's common state item."""
    folder, metadata = _copy(megatron, tmp_path)
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(b"\0" * (65 << 20), protocol=4))
    data = bomb.getvalue()
    assert len(data) < 1 << 20
    replace_item(folder, metadata, "common_state/", data)
    with pytest.raises(SourceError, match="inflates past"):
        open_checkpoint(folder)
    result = CliRunner().invoke(app, ["scan", str(folder)])
    assert result.exit_code == 2, result.output


def test_check_graph_counts_shared_parts_once_and_show_is_bounded() -> None:
    shared = (1, 2)
    check_graph({"a": shared, "b": shared}, 10, "x")  # a DAG of a few nodes: fine
    with pytest.raises(SourceError, match="unfolds"):
        check_graph(_doubling(20), 100, "x")
    assert len(show(_doubling(30))) < 200
    assert show("\x1b]0;title\x07") == repr("\x1b]0;title\x07")


def test_real_saves_stay_far_below_the_tree_limit(titan: Save, megatron: Save) -> None:
    """The measured ratio the module doc quotes: nodes of the unpickled tree per byte."""
    from normscope.sources.dcp import unpickle

    for save in (titan, megatron):
        raw = (save.dcp_dir / ".metadata").read_bytes()
        md = unpickle._Restricted(raw, unpickle._Allowlist()).load()
        check_graph(md, len(raw) // 2, str(save.dcp_dir))  # passes at half the real budget
