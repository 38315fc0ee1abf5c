"""The `normscope` command line: parse arguments, call the core, render, exit.

The only module that prints. stdout carries data (the table, JSON, CSV, Markdown); warnings,
errors and hints go to stderr. Exit codes:

  0  report produced; no --fail-on check tripped
  1  report produced; a --fail-on check tripped
  2  nothing analysed: a usage error or bad input (path, file, config, architecture)
  3  internal error (a bug in normscope): traceback on stderr
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import traceback
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from normscope.schema import Report

from normscope import __version__

EXIT_HELP = """Exit codes: 0 report produced, no --fail-on check tripped; 1 a --fail-on check
tripped; 2 nothing analysed (usage error, bad path or file, unknown architecture); 3 internal
error (a bug: please report it with NORMSCOPE_DEBUG=1 output)."""

app = typer.Typer(
    name="normscope",
    help="Are the normalization scale vectors in this checkpoint healthy?\n\n" + EXIT_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
)


class OutputFormat(str, Enum):
    """Formats of `scan`."""

    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"


class FailOn(str, Enum):
    """What makes `scan` exit 1."""

    never = "never"
    out_of_band = "out-of-band"


class ParamChoice(str, Enum):
    """Values of --parametrization."""

    standard = "standard"
    offset = "offset"


class ScopeChoice(str, Enum):
    """Values of --scope."""

    default = "default"
    all = "all"


# Shared parameters, defined once (the huggingface_hub `_cli_utils.py` pattern).
SourceArg = Annotated[
    str, typer.Argument(help="A .safetensors file or a directory of shards.", show_default=False)
]
FormatOpt = Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")]
OutputOpt = Annotated[
    str | None,
    typer.Option("--output", "-o", help="Write the output to this file ('-' for stdout)."),
]
LowOpt = Annotated[float, typer.Option("--low", help="Ratio below which a norm has collapsed.")]
HighOpt = Annotated[float, typer.Option("--high", help="Ratio above which a norm has exploded.")]
ParamOpt = Annotated[
    ParamChoice | None,
    typer.Option("--parametrization", help="Override the architecture rules for every norm."),
]
ScopeOpt = Annotated[
    ScopeChoice,
    typer.Option("--scope", help="Norms --fail-on looks at: default = final + MTP norms."),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No warnings on stderr.")]


def _stderr() -> object:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(message: str, hint: str | None = None, code: int = 2) -> NoReturn:
    console = _stderr()
    console.print(f"[bold red]Error:[/] {message}", markup=True)  # type: ignore[attr-defined]
    if hint:
        console.print(f"[bold]Hint:[/] {hint}")  # type: ignore[attr-defined]
    raise typer.Exit(code)


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Turn NormscopeError into one line + exit 2, and anything unexpected into exit 3."""
    from normscope.errors import NormscopeError

    try:
        yield
    except typer.Exit:
        raise
    except NormscopeError as exc:
        if os.environ.get("NORMSCOPE_DEBUG"):
            traceback.print_exc()
        _fail(exc.message, exc.hint)
    except KeyboardInterrupt:
        _fail("interrupted", code=130)
    except Exception:
        traceback.print_exc()
        _fail("internal error in normscope (a bug): please report the traceback above", code=3)


def _warn(warnings: tuple[str, ...] | list[str], quiet: bool) -> None:
    if quiet or not warnings:
        return
    console = _stderr()
    for w in warnings:
        console.print(f"[yellow]Warning:[/] {w}", markup=True)  # type: ignore[attr-defined]


def write_output(text: str, output: str | None) -> None:
    """Write to stdout, or atomically to a file (never a half-written file on failure)."""
    if output is None or output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    target = Path(output)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        _fail(f"output directory does not exist ({directory})")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _render_table_text(report: Report, show_all: bool, to_terminal: bool) -> str | None:
    """Print the table to stdout (to_terminal) or return it as plain text for a file."""
    from rich.console import Console

    from normscope.report import render_table

    if to_terminal:
        console = Console(highlight=False)
        for r in render_table(report, show_all, console.width):
            console.print(r)
        return None
    with open(os.devnull, "w") as sink:
        console = Console(record=True, width=120, color_system=None, file=sink)
        for r in render_table(report, show_all, 120):
            console.print(r)
        return console.export_text()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"normscope {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Are the normalization scale vectors in this checkpoint healthy?"""


@app.command(epilog=EXIT_HELP)
def scan(
    source: SourceArg,
    format: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    show_all: Annotated[bool, typer.Option("--all", help="List every norm in the table.")] = False,
    low: LowOpt = 0.4,
    high: HighOpt = 1.8,
    parametrization: ParamOpt = None,
    fail_on: Annotated[
        FailOn, typer.Option("--fail-on", help="Exit 1 when a norm in --scope is out of band.")
    ] = FailOn.never,
    scope: ScopeOpt = ScopeChoice.default,
    quiet: QuietOpt = False,
) -> None:
    """Report every norm gain of one checkpoint: statistics, band, role and parametrization."""
    from normscope.schema import Parametrization, Thresholds

    if not 0 < low < high:
        raise typer.BadParameter("need 0 < --low < --high", param_hint="--low/--high")
    with _errors():
        from normscope import report as render
        from normscope.scan import ScanOptions, Scope
        from normscope.scan import scan as run_scan

        options = ScanOptions(
            thresholds=Thresholds(low=low, high=high),
            parametrization=Parametrization(parametrization.value) if parametrization else None,
            scope=Scope(scope.value),
        )
        result = run_scan(source, options)
        _warn(result.warnings, quiet)
        if format is OutputFormat.table:
            text = _render_table_text(result, show_all, output in (None, "-"))
        elif format is OutputFormat.json:
            text = render.render_json(result)
        elif format is OutputFormat.csv:
            text = render.render_csv(result)
        elif format is OutputFormat.markdown:
            text = render.render_markdown(result, show_all)
        else:  # pragma: no cover - exhaustive over OutputFormat
            raise AssertionError(format)
        if text is not None:
            write_output(text, output)
        if fail_on is FailOn.out_of_band and result.summary.gated_out_of_band:
            _stderr().print(  # type: ignore[attr-defined]
                f"[bold red]FAIL:[/] {result.summary.gated_out_of_band} norm(s) in scope "
                f"'{scope.value}' are out of band [{low}, {high}]"
            )
            raise typer.Exit(1)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit:
        raise
    except BaseException:  # pragma: no cover - _errors() handles errors inside commands
        traceback.print_exc()
        sys.exit(3)
