"""`normscope check`: the policy from defaults, config and flags, one checked scan (and its
baseline), the findings rendered in the format asked, the verdict as the exit code."""

# NOTE: no `from __future__ import annotations`: typer resolves this command's signature on
# every start (see app.py).

import os
import sys
from typing import TYPE_CHECKING

import typer

from normscope.cli import inputs
from normscope.cli import output as out
from normscope.cli.options import (
    AllowUnknownOpt,
    BaselineOpt,
    CheckFormat,
    CheckFormatOpt,
    CheckSourceArg,
    ConfigOpt,
    ExpectInitOpt,
    ExpectMtpOpt,
    HighOpt,
    LowOpt,
    MaxDriftOpt,
    NoCacheOpt,
    OutputOpt,
    ParamOpt,
    QuietOpt,
    RevisionOpt,
    RulesOpt,
    ScopeOpt,
    SeverityOpt,
    ShowConfigOpt,
    TokenOpt,
)

if TYPE_CHECKING:
    from normscope.schema import CheckReport


def check(
    ctx: typer.Context,
    source: CheckSourceArg = None,
    baseline: BaselineOpt = None,
    max_drift: MaxDriftOpt = None,
    expect_init: ExpectInitOpt = None,
    expect_mtp: ExpectMtpOpt = None,
    scope: ScopeOpt = None,
    low: LowOpt = None,
    high: HighOpt = None,
    parametrization: ParamOpt = None,
    severity: SeverityOpt = None,
    config: ConfigOpt = None,
    show_config: ShowConfigOpt = False,
    allow_unknown: AllowUnknownOpt = None,
    rules: RulesOpt = None,
    format: CheckFormatOpt = None,
    output: OutputOpt = None,
    quiet: QuietOpt = False,
    no_cache: NoCacheOpt = False,
    token: TokenOpt = None,
    revision: RevisionOpt = None,
) -> None:
    """Gate CI on norm health: bands, anomalies, drift against a baseline, init identity, MTP
    presence. A checkpoint whose architecture normscope did not understand is refused (exit 2)."""
    chosen = out.output_format(format, output, CheckFormat.text)
    with out.errors():
        from normscope.api import run_check
        from normscope.policy import parse_severities

        flags = (low, high, scope, parametrization, rules, config, no_cache, token)
        settings = inputs.settings(
            ctx,
            *flags,
            max_drift=max_drift,
            expect_init=expect_init,
            expect_mtp=expect_mtp,
            severity=parse_severities(severity),
            allow_unknown=allow_unknown,
        )
        if inputs.show_config(settings, show_config, output):
            return
        if source is None:
            raise typer.BadParameter(
                "a checkpoint is required (or --show-config)", param_hint="SOURCE"
            )
        progress = out.transfer_progress(quiet)
        result = run_check(source, settings, baseline, revision, progress)
        out.warn(result.warnings, quiet)
        render_check(result, chosen, output)


def render_check(result: "CheckReport", format: CheckFormat, output: str | None) -> None:
    """Render a CheckReport; the verdict always reaches a person; exit 1 on failure."""
    from normscope.enums import Verdict
    from normscope.render.check import CheckView

    view = CheckView(result)

    if format is CheckFormat.text:
        if output in (None, "-") and sys.stdout.isatty():
            from rich.console import Console

            Console(highlight=False).print(view.text(colour=True), end="")
        else:
            out.write_output(view.text(), output)
    elif format is CheckFormat.json:
        out.write_output(view.json(), output)
    elif format is CheckFormat.junit:
        out.write_output(view.junit(), output)
    elif format is CheckFormat.html:
        out.write_output(view.html(), output)
    elif format is CheckFormat.github:
        out.write_output(view.github(), output)
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            try:
                with open(summary, "a", encoding="utf-8") as fh:
                    fh.write(view.step_summary())
            except OSError as exc:  # the verdict still decides the exit code
                out.warn([f"cannot append the job summary: {exc.strerror} ({summary})"], False)
    else:  # pragma: no cover - exhaustive over CheckFormat
        raise AssertionError(format)
    if format is not CheckFormat.text:
        out.stderr().print(view.verdict(), markup=False)
    if result.verdict is Verdict.failed:
        raise typer.Exit(1)
