"""The Python API: one function per command, keyword options as the flags, typed results.

`normscope.scan`, `diff`, `series`, `check` and `fold` take what the command takes (`low`,
`high`, `scope`, `parametrization`, `rules`, `config`, the policy knobs of `check`...) and
return the report the command renders (`Report`, `DiffReport`, `SeriesReport`, `CheckReport`,
`FoldReport`); each has `to_frame()`. The options are built by the same builder as the command
line's (`normscope.settings`): the same inputs and `[tool.normscope]` give the same report. Errors
are `NormscopeError`s naming the input, exactly as the command line says them.

The `run_*` functions are what the commands call: a parsed source, the settings, progress.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from normscope.enums import Executor, Order, Parametrization
from normscope.schema import CheckReport, DiffReport, Report, SeriesReport
from normscope.settings import Flags, Settings, build_settings, fold_options, series_options

if TYPE_CHECKING:
    from normscope.fold import FoldOptions
    from normscope.fold.pipeline import ProgressCallback as FoldProgressCallback
    from normscope.scanner import ScanOptions
    from normscope.schema.fold import FoldReport
    from normscope.series import ProgressCallback, SeriesOptions
    from normscope.sources import ProgressFactory, SourceSpec

Source = str | os.PathLike[str]


def _flags(
    low: float | None,
    high: float | None,
    scope: str | None,
    parametrization: Parametrization | str | None,
    rules: Source | None,
    config: Source | None,
    no_cache: bool | None,
    **check: Any,
) -> Flags:
    """The keywords of a call as the builder's `Flags` (`check`: the policy knobs of `check`)."""
    return Flags(
        low=low,
        high=high,
        scope=scope,
        parametrization=parametrization,
        rules=Path(rules) if rules is not None else None,
        config=Path(config) if config is not None else None,
        no_cache=no_cache,
        **check,
    )


def _settings(options: ScanOptions | None, flags: Flags) -> Settings:
    """The settings of one call; an explicit `ScanOptions` replaces the keywords and the
    configuration (nothing is read for them)."""
    if options is None:
        return build_settings(flags)
    from normscope.schema import Policy

    return Settings(Policy(), options)


def run_scan(
    source: Source | SourceSpec,
    settings: Settings,
    revision: str | None = None,
    progress: ProgressFactory | None = None,
) -> Report:
    """`normscope scan`: the report of one checkpoint."""
    from normscope.scanner import measure
    from normscope.sources import parse_source

    return measure(parse_source(source, revision), settings.scan, progress).report


def run_diff(
    a: Source | SourceSpec, b: Source | SourceSpec, settings: Settings, revision: str | None = None
) -> DiffReport:
    """`normscope diff`: the two checkpoints' norms compared (`revision` applies to both)."""
    from normscope.compare import diff as compare
    from normscope.sources import parse_source

    return compare(parse_source(a, revision), parse_source(b, revision), settings.scan)


def run_series(
    sources: Sequence[Source], options: SeriesOptions, progress: ProgressCallback | None = None
) -> SeriesReport:
    """`normscope series`: a run's checkpoints measured and followed."""
    from normscope.series import measure_series

    return measure_series(list(sources), options, progress)


def run_check(
    source: Source | SourceSpec,
    settings: Settings,
    baseline: Source | SourceSpec | None = None,
    revision: str | None = None,
    progress: ProgressFactory | None = None,
) -> CheckReport:
    """`normscope check`: the policy's checks of one checkpoint (and its baseline; `revision`
    applies to the checkpoint)."""
    from normscope.gates import run_checks
    from normscope.scanner import measure
    from normscope.sources import parse_source

    measured = measure(parse_source(source, revision), settings.scan, progress)
    base = (
        measure(parse_source(baseline), settings.scan, progress) if baseline is not None else None
    )
    return run_checks(measured, settings.policy, base)


def run_fold(
    source: Source | SourceSpec,
    options: FoldOptions,
    revision: str | None = None,
    progress: FoldProgressCallback | None = None,
) -> FoldReport:
    """`normscope fold`: each norm against the matrices it feeds."""
    from normscope.fold import fold as run
    from normscope.sources import parse_source

    return run(parse_source(source, revision), options, progress)


