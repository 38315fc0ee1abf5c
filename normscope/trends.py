"""Trends of a series: relative change, drift per 1,000 steps, projected band crossing.

Pure functions of ratios and steps (and of `SeriesReport` for the views): no I/O,
no printing.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import numpy as np

from normscope.analysis import headline_key, is_headline
from normscope.schema import (
    Band,
    Module,
    NormStats,
    Role,
    RoleBand,
    SeriesCheckpoint,
    SeriesReport,
    SeriesRow,
    Skipped,
    Thresholds,
    Trend,
)
from normscope.schema.check import role_thresholds

DRIFT_WINDOW = 5
"""Checkpoints in the least-squares drift fit (the last ones)."""


def fit_drift(
    steps: Sequence[int], ratios: Sequence[float], window: int = DRIFT_WINDOW
) -> float | None:
    """Least-squares slope of ratio vs step over the last `window` points, per 1,000 steps.

    None with fewer than two distinct steps or a non-finite ratio in the window.
    """
    xs = np.asarray(steps[-window:], dtype=np.float64)
    ys = np.asarray(ratios[-window:], dtype=np.float64)
    if len(xs) < 2 or not np.isfinite(ys).all() or np.ptp(xs) == 0:
        return None
    # Centre x before fitting: steps in the millions would otherwise lose precision.
    x = xs - xs.mean()
    slope = float(np.dot(x, ys - ys.mean()) / np.dot(x, x))
    return 1000.0 * slope


PROJECTION_HORIZON = 3
"""Crossings are projected at most this many times the observed span of steps ahead."""


def project_crossing(
    step: int,
    ratio: float,
    drift_per_1k: float | None,
    thresholds: Thresholds,
    horizon: float = math.inf,
) -> tuple[int | None, Band | None]:
    """Where a steady drift from (step, ratio) crosses a band edge, and into which band.

    None beyond `horizon` steps ahead: a near-flat, noisy norm would otherwise be "projected" to
    explode millions of steps out, an alarm with no information in it.
    """
    if drift_per_1k is None or drift_per_1k == 0 or not math.isfinite(ratio):
        return None, None
    if thresholds.classify(ratio).out_of_band:
        return None, None
    per_step = drift_per_1k / 1000.0
    edge, band = (
        (thresholds.low, Band.collapse) if per_step < 0 else (thresholds.high, Band.explosion)
    )
    crossing = step + (edge - ratio) / per_step
    if not math.isfinite(crossing) or crossing > 1e18 or crossing - step > horizon:
        return None, None
    return round(crossing), band


def make_trend(
    name: str,
    role: Role,
    module: Module,
    mtp_depth: int | None,
    ratios: Sequence[float | None],
    steps: Sequence[int],
    thresholds: Thresholds,
    aggregate: bool = False,
    count: int = 1,
) -> Trend:
    """Summarise one ratio series (None where the norm is absent from a checkpoint)."""
    present = [(s, r) for s, r in zip(steps, ratios, strict=True) if r is not None]
    xs = [s for s, _ in present]
    ys = [r for _, r in present]
    first_out = next((s for s, r in present if thresholds.classify(r).out_of_band), None)
    drift = fit_drift(xs, ys)
    last_step, last = present[-1]
    # Extrapolate no further than PROJECTION_HORIZON times the stretch of steps observed.
    horizon = PROJECTION_HORIZON * (last_step - xs[0])
    crossing, band = project_crossing(last_step, last, drift, thresholds, horizon)
    return Trend(
        name=name,
        role=role,
        module=module,
        ratio_first=ys[0],
        ratio_last=last,
        band_last=thresholds.classify(last),
        first_out_of_band_step=first_out,
        drift_per_1k_steps=drift,
        projected_crossing_step=crossing,
        projected_band=band,
        mtp_depth=mtp_depth,
        aggregate=aggregate,
        count=count,
        ratios=tuple(ratios),
    )


def median_name(module: Module, role: Role) -> str:
    """The pseudo-norm name of a role's median ratio: `median(mlp_input)`, `median(mtp:qk)`."""
    return f"median({role.value})" if module is Module.main else f"median(mtp:{role.value})"


def headline_trends(
    checkpoints: Sequence[SeriesCheckpoint],
    rows: Sequence[SeriesRow],
    thresholds: Thresholds,
    roles: tuple[RoleBand, ...] = (),
) -> list[Trend]:
    """Trends of the final norm, each MTP norm, then each (module, role)'s median ratio; a role
    with its own band in `roles` is judged against it."""
    index = {c.path: i for i, c in enumerate(checkpoints)}
    steps = [c.step for c in checkpoints]
    n = len(checkpoints)
    norms: dict[str, tuple[NormStats, list[float | None]]] = {}
    groups: dict[tuple[Module, Role], list[list[float]]] = {}
    for row in rows:
        i, norm = index[row.checkpoint], row.norm
        if is_headline(norm):
            entry = norms.setdefault(norm.name, (norm, [None] * n))
            entry[1][i] = norm.ratio
        else:
            per_checkpoint = groups.setdefault((norm.module, norm.role), [[] for _ in range(n)])
            per_checkpoint[i].append(norm.ratio)
    out = []
    for norm, ratios in sorted(norms.values(), key=lambda e: headline_key(e[0])):
        band = role_thresholds(thresholds, roles, norm.role)
        out.append(
            make_trend(norm.name, norm.role, norm.module, norm.mtp_depth, ratios, steps, band)
        )
    order = list(Role)
    for (module, role), values in sorted(
        groups.items(), key=lambda kv: (kv[0][0] is Module.mtp, order.index(kv[0][1]))
    ):
        medians = [_median(v) for v in values]
        last_count = next((len(v) for v in reversed(values) if v), 0)
        out.append(
            make_trend(
                median_name(module, role),
                role,
                module,
                None,
                medians,
                steps,
                role_thresholds(thresholds, roles, role),
                aggregate=True,
                count=last_count,
            )
        )
    return out


def _median(values: Sequence[float]) -> float | None:
    """Median of the finite ratios; NaN when all are non-finite; None when there are none."""
    if not values:
        return None
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def norm_trends(report: SeriesReport) -> list[Trend]:
    """A trend for every norm of the series (the `--all` view), in scan order."""
    index = {c.path: i for i, c in enumerate(report.checkpoints)}
    steps = [c.step for c in report.checkpoints]
    n = len(report.checkpoints)
    norms: dict[str, tuple[NormStats, list[float | None]]] = {}
    for row in report.rows:
        entry = norms.setdefault(row.norm.name, (row.norm, [None] * n))
        entry[1][index[row.checkpoint]] = row.norm.ratio
    summary = report.summary
    return [
        make_trend(
            norm.name,
            norm.role,
            norm.module,
            norm.mtp_depth,
            ratios,
            steps,
            role_thresholds(summary.thresholds, summary.roles, norm.role),
        )
        for norm, ratios in norms.values()
    ]


def latest_rows(report: SeriesReport) -> list[SeriesRow]:
    """The rows of the latest checkpoint."""
    latest = report.checkpoints[-1].path
    return [r for r in report.rows if r.checkpoint == latest]


def skipped_after_latest(report: SeriesReport) -> list[Skipped]:
    """Checkpoints named with a step beyond the latest measured one that could not be read."""
    latest = report.checkpoints[-1].step
    return [s for s in report.skipped if s.step is not None and s.step > latest]
