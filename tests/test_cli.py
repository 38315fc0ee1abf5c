"""normscope.cli through typer's CliRunner: every exit code, every format, stdout/stderr discipline.

typer's CliRunner keeps stdout and stderr apart (`result.stdout`, `result.stderr`; `output` mixes
them), so each test checks the data on stdout and the diagnostics on stderr separately.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import typer.main
from conftest import (
    ARCH_ERRORS,
    REPO_ROOT,
    SOURCE_ERRORS,
    llama_config,
    llama_tensors,
    make_bad_input,
    write_checkpoint,
)
from typer.testing import CliRunner, Result

import normscope
from normscope.cli import app

runner = CliRunner()
ANSI = re.compile(r"\x1b\[")


def invoke(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, [str(a) for a in args], env=env)


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("Error:")]


def assert_clean_failure(result: Result, code: int = 2) -> str:
    """Exit `code`, one `Error:` line on stderr, no traceback, nothing on stdout."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert all(line.startswith(("Error:", "Hint:")) for line in result.stderr.splitlines())
    return lines[0]


@pytest.fixture
def collapsed_final(tmp_path: Path) -> Path:
    """A Llama whose final norm has collapsed (ratio 0.2): out of band in the default scope."""
    tensors = llama_tensors(final=np.full(8, 0.2, np.float32))
    return write_checkpoint(tmp_path / "collapsed_final", tensors, llama_config())


@pytest.fixture
def collapsed_trunk(tmp_path: Path) -> Path:
    """A Llama with a healthy final norm and a collapsed layer-0 input norm (ratio 0.1)."""
    tensors = llama_tensors(
        norms={"model.layers.0.input_layernorm.weight": np.full(8, 0.1, np.float32)}
    )
    return write_checkpoint(tmp_path / "collapsed_trunk", tensors, llama_config())


@pytest.fixture
def no_config(tmp_path: Path) -> Path:
    """A Llama without config.json: scans fine, with a warning about the architecture."""
    return write_checkpoint(tmp_path / "no_config", llama_tensors(), None)


# --- exit 0 and 1 ---------------------------------------------------------------------------------


def test_healthy_scan_exits_0(llama_dir: Path) -> None:
    result = invoke("scan", llama_dir)
    assert result.exit_code == 0, result.stderr
    assert "model.norm" in result.stdout
    assert result.stderr == ""


