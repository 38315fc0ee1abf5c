"""A scan's light layout (`TensorMap`) against the full one, on every bundled checkpoint.

A scan keeps the refs of the gain-shaped and scalar tensors only, the names and a dtype summary
(`layout.open_layout(light=leaves)`); `fold` and the other readers keep every ref. The two must
give the same report, the same measurements and the same answers to every question a rule asks
of the names, and judge a bad layout (an index that disagrees, a tensor stored twice) with the
same message. The full layout is the independent reference here: it is the code path every
release before the light one used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normscope.arch import present_leaves
from normscope.errors import SourceError
from normscope.render.common import render_json
from normscope.scanner import ScanOptions, analyze_checkpoint
from normscope.schema import Leaves, TensorMap, light_kept
from normscope.sources import Checkpoint, layout, open_checkpoint
from normscope.sources.layout import open_layout
from normscope.sources.local import LocalStore

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SAFETENSORS = sorted(
    p
    for p in FIXTURES.iterdir()
    if p.is_dir() and any(p.glob("*.safetensors")) and not any(p.glob("*.gguf"))
)


def _both(path: Path) -> tuple[Checkpoint, Checkpoint]:
    return (
        open_checkpoint(str(path), cache=False, light=True, leaves=present_leaves()),
        open_checkpoint(str(path), cache=False),
    )


def _opened_or_refused(path: Path, light: bool) -> Checkpoint | str:
    try:
        return open_checkpoint(str(path), cache=False, light=light, leaves=present_leaves())
    except SourceError as exc:
        return f"SourceError: {exc}"


def test_there_are_fixtures_to_compare() -> None:
    assert len(SAFETENSORS) >= 20


@pytest.mark.parametrize("slimmed", [False, True], ids=["every-name", "slimmed"])
@pytest.mark.parametrize("path", SAFETENSORS, ids=lambda p: p.name)
def test_light_and_full_layouts_agree(
    path: Path, slimmed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both light forms: every name kept (a checkpoint of up to `KEEP_NAMES` tensors), and
    slimmed to the names the rules ask about (past it: here forced with KEEP_NAMES = 0)."""
    if slimmed:
        monkeypatch.setattr(layout, "KEEP_NAMES", 0)
    light, full = _opened_or_refused(path, True), _opened_or_refused(path, False)
    if isinstance(full, str):  # a broken fixture: the same refusal
        assert light == full
        return
    assert isinstance(light, Checkpoint)
    assert isinstance(light.tensors, TensorMap)
    assert not isinstance(full.tensors, TensorMap)
    options = ScanOptions(cache=False)
    a, b = analyze_checkpoint(light, options), analyze_checkpoint(full, options)
    ra, rb = json.loads(render_json(a.report)), json.loads(render_json(b.report))
    ra["io"].pop("seconds"), rb["io"].pop("seconds")
    assert ra == rb
    assert not light.tensors.loaded  # no bundled fixture needs a tensor the scan did not keep
    assert (a.other_dtypes, a.norm_dtypes, a.unread, a.missing_final, a.infos) == (
        b.other_dtypes,
        b.norm_dtypes,
        b.unread,
        b.missing_final,
        b.infos,
    )
    lt, ft = light.tensors, full.tensors
    kept = {n: r for n, r in ft.items() if light_kept(n, r.shape)}
    assert lt.kept == kept and {n: lt[n] for n in kept} == kept and len(lt) == len(ft)
    assert light.dtype_counts() == full.dtype_counts()
    # Every question a rule's `if_present` asks is answered without loading the full layout.
    leaves = present_leaves()
    for name in ft:
        if leaves.covers(name):
            assert name in lt
    for parent in {n.rpartition(".")[0].rpartition(".")[0] for n in ft}:
        for leaf in leaves.leaves:
            probe = f"{parent}.{leaf}" if parent else leaf
            assert (probe in lt) == (probe in ft)
    assert not lt.loaded and lt.complete is not slimmed
    assert list(lt) == list(ft) and lt.loaded is slimmed  # slimmed: any other question loads it
    assert all(name in lt for name in ft) and "no such tensor" not in lt


