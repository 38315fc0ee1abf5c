"""DCP sources: Megatron torch_dist, torchtitan and OLMo-core saves written by torch itself.

Every value normscope reads is compared with `dcp.load` of the same key; the bytes read are
bounded by a figure computed from torch's own reading of the metadata; `.metadata` is read only
through the allowlist, and a malicious one is refused before it can run.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from dcp_fixtures import (
    Save,
    process_group,
    torch_load,
    torch_metadata,
    write_megatron,
    write_olmo_core,
    write_torchtitan,
)
from typer.testing import CliRunner

import normscope
from normscope.cli import app
from normscope.compare import diff
from normscope.discovery import discover, why_not_checkpoint
from normscope.errors import SourceError
from normscope.scanner import measure
from normscope.schema import Executor, Module, Role
from normscope.series import SeriesOptions, measure_series
from normscope.sources import open_checkpoint
from normscope.sources.dcp import DcpCheckpoint, yaml_flag
from normscope.sources.dcp.store import is_optimizer_state, stacked_name
from normscope.sources.dcp.unpickle import METADATA_GLOBALS, read_common_args


@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One world_size=1 gloo group for the session: `dcp.save` and `dcp.load` without one warn
    that they assume a single process (an error under the suite's `filterwarnings = error`)."""
    with process_group(tmp_path_factory.mktemp("pg")):
        yield


@pytest.fixture(scope="session")
def saves(pg: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Save]]:
    """Every layout, written once per session."""
    root = tmp_path_factory.mktemp("dcp")
    out = {
        "stacked": write_megatron(root / "megatron" / "iter_0000100"),
        "per_layer": write_megatron(
            root / "nonhomogeneous" / "iter_0000100",
            stacked=False,
            zero_centered=None,
            mcore_metadata=True,
            legacy_common=root / "common_pt_was_unpickled",
        ),
        "torchtitan": write_torchtitan(root / "titan" / "step-10"),
        "olmo_core": write_olmo_core(root / "olmo" / "step1000"),
    }
    yield out
    assert not (root / "common_pt_was_unpickled").exists()


def _read_all(save: Save) -> dict[str, bytes]:
    checkpoint = open_checkpoint(save.path)
    refs = [checkpoint.tensors[name] for name in save.norms]
    return checkpoint.read(refs)


@pytest.mark.parametrize("layout", ["stacked", "per_layer", "torchtitan", "olmo_core"])
def test_every_norm_equals_what_dcp_load_returns(saves: dict[str, Save], layout: str) -> None:
    save = saves[layout]
    data = _read_all(save)
    assert set(data) == set(save.norms)
    stacked = set(torch_metadata(save.dcp_dir).state_dict_metadata)
    for name, raw in data.items():
        parts = name.split(".")
        key, layer = name, None
        if parts[:2] == ["decoder", "layers"] and name not in stacked:
            key, layer = ".".join(parts[:2] + parts[3:]), int(parts[2])
        expected = torch_load(save.dcp_dir, key)
        if layer is not None:
            expected = expected[layer]
        got = torch.frombuffer(bytearray(raw), dtype=expected.dtype).reshape(expected.shape)
        assert torch.equal(got, expected), name
        assert torch.equal(got, save.norms[name]), name  # and the values the fixture wrote


def test_megatron_stacked_norms_classify_per_layer(saves: dict[str, Save]) -> None:
    report = measure(saves["stacked"].path).report
    by_name = {n.name: n for n in report.norms}
    assert set(by_name) == set(saves["stacked"].norms)
    qkv = by_name["decoder.layers.3.self_attention.linear_qkv.layer_norm_weight"]
    assert (qkv.module, qkv.layer, qkv.role, qkv.dim) == (Module.main, 3, Role.attn_input, 32)
    fc1 = by_name["decoder.layers.0.mlp.linear_fc1.layer_norm_weight"]
    assert (fc1.layer, fc1.role) == (0, Role.mlp_input)
    assert by_name["decoder.final_layernorm.weight"].role is Role.final
    mtp = {n.role: n for n in report.norms if n.module is Module.mtp}
    assert set(mtp) == {
        Role.mtp_embedding,
        Role.mtp_hidden,
        Role.mtp_final,
        Role.attn_input,
        Role.mlp_input,
    }
    assert all(n.mtp_depth == 1 and n.layer is None for n in mtp.values())
    assert report.model.family == "megatron" and report.model.num_layers == 4
    # optimizer state ends in the same names but is never presented, let alone measured
    checkpoint = open_checkpoint(saves["stacked"].path)
    assert not any(name.startswith("optimizer.") for name in checkpoint.tensors)
    assert "decoder.layers.2.mlp.linear_fc2.weight" in checkpoint.tensors  # names, not bytes


