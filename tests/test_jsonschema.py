"""Machine output others can rely on (issue 14): a JSON Schema per report, shipped in the package,
generated from the dataclasses (one function), and every JSON output valid against it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from typer.testing import CliRunner

from normscope.cli import app
from normscope.schema import SCHEMA_VERSION
from normscope.schema.jsonschema import REPORTS, json_schema, schema_text, shipped_schema

jsonschema = pytest.importorskip("jsonschema")
runner = CliRunner()
FIX = REPO_ROOT / "fixtures"


@pytest.mark.parametrize("report", REPORTS)
def test_shipped_schema_is_the_generated_one(report: str) -> None:
    path = REPO_ROOT / "normscope" / "schema" / "json" / f"{report}.schema.json"
    assert path.read_text(encoding="utf-8") == schema_text(report), (
        "run: python -m normscope.schema.jsonschema"
    )
    schema = shipped_schema(report)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$id"] == f"normscope:schema/v{SCHEMA_VERSION}/{report}"
    assert schema["properties"]["schema_version"] == {"const": SCHEMA_VERSION}


def test_generator_follows_the_dataclasses() -> None:
    scan = json_schema("scan")
    norm = scan["$defs"]["NormStats"]
    assert list(norm["properties"])[:3] == ["name", "module", "mtp_depth"]
    assert norm["properties"]["mtp_depth"] == {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    assert norm["properties"]["ratio"] == {"type": ["number", "null"]}
    assert "collapse" in norm["properties"]["band"]["enum"]
    assert norm["additionalProperties"] is False


@pytest.fixture
def run_folder(tmp_path: Path) -> Path:
    shutil.copytree(FIX / "llama-init", tmp_path / "run" / "checkpoint-0")
    shutil.copytree(FIX / "llama-trained", tmp_path / "run" / "checkpoint-100")
    return tmp_path / "run"


def outputs(run: Path) -> list[tuple[str, list[str]]]:
    return [
        ("scan", ["scan", str(FIX / "deepseek-v3-mtp")]),
        ("scan", ["scan", str(FIX / "gemma3-trained")]),
        ("scan", ["scan", str(FIX / "qwen3_next-trained")]),
        ("diff", ["diff", str(FIX / "llama-init"), str(FIX / "llama-trained")]),
        ("diff", ["diff", str(FIX / "deepseek_v3-init"), str(FIX / "deepseek_v3-trained")]),
        ("series", ["series", str(run), "-j", "1"]),
        ("check", ["check", str(FIX / "deepseek-v3-mtp")]),
        ("check", ["check", str(FIX / "llama-trained"), "--baseline", str(FIX / "llama-init")]),
    ]


def test_every_json_output_is_valid(run_folder: Path) -> None:
    for report, args in outputs(run_folder):
        result = runner.invoke(app, [*args, "-f", "json"])
        assert result.exit_code in (0, 1), result.stderr
        validator = jsonschema.Draft202012Validator(shipped_schema(report))
        errors = list(validator.iter_errors(json.loads(result.stdout)))
        assert errors == [], (args, [e.message for e in errors[:3]])


def test_an_unexpected_key_is_invalid() -> None:
    result = runner.invoke(app, ["scan", str(FIX / "llama-init"), "-f", "json"])
    data = json.loads(result.stdout)
    data["norms"][0]["surprise"] = 1
    assert not jsonschema.Draft202012Validator(shipped_schema("scan")).is_valid(data)
