"""The `normscope` command line: parse arguments, call the core, render, exit.

The only module that prints. stdout carries data (the table, JSON, CSV, Markdown, JUnit);
warnings, errors and hints go to stderr. Exit codes:

  0  report produced; no --fail-on check tripped (check: every check passed)
  1  report produced; a --fail-on check tripped (check: an error-severity violation)
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
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from normscope import __version__

# The enums of the schema are the flags' choices (schema.py imports only the standard library).
from normscope.schema import Order, Parametrization

if TYPE_CHECKING:
    from rich.console import Console

EXIT_HELP = """Exit codes: 0 report produced, no --fail-on check tripped; 1 a --fail-on check
tripped (check: a violation of error severity); 2 nothing analysed (usage error, bad path or
file, bad config, unknown architecture); 3 internal error (a bug: please report it with
NORMSCOPE_DEBUG=1 output)."""

app = typer.Typer(
    name="normscope",
    help="Are the normalization scale vectors in this checkpoint healthy?\n\n" + EXIT_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
)


class OutputFormat(str, Enum):
    """Formats of `scan` and `diff`."""

    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"


class CheckFormat(str, Enum):
    """Formats of `check`."""

    text = "text"
    json = "json"
    junit = "junit"
    github = "github"


class FailOn(str, Enum):
    """What makes `scan` exit 1."""

    never = "never"
    out_of_band = "out-of-band"


class DiffFailOn(str, Enum):
    """What makes `diff` exit 1."""

    never = "never"
    band_change = "band-change"
    out_of_band = "out-of-band"


# Shared parameters, defined once (the huggingface_hub `_cli_utils.py` pattern).
SourceArg = Annotated[
    str,
    typer.Argument(
        help="A .safetensors file, a directory of shards, or a Hub model repo "
        "(org/name[@revision], hf://org/name).",
        show_default=False,
    ),
]
RevisionOpt = Annotated[
    str | None,
    typer.Option(
        "--revision",
        help="Branch, tag or commit of Hub repo sources (same as SOURCE@REVISION).",
        show_default=False,
    ),
]
FormatOpt = Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")]
OutputOpt = Annotated[
    str | None,
    typer.Option("--output", "-o", help="Write the output to this file ('-' for stdout)."),
]
AllOpt = Annotated[bool, typer.Option("--all", help="List every norm in the table.")]
LowOpt = Annotated[float, typer.Option("--low", help="Ratio below which a norm has collapsed.")]
HighOpt = Annotated[float, typer.Option("--high", help="Ratio above which a norm has exploded.")]
ParamOpt = Annotated[
    Parametrization | None,
    typer.Option("--parametrization", help="Override the architecture rules for every norm."),
]
ScopeOpt = Annotated[
    str,
    typer.Option(
        "--scope",
        help="Norms the gate looks at: 'final,mtp' (default), 'all', 'role=qk', 'layer>=40', "
        "'module=mtp', 'name=GLOB'; ',' is or, '&' is and.",
    ),
]
MaxDriftOpt = Annotated[
    float | None,
    typer.Option("--max-drift", help="Largest allowed relative change ‖g−g_base‖/‖g_base‖."),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No warnings on stderr.")]


def _stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(message: str, hint: str | None = None, code: int = 2) -> NoReturn:
    from rich.markup import escape

    # NOTE: messages carry user text (paths, tensor names): escape it, or `[x]` in a path is
    # swallowed as a style and `[/]` raises MarkupError.
    console = _stderr()
    console.print(f"[bold red]Error:[/] {escape(message)}", markup=True)
    if hint:
        console.print(f"[bold]Hint:[/] {escape(hint)}")
    raise typer.Exit(code)


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Turn NormscopeError into one line + exit 2, and anything unexpected into exit 3."""
    from normscope.errors import NormscopeError

    try:
        yield
    except (typer.Exit, typer.BadParameter):
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
    from rich.markup import escape

    console = _stderr()
    for w in warnings:
        console.print(f"[yellow]Warning:[/] {escape(w)}", markup=True)