def test_megatron_per_layer_keys_mla_and_mtp_model_layer(saves: dict[str, Save]) -> None:
    report = measure(saves["per_layer"].path).report
    roles = {(n.layer, n.role, n.dim) for n in report.norms if n.module is Module.main}
    assert (2, Role.latent, 24) in roles and (2, Role.latent, 16) in roles
    assert (1, Role.mlp_input, 32) in roles and (0, Role.attn_input, 32) in roles
    assert {n.role for n in report.norms if n.module is Module.mtp} >= {Role.attn_input}
    assert len(report.norms) == len(saves["per_layer"].norms)


def test_bytes_read_are_the_metadata_and_the_norm_chunks(saves: dict[str, Save]) -> None:
    save = saves["stacked"]
    report = measure(save.path).report
    # The bound, from torch's own reading of the metadata: .metadata plus every chunk of the
    # DCP keys that hold a norm (the stacked keys hold one norm per layer).
    metadata = torch_metadata(save.dcp_dir)
    keys = set()
    for norm in report.norms:
        parts = norm.name.split(".")
        keys.add(
            norm.name
            if norm.name in metadata.state_dict_metadata
            else ".".join(parts[:2] + parts[3:])
        )
    norm_chunks = sum(
        info.length for index, info in metadata.storage_data.items() if index.fqn in keys
    )
    bound = (save.dcp_dir / ".metadata").stat().st_size + norm_chunks
    assert report.io.bytes_read <= 1.1 * bound
    total = sum(f.stat().st_size for f in save.dcp_dir.glob("*.distcp"))
    assert report.io.bytes_read < 0.2 * total  # optimizer state and matrices dominate the bytes
    assert report.io.metadata_bytes > 0  # metadata.json and the common state, counted apart


def test_parametrization_sources(saves: dict[str, Save], tmp_path: Path) -> None:
    stacked = open_checkpoint(saves["stacked"].path)
    assert isinstance(stacked, DcpCheckpoint)
    assert stacked.config == {"layernorm_zero_centered_gamma": False}
    assert stacked.parametrization_source == "args.apply_layernorm_1p in the common state"
    assert any("read from args.apply_layernorm_1p" in w for w in stacked.warnings)

    legacy = open_checkpoint(saves["per_layer"].path)  # common.pt only: never opened
    assert legacy.config is None
    assert any("common.pt is a full pickle and is never opened" in w for w in legacy.warnings)

    copy = tmp_path / "iter_0000100"
    shutil.copytree(saves["per_layer"].path, copy)
    (copy / "run_config.yaml").write_text(
        "_target_: megatron.bridge.training.config.ConfigContainer\n"
        "model:\n  _target_: x.GPTModelProvider\n  layernorm_zero_centered_gamma: true\n"
    )
    bridge = open_checkpoint(copy)
    assert bridge.config == {"layernorm_zero_centered_gamma": True}
    assert "run_config.yaml" in (bridge.parametrization_source or "")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model:\n  layernorm_zero_centered_gamma: true\n", True),
        ("apply_layernorm_1p: false\n", False),
        ("normalization: layernorm1p\n", True),
        ("normalization: rmsnorm\n", None),
        ("model: {a: [1, 2\n layernorm_zero_centered_gamma: True  # broken YAML\n", True),
        ("other: 1\n", None),
    ],
)
def test_yaml_flag(text: str, expected: bool | None) -> None:
    assert yaml_flag(text) is expected


