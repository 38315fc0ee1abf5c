"""Where the command line's output goes: data to stdout or an `-o` file, the rest to stderr.

stdout carries data only (the table, JSON, CSV, Markdown, JUnit); warnings, FAIL lines, errors
and hints go to stderr through one rich console. A file is written atomically, only once the
result exists, so a failure never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer

from normscope.cli.options import OutputFormat
from normscope.exitcodes import ExitCode, Terminated

if TYPE_CHECKING:
    from rich.console import Console

    from normscope.gates import GateResult
    from normscope.render.common import View

FORMAT_BY_EXTENSION = {
    ".json": "json",
    ".csv": "csv",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".xml": "junit",
}
"""The format an `-o` file's name implies (`check`: .xml is JUnit)."""


def stderr() -> Console:
    """The console for everything that is not data."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, hint: str | None = None, code: int = ExitCode.unjudged) -> NoReturn:
    """One `Error:` line (and a `Hint:` line), then exit."""
    from rich.markup import escape

    # NOTE: messages carry user text (paths, tensor names): escape it, or `[x]` in a path is
    # swallowed as a style and `[/]` raises MarkupError.
    console = stderr()
    console.print(f"[bold red]Error:[/] {escape(message)}", markup=True)
    if hint:
        console.print(f"[bold]Hint:[/] {escape(hint)}")
    raise typer.Exit(code)


@contextlib.contextmanager
def errors() -> Iterator[None]:
    """The exit-code contract (`normscope.exitcodes`) around a command: NormscopeError -> one
    line + exit 2 (a UsageError as typer's usage error); SIGINT -> 130, SIGTERM -> 143; anything
    unexpected -> traceback + exit 3."""
    from normscope.errors import NormscopeError, UsageError

    with _sigterm_unwinds():
        try:
            yield
        except (typer.Exit, typer.BadParameter):
            raise
        except UsageError as exc:
            raise typer.BadParameter(exc.message, param_hint=exc.param) from None
        except NormscopeError as exc:
            if os.environ.get("NORMSCOPE_DEBUG"):
                traceback.print_exc()
            fail(exc.message, exc.hint)
        except KeyboardInterrupt:
            fail("interrupted", code=ExitCode.interrupted)
        except Terminated:
            fail("terminated", code=ExitCode.terminated)
        except Exception:
            traceback.print_exc()
            fail(
                "internal error in normscope (a bug): please report the traceback above",
                code=ExitCode.internal,
            )


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """While a command runs, SIGTERM raises `Terminated` (finally blocks run, partial files
    are removed, the exit code is 143); the previous handler comes back afterwards."""
    import signal

    def terminate(signum: int, frame: object) -> None:
        raise Terminated()

    try:
        before = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread: the host's handling stands
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def escape_unencodable() -> None:
    """Write what a stream cannot encode as backslash escapes instead of failing.

    NOTE: names come from checkpoints: a file name that is not UTF-8 (`\\udcff` after
    os.fsdecode), a lone surrogate in a config string. JSON escapes them itself (ensure_ascii);
    every other format reaches the stream as text, and one unencodable character must never
    turn a finished report into a traceback (issue #12, C3/C4): it is shown as `\\udcff`.
    """
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(ValueError, OSError):
                reconfigure(errors="backslashreplace")


def warn(warnings: Sequence[str], quiet: bool) -> None:
    """One `Warning:` line each, unless quiet."""
    if quiet or not warnings:
        return
    from rich.markup import escape

    from normscope.render.common import visible

    console = stderr()
    for w in warnings:  # names in warnings are data: no escape code reaches the terminal
        console.print(f"[yellow]Warning:[/] {escape(visible(w))}", markup=True)


_Format = TypeVar("_Format", bound=Enum)


def output_format(given: _Format | None, output: str | None, default: _Format) -> _Format:
    """The format to write: `--format`, else the one `-o`'s extension names, else `default`.

    A file is never given a content its name contradicts (`-o report.html` holding the text
    table): a `--format` that disagrees with the extension, or an extension naming a format
    this command does not write, is one Error line and exit 2, before any work."""
    suffix = Path(output).suffix.lower() if output not in (None, "-", "") else ""
    implied = FORMAT_BY_EXTENSION.get(suffix)
    if implied is None:
        return default if given is None else given
    kinds = type(default)
    if implied not in {k.value for k in kinds}:
        names = ", ".join(k.value for k in kinds)
        fail(f"this command writes no {implied} (-o {output}); its formats: {names}")
    inferred = kinds(implied)
    if given is not None and given is not inferred:
        fail(
            f"--format {given.value} contradicts -o {output} (a {suffix} file is {implied}): "
            "drop --format, or name the file for its format"
        )
    return inferred


def check_output(output: str | None) -> None:
    """Refuse an `-o` that can never be written, before any work is done."""
    if output == "":
        raise typer.BadParameter("empty file name", param_hint="--output")


def write_output(data: str | bytes, output: str | None, what: str = "output") -> None:
    """Write to stdout, or atomically to a file (never a half-written file on failure).

    Raises OutputError when the file cannot be written.
    """
    from normscope.errors import OutputError

    check_output(output)
    if output is None or output == "-":
        with to_stdout():
            if isinstance(data, bytes):
                sys.stdout.buffer.write(data)
            else:
                sys.stdout.write(data)
            sys.stdout.flush()
        return
    # A symlink is followed, so the link stays a link and its target gets the report.
    target = Path(os.path.realpath(output)) if os.path.islink(output) else Path(output)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise OutputError(f"output directory does not exist ({directory})")
    raw = data.encode("utf-8", "backslashreplace") if isinstance(data, str) else data
    if target.exists() and not target.is_file() and not target.is_dir():
        _write_in_place(raw, target, what)
        return
    import tempfile  # only when a file is written: 1.4 ms of every start-up otherwise

    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=directory)
    except OSError as exc:
        raise OutputError(f"cannot write {what}: {exc.strerror} ({target})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
        _umask_mode(tmp)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):  # e.g. -o names a directory: the user's input, exit 2
            raise OutputError(f"cannot write {what}: {exc.strerror} ({target})") from None
        raise


def _write_in_place(raw: bytes, target: Path, what: str) -> None:
    """Write into a device or a FIFO (`-o /dev/null`, a named pipe) as it is: a rename would put
    a regular file in its place (run as root, `-o /dev/null` replaced the machine's /dev/null)."""
    from normscope.errors import OutputError

    try:
        with open(target, "wb") as handle:
            handle.write(raw)
    except OSError as exc:
        raise OutputError(f"cannot write {what}: {exc.strerror} ({target})") from None


@contextlib.contextmanager
def to_stdout() -> Iterator[None]:
    """Write data to stdout. A reader that left (`| head`: a broken pipe) is no error: the rest
    goes nowhere and the verdict still decides the exit code, without a message. Any other
    failure (`> /dev/full`: no space) is an OutputError, exit 2."""
    from normscope.errors import OutputError

    try:
        yield
    except BrokenPipeError:
        _stdout_to_devnull()
    except OSError as exc:
        _stdout_to_devnull()
        raise OutputError(f"cannot write the output: {exc.strerror} (stdout)") from None


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null: what is still buffered must not fail again at exit."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError, AttributeError):  # e.g. CliRunner's in-memory stream
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - lives to exit
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _umask_mode(path: str) -> None:
    """Give a mkstemp file (created 0600) the mode a plain open() would: 0666 minus the umask."""
    mask = os.umask(0o022)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


TableBuilder = Callable[[int], Sequence[Any]]
"""`build(width)`: the rich renderables of a table view for a terminal of that width."""


WIDE = 10_000
"""The console width of `--wide`: no table is ever narrowed."""


def render(format: OutputFormat, output: str | None, view: View) -> None:
    """Render one report's view in `format` to stdout or `output`."""
    if format is OutputFormat.table:
        emit_rich(view.table, output, view.wide)
    elif format is OutputFormat.json:
        write_output(view.json(), output)
    elif format is OutputFormat.csv:
        write_output(view.csv(), output)
    elif format is OutputFormat.markdown:
        write_output(view.markdown(), output)
    elif format is OutputFormat.html:
        write_output(view.html(), output)
    else:  # pragma: no cover - exhaustive over OutputFormat
        raise AssertionError(format)


def emit_rich(build: TableBuilder, output: str | None, wide: bool = False) -> None:
    """Print renderables to the terminal (its width, or $COLUMNS; 80 in a pipe), or write them as
    plain 120-column text to a file; `wide`: as wide as the tables need."""
    from rich.console import Console

    if output in (None, "-"):
        console = _data_console(WIDE if wide else None)
        with to_stdout():
            for r in build(console.width):
                console.print(r)
        return
    width = WIDE if wide else 120
    with open(os.devnull, "w", encoding="utf-8", errors="backslashreplace") as sink:
        recorder = Console(record=True, width=width, color_system=None, file=sink)
        for r in build(width):
            recorder.print(r)
        text = recorder.export_text()
    write_output(text, output)


def _data_console(width: int | None) -> Console:
    """A console for data on stdout whose broken pipe is `to_stdout`'s to handle: rich's own
    answer is SystemExit(1), which would read as "gate tripped"."""
    from rich.console import Console

    class DataConsole(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError

    return DataConsole(highlight=False, width=width)


def report_gate(result: GateResult, quiet: bool) -> None:
    """One FAIL line per violation and exit 1; else, for a gate that judged nothing, one
    Error line naming it and exit 2; its warnings first."""
    warn(result.warnings, quiet)
    if result.failed or result.unjudged:
        from rich.markup import escape  # rich (~15 ms) only when there is a line to print

        from normscope.render.common import visible
    if result.failed:
        console = stderr()
        for v in result.violations:
            console.print(f"[bold red]FAIL:[/] {escape(visible(v.message))}", markup=True)
        raise typer.Exit(ExitCode.tripped)
    if result.unjudged:
        console = stderr()
        for line in result.unjudged[:-1]:
            console.print(f"[bold red]Error:[/] {escape(visible(line))}", markup=True)
        fail(result.unjudged[-1], hint=result.hint)


@contextlib.contextmanager
def series_progress(quiet: bool) -> Iterator[Any]:
    """A progress callback drawing a bar on stderr when it is a terminal (else None)."""
    from normscope.progress import series_bar

    with series_bar(False if quiet else None, None if quiet else stderr()) as update:
        yield update


def transfer_progress(quiet: bool) -> Any:
    """A factory of transient bars for long Hub transfers, on a terminal (else None)."""
    from normscope.progress import bars_allowed

    if quiet or not sys.stderr.isatty() or not bars_allowed():
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    def factory(description: str, total: int) -> Any:
        bar = Progress(
            TextColumn(description),
            BarColumn(),
            MofNCompleteColumn(),
            console=stderr(),
            transient=True,
        )
        task = bar.add_task(description, total=total)
        bar.start()

        class _Task:
            def advance(self, amount: int) -> None:
                bar.advance(task, amount)

            def close(self) -> None:
                bar.stop()

        return _Task()

    return factory


@contextlib.contextmanager
def fold_progress(quiet: bool) -> Iterator[Any]:
    """A bar with bytes/s on stderr, fed by fold's loader: None when quiet, when stderr is no
    terminal (rich's stopped bar left a lone newline there, the blank first line of
    `fold … 2>&1 | less`), or turned off as `progress.bars_allowed` says."""
    from normscope.progress import bars_allowed

    if quiet or not sys.stderr.isatty() or not bars_allowed():
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=stderr(),
        transient=True,
    )
    task = bar.add_task("Folding", total=None)

    def update(event: object) -> None:
        done, total = getattr(event, "bytes_done", 0), getattr(event, "bytes_total", None)
        bar.update(task, completed=done, total=total)

    with bar:
        yield update
