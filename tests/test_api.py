"""The Python API mirrors the commands (issue 14): scan, diff, series, check with keyword options,
typed results with to_frame(); a clean package face; help texts without typer's annotations."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO_ROOT
from typer.testing import CliRunner

import normscope
from normscope.cli import app

FIX = REPO_ROOT / "fixtures"


def test_package_face_is_exactly_the_public_names() -> None:
    assert dir(normscope) == sorted(normscope.__all__)
    for name in ("Any", "TYPE_CHECKING", "import_module", "annotations"):
        assert name not in dir(normscope)
    for name in normscope.__all__:
        assert getattr(normscope, name) is not None, name
    # A fresh interpreter: the face is the same before anything was imported lazily.
    code = "import normscope; print(','.join(dir(normscope)))"
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert fresh.stdout.strip().split(",") == sorted(normscope.__all__)


def test_scan_with_keyword_options() -> None:
    report = normscope.scan(FIX / "llama-trained", low=0.3, high=2.0, scope="all")
    assert isinstance(report, normscope.Report)
    assert report.summary.thresholds.low == 0.3
    assert len(report.to_frame()) == len(report.norms)
    offset = normscope.scan(FIX / "llama-trained", parametrization="offset")
    assert {n.parametrization.value for n in offset.norms} == {"offset"}


def test_diff_series_check_return_typed_reports() -> None:
    a, b = FIX / "llama-init", FIX / "llama-trained"
    d = normscope.diff(a, b)
    assert isinstance(d, normscope.DiffReport) and len(d.to_frame()) == len(d.norms)
    s = normscope.series(b, a)  # listed: kept in that order
    assert isinstance(s, normscope.SeriesReport)
    assert [c.path for c in s.checkpoints] == [str(b), str(a)]
    assert s.order is normscope.Order.given
    assert [c.path for c in normscope.series(b, a, order="natural").checkpoints] == [str(a), str(b)]
    assert len(s.to_frame()) == len(s.rows)
    c = normscope.check(a, expect_init=True)
    assert isinstance(c, normscope.CheckReport)
    assert c.verdict.value == "pass" and len(c.to_frame()) == len(c.findings)
    failed = normscope.check(b, baseline=a, max_drift=0.3, severity={"band": "off"})
    assert failed.verdict.value == "fail"
    assert all(f.check.value != "band" or f.passed for f in failed.findings)


def test_bad_keywords_raise_normscope_errors() -> None:
    with pytest.raises(normscope.NormscopeError):
        normscope.scan(FIX / "llama-trained", low=2.0, high=1.0)
    with pytest.raises(normscope.NormscopeError):
        normscope.scan(FIX / "llama-trained", scope="nonsense=")


@pytest.mark.parametrize("command", ["scan", "diff", "series", "check", "cache"])
def test_help_shows_no_typer_annotations(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0
    for token in ("{", "<str>", "<list[str]>", "<int", "<float>", "<path>"):
        assert token not in result.stdout, (token, result.stdout)


def test_check_help_has_revision() -> None:
    result = CliRunner().invoke(app, ["check", "--help"], env={"COLUMNS": "100"})
    assert "--revision" in result.stdout