def write_output(data: str | bytes, output: str | None, what: str = "output") -> None:
    """Write to stdout, or atomically to a file (never a half-written file on failure)."""
    if output == "":
        raise typer.BadParameter("empty file name", param_hint="--output")
    if output is None or output == "-":
        if isinstance(data, bytes):
            sys.stdout.buffer.write(data)
        else:
            sys.stdout.write(data)
        sys.stdout.flush()
        return
    target = Path(output)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        _fail(f"output directory does not exist ({directory})")
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=directory)
    except OSError as exc:
        _fail(f"cannot write {what}: {exc.strerror} ({target})")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
        _umask_mode(tmp)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):  # e.g. -o names a directory: the user's input, exit 2
            _fail(f"cannot write {what}: {exc.strerror} ({target})")
        raise


def _umask_mode(path: str) -> None:
    """Give a mkstemp file (created 0600) the mode a plain open() would: 0666 minus the umask."""
    mask = os.umask(0o022)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def _render(
    format: OutputFormat, output: str | None, table: Any, json: Any, csv: Any, markdown: Any
) -> None:
    """Render one result in `format`: `table(width)` gives rich renderables, the others text."""
    if format is OutputFormat.table:
        _emit_rich(table, output)
    elif format is OutputFormat.json:
        write_output(json(), output)
    elif format is OutputFormat.csv:
        write_output(csv(), output)
    elif format is OutputFormat.markdown:
        write_output(markdown(), output)
    else:  # pragma: no cover - exhaustive over OutputFormat
        raise AssertionError(format)


def _warn_empty_scope(matched: int, scope: str, quiet: bool) -> None:
    """A gate that looks at nothing must say so rather than pass silently."""
    if not matched:
        _warn(
            [
                f"no norm matches the scope '{scope}': the gate looked at nothing "
                "(this model may have no final or MTP norm identified; try --scope all)"
            ],
            quiet,
        )


def _tripped(lines: list[str]) -> None:
    """Exit 1 with one FAIL line per tripped gate, if any."""
    if not lines:
        return
    from rich.markup import escape

    console = _stderr()
    for line in lines:
        console.print(f"[bold red]FAIL:[/] {escape(line)}", markup=True)
    raise typer.Exit(1)


def _emit_rich(build: Any, output: str | None) -> None:
    """Print renderables to the terminal, or write them as plain 120-column text to a file.

    `build(width)` returns the renderables for a given width.
    """
    from rich.console import Console

    if output in (None, "-"):
        console = Console(highlight=False)
        for r in build(console.width):
            console.print(r)
        return
    with open(os.devnull, "w") as sink:
        recorder = Console(record=True, width=120, color_system=None, file=sink)
        for r in build(120):
            recorder.print(r)
        text = recorder.export_text()
    write_output(text, output)


def _thresholds(low: float, high: float) -> Any:
    from normscope.schema import Thresholds

    if not 0 < low < high:
        raise typer.BadParameter("need 0 < --low < --high", param_hint="--low/--high")
    return Thresholds(low=low, high=high)