def scan(
    source: Source,
    options: ScanOptions | None = None,
    *,
    low: float | None = None,
    high: float | None = None,
    scope: str | None = None,
    parametrization: Parametrization | str | None = None,
    rules: Source | None = None,
    config: Source | None = None,
    revision: str | None = None,
    no_cache: bool | None = None,
) -> Report:
    """Scan one checkpoint (file, folder, DCP save, torch file, Hub repo or URL): `normscope scan`.

    `options` (a `ScanOptions`) replaces the keyword options and the configuration.
    """
    flags = _flags(low, high, scope, parametrization, rules, config, no_cache)
    return run_scan(source, _settings(options, flags), revision)


def diff(
    a: Source,
    b: Source,
    options: ScanOptions | None = None,
    *,
    low: float | None = None,
    high: float | None = None,
    scope: str | None = None,
    parametrization: Parametrization | str | None = None,
    rules: Source | None = None,
    config: Source | None = None,
    revision: str | None = None,
    no_cache: bool | None = None,
) -> DiffReport:
    """Compare the norms of two checkpoints: `normscope diff A B` (`options`: as for `scan`)."""
    flags = _flags(low, high, scope, parametrization, rules, config, no_cache)
    return run_diff(a, b, _settings(options, flags), revision)


def series(
    *sources: Source,
    order: Order | str | None = None,
    jobs: int | None = None,
    strict: bool = False,
    low: float | None = None,
    high: float | None = None,
    scope: str | None = None,
    parametrization: Parametrization | str | None = None,
    rules: Source | None = None,
    config: Source | None = None,
    executor: Executor | str = Executor.auto,
    cluster: str | None = None,
    no_cache: bool | None = None,
) -> SeriesReport:
    """Follow a run: one run folder, or checkpoints listed (kept in that order unless `order`
    says otherwise): `normscope series`."""
    flags = _flags(low, high, scope, parametrization, rules, config, no_cache)
    options = series_options(build_settings(flags), order, jobs, strict, executor, cluster)
    return run_series(sources, options)


def check(
    source: Source,
    *,
    baseline: Source | None = None,
    max_drift: float | None = None,
    expect_init: bool | None = None,
    expect_mtp: int | None = None,
    scope: str | None = None,
    low: float | None = None,
    high: float | None = None,
    parametrization: Parametrization | str | None = None,
    severity: Mapping[str, str] | None = None,
    allow_unknown: bool | None = None,
    rules: Source | None = None,
    config: Source | None = None,
    revision: str | None = None,
    no_cache: bool | None = None,
) -> CheckReport:
    """Gate a checkpoint on the policy (defaults < `[tool.normscope]`/`config` < these
    keywords): `normscope check`. `severity` maps a check to error|warn|off."""
    flags = _flags(
        low,
        high,
        scope,
        parametrization,
        rules,
        config,
        no_cache,
        max_drift=max_drift,
        expect_init=expect_init,
        expect_mtp=expect_mtp,
        severity=severity,
        allow_unknown=allow_unknown,
    )
    return run_check(source, build_settings(flags), baseline, revision)


def fold(
    source: Source,
    *,
    device: str = "auto",
    max_memory: str | int = "2GB",
    experts: str = "8",
    dry_run: bool = False,
    low: float | None = None,
    high: float | None = None,
    scope: str | None = None,
    parametrization: Parametrization | str | None = None,
    rules: Source | None = None,
    config: Source | None = None,
    executor: Executor | str = Executor.auto,
    cluster: str | None = None,
    revision: str | None = None,
    no_cache: bool | None = None,
) -> FoldReport:
    """Fold each norm into the matrices it feeds: `normscope fold` (needs `normscope[torch]`)."""
    flags = _flags(low, high, scope, parametrization, rules, config, no_cache)
    options = fold_options(
        build_settings(flags), device, max_memory, experts, dry_run, executor, cluster
    )
    return run_fold(source, options, revision)


__all__ = ["check", "diff", "fold", "scan", "series"]