def test_common_state_reader_stubs_everything() -> None:
    import argparse

    buf = io.BytesIO()
    torch.save(
        [{"args": argparse.Namespace(apply_layernorm_1p=True), "rng": torch.ones(2), "x": {1}}],
        buf,
    )
    assert read_common_args(buf.getvalue(), "here") == {"apply_layernorm_1p": True}
    with pytest.raises(SourceError, match=r"no torch\.save archive|cannot read"):
        read_common_args(b"not a zip", "here")


def test_torchtitan_and_olmo_core_layouts_open(saves: dict[str, Save]) -> None:
    # Roles of torchtitan's and OLMo-core's names come with their naming rules in arch.py; the
    # source presents them (verbatim, with layer numbers) and they are all measured.
    for layout, finals in (
        ("torchtitan", "norm.weight"),
        ("olmo_core", "model.lm_head.norm.weight"),
    ):
        report = measure(saves[layout].path).report
        names = {n.name for n in report.norms}
        assert names == set(saves[layout].norms) and finals in names
        assert not any("exp_avg" in name for name in names)
        layers = {n.layer for n in report.norms if "attention_norm" in n.name}
        assert layers == {0, 1, 2, 3}
    olmo = open_checkpoint(saves["olmo_core"].path)
    assert olmo.config == {"model": {"d_model": 32, "n_layers": 4}}  # stepN/config.json


def test_dcp_diff_against_its_hf_export_pairs_every_norm(
    saves: dict[str, Save], tmp_path: Path
) -> None:
    """The stacked Megatron save vs the same gains exported in DeepSeek-V3 naming."""
    from safetensors.torch import save_file

    norms = saves["stacked"].norms
    hf: dict[str, torch.Tensor] = {}
    for i in range(4):
        hf[f"model.layers.{i}.input_layernorm.weight"] = norms[
            f"decoder.layers.{i}.self_attention.linear_qkv.layer_norm_weight"
        ]
        hf[f"model.layers.{i}.post_attention_layernorm.weight"] = norms[
            f"decoder.layers.{i}.mlp.linear_fc1.layer_norm_weight"
        ]
    hf["model.norm.weight"] = norms["decoder.final_layernorm.weight"]
    mtp, block = "mtp.layers.0.", "mtp.layers.0.transformer_layer."
    hf["model.layers.4.enorm.weight"] = norms[mtp + "enorm.weight"]
    hf["model.layers.4.hnorm.weight"] = norms[mtp + "hnorm.weight"]
    hf["model.layers.4.shared_head.norm.weight"] = norms[mtp + "final_layernorm.weight"]
    hf["model.layers.4.input_layernorm.weight"] = norms[
        block + "self_attention.linear_qkv.layer_norm_weight"
    ]
    hf["model.layers.4.post_attention_layernorm.weight"] = norms[
        block + "mlp.linear_fc1.layer_norm_weight"
    ]
    export = tmp_path / "hf"
    export.mkdir()
    save_file({k: v.contiguous() for k, v in hf.items()}, export / "model.safetensors")
    config = {"model_type": "deepseek_v3", "num_hidden_layers": 4, "num_nextn_predict_layers": 1}
    (export / "config.json").write_text(__import__("json").dumps(config))

    result = diff(saves["stacked"].path, export)
    assert result.only_a == () and result.only_b == ()
    assert len(result.norms) == len(norms) == len(hf)
    assert all(n.matched_by.value == "identity" for n in result.norms)
    assert all(n.rel_change == 0.0 for n in result.norms)


