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
    Command,
    ConfigOpt,
    DiffA,
    DiffB,
    DiffFailOn,
    DiffFailOpt,
    EventsOpt,
    ExpectInitOpt,
    ExpectMtpOpt,
    FailOn,
    FormatOpt,
    HighOpt,
    JobsOpt,
    LowOpt,
    MainTagOpt,
    MaxDriftOpt,
    MtpTagOpt,
    OrderOpt,
    OutputFormat,
    OutputOpt,
    ParamOpt,
    PlotOpt,
    PlotRoleOpt,
    QuietOpt,
    RevisionOpt,
    RevisionsOpt,
    ScanFailOpt,
    ScopeOpt,
    SeriesAllOpt,
    SeriesDriftOpt,
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
    from normscope.schema import CheckReport, SeriesReport

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


def _scan_options(
    low: float, high: float, parametrization: Parametrization | None, scope: str
) -> ScanOptions:
    """The options of one scan, validated: a bad band or scope fails before any file is read."""
    from normscope.scanner import ScanOptions
    from normscope.schema import Thresholds
    from normscope.scope import parse_scope

    if not 0 < low < high:
        raise typer.BadParameter("need 0 < --low < --high", param_hint="--low/--high")
    return ScanOptions(Thresholds(low=low, high=high), parametrization, parse_scope(scope))


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
    quiet: QuietOpt = False,
    revision: RevisionOpt = None,
    wide: WideOpt = False,
) -> None:
    """Report every norm gain of one checkpoint: statistics, band, role and parametrization."""
    with out.errors():
        from normscope.gates import scan_gate
        from normscope.render import common
        from normscope.render import html as html_view
        from normscope.render import scan as view
        from normscope.scanner import measure

        options = _scan_options(low, high, parametrization, scope)
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
    quiet: QuietOpt = False,
    revision: RevisionOpt = None,
    wide: WideOpt = False,
) -> None:
    """Compare the norms of two checkpoints: drift, cosine, band changes, channels that moved."""
    _nonnegative(max_drift, "--max-drift")
    with out.errors():
        from normscope.compare import diff as run_diff
        from normscope.gates import diff_gate
        from normscope.render import common
        from normscope.render import diff as view
        from normscope.render import html as html_view

        options = _scan_options(low, high, parametrization, scope)
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
    format: CheckFormatOpt = CheckFormat.text,
    output: OutputOpt = None,
    quiet: QuietOpt = False,
    revision: RevisionOpt = None,
) -> None:
    """Gate CI on norm health: bands, anomalies, drift against a baseline, init identity, MTP
    presence. A checkpoint whose architecture normscope did not understand is refused (exit 2)."""
    with out.errors():
        from normscope.gates import run_checks
        from normscope.policy import PolicyOverrides, load_policy, parse_severities, policy_toml
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
    strict: StrictOpt = False,
    plot: PlotOpt = None,
    plot_role: PlotRoleOpt = None,
    low: LowOpt = DEFAULT_LOW,
    high: HighOpt = DEFAULT_HIGH,
    parametrization: ParamOpt = None,
    fail_on: SeriesFailOpt = FailOn.never,
    max_drift: SeriesDriftOpt = None,
    scope: ScopeOpt = DEFAULT_SCOPE,
    quiet: QuietOpt = False,
    revisions: RevisionsOpt = None,
    wide: WideOpt = False,
    events: EventsOpt = None,
    main_tag: MainTagOpt = None,
    mtp_tag: MtpTagOpt = None,
    tensorboard: TensorboardOpt = None,
) -> None:
    """Follow a training run: every norm across its checkpoints, drift, and where it heads."""
    _nonnegative(max_drift, "--max-drift")
    with out.errors():
        from normscope.gates import series_gate
        from normscope.render import html as html_view
        from normscope.render import series as view
        from normscope.series import SeriesOptions, measure_series

        options = _scan_options(low, high, parametrization, scope)
        plotting = _check_plot(plot, plot_role)
        if revisions is not None:
            sources = _hub_revisions(sources, revisions)
            order = order or Order.step  # revisions are ordered by the step in their names
        with out.series_progress(quiet) as progress:
            series_options = SeriesOptions(options, order, jobs, strict=strict)
            result = measure_series(sources, series_options, progress)
        result = _with_trinity(result, events, main_tag, mtp_tag) if events else result
        out.warn(result.warnings, quiet)
        gated = fail_on is FailOn.out_of_band or max_drift is not None
        _refuse_stale_latest(result, gated)
        out.render(
            format,
            output,
            table=lambda width: view.render_series_table(result, show_all, width, wide),
            json=lambda: view.render_series_json(result),
            csv=lambda: view.render_series_csv(result),
            markdown=lambda: view.render_series_markdown(result, show_all),
            html=lambda: html_view.render_series_html(result),
            wide=wide,
        )
        if plot and plotting is not None:
            _write_plot(result, plot, plot_role, quiet)
        _write_tensorboard(result, tensorboard)
        gate = series_gate(result, options.scope, fail_on is FailOn.out_of_band, max_drift)
        out.report_gate(gate, quiet)


