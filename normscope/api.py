"""The Python API: one function per command, keyword options as the flags, typed results.

`normscope.scan`, `diff`, `series`, `check` and `fold` take what the command takes (`low`,
`high`, `scope`, `parametrization`, `rules`, `config`, the policy knobs of `check`...) and
return the report the command renders (`Report`, `DiffReport`, `SeriesReport`, `CheckReport`,
`FoldReport`); each has `to_frame()`. The options are built by the same builder as the command
line's (`normscope.settings`): the same inputs and `[tool.normscope]` give the same report. Errors
are `NormscopeError`s naming the input, exactly as the command line says them.

The `run_*` functions are what the commands call: a parsed source, the settings, progress.

`scan`, `diff` and `check` also take a model in this process: a `state_dict` (torch tensors on
one device, or numpy arrays) or an `nn.Module`, with `model_config` (a dict or a transformers
`PretrainedConfig`; a transformers model brings its own) when the names need it. Only the norm
vectors leave the device (`normscope.sources.memory`).
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
    from normscope.fold.tasks import ProgressCallback as FoldProgressCallback
    from normscope.scanner import ScanOptions
    from normscope.schema.fold import FoldReport
    from normscope.series import Observer, ProgressCallback, SeriesOptions
    from normscope.sources import ProgressFactory, SourceSpec

Source = str | os.PathLike[str]
Model = Any
"""A source in this process: a `state_dict` mapping, an `nn.Module` or a `memory.InMemory`."""


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
    sources: Sequence[Source],
    options: SeriesOptions,
    progress: ProgressCallback | None = None,
    observe: Observer | None = None,
) -> SeriesReport:
    """`normscope series`: a run's checkpoints measured and followed (`observe` sees each scan,
    e.g. for `--tensorboard`'s histograms)."""
    from normscope.series import measure_series

    return measure_series(list(sources), options, progress, observe)


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
    source: Source | Model,
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
    token: str | None = None,
    model_config: Any = None,
) -> Report:
    """Scan one checkpoint (file, folder, DCP save, torch file, Hub repo or URL), or a state
    dict or module in memory (with its `model_config` when its names need one): `normscope scan`.

    `options` (a `ScanOptions`) replaces the keyword options and the configuration.
    """
    flags = _flags(low, high, scope, parametrization, rules, config, no_cache, token=token)
    return run_scan(_model(source, model_config), _settings(options, flags), revision)


def diff(
    a: Source | Model,
    b: Source | Model,
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
    token: str | None = None,
    model_config: Any = None,
) -> DiffReport:
    """Compare the norms of two checkpoints: `normscope diff A B` (`options`: as for `scan`;
    `model_config`: of the side(s) in memory)."""
    flags = _flags(low, high, scope, parametrization, rules, config, no_cache, token=token)
    sides = _model(a, model_config, True), _model(b, model_config, True)
    return run_diff(*sides, _settings(options, flags), revision)


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
    token: str | None = None,
    progress: bool | None = None,
) -> SeriesReport:
    """Follow a run: one run folder, or checkpoints listed (kept in that order unless `order`
    says otherwise): `normscope series`. `progress`: the command's bar on stderr (None: where
    stderr is a terminal; False: never; True: always)."""
    from normscope.progress import series_bar

    flags = _flags(low, high, scope, parametrization, rules, config, no_cache, token=token)
    options = series_options(build_settings(flags), order, jobs, strict, executor, cluster)
    with series_bar(progress) as bar:
        return run_series(sources, options, bar)


def check(
    source: Source | Model,
    *,
    baseline: Source | Model | None = None,
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
    token: str | None = None,
    model_config: Any = None,
) -> CheckReport:
    """Gate a checkpoint on the policy (defaults < `[tool.normscope]`/`config` < these
    keywords): `normscope check`. `severity` maps a check to error|warn|off. `config` is the
    policy file; `model_config` the config of a source (or baseline) in memory."""
    flags = _flags(
        low,
        high,
        scope,
        parametrization,
        rules,
        config,
        no_cache,
        token=token,
        max_drift=max_drift,
        expect_init=expect_init,
        expect_mtp=expect_mtp,
        severity=severity,
        allow_unknown=allow_unknown,
    )
    if baseline is not None:
        baseline = _model(baseline, model_config, True)
    return run_check(_model(source, model_config, True), build_settings(flags), baseline, revision)


def _model(source: Source | Model, model_config: Any, either: bool = False) -> Any:
    """A source in memory with its `model_config`, as `memory.InMemory`; a path, URL or repo id
    as it is. `model_config` for a source on disk is a UsageError, unless `either` (a diff or
    check whose other side may be the one in memory)."""
    if model_config is None:
        return source
    if isinstance(source, str | os.PathLike):
        if either:
            return source
        from normscope.errors import UsageError

        raise UsageError(
            "model_config applies to a state dict or module in memory; a checkpoint on disk "
            "brings its config.json",
            param="model_config",
        )
    from normscope.sources.memory import InMemory

    return source if isinstance(source, InMemory) else InMemory(source, model_config)


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
    token: str | None = None,
) -> FoldReport:
    """Fold each norm into the matrices it feeds: `normscope fold` (needs `normscope[torch]`)."""
    flags = _flags(low, high, scope, parametrization, rules, config, no_cache, token=token)
    options = fold_options(
        build_settings(flags), device, max_memory, experts, dry_run, executor, cluster
    )
    return run_fold(source, options, revision)


__all__ = ["check", "diff", "fold", "scan", "series"]