def test_a_tensor_outside_the_gain_shaped_loads_the_full_layout_once_and_counts_it() -> None:
    light, full = _both(FIXTURES / "deepseek-v3-mtp")
    assert isinstance(light.tensors, TensorMap) and light.tensors.complete
    big = next(n for n, r in full.tensors.items() if len(r.shape) == 2)
    assert big in light.tensors and big not in light.tensors.kept
    assert not light.tensors.loaded
    before = light.counter.bytes_read
    assert light.tensors[big] == full.tensors[big]
    assert light.tensors.loaded
    headers = sum(s.header_bytes for s in full.shards)
    assert light.counter.bytes_read == before + headers
    assert light.tensors.get("no such tensor") is None
    assert light.counter.bytes_read == before + headers  # loaded once


def test_a_slimmed_layout_answers_the_names_its_leaves_cover_and_loads_for_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(layout, "KEEP_NAMES", 0)
    leaves = Leaves(["mixer.in_proj.weight", "w_out.weight"])
    path = str(FIXTURES / "deepseek-v3-mtp")
    light = open_checkpoint(path, cache=False, light=True, leaves=leaves)
    full = open_checkpoint(path, cache=False)
    tensors = light.tensors
    assert isinstance(tensors, TensorMap) and not tensors.complete
    assert len(tensors) == len(full.tensors)
    assert "model.layers.0.mixer.in_proj.weight" not in tensors
    assert "w_out.weight" not in tensors
    with pytest.raises(KeyError):
        tensors["model.layers.0.w_out.weight"]
    assert not tensors.loaded
    before = light.counter.bytes_read
    assert "model.layers.0.mlp.gate_proj.weight" in tensors and tensors.loaded
    assert light.counter.bytes_read == before + sum(s.header_bytes for s in full.shards)
    assert list(tensors) == list(full.tensors)


def test_a_layout_past_keep_names_is_slimmed_from_the_shard_that_crosses_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = FIXTURES / "deepseek-v3-mtp"
    full = open_checkpoint(str(path), cache=False)
    first = len(full.shards[0].tensors)
    monkeypatch.setattr(layout, "KEEP_NAMES", first)  # the first shard alone stays within it
    light = open_checkpoint(str(path), cache=False, light=True, leaves=present_leaves())
    assert isinstance(light.tensors, TensorMap) and not light.tensors.complete
    assert [s.count for s in light.shards] == [len(s.tensors) for s in full.shards]
    monkeypatch.setattr(layout, "KEEP_NAMES", len(full.tensors))
    light = open_checkpoint(str(path), cache=False, light=True, leaves=present_leaves())
    assert isinstance(light.tensors, TensorMap) and light.tensors.complete
    assert [s.count for s in light.shards] == [None] * len(full.shards)


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def _message(store: LocalStore, light: bool) -> str:
    with pytest.raises(SourceError) as info:
        open_layout(store, "x", light=Leaves() if light else None)
    return str(info.value)


def test_an_index_naming_the_wrong_shard_is_refused_with_the_full_message(tmp_path: Path) -> None:
    d = _copy(FIXTURES / "deepseek-v3-mtp", tmp_path / "ck")
    index = d / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    shards = sorted(set(data["weight_map"].values()))
    assert len(shards) == 2
    name = next(n for n, s in data["weight_map"].items() if s == shards[0])
    data["weight_map"][name] = shards[1]
    index.write_text(json.dumps(data))
    light, full = _message(LocalStore(d), True), _message(LocalStore(d), False)
    assert light == full and f"tensor '{name}' is listed in the index" in light


def test_unlisted_tensors_warn_as_in_the_full_layout(tmp_path: Path) -> None:
    d = _copy(FIXTURES / "deepseek-v3-mtp", tmp_path / "ck")
    index = d / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    dropped = sorted(data["weight_map"])[:2]
    for name in dropped:
        del data["weight_map"][name]
    index.write_text(json.dumps(data))
    light = open_layout(LocalStore(d), "x", light=Leaves())
    full = open_layout(LocalStore(d), "x")
    assert light.warnings == full.warnings and any(
        "not listed in the index" in w for w in light.warnings
    )
    assert list(light.tensors) == list(full.tensors)


def test_a_tensor_stored_in_two_shards_is_refused_without_an_index(tmp_path: Path) -> None:
    d = _copy(FIXTURES / "deepseek-v3-mtp", tmp_path / "ck")
    (d / "model.safetensors.index.json").unlink()
    shards = sorted(d.glob("*.safetensors"))
    (d / "copy.safetensors").write_bytes(shards[0].read_bytes())
    light, full = _message(LocalStore(d), True), _message(LocalStore(d), False)
    assert light == full and "is stored in two shards" in light


