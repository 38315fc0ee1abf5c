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
