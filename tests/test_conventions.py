"""The command line's conventions (issue 26): the format `-o`'s extension names, `-h`, help with
examples that parse, help that documents only what each command takes."""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from conftest import REPO_ROOT
from typer.testing import CliRunner, Result

from normscope.cli import app
from normscope.cli.options import EXAMPLES

runner = CliRunner()
FIXTURES = REPO_ROOT / "fixtures"
MTP = str(FIXTURES / "deepseek-v3-mtp")
INIT, TRAINED = str(FIXTURES / "deepseek_v3-init"), str(FIXTURES / "deepseek_v3-trained")
QWEN = [str(FIXTURES / "qwen3-init"), str(FIXTURES / "qwen3-trained")]

COMMANDS = {
    "scan": (["scan", MTP], 0),
    "diff": (["diff", INIT, TRAINED], 0),
    "series": (["series", *QWEN], 0),
    "check": (["check", INIT], 0),
}
"""argv of each command on a fixture, and its exit code."""


def invoke(*args: str | Path) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def _commands() -> dict[str, object]:
    return dict(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


# --- the format from -o's extension -------------------------------------------------------------


def _untimed(path: Path) -> str:
    """The file's text without the wall times that differ from run to run."""
    text = path.read_text(encoding="utf-8")
    return re.sub(r'("seconds": |seconds="| in )[0-9.e-]+( s\b)?', r"\1T\2", text)


@pytest.mark.parametrize(
    ("command", "suffix", "format"),
    [
        *[(c, s, f) for c in ("scan", "diff", "series") for s, f in [(".json", "json")]],
        *[(c, s, f) for c in ("scan", "diff", "series") for s, f in [(".csv", "csv")]],
        *[(c, s, f) for c in ("scan", "diff", "series") for s, f in [(".md", "markdown")]],
        ("scan", ".html", "html"),
        ("scan", ".HTM", "html"),
        ("scan", ".markdown", "markdown"),
        ("check", ".json", "json"),
        ("check", ".xml", "junit"),
    ],
)
def test_the_extension_names_the_format(
    command: str, suffix: str, format: str, tmp_path: Path
) -> None:
    argv, code = COMMANDS[command]
    inferred, explicit = tmp_path / f"report{suffix}", tmp_path / "explicit.txt"
    assert invoke(*argv, "-q", "--no-cache", "-o", inferred).exit_code == code
    assert invoke(*argv, "-q", "--no-cache", "--format", format, "-o", explicit).exit_code == code
    assert _untimed(inferred) == _untimed(explicit)
    if format == "json":
        assert json.loads(inferred.read_text())["schema_version"] >= 1


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_file_without_a_known_extension_gets_the_default(command: str, tmp_path: Path) -> None:
    argv, code = COMMANDS[command]
    assert invoke(*argv, "-q", "-o", tmp_path / "report.txt").exit_code == code
    first = (tmp_path / "report.txt").read_text().splitlines()[0]
    assert first.startswith("╭" if command != "check" else "PASS (16 norms")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["scan", MTP, "--format", "csv", "-o", "r.json"],
            "--format csv contradicts -o r.json (a .json file is json): drop --format, or name "
            "the file for its format",
        ),
        (
            ["diff", INIT, TRAINED, "-f", "table", "-o", "r.html"],
            "--format table contradicts -o r.html (a .html file is html): drop --format, or "
            "name the file for its format",
        ),
        (
            ["series", *QWEN, "-f", "json", "-o", "r.md"],
            "--format json contradicts -o r.md (a .md file is markdown): drop --format, or name "
            "the file for its format",
        ),
        (
            ["check", INIT, "-f", "github", "-o", "r.xml"],
            "--format github contradicts -o r.xml (a .xml file is junit): drop --format, or name "
            "the file for its format",
        ),
        (
            ["fold", MTP, "-f", "markdown", "-o", "r.csv"],
            "--format markdown contradicts -o r.csv (a .csv file is csv): drop --format, or "
            "name the file for its format",
        ),
        (
            ["scan", MTP, "-o", "r.xml"],
            "this command writes no junit (-o r.xml); its formats: table, json, csv, markdown, "
            "html",
        ),
        (
            ["check", INIT, "-o", "r.csv"],
            "this command writes no csv (-o r.csv); its formats: text, json, junit, github, html",
        ),
    ],
)
def test_a_format_the_file_name_contradicts_is_refused(
    argv: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke(*argv)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == f"Error: {message}\n"  # one line, before any work (fold: no torch)
    assert list(tmp_path.iterdir()) == []


def test_stdout_keeps_the_default_format() -> None:
    result = invoke("scan", MTP, "-q", "-o", "-")
    assert result.exit_code == 0 and result.stdout.startswith("╭")


# --- help ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [None, *sorted(EXAMPLES)])
def test_dash_h_is_help(command: str | None) -> None:
    argv = [command] if command else []
    short, long = invoke(*argv, "-h"), invoke(*argv, "--help")
    assert short.exit_code == long.exit_code == 0
    assert short.stdout == long.stdout
    assert "-h, --help" in short.stdout


def test_every_command_has_examples() -> None:
    assert sorted(EXAMPLES) == sorted(_commands())


@pytest.mark.parametrize("command", sorted(EXAMPLES))
def test_help_shows_the_examples_and_they_parse(command: str) -> None:
    text = invoke(command, "--help").stdout
    block = text.split("  Examples:\n", 1)[1].split("\n\n", 1)[0]
    lines = [line.strip() for line in block.splitlines()]
    assert lines == [f"normscope {e}" for e in EXAMPLES[command]]  # as written, not re-wrapped
    for example in EXAMPLES[command]:
        words = shlex.split(example.partition("  #")[0])
        assert words[0] == command
        click_command = _commands()[command]
        click_command.make_context(command, words[1:])  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", sorted(EXAMPLES))
def test_help_names_every_metavar(command: str) -> None:
    text = invoke(command, "--help").stdout
    assert re.findall(r"<(?:str|int|float|path)>|\b(?:TEXT|INTEGER|FLOAT)\b", text) == []


def test_fold_help_documents_only_what_fold_takes() -> None:
    text = " ".join(invoke("fold", "--help").stdout.split())
    assert "--jobs" not in text and "-j" not in text.split()
    assert (
        "--executor [local|dask] local: this machine; dask: the matrices in sets, each set a unit "
        "of work on a Dask cluster (--cluster, else $DASK_SCHEDULER_ADDRESS, else a local one of "
        "min(4, CPUs) workers)" in text.replace("<local|dask>", "[local|dask]")
    )
    assert "--device DEVICE" in text and "--max-memory SIZE" in text
    assert "--experts N|shared|all" in text
    result = invoke("fold", MTP, "--jobs", "2")
    assert result.exit_code == 2 and "No such option: --jobs" in result.stderr


def test_series_executor_help_names_its_jobs() -> None:
    text = " ".join(invoke("series", "--help").stdout.split())
    assert "dask: each checkpoint a unit of work on a Dask cluster" in text
    assert "else a local one of --jobs workers" in text


# --- series: prerequisites before any work -------------------------------------------------------


@pytest.mark.parametrize("flag", ["--tensorboard", "--events"])
def test_series_without_tensorboard_stops_before_measuring(
    flag: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    import normscope.api

    measured: list[object] = []
    monkeypatch.setattr(normscope.api, "run_series", lambda *a, **k: measured.append(a))
    for name in [m for m in sys.modules if m.split(".")[0] == "tensorboard"] + ["tensorboard"]:
        monkeypatch.setitem(sys.modules, name, None)  # every `import tensorboard...` fails
    report = tmp_path / "norms.csv"
    result = invoke("series", *QWEN, "-o", report, flag, tmp_path / "tb")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"Error: {flag} needs the tensorboard package, which is not installed\n"
        "Hint: pip install 'normscope[tensorboard]'\n"
    )
    assert measured == [] and not report.exists() and not (tmp_path / "tb").exists()


# --- a Hub name that is no local path: both facts at once, no hopeless retries -------------------

UNREACHABLE_HINT = (
    "Hint: check the connection or HF_ENDPOINT; with HF_HUB_OFFLINE=1 normscope uses cached "
    "data only\n"
)


@pytest.fixture
def tries(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """huggingface_hub online at a closed port (nothing listens on 9, discard); every request
    normscope makes through huggingface_hub's session counted (its URL), no backoff waits."""
    from types import SimpleNamespace

    from hubserver import point_huggingface_hub_at
    from huggingface_hub import utils as hf_utils

    point_huggingface_hub_at(SimpleNamespace(endpoint="http://127.0.0.1:9"), monkeypatch, tmp_path)
    urls: list[str] = []
    real = hf_utils.get_session

    class Counted:
        def __init__(self, session: object) -> None:
            self.session = session

        def stream(self, method: str, url: str, **kwargs: object) -> object:
            urls.append(url)
            return self.session.stream(method, url, **kwargs)  # type: ignore[attr-defined]

    monkeypatch.setattr(hf_utils, "get_session", lambda: Counted(real()))
    return urls


def test_a_mistyped_path_with_no_hub_says_both_facts_after_one_try(tries: list[str]) -> None:
    result = invoke("scan", "org/nam")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == (
        "Error: cannot reach the Hub at http://127.0.0.1:9: [Errno 111] Connection refused "
        "(org/nam@main); no local path 'org/nam' exists either\n" + UNREACHABLE_HINT
    )
    assert tries == ["http://127.0.0.1:9/api/models/org/nam/revision/main"]  # refused: not retried


def test_an_unresolvable_hub_host_is_tried_once(
    tries: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://hub.invalid")  # RFC 6761: never resolves
    result = invoke("scan", "org/nam@v1")
    assert result.exit_code == 2 and result.stdout == ""
    first, hint = result.stderr.splitlines(keepends=True)
    assert re.fullmatch(
        r"Error: cannot reach the Hub at http://hub\.invalid: \[Errno -?\d+\] [^()]+ "
        r"\(org/nam@v1\); no local path 'org/nam' exists either\n",
        first,
    ), first
    assert hint == UNREACHABLE_HINT
    assert len(tries) == 1


@pytest.mark.parametrize("source", ["hf://org/nam", "https://huggingface.co/org/nam"])
def test_a_hub_name_with_no_hub_never_speaks_of_a_local_path(source: str, tries: list[str]) -> None:
    result = invoke("scan", source)
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: cannot reach the Hub at http://127.0.0.1:9: [Errno 111] Connection refused "
        "(org/nam@main)\n" + UNREACHABLE_HINT
    )
    assert len(tries) == 1


def test_what_is_worth_retrying() -> None:
    import socket

    from huggingface_hub.utils import httpx

    from normscope.sources.hub.retry import hopeless

    def chained(outer: Exception, inner: BaseException) -> Exception:
        outer.__cause__ = inner
        return outer

    assert hopeless(chained(httpx.ConnectError("x"), ConnectionRefusedError(111, "refused")))
    assert hopeless(chained(httpx.ConnectError("x"), socket.gaierror(-2, "unknown name")))
    assert not hopeless(chained(httpx.ConnectError("x"), TimeoutError("slow")))
    assert not hopeless(httpx.ReadTimeout("slow body"))
    assert not hopeless(httpx.RemoteProtocolError("broken body"))


@pytest.mark.parametrize(
    ("source", "also"),
    [
        ("org/nam", "; no local path 'org/nam' exists either"),
        ("hf://org/nam", ""),
        ("https://huggingface.co/org/nam", ""),
        ("https://huggingface.co/org/nam/tree/main", ""),
    ],
)
def test_offline_a_hub_name_says_what_it_is(source: str, also: str) -> None:
    # conftest's hermetic fixture: HF_HUB_OFFLINE=1, empty caches.
    result = invoke("scan", source)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == (
        f"Error: offline (HF_HUB_OFFLINE=1) and this revision is not cached (org/nam@main){also}\n"
        "Hint: run once online to cache its headers and norms, or download the model with "
        "`hf download org/nam`\n"
    )


def test_offline_an_hf_uri_at_a_revision_keeps_its_kind() -> None:
    result = invoke("scan", "hf://org/nam", "--revision", "v2")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == (
        "Error: offline (HF_HUB_OFFLINE=1) and this revision is not cached (org/nam@v2)"
    )


@pytest.mark.parametrize(
    ("source", "also"),
    [("org/nam", "; no local path 'org/nam' exists either"), ("hf://org/nam", "")],
)
def test_a_repo_the_hub_lacks_is_said_with_the_local_path_once(
    source: str, also: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from hubserver import FakeHub, point_huggingface_hub_at, running

    with running(FakeHub()) as hub:
        point_huggingface_hub_at(hub, monkeypatch, tmp_path)
        result = invoke("scan", source)
        assert [s.status for s in hub.served] == [401]  # answered, so not retried
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == (
        f"Error: no such Hub model repo, or it is private (org/nam){also}\n"
        "Hint: check the name; for a private repo, log in with `hf auth login` or set HF_TOKEN\n"
    )


# --- --token ------------------------------------------------------------------------------------

SECRET = "hf_normscopeTestToken0123456789"


@pytest.fixture
def private_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[object]:
    """The loopback Hub holding a private copy of the Qwen3 fixture that only SECRET may read."""
    from hubserver import FakeHub, point_huggingface_hub_at, running
    from huggingface_hub.utils import close_session

    with running(FakeHub()) as hub:
        hub.add_repo("org/private", Path(QWEN[0]), private=True)
        hub.add_repo("org/private2", Path(QWEN[1]), private=True)
        hub.grant(SECRET, "org/private", "org/private2")
        point_huggingface_hub_at(hub, monkeypatch, tmp_path)
        yield hub
        close_session()


@pytest.mark.parametrize(
    "argv",
    [
        ["scan", "org/private"],
        ["scan", "org/private", "-f", "json"],
        ["scan", "org/private", "-f", "csv"],
        ["scan", "org/private", "-f", "markdown"],
        ["scan", "org/private", "-f", "html"],
        ["scan", "org/private", "--show-config"],
        ["diff", "org/private", "org/private2", "-f", "json"],
        ["series", "org/private", "org/private2", "-f", "json"],
        ["check", "org/private", "-f", "json"],
        ["check", "org/private", "--show-config"],
        ["fold", "org/private", "--dry-run"],
    ],
)
def test_token_reaches_the_hub_and_no_output(
    argv: list[str], private_hub: Any, tmp_path: Path
) -> None:
    report = tmp_path / "report.out"
    result = invoke("-v", *argv, "--no-cache", "--token", SECRET, "-o", report)
    assert result.exit_code == 0, result.stderr
    asked = [s for s in private_hub.served if s.server == "hub"]
    assert asked or "--show-config" in argv
    assert {s.authorization for s in asked} <= {f"Bearer {SECRET}"}
    assert all(s.authorization is None for s in private_hub.served if s.server == "cdn")
    written = report.read_text(encoding="utf-8") if report.exists() else ""
    for text in (result.stdout, result.stderr, written):
        assert SECRET not in text and "normscopeTestToken" not in text


def test_without_the_token_a_private_repo_is_not_found(private_hub: Any) -> None:
    result = invoke("scan", "org/private")
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "Error: no such Hub model repo, or it is private (org/private); no local path"
    )
    assert all(s.authorization is None for s in private_hub.served)


def test_hf_token_keeps_working(private_hub: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", SECRET)
    assert invoke("scan", "org/private", "-f", "json").exit_code == 0
    assert {s.authorization for s in private_hub.served if s.server == "hub"} == {
        f"Bearer {SECRET}"
    }


def test_the_api_takes_a_token_and_never_shows_it(private_hub: Any) -> None:
    import normscope
    from normscope.settings import Flags, build_settings

    report = normscope.scan("org/private", token=SECRET)
    assert report.norms and SECRET not in repr(report)
    assert normscope.check("org/private", token=SECRET).verdict.value == "pass"
    settings = build_settings(Flags(token=SECRET))
    assert settings.scan.token == SECRET
    for shown in (repr(settings), repr(settings.scan), settings.show()):
        assert SECRET not in shown


def test_an_empty_token_is_refused() -> None:
    result = invoke("scan", MTP, "--token", " ")
    assert result.exit_code == 2
    assert result.stderr.endswith("\nError: Invalid value for --token: is empty\n")


# --- shell completion (typer's own) --------------------------------------------------------------

SCRIPT = Path(sys.executable).parent / "normscope"
"""The console script a user's shell runs (completion keys its variable on the program name)."""


def _complete(words: str, **env: str) -> list[str]:
    """What the installed `normscope` answers bash's completion for `words` (the last word
    being completed), as the script `--show-completion bash` prints asks it."""
    import os
    import subprocess

    parts = words.split(" ")
    environ = {
        **os.environ,
        "_NORMSCOPE_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(parts) - 1),
        **env,
    }
    proc = subprocess.run(
        [str(SCRIPT)], env=environ, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return proc.stdout.split()


def test_bash_completes_commands_flags_and_choices() -> None:
    assert SCRIPT.is_file()
    assert _complete("normscope s") == ["scan", "series"]
    assert _complete("normscope ch") == ["check"]  # a command registered from cli/gate.py
    assert "--token" in _complete("normscope scan --to")
    assert _complete("normscope fold x --exp") == ["--experts"]  # from cli/folding.py
    assert _complete("normscope scan x --format ") == ["table", "json", "csv", "markdown", "html"]
    assert _complete("normscope check x -f ") == ["text", "json", "junit", "github", "html"]


def test_show_and_install_completion(tmp_path: Path) -> None:
    import os
    import subprocess

    env = {**os.environ, "HOME": str(tmp_path), "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    shown = run("--show-completion", "bash")
    assert shown.returncode == 0
    assert "_NORMSCOPE_COMPLETE=complete_bash" in shown.stdout
    assert "complete -o default -F _normscope_completion normscope" in shown.stdout
    installed = run("--install-completion", "bash")
    assert installed.returncode == 0, installed.stderr
    script = tmp_path / ".bash_completions" / "normscope.sh"
    assert script.read_text().strip() == shown.stdout.strip()
    assert f"source '{script}'" in (tmp_path / ".bashrc").read_text()


def test_completion_detects_no_shell_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    import shellingham

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("shell detection at start-up")

    monkeypatch.setattr(shellingham, "detect_shell", never)
    assert invoke("--version").exit_code == 0
    assert invoke("-h").exit_code == 0
    assert "--install-completion" in invoke("-h").stdout
    assert invoke("scan", MTP, "-q", "-f", "json").exit_code == 0


# --- fold through pipes -------------------------------------------------------------------------


@pytest.mark.parametrize("merged", [False, True])
def test_fold_through_pipes_writes_only_its_table(merged: bool) -> None:
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-m", "normscope", "fold", MTP, "--device", "cpu"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merged else subprocess.PIPE,
        text=True,
        encoding="utf-8",
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.startswith("╭") and proc.stdout.endswith("\n")  # no blank first line
    assert "\n\n\n" not in proc.stdout
    if not merged:
        assert proc.stderr == ""  # was a lone newline: rich's bar stopped on a non-terminal
