"""Tests of `normscope series`: discovery, measurement, trends, gates, renderers and the CLI.

Series fixtures are written into tmp_path by `write_run`: DeepSeek-V3-like checkpoints (hidden
16, 2 layers, one MTP depth stored as layer 2) whose norms are constant vectors with a chosen
ratio per step, so every expected number can be computed by hand.
"""

from __future__ import annotations

import importlib
import itertools
import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import llama_tensors, write_checkpoint, write_raw_safetensors
from typer.testing import CliRunner

from normscope.analysis import relative_change
from normscope.cli import app
from normscope.cli import output as cli_output
from normscope.compare import compare_gains
from normscope.discovery import CONVENTIONS, discover, parse_step, why_not_checkpoint
from normscope.errors import ConfigError, SourceError
from normscope.render.scan import NORM_FIELDS
from normscope.render.series import (
    render_series_csv,
    render_series_json,
    render_series_markdown,
    render_series_table,
)
from normscope.render.series_text import fmt_step, sample_indices, sparkline
from normscope.scanner import Measured, ScanOptions
from normscope.schema import Band, Executor, Module, Order, Role, StepSource, Thresholds
from normscope.series import SeriesOptions, SeriesProgress, measure_series
from normscope.trends import fit_drift, project_crossing

series_module = importlib.import_module("normscope.series")  # normscope.series: the function

H = 16
FINAL = "model.norm.weight"
ENORM = "model.layers.2.enorm.weight"
HNORM = "model.layers.2.hnorm.weight"
HEAD = "model.layers.2.shared_head.norm.weight"
NORMS_PER_CHECKPOINT = 10  # 4 trunk + final + 5 MTP (input, post-attention, enorm, hnorm, head)
DS_CONFIG = {
    "model_type": "deepseek_v3",
    "architectures": ["DeepseekV3ForCausalLM"],
    "hidden_size": H,
    "num_hidden_layers": 2,
    "num_nextn_predict_layers": 1,
}
Ratio = Callable[[int], float]


def gains_with_ratio(dim: int, ratio: float) -> np.ndarray:
    """A constant float32 vector whose ratio ‖g‖₂/√dim is `ratio`."""
    return np.full(dim, ratio, dtype=np.float32)


def _one(_k: int) -> float:
    return 1.0


def ds_tensors(
    k: int,
    final: Ratio = _one,
    enorm: Ratio = _one,
    mlp: Ratio = _one,
) -> dict[str, np.ndarray]:
    """The tensors of checkpoint number k: each norm a constant vector of the given ratio."""
    tensors = llama_tensors(layers=2, hidden=H, final=gains_with_ratio(H, final(k)))
    for i in range(2):
        tensors[f"model.layers.{i}.post_attention_layernorm.weight"] = gains_with_ratio(
            H, mlp(k) + 0.1 * i
        )
    mtp = "model.layers.2."
    tensors[mtp + "input_layernorm.weight"] = gains_with_ratio(H, 1.0)
    tensors[mtp + "post_attention_layernorm.weight"] = gains_with_ratio(H, 1.0)
    tensors[ENORM] = gains_with_ratio(H, enorm(k))
    tensors[HNORM] = gains_with_ratio(H, 1.0)
    tensors[HEAD] = gains_with_ratio(H, 1.0)
    tensors[mtp + "eh_proj.weight"] = np.zeros((H, 2 * H), np.float32)
    return tensors


def write_run(
    root: Path,
    steps: list[int],
    name: Callable[[int], str] = lambda s: f"checkpoint-{s}",
    **ratios: Ratio,
) -> Path:
    """A run folder: one checkpoint per step, norms as `ds_tensors(k, **ratios)`."""
    for k, step in enumerate(steps):
        write_checkpoint(root / name(step), ds_tensors(k, **ratios), DS_CONFIG)
    return root


def collapse_run(root: Path, n: int = 8) -> Path:
    """Final norm ratio 1.0, 0.9, ... (-0.1 per 1,000 steps): collapse (< 0.4) at step 7000."""
    return write_run(root, [1000 * k for k in range(n)], final=lambda k: 1.0 - 0.1 * k)


def explosion_run(root: Path) -> Path:
    """MTP enorm ratio 1.0, 1.2, ..., 2.0 at steps 0..500: explosion (> 1.8) at step 500."""
    return write_run(root, [100 * k for k in range(6)], enorm=lambda k: 1.0 + 0.2 * k)


def healthy_run(root: Path) -> Path:
    return write_run(root, [0, 500, 1000, 1500])


def broken_run(root: Path) -> Path:
    """Steps 0..4000 with a bad header at 2000, a missing shard at 3000 and a non-checkpoint."""
    write_run(root, [0, 1000, 4000], final=lambda k: 1.0 - 0.05 * k)
    write_raw_safetensors(root / "checkpoint-2000" / "model.safetensors", b'{"a": ', b"")
    broken = write_checkpoint(root / "checkpoint-3000", ds_tensors(0), DS_CONFIG, shards=2)
    (broken / "model-00002-of-00002.safetensors").unlink()
    (root / "checkpoint-5000").mkdir()
    (root / "checkpoint-5000" / "optimizer.pt").write_bytes(b"\0")
    return root


