"""`normscope fold`: each norm against the matrices it feeds (needs `normscope[torch]`)."""

from __future__ import annotations

from normscope.cli import inputs, runs
from normscope.cli import output as out
from normscope.cli.options import (
    ClusterOpt,
    DeviceOpt,
    DryRunOpt,
    ExecutorOpt,
    ExpertsOpt,
    FailOn,
    FoldAllOpt,
    FoldFailOpt,
    FormatOpt,
    HighOpt,
    LowOpt,
    MaxMemoryOpt,
    NoCacheOpt,
    OutputFormat,
    OutputOpt,
    ParamOpt,
    QuietOpt,
    RevisionOpt,
    RulesOpt,
    ScopeOpt,
    SeriesExecutor,
    SourceArg,
)
from normscope.enums import DEFAULT_HIGH, DEFAULT_LOW
from normscope.scope import DEFAULT_SCOPE


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
    executor: ExecutorOpt = SeriesExecutor.local,
    cluster: ClusterOpt = None,
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

        scan = inputs.scan_options(low, high, parametrization, scope, rules)
        options = FoldOptions(
            device, parse_memory(max_memory), experts, dry_run, scan.thresholds,
            parametrization, scan.scope, scan.rules, runs.cluster_spec(executor, cluster),
        )  # fmt: skip
        source = inputs.at_revision(source, revision)
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
