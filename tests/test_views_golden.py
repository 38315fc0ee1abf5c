"""Exact golden output of every view of every command, through the CLI (issue 9: refactor guard).

Each case runs `normscope ...` through typer's CliRunner with a fixed terminal width and compares
one file under tests/golden/views/ exactly: the command line, the exit code, the whole stderr and
the whole stdout (and, for `check -f github`, the $GITHUB_STEP_SUMMARY file). `pytest
--update-golden` rewrites them from today's output.

Only volatile values are normalised, all in `normalise()`: wall times (`in 0.01 s` in the table
and Markdown headers, `"seconds": 0.0123` in JSON) and the tmp directory. Every other number is
compared as printed.

Paths stay short and stable: each test runs in its own tmp directory, which holds `fixtures` (a
link to the repository's fixtures/), the run folder `run/` of the series cases and the checkpoint
`no-config/`; commands name them relatively, so the tables wrap the same on every machine.
Width: rich's Console reads $COLUMNS when it is created, and CliRunner.invoke(env=...) sets it
for the command (`test_table_width_follows_columns` proves each width took effect).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, save_shard
from safetensors.numpy import load_file
from typer.testing import CliRunner, Result

from normscope.cli import app

runner = CliRunner()
Golden = Callable[[str, str], None]

WIDTHS = (80, 100, 120)
TIME_IN_TEXT = re.compile(r"(?<=\bin )\d+\.\d\d(?= s\b)")  # "read ... in 0.01 s" headers
TIME_IN_JSON = re.compile(r'"seconds": [0-9.eE+-]+')  # io.seconds and per-checkpoint seconds


def normalise(text: str, tmp: Path) -> str:
    """Mask what changes from run to run: wall times and the tmp directory. Nothing else."""
    text = text.replace(str(tmp), "<TMP>")
    # Digits become '#' ("in #.## s"): same length, so the header panel's border stays aligned.
    text = TIME_IN_TEXT.sub(lambda m: re.sub(r"\d", "#", m[0]), text)
    return TIME_IN_JSON.sub('"seconds": <T>', text)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tmp directory as cwd, with `fixtures`, `run/` (three checkpoints) and `no-config/`."""
    (tmp_path / "fixtures").symlink_to(REPO_ROOT / "fixtures", target_is_directory=True)
    run = tmp_path / "run"
    shutil.copytree(REPO_ROOT / "fixtures" / "llama-init", run / "checkpoint-0")
    shutil.copytree(REPO_ROOT / "fixtures" / "llama-trained", run / "checkpoint-100")
    # Step 200: the trained gains shrunk by 0.8 (norms only), so every trend keeps moving.
    trained = load_file(REPO_ROOT / "fixtures" / "llama-trained" / "model.safetensors")
    later = {
        k: (v * np.float32(0.8)).astype(v.dtype) if "norm" in k else v for k, v in trained.items()
    }
    save_shard(run / "checkpoint-200" / "model.safetensors", later)
    shutil.copy(REPO_ROOT / "fixtures" / "llama-trained" / "config.json", run / "checkpoint-200")
    # No config.json: the architecture is guessed from the names, with a warning.
    (tmp_path / "no-config").mkdir()
    shutil.copy(
        REPO_ROOT / "fixtures" / "llama-trained" / "model.safetensors", tmp_path / "no-config"
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_cli(args: list[str], width: int = 120, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, args, env={"COLUMNS": str(width), **(env or {})})


def record(args: list[str], result: Result, tmp: Path, width: int, extra: str = "") -> str:
    """One golden text: the command, its exit code, stderr and stdout (+ anything extra)."""
    text = (
        f"$ COLUMNS={width} normscope {' '.join(args)}\n"
        f"--- exit {result.exit_code}\n"
        f"--- stderr\n{result.stderr}"
        f"--- stdout\n{result.stdout}"
        f"{extra}"
    )
    return normalise(text, tmp)


def check_view(
    golden: Golden,
    tmp: Path,
    name: str,
    args: list[str],
    width: int = 120,
    env: dict[str, str] | None = None,
) -> Result:
    result = run_cli(args, width, env)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.exit_code in (0, 1), (result.exit_code, result.stderr)
    golden(f"views/{name}.txt", record(args, result, tmp, width))
    return result


# --- scan -----------------------------------------------------------------------------------------

SCAN_SOURCES = {
    "deepseek_v3_mtp": "fixtures/deepseek-v3-mtp",  # MTP, out of band (collapse + explosion)
    "qwen3_next": "fixtures/qwen3_next-trained",  # offset (1 + w) gains
    "gemma3": "fixtures/gemma3-trained",  # offset gains, QK norms
    "no_config": "no-config",  # warning: architecture guessed from the names
}


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("show_all", [False, True], ids=["default", "all"])
@pytest.mark.parametrize("label", SCAN_SOURCES)
def test_scan_table(golden: Golden, workdir: Path, label: str, show_all: bool, width: int) -> None:
    args = ["scan", SCAN_SOURCES[label], *(["--all"] if show_all else [])]
    suffix = "_all" if show_all else ""
    check_view(golden, workdir, f"scan_{label}_table{suffix}_w{width}", args, width)


@pytest.mark.parametrize(
    ("fmt", "extra"),
    [("json", []), ("csv", []), ("markdown", []), ("markdown", ["--all"])],
    ids=["json", "csv", "markdown", "markdown_all"],
)
@pytest.mark.parametrize("label", SCAN_SOURCES)
def test_scan_formats(
    golden: Golden, workdir: Path, label: str, fmt: str, extra: list[str]
) -> None:
    args = ["scan", SCAN_SOURCES[label], "-f", fmt, *extra]
    suffix = "_all" if extra else ""
    check_view(golden, workdir, f"scan_{label}_{fmt}{suffix}", args)


# --- diff -----------------------------------------------------------------------------------------

DIFF_PAIRS = {
    "llama": ["fixtures/llama-init", "fixtures/llama-trained"],
    "deepseek_v3": ["fixtures/deepseek_v3-init", "fixtures/deepseek_v3-trained"],
}


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("show_all", [False, True], ids=["default", "all"])
@pytest.mark.parametrize("label", DIFF_PAIRS)
def test_diff_table(golden: Golden, workdir: Path, label: str, show_all: bool, width: int) -> None:
    args = ["diff", *DIFF_PAIRS[label], *(["--all"] if show_all else [])]
    suffix = "_all" if show_all else ""
    check_view(golden, workdir, f"diff_{label}_table{suffix}_w{width}", args, width)


@pytest.mark.parametrize(
    ("fmt", "extra"),
    [("json", []), ("csv", []), ("markdown", []), ("markdown", ["--all"])],
    ids=["json", "csv", "markdown", "markdown_all"],
)
@pytest.mark.parametrize("label", DIFF_PAIRS)
def test_diff_formats(
    golden: Golden, workdir: Path, label: str, fmt: str, extra: list[str]
) -> None:
    args = ["diff", *DIFF_PAIRS[label], "-f", fmt, *extra]
    suffix = "_all" if extra else ""
    check_view(golden, workdir, f"diff_{label}_{fmt}{suffix}", args)


# --- series ---------------------------------------------------------------------------------------

# `-j 1`: always serial, so the "(serial)" in the header does not depend on the machine's speed.
SERIES = ["series", "run", "-j", "1"]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("show_all", [False, True], ids=["default", "all"])
def test_series_table(golden: Golden, workdir: Path, show_all: bool, width: int) -> None:
    args = [*SERIES, *(["--all"] if show_all else [])]
    suffix = "_all" if show_all else ""
    check_view(golden, workdir, f"series_table{suffix}_w{width}", args, width)


@pytest.mark.parametrize(
    ("fmt", "extra"),
    [("json", []), ("csv", []), ("markdown", []), ("markdown", ["--all"])],
    ids=["json", "csv", "markdown", "markdown_all"],
)
def test_series_formats(golden: Golden, workdir: Path, fmt: str, extra: list[str]) -> None:
    suffix = "_all" if extra else ""
    check_view(golden, workdir, f"series_{fmt}{suffix}", [*SERIES, "-f", fmt, *extra])


# --- check ----------------------------------------------------------------------------------------

CHECK_CASES = {
    "fail_band": ["fixtures/deepseek-v3-mtp"],
    "pass_init": ["fixtures/llama-init", "--expect-init"],
    "fail_drift": [
        "fixtures/llama-trained",
        "--baseline",
        "fixtures/llama-init",
        "--max-drift",
        "0.3",
    ],
    "pass_drift": [
        "fixtures/deepseek_v3-trained",
        "--baseline",
        "fixtures/deepseek_v3-trained",
        "--max-drift",
        "0",
        "--scope",
        "all",
        "--low",
        "0.01",
        "--high",
        "10",
    ],
}
CHECK_EXIT = {"fail_band": 1, "pass_init": 0, "fail_drift": 1, "pass_drift": 0}


@pytest.mark.parametrize("fmt", ["text", "json", "junit"])
@pytest.mark.parametrize("label", CHECK_CASES)
def test_check_formats(golden: Golden, workdir: Path, label: str, fmt: str) -> None:
    args = ["check", *CHECK_CASES[label], "-f", fmt]
    result = check_view(golden, workdir, f"check_{label}_{fmt}", args)
    assert result.exit_code == CHECK_EXIT[label]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("label", ["fail_band", "fail_drift"])
def test_check_text_widths(golden: Golden, workdir: Path, label: str, width: int) -> None:
    """check's text is lines, not a table: the same at every width (and never cut)."""
    args = ["check", *CHECK_CASES[label]]
    check_view(golden, workdir, f"check_{label}_text_w{width}", args, width)


@pytest.mark.parametrize(
    "args",
    [["scan", "fixtures/deepseek-v3-mtp"], ["diff", *DIFF_PAIRS["deepseek_v3"]], SERIES],
    ids=["scan", "diff", "series"],
)
def test_wide(golden: Golden, workdir: Path, args: list[str]) -> None:
    """`--wide` at 80 columns: full names, every column."""
    check_view(golden, workdir, f"{args[0]}_wide_w80", [*args, "--wide"], 80)


@pytest.mark.parametrize("label", CHECK_CASES)
def test_check_github(golden: Golden, workdir: Path, label: str) -> None:
    """`-f github`: the annotations on stdout and what is appended to $GITHUB_STEP_SUMMARY."""
    summary = workdir / "summary.md"
    summary.write_text("earlier step\n", encoding="utf-8")  # appended to, never overwritten
    args = ["check", *CHECK_CASES[label], "-f", "github"]
    result = run_cli(args, env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert result.exit_code == CHECK_EXIT[label], result.stderr
    extra = f"--- $GITHUB_STEP_SUMMARY\n{summary.read_text(encoding='utf-8')}"
    golden(f"views/check_{label}_github.txt", record(args, result, workdir, 120, extra))


# --- HTML pages (issue 26): whole, one per report; what a reader sees: tests/test_html_reader.py

HTML_CASES = {
    "scan_deepseek_v3_mtp": ["scan", "fixtures/deepseek-v3-mtp"],  # q_a/kv_a latents, MTP
    "scan_gemma3": ["scan", "fixtures/gemma3-trained"],  # q_norm/k_norm, offset gains
    "diff_deepseek_v3": ["diff", *DIFF_PAIRS["deepseek_v3"]],
    "series": SERIES,
    "check_fail_band": ["check", *CHECK_CASES["fail_band"]],
}


@pytest.mark.parametrize("label", HTML_CASES)
def test_html(golden: Golden, workdir: Path, label: str) -> None:
    check_view(golden, workdir, f"{label}_html", [*HTML_CASES[label], "-f", "html"])


# --- gates: exact FAIL lines and exit codes -------------------------------------------------------

GATES = {
    "scan_out_of_band": (["scan", "fixtures/deepseek-v3-mtp", "--fail-on", "out-of-band"], 1),
    "scan_out_of_band_pass": (["scan", "fixtures/llama-init", "--fail-on", "out-of-band"], 0),
    "diff_band_change": (
        ["diff", *DIFF_PAIRS["llama"], "--fail-on", "band-change", "-f", "json"],
        1,
    ),
    "diff_max_drift": (["diff", *DIFF_PAIRS["llama"], "--max-drift", "0.1", "-f", "csv"], 1),
    "series_out_of_band": ([*SERIES, "--fail-on", "out-of-band"], 1),
    "series_max_drift": ([*SERIES, "--max-drift", "0.05", "--scope", "all", "-f", "csv"], 1),
}


@pytest.mark.parametrize("label", GATES)
def test_gate(golden: Golden, workdir: Path, label: str) -> None:
    args, code = GATES[label]
    result = check_view(golden, workdir, f"gate_{label}", args)
    assert result.exit_code == code, result.stderr
    fails = [line for line in result.stderr.splitlines() if line.startswith("FAIL:")]
    assert bool(fails) == (code == 1), result.stderr


# --- the widths really apply ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["scan", "fixtures/deepseek-v3-mtp"], ["diff", *DIFF_PAIRS["deepseek_v3"]], SERIES],
    ids=["scan", "diff", "series"],
)
def test_table_width_follows_columns(workdir: Path, args: list[str]) -> None:
    """CliRunner.invoke(env={"COLUMNS": ...}) sets the width rich uses; the conftest's
    monkeypatched COLUMNS=120 is what a plain invoke gets."""
    out = {width: normalise(run_cli(args, width).stdout, workdir) for width in WIDTHS}
    for width, text in out.items():
        assert max(len(line) for line in text.splitlines()) <= width, (width, text)
    assert out[80] != out[120]
    assert normalise(runner.invoke(app, args).stdout, workdir) == out[120]
    if args[0] == "scan":  # its header panel spans the whole terminal
        assert all(len(text.splitlines()[0]) == width for width, text in out.items())