def options(**kw: object) -> SeriesOptions:
    return SeriesOptions(**kw)  # type: ignore[arg-type]


# --- discovery ----------------------------------------------------------------------------------


def _fake_checkpoint(path: Path) -> Path:
    """A folder discovery accepts (it does not parse the file)."""
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"")
    return path


@pytest.mark.parametrize(
    ("names", "steps"),
    [
        (["checkpoint-100", "checkpoint-9", "checkpoint-10"], [9, 10, 100]),
        (["iter_0000100", "iter_0000020", "iter_0001000"], [20, 100, 1000]),
        (["step-50", "step-5", "step-500"], [5, 50, 500]),
        (["step1000-unsharded", "step200", "step30"], [30, 200, 1000]),
        (["global_step7", "global_step70", "global_step12"], [7, 12, 70]),
        (["10", "9", "100"], [9, 10, 100]),
        (
            ["stage1-step1907359-tokens4001B", "stage1-step11931-tokens50B", "step1000-tokens4B"],
            [1000, 11931, 1907359],
        ),
        (["ckpt-1500", "ckpt-500", "ckpt_1000"], [500, 1000, 1500]),
    ],
)
def test_discovery_orders_each_convention_by_step(
    tmp_path: Path, names: list[str], steps: list[int]
) -> None:
    for name in names:
        _fake_checkpoint(tmp_path / name)
    found = discover([tmp_path])
    assert [c.step for c in found.candidates] == steps
    assert [Path(c.path).parent for c in found.candidates] == [tmp_path] * len(steps)
    assert found.steps_from is StepSource.name and not found.skipped


def test_every_convention_is_tested() -> None:
    assert len(CONVENTIONS) == 8
    assert parse_step("iter_0000100") == 100
    assert parse_step("checkpoint-10.safetensors") == 10
    assert parse_step("final") is None and parse_step("model-00001-of-00002") is None
    assert parse_step("run-a_step500", loose=True) == 500
    assert parse_step("export-1200", loose=True) == 1200


def test_discovery_other_orders(tmp_path: Path) -> None:
    for i, name in enumerate(["checkpoint-30", "checkpoint-100", "checkpoint-2"]):
        path = _fake_checkpoint(tmp_path / name)
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    natural = discover([tmp_path], Order.natural)
    assert [Path(c.path).name for c in natural.candidates] == [
        "checkpoint-2",
        "checkpoint-30",
        "checkpoint-100",
    ]
    by_mtime = discover([tmp_path], Order.mtime)
    assert [c.step for c in by_mtime.candidates] == [30, 100, 2]


def test_discovery_ignores_unnamed_folders_with_a_warning(tmp_path: Path) -> None:
    _fake_checkpoint(tmp_path / "checkpoint-1")
    _fake_checkpoint(tmp_path / "final")
    (tmp_path / "logs").mkdir()
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("1")
    found = discover([tmp_path])
    assert [c.step for c in found.candidates] == [1]
    assert any("without a step number" in w and "final" in w for w in found.warnings)


def test_explicit_list_keeps_the_given_order_or_sorts_by_step(tmp_path: Path) -> None:
    paths = [_fake_checkpoint(tmp_path / n) for n in ("ckpt-1000", "ckpt-500", "ckpt-1500")]
    found = discover(paths)  # README: "an explicit list, in that order"
    assert [c.step for c in found.candidates] == [1000, 500, 1500]
    assert found.order is Order.given
    assert any("--order step" in w for w in found.warnings)
    found = discover(paths, Order.step)
    assert [c.step for c in found.candidates] == [500, 1000, 1500]
    assert not any("--order step" in w for w in found.warnings)
    plain = [_fake_checkpoint(tmp_path / n) for n in ("zeta", "alpha", "mid")]
    found = discover(plain)
    assert found.steps_from is StepSource.position
    assert [Path(c.path).name for c in found.candidates] == ["zeta", "alpha", "mid"]
    assert [c.step for c in found.candidates] == [0, 1, 2]
    nested_run = tmp_path / "other-run"
    _fake_checkpoint(nested_run / "checkpoint-5")
    found = discover([paths[0], nested_run])
    assert "a folder of checkpoints" in found.skipped[0].reason
    mixed = discover([paths[0], plain[0]])
    assert mixed.steps_from is StepSource.position
    assert any("steps are the positions" in w for w in mixed.warnings)


def test_explicit_file_takes_the_step_of_its_folder(tmp_path: Path) -> None:
    path = _fake_checkpoint(tmp_path / "checkpoint-700") / "model.safetensors"
    other = _fake_checkpoint(tmp_path / "checkpoint-900") / "model.safetensors"
    assert [c.step for c in discover([other, path], Order.step).candidates] == [700, 900]
    assert [c.step for c in discover([other, path]).candidates] == [900, 700]


