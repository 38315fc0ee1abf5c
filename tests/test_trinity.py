"""The stability trinity and TensorBoard both ways (issue 14): `series --events` reads losses
from event files written by the tensorboard package itself; `--tensorboard OUTDIR` writes the norm
series, read back here with the tensorboard package's own reader."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from typer.testing import CliRunner

from normscope.cli import app

pytest.importorskip("tensorboard", reason="normscope[tensorboard] is not installed")
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

runner = CliRunner()
FIX = REPO_ROOT / "fixtures"


def main_loss(step: int) -> float:
    return 3.0 - step / 100


def mtp_loss(step: int) -> float:
    return 3.5 - step / 200


def write_events(logdir: Path, tags: tuple[str, str] = ("lm loss", "mtp_1 loss")) -> None:
    """Megatron-style scalars every 10 steps, written by the tensorboard package."""
    writer = EventFileWriter(str(logdir))
    for step in range(0, 201, 10):
        values = [
            summary_pb2.Summary.Value(tag=tags[0], simple_value=main_loss(step)),
            summary_pb2.Summary.Value(tag=tags[1], simple_value=mtp_loss(step)),
            summary_pb2.Summary.Value(tag="learning-rate", simple_value=1e-4),
        ]
        event = event_pb2.Event(
            step=step, wall_time=1.0 + step, summary=summary_pb2.Summary(value=values)
        )
        writer.add_event(event)
    writer.close()


@pytest.fixture
def run(tmp_path: Path) -> Path:
    shutil.copytree(FIX / "deepseek_v3-init", tmp_path / "run" / "checkpoint-0")
    shutil.copytree(FIX / "deepseek_v3-trained", tmp_path / "run" / "checkpoint-100")
    shutil.copytree(FIX / "deepseek_v3-trained", tmp_path / "run" / "checkpoint-195")
    write_events(tmp_path / "run" / "tb")
    return tmp_path / "run"


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "100"})
    return result.exit_code, result.stdout, result.stderr


def test_events_join_the_losses_to_the_checkpoints(run: Path) -> None:
    code, stdout, stderr = invoke(
        "series", str(run), "-j", "1", "--events", str(run / "tb"), "-f", "json"
    )
    assert code == 0, stderr
    tri = json.loads(stdout)["trinity"]
    assert (tri["main_tag"], tri["mtp_tag"]) == ("lm loss", "mtp_1 loss")
    assert [r["step"] for r in tri["rows"]] == [0, 100, 195]
    # The last value logged at or before each checkpoint's step: 195 takes step 190's loss.
    for row, logged in zip(tri["rows"], (0, 100, 190), strict=True):
        assert row["main_loss"] == pytest.approx(main_loss(logged))
        assert row["mtp_loss"] == pytest.approx(mtp_loss(logged))
        assert row["gap"] == pytest.approx(mtp_loss(logged) - main_loss(logged))
    assert tri["rows"][0]["final_ratio"] == pytest.approx(1.0, abs=1e-3)
    assert tri["main_trend"] < 0 < tri["gap_trend"]  # the main loss falls faster: the gap widens


def test_trinity_in_the_table_markdown_and_html(run: Path, tmp_path: Path) -> None:
    args = ["series", str(run), "-j", "1", "--events", str(run / "tb")]
    code, stdout, _ = invoke(*args)
    assert code == 0 and "stability trinity" in stdout and "main loss" in stdout
    assert "lm loss" in stdout
    _, markdown, _ = invoke(*args, "-f", "markdown")
    assert "#### Stability trinity" in markdown
    code, _, stderr = invoke(*args, "-f", "html", "-o", str(tmp_path / "s.html"))
    html = (tmp_path / "s.html").read_text(encoding="utf-8")
    assert code == 0, stderr
    assert 'id="trinity-loss"' in html and 'id="trinity"' in html


def test_tags_are_configurable_and_a_missing_tag_is_said(run: Path, tmp_path: Path) -> None:
    logdir = tmp_path / "other"
    write_events(logdir, ("train/loss_main", "train/loss_mtp"))
    code, stdout, stderr = invoke(
        "series", str(run), "-j", "1", "--events", str(logdir), "-f", "json"
    )
    assert code == 0
    assert "no main loss" in stderr and "no MTP loss" in stderr
    assert json.loads(stdout)["trinity"]["main_tag"] is None
    code, stdout, _ = invoke(
        "series", str(run), "-j", "1", "--events", str(logdir), "-f", "json",
        "--main-tag", "train/loss_main", "--mtp-tag", "x,train/loss_mtp",
    )  # fmt: skip
    tri = json.loads(stdout)["trinity"]
    assert (tri["main_tag"], tri["mtp_tag"]) == ("train/loss_main", "train/loss_mtp")


def test_no_event_files_is_an_error(run: Path, tmp_path: Path) -> None:
    code, _, stderr = invoke("series", str(run), "--events", str(tmp_path / "nothing"))
    assert code == 2 and "TensorBoard" in stderr


def test_tensorboard_output_round_trips(run: Path, tmp_path: Path) -> None:
    outdir = tmp_path / "tb-out"
    code, stdout, stderr = invoke(
        "series", str(run), "-j", "1", "-f", "json", "--tensorboard", str(outdir)
    )
    assert code == 0, stderr
    report = json.loads(stdout)
    acc = event_accumulator.EventAccumulator(
        str(outdir), size_guidance={event_accumulator.SCALARS: 0}
    )
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "normscope/band/low" in tags and "normscope/band/high" in tags
    assert [e.value for e in acc.Scalars("normscope/band/high")] == [pytest.approx(1.8)] * 3
    final = "normscope/ratio/final/-/model.norm"
    enorm = "normscope/ratio/mtp_embedding/mtp1/enorm"
    assert final in tags and enorm in tags
    for tag, name in ((final, "model.norm.weight"), (enorm, "model.layers.2.enorm.weight")):
        want = [(r["step"], r["ratio"]) for r in report["rows"] if r["name"] == name]
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        assert [s for s, _ in got] == [s for s, _ in want]
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6)


def test_trinity_in_the_plot(run: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from normscope.render.plot import figure_pixels

    png = tmp_path / "trend.png"
    code, _, stderr = invoke("series", str(run), "-j", "1", "--events", str(run / "tb"),
                             "--plot", str(png), "-f", "json")  # fmt: skip
    assert code == 0, stderr
    import struct

    width, height = struct.unpack(">II", png.read_bytes()[16:24])
    assert (width, height) == figure_pixels(True, True)