def _at_revision(source: str, revision: str | None) -> str:
    """Fold --revision into a Hub source (org/name@rev); a usage error where it cannot apply."""
    if revision is None:
        return source
    from normscope.errors import UsageError
    from normscope.sources.hub import with_revision

    try:
        return with_revision(source, revision)
    except UsageError as exc:
        raise typer.BadParameter(exc.message, param_hint=exc.param) from None


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
    show_all: AllOpt = False,
    low: LowOpt = 0.4,
    high: HighOpt = 1.8,
    parametrization: ParamOpt = None,
    fail_on: Annotated[
        FailOn, typer.Option("--fail-on", help="Exit 1 when a norm in --scope is out of band.")
    ] = FailOn.never,
    scope: ScopeOpt = "final,mtp",
    quiet: QuietOpt = False,
    revision: RevisionOpt = None,
) -> None:
    """Report every norm gain of one checkpoint: statistics, band, role and parametrization."""
    thresholds = _thresholds(low, high)
    source = _at_revision(source, revision)
    with _errors():
        from normscope import report as render
        from normscope.scanner import ScanOptions
        from normscope.scanner import scan as run_scan
        from normscope.scope import parse_scope

        parse_scope(scope)  # a bad scope is an error before any file is read
        options = ScanOptions(thresholds, parametrization, scope)
        result = run_scan(source, options)
        _warn(result.warnings, quiet)
        _render(
            format,
            output,
            table=lambda width: render.render_table(result, show_all, width),
            json=lambda: render.render_json(result),
            csv=lambda: render.render_csv(result),
            markdown=lambda: render.render_markdown(result, show_all),
        )
        if fail_on is FailOn.out_of_band:
            selector = parse_scope(scope)
            _warn_empty_scope(sum(1 for n in result.norms if selector(n)), scope, quiet)
        if fail_on is FailOn.out_of_band and result.summary.gated_out_of_band:
            _tripped(
                [
                    f"{result.summary.gated_out_of_band} norm(s) in scope "
                    f"'{result.summary.scope}' are out of band [{low:g}, {high:g}]"
                ]
            )


@app.command(epilog=EXIT_HELP)
def diff(
    a: Annotated[str, typer.Argument(help="The earlier (or base) checkpoint.", show_default=False)],
    b: Annotated[
        str, typer.Argument(help="The later (or changed) checkpoint.", show_default=False)
    ],
    format: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    show_all: AllOpt = False,
    low: LowOpt = 0.4,
    high: HighOpt = 1.8,
    parametrization: ParamOpt = None,
    fail_on: Annotated[
        DiffFailOn,
        typer.Option("--fail-on", help="Exit 1 on a band change, or on B out of band (in scope)."),
    ] = DiffFailOn.never,
    max_drift: MaxDriftOpt = None,
    scope: ScopeOpt = "final,mtp",
    quiet: QuietOpt = False,
    revision: RevisionOpt = None,
) -> None:
    """Compare the norms of two checkpoints: drift, cosine, band changes, channels that moved."""
    thresholds = _thresholds(low, high)
    a, b = _at_revision(a, revision), _at_revision(b, revision)
    if max_drift is not None and max_drift < 0:
        raise typer.BadParameter("must be >= 0", param_hint="--max-drift")
    with _errors():
        from normscope import render_diff
        from normscope.compare import diff as run_diff
        from normscope.scanner import ScanOptions
        from normscope.scope import parse_scope

        selector = parse_scope(scope)
        result = run_diff(a, b, ScanOptions(thresholds, parametrization, scope))
        _warn(result.warnings, quiet)
        _render(
            format,
            output,
            table=lambda width: render_diff.render_diff_table(result, show_all, width),
            json=lambda: render_diff.render_json(result),
            csv=lambda: render_diff.render_diff_csv(result),
            markdown=lambda: render_diff.render_diff_markdown(result, show_all),
        )
        scoped = [d for d in result.norms if selector(d)]
        if fail_on is not DiffFailOn.never or max_drift is not None:
            _warn_empty_scope(len(scoped), scope, quiet)
        tripped = []
        if fail_on is DiffFailOn.band_change:
            tripped += [
                f"{d.name} changed band {d.band_a.value} -> {d.band_b.value}"
                for d in scoped
                if d.band_changed
            ]
        if fail_on is DiffFailOn.out_of_band:
            tripped += [
                f"{d.name} is out of band in B ({d.band_b.value}, ratio {d.ratio_b:.3f})"
                for d in scoped
                if d.band_b.out_of_band
            ]
        if max_drift is not None:
            tripped += [
                f"{d.name} moved {100 * d.rel_change:.1f}% (limit {100 * max_drift:g}%)"
                for d in scoped
                if not d.rel_change <= max_drift
            ]
        _tripped(tripped)


