"""Start-up is paid by every `normscope` command: what `--version` and `--help` import.

typer is the command line's framework, so its import is the floor of `--help`; everything
beyond it (numpy, rich, pandas, the renderers, the sources, the API) waits inside the commands.
`--version` answers before typer is imported. (Timings are in benchmarks/RESULTS.md; tests
assert no time.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import normscope

ROOT = Path(__file__).resolve().parent.parent

# what the command line may load for `--help` beyond typer: its own thin modules, the closed sets
# and the exit codes (the flags' choices and defaults), the version
HELP_MODULES = {
    "normscope",
    "normscope.cli",
    "normscope.cli.app",
    "normscope.cli.folding",
    "normscope.cli.gate",
    "normscope.cli.inputs",
    "normscope.cli.options",
    "normscope.cli.output",
    "normscope.cli.runs",
    "normscope.enums",
    "normscope.exitcodes",
    "normscope.version",
}
HEAVY = ("numpy", "rich", "pandas", "huggingface_hub", "torch", "pydantic", "matplotlib")


def _loaded(*args: str) -> tuple[str, dict[str, list[str]]]:
    code = (
        "import contextlib, io, json, sys\n"
        "from normscope.cli import main\n"
        f"sys.argv = ['normscope', *{list(args)!r}]\n"
        "text = io.StringIO()\n"
        "with contextlib.redirect_stdout(text):\n"
        "    try:\n        main()\n    except SystemExit as exc:\n"
        "        assert exc.code in (0, None), exc.code\n"
        "mods = sorted(sys.modules)\n"
        "print(json.dumps({'out': text.getvalue(),"
        " 'normscope': [m for m in mods if m.split('.')[0] == 'normscope'],"
        " 'typer': [m for m in mods if m.split('.')[0] == 'typer'],"
        f" 'heavy': [m for m in mods if m.split('.')[0] in {HEAVY!r}]}}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NORMSCOPE_DEBUG"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    data = json.loads(done.stdout)
    return data.pop("out"), data


def test_version_imports_neither_typer_nor_the_commands() -> None:
    out, loaded = _loaded("--version")
    assert out == f"normscope {normscope.__version__}\n"
    assert loaded == {
        "normscope": ["normscope", "normscope.cli", "normscope.version"],
        "typer": [],
        "heavy": [],
    }


@pytest.mark.parametrize("args", [("--help",), ("-h",), ("scan", "--help"), ("fold", "--help")])
def test_help_imports_typer_and_the_thin_command_modules_only(args: tuple[str, ...]) -> None:
    out, loaded = _loaded(*args)
    assert "Usage: normscope" in out
    assert loaded["heavy"] == []
    assert set(loaded["normscope"]) <= HELP_MODULES, sorted(set(loaded["normscope"]) - HELP_MODULES)
    assert "typer.main" in loaded["typer"]


def test_version_among_other_flags_still_goes_through_typer() -> None:
    # only the exact `normscope --version` takes the short path; typer answers the rest
    out, loaded = _loaded("--verbose", "--version")
    assert out == f"normscope {normscope.__version__}\n"
    assert "typer.main" in loaded["typer"]
