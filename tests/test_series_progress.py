"""The Python `series()` draws the command's progress bar (issue 27 item 4): on where stderr is
a terminal, off where it is not or when asked, drawn anyway with `progress=True`."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

import normscope


@pytest.fixture
def run(tmp_path: Path) -> Path:
    for step in (0, 100, 200):
        shutil.copytree(REPO_ROOT / "fixtures" / "deepseek_v3-trained", tmp_path / f"step-{step}")
    return tmp_path


def test_no_bar_where_stderr_is_no_terminal(run: Path, capsys: pytest.CaptureFixture) -> None:
    assert not sys.stderr.isatty()
    normscope.series(run, jobs=1)
    normscope.series(run, jobs=1, progress=False)
    assert capsys.readouterr().err == ""


def test_the_bar_when_asked(run: Path, capsys: pytest.CaptureFixture) -> None:
    report = normscope.series(run, jobs=1, progress=True)
    err = capsys.readouterr().err
    assert [c.step for c in report.checkpoints] == [0, 100, 200]
    assert "measuring" in err and "3/3" in err and " read" in err


def test_a_terminal_gets_the_bar(run: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    normscope.series(run, jobs=1)
    assert "measuring" in capsys.readouterr().err
    normscope.series(run, jobs=1, progress=False)
    assert capsys.readouterr().err == ""


# --- HF_HUB_DISABLE_PROGRESS_BARS, as huggingface_hub's own bars read it (issue 26) -------------


@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_hf_hub_disable_progress_bars_wins_even_over_progress_true(
    value: str, run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", value)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    normscope.series(run, jobs=1)
    normscope.series(run, jobs=1, progress=True)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("value", ["0", "", "no"])
def test_other_values_leave_the_bar(
    value: str, run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", value)
    normscope.series(run, jobs=1, progress=True)
    assert "measuring" in capsys.readouterr().err


@pytest.mark.parametrize("group", [None, "normscope"])
def test_huggingface_hubs_switch_turns_the_bar_off(
    group: str | None, run: Path, capsys: pytest.CaptureFixture
) -> None:
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    disable_progress_bars(group)  # the function form: huggingface_hub 1.x has no context manager
    try:
        normscope.series(run, jobs=1, progress=True)
    finally:
        enable_progress_bars(group)
    assert capsys.readouterr().err == ""
    normscope.series(run, jobs=1, progress=True)  # switched back on
    assert "measuring" in capsys.readouterr().err


def test_the_commands_transfer_and_fold_bars_follow_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from normscope.cli import output as out

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert out.transfer_progress(False) is not None
    with out.fold_progress(False) as fold_bar:
        assert fold_bar is not None
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    assert out.transfer_progress(False) is None
    with out.fold_progress(False) as fold_bar:
        assert fold_bar is None
