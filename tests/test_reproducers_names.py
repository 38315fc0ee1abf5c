"""Issue #12 reproducers about names: absurd layer indices (R9, R10, C1) and strings that no
encoding can write (C2-C4), driven through `normscope.cli.app` as a user meets them.

- R9/R10: a layer index of 4,301 digits (beyond Python's int-string limit), with and without a
  config: exit 2, one `Error:` line naming the tensor (the arch rules refuse it).
- C1: a layer index beyond int64 (99999999999999999999): exit 2 naming the tensor.
- C2: a lone surrogate as a dtype stops at the header, as safetensors does.
- C3: a file name that is not UTF-8 (`b"\\xff.safetensors"`), table format with `-o`: exit 0 and
  the name escaped (`\\udcff`) in the file.
- C4: a lone surrogate as config `model_type`: exit 0 in every format, escaped in the text ones.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import llama_config, llama_tensors, write_checkpoint, write_raw_safetensors
from typer.testing import CliRunner, Result

from normscope.cli import app

runner = CliRunner()
HUGE = "9" * 4301


def error_line(result: Result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("Error: ") and all(x.startswith("Hint: ") for x in lines[1:])
    return lines[0]


def _with_layer(tmp_path: Path, layer: str, config: bool) -> Path:
    tensors = llama_tensors()
    tensors[f"model.layers.{layer}.input_layernorm.weight"] = np.ones(8, np.float32)
    return write_checkpoint(tmp_path / "m", tensors, llama_config() if config else None)


@pytest.mark.parametrize("config", [True, False], ids=["r9-config", "r10-no-config"])
def test_r9_r10_a_4301_digit_layer_index(tmp_path: Path, config: bool) -> None:
    directory = _with_layer(tmp_path, HUGE, config)
    line = error_line(runner.invoke(app, ["scan", str(directory)]))
    assert "input_layernorm.weight" in line


def test_c1_a_layer_index_beyond_int64_with_csv(tmp_path: Path) -> None:
    directory = _with_layer(tmp_path, "99999999999999999999", config=True)
    line = error_line(runner.invoke(app, ["scan", str(directory), "-f", "csv"]))
    assert "model.layers.99999999999999999999.input_layernorm.weight" in line


def test_c2_a_lone_surrogate_dtype_stops_at_the_header(tmp_path: Path) -> None:
    header = {
        "model.norm.weight": {"dtype": "\ud800", "shape": [8], "data_offsets": [0, 32]},
    }
    path = write_raw_safetensors(tmp_path / "model.safetensors", header, b"\0" * 32)
    line = error_line(runner.invoke(app, ["scan", str(path), "-f", "markdown"]))
    assert line == (
        "Error: invalid safetensors header JSON: a string holds a lone surrogate escape "
        f"(\\ud800-\\udfff) ({path})"
    )


def test_c3_a_file_name_that_is_not_utf8_with_output(tmp_path: Path) -> None:
    directory = write_checkpoint(tmp_path / "m", llama_tensors(), llama_config())
    odd = os.fsdecode(b"\xff.safetensors")
    (directory / "model.safetensors").rename(directory / odd)
    out = tmp_path / "report.txt"
    result = runner.invoke(app, ["scan", str(directory / odd), "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    assert "\\udcff.safetensors" in out.read_text(encoding="utf-8")


def test_c4_a_lone_surrogate_model_type_in_the_table(tmp_path: Path) -> None:
    directory = write_checkpoint(tmp_path / "m", llama_tensors(), llama_config())
    config = json.loads((directory / "config.json").read_text())
    config["model_type"] = "llama\ud800"
    (directory / "config.json").write_text(json.dumps(config))  # ensure_ascii: "\ud800"
    result = runner.invoke(app, ["scan", str(directory)])
    assert result.exit_code == 0, result.stderr
    assert "llama\\ud800" in result.stdout
    for fmt in ("json", "csv", "markdown"):
        result = runner.invoke(app, ["scan", str(directory), "-f", fmt])
        assert result.exit_code == 0, (fmt, result.stderr)
        result.stdout.encode("utf-8")


def test_every_text_renderer_writes_utf8_whatever_the_names(tmp_path: Path) -> None:
    """The library's renderers too, not only the CLI's streams: a lone surrogate is escaped."""
    import normscope
    from normscope.render import check as check_view
    from normscope.render import scan as scan_view

    directory = write_checkpoint(tmp_path / "m", llama_tensors(), llama_config())
    config = json.loads((directory / "config.json").read_text())
    config["model_type"] = "llama\ud800"
    (directory / "config.json").write_text(json.dumps(config))
    report = normscope.scan(directory)
    assert report.model.model_type == "llama\ud800"  # the data keeps what the file says
    for text in (scan_view.render_markdown(report), scan_view.render_csv(report)):
        text.encode("utf-8")
    assert "llama\\ud800" in scan_view.render_markdown(report)
    checked = normscope.check(directory, allow_unknown=True)
    check_view.render_junit(checked).encode("utf-8")
