"""The `normscope fold` command body, ready for cli.py to register (or paste).

    from normscope.fold.cli_command import fold_command
    app.command("fold", epilog=EXIT_HELP)(fold_command)

The body follows cli.py's rules (check flags, one core call, render one result) and uses its
helpers (`_errors`, `_warn`, `_render`, `_thresholds`, `_at_revision`, `_tripped`), imported when
the command runs; pasted into cli.py, those imports go. The progress bar draws on stderr.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from normscope.fold.pipeline import ProgressCallback


class FoldFormat(str, Enum):
    """Formats of `fold` (the same as scan's)."""

    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"


class FoldFailOn(str, Enum):
    """What makes `fold` exit 1."""

    never = "never"
    out_of_band = "out-of-band"


@contextlib.contextmanager
def progress_bar(quiet: bool) -> Iterator[ProgressCallback | None]:
    """A rich bar with bytes/s on stderr, fed by the loader's callback (None when quiet)."""
    if quiet:
        yield None
        return
    from rich.console import Console
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
        console=Console(stderr=True),
        transient=True,
    )
    task = bar.add_task("Folding", total=None)

    def update(event: object) -> None:
        done, total = getattr(event, "bytes_done", 0), getattr(event, "bytes_total", None)
        bar.update(task, completed=done, total=total)

    with bar:
        yield update


def fold_command(
    source: Annotated[
        str,
        typer.Argument(
            help="A .safetensors file, a directory of shards, or a Hub model repo "
            "(org/name[@revision], hf://org/name).",
            show_default=False,
        ),
    ],
    format: Annotated[FoldFormat, typer.Option("--format", "-f", help="Output format.")] = (
        FoldFormat.table
    ),
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="Write the output to this file ('-' for stdout)."),
    ] = None,
    device: Annotated[
        str,
        typer.Option("--device", help="auto (CUDA when torch sees one), cpu, cuda or cuda:N."),
    ] = "auto",
    max_memory: Annotated[
        str,
        typer.Option(
            "--max-memory",
            help="Budget for matrix blocks in flight (e.g. 256MB, 2GB); larger matrices are "
            "read in row blocks.",
        ),
    ] = "2GB",
    experts: Annotated[
        str,
        typer.Option(
            "--experts",
            help="MoE: 'shared' (router + shared experts), 'all', or N routed experts per layer "
            "spread over the range (reported as a sample).",
        ),
    ] = "8",
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print only how many bytes a fold would read; read none."),
    ] = False,
    show_all: Annotated[bool, typer.Option("--all", help="List every folded norm.")] = False,
    low: Annotated[float, typer.Option("--low", help="Folded ratio below which: collapse.")] = 0.4,
    high: Annotated[
        float, typer.Option("--high", help="Folded ratio above which: explosion.")
    ] = 1.8,
    fail_on: Annotated[
        FoldFailOn,
        typer.Option("--fail-on", help="Exit 1 when a folded norm in --scope is out of band."),
    ] = FoldFailOn.never,
    scope: Annotated[
        str, typer.Option("--scope", help="Norms the gate looks at (as scan: 'final,mtp', 'all').")
    ] = "final,mtp",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No warnings or progress.")] = False,
    revision: Annotated[
        str | None,
        typer.Option("--revision", help="Branch, tag or commit of Hub repo sources."),
    ] = None,
) -> None:
    """Fold each norm gain into the matrices it feeds: folded ratio, compensation, MTP balance."""
    from normscope.cli import (
        OutputFormat,
        _at_revision,
        _errors,
        _render,
        _thresholds,
        _tripped,
        _warn,
    )

    thresholds = _thresholds(low, high)
    source = _at_revision(source, revision)
    with _errors():
        from normscope.fold import FoldOptions, fold, parse_memory
        from normscope.fold import report as render
        from normscope.report import human_bytes
        from normscope.scope import parse_scope

        parse_scope(scope)  # a bad scope is an error before any file is read
        options = FoldOptions(
            device=device,
            max_memory=parse_memory(max_memory),
            experts=experts,
            dry_run=dry_run,
            thresholds=thresholds,
            scope=scope,
        )
        with progress_bar(quiet or dry_run) as progress:
            result = fold(source, options, progress)
        _warn(result.warnings, quiet)
        if dry_run:
            plan = result.plan
            typer.echo(
                f"{plan.bytes_planned} bytes ({human_bytes(plan.bytes_planned)}) in "
                f"{plan.tensors} matrices would be read from {result.source}"
            )
            return
        _render(
            OutputFormat(format.value),
            output,
            table=lambda width: render.render_fold_table(result, show_all, width),
            json=lambda: render.render_fold_json(result),
            csv=lambda: render.render_fold_csv(result),
            markdown=lambda: render.render_fold_markdown(result, show_all),
        )
        gated = result.fold_summary.gated_out_of_band
        if fail_on is FoldFailOn.out_of_band and gated:
            _tripped([f"{gated} folded norm(s) in scope '{scope}' are out of band"])