@pytest.mark.parametrize("slimmed", [False, True], ids=["every-name", "slimmed"])
def test_the_header_cache_keeps_a_light_and_a_full_entry(
    tmp_path: Path, slimmed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The light entry is saved in the form the cold open kept: every name up to `KEEP_NAMES`
    tensors (a warm question about any name is answered without a read), slimmed past it (here
    forced with KEEP_NAMES = 0: a name beyond the leaves loads the full layout, counted)."""
    import time

    from normscope.sources import headercache

    if slimmed:
        monkeypatch.setattr(layout, "KEEP_NAMES", 0)
    monkeypatch.setenv("NORMSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(headercache, "RACY_SECONDS", 0.05)
    d = _copy(FIXTURES / "deepseek-v3-mtp", tmp_path / "ck")
    time.sleep(0.15)
    cold_light = open_checkpoint(str(d), light=True)
    cold_full = open_checkpoint(str(d))
    warm_light = open_checkpoint(str(d), light=True)
    warm_full = open_checkpoint(str(d))
    assert len(list((tmp_path / "cache" / "layouts").glob("*/*"))) == 2
    assert isinstance(warm_light.tensors, TensorMap)
    assert not isinstance(warm_full.tensors, TensorMap)
    assert dict(warm_full.tensors) == dict(cold_full.tensors)
    assert isinstance(cold_light.tensors, TensorMap)
    assert warm_light.tensors.kept == cold_light.tensors.kept
    assert len(warm_light.tensors) == len(cold_full.tensors)
    assert warm_light.dtype_counts() == cold_full.dtype_counts()
    assert warm_light.counter.bytes_read == 0 < cold_light.counter.bytes_read
    assert list(warm_light.tensors) == list(cold_full.tensors)  # slimmed: loaded and counted
    headers = sum(s.header_bytes for s in cold_full.shards)
    assert warm_light.counter.bytes_read == (headers if slimmed else 0)
    assert warm_light.tensors.loaded is slimmed


@pytest.mark.parametrize("slimmed", [False, True], ids=["every-name", "slimmed"])
def test_every_zoo_architecture_reads_the_same_light_and_full(
    tmp_path: Path, slimmed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The zoo's 300-odd architectures (tests/zoo.py, sparse files): the same report from the
    light layout as from the full one. Where the structural inference of a norm no rule names
    asks about a tensor the light layout did not keep, the full layout is loaded once and the
    headers it read again are counted: bytes_read is then exactly one header pass more. With
    every name kept, that never happens."""
    if slimmed:  # as a checkpoint past KEEP_NAMES tensors is read: the structural inference
        # (140-odd of the zoo) then loads the full layout
        monkeypatch.setattr(layout, "KEEP_NAMES", 0)
    import zoo

    from normscope.errors import NormscopeError

    compared = reread = 0
    for k, arch in enumerate(zoo.load_zoo()["architectures"]):
        if "tensors" not in arch:
            continue
        path = zoo.write_sparse(arch, tmp_path / f"a{k}")
        out: list[tuple[Any, Any, Any]] = []
        for light in (True, False):
            try:
                checkpoint = open_checkpoint(
                    str(path), cache=False, light=light, leaves=present_leaves()
                )
                measured = analyze_checkpoint(checkpoint, ScanOptions(cache=False))
            except NormscopeError as exc:
                out.append((str(exc), None, None))
                continue
            report = json.loads(render_json(measured.report))
            io = report.pop("io")
            io.pop("seconds")
            out.append(((report, measured.other_dtypes, measured.infos), io, checkpoint))
        (a, io_a, light_ck), (b, io_b, _) = out
        assert a == b, arch.get("name", k)
        compared += 1
        if isinstance(light_ck, Checkpoint) and isinstance(light_ck.tensors, TensorMap):
            assert io_a is not None and io_b is not None
            if light_ck.tensors.loaded:
                reread += 1
                headers = sum(s.header_bytes for s in light_ck.shards)
                assert io_a["bytes_read"] == io_b["bytes_read"] + headers
            else:
                assert io_a == io_b
    # Every name kept: no question of the inference needs the full layout (it counts a
    # module's matrices from the names, `TensorMap.matrix`); slimmed, its names are loaded.
    assert compared >= 300 and (0 < reread < compared // 2 if slimmed else reread == 0)


@pytest.mark.parametrize("slimmed", [False, True], ids=["every-name", "slimmed"])
def test_a_light_layout_tells_a_matrix_from_a_scalar_without_loading(
    tmp_path: Path, slimmed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`is_matrix` on a light layout: a scalar and a gain are kept (`light_kept`), so a name it
    knows of without a ref is a tensor of two or more dimensions; slimmed, a name its leaves do
    not cover loads the full layout (counted), and the answer is the same."""
    import numpy as np
    from safetensors.numpy import save_file

    from normscope.schema import is_matrix

    if slimmed:
        monkeypatch.setattr(layout, "KEEP_NAMES", 0)
    tensors = {
        "m.scale": np.array(2.0, dtype=np.float32),  # 0-D
        "m.proj.weight": np.zeros((4, 3), dtype=np.float32),
        "m.conv.weight": np.zeros((2, 2, 2), dtype=np.float32),
        "m.norm.weight": np.ones(4, dtype=np.float32),
        "m.q_norm.weight": np.ones((2, 4), dtype=np.float32),  # 2-D, norm-named: gain-shaped
    }
    save_file(tensors, str(tmp_path / "model.safetensors"))
    light, full = _both(tmp_path)
    assert isinstance(light.tensors, TensorMap)
    assert set(light.tensors.kept) == {"m.scale", "m.norm.weight", "m.q_norm.weight"}
    expected = {name: array.ndim >= 2 for name, array in tensors.items()} | {"m.absent": False}
    known = {"m.scale", "m.norm.weight", "m.q_norm.weight"} if slimmed else set(expected)
    for name in sorted(known):
        assert is_matrix(light.tensors, name) is expected[name], name
        assert is_matrix(full.tensors, name) is expected[name], name
    assert not light.tensors.loaded
    answers = {name: is_matrix(light.tensors, name) for name in expected}
    assert answers == expected and light.tensors.loaded is slimmed


_NAMES = [f"model.layers.{i}.{leaf}" for i in range(4) for leaf in ("a.weight", "b.weight")]


@settings(max_examples=400, deadline=None)
@given(
    placed=st.lists(st.integers(0, 2), min_size=len(_NAMES), max_size=len(_NAMES)),
    edits=st.lists(
        st.tuples(st.sampled_from(["move", "drop", "add", "twice"]), st.integers(0, 7)),
        max_size=3,
    ),
    shuffled=st.randoms(use_true_random=False),
)
def test_the_index_agreement_is_exactly_the_set_statement(
    placed: list[int], edits: list[tuple[str, int]], shuffled: Any
) -> None:
    """`_Agreement` with an index against the statement written with sets: over the shards the
    index names, the index maps exactly the headers' names, each to the shard whose header
    holds it, and no name is in two of them. Headers and index in any order (`shuffled`); an
    index entry moved to another shard, dropped, or naming a tensor no header has; a name
    stored in two shards. (A shard the index does not name is not read: a warning, elsewhere.)"""
    from normscope.sources.layout import _Agreement

    shards = [f"s{k}.safetensors" for k in range(3)]
    headers: dict[str, list[str]] = {s: [] for s in shards}
    for name, k in zip(_NAMES, placed, strict=True):
        headers[shards[k]].append(name)
    index = {name: shards[k] for name, k in zip(_NAMES, placed, strict=True)}
    for edit, i in edits:
        name = _NAMES[i]
        if edit == "move":
            index[name] = shards[(shards.index(index.get(name, shards[0])) + 1) % 3]
        elif edit == "drop":
            index.pop(name, None)
        elif edit == "add":
            index[f"extra.{i}.weight"] = shards[i % 3]
        else:  # the name stored in a second shard too
            other = shards[(placed[i] + 1) % 3]
            if name not in headers[other]:
                headers[other].append(name)
    items = list(index.items())
    shuffled.shuffle(items)
    index = dict(items)
    for names in headers.values():
        shuffled.shuffle(names)
    read = sorted(set(index.values()))  # the shards the index names, as `_shard_names`
    # One pair per index entry; a name in two headers gives two pairs: never equal then.
    held = {(name, s) for s in read for name in headers[s]}
    agreement = _Agreement(index)
    for s in read:
        agreement.add(s, headers[s])
    assert agreement.sound() is (set(index.items()) == held)
