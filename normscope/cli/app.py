"""The `normscope` commands: parse the flags, make one core call, render, pick the exit code.

The options of every command come from one builder (`normscope.settings`, through
`inputs.settings`), the core calls are the API's (`normscope.api.run_*`), and the exit codes are
`normscope.exitcodes`'s: 0 passed, 1 a gate tripped, 2 could not judge, 3 a bug, 130/143.
"""

# NOTE: no `from __future__ import annotations` here: typer reads every command's signature on
# each start (`--help` included) with `typing.get_type_hints`, which would `eval` ~200 annotation
# strings (~2 ms of a 15 ms start-up budget); resolved when the commands are defined they cost
# nothing then.

from typing import TYPE_CHECKING, Annotated

import typer

from normscope.cli import folding, gate, inputs, runs
from normscope.cli import output as out
from normscope.cli.options import (
    EXAMPLES,
    EXIT_HELP,
    AllOpt,
    ClearOpt,
    ClusterOpt,
    Command,
    ConfigOpt,
    DiffA,
    DiffB,
    DiffFailOn,
    DiffFailOpt,
    EventsOpt,
    ExecutorOpt,
    FailOn,
    FormatOpt,
    HighOpt,
    JobsOpt,
    LowOpt,
    MainTagOpt,
    MaxDriftOpt,
    MtpTagOpt,
    NoCacheOpt,
    OrderOpt,
    OutputFormat,
    OutputOpt,
    ParamOpt,
    PlotOpt,
    PlotRoleOpt,
    QuietOpt,
    RevisionOpt,
    RevisionsOpt,
    RulesOpt,
    ScanFailOpt,
    ScopeOpt,
    SeriesAllOpt,
    SeriesDriftOpt,
    SeriesExecutor,
    SeriesFailOpt,
    SeriesSources,
    ShowConfigOpt,
    SourceArg,
    StrictOpt,
    TensorboardOpt,
    TokenOpt,
    WideOpt,
    epilog,
)
from normscope.enums import Order
from normscope.version import version_line

if TYPE_CHECKING:
    pass

app = typer.Typer(
    name="normscope",
    help="Are the normalization scale vectors in this checkpoint healthy?\n\n" + EXIT_HELP,
    no_args_is_help=True,
    # typer's --install-completion/--show-completion: two options built with the app; the shell
    # is detected only when one is used, so --help and --version pay nothing for them.
    add_completion=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(version_line())
        raise typer.Exit(0)


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Let huggingface_hub's own log lines (retries, server warnings) reach stderr; "
            "by default normscope says what failed in one line (also NORMSCOPE_VERBOSE=1).",
        ),
    ] = False,
) -> None:
    """Are the normalization scale vectors in this checkpoint healthy?"""
    out.escape_unencodable()
    ctx.obj = {"verbose": verbose}  # the commands read it into their settings (inputs.verbose)


@app.command(epilog=epilog(*EXAMPLES["scan"]), cls=Command)
def scan(
    ctx: typer.Context,
    source: SourceArg,
    format: FormatOpt = None,
    output: OutputOpt = None,
    show_all: AllOpt = False,
    low: LowOpt = None,
    high: HighOpt = None,
    parametrization: ParamOpt = None,
    fail_on: ScanFailOpt = FailOn.never,
    scope: ScopeOpt = None,
    rules: RulesOpt = None,
    config: ConfigOpt = None,
    show_config: ShowConfigOpt = False,
    quiet: QuietOpt = False,
    no_cache: NoCacheOpt = False,
    token: TokenOpt = None,
    revision: RevisionOpt = None,
    wide: WideOpt = False,
) -> None:
    """Report every norm gain of one checkpoint: statistics, band, role and parametrization."""
    chosen = out.output_format(format, output, OutputFormat.table)
    with out.errors():
        from normscope.api import run_scan
        from normscope.gates import scan_gate
        from normscope.render.scan import ScanView

        flags = (low, high, scope, parametrization, rules, config, no_cache, token)
        settings = inputs.settings(ctx, *flags)
        if inputs.show_config(settings, show_config, output):
            return
        options = settings.scan
        result = run_scan(source, settings, revision, out.transfer_progress(quiet))
        out.warn(result.warnings, quiet)
        out.render(chosen, output, ScanView(result, show_all, options.scope, wide))
        out.report_gate(scan_gate(result, options.scope, fail_on is FailOn.out_of_band), quiet)


