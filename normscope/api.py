"""The Python API: one function per command, keyword options as the flags, typed results.

`normscope.scan`, `diff`, `series` and `check` take what the command takes (`low`, `high`,
`scope`, `parametrization`, the policy knobs of `check`...) and return the report the command
renders (`Report`, `DiffReport`, `SeriesReport`, `CheckReport`); each has `to_frame()`. Errors
are `NormscopeError`s naming the input, exactly as the command line says them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from normscope.enums import Order, Parametrization
from normscope.schema import (
    DEFAULT_HIGH,
    DEFAULT_LOW,
    CheckReport,
    DiffReport,
    PeerRule,
    Report,
    SeriesReport,
    Thresholds,
)
from normscope.scope import DEFAULT_SCOPE

if TYPE_CHECKING:
    from normscope.scanner import ScanOptions

Source = str | os.PathLike[str]


def _options(
    low: float,
    high: float,
    scope: str,
    parametrization: Parametrization | str | None,
    peers: PeerRule | None = None,
) -> ScanOptions:
    from normscope.errors import UsageError
    from normscope.scanner import ScanOptions
    from normscope.scope import parse_scope

    if not 0 < low < high:
        raise UsageError("need 0 < low < high", param="low/high")
    param = Parametrization(parametrization) if parametrization is not None else None
    selector = parse_scope(scope)
    return ScanOptions(Thresholds(low=low, high=high), param, selector, peers=peers or PeerRule())


def _at(source: Source, revision: str | None) -> str:
    if revision is None:
        return os.fspath(source)
    from normscope.sources.hub.spec import with_revision

    return with_revision(os.fspath(source), revision)


def scan(
    source: Source,
    options: ScanOptions | None = None,
    *,
    low: float = DEFAULT_LOW,
    high: float = DEFAULT_HIGH,
    scope: str = DEFAULT_SCOPE,
    parametrization: Parametrization | str | None = None,
    revision: str | None = None,
) -> Report:
    """Scan one checkpoint (file, folder, DCP save, state dict or Hub repo): `normscope scan`.

    `options` (a `ScanOptions`, e.g. with user rules) replaces the keyword options.
    """
    from normscope.scanner import measure

    options = options or _options(low, high, scope, parametrization)
    return measure(_at(source, revision), options).report


def diff(
    a: Source,
    b: Source,
    options: ScanOptions | None = None,
    *,
    low: float = DEFAULT_LOW,
    high: float = DEFAULT_HIGH,
    scope: str = DEFAULT_SCOPE,
    parametrization: Parametrization | str | None = None,
    revision: str | None = None,
) -> DiffReport:
    """Compare the norms of two checkpoints: `normscope diff A B` (`options`: as for `scan`)."""
    from normscope.compare import diff as run_diff

    options = options or _options(low, high, scope, parametrization)
    return run_diff(_at(a, revision), _at(b, revision), options)


def series(
    *sources: Source,
    order: Order | str | None = None,
    jobs: int | None = None,
    strict: bool = False,
    low: float = DEFAULT_LOW,
    high: float = DEFAULT_HIGH,
    scope: str = DEFAULT_SCOPE,
    parametrization: Parametrization | str | None = None,
) -> SeriesReport:
    """Follow a run: one run folder, or checkpoints listed (kept in that order unless `order`
    says otherwise): `normscope series`."""
    from normscope.series import SeriesOptions, measure_series

    options = SeriesOptions(
        _options(low, high, scope, parametrization),
        Order(order) if order is not None else None,
        jobs,
        strict=strict,
    )
    return measure_series(list(sources), options)


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
    config: Source | None = None,
    revision: str | None = None,
) -> CheckReport:
    """Gate a checkpoint on the policy (defaults < `[tool.normscope]`/`config` < these
    keywords): `normscope check`. `severity` maps a check to error|warn|off."""
    from normscope.gates import run_checks
    from normscope.policy import PolicyOverrides, load_policy, parse_severities
    from normscope.scanner import ScanOptions, measure

    overrides = PolicyOverrides(
        low, high, scope, max_drift, expect_init, expect_mtp,
        Parametrization(parametrization) if parametrization is not None else None,
        parse_severities([f"{k}={v}" for k, v in (severity or {}).items()]), allow_unknown,
    )  # fmt: skip
    policy = load_policy(Path(config) if config is not None else None, overrides)
    options = ScanOptions(
        Thresholds(low=policy.low, high=policy.high),
        policy.parametrization,
        policy.scope,
        peers=policy.anomaly,
    )
    measured = measure(_at(source, revision), options)
    base = measure(_at(baseline, revision), options) if baseline is not None else None
    return run_checks(measured, policy, base)


__all__ = ["check", "diff", "scan", "series"]
