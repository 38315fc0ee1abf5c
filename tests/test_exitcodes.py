"""The exit-code contract (issue 22, `normscope/exitcodes.py`): every code, in real processes
where a signal or a pipe is involved, and the README's table equal to the module's."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import REPO_ROOT, llama_config, llama_tensors, write_checkpoint
from typer.testing import CliRunner

from normscope.cli import app
from normscope.exitcodes import ExitCode

runner = CliRunner()


@pytest.fixture
def healthy(tmp_path: Path) -> Path:
    return write_checkpoint(tmp_path / "healthy", llama_tensors(), llama_config())


@pytest.fixture
def collapsed(tmp_path: Path) -> Path:
    tensors = llama_tensors(final=np.full(8, 0.2, np.float32))
    return write_checkpoint(tmp_path / "collapsed", tensors, llama_config())


def _normscope(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """`python -m normscope ARGS` in a fresh process (this checkout's package)."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    return subprocess.run(
        [sys.executable, "-m", "normscope", *args],
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
        check=False,
        **kwargs,
    )


def test_the_readme_table_is_the_contract() -> None:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Exit codes") :]
    section = section[: section.index("\n## ", 4)]
    codes = [int(m) for m in re.findall(r"^\| (\d+) \|", section, re.MULTILINE)]
    assert codes == [int(c) for c in ExitCode]
    assert (ExitCode.interrupted, ExitCode.terminated) == (
        128 + signal.SIGINT,
        128 + signal.SIGTERM,
    )


def test_0_1_2_and_3(healthy: Path, collapsed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = ("--fail-on", "out-of-band", "-q")
    assert runner.invoke(app, ["scan", str(healthy), *gate]).exit_code == ExitCode.passed
    tripped = runner.invoke(app, ["scan", str(collapsed), *gate])
    assert tripped.exit_code == ExitCode.tripped and "FAIL:" in tripped.stderr
    bad = runner.invoke(app, ["scan", str(healthy / "nope")])
    assert bad.exit_code == ExitCode.unjudged and bad.stderr.startswith("Error: no such file")
    usage = runner.invoke(app, ["scan", str(healthy), "--low", "3"])
    assert usage.exit_code == ExitCode.unjudged and "need 0 < --low < --high" in usage.stderr

    from normscope import scanner

    def bug(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(scanner, "measure", bug)
    internal = runner.invoke(app, ["scan", str(healthy)])
    assert internal.exit_code == ExitCode.internal
    assert "ZeroDivisionError: a bug" in internal.stderr
    assert internal.stderr.rstrip().splitlines()[-1] == (
        "Error: internal error in normscope (a bug): please report the traceback above"
    )


_SLOW = """
import sys, time
import normscope.scanner as scanner

def slow(*args, **kwargs):
    print("measuring", file=sys.stderr, flush=True)
    time.sleep(60)

scanner.measure = slow
sys.argv = ["normscope", "scan", sys.argv[1]]
from normscope.cli import main
main()
"""


@pytest.mark.parametrize(
    ("signum", "code", "line"),
    [
        (signal.SIGINT, ExitCode.interrupted, "Error: interrupted"),
        (signal.SIGTERM, ExitCode.terminated, "Error: terminated"),
    ],
)
def test_a_signal_mid_scan(healthy: Path, signum: int, code: int, line: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW, str(healthy)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline().strip() == "measuring"
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert err.strip() == line and out == ""


@pytest.mark.parametrize("format", ["json", "table"])
def test_a_closed_pipe_returns_the_verdict(healthy: Path, collapsed: Path, format: str) -> None:
    for ckpt, code in ((healthy, ExitCode.passed), (collapsed, ExitCode.tripped)):
        read, write = os.pipe()
        os.close(read)  # the reader left before the first byte: every write is EPIPE
        try:
            proc = _normscope(
                "scan", str(ckpt), "-f", format, "--fail-on", "out-of-band", "-q", stdout=write
            )
        finally:
            os.close(write)
        assert proc.returncode == code, proc.stderr
        assert "Traceback" not in proc.stderr and "Error" not in proc.stderr
        if code == ExitCode.passed:
            assert proc.stderr == ""
        else:
            assert proc.stderr.startswith("FAIL: 1 norm(s) in scope 'final,mtp' are out of band")


@pytest.mark.parametrize("format", ["json", "table"])
def test_stdout_that_cannot_be_written_is_one_line_and_exit_2(healthy: Path, format: str) -> None:
    with open("/dev/full", "w") as full:
        proc = _normscope("scan", str(healthy), "-f", format, stdout=full)
    assert proc.returncode == ExitCode.unjudged
    assert proc.stderr == "Error: cannot write the output: No space left on device (stdout)\n"