@app.command(epilog=epilog(*EXAMPLES["diff"]), cls=Command)
def diff(
    ctx: typer.Context,
    a: DiffA,
    b: DiffB,
    format: FormatOpt = None,
    output: OutputOpt = None,
    show_all: AllOpt = False,
    low: LowOpt = None,
    high: HighOpt = None,
    parametrization: ParamOpt = None,
    fail_on: DiffFailOpt = DiffFailOn.never,
    max_drift: MaxDriftOpt = None,
    scope: ScopeOpt = None,
    rules: RulesOpt = None,
    config: ConfigOpt = None,
    show_config: ShowConfigOpt = False,
    quiet: QuietOpt = False,
    no_cache: NoCacheOpt = False,
    token: TokenOpt = None,
    revision: RevisionOpt = None,
    wide: WideOpt = False,
) -> None:
    """Compare the norms of two checkpoints: drift, cosine, band changes, channels that moved."""
    chosen = out.output_format(format, output, OutputFormat.table)
    inputs.nonnegative(max_drift, "--max-drift")
    with out.errors():
        from normscope.api import run_diff
        from normscope.gates import diff_gate
        from normscope.render.diff import DiffView

        flags = (low, high, scope, parametrization, rules, config, no_cache, token)
        settings = inputs.settings(ctx, *flags)
        if inputs.show_config(settings, show_config, output):
            return
        options = settings.scan
        result = run_diff(a, b, settings, revision)
        out.warn(result.warnings, quiet)
        out.render(chosen, output, DiffView(result, show_all, wide))
        gate = diff_gate(
            result,
            options.scope,
            band_change=fail_on is DiffFailOn.band_change,
            out_of_band=fail_on is DiffFailOn.out_of_band,
            max_drift=max_drift,
        )
        out.report_gate(gate, quiet)


app.command(epilog=epilog(*EXAMPLES["check"]), cls=Command)(gate.check)


@app.command(epilog=epilog(*EXAMPLES["series"]), cls=Command)
def series(
    ctx: typer.Context,
    sources: SeriesSources,
    format: FormatOpt = None,
    output: OutputOpt = None,
    show_all: SeriesAllOpt = False,
    order: OrderOpt = None,
    jobs: JobsOpt = None,
    executor: ExecutorOpt = SeriesExecutor.local,
    cluster: ClusterOpt = None,
    strict: StrictOpt = False,
    plot: PlotOpt = None,
    plot_role: PlotRoleOpt = None,
    low: LowOpt = None,
    high: HighOpt = None,
    parametrization: ParamOpt = None,
    fail_on: SeriesFailOpt = FailOn.never,
    max_drift: SeriesDriftOpt = None,
    scope: ScopeOpt = None,
    rules: RulesOpt = None,
    config: ConfigOpt = None,
    show_config: ShowConfigOpt = False,
    quiet: QuietOpt = False,
    no_cache: NoCacheOpt = False,
    token: TokenOpt = None,
    revisions: RevisionsOpt = None,
    wide: WideOpt = False,
    events: EventsOpt = None,
    main_tag: MainTagOpt = None,
    mtp_tag: MtpTagOpt = None,
    tensorboard: TensorboardOpt = None,
) -> None:
    """Follow a training run: every norm across its checkpoints, drift, and where it heads."""
    chosen = out.output_format(format, output, OutputFormat.table)
    inputs.nonnegative(max_drift, "--max-drift")
    with out.errors():
        from normscope.api import run_series
        from normscope.gates import series_gate
        from normscope.settings import series_options

        flags = (low, high, scope, parametrization, rules, config, no_cache, token)
        settings = inputs.settings(ctx, *flags)
        if inputs.show_config(settings, show_config, output):
            return
        runs.check_prerequisites(plot, plot_role, tensorboard, events)
        if revisions is not None:
            sources = runs.hub_revisions(sources, revisions, token)
            order = order or Order.step  # revisions are ordered by the step in their names
        run = series_options(settings, order, jobs, strict, executor.value, cluster)
        histograms, observe = runs.tensorboard_observer(tensorboard)
        with out.series_progress(quiet) as progress:
            result = run_series(sources, run, progress, observe)
        result = runs.with_trinity(result, events, main_tag, mtp_tag) if events else result
        out.warn(result.warnings, quiet)
        runs.refuse_stale_latest(result, fail_on is FailOn.out_of_band or max_drift is not None)
        runs.render_series(result, chosen, output, show_all, wide)
        runs.write_plot(result, plot, plot_role, quiet)
        runs.write_tensorboard(result, tensorboard, histograms)
        gate = series_gate(result, settings.scan.scope, fail_on is FailOn.out_of_band, max_drift)
        out.report_gate(gate, quiet)


app.command(epilog=epilog(*EXAMPLES["fold"]), cls=Command)(folding.fold)


@app.command(epilog=epilog(*EXAMPLES["cache"]), cls=Command)
def cache(clear: ClearOpt = False) -> None:
    """Show normscope's cache of Hub headers and norm bytes (NORMSCOPE_CACHE), or clear it."""
    with out.errors():
        from normscope.render.common import human_bytes as size
        from normscope.sources.hub import cache_summary, clear_cache

        if clear:
            summary = clear_cache()
            out.stderr().print(
                f"Removed {summary.files} files ({size(summary.bytes)}) of "
                f"{len(summary.entries)} repos from {summary.root}",
                markup=False,
            )
            return
        summary = cache_summary()
        lines = [f"{summary.root}: {summary.files} files, {size(summary.bytes)}"]
        if summary.entries:
            width = max(len("repo"), *(len(e.repo_id) for e in summary.entries))
            lines.append(f"{'repo':<{width}}  {'commits':>7}  {'files':>6}  {'size':>9}")
            lines += [
                f"{e.repo_id:<{width}}  {e.commits:>7}  {e.files:>6}  {size(e.bytes):>9}"
                for e in summary.entries
            ]
        out.write_output("\n".join(lines) + "\n", None)
