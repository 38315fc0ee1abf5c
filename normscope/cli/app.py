"""The `normscope` commands: parse the flags, make one core call, render, pick the exit code.

Exit codes: 0 report produced, no --fail-on check tripped (check: every check passed); 1 a
--fail-on check tripped (check: an error-severity violation); 2 nothing analysed: a usage error
or bad input (path, file, config, architecture); 3 internal error (a bug): traceback on stderr.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from normscope.cli import output as out
from normscope.cli import runs
from normscope.cli.options import (
    EXIT_HELP,
    AllOpt,
    AllowUnknownOpt,
    BaselineOpt,
    CheckFormat,
    CheckFormatOpt,
    CheckHighOpt,
    CheckLowOpt,
    CheckScopeOpt,
    CheckSourceArg,
    ClearOpt,
    ClusterOpt,
    Command,
    ConfigOpt,
    DeviceOpt,
    DiffA,
    DiffB,
    DiffFailOn,
    DiffFailOpt,
    DryRunOpt,
    EventsOpt,
    ExecutorOpt,
    ExpectInitOpt,
    ExpectMtpOpt,
    ExpertsOpt,
    FailOn,
    FoldAllOpt,
    FoldFailOpt,
    FormatOpt,
    HighOpt,
    JobsOpt,
    LowOpt,
    MainTagOpt,
    MaxDriftOpt,
    MaxMemoryOpt,
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
    SeverityOpt,
    ShowConfigOpt,
    SourceArg,
    StrictOpt,
    TensorboardOpt,
    WideOpt,
)
from normscope.enums import Order, Parametrization
from normscope.schema import DEFAULT_HIGH, DEFAULT_LOW
from normscope.scope import DEFAULT_SCOPE
from normscope.version import __version__

if TYPE_CHECKING:
    from normscope.scanner import ScanOptions
    from normscope.schema import CheckReport

app = typer.Typer(
    name="normscope",
    help="Are the normalization scale vectors in this checkpoint healthy?\n\n" + EXIT_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
)


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
    out.escape_unencodable()


def _scan_options(
    low: float,
    high: float,
    parametrization: Parametrization | None,
    scope: str,
    rules: Path | None,
) -> ScanOptions:
    """The options of one scan, validated: a bad band, scope or rules file fails before any
    checkpoint is read."""
    from normscope.policy import user_rules
    from normscope.scanner import ScanOptions
    from normscope.schema import Thresholds
    from normscope.scope import parse_scope

    if not 0 < low < high:
        raise typer.BadParameter("need 0 < --low < --high", param_hint="--low/--high")
    return ScanOptions(
        Thresholds(low=low, high=high), parametrization, parse_scope(scope), rules=user_rules(rules)
    )


def _at_revision(source: str, revision: str | None) -> str:
    """Fold --revision into a Hub source (org/name@rev); a usage error where it cannot apply."""
    if revision is None:
        return source
    from normscope.sources.hub.spec import with_revision

    return with_revision(source, revision)


def _nonnegative(value: float | None, param: str) -> None:
    if value is not None and value < 0:
        raise typer.BadParameter("must be >= 0", param_hint=param)


@app.command(epilog=EXIT_HELP, cls=Command)
def scan(
    source: SourceArg,
    format: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    show_all: AllOpt = False,
    low: LowOpt = DEFAULT_LOW,
    high: HighOpt = DEFAULT_HIGH,
    parametrization: ParamOpt = None,
    fail_on: ScanFailOpt = FailOn.never,
    scope: ScopeOpt = DEFAULT_SCOPE,
    rules: RulesOpt = None,
    quiet: QuietOpt = False,
    no_cache: NoCacheOpt = False,
    revision: RevisionOpt = None,
    wide: WideOpt = False,
) -> None:
    """Report every norm gain of one checkpoint: statistics, band, role and parametrization."""
    with out.errors(no_cache):
        from normscope.gates import scan_gate
        from normscope.render import common
        from normscope.render import html as html_view
        from normscope.render import scan as view
        from normscope.scanner import measure

        options = _scan_options(low, high, parametrization, scope, rules)
        source = _at_revision(source, revision)
        result = measure(source, options, out.transfer_progress(quiet)).report
        out.warn(result.warnings, quiet)
        out.render(
            format,
            output,
            table=lambda width: view.render_table(result, show_all, width, options.scope, wide),
            json=lambda: common.render_json(result),
            csv=lambda: view.render_csv(result),
            markdown=lambda: view.render_markdown(result, show_all, options.scope),
            html=lambda: html_view.render_scan_html(result, options.scope),
            wide=wide,
        )
        out.report_gate(scan_gate(result, options.scope, fail_on is FailOn.out_of_band), quiet)


@app.command(epilog=EXIT_HELP, cls=Command)
def diff(
    a: DiffA,
    b: DiffB,
    format: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    show_all: AllOpt = False,
    low: LowOpt = DEFAULT_LOW,
    high: HighOpt = DEFAULT_HIGH,
    parametrization: ParamOpt = None,
    fail_on: DiffFailOpt = DiffFailOn.never,
    max_drift: MaxDriftOpt = None,
    scope: ScopeOpt = DEFAULT_SCOPE,
    rules: RulesOpt = None,
    quiet: QuietOpt = False,
    no_cache: NoCacheOpt = False,
    revision: RevisionOpt = None,
    wide: WideOpt = False,
) -> None:
    """Compare the norms of two checkpoints: drift, cosine, band changes, channels that moved."""
    _nonnegative(max_drift, "--max-drift")
    with out.errors(no_cache):
        from normscope.compare import diff as run_diff
        from normscope.gates import diff_gate
        from normscope.render import common
        from normscope.render import diff as view
        from normscope.render import html as html_view

        options = _scan_options(low, high, parametrization, scope, rules)
        a, b = _at_revision(a, revision), _at_revision(b, revision)
        result = run_diff(a, b, options)
        out.warn(result.warnings, quiet)
        out.render(
            format,
            output,
            table=lambda width: view.render_diff_table(result, show_all, width, wide),
            json=lambda: common.render_json(result),
            csv=lambda: view.render_diff_csv(result),
            markdown=lambda: view.render_diff_markdown(result, show_all),
            html=lambda: html_view.render_diff_html(result),
            wide=wide,
        )
        gate = diff_gate(
            result,
            options.scope,
            band_change=fail_on is DiffFailOn.band_change,
            out_of_band=fail_on is DiffFailOn.out_of_band,
            max_drift=max_drift,
        )
        out.report_gate(gate, quiet)


@app.command(epilog=EXIT_HELP, cls=Command)
def check(
    source: CheckSourceArg = None,
    baseline: BaselineOpt = None,
    max_drift: MaxDriftOpt = None,
    expect_init: ExpectInitOpt = None,
    expect_mtp: ExpectMtpOpt = None,
    scope: CheckScopeOpt = None,
    low: CheckLowOpt = None,
    high: CheckHighOpt = None,
    parametrization: ParamOpt = None,
    severity: SeverityOpt = None,
    config: ConfigOpt = None,
    show_config: ShowConfigOpt = False,
    allow_unknown: AllowUnknownOpt = None,
    rules: RulesOpt = None,
    format: CheckFormatOpt = CheckFormat.text,
    output: OutputOpt = None,
    quiet: QuietOpt = False,
    no_cache: NoCacheOpt = False,
    revision: RevisionOpt = None,
) -> None:
    """Gate CI on norm health: bands, anomalies, drift against a baseline, init identity, MTP
    presence. A checkpoint whose architecture normscope did not understand is refused (exit 2)."""
    with out.errors(no_cache):
        from normscope.gates import run_checks
        from normscope.policy import (
            PolicyOverrides,
            load_policy,
            parse_severities,
            policy_toml,
            user_rules,
        )
        from normscope.scanner import ScanOptions, measure
        from normscope.schema import Thresholds

        overrides = PolicyOverrides(
            low, high, scope, max_drift, expect_init, expect_mtp, parametrization,
            parse_severities(severity), allow_unknown,
        )  # fmt: skip
        policy = load_policy(config, overrides)
        if show_config:
            out.write_output(policy_toml(policy), output)
            return
        if source is None:
            raise typer.BadParameter(
                "a checkpoint is required (or --show-config)", param_hint="SOURCE"
            )
        options = ScanOptions(
            Thresholds(low=policy.low, high=policy.high),
            policy.parametrization,
            policy.scope,
            peers=policy.anomaly,
            rules=user_rules(rules, config),
        )
        progress = out.transfer_progress(quiet)
        measured = measure(_at_revision(source, revision), options, progress)
        base = measure(baseline, options, progress) if baseline is not None else None
        result = run_checks(measured, policy, base)
        out.warn(result.warnings, quiet)
        _render_check(result, format, output)


def _render_check(result: CheckReport, format: CheckFormat, output: str | None) -> None:
    """Render a CheckReport; the verdict always reaches a person; exit 1 on failure."""
    from normscope.enums import Verdict
    from normscope.render import check as view
    from normscope.render.common import render_json

    if format is CheckFormat.text:
        if output in (None, "-") and sys.stdout.isatty():
            from rich.console import Console

            Console(highlight=False).print(view.render_check_text(result, True), end="")
        else:
            out.write_output(view.render_check_text(result), output)
    elif format is CheckFormat.json:
        out.write_output(render_json(result), output)
    elif format is CheckFormat.junit:
        out.write_output(view.render_junit(result), output)
    elif format is CheckFormat.html:
        from normscope.render.html import render_check_html

        out.write_output(render_check_html(result), output)
    elif format is CheckFormat.github:
        out.write_output(view.render_github(result), output)
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            try:
                with open(summary, "a", encoding="utf-8") as fh:
                    fh.write(view.render_step_summary(result))
            except OSError as exc:  # the verdict still decides the exit code
                out.warn([f"cannot append the job summary: {exc.strerror} ({summary})"], False)
    else:  # pragma: no cover - exhaustive over CheckFormat
        raise AssertionError(format)
    if format is not CheckFormat.text:
        out.stderr().print(view.verdict_line(result), markup=False)
    if result.verdict is Verdict.failed:
        raise typer.Exit(1)


@app.command(epilog=EXIT_HELP, cls=Command)
def series(
    sources: SeriesSources,
    format: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    show_all: SeriesAllOpt = False,
    order: OrderOpt = None,
    jobs: JobsOpt = None,
    executor: ExecutorOpt = SeriesExecutor.local,
    cluster: ClusterOpt = None,
    strict: StrictOpt = False,
    plot: PlotOpt = None,
    plot_role: PlotRoleOpt = None,
    low: LowOpt = DEFAULT_LOW,
    high: HighOpt = DEFAULT_HIGH,
    parametrization: ParamOpt = None,
    fail_on: SeriesFailOpt = FailOn.never,
    max_drift: SeriesDriftOpt = None,
    scope: ScopeOpt = DEFAULT_SCOPE,
    rules: RulesOpt = None,
    quiet: QuietOpt = False,
    no_cache: NoCacheOpt = False,
    revisions: RevisionsOpt = None,
    wide: WideOpt = False,
    events: EventsOpt = None,
    main_tag: MainTagOpt = None,
    mtp_tag: MtpTagOpt = None,
    tensorboard: TensorboardOpt = None,
) -> None:
    """Follow a training run: every norm across its checkpoints, drift, and where it heads."""
    _nonnegative(max_drift, "--max-drift")
    with out.errors(no_cache):
        from normscope.gates import series_gate
        from normscope.series import measure_series

        options = _scan_options(low, high, parametrization, scope, rules)
        plotting = runs.check_plot(plot, plot_role)
        if revisions is not None:
            sources = runs.hub_revisions(sources, revisions)
            order = order or Order.step  # revisions are ordered by the step in their names
        series_options = runs.series_options(options, order, jobs, strict, executor, cluster)
        with out.series_progress(quiet) as progress:
            result = measure_series(sources, series_options, progress)
        result = runs.with_trinity(result, events, main_tag, mtp_tag) if events else result
        out.warn(result.warnings, quiet)
        runs.refuse_stale_latest(result, fail_on is FailOn.out_of_band or max_drift is not None)
        runs.render_series(result, format, output, show_all, wide)
        if plot and plotting is not None:
            runs.write_plot(result, plot, plot_role, quiet)
        runs.write_tensorboard(result, tensorboard)
        out.report_gate(
            series_gate(result, options.scope, fail_on is FailOn.out_of_band, max_drift), quiet
        )


@app.command(epilog=EXIT_HELP, cls=Command)
def fold(
    source: SourceArg,
    format: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    device: DeviceOpt = "auto",
    max_memory: MaxMemoryOpt = "2GB",
    experts: ExpertsOpt = "8",
    dry_run: DryRunOpt = False,
    show_all: FoldAllOpt = False,
    low: LowOpt = DEFAULT_LOW,
    high: HighOpt = DEFAULT_HIGH,
    parametrization: ParamOpt = None,
    fail_on: FoldFailOpt = FailOn.never,
    scope: ScopeOpt = DEFAULT_SCOPE,
    rules: RulesOpt = None,
    quiet: QuietOpt = False,
    no_cache: NoCacheOpt = False,
    revision: RevisionOpt = None,
) -> None:
    """Fold each norm gain into the matrices it feeds: folded ratio, compensation, MTP balance.

    Needs torch: pip install "normscope[torch]"."""
    with out.errors(no_cache):
        from normscope.fold import FoldOptions, parse_memory
        from normscope.fold import fold as run_fold
        from normscope.gates import fold_gate
        from normscope.render import fold as view
        from normscope.render import html as html_view
        from normscope.render.common import human_bytes

        scan = _scan_options(low, high, parametrization, scope, rules)
        options = FoldOptions(
            device, parse_memory(max_memory), experts, dry_run, scan.thresholds,
            parametrization, scan.scope, scan.rules,
        )  # fmt: skip
        source = _at_revision(source, revision)
        with out.fold_progress(quiet or dry_run) as progress:
            result = run_fold(source, options, progress)
        out.warn(result.warnings, quiet)
        if dry_run:
            plan = result.plan
            out.write_output(
                f"{plan.bytes_planned} bytes ({human_bytes(plan.bytes_planned)}) in "
                f"{plan.tensors} matrices would be read from {result.source}\n",
                None,
            )
            return
        out.render(
            format,
            output,
            table=lambda width: view.render_fold_table(result, show_all, width),
            json=lambda: view.render_fold_json(result),
            csv=lambda: view.render_fold_csv(result),
            markdown=lambda: view.render_fold_markdown(result, show_all),
            html=lambda: html_view.render_fold_html(result),
        )
        out.report_gate(fold_gate(result, fail_on is FailOn.out_of_band), quiet)


@app.command(epilog=EXIT_HELP, cls=Command)
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
