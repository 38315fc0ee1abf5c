"""A rules file teaches normscope a made-up architecture, end to end on the command line:
scan, diff, series (also through a process pool), check; from `--rules` and from
`[tool.normscope.rules]` in pyproject.toml; a bad rules file is exit 2 naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_checkpoint
from typer.testing import CliRunner

from normscope.cli import app

runner = CliRunner()
H = 16
LAYERS = 3

RULES = """
[[family]]
name = "zephyrine"
model_types = ["zephyrine"]
parametrization = "standard"
source = "made up for this test"

[[family.norm]]
pattern = "stack.{L}.premix_norm"
role = "attn_input"

[[family.norm]]
pattern = "stack.{L}.postmix_norm"
role = "attn_output"
parametrization = "offset"

[[family.norm]]
pattern = "lookahead.{M}.token_norm"
role = "mtp_embedding"
module = "mtp"

[[family.norm]]
pattern = "out_norm"
role = "final"
"""

EXPECTED = {
    # name -> (module, mtp_depth, layer, role, parametrization), from the rules above
    **{
        f"stack.{i}.premix_norm.weight": ("main", None, i, "attn_input", "standard")
        for i in range(LAYERS)
    },
    **{
        f"stack.{i}.postmix_norm.weight": ("main", None, i, "attn_output", "offset")
        for i in range(LAYERS)
    },
    "lookahead.0.token_norm.weight": ("mtp", 1, None, "mtp_embedding", "standard"),
    "out_norm.weight": ("main", None, None, "final", "standard"),
}


def _zephyrine(root: Path, scale: float = 1.0) -> Path:
    tensors = {
        name: np.full(H, (0.0 if "postmix" in name else 1.0) * scale, np.float32)
        for name in EXPECTED
    }
    tensors["stack.0.mixer.in_proj.weight"] = np.ones((H, H), np.float32)
    return write_checkpoint(root, tensors, {"model_type": "zephyrine"})


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "zephyrine.toml"
    path.write_text(RULES)
    return path


def _identity(data: dict[str, object]) -> dict[str, tuple[object, ...]]:
    norms = data["norms"]
    assert isinstance(norms, list)
    return {
        n["name"]: (n["module"], n["mtp_depth"], n["layer"], n["role"], n["parametrization"])
        for n in norms
    }


def test_without_rules_the_architecture_is_not_understood(tmp_path: Path) -> None:
    ckpt = _zephyrine(tmp_path / "ckpt")
    data = json.loads(runner.invoke(app, ["scan", str(ckpt), "-f", "json", "-q"]).stdout)
    assert {n["role"] for n in data["norms"]} == {"unknown"}
    assert runner.invoke(app, ["check", str(ckpt)]).exit_code == 2


def test_scan_with_a_rules_file(tmp_path: Path, rules: Path) -> None:
    ckpt = _zephyrine(tmp_path / "ckpt")
    result = runner.invoke(app, ["scan", str(ckpt), "--rules", str(rules), "-f", "json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert _identity(data) == EXPECTED
    assert data["model"]["family"] == "zephyrine" and data["model"]["mtp_depth"] == 1
    # Offset norms stored as zeros are the identity at init: every ratio is 1.
    assert {n["ratio"] for n in data["norms"]} == {1.0}


def test_pyproject_rules_reach_every_command(
    tmp_path: Path, rules: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    table = RULES.replace("[[family", "[[tool.normscope.rules.family")
    (project / "pyproject.toml").write_text(table)
    monkeypatch.chdir(project)
    a = _zephyrine(tmp_path / "run" / "checkpoint-100")
    b = _zephyrine(tmp_path / "run" / "checkpoint-200", scale=0.5)
    scan = json.loads(runner.invoke(app, ["scan", str(a), "-f", "json"]).stdout)
    assert _identity(scan) == EXPECTED
    diff = json.loads(runner.invoke(app, ["diff", str(a), str(b), "-f", "json"]).stdout)
    assert {d["name"]: d["role"] for d in diff["norms"]} == {
        name: facts[3] for name, facts in EXPECTED.items()
    }
    for jobs in ("1", "2"):
        series = runner.invoke(app, ["series", str(tmp_path / "run"), "-f", "json", "-j", jobs])
        assert series.exit_code == 0, series.stderr
        rows = json.loads(series.stdout)["rows"]
        assert {r["name"]: r["role"] for r in rows} == {
            name: facts[3] for name, facts in EXPECTED.items()
        }
    check = runner.invoke(app, ["check", str(a)])
    assert check.exit_code == 0, check.stderr
    assert check.stdout.startswith("PASS")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (RULES.replace('role = "final"', 'role = "finale"'), "role must be one of"),
        (RULES.replace('pattern = "out_norm"', 'patern = "out_norm"'), "patern"),
        ("[[family]]\nname = 3\n", "name"),
        ("not toml [", "invalid TOML"),
    ],
)
def test_a_bad_rules_file_is_exit_2(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    ckpt = _zephyrine(tmp_path / "ckpt")
    for command in (["scan", str(ckpt)], ["check", str(ckpt)]):
        result = runner.invoke(app, [*command, "--rules", str(path)])
        assert result.exit_code == 2, result.stdout
        assert result.stdout == ""
        error = result.stderr.splitlines()[0]
        assert error.startswith("Error: ") and says in error and "bad.toml" in error


def test_a_missing_rules_file_is_exit_2(tmp_path: Path) -> None:
    ckpt = _zephyrine(tmp_path / "ckpt")
    result = runner.invoke(app, ["scan", str(ckpt), "--rules", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert (
        result.stderr.splitlines()[0] == f"Error: rules file not found ({tmp_path / 'nope.toml'})"
    )


def test_user_rules_travel_to_worker_processes(tmp_path: Path, rules: Path) -> None:
    from normscope.arch import load_rules
    from normscope.enums import Executor
    from normscope.scanner import ScanOptions
    from normscope.series import SeriesOptions, measure_series

    for step in (100, 200, 300):
        _zephyrine(tmp_path / "run" / f"checkpoint-{step}")
    options = SeriesOptions(ScanOptions(rules=load_rules(rules)), jobs=2, executor=Executor.process)
    report = measure_series([tmp_path / "run"], options)
    assert report.io.executor is Executor.process
    assert {r.norm.name: r.norm.role.value for r in report.rows} == {
        name: facts[3] for name, facts in EXPECTED.items()
    }