def test_explicit_hub_revisions_take_the_step_of_the_revision() -> None:
    repo = "allenai/OLMo-2-0425-1B"
    revisions = ["stage1-step1907359-tokens4001B", "stage1-step11931-tokens50B"]
    specs = [f"{repo}@{r}" for r in revisions] + ["EleutherAI/pythia-70m@step3000"]
    found = discover(specs, Order.step)
    assert [c.step for c in found.candidates] == [3000, 11931, 1907359]
    assert found.candidates[1].path == f"{repo}@{revisions[1]}" and not found.skipped


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.mkdir(), "empty folder"),
        (lambda p: _files(p, "optimizer.pt", "scheduler.pt", "trainer_state.json"), "optimizer"),
        # DCP saves are checkpoints (tests/test_dcp.py); one without .metadata is being written.
        (lambda p: _files(p, "__0_0.distcp", "__1_0.distcp"), "DCP save without .metadata yet"),
        (
            lambda p: _files(p, "config.yaml", "model_and_optim/__0_0.distcp"),
            "DCP save in 'model_and_optim' without .metadata",
        ),
        (lambda p: _files(p, "a/b/.metadata", "a/b/__0_0.distcp"), "DCP save in 'a/b': pass"),
        (lambda p: _files(p, "pytorch_model.bin", "config.json"), "PyTorch pickle weights"),
        (lambda p: _files(p, "mp_rank_00_model_states.pt"), "DeepSpeed"),
        (lambda p: _files(p, "mp_rank_00/model_optim_rng.pt"), "Megatron legacy"),
        (lambda p: _files(p, "model/model.safetensors"), "in 'model': pass that folder"),
        (lambda p: _files(p, "notes.md"), "no .safetensors files (notes.md)"),
    ],
)
def test_non_checkpoints_are_skipped_with_the_reason(
    tmp_path: Path, make: Callable[[Path], object], reason: str
) -> None:
    _fake_checkpoint(tmp_path / "checkpoint-1")
    make(tmp_path / "checkpoint-2")
    found = discover([tmp_path])
    assert [c.step for c in found.candidates] == [1]
    (skip,) = found.skipped
    assert skip.step == 2 and reason in skip.reason


def _files(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"\0")


def test_duplicate_steps_keep_the_first(tmp_path: Path) -> None:
    _fake_checkpoint(tmp_path / "step100")
    _fake_checkpoint(tmp_path / "step100-unsharded")
    found = discover([tmp_path])
    assert [Path(c.path).name for c in found.candidates] == ["step100"]
    assert "duplicate step 100" in found.skipped[0].reason