@app.command(epilog=EXIT_HELP)
def check(
    source: Annotated[
        str | None,
        typer.Argument(help="The checkpoint to gate (a file or folder).", show_default=False),
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option("--baseline", help="Compare against this checkpoint (drift, band changes)."),
    ] = None,
    max_drift: MaxDriftOpt = None,
    expect_init: Annotated[
        bool | None,
        typer.Option(
            "--expect-init/--no-expect-init",
            help="Step 0: every gain exactly the identity, every bias zero.",
        ),
    ] = None,
    expect_mtp: Annotated[
        int | None,
        typer.Option("--expect-mtp", min=0, help="The checkpoint must hold N MTP depths."),
    ] = None,
    scope: Annotated[
        str | None,
        typer.Option("--scope", help="Norms the band/drift checks look at (default 'final,mtp')."),
    ] = None,
    low: Annotated[float | None, typer.Option("--low", help="Band low edge (default 0.4).")] = None,
    high: Annotated[
        float | None, typer.Option("--high", help="Band high edge (default 1.8).")
    ] = None,
    parametrization: ParamOpt = None,
    severity: Annotated[
        list[str] | None,
        typer.Option("--severity", help="CHECK=error|warn|off, e.g. band=warn (repeatable)."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="A TOML policy file (default: [tool.normscope] in the nearest pyproject.toml).",
        ),
    ] = None,
    show_config: Annotated[
        bool, typer.Option("--show-config", help="Print the effective policy and exit.")
    ] = False,
    format: Annotated[
        CheckFormat, typer.Option("--format", "-f", help="Output format.")
    ] = CheckFormat.text,
    output: OutputOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Gate CI on norm health: bands, drift against a baseline, init identity, MTP presence."""
    severities: dict[str, str] = {}
    for item in severity or []:
        check_name, sep, level = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected CHECK=LEVEL, got '{item}'", param_hint="--severity")
        severities[check_name.strip()] = level.strip()
    flags = {
        "low": low,
        "high": high,
        "scope": scope,
        "max_drift": max_drift,
        "expect_init": expect_init,
        "expect_mtp": expect_mtp,
        "parametrization": parametrization.value if parametrization else None,
        "severity": severities or None,
    }
    with _errors():
        from normscope import render_check
        from normscope.policy import load_policy, policy_toml, run_checks
        from normscope.report import render_json
        from normscope.scanner import ScanOptions, measure
        from normscope.schema import Thresholds

        policy = load_policy(config, flags)
        if show_config:
            write_output(policy_toml(policy), output)
            return
        if source is None:
            raise typer.BadParameter(
                "a checkpoint is required (or --show-config)", param_hint="SOURCE"
            )
        options = ScanOptions(
            Thresholds(low=policy.low, high=policy.high), policy.parametrization, policy.scope
        )
        measured = measure(source, options)
        base = measure(baseline, options) if baseline is not None else None
        result = run_checks(measured, policy, base)
        _warn(result.warnings, quiet)
        if format is CheckFormat.text:
            if output in (None, "-") and sys.stdout.isatty():
                from rich.console import Console

                Console(highlight=False).print(render_check.render_check_text(result, True), end="")
            else:
                write_output(render_check.render_check_text(result), output)
        elif format is CheckFormat.json:
            write_output(render_json(result), output)
        elif format is CheckFormat.junit:
            write_output(render_check.render_junit(result), output)
        elif format is CheckFormat.github:
            write_output(render_check.render_github(result), output)
            summary = os.environ.get("GITHUB_STEP_SUMMARY")
            if summary:
                try:
                    with open(summary, "a", encoding="utf-8") as fh:
                        fh.write(render_check.render_step_summary(result))
                except OSError as exc:  # the verdict still decides the exit code
                    _warn([f"cannot append the job summary: {exc.strerror} ({summary})"], False)
        else:  # pragma: no cover - exhaustive over CheckFormat
            raise AssertionError(format)
        if format is not CheckFormat.text:
            # The verdict always reaches a person, whatever the machine format on stdout.
            _stderr().print(render_check.verdict_line(result), markup=False)
        if result.verdict == "fail":
            raise typer.Exit(1)


@contextlib.contextmanager
def _series_progress(quiet: bool) -> Iterator[Any]:
    """A progress callback drawing a bar on stderr when it is a terminal (else None)."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from normscope.report import human_bytes

    columns = (TextColumn("measuring"), BarColumn(), MofNCompleteColumn())
    extra = (TextColumn("{task.fields[read]}"), TimeRemainingColumn())
    with Progress(*columns, *extra, console=_stderr(), transient=True) as bar:
        task = bar.add_task("series", total=None, read="")

        def update(event: Any) -> None:
            read = f"{human_bytes(event.bytes_read)} read"
            bar.update(task, total=event.total, completed=event.done, read=read)

        yield update


@app.command(epilog=EXIT_HELP)
def series(
    sources: Annotated[
        list[str],
        typer.Argument(
            help="A run folder of checkpoints (checkpoint-<step>, iter_<N>, step-<N>, step<N>, "
            "global_step<N>, <N>), or checkpoints listed in order.",
            metavar="PATH",
            show_default=False,
        ),
    ],
    format: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    show_all: Annotated[
        bool, typer.Option("--all", help="Also list every norm's last ratio and drift.")
    ] = False,
    order: Annotated[
        Order,
        typer.Option("--order", help="By the step in the name, by name, or by modification time."),
    ] = Order.step,
    jobs: Annotated[
        int | None,
        typer.Option("--jobs", "-j", min=1, help="Checkpoints measured at once [min(4, CPUs)]."),
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 2 when any checkpoint is skipped.")
    ] = False,
    plot: Annotated[
        str | None,
        typer.Option(
            "--plot", metavar="FILE", help="Also draw the trends to FILE.png, .svg or .html."
        ),
    ] = None,
    plot_role: Annotated[
        str | None,
        typer.Option(
            "--plot-role",
            metavar="ROLE",
            help="Role of the plot's layer × step heatmap [mlp_input, else attn_input].",
        ),
    ] = None,
    low: LowOpt = 0.4,
    high: HighOpt = 1.8,
    parametrization: ParamOpt = None,
    fail_on: Annotated[
        FailOn,
        typer.Option("--fail-on", help="Exit 1 when a norm in --scope is out of band at the end."),
    ] = FailOn.never,
    max_drift: Annotated[
        float | None,
        typer.Option("--max-drift", help="Largest allowed ‖g−g_prev‖/‖g_prev‖ over the last two."),
    ] = None,
    scope: ScopeOpt = "final,mtp",
    quiet: QuietOpt = False,
    revisions: Annotated[
        str | None,
        typer.Option(
            "--revisions",
            help="With one Hub repo (org/name): its branches/tags to follow, a comma list or a "
            "glob ('stage1-step*'), ordered by the step in their names.",
        ),
    ] = None,
) -> None:
    """Follow a training run: every norm across its checkpoints, drift, and where it heads."""
    thresholds = _thresholds(low, high)
    hub_repo = _series_hub_repo(sources, revisions)
    if max_drift is not None and max_drift < 0:
        raise typer.BadParameter("must be >= 0", param_hint="--max-drift")
    with _errors():
        from normscope import plot as plotting
        from normscope import render_series as render
        from normscope.scanner import ScanOptions
        from normscope.scope import parse_scope
        from normscope.series import SeriesOptions, gate_violations, measure_series
        from normscope.trends import latest_rows, skipped_after_latest

        role = plotting.parse_role(plot_role) if plot_role else None
        plot_format = plotting.plot_format(plot) if plot else None
        if plot:  # fail before measuring: no matplotlib, or nowhere to write
            plotting.require_matplotlib()
            if not Path(plot).resolve().parent.is_dir():
                _fail(f"output directory does not exist ({Path(plot).parent})")
        scan_options = ScanOptions(thresholds, parametrization, scope)
        options = SeriesOptions(scan_options, order, jobs, strict=strict)
        if hub_repo is not None and revisions is not None:
            sources = _hub_revisions(hub_repo, revisions)
        with _series_progress(quiet) as progress:
            result = measure_series(sources, options, progress)
        _warn(result.warnings, quiet)
        gated = fail_on is FailOn.out_of_band or max_drift is not None
        late = skipped_after_latest(result) if gated else []
        if late:  # a gate on "the latest checkpoint" must not quietly judge an older one
            _fail(
                f"the latest checkpoint could not be read: {late[-1].reason} ({late[-1].path}); "
                f"the gate would judge step {result.checkpoints[-1].step} instead",
                hint="fix or remove the broken checkpoint, or name the checkpoints to follow",
            )
        _render(
            format,
            output,
            table=lambda width: render.render_series_table(result, show_all, width),
            json=lambda: render.render_series_json(result),
            csv=lambda: render.render_series_csv(result),
            markdown=lambda: render.render_series_markdown(result, show_all),
        )
        if plot and plot_format:
            if role is not None and plotting.heatmap_role(result, role) is None:
                _warn([f"no layer norms of role {role.value}: the plot has no heatmap"], quiet)
            write_output(plotting.render_plot(result, plot_format, role), plot, "the plot")
        if max_drift is not None and len(result.checkpoints) < 2:
            _warn(["--max-drift needs two checkpoints: not checked"], quiet)
        if gated:
            selector = parse_scope(scope)
            _warn_empty_scope(sum(1 for r in latest_rows(result) if selector(r.norm)), scope, quiet)
        _tripped(gate_violations(result, scope, fail_on is FailOn.out_of_band, max_drift))


@app.command(epilog=EXIT_HELP)
def cache(
    clear: Annotated[
        bool, typer.Option("--clear", help="Delete what normscope cached (not the HF cache).")
    ] = False,
) -> None:
    """Show normscope's cache of Hub headers and norm bytes (NORMSCOPE_CACHE), or clear it."""
    with _errors():
        from normscope.report import human_bytes as _size
        from normscope.sources import hub

        if clear:
            summary = hub.clear_cache()
            _stderr().print(
                f"Removed {summary.files} files ({_size(summary.bytes)}) of "
                f"{len(summary.entries)} repos from {summary.root}",
                markup=False,
            )
            return
        summary = hub.cache_summary()
        lines = [f"{summary.root}: {summary.files} files, {_size(summary.bytes)}"]
        if summary.entries:
            width = max(len("repo"), *(len(e.repo_id) for e in summary.entries))
            lines.append(f"{'repo':<{width}}  {'commits':>7}  {'files':>6}  {'size':>9}")
            lines += [
                f"{e.repo_id:<{width}}  {e.commits:>7}  {e.files:>6}  {_size(e.bytes):>9}"
                for e in summary.entries
            ]
        write_output("\n".join(lines) + "\n", None)


def _series_hub_repo(sources: list[str], revisions: str | None) -> str | None:
    """The Hub repo whose revisions `series --revisions` follows; a usage error otherwise."""
    if revisions is None:
        return None
    from normscope.errors import SourceError
    from normscope.sources.hub import looks_like_hub, parse_hub_spec

    only = sources[0] if len(sources) == 1 else ""
    try:
        spec = parse_hub_spec(only) if looks_like_hub(only) and not Path(only).exists() else None
    except SourceError:
        spec = None
    if spec is None or spec.revision is not None:
        raise typer.BadParameter(
            "needs exactly one Hub repo (org/name, without @revision) as SOURCES",
            param_hint="--revisions",
        )
    return spec.repo_id


def _hub_revisions(repo_id: str, revisions: str) -> list[str]:
    from normscope.sources.hub import list_hub_revisions

    return [f"{repo_id}@{rev}" for rev in list_hub_revisions(repo_id, revisions)]


def _hub_progress(description: str, total: int) -> Any:
    """A transient bar on stderr for long Hub transfers (installed by main() on terminals)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        console=_stderr(),
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


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit:
        raise
    except BaseException:  # pragma: no cover - _errors() handles errors inside commands
        traceback.print_exc()
        sys.exit(3)