def test_series_over_a_megatron_save_dir(pg: None, tmp_path: Path) -> None:
    save = tmp_path / "save"
    write_megatron(save / "iter_0000100", seed=1, scale=1.0, iteration=100)
    write_megatron(save / "iter_0000200", seed=1, scale=0.8, iteration=200)
    partial = write_megatron(save / "iter_0000300", seed=1, scale=0.6, iteration=300)
    os.remove(partial.path / ".metadata")  # the newest save is still being written
    (save / "latest_checkpointed_iteration.txt").write_text("200")

    found = discover([save])
    assert [c.step for c in found.candidates] == [100, 200]
    (skip,) = found.skipped
    assert skip.step == 300 and "without .metadata yet" in skip.reason
    assert "still being written" in (why_not_checkpoint(partial.path) or "")

    series = measure_series([save], SeriesOptions(executor=Executor.serial))
    assert [c.step for c in series.checkpoints] == [100, 200]
    assert [s.step for s in series.skipped] == [300]
    ratios = [r.norm.ratio for r in series.rows if r.norm.name == "decoder.final_layernorm.weight"]
    assert ratios[1] == pytest.approx(0.8 * ratios[0], rel=0.02)


def test_malicious_metadata_is_refused_and_never_runs(
    saves: dict[str, Save], tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    class Opener:
        def __reduce__(self) -> tuple[Any, ...]:
            return (open, (str(marker), "w"))

    for payload, name in ((Payload(), f"{os.system.__module__}.system"), (Opener(), "io.open")):
        folder = tmp_path / "iter_0000100"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(saves["stacked"].path, folder)
        # The payload hidden inside a real Metadata object, where a checkpoint id would be.
        metadata = torch_metadata(folder)
        metadata.storage_meta.checkpoint_id = payload  # type: ignore[union-attr]
        (folder / ".metadata").write_bytes(pickle.dumps(metadata))
        with pytest.raises(SourceError, match=f"refused to unpickle '{name}'"):
            open_checkpoint(folder)
        result = CliRunner().invoke(app, ["scan", str(folder)])
        assert result.exit_code == 2, result.output
        assert name in result.stderr
        assert not marker.exists()


def test_metadata_globals_are_the_allowlist(saves: dict[str, Save]) -> None:
    """Record every global the real saves pickle: all are allowed, and nothing more is needed
    than the list (plus the dtypes and Megatron names documented beside it)."""

    class Inert:
        def __init__(self, *args: Any) -> None:
            pass

        def __setstate__(self, state: Any) -> None:
            pass

    class Recorder(pickle.Unpickler):
        seen: ClassVar[set[tuple[str, str]]] = set()

        def find_class(self, module: str, name: str) -> Any:
            Recorder.seen.add((module, name))
            return Inert

    for save in saves.values():
        Recorder(io.BytesIO((save.dcp_dir / ".metadata").read_bytes())).load()
    assert Recorder.seen <= set(METADATA_GLOBALS)
    assert ("megatron.core.dist_checkpointing.strategies.torch", "MCoreMetadata") in Recorder.seen
    assert ("torch.serialization", "_get_layout") in Recorder.seen


def test_zstandard_chunks(saves: dict[str, Save], tmp_path: Path) -> None:
    """A chunk whose metadata names the ZStandard transform: decoded with zstandard when it is
    installed, else refused with the install line."""
    folder = tmp_path / "step-10"
    shutil.copytree(saves["torchtitan"].path, folder)
    metadata = torch_metadata(folder)
    key = next(i for i in metadata.storage_data if i.fqn == "layers.0.ffn_norm.weight")
    info = metadata.storage_data[key]
    try:
        import zstandard
    except ImportError:
        zstandard = None
    raw = (folder / info.relative_path).read_bytes()
    blob = raw[info.offset : info.offset + info.length]
    if zstandard is not None:  # append the compressed blob and point the chunk at it
        packed = zstandard.ZstdCompressor().compress(blob)
        with open(folder / info.relative_path, "ab") as f:
            info.offset, info.length = len(raw), len(packed)
            f.write(packed)
    info.transform_descriptors = ["stream.zstd/1"]
    (folder / ".metadata").write_bytes(pickle.dumps(metadata))
    checkpoint = open_checkpoint(folder)
    ref = checkpoint.tensors["layers.0.ffn_norm.weight"]
    if zstandard is None:
        with pytest.raises(SourceError, match="ZStandard-compressed") as info_:
            checkpoint.read([ref])
        assert info_.value.hint == "pip install zstandard"
    else:
        got = np.frombuffer(checkpoint.read([ref])[ref.name], dtype=np.uint16)
        expected = saves["torchtitan"].norms[ref.name].view(torch.int16).numpy()
        assert np.array_equal(got, expected.view(np.uint16))


def test_unknown_transform_and_missing_files_are_refused(
    saves: dict[str, Save], tmp_path: Path
) -> None:
    folder = tmp_path / "step-10"
    shutil.copytree(saves["torchtitan"].path, folder)
    metadata = torch_metadata(folder)
    for info in metadata.storage_data.values():
        info.transform_descriptors = ["stream.lz4/1"]
    (folder / ".metadata").write_bytes(pickle.dumps(metadata))
    checkpoint = open_checkpoint(folder)
    with pytest.raises(SourceError, match=re.escape("unknown DCP stream transform 'stream.lz4/1'")):
        checkpoint.read([checkpoint.tensors["norm.weight"]])
    for f in folder.glob("*.distcp"):
        f.unlink()
    with pytest.raises(SourceError, match=re.escape("names '__0_0.distcp' but it is missing")):
        open_checkpoint(folder)
    (folder / ".metadata").unlink()
    assert why_not_checkpoint(folder) is not None


def test_without_torch_the_install_line(
    saves: dict[str, Save], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(__import__("sys").modules, "torch", None)
    with pytest.raises(SourceError, match="needs torch") as info:
        open_checkpoint(saves["stacked"].path)
    assert info.value.hint == 'pip install "normscope[torch]"'


def test_open_by_metadata_file_and_row_spans(saves: dict[str, Save]) -> None:
    checkpoint = open_checkpoint(saves["stacked"].dcp_dir / ".metadata")
    ref = checkpoint.tensors["decoder.layers.2.mlp.linear_fc1.weight"]  # [128, 32] BF16
    whole = checkpoint.read([ref])[ref.name]
    before = checkpoint.counter.bytes_read
    assert checkpoint.read_span(ref, 64 * 10, 64 * 13 + 6) == whole[640 : 64 * 13 + 6]
    assert checkpoint.counter.bytes_read > before


@pytest.mark.parametrize(
    ("fqn", "stacked", "optimizer"),
    [
        ("decoder.layers.mlp.linear_fc1.layer_norm_weight", True, False),
        ("decoder.layers.3.pre_mlp_layernorm.weight", False, False),
        ("mtp.layers.0.enorm.weight", False, False),
        ("layers.0.attention_norm.weight", False, False),
        ("optimizer.state.exp_avg.decoder.final_layernorm.weight", False, True),
        ("optim.state.blocks.0.attention_norm.weight.exp_avg", False, True),
        ("norm.weight.exp_avg_sq", False, True),
    ],
)
def test_names(fqn: str, stacked: bool, optimizer: bool) -> None:
    assert (stacked_name(fqn, 7) is not None) is stacked
    assert is_optimizer_state(fqn) is optimizer
    if stacked:
        assert stacked_name(fqn, 7) == "decoder.layers.7.mlp.linear_fc1.layer_norm_weight"


def test_the_saved_layernorm_1p_setting_decides_the_parametrization(
    saves: dict[str, Save], tmp_path: Path
) -> None:
    """The arch rules read the signal the DCP source found: gains are w, or 1 + w."""
    standard = normscope.measure(saves["per_layer"].path)
    assert {n.parametrization.value for n in standard.report.norms} == {"standard"}
    copy = tmp_path / "iter_0000100"
    shutil.copytree(saves["per_layer"].path, copy)
    (copy / "run_config.yaml").write_text("model:\n  layernorm_zero_centered_gamma: true\n")
    offset = normscope.measure(copy)
    assert {n.parametrization.value for n in offset.report.norms} == {"offset"}
    for name, gain in standard.gains.items():  # the same stored w, read as 1 + w
        np.testing.assert_array_equal(offset.gains[name], gain + 1.0)