def test_discovery_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        discover([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match=r"no checkpoints in .*empty folder") as info:
        discover([tmp_path / "empty"])
    assert info.value.hint and "checkpoint-<step>" in info.value.hint
    assert why_not_checkpoint(tmp_path / "x.txt") == "no such file or directory"


# --- trends: hand computations ------------------------------------------------------------------


def test_fit_drift_matches_polyfit_over_the_last_five() -> None:
    steps = [0, 100, 250, 400, 600, 700, 1000]
    ratios = [1.0, 0.99, 0.97, 0.96, 0.90, 0.91, 0.85]
    expected = np.polyfit(steps[-5:], ratios[-5:], 1)[0] * 1000
    assert fit_drift(steps, ratios) == pytest.approx(expected, rel=1e-12)
    assert fit_drift([5], [1.0]) is None
    assert fit_drift([5, 5], [1.0, 0.9]) is None
    assert fit_drift([0, 1], [1.0, math.nan]) is None


def test_project_crossing() -> None:
    th = Thresholds()
    assert project_crossing(4000, 0.6, -0.1, th) == (6000, Band.collapse)
    assert project_crossing(100, 1.5, 0.5, th) == (700, Band.explosion)
    assert project_crossing(100, 1.0, 0.0, th) == (None, None)
    assert project_crossing(100, 1.0, None, th) == (None, None)
    assert project_crossing(100, 0.3, 0.1, th) == (None, None)  # already out of band
    # Beyond the horizon: no projection.
    assert project_crossing(4000, 0.6, -0.1, th, horizon=1999) == (None, None)
    assert project_crossing(4000, 0.6, -0.1, th, horizon=2000) == (6000, Band.collapse)


def test_collapse_run_trend(tmp_path: Path) -> None:
    result = measure_series([collapse_run(tmp_path / "run")])
    assert [c.step for c in result.checkpoints] == [1000 * k for k in range(8)]
    assert len(result.rows) == 8 * NORMS_PER_CHECKPOINT
    final = result.summary.headline[0]
    assert final.name == FINAL and final.role is Role.final and not final.aggregate
    assert final.first_out_of_band_step == 7000
    assert final.band_last is Band.collapse
    steps = [c.step for c in result.checkpoints]
    ratios = [r.norm.ratio for r in result.rows if r.norm.name == FINAL]
    expected = np.polyfit(steps[-5:], ratios[-5:], 1)[0] * 1000
    assert final.drift_per_1k_steps == pytest.approx(expected, rel=1e-9)
    assert final.drift_per_1k_steps == pytest.approx(-0.1, rel=1e-6)
    assert final.projected_crossing_step is None  # already collapsed
    assert result.summary.gated_out_of_band == 1 and result.summary.latest_step == 7000


def test_projected_crossing_before_collapse(tmp_path: Path) -> None:
    result = measure_series([collapse_run(tmp_path / "run", n=5)])  # ratios 1.0 ... 0.6
    final = result.summary.headline[0]
    assert final.first_out_of_band_step is None and final.band_last is Band.shrink
    slope = np.polyfit([0, 1000, 2000, 3000, 4000], final.ratios, 1)[0]
    expected = round(4000 + (0.4 - final.ratio_last) / slope)
    assert final.projected_crossing_step == expected
    assert abs(expected - 6000) <= 1
    assert final.projected_band is Band.collapse
    text = "\n".join(_table_lines(result, 100))
    assert "final norm: 0.60 → collapse at ≈ step 6k if the trend holds" in text


def test_explosion_run_trend(tmp_path: Path) -> None:
    result = measure_series([explosion_run(tmp_path / "run")])
    by_name = {t.name: t for t in result.summary.headline}
    enorm = by_name[ENORM]
    assert enorm.role is Role.mtp_embedding and enorm.mtp_depth == 1
    assert enorm.first_out_of_band_step == 500 and enorm.band_last is Band.explosion
    assert enorm.drift_per_1k_steps == pytest.approx(2.0, rel=1e-6)
    assert by_name[FINAL].first_out_of_band_step is None
    assert by_name[FINAL].drift_per_1k_steps == 0.0
    assert by_name[FINAL].projected_crossing_step is None


def test_headline_order_and_median_pseudo_norms(tmp_path: Path) -> None:
    result = measure_series([write_run(tmp_path / "run", [0, 10, 20], mlp=lambda k: 0.5 + k)])
    names = [t.name for t in result.summary.headline]
    assert names == [
        FINAL,
        ENORM,
        HNORM,
        HEAD,
        "median(attn_input)",
        "median(mlp_input)",
        "median(mtp:attn_input)",
        "median(mtp:mlp_input)",
    ]
    mlp = result.summary.headline[5]
    assert mlp.aggregate and mlp.count == 2
    assert mlp.ratios == pytest.approx((0.55, 1.55, 2.55))  # median of k + 0.5 and k + 0.6
    assert mlp.first_out_of_band_step == 20


def test_healthy_run(tmp_path: Path) -> None:
    result = measure_series([healthy_run(tmp_path / "run")])
    assert all(t.first_out_of_band_step is None for t in result.summary.headline)
    assert all(t.projected_crossing_step is None for t in result.summary.headline)
    assert all(t.drift_per_1k_steps == 0.0 for t in result.summary.headline)
    assert not result.skipped and not result.warnings


def test_rel_change_against_the_previous_checkpoint(tmp_path: Path) -> None:
    result = measure_series([collapse_run(tmp_path / "run", n=3)])
    final = [r for r in result.rows if r.norm.name == FINAL]
    assert final[0].rel_change is None
    # constant vectors: |0.8 - 0.9| / 0.9
    assert final[2].rel_change == pytest.approx(0.1 / 0.9, rel=1e-6)
    assert all(r.rel_change == 0.0 for r in result.rows if r.norm.name == HNORM and r.step)


def test_relative_change_is_the_one_of_diff() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        a, b = rng.normal(1, 0.3, 64), rng.normal(1, 0.3, 64)
        assert relative_change(a, b) == compare_gains(a, b)[0]
    zeros = np.zeros(4)
    assert relative_change(zeros, zeros) == compare_gains(zeros, zeros)[0] == 0.0
    assert relative_change(zeros, np.ones(4)) == compare_gains(zeros, np.ones(4))[0] == math.inf


def test_broken_checkpoints_are_skipped(tmp_path: Path) -> None:
    result = measure_series([broken_run(tmp_path / "run")])
    assert [c.step for c in result.checkpoints] == [0, 1000, 4000]
    reasons = {s.step: s.reason for s in result.skipped}
    assert set(reasons) == {2000, 3000, 5000}
    assert "invalid safetensors header JSON" in reasons[2000]
    assert "model-00002-of-00002.safetensors' but it is missing" in reasons[3000]
    assert "only optimizer/trainer state" in reasons[5000]
    for step in (2000, 3000, 5000):
        assert any(w.startswith("skipped ") and f"checkpoint-{step}" in w for w in result.warnings)
    # rel_change of 4000 is measured against 1000, the last good checkpoint
    final = [r for r in result.rows if r.norm.name == FINAL]
    assert final[2].rel_change == pytest.approx(0.05 / 0.95, rel=1e-5)


def test_strict_and_nothing_usable(tmp_path: Path) -> None:
    run = broken_run(tmp_path / "run")
    with pytest.raises(SourceError, match="--strict"):
        measure_series([run], options(strict=True))
    only_bad = tmp_path / "bad"
    (only_bad / "checkpoint-1").mkdir(parents=True)
    write_raw_safetensors(only_bad / "checkpoint-2" / "model.safetensors", b"{", b"")
    with pytest.raises(SourceError, match=r"no usable safetensors checkpoint .*2 skipped"):
        measure_series([only_bad])


@pytest.mark.parametrize("executor", [Executor.process, Executor.thread])
def test_pools_give_the_serial_result(tmp_path: Path, executor: Executor) -> None:
    run = broken_run(tmp_path / "run")
    serial = measure_series([run], options(executor=Executor.serial))
    pooled = measure_series([run], options(executor=executor, jobs=2))
    assert pooled.io.executor is executor and pooled.io.jobs == 2
    assert serial.io.executor is Executor.serial
    assert pooled.rows == serial.rows and pooled.skipped == serial.skipped
    assert pooled.summary == serial.summary


def test_auto_starts_a_pool_only_when_it_pays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = broken_run(tmp_path / "run")
    assert measure_series([run], options(jobs=2)).io.executor is Executor.serial
    monkeypatch.setattr(series_module, "POOL_COST", series_module.PoolCost(0.0, 0.0, 0.0))
    # the machine's load unknown (as off Linux): the pool as before (busy machines: below)
    monkeypatch.setattr(series_module, "_cpu_sample", lambda: None)
    pooled = measure_series([collapse_run(tmp_path / "c", n=4)], options(jobs=2))
    assert pooled.io.executor is Executor.process and len(pooled.checkpoints) == 4
    assert measure_series([run], options(jobs=1)).io.executor is Executor.serial


@pytest.mark.parametrize(
    ("seconds_per_scan", "remaining", "pays"),
    [
        # benchmarks/series_pool.py on this 2-core machine (RESULTS "Round 3d"):
        # the pool of two measured clearly slower (>= 1.19x) or faster (<= 0.78x) than a loop.
        (0.0078, 8, False),  # 8 tiny checkpoints: pool 3.9x the loop
        (0.0071, 62, False),  # 64 tiny: 1.19x
        (0.0535, 4, False),  # 4 Llama-3-70B-sized: 1.77x
        (0.23, 4, True),  # 4 DeepSeek-V3-sized: 0.78x
        (0.22, 6, True),  # 8 DeepSeek-V3-sized, after two inline scans: 0.68x (8)
        (5.0, 1, False),  # one left: a pool cannot split it, however long
        (1.0, 0, False),
    ],
)
def test_the_pool_cost_model_agrees_with_the_measured_series(
    seconds_per_scan: float, remaining: int, pays: bool
) -> None:
    assert series_module.POOL_COST.pays(seconds_per_scan, remaining) is pays


def test_auto_pools_a_series_of_large_checkpoints_from_the_measured_scans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decided by the scans' measured cost: six checkpoints whose inline scans take 0.3 s more
    (`measure` slowed here; the pool's workers run the real one) go to a pool after one or two
    inline, the
    same six at their own few milliseconds stay serial."""
    import time

    run = collapse_run(tmp_path / "c", n=6)
    real = series_module.measure
    monkeypatch.setattr(series_module, "_cpu_sample", lambda: None)
    for extra, expected in ((0.3, Executor.process), (0.0, Executor.serial)):

        def slowed(path: str, options: ScanOptions, extra: float = extra) -> Measured:
            time.sleep(extra)
            return real(path, options)

        monkeypatch.setattr(series_module, "measure", slowed)
        result = measure_series([run], options(jobs=2))
        assert result.io.executor is expected and len(result.checkpoints) == 6


@pytest.mark.parametrize(
    ("idle_share", "executor", "jobs"),
    [(0.1, Executor.serial, 1), (0.5, Executor.process, 2), (0.9, Executor.process, 2)],
)
def test_auto_stays_serial_where_no_core_stood_idle(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    idle_share: float,
    executor: Executor,
    jobs: int,
) -> None:
    """The pool is worth it only with a core to run on: on a 2-core machine, `idle_share` of the
    CPU time idle while the first scans ran inline (0.1: other processes and this one kept both
    busy; 0.5: one core idle)."""
    monkeypatch.setattr(series_module, "POOL_COST", series_module.PoolCost(0.0, 0.0, 0.0))
    monkeypatch.setattr(series_module.os, "cpu_count", lambda: 2)
    clock = iter(range(1, 1000))

    def sample() -> tuple[float, float]:
        t = 10.0 * next(clock)  # 10 s of CPU per sample, `idle_share` of it idle
        return t * (1 - idle_share), t * idle_share

    monkeypatch.setattr(series_module, "_cpu_sample", sample)
    result = measure_series([collapse_run(tmp_path / "c", n=4)], options(jobs=2))
    assert (result.io.executor, result.io.jobs) == (executor, jobs)
    assert len(result.checkpoints) == 4
    assert series_module.free_cores((0.0, 0.0)) == pytest.approx(2 * idle_share)


def test_nonfinite_and_absent_norms(tmp_path: Path) -> None:
    run = tmp_path / "run"
    plain = llama_tensors(layers=2, hidden=H)  # step 0: no MTP module yet
    write_checkpoint(run / "checkpoint-0", plain, {**DS_CONFIG, "num_nextn_predict_layers": 0})
    write_run(run, [100, 200], final=lambda k: [1.0, math.nan][k])
    result = measure_series([run])
    by_name = {t.name: t for t in result.summary.headline}
    final, enorm = by_name[FINAL], by_name[ENORM]
    assert final.band_last is Band.nonfinite and final.first_out_of_band_step == 200
    assert final.drift_per_1k_steps is None and final.projected_crossing_step is None
    assert enorm.ratios == (None, 1.0, 1.0) and enorm.ratio_first == 1.0
    data = json.loads(render_series_json(result))
    assert data["summary"]["headline"][0]["ratios"][2] is None  # NaN is written as null
    lines = _table_lines(result, 100)
    assert any("nan" in line for line in lines)
    from normscope.render.plot import PlotFormat, render_plot

    assert render_plot(result, PlotFormat.svg).startswith(b"<?xml")


def test_progress_events(tmp_path: Path) -> None:
    events: list[SeriesProgress] = []
    measure_series([broken_run(tmp_path / "run")], progress=events.append)
    assert [e.done for e in events] == list(range(6))
    assert {e.total for e in events} == {5}
    assert events[0].bytes_read == 0 < events[-1].bytes_read
    assert all(a.bytes_read <= b.bytes_read for a, b in itertools.pairwise(events))


def test_to_frame_is_tidy(tmp_path: Path) -> None:
    result = measure_series([collapse_run(tmp_path / "run", n=3)])
    frame = result.to_frame()
    assert list(frame.columns) == ["checkpoint", "step", *NORM_FIELDS, "rel_change"]
    assert len(frame) == 3 * NORMS_PER_CHECKPOINT
    assert frame["step"].tolist()[::NORMS_PER_CHECKPOINT] == [0, 1000, 2000]
    pivot = frame.pivot(index="step", columns="name", values="ratio")
    assert pivot[FINAL].tolist() == pytest.approx([1.0, 0.9, 0.8])


def test_two_hundred_checkpoints(tmp_path: Path) -> None:
    """Scale: 200 small checkpoints (time it with `pytest --durations`)."""
    run = tmp_path / "run"
    tensors = llama_tensors(layers=2, hidden=H)
    config = {"model_type": "llama", "hidden_size": H, "num_hidden_layers": 2}
    for k in range(200):
        tensors["model.norm.weight"] = gains_with_ratio(H, 1.0 - 0.002 * k)
        write_checkpoint(run / f"checkpoint-{10 * k}", tensors, config)
    result = measure_series([run])
    assert len(result.checkpoints) == 200 and result.checkpoints[-1].step == 1990
    final = result.summary.headline[0]
    assert final.drift_per_1k_steps == pytest.approx(-0.2, rel=1e-4)
    lines = _table_lines(result, 100)
    assert any("(12 of 200 checkpoints, evenly spaced)" in line for line in lines)
    assert max(len(line) for line in lines) <= 100


# --- renderers ----------------------------------------------------------------------------------


def _table_lines(result: object, width: int, show_all: bool = False) -> list[str]:
    from rich.console import Console

    with open(os.devnull, "w") as sink:
        console = Console(record=True, width=width, color_system=None, file=sink)
        for r in render_series_table(result, show_all, width):  # type: ignore[arg-type]
            console.print(r)
    return console.export_text().splitlines()


@pytest.mark.parametrize("width", [80, 100, 160])
def test_table_fits_the_width(tmp_path: Path, width: int) -> None:
    result = measure_series([broken_run(tmp_path / "run")])
    lines = _table_lines(result, width, show_all=True)
    assert max(len(line) for line in lines) <= width
    text = "\n".join(lines)
    assert not re.search(r"\S…", text)  # only the head of long names is cut, never a number
    for expected in ("ratio ‖g‖/√d by step", "trend", "outlook", "every norm", "skipped (3)"):
        assert expected in text


def test_json(tmp_path: Path) -> None:
    run = broken_run(tmp_path / "run")
    data = json.loads(render_series_json(measure_series([run])))
    assert list(data)[:2] == ["schema_version", "normscope_version"]
    for key in ("source", "checkpoints", "skipped", "rows", "summary", "warnings"):
        assert key in data
    assert data["source"] == [str(run)]
    assert list(data["checkpoints"][0]) == ["path", "step", "bytes_read", "seconds"]
    assert [s["step"] for s in data["skipped"]] == [5000, 2000, 3000]
    assert list(data["rows"][0]) == ["checkpoint", "step", *NORM_FIELDS, "rel_change"]
    assert len(data["rows"]) == 3 * NORMS_PER_CHECKPOINT
    head = data["summary"]["headline"][0]
    assert list(head)[:10] == [
        "name",
        "role",
        "module",
        "ratio_first",
        "ratio_last",
        "band_last",
        "first_out_of_band_step",
        "drift_per_1k_steps",
        "projected_crossing_step",
        "projected_band",
    ]


def test_csv(tmp_path: Path) -> None:
    import io

    import pandas as pd

    result = measure_series([collapse_run(tmp_path / "run", n=3)])
    frame = pd.read_csv(io.StringIO(render_series_csv(result)))
    assert list(frame.columns) == ["checkpoint", "step", *NORM_FIELDS, "rel_change"]
    assert len(frame) == 3 * NORMS_PER_CHECKPOINT
    assert frame["rel_change"].isna().sum() == NORMS_PER_CHECKPOINT  # the first checkpoint


def test_markdown(tmp_path: Path) -> None:
    result = measure_series([broken_run(tmp_path / "run")])
    text = render_series_markdown(result, show_all=True)
    assert text.startswith("### normscope series")
    for expected in ("| `model.norm.weight` |", "#### Ratio ‖g‖/√d by step", "#### Skipped"):
        assert expected in text
    assert "#### Every norm at step 4000" in text


def test_sparkline_and_helpers() -> None:
    assert sparkline([0.0, 0.5, 1.0], 10) == "▁▅█"
    assert set(sparkline([1.0, 1.001, 0.999, 1.0], 10)) <= {"▄", "▅"}  # noise draws flat
    assert sparkline([1.0, None, math.nan], 10)[1:] == " ×"
    assert len(sparkline(list(np.linspace(0, 1, 200)), 24)) == 24
    assert fmt_step(950) == "950" and fmt_step(48000) == "48k" and fmt_step(48500) == "48.5k"
    assert fmt_step(1907359) == "1.91M" and fmt_step(999999) == "1M"
    assert sample_indices(200, 12)[0] == 0 and sample_indices(200, 12)[-1] == 199
    assert len(sample_indices(200, 12)) == 12 and sample_indices(3, 12) == [0, 1, 2]


# --- CLI ----------------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_default_table(tmp_path: Path) -> None:
    result = runner.invoke(app, ["series", str(collapse_run(tmp_path / "run", n=5))])
    assert result.exit_code == 0, result.output
    assert "final norm: 0.60 → collapse at ≈ step 6k if the trend holds" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize("fmt", ["json", "csv", "markdown", "table"])
def test_cli_formats_and_output_file(tmp_path: Path, fmt: str) -> None:
    run = broken_run(tmp_path / "run")
    out = tmp_path / f"out.{fmt}"
    result = runner.invoke(app, ["series", str(run), "--format", fmt, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr.count("Warning: skipped") == 3
    mask = os.umask(0o022)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask  # like open(), not mkstemp's 0600
    text = out.read_text()
    if fmt == "json":
        assert len(json.loads(text)["rows"]) == 3 * NORMS_PER_CHECKPOINT
    elif fmt == "csv":
        assert text.startswith("checkpoint,step,name,")
    else:
        assert "model.norm" in text


def test_cli_quiet(tmp_path: Path) -> None:
    result = runner.invoke(app, ["series", str(broken_run(tmp_path / "run")), "-q", "-f", "json"])
    assert result.exit_code == 0 and result.stderr == ""


def test_cli_explicit_list(tmp_path: Path) -> None:
    run = collapse_run(tmp_path / "run", n=3)
    paths = [str(run / f"checkpoint-{s}") for s in (2000, 0, 1000)]
    result = runner.invoke(app, ["series", *paths, "-f", "json", "--order", "step"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [c["step"] for c in data["checkpoints"]] == [0, 1000, 2000]
    given = runner.invoke(app, ["series", *paths, "-f", "json"])  # in the order given
    assert [c["step"] for c in json.loads(given.stdout)["checkpoints"]] == [2000, 0, 1000]
    assert json.loads(given.stdout)["order"] == "given"
    assert "--order step" in given.stderr


def test_cli_gate_out_of_band(tmp_path: Path) -> None:
    run = collapse_run(tmp_path / "run")
    result = runner.invoke(app, ["series", str(run), "--fail-on", "out-of-band", "-f", "json"])
    assert result.exit_code == 1
    json.loads(result.stdout)  # the report is still produced
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("FAIL: model.norm.weight is out of band at step 7000 (collapse")
    healthy = runner.invoke(
        app, ["series", str(healthy_run(tmp_path / "ok")), "--fail-on", "out-of-band"]
    )
    assert healthy.exit_code == 0
    # the scope widens the gate: layer 0's mlp input norm is at 0.6, inside the band
    wide = runner.invoke(
        app, ["series", str(run), "--fail-on", "out-of-band", "--scope", "role=mlp_input"]
    )
    assert wide.exit_code == 0


def test_cli_gate_max_drift(tmp_path: Path) -> None:
    run = explosion_run(tmp_path / "run")  # enorm 1.8 -> 2.0: 11.1 %
    result = runner.invoke(app, ["series", str(run), "--max-drift", "0.1", "-q"])
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line == (f"FAIL: {ENORM} moved 11.1% between step 400 and 500 (limit 10%)")
    assert runner.invoke(app, ["series", str(run), "--max-drift", "0.12"]).exit_code == 0


def test_cli_max_drift_needs_two_checkpoints(tmp_path: Path) -> None:
    run = healthy_run(tmp_path / "run")
    result = runner.invoke(app, ["series", str(run / "checkpoint-0"), "--max-drift", "0.1"])
    assert result.exit_code == 2  # the only gate asked for judged nothing
    assert "a series of one checkpoint" in result.stderr
    assert "Error: --max-drift needs two checkpoints: not checked" in result.stderr
    both = ["series", str(run / "checkpoint-0"), "--max-drift", "0.1", "--fail-on", "out-of-band"]
    result = runner.invoke(app, both)
    assert result.exit_code == 0  # the band gate judged the checkpoint
    assert "Warning: --max-drift needs two checkpoints: not checked" in result.stderr


def test_cli_strict_and_no_checkpoints(tmp_path: Path) -> None:
    run = broken_run(tmp_path / "run")
    strict = runner.invoke(app, ["series", str(run), "--strict", "-o", str(tmp_path / "x.json")])
    assert strict.exit_code == 2
    assert strict.stderr.startswith("Error: --strict: checkpoint skipped")
    assert not (tmp_path / "x.json").exists()
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(app, ["series", str(tmp_path / "empty")])
    assert empty.exit_code == 2 and "no checkpoints in" in empty.stderr
    missing = runner.invoke(app, ["series", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no such file or directory" in missing.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--jobs", "0"],
        ["--low", "2", "--high", "1"],
        ["--max-drift", "-1"],
        ["--order", "size"],
        ["--format", "yaml"],
        ["--scope", "layer>=x"],
        ["--plot", "out.gif"],
        ["--plot", "out.png", "--plot-role", "bogus"],
        ["--plot", "no-such-dir/out.png"],
    ],
)
def test_cli_bad_arguments_exit_2(tmp_path: Path, args: list[str]) -> None:
    run = healthy_run(tmp_path / "run")
    result = runner.invoke(app, ["series", *([str(run)] if args else []), *args])
    assert result.exit_code == 2, result.output


def test_cli_progress_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    with cli_output.series_progress(quiet=False) as progress:
        assert progress is None  # pytest's stderr is no terminal
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    with cli_output.series_progress(quiet=True) as progress:
        assert progress is None
    with cli_output.series_progress(quiet=False) as progress:
        assert progress is not None
        progress(SeriesProgress(0, 2, 0, ""))
        progress(SeriesProgress(1, 2, 1234, "a"))


def test_bad_scope_fails_before_reading(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        measure_series([tmp_path / "nope"], options(scan=ScanOptions(scope="bogus")))


def test_a_near_flat_norm_gets_no_far_away_projection() -> None:
    from normscope.trends import make_trend

    th = Thresholds()
    steps = [0, 1000, 2000, 3000, 4000]
    flat = make_trend(
        "model.norm.weight",
        Role.final,
        Module.main,
        None,
        [1.0, 1.0001, 0.9999, 1.0002, 1.0003],
        steps,
        th,
    )
    assert flat.drift_per_1k_steps is not None and flat.drift_per_1k_steps > 0
    assert (flat.projected_crossing_step, flat.projected_band) == (None, None)
    falling = make_trend(
        "model.norm.weight", Role.final, Module.main, None, [1.0, 0.9, 0.8, 0.7, 0.6], steps, th
    )
    # 0.6 falling 0.1 per 1k steps reaches 0.4 at step 6000, within 3 x 4000 steps.
    assert (falling.projected_crossing_step, falling.projected_band) == (6000, Band.collapse)


def test_a_gate_never_judges_an_older_checkpoint_when_the_latest_is_broken(tmp_path: Path) -> None:
    run = healthy_run(tmp_path / "run")
    write_raw_safetensors(run / "checkpoint-2000" / "model.safetensors", b'{"a": ', b"")
    # Without a gate: a report of the readable checkpoints, with a warning.
    plain = runner.invoke(app, ["series", str(run), "-f", "json"])
    assert plain.exit_code == 0
    assert "skipped" in plain.stderr and "checkpoint-2000" in plain.stderr
    # With a gate on "the latest checkpoint": exit 2, nothing on stdout.
    for gate in (["--fail-on", "out-of-band"], ["--max-drift", "0.5"]):
        result = runner.invoke(app, ["series", str(run), "-f", "json", *gate])
        assert result.exit_code == 2, result.stderr
        assert result.stdout == ""
        assert "the latest checkpoint could not be read" in result.stderr
        assert "checkpoint-2000" in result.stderr and "step 1500" in result.stderr