def _check_plot(plot: str | None, plot_role: str | None) -> object | None:
    """Fail before measuring: a bad role, no matplotlib, or nowhere to write the plot."""
    from normscope.render import plot as plotting

    if plot_role:
        plotting.parse_role(plot_role)
    if not plot:
        return None
    plotting.plot_format(plot)
    plotting.require_matplotlib()
    if not Path(plot).resolve().parent.is_dir():
        out.fail(f"output directory does not exist ({Path(plot).parent})")
    return plotting


def _write_plot(result: SeriesReport, plot: str, plot_role: str | None, quiet: bool) -> None:
    from normscope.render import plot as plotting

    role = plotting.parse_role(plot_role) if plot_role else None
    if role is not None and plotting.heatmap_role(result, role) is None:
        out.warn([f"no layer norms of role {role.value}: the plot has no heatmap"], quiet)
    data = plotting.render_plot(result, plotting.plot_format(plot), role)
    out.write_output(data, plot, "the plot")


def _write_tensorboard(result: SeriesReport, outdir: str | None) -> None:
    """`--tensorboard OUTDIR`: the norm series as TensorBoard scalars."""
    if outdir is not None:
        from normscope.events import write_scalars

        write_scalars(result, outdir)


def _with_trinity(
    result: SeriesReport, events: str, main_tag: str | None, mtp_tag: str | None
) -> SeriesReport:
    """`--events`: the losses joined to the checkpoints (the playbook's stability trinity)."""
    import dataclasses

    from normscope import events as tb

    main = [t.strip() for t in main_tag.split(",")] if main_tag else tb.MAIN_TAGS
    mtp = [t.strip() for t in mtp_tag.split(",")] if mtp_tag else tb.MTP_TAGS
    trinity, warnings = tb.trinity(result, events, main, mtp)
    return dataclasses.replace(result, trinity=trinity, warnings=(*result.warnings, *warnings))


def _refuse_stale_latest(result: SeriesReport, gated: bool) -> None:
    """A gate on "the latest checkpoint" must not quietly judge an older one."""
    from normscope.trends import skipped_after_latest

    late = skipped_after_latest(result) if gated else []
    if late:
        out.fail(
            f"the latest checkpoint could not be read: {late[-1].reason} ({late[-1].path}); "
            f"the gate would judge step {result.checkpoints[-1].step} instead",
            hint="fix or remove the broken checkpoint, or name the checkpoints to follow",
        )


def _hub_revisions(sources: list[str], revisions: str) -> list[str]:
    """`series --revisions`: the revisions of exactly one Hub repo, as `org/name@rev` sources."""
    from normscope.errors import SourceError
    from normscope.sources.hub import list_hub_revisions
    from normscope.sources.hub.spec import looks_like_hub, parse_hub_spec

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
    return [f"{spec.repo_id}@{rev}" for rev in list_hub_revisions(spec.repo_id, revisions)]


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
