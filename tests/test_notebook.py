"""Results in a notebook (issue 26): a one-line `repr`, a compact `_repr_html_` card, `to_json()`
with the bytes `--format json` writes, and closed sets that print as their value."""

from __future__ import annotations

import dataclasses
import enum
import html
import importlib
import json
import pkgutil
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO_ROOT
from typer.testing import CliRunner

import normscope
from normscope.cli import app
from normscope.notebook import MAX_ROWS
from normscope.render.check import CheckView
from normscope.render.diff import DiffView
from normscope.render.scan import ScanView
from normscope.render.series import SeriesView

FIXTURES = REPO_ROOT / "fixtures"
MTP = str(FIXTURES / "deepseek-v3-mtp")
INIT, TRAINED = str(FIXTURES / "deepseek_v3-init"), str(FIXTURES / "deepseek_v3-trained")
runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("run")
    for step in (0, 100, 200):
        shutil.copytree(TRAINED if step else INIT, root / f"step-{step}")
    return root


@pytest.fixture(scope="module")
def reports(run: Path) -> dict[str, Any]:
    return {
        "scan": normscope.scan(MTP, no_cache=True),
        "diff": normscope.diff(INIT, TRAINED, no_cache=True),
        "series": normscope.series(run, jobs=1, progress=False, no_cache=True),
        "check": normscope.check(INIT, no_cache=True),
    }


def _untimed(text: str) -> str:
    return re.sub(r'("seconds": )[0-9.e-]+', r"\1T", text)


# --- closed sets print as their value ----------------------------------------------------------


def _our_enums() -> list[type[enum.Enum]]:
    found: dict[str, type[enum.Enum]] = {}
    for info in pkgutil.walk_packages(normscope.__path__, "normscope."):
        if info.name.endswith(("integrations.hf", "integrations.lightning")):
            continue  # they import transformers / lightning
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, enum.Enum)
                and value.__module__.startswith("normscope")
                and list(value)
            ):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return [found[k] for k in sorted(found)]


def test_every_enum_prints_as_its_value() -> None:
    enums = _our_enums()
    assert {e.__name__ for e in enums} >= {"Band", "Role", "Verdict", "Severity", "OutputFormat"}
    for kind in enums:
        for member in kind:
            value = str(member.value)  # an IntEnum (ExitCode) prints its number
            assert str(member) == value and f"{member}" == value and "%s" % member == value  # noqa: UP031
            assert f"{member:>12}" == f"{value:>12}"
            assert json.dumps(member) == json.dumps(member.value)  # JSON as before
            assert repr(member) == f"<{kind.__name__}.{member.name}: {member.value!r}>"


def test_a_band_in_a_message() -> None:
    band = normscope.scan(MTP).summary.headline[0].band
    assert f"final norm {band}" in {"final norm collapse", "final norm explosion"}


# --- repr ----------------------------------------------------------------------------------------


def test_reprs_are_one_short_line(reports: dict[str, Any]) -> None:
    assert repr(reports["scan"]) == (
        f"Report(source={MTP!r}, family='deepseek_v3', norms=24, out_of_band=2, "
        "gated_out_of_band=2, warnings=0)"
    )
    for report in reports.values():
        text = repr(report)
        assert "\n" not in text and len(text) < 400, text
        assert text.startswith(type(report).__name__ + "(")


def _six_hundred(series: Any) -> Any:
    """The series as 600 checkpoints (its rows repeated): what a long run's report holds."""
    times = 600 // len(series.checkpoints)
    return dataclasses.replace(
        series, rows=series.rows * times, checkpoints=series.checkpoints * times
    )


def test_a_600_checkpoint_series_is_a_line_and_a_card(reports: dict[str, Any]) -> None:
    big = _six_hundred(reports["series"])
    assert len(big.checkpoints) == 600 and len(big.rows) == 9600
    assert len(repr(big)) < 300  # the dataclass repr was 8 MB here (18 MB for a larger model)
    card = big._repr_html_()
    assert len(card) < 10_000
    assert "checkpoints</th><td style='text-align:left'>600</td>" in card
    assert "9600" in card  # the rows fact, not the rows


# --- the card -------------------------------------------------------------------------------------


def _body_rows(card: str) -> list[list[str]]:
    body = card.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [re.findall(r"<td>(.*?)</td>", row) for row in body.split("</tr>") if "<td>" in row]


def test_the_scan_card_lists_out_of_band_norms_first(reports: dict[str, Any]) -> None:
    report = reports["scan"]
    card = report._repr_html_()
    rows = _body_rows(card)
    assert len(rows) == min(MAX_ROWS, len(report.norms))
    bands = [row[4] for row in rows]
    assert bands[:2] == ["collapse", "explosion"] or bands[:2] == ["explosion", "collapse"]
    assert "Band." not in card and "Role." not in card
    assert f"{MAX_ROWS} of 24 norms, out of band first; 4 more in .to_frame()" in card
    final = next(r for r in rows if r[0] == "model.norm")
    assert final[1:] == ["-", "final", "0.270", "collapse"]


def test_every_card_names_its_rows_and_caps_them(reports: dict[str, Any]) -> None:
    for report in reports.values():
        card = report._repr_html_()
        assert card.startswith(f"<div class='normscope'><strong>{type(report).__name__}")
        assert len(_body_rows(card)) <= MAX_ROWS
    check = _body_rows(reports["check"]._repr_html_())
    assert check and check[0][2] in ("False", "True")


def test_the_card_escapes_what_it_shows(reports: dict[str, Any]) -> None:
    hostile = dataclasses.replace(reports["scan"], source="<script>alert(1)</script>")
    card = hostile._repr_html_()
    assert "<script>" not in card and html.escape("<script>alert(1)</script>") in card


# --- to_json --------------------------------------------------------------------------------------


def test_to_json_is_the_views_json(reports: dict[str, Any]) -> None:
    views = {"scan": ScanView, "diff": DiffView, "series": SeriesView, "check": CheckView}
    for kind, view in views.items():
        report = reports[kind]
        assert report.to_json() == view(report).json()  # type: ignore[call-arg]
        assert json.loads(report.to_json())["schema_version"] >= 1


@pytest.mark.parametrize(
    ("kind", "argv"),
    [
        ("scan", ["scan", MTP]),
        ("diff", ["diff", INIT, TRAINED]),
        ("check", ["check", INIT]),
    ],
)
def test_to_json_is_what_the_command_writes(
    kind: str, argv: list[str], reports: dict[str, Any]
) -> None:
    result = runner.invoke(app, [*argv, "-f", "json", "-q", "--no-cache"])
    assert result.exit_code == 0
    assert _untimed(reports[kind].to_json()) == _untimed(result.stdout)


def test_series_to_json_is_what_the_command_writes(run: Path, reports: dict[str, Any]) -> None:
    result = runner.invoke(app, ["series", str(run), "-f", "json", "-q", "-j", "1", "--no-cache"])
    assert result.exit_code == 0
    assert _untimed(reports["series"].to_json()) == _untimed(result.stdout)
    assert json.loads(result.stdout)["rows"][0]["checkpoint"]  # flat rows, as the command's


def test_a_fold_report_too() -> None:
    from normscope.render.fold import FoldView

    report = normscope.fold(MTP, device="cpu", no_cache=True)
    assert report.to_json() == FoldView(report, False).json()
    assert repr(report).startswith(f"FoldReport(source={MTP!r}, family='deepseek_v3', norms=24")
    rows = _body_rows(report._repr_html_())
    assert 0 < len(rows) <= MAX_ROWS and rows[0][0]
