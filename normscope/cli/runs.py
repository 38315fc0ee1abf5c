"""What `normscope series` decides before and after measuring: the executor, the sources of
`--revisions`, the plot and TensorBoard outputs, the losses of `--events`, and the refusal to
gate a run whose newest checkpoint could not be read."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from normscope.cli import output as out
from normscope.cli.options import OutputFormat

if TYPE_CHECKING:
    from normscope.scanner import Measured
    from normscope.schema import SeriesReport


def refuse_stale_latest(result: SeriesReport, gated: bool) -> None:
    """A gate on "the latest checkpoint" must not quietly judge an older one."""
    from normscope.trends import skipped_after_latest

    late = skipped_after_latest(result) if gated else []
    if late:
        out.fail(
            f"the latest checkpoint could not be read: {late[-1].reason} ({late[-1].path}); "
            f"the gate would judge step {result.checkpoints[-1].step} instead",
            hint="fix or remove the broken checkpoint, or name the checkpoints to follow",
        )


def hub_revisions(sources: list[str], revisions: str, token: str | None = None) -> list[str]:
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
    revs = list_hub_revisions(spec.repo_id, revisions, token)
    return [f"{spec.repo_id}@{rev}" for rev in revs]


def check_plot(plot: str | None, plot_role: str | None) -> None:
    """Fail before measuring: a bad role, no matplotlib, or nowhere to write the plot."""
    from normscope.render import plot as plotting

    if plot_role:
        plotting.parse_role(plot_role)
    if not plot:
        return
    plotting.plot_format(plot)
    plotting.require_matplotlib()
    if not Path(plot).resolve().parent.is_dir():
        out.fail(f"output directory does not exist ({Path(plot).parent})")


def check_prerequisites(
    plot: str | None, plot_role: str | None, tensorboard: str | None, events: str | None
) -> None:
    """Everything a series' extra outputs need, checked before any checkpoint is measured."""
    check_plot(plot, plot_role)
    check_tensorboard(tensorboard, events)


def check_tensorboard(outdir: str | None, events: str | None) -> None:
    """Fail before measuring when `--tensorboard` or `--events` lacks its package."""
    from normscope.events import require_tensorboard

    for flag, given in (("--events", events), ("--tensorboard", outdir)):
        if given is not None:
            require_tensorboard(flag)


def write_plot(result: SeriesReport, plot: str | None, plot_role: str | None, quiet: bool) -> None:
    """`--plot FILE` (checked before measuring by `check_plot`); nothing without it."""
    if not plot:
        return
    from normscope.render import plot as plotting

    role = plotting.parse_role(plot_role) if plot_role else None
    if role is not None and plotting.heatmap_role(result, role) is None:
        out.warn([f"no layer norms of role {role.value}: the plot has no heatmap"], quiet)
    data = plotting.render_plot(result, plotting.plot_format(plot), role)
    out.write_output(data, plot, "the plot")


def tensorboard_observer(
    outdir: str | None,
) -> tuple[dict[str, Any], Callable[[str, Measured], None] | None]:
    """`--tensorboard`: the per-role histograms of γ, kept by checkpoint as each is measured."""
    kept: dict[str, Any] = {}
    if outdir is None:
        return kept, None
    from normscope.events import role_histograms

    def observe(path: str, measured: Measured) -> None:
        kept[path] = role_histograms(measured)

    return kept, observe


def write_tensorboard(
    result: SeriesReport, outdir: str | None, histograms: dict[str, Any] | None = None
) -> None:
    """`--tensorboard OUTDIR`: the norm series as TensorBoard scalars and histograms."""
    if outdir is not None:
        from normscope.events import write_scalars

        write_scalars(result, outdir, histograms)


def with_trinity(
    result: SeriesReport, events: str, main_tag: str | None, mtp_tag: str | None
) -> SeriesReport:
    """`--events`: the losses joined to the checkpoints (the playbook's stability trinity)."""
    import dataclasses

    from normscope import events as tb

    main = [t.strip() for t in main_tag.split(",")] if main_tag else tb.MAIN_TAGS
    mtp = [t.strip() for t in mtp_tag.split(",")] if mtp_tag else tb.MTP_TAGS
    trinity, warnings = tb.trinity(result, events, main, mtp)
    return dataclasses.replace(result, trinity=trinity, warnings=(*result.warnings, *warnings))


def render_series(
    result: SeriesReport, format: OutputFormat, output: str | None, show_all: bool, wide: bool
) -> None:
    """The series report in `format`, to stdout or `output`."""
    from normscope.render.series import SeriesView

    out.render(format, output, SeriesView(result, show_all, wide))
