"""Real Megatron-Core saves: scan, fold, series and diff against the models' own state dicts.

The saves are written once per session by `tests/megatron_saves.py` in a subprocess, with
megatron-core 0.16.1 itself (`.ci/run` installs it; without it these tests FAIL, they never
skip). Every number is compared with the model's own `state_dict()` (written by the builder
next to the saves) or with a computation here: nothing is compared with normscope's output of
something normscope wrote.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from normscope.cli import app
from normscope.compare import diff
from normscope.fold import FoldOptions, FoldReport, FoldStatus, fold
from normscope.scanner import measure
from normscope.schema import Executor, Module, NormStats, Role
from normscope.series import SeriesOptions, measure_series
from normscope.sources.dcp.unpickle import METADATA_GLOBALS

BUILDER = Path(__file__).with_name("megatron_saves.py")
INSTALL = "pip install --no-deps megatron-core==0.16.1"


@dataclass(frozen=True)
class Saves:
    root: Path

    def path(self, name: str) -> Path:
        return (
            self.root
            / {
                "iter1": "run/iter_0000001",
                "iter2": "run/iter_0000002",
                "deep": "deep/iter_0000005",
                "tp2": "tp2/iter_0000003",
            }[name]
        )

    def facts(self, name: str) -> dict[str, Any]:
        model = "deep" if name == "deep" else "tp2" if name == "tp2" else "run"
        return dict(json.loads((self.root / "expected" / f"{model}.json").read_text()))

    def state(self, name: str) -> dict[str, torch.Tensor]:
        """The model's own state_dict() at save time (TP: the two ranks' shards joined)."""
        expected = self.root / "expected"
        if name != "tp2":
            file = {"iter1": "iter_0000001", "iter2": "iter_0000002", "deep": "deep"}[name]
            return load_file(expected / f"{file}.safetensors")
        ranks = [load_file(expected / f"tp2.rank{r}.safetensors") for r in range(2)]
        return {k: _join(k, ranks[0][k], ranks[1][k]) for k in ranks[0]}


def _join(name: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """One tensor from its two TP shards: replicated (norms), rows (column-parallel) or
    columns (row-parallel: linear_proj, linear_fc2) (megatron/core/tensor_parallel/layers.py)."""
    if torch.equal(a, b) and a.ndim == 1:
        return a
    if name.endswith(("linear_proj.weight", "linear_fc2.weight")):
        return torch.cat([a, b], dim=1)
    return torch.cat([a, b], dim=0)


@pytest.fixture(scope="session")
def megatron(tmp_path_factory: pytest.TempPathFactory) -> Saves:
    """Every save, built once per session by megatron-core in a subprocess (~20 s)."""
    root = tmp_path_factory.mktemp("megatron")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, str(BUILDER), str(root)], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        pytest.fail(f"building the Megatron-Core saves failed ({INSTALL}):\n{done.stderr[-3000:]}")
    return Saves(root)


# --- what the model's state dict says each norm is ------------------------------------------


@dataclass(frozen=True)
class Expected:
    name: str
    """The saved name (the spec's keys map applied), per layer."""
    module: Module
    mtp_depth: int | None
    layer: int | None
    role: Role
    gain: np.ndarray
    bias: np.ndarray | None


_ROLES = {
    "input_layernorm": Role.attn_input,
    "pre_mlp_layernorm": Role.mlp_input,
    "q_layernorm": Role.qk,
    "k_layernorm": Role.qk,
    "enorm": Role.mtp_embedding,
    "hnorm": Role.mtp_hidden,
}


def expected_norms(saves: Saves, name: str) -> dict[str, Expected]:
    """Every norm gain of the model's state_dict(), under the name the save gives it."""
    state, keys_map = saves.state(name), saves.facts(name)["keys_map"]
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        leaf = parts[-2]
        if parts[-1] != "weight" or not (leaf in _ROLES or leaf == "final_layernorm"):
            continue
        mtp = parts[0] == "mtp"
        role = _ROLES.get(leaf) or (Role.mtp_final if mtp and len(parts) == 5 else Role.final)
        saved = key
        for old, new in keys_map.items():  # TransformerLayer.sharded_state_dict renames
            saved = saved.replace("." + old, "." + new)
        bias = state.get(key[: -len("weight")] + "bias")
        out[saved] = Expected(
            saved,
            Module.mtp if mtp else Module.main,
            int(parts[2]) + 1 if mtp else None,
            None if mtp or role is Role.final else int(parts[2]),
            role,
            value.float().numpy().astype(np.float64),
            None if bias is None else bias.float().numpy().astype(np.float64),
        )
    return out


def _ratio(gain: np.ndarray) -> float:
    return float(np.linalg.norm(gain) / np.sqrt(gain.size))


@pytest.mark.parametrize("name", ["iter1", "iter2", "deep", "tp2"])
def test_every_norm_is_the_models_own(megatron: Saves, name: str) -> None:
    """Name, module, MTP depth, layer, role, values and ratio of every norm, none missing."""
    measured = measure(megatron.path(name))
    expected = expected_norms(megatron, name)
    got = {n.name: n for n in measured.report.norms}
    assert set(got) == set(expected)
    facts = megatron.facts(name)
    assert len(expected) == facts["layers"] * (4 if facts["qk"] else 2) + 1 + facts["mtp"] * (
        3 + (4 if facts["qk"] else 2)
    )
    for key, e in expected.items():
        n: NormStats = got[key]
        assert (n.module, n.mtp_depth, n.layer, n.role) == (e.module, e.mtp_depth, e.layer, e.role)
        np.testing.assert_array_equal(measured.gains[key], e.gain)
        assert n.ratio == pytest.approx(_ratio(e.gain), rel=1e-6)
        if e.bias is None:
            assert n.bias_l2 is None
        else:
            assert n.bias_l2 == pytest.approx(float(np.linalg.norm(e.bias)), rel=1e-6)
    report = measured.report
    assert report.model.family == "megatron"
    assert report.model.mtp_depth == facts["mtp"]
    assert not measured.unread


def test_the_known_scales_land_in_their_bands(megatron: Saves) -> None:
    """The builder's per-layer scales (final 0.27, MTP enorm 2.4, input norms 0.3 + 0.25 i)."""
    norms = {n.name: n for n in measure(megatron.path("iter1")).report.norms}
    assert norms["decoder.final_layernorm.weight"].band.value == "collapse"
    assert norms["mtp.layers.0.enorm.weight"].band.value == "explosion"
    inputs = [
        norms[f"decoder.layers.{i}.self_attention.linear_qkv.layer_norm_weight"].ratio
        for i in range(3)
    ]
    assert inputs == sorted(inputs) and inputs[0] < 0.4 < inputs[2]


class _Recorder(pickle.Unpickler):
    """Every global a pickle names, each answered with an inert object."""

    seen: ClassVar[set[tuple[str, str]]] = set()

    def find_class(self, module: str, name: str) -> Any:
        _Recorder.seen.add((module, name))
        return _Inert

    def persistent_load(self, pid: Any) -> Any:
        return None


class _Inert:
    def __init__(self, *args: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def test_the_allowlist_is_what_megatron_core_writes(megatron: Saves) -> None:
    """The globals of real 0.16.1 saves (TP=1 and TP=2, with optimizer state) are allowed, and
    every planner record on the allowlist occurs in them: nothing allowed that none writes."""
    _Recorder.seen = set()
    for name in ("iter1", "iter2", "deep", "tp2"):
        _Recorder(io.BytesIO((megatron.path(name) / ".metadata").read_bytes())).load()
    assert _Recorder.seen <= set(METADATA_GLOBALS)
    planner = {k for k in METADATA_GLOBALS if k[0] == "torch.distributed.checkpoint.planner"}
    assert planner == {k for k in _Recorder.seen if k[0] == "torch.distributed.checkpoint.planner"}
    assert len(planner) == 4


def _torch_metadata(path: Path) -> Any:
    """torch's own reading of a save's `.metadata` (plain pickle: our own trusted files)."""
    from torch.distributed.checkpoint import FileSystemReader

    return FileSystemReader(path).read_metadata()


def _norm_keys(metadata: Any, names: set[str]) -> set[str]:
    """The saved keys holding these norms (a stacked key holds one norm per layer)."""
    keys = set()
    for name in names:
        parts = name.split(".")
        stacked = ".".join(parts[:2] + parts[3:])
        keys.add(name if name in metadata.state_dict_metadata else stacked)
    return keys


@pytest.mark.parametrize("name", ["iter2", "tp2"])
def test_bytes_read_are_the_metadata_and_each_norm_chunk_once(megatron: Saves, name: str) -> None:
    """The optimizer state (iter2) and the matrices are never read; TP=2 norms, replicated on
    both ranks, are saved and read once."""
    path = megatron.path(name)
    report = measure(path).report
    metadata = _torch_metadata(path)
    keys = _norm_keys(metadata, {n.name for n in report.norms})
    chunks = [(i, s) for i, s in metadata.storage_data.items() if i.fqn in keys]
    if name == "tp2":  # one chunk per norm per layer: the replicas are not saved twice
        assert all(len(metadata.state_dict_metadata[k].chunks) in (1, 3) for k in keys)
    metadata_size = (path / ".metadata").stat().st_size
    assert report.io.bytes_read == metadata_size + sum(s.length for _, s in chunks)
    optimizer = sum(
        s.length for i, s in metadata.storage_data.items() if i.fqn.startswith("optimizer.")
    )
    total = sum(f.stat().st_size for f in path.glob("*.distcp"))
    assert report.io.bytes_total == total + metadata_size
    if name == "iter2":
        assert optimizer > 0.6 * total  # Adam's two moments: most of the save
        assert report.io.bytes_read < 0.05 * total
    else:
        assert optimizer == 0


def test_tensor_parallel_matrices_are_reassembled(megatron: Saves) -> None:
    """Each layer's linear_qkv (rows split over TP ranks) and linear_proj (columns) read back
    as the two ranks' shards joined."""
    from normscope.sources import open_checkpoint

    checkpoint = open_checkpoint(megatron.path("tp2"))
    ranks = [load_file(megatron.root / "expected" / f"tp2.rank{r}.safetensors") for r in range(2)]
    for i in range(3):
        for leaf, axis in (("self_attention.linear_qkv", 0), ("self_attention.linear_proj", 1)):
            key = f"decoder.layers.{i}.{leaf}.weight"
            ref = checkpoint.tensors[key]
            data = checkpoint.read([ref])[key]
            got = np.frombuffer(data, dtype=np.float32).reshape(ref.shape)
            want = torch.cat([ranks[0][key], ranks[1][key]], dim=axis).numpy()
            np.testing.assert_array_equal(got, want)


# --- fold ----------------------------------------------------------------------------------


def _folded_ratio(
    gain: np.ndarray, matrices: list[np.ndarray], span: tuple[int, int] | None
) -> float:
    """‖γ ⊙ c‖/‖c‖ with c_i² = Σ over the matrices' rows of W[r, i]², computed here."""
    csq = sum((m.astype(np.float64) ** 2).sum(axis=0) for m in matrices)
    if span is not None:
        csq = csq[span[0] : span[1]]
    return float(np.sqrt((gain**2 * csq).sum() / csq.sum()))


def _per_layer(megatron: Saves, name: str, tmp_path: Path) -> Path:
    """The same model converted to per-layer tensors: its state_dict() as one safetensors file."""
    out = tmp_path / f"{name}-per-layer.safetensors"
    save_file({k: v.contiguous() for k, v in megatron.state(name).items()}, out)
    return out


def _identity(n: Any) -> tuple[Any, ...]:
    """A norm's place, whatever the naming: module, MTP depth, layer, role (q or k for QK)."""
    qk = n.name.rsplit(".", 2)[-2][0] if n.role is Role.qk else ""  # q_layernorm / q_norm
    return (n.module, n.mtp_depth, n.layer, n.role, qk)


_METRICS = ("status", "folded_ratio", "compensation", "top_share", "max_over_median")


@pytest.mark.parametrize("name", ["iter2", "deep", "tp2"])
def test_fold_finds_every_fused_norms_matrix(megatron: Saves, name: str, tmp_path: Path) -> None:
    """Every TE-fused norm folds against `<module>.weight` of its own layer, with the metrics
    of the same model converted to per-layer tensors and a folded ratio computed here."""
    report = fold(megatron.path(name), FoldOptions(device="cpu"))
    state, facts = megatron.state(name), megatron.facts(name)
    assert (
        "output_layer.weight" not in state if facts.get("tied") else "output_layer.weight" in state
    )
    assert not any("matched no tensor" in w for w in report.warnings)
    expected = expected_norms(megatron, name)
    assert report.fold_summary.no_consumer == 0 and report.fold_summary.skipped == 0
    for n in report.norms:
        if n.role is Role.qk:
            assert n.status is FoldStatus.not_applicable
            continue
        assert n.status is FoldStatus.folded, n
        if n.name.endswith(".layer_norm_weight"):
            assert n.consumers == (n.name.removesuffix("layer_norm_weight") + "weight",)
        span = None
        if n.role in (Role.mtp_embedding, Role.mtp_hidden):
            assert n.consumers == ("mtp.layers.0.eh_proj.weight",)
            h = state["mtp.layers.0.eh_proj.weight"].shape[1] // 2
            span = (0, h) if n.role is Role.mtp_embedding else (h, 2 * h)  # cat(emb, hidden)
        if n.role in (Role.final, Role.mtp_final):
            head = "embedding.word_embeddings" if facts.get("tied") else "output_layer"
            assert n.consumers == (head + ".weight",)
        matrices = [state[c].float().numpy() for c in n.consumers]  # the layer's own slice
        assert n.folded_ratio == pytest.approx(
            _folded_ratio(expected[n.name].gain, matrices, span), rel=1e-5
        )
    per_layer = fold(_per_layer(megatron, name, tmp_path), FoldOptions(device="cpu"))
    _same_fold(report, per_layer)
    rows = [(n.module, n.mtp_depth or 0, n.layer) for n in report.norms]
    layers = [r[2] for r in rows if r[0] is Module.main and r[2] is not None]
    assert layers == sorted(layers)  # natural layer order: 0 … 9, 10, 11 in the deep save


def _same_fold(a: FoldReport, b: FoldReport) -> None:
    """The same norms, module for module, with the same status and metrics (the matrices are
    the same numbers in other row orders: sums differ in the last bits only)."""
    rows_a, rows_b = ({_identity(n): n for n in r.norms} for r in (a, b))
    assert set(rows_a) == set(rows_b) and len(rows_a) == len(a.norms) == len(b.norms)
    for key, x in rows_a.items():
        y = rows_b[key]
        assert x.status is y.status, key
        for metric in (*_METRICS[1:], "input_balance"):
            u, v = getattr(x, metric), getattr(y, metric)
            assert (u is None) == (v is None), (key, metric)
            if u is not None:
                assert u == pytest.approx(v, rel=1e-6, abs=1e-9), (key, metric)


def test_fold_table_lists_layers_in_natural_order(megatron: Saves) -> None:
    """The 12-layer save stores its norms role by role; the table goes 0, 1, …, 9, 10, 11."""
    result = CliRunner().invoke(app, ["fold", str(megatron.path("deep")), "--all", "-q"])
    assert result.exit_code in (0, 1), result.output
    layers = []
    for line in result.stdout.splitlines():
        cells = line.split()
        if len(cells) > 2 and "layer_norm" in cells[0] and cells[1].isdigit():
            layers.append(int(cells[1]))
    assert layers == [i for i in range(12) for _ in range(2)]


# --- series, diff and the Hugging Face naming ------------------------------------------------


def test_series_over_two_saves_of_one_run(megatron: Saves) -> None:
    series = measure_series([megatron.root / "run"], SeriesOptions(executor=Executor.serial))
    assert [c.step for c in series.checkpoints] == [1, 2]
    assert series.skipped == ()
    first, second = expected_norms(megatron, "iter1"), expected_norms(megatron, "iter2")
    rows = {(r.step, r.norm.name): r for r in series.rows}
    assert len(rows) == 2 * len(first)
    for key in first:
        assert rows[(1, key)].norm.ratio == pytest.approx(_ratio(first[key].gain), rel=1e-6)
        assert rows[(2, key)].norm.ratio == pytest.approx(_ratio(second[key].gain), rel=1e-6)
        a, b = first[key].gain, second[key].gain
        change = float(np.linalg.norm(b - a) / np.linalg.norm(a))
        assert rows[(2, key)].rel_change == pytest.approx(change, rel=1e-6)
        assert change > 0.01  # two Adam steps at lr 0.05 moved every norm


def test_megatron_and_hf_export_naming_give_the_same_report(megatron: Saves) -> None:
    """The same model under Megatron's names (the DCP save) and under the Hugging Face names of
    Megatron-Bridge's GLM-4.5 mapping (MTP layer k as model.layers.{N+k}.{enorm, hnorm,
    shared_head.norm}): the same norms, module for module, with the same numbers."""
    dcp = measure(megatron.path("iter2")).report
    hf = measure(megatron.root / "export" / "iter_0000002").report
    assert hf.model.family == "glm4_moe" and hf.model.mtp_depth == dcp.model.mtp_depth == 1

    def view(report: Any) -> dict[tuple[Any, ...], tuple[Any, ...]]:
        rows = {}
        for n in report.norms:
            rows[_identity(n)] = (n.dim, n.ratio, n.mean, n.std, n.min, n.max, n.band)
        return rows

    assert view(dcp) == view(hf)
    assert len(view(dcp)) == len(dcp.norms) == 20
    result = diff(megatron.path("iter2"), megatron.root / "export" / "iter_0000002")
    assert result.only_a == () and result.only_b == ()  # q_layernorm pairs with q_norm
    assert len(result.norms) == 20 and all(n.rel_change == 0.0 for n in result.norms)
    folded = [
        fold(p, FoldOptions(device="cpu"))
        for p in (megatron.path("iter2"), megatron.root / "export" / "iter_0000002")
    ]
    _same_fold(*folded)


# --- bad input --------------------------------------------------------------------------------


def _copy(megatron: Saves, tmp_path: Path) -> Path:
    folder = tmp_path / "iter_0000002"
    shutil.copytree(megatron.path("iter2"), folder)
    return folder


def test_a_truncated_distcp_is_one_clear_error(megatron: Saves, tmp_path: Path) -> None:
    folder = _copy(megatron, tmp_path)
    shard = folder / "__0_1.distcp"
    size = shard.stat().st_size
    os.truncate(shard, size - 1)
    result = CliRunner().invoke(app, ["scan", str(folder)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0] == (
        f"Error: '__0_1.distcp' is {size - 1:,} bytes but the DCP metadata places data up to "
        f"byte {size:,}: the file is truncated ({folder})"
    )
    assert lines[1].startswith("Hint: ") and len(lines) == 2
    assert result.stdout == ""


def test_a_class_outside_the_allowlist_is_refused_by_name(megatron: Saves, tmp_path: Path) -> None:
    """A payload where a real save keeps planner data, and a torch class no save writes
    (`BytesIOWriteData`): refused naming it, nothing run, the hint naming what came before."""
    from torch.distributed.checkpoint.planner import BytesIOWriteData

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    for payload, refused in (
        (Payload(), f"{os.system.__module__}.system"),
        (BytesIOWriteData(8), "torch.distributed.checkpoint.planner.BytesIOWriteData"),
    ):
        folder = _copy(megatron, tmp_path / refused)
        metadata = _torch_metadata(folder)
        plan = metadata.all_local_plans[0]
        metadata.all_local_plans[0] = type(plan)(plan.items, planner_data=payload)
        (folder / ".metadata").write_bytes(pickle.dumps(metadata))
        result = CliRunner().invoke(app, ["scan", str(folder)])
        assert result.exit_code == 2
        error, hint = result.stderr.strip().splitlines()
        assert error.startswith(f"Error: refused to unpickle '{refused}': ")
        assert "nothing was run" in error
        assert hint.startswith("Hint: before it the pickle named ")
        assert "allowed DCP/torch global(s): Metadata, " in hint
        assert not marker.exists()


def test_the_parametrization_is_said_once(megatron: Saves, tmp_path: Path) -> None:
    """A save whose flag sits in common.pt (never opened) gets one warning about it, not the
    DCP opener's and the family's note both; without the DCP store (the same names in a
    safetensors file) the family's note is that one warning."""

    def said(warnings: tuple[str, ...]) -> list[str]:
        return [w for w in warnings if "layernorm_zero_centered_gamma" in w]

    assert (megatron.path("deep") / "common.pt").is_file()
    dcp = said(measure(megatron.path("deep")).report.warnings)
    assert len(dcp) == 1 and "common.pt is a full pickle" in dcp[0], dcp
    assert "gains are read as standard" in dcp[0]
    state = megatron.state("deep")
    norms = {k: v.contiguous() for k, v in state.items() if k.endswith("layernorm.weight")}
    assert norms
    save_file(norms, str(tmp_path / "model.safetensors"))
    flat = said(measure(tmp_path).report.warnings)
    assert flat == [
        "the checkpoint does not say whether the run used layernorm_zero_centered_gamma "
        "(--apply-layernorm-1p); gains are read as standard unless --parametrization offset"
    ], flat
