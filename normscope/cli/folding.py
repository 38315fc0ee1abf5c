"""`normscope fold`: each norm against the matrices it feeds (needs `normscope[torch]`)."""

# NOTE: no `from __future__ import annotations`: typer resolves this command's signature on
# every start (see app.py).

from typing import TYPE_CHECKING

import typer

from normscope.cli import inputs
from normscope.cli import output as out
from normscope.cli.options import (
    ClusterOpt,
    ConfigOpt,
    DeviceOpt,
    DryRunOpt,
    ExpertsOpt,
    FailOn,
    FoldAllOpt,
    FoldExecutorOpt,
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
    ShowConfigOpt,
    SourceArg,
    TokenOpt,
)

if TYPE_CHECKING:
    from normscope.schema.fold import FoldReport


def fold(
    ctx: typer.Context,
    source: SourceArg,
    format: FormatOpt = None,
    output: OutputOpt = None,
    device: DeviceOpt = "auto",
    max_memory: MaxMemoryOpt = "2GB",
    experts: ExpertsOpt = "8",
    dry_run: DryRunOpt = False,
    show_all: FoldAllOpt = False,
    low: LowOpt = None,
    high: HighOpt = None,
    parametrization: ParamOpt = None,
    fail_on: FoldFailOpt = FailOn.never,
    scope: ScopeOpt = None,
    rules: RulesOpt = None,
    config: ConfigOpt = None,
    show_config: ShowConfigOpt = False,
    executor: FoldExecutorOpt = SeriesExecutor.local,
    cluster: ClusterOpt = None,
    quiet: QuietOpt = False,
    no_cache: NoCacheOpt = False,
    token: TokenOpt = None,
    revision: RevisionOpt = None,
) -> None:
    """Fold each norm gain into the matrices it feeds: folded ratio, compensation, MTP balance.

    Needs torch: pip install "normscope[torch]"."""
    chosen = out.output_format(format, output, OutputFormat.table)
    with out.errors():
        from normscope.api import run_fold
        from normscope.gates import fold_gate
        from normscope.render.fold import FoldView
        from normscope.settings import fold_options

        flags = (low, high, scope, parametrization, rules, config, no_cache, token)
        settings = inputs.settings(ctx, *flags)
        if inputs.show_config(settings, show_config, output):
            return
        run = (device, max_memory, experts, dry_run, executor.value, cluster)
        options = fold_options(settings, *run)
        with out.fold_progress(quiet or dry_run) as progress:
            result = run_fold(source, options, revision, progress)
        out.warn(result.warnings, quiet)
        if dry_run:
            _say_plan(result)
            return
        out.render(chosen, output, FoldView(result, show_all))
        out.report_gate(fold_gate(result, fail_on is FailOn.out_of_band), quiet)


def _say_plan(result: "FoldReport") -> None:
    """`--dry-run`: the bytes a fold would read, and from where."""
    from normscope.render.common import human_bytes

    plan = result.plan
    out.write_output(
        f"{plan.bytes_planned} bytes ({human_bytes(plan.bytes_planned)}) in "
        f"{plan.tensors} matrices would be read from {result.source}\n",
        None,
    )
