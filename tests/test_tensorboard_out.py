"""`series --tensorboard OUTDIR` (issue 27): each event at its checkpoint's time, a rerun
replacing its own events, per-role histograms of γ beside the scalars; read back with the
tensorboard package's own reader, the numbers against the files as safetensors reads them."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import REPO_ROOT
from safetensors.torch import load_file
from tensorboard.backend.event_processing import event_accumulator
from typer.testing import CliRunner

from normscope.cli import app

FIX = REPO_ROOT / "fixtures"
WRITTEN = {0: 1_700_000_000.0, 100: 1_700_003_600.0, 195: 1_700_007_200.0}
"""When each checkpoint was saved (set as its files' mtime)."""
ATTN = ("attn_input", "main")


@pytest.fixture
def run(tmp_path: Path) -> Path:
    for step, source in ((0, "deepseek_v3-init"), (100, "deepseek_v3-trained"),
                         (195, "deepseek_v3-trained")):  # fmt: skip
        folder = tmp_path / "run" / f"checkpoint-{step}"
        shutil.copytree(FIX / source, folder)
        for f in folder.iterdir():
            os.utime(f, (WRITTEN[step] - 60, WRITTEN[step] - 60))
        os.utime(folder / "config.json", (WRITTEN[step], WRITTEN[step]))  # the newest file
    return tmp_path / "run"


def series(run: Path, outdir: Path) -> dict:
    result = CliRunner().invoke(
        app, ["series", str(run), "-j", "1", "-f", "json", "--tensorboard", str(outdir)]
    )
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def read(outdir: Path) -> event_accumulator.EventAccumulator:
    acc = event_accumulator.EventAccumulator(
        str(outdir), size_guidance={event_accumulator.SCALARS: 0, event_accumulator.HISTOGRAMS: 0}
    )
    acc.Reload()
    return acc


def test_wall_time_is_the_checkpoints_time(run: Path, tmp_path: Path) -> None:
    series(run, tmp_path / "tb")
    events = read(tmp_path / "tb").Scalars("normscope/band/high")
    assert [(e.step, e.wall_time) for e in events] == sorted(WRITTEN.items())


def test_trainer_state_time_wins(run: Path, tmp_path: Path) -> None:
    state = run / "checkpoint-100" / "trainer_state.json"
    state.write_text('{"global_step": 100}')
    os.utime(state, (1_600_000_000.0, 1_600_000_000.0))
    series(run, tmp_path / "tb")
    events = read(tmp_path / "tb").Scalars("normscope/band/high")
    assert [e.wall_time for e in events] == [WRITTEN[0], 1_600_000_000.0, WRITTEN[195]]


def test_a_rerun_replaces_its_own_events(run: Path, tmp_path: Path) -> None:
    outdir = tmp_path / "tb"
    outdir.mkdir()
    foreign = outdir / "events.out.tfevents.1.host.1"  # a trainer's own file: kept
    foreign.write_bytes(b"")
    series(run, outdir)
    first = sorted(p.name for p in outdir.iterdir())
    series(run, outdir)
    second = sorted(p.name for p in outdir.iterdir())
    assert len(first) == len(second) == 2 and foreign.name in second
    assert first != second  # the new file replaced the old one
    acc = read(outdir)
    assert [e.step for e in acc.Scalars("normscope/ratio/final/-/model.norm")] == [0, 100, 195]
    assert [h.step for h in acc.Histograms("normscope/gamma/final")] == [0, 100, 195]


def test_histograms_of_gamma_per_role(run: Path, tmp_path: Path) -> None:
    report = series(run, tmp_path / "tb")
    acc = read(tmp_path / "tb")
    tags = set(acc.Tags()["histograms"])
    roles = {(r["module"], r["role"]) for r in report["rows"]}
    assert tags == {
        f"normscope/gamma/{'mtp/' if module == 'mtp' else ''}{role}" for module, role in roles
    }
    # independently: the stored gains of the trained checkpoint, read by safetensors
    tensors: dict[str, Any] = {}
    for shard in sorted((run / "checkpoint-195").glob("*.safetensors")):
        tensors |= load_file(str(shard))
    rows = report["rows"]
    names = [r["name"] for r in rows if r["step"] == 195 and (r["role"], r["module"]) == ATTN]
    gamma = np.concatenate([tensors[n].double().numpy().reshape(-1) for n in names])
    last = acc.Histograms("normscope/gamma/attn_input")[-1]
    assert last.step == 195
    h = last.histogram_value
    assert h.num == gamma.size
    assert (h.min, h.max) == pytest.approx((gamma.min(), gamma.max()))
    assert h.sum == pytest.approx(gamma.sum()) and h.sum_squares == pytest.approx(gamma @ gamma)
    assert sum(h.bucket) == gamma.size
    counts, edges = np.histogram(gamma, bins=30)
    assert list(h.bucket) == counts.tolist() and list(h.bucket_limit) == pytest.approx(edges[1:])
