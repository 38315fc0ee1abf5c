"""What `normscope series` decides before and after measuring: the executor, the sources of
`--revisions`, and the refusal to gate a run whose newest checkpoint could not be read."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from normscope.cli import output as out
from normscope.cli.options import SeriesExecutor
from normscope.enums import Order

if TYPE_CHECKING:
    from normscope.scanner import ScanOptions
    from normscope.schema import SeriesReport
    from normscope.series import SeriesOptions


def series_options(
    scan: ScanOptions,
    order: Order,
    jobs: int | None,
    strict: bool,
    executor: SeriesExecutor,
    address: str | None,
) -> SeriesOptions:
    """`--executor local` lets `auto` choose a loop or a pool; `dask` (or `--cluster`) a cluster."""
    from normscope.enums import Executor
    from normscope.executors import ClusterSpec
    from normscope.series import SeriesOptions

    if address is not None and not address.strip():
        raise typer.BadParameter("empty address", param_hint="--cluster")
    on_cluster = executor is SeriesExecutor.dask or address is not None
    kind = Executor.dask if on_cluster else Executor.auto
    spec = ClusterSpec(address) if on_cluster else None
    return SeriesOptions(scan, order, jobs, kind, strict=strict, cluster=spec)


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


def hub_revisions(sources: list[str], revisions: str) -> list[str]:
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