def test_fail_on_out_of_band_final_exits_1(collapsed_final: Path) -> None:
    result = invoke("scan", collapsed_final, "--fail-on", "out-of-band", "-f", "json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)  # the report is still produced
    assert data["summary"]["gated_out_of_band"] == 1
    assert "FAIL:" in result.stderr
    assert "Traceback" not in result.stderr


def test_without_fail_on_an_out_of_band_final_exits_0(collapsed_final: Path) -> None:
    for args in ((), ("--fail-on", "never")):
        result = invoke("scan", collapsed_final, *args)
        assert result.exit_code == 0
        assert "collapse" in result.stdout


def test_fail_on_ignores_norms_outside_the_default_scope(collapsed_trunk: Path) -> None:
    result = invoke("scan", collapsed_trunk, "--fail-on", "out-of-band", "-f", "json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["summary"]["out_of_band"] == 1
    assert data["summary"]["gated_out_of_band"] == 0


def test_scope_all_widens_the_gate(collapsed_trunk: Path) -> None:
    result = invoke(
        "scan", collapsed_trunk, "--fail-on", "out-of-band", "--scope", "all", "-f", "json"
    )
    assert result.exit_code == 1
    assert json.loads(result.stdout)["summary"]["gated_out_of_band"] == 1
    assert "FAIL:" in result.stderr


def test_fail_on_with_custom_thresholds(llama_dir: Path) -> None:
    # All-ones norms have ratio 1.0: out of band once --high is below it.
    result = invoke("scan", llama_dir, "--fail-on", "out-of-band", "--low", "0.1", "--high", "0.5")
    assert result.exit_code == 1
    assert "[0.1, 0.5]" in result.stderr


# --- exit 2: bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SOURCE_ERRORS + ARCH_ERRORS)
def test_bad_input_exits_2_with_one_error_line(kind: str, tmp_path: Path) -> None:
    path, fragment = make_bad_input(kind, tmp_path / kind)
    line = assert_clean_failure(invoke("scan", path, "-f", "json"))
    assert fragment in line


def test_bad_input_traceback_only_with_debug(tmp_path: Path) -> None:
    path, _ = make_bad_input("bad_json", tmp_path)
    result = invoke("scan", path, env={"NORMSCOPE_DEBUG": "1"})
    assert result.exit_code == 2
    assert "Traceback" in result.stderr and "SourceError" in result.stderr
    assert len(error_lines(result)) == 1


def test_hint_line(tmp_path: Path) -> None:
    (tmp_path / "runs" / "checkpoint-1").mkdir(parents=True)
    result = invoke("scan", tmp_path / "runs")
    assert_clean_failure(result)
    assert "Hint: for a folder of checkpoints, use `normscope series`" in result.stderr


def test_malformed_config_is_a_warning_not_an_error(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path / "m", llama_tensors(), '{"model_type": ')
    result = invoke("scan", path, "-f", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["model"]["hidden_size"] == 8
    assert "Warning:" in result.stderr and "config.json" in result.stderr


def test_paths_with_brackets_are_printed_verbatim(tmp_path: Path) -> None:
    missing = tmp_path / "[red]run" / "a[/]b"
    line = assert_clean_failure(invoke("scan", missing))
    assert str(missing) in line
    ckpt = write_checkpoint(tmp_path / "[run1]", llama_tensors(), llama_config())
    result = invoke("scan", ckpt)
    assert result.exit_code == 0, result.stderr
    assert "[run1]" in result.stdout


# --- exit 2: usage --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--low", "2", "--high", "1"), "need 0 < --low < --high"),
        (("--low", "0", "--high", "1"), "need 0 < --low < --high"),
        (("--low", "nan"), "need 0 < --low < --high"),
        (("-f", "xml"), "xml"),
        (("--format", "yaml"), "yaml"),
        (("--fail-on", "sometimes"), "sometimes"),
        (("--parametrization", "weird"), "weird"),
        (("--scope", "colour=red"), "colour"),
        (("--no-such-flag",), "--no-such-flag"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...], says: str, llama_dir: Path) -> None:
    result = invoke("scan", llama_dir, *args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert says in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_source_is_a_usage_error() -> None:
    result = invoke("scan")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert error_lines(result) == ["Error: Missing argument 'SOURCE'."]
    assert "Traceback" not in result.stderr


def test_unknown_command_is_a_usage_error() -> None:
    result = invoke("scna")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert error_lines(result) == ["Error: No such command 'scna'. Did you mean 'scan'?"]


# --- exit 3: internal error -----------------------------------------------------------------------


def _break_compute_stats(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom from a test")

    monkeypatch.setattr(sys.modules["normscope.scanner"], "compute_stats", boom)


def test_internal_error_exits_3_with_traceback(
    llama_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _break_compute_stats(monkeypatch)
    result = invoke("scan", llama_dir, "-f", "json")
    assert result.exit_code == 3
    assert result.stdout == ""
    assert "Traceback" in result.stderr
    assert "RuntimeError: boom from a test" in result.stderr
    assert "internal error" in result.stderr


def test_main_maps_an_escaped_exception_to_3(monkeypatch: pytest.MonkeyPatch) -> None:
    import normscope.cli as cli

    def broken_app() -> None:
        raise RuntimeError("outside any command")

    monkeypatch.setattr(cli, "app", broken_app)
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 3


# --- formats --------------------------------------------------------------------------------------


def test_format_table(llama_dir: Path) -> None:
    result = invoke("scan", llama_dir, "-f", "table")
    assert result.exit_code == 0
    for fact in ("normscope", str(llama_dir), "per role", "final and MTP norms", "model.norm"):
        assert fact in result.stdout
    assert not ANSI.search(result.stdout)
    assert "model.layers.0.input_layernorm" not in result.stdout


def test_format_table_all(llama_dir: Path) -> None:
    result = invoke("scan", llama_dir, "--all")
    assert result.exit_code == 0
    assert "all norms" in result.stdout
    assert "post_attention_layernorm" in result.stdout  # the leaf; the layer has its column
    result = invoke("scan", llama_dir, "--all", "--wide")
    for name in ("model.layers.0.input_layernorm", "model.layers.1.post_attention_layernorm"):
        assert name in result.stdout


def test_format_json(llama_dir: Path) -> None:
    result = invoke("scan", llama_dir, "--format", "json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["normscope_version"] == normscope.__version__
    assert data["source"] == str(llama_dir)
    assert data["model"]["model_type"] == "llama"
    assert data["model"]["hidden_size"] == 8 and data["model"]["num_layers"] == 2
    assert len(data["norms"]) == 5
    assert all(n["identity"] for n in data["norms"])
    assert data["io"]["bytes_read"] < data["io"]["bytes_total"]


def test_format_csv(llama_dir: Path) -> None:
    result = invoke("scan", llama_dir, "-f", "csv")
    assert result.exit_code == 0
    frame = pd.read_csv(io.StringIO(result.stdout))
    assert len(frame) == 5
    assert frame.columns[0] == "name" and list(frame.columns[-3:]) == [
        "band",
        "peer_median",
        "anomaly",
    ]
    assert (frame["ratio"] == 1.0).all()


def test_format_markdown(llama_dir: Path) -> None:
    result = invoke("scan", llama_dir, "-f", "markdown")
    assert result.exit_code == 0
    assert result.stdout.startswith("### normscope")
    assert "| `model.norm.weight` |" in result.stdout


def test_json_is_pure_even_with_warnings(no_config: Path) -> None:
    result = invoke("scan", no_config, "-f", "json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["warnings"]
    assert "Warning:" in result.stderr
    assert "Warning" not in result.stdout.replace('"warnings"', "")
    for w in data["warnings"]:
        assert f"Warning: {w}\n" in result.stderr  # one line each, never wrapped


def test_warnings_go_to_stderr_for_every_format(no_config: Path) -> None:
    for fmt in ("table", "csv", "markdown"):
        result = invoke("scan", no_config, "-f", fmt)
        assert result.exit_code == 0
        assert "Warning:" in result.stderr
        assert "Warning:" not in result.stdout


def test_quiet_silences_warnings(no_config: Path) -> None:
    for flag in ("--quiet", "-q"):
        result = invoke("scan", no_config, "-f", "json", flag)
        assert result.exit_code == 0
        assert result.stderr == ""
        assert json.loads(result.stdout)["warnings"]  # still in the report


def test_parametrization_override(llama_dir: Path) -> None:
    result = invoke("scan", llama_dir, "-f", "json", "--parametrization", "offset")
    assert result.exit_code == 0
    norms = json.loads(result.stdout)["norms"]
    assert {n["parametrization"] for n in norms} == {"offset"}
    # Ones read as 1 + w are gains of 2: every ratio is 2 and explodes.
    assert {n["ratio"] for n in norms} == {2.0}
    assert {n["band"] for n in norms} == {"explosion"}
    assert "look mis-parametrized" in result.stderr


def test_parametrization_standard_on_an_offset_family(tmp_path: Path) -> None:
    tensors = llama_tensors(final=np.zeros(8, np.float32))
    config = {"model_type": "gemma", "hidden_size": 8, "num_hidden_layers": 2}
    path = write_checkpoint(tmp_path / "gemma", tensors, config)
    detected = json.loads(invoke("scan", path, "-f", "json").stdout)
    final = next(n for n in detected["norms"] if n["role"] == "final")
    assert final["parametrization"] == "offset" and final["identity"]
    forced = json.loads(invoke("scan", path, "-f", "json", "--parametrization", "standard").stdout)
    final = next(n for n in forced["norms"] if n["role"] == "final")
    assert final["parametrization"] == "standard" and final["band"] == "collapse"


# --- -o / --output --------------------------------------------------------------------------------


def _no_temp_files(directory: Path) -> None:
    leftovers = [p.name for p in directory.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_output_file(llama_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "out" / "report.json"
    target.parent.mkdir()
    result = invoke("scan", llama_dir, "-f", "json", "-o", target)
    assert result.exit_code == 0
    assert result.stdout == ""
    written = json.loads(target.read_text())
    shown = json.loads(invoke("scan", llama_dir, "-f", "json").stdout)
    written["io"].pop("seconds")
    shown["io"].pop("seconds")
    assert written == shown
    _no_temp_files(target.parent)


def test_output_file_replaces_an_existing_one(llama_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "norms.csv"
    target.write_text("old")
    assert invoke("scan", llama_dir, "-f", "csv", "--output", target).exit_code == 0
    assert target.read_text().startswith("name,module,")


def test_output_table_is_plain_text(llama_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "table.txt"
    assert invoke("scan", llama_dir, "-o", target).exit_code == 0
    text = target.read_text()
    assert "per role" in text and "model.norm" in text
    assert not ANSI.search(text)
    assert max(len(line) for line in text.splitlines()) <= 120


def test_output_dash_is_stdout(
    llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    result = invoke("scan", llama_dir, "-f", "json", "-o", "-")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["source"] == str(llama_dir)
    assert list(cwd.iterdir()) == []  # no file named '-'


def test_failing_scan_leaves_no_file(tmp_path: Path) -> None:
    bad, _ = make_bad_input("offsets_overlap", tmp_path / "bad")
    target = tmp_path / "out" / "report.json"
    target.parent.mkdir()
    assert_clean_failure(invoke("scan", bad, "-f", "json", "-o", target))
    assert list(target.parent.iterdir()) == []


def test_failing_scan_keeps_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "report.json"
    target.parent.mkdir()
    target.write_text("previous report")
    assert_clean_failure(invoke("scan", tmp_path / "missing", "-f", "json", "-o", target))
    assert target.read_text() == "previous report"
    _no_temp_files(target.parent)


def test_internal_error_leaves_no_file(
    llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out" / "report.json"
    target.parent.mkdir()
    target.write_text("previous report")
    _break_compute_stats(monkeypatch)
    assert invoke("scan", llama_dir, "-f", "json", "-o", target).exit_code == 3
    assert target.read_text() == "previous report"
    _no_temp_files(target.parent)


def test_failed_write_removes_the_temporary_file(
    llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out" / "report.json"
    target.parent.mkdir()
    target.write_text("previous report")

    def disk_full(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", disk_full)
    line = assert_clean_failure(invoke("scan", llama_dir, "-f", "json", "-o", target))
    assert "cannot write output" in line and str(target) in line
    assert target.read_text() == "previous report"
    _no_temp_files(target.parent)


def test_output_onto_a_fifo_writes_into_it(llama_dir: Path, tmp_path: Path) -> None:
    """`-o /dev/null` or a named pipe: written in place, never replaced by a regular file (as
    root, the rename replaced the machine's /dev/null)."""
    import stat
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    result = invoke("scan", llama_dir, "-f", "json", "-o", fifo)
    reader.join(timeout=30)
    assert result.exit_code == 0
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert json.loads(received[0])["source"] == str(llama_dir)
    _no_temp_files(tmp_path)


def test_output_through_a_symlink_keeps_the_link(llama_dir: Path, tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    assert invoke("scan", llama_dir, "-f", "json", "-o", link).exit_code == 0
    assert link.is_symlink()
    assert json.loads(real.read_text())["source"] == str(llama_dir)


def test_output_into_a_missing_directory(llama_dir: Path, tmp_path: Path) -> None:
    line = assert_clean_failure(invoke("scan", llama_dir, "-o", tmp_path / "nope" / "r.json"))
    assert "output directory does not exist" in line


def test_output_onto_a_directory(llama_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "somedir").mkdir()
    line = assert_clean_failure(invoke("scan", llama_dir, "-f", "json", "-o", tmp_path / "somedir"))
    assert "cannot write output" in line
    _no_temp_files(tmp_path)


# --- version, help, entry points ------------------------------------------------------------------


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout == f"normscope {normscope.__version__}\n"


def test_no_arguments_shows_help_as_a_usage_error() -> None:
    result = invoke()
    assert result.exit_code == 2  # click's no_args_is_help: help on stderr, usage exit code
    assert result.stdout == ""
    assert "Usage: normscope" in result.stderr and "scan" in result.stderr


@pytest.mark.parametrize("args", [("--help",), ("scan", "--help")])
def test_help_mentions_exit_codes(args: tuple[str, ...]) -> None:
    result = invoke(*args)
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "Exit codes: 0 judged and passed" in text
    for code in ("1 a gate tripped", "2 could not judge", "3 internal error", "130 interrupted"):
        assert code in text, code


def test_scan_help_lists_the_options() -> None:
    text = invoke("scan", "--help").stdout
    for option in ("--format", "--output", "--all", "--low", "--high", "--parametrization"):
        assert option in text
    for option in ("--fail-on", "--scope", "--quiet"):
        assert option in text


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "NORMSCOPE_DEBUG"}
    return subprocess.run(
        list(args), capture_output=True, text=True, timeout=120, env=env, check=False
    )


def test_python_dash_m_version() -> None:
    proc = _run(sys.executable, "-m", "normscope", "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"normscope {normscope.__version__}\n"


def test_public_scan_survives_importing_the_scan_module(llama_dir: Path) -> None:
    # Importing the implementation modules must leave the public function normscope.scan callable.
    code = (
        "import normscope.cli, sys; from normscope.scanner import ScanOptions; import normscope; "
        "print(normscope.scan(sys.argv[1]).model.model_type)"
    )
    proc = _run(sys.executable, "-c", code, str(llama_dir))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "llama\n"


def test_console_script(collapsed_final: Path) -> None:
    script = Path(sys.executable).parent / "normscope"
    assert script.exists(), "the normscope console script is not installed (pip install -e .)"
    proc = _run(str(script), "scan", str(collapsed_final), "-f", "json", "--fail-on", "out-of-band")
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["summary"]["gated_out_of_band"] == 1
    assert "FAIL:" in proc.stderr
    proc = _run(str(script), "scan", str(collapsed_final / "missing"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("Error:") and "Traceback" not in proc.stderr


# --- docs -----------------------------------------------------------------------------------------


def _commands() -> dict[str, object]:
    group = typer.main.get_command(app)
    return dict(group.commands)  # type: ignore[attr-defined]


def test_every_command_has_help() -> None:
    for name, command in _commands().items():
        assert (command.help or "").strip(), f"command {name} has no help"  # type: ignore[attr-defined]
        assert invoke(name, "--help").exit_code == 0


def test_every_command_is_in_the_readme() -> None:
    readme = REPO_ROOT / "README.md"
    assert readme.is_file(), f"{readme} is missing: the README must document every command"
    text = readme.read_text(encoding="utf-8")
    missing = [name for name in _commands() if f"normscope {name}" not in text]
    assert not missing, f"commands not documented in README.md: {missing}"


def test_readme_documents_the_exit_codes() -> None:
    readme = REPO_ROOT / "README.md"
    assert readme.is_file(), f"{readme} is missing"
    text = readme.read_text(encoding="utf-8")
    assert "exit code" in text.lower()
    for code in ("0", "1", "2", "3"):
        assert re.search(rf"(^|\W){code}(\W|$)", text), code


def test_gates_that_judge_nothing_exit_2(tmp_path: Path) -> None:
    # BERT has no final norm and no MTP: the default gate scope is empty. A gate that looked at
    # nothing cannot pass (issue 22): the report is written, then one Error line, exit 2.
    bert = tmp_path / "bert"
    from conftest import write_checkpoint

    write_checkpoint(
        bert,
        {
            "embeddings.LayerNorm.weight": np.full(8, 0.1, np.float32),
            "embeddings.LayerNorm.bias": np.zeros(8, np.float32),
        },
        {"model_type": "bert", "hidden_size": 8, "num_hidden_layers": 0},
    )
    for args in (
        ("scan", bert, "--fail-on", "out-of-band", "-f", "json"),
        ("diff", bert, bert, "--max-drift", "0.1", "-f", "json"),
        ("series", bert, bert, "--fail-on", "out-of-band", "-f", "json"),
    ):
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.stderr)
        assert json.loads(result.stdout)["schema_version"] == 4
        assert result.stderr.splitlines() == [
            "Error: no norm matches the scope 'final,mtp': the gate looked at nothing",
            "Hint: this model may have no final or MTP norm identified; try --scope all",
        ], args
        assert invoke(*args, "--scope", "all").exit_code == (0 if args[0] == "diff" else 1)
        ungated = args[:2] if args[0] == "scan" else args[:3]
        assert invoke(*ungated).exit_code == 0, ungated  # no gate asked for: nothing to judge


def test_empty_output_name_is_a_usage_error(llama_dir: Path) -> None:
    result = invoke("scan", llama_dir, "-f", "json", "-o", "")
    assert result.exit_code == 2
    assert "empty file name" in result.stderr


def test_verbose_travels_in_the_scan_options(
    llama_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # -v (or NORMSCOPE_VERBOSE) is a field of the scan options, not a module global: the Hub
    # opener gets it from there (tests/test_hub.py: the logger stays quiet unless it is set).
    from normscope.cli import inputs

    built: list[Any] = []
    build = inputs.settings

    def keep(*args: Any, **kwargs: Any) -> Any:
        built.append(build(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(inputs, "settings", keep)
    monkeypatch.delenv("NORMSCOPE_VERBOSE", raising=False)
    assert invoke("-v", "scan", llama_dir).exit_code == 0
    assert invoke("scan", llama_dir).exit_code == 0
    monkeypatch.setenv("NORMSCOPE_VERBOSE", "1")
    assert invoke("scan", llama_dir).exit_code == 0
    assert [s.scan.verbose for s in built] == [True, False, True]
    assert "--verbose" in invoke("--help").stdout
