"""Texts of the series views, shared by the tables, Markdown, HTML and the plot: the header facts,
steps, ratios, drift, sparklines, trend labels, the one-sentence outlook, the anomalies and the
trinity in words. Pure; no rich, no matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from normscope.enums import Executor, Module, Role, StepSource
from normscope.render.common import human_bytes
from normscope.schema import SeriesReport, Trend
from normscope.trends import latest_rows

SPARK = "▁▂▃▄▅▆▇█"
SPARK_MIN_SPAN = 0.05
"""Ratios that move less than this across a line draw flat: noise is not a trend."""


def fmt_step(step: float) -> str:
    """950 -> '950', 48000 -> '48k', 48500 -> '48.5k', 1907359 -> '1.91M'."""
    if abs(step) < 1000:
        return f"{step:.0f}"
    for scale, unit in ((1e3, "k"), (1e6, "M"), (1e9, "G"), (1e12, "T")):
        text = f"{step / scale:.3g}"
        if "e" not in text and abs(float(text)) < 1000:
            return text + unit
    return f"{step:.3g}"


def step_labels(steps: Sequence[int]) -> list[str]:
    """Exact step numbers when they fit 6 characters, else compact ones for every column."""
    if all(len(str(s)) <= 6 for s in steps):
        return [str(s) for s in steps]
    return [fmt_step(s) for s in steps]


def ratio_text(value: float | None) -> str:
    """A ratio in at most 6-7 characters; '·' where the norm is absent."""
    if value is None:
        return "·"
    if not math.isfinite(value):
        return str(value)
    if abs(value) < 10:
        return f"{value:.3f}"
    if abs(value) < 1000:
        return f"{value:.1f}"
    return f"{value:.3g}"


def drift_text(value: float | None) -> str:
    """Drift per 1,000 steps with its sign."""
    if value is None:
        return "-"
    if value == 0 or abs(value) >= 1e-3:
        return f"{value:+.4f}"
    return f"{value:+.1e}"


def sparkline(
    values: Sequence[float | None], width: int, scale: tuple[float, float] | None = None
) -> str:
    """A unicode sparkline of `values`, averaged into at most `width` cells.

    Blank: absent; `×`: non-finite. The scale (`scale`, shared by the lines drawn side by side,
    else the line's own range) spans at least SPARK_MIN_SPAN, so noise draws flat.
    """
    if not values or width <= 0:
        return ""
    cells: list[float | None] = []
    for bucket in np.array_split(np.arange(len(values)), min(width, len(values))):
        present = [values[i] for i in bucket if values[i] is not None]
        if not present:
            cells.append(None)
        elif not all(math.isfinite(v) for v in present if v is not None):
            cells.append(math.nan)
        else:
            cells.append(float(np.mean([v for v in present if v is not None])))
    finite = [c for c in cells if c is not None and math.isfinite(c)]
    if not finite:
        return "".join(" " if c is None else "×" for c in cells)
    lo, hi = scale if scale is not None else (min(finite), max(finite))
    if hi - lo < SPARK_MIN_SPAN:
        middle = (hi + lo) / 2
        lo, hi = middle - SPARK_MIN_SPAN / 2, middle + SPARK_MIN_SPAN / 2
    out = []
    for c in cells:
        if c is None:
            out.append(" ")
        elif not math.isfinite(c):
            out.append("×")
        else:
            level = round((c - lo) / (hi - lo) * (len(SPARK) - 1))
            out.append(SPARK[min(max(level, 0), len(SPARK) - 1)])
    return "".join(out)


def role_scales(trends: Sequence[Trend]) -> dict[Role, tuple[float, float]]:
    """One sparkline scale per role: the range of every finite ratio of that role's lines."""
    ranges: dict[Role, tuple[float, float]] = {}
    for t in trends:
        finite = [v for v in t.ratios if v is not None and math.isfinite(v)]
        if not finite:
            continue
        lo, hi = ranges.get(t.role, (math.inf, -math.inf))
        ranges[t.role] = (min(lo, *finite), max(hi, *finite))
    return ranges


def sample_indices(n: int, k: int) -> list[int]:
    """k evenly spaced indices of range(n), first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def trend_label(t: Trend) -> str:
    """'final norm', 'MTP 1 embedding norm', or the pseudo-norm name."""
    if t.aggregate:
        return t.name
    if t.role is Role.final and t.module is Module.main:
        return "final norm"
    return f"MTP {t.mtp_depth} {t.role.value[4:]} norm"


def outlook(t: Trend) -> str:
    """One sentence: where the ratio is and, if the trend holds, where it is going."""
    label, ratio = trend_label(t), f"{t.ratio_last:.2f}"
    if t.band_last.out_of_band:
        since = (
            f" (first out of band at step {fmt_step(t.first_out_of_band_step)})"
            if t.first_out_of_band_step is not None
            else ""
        )
        return f"{label}: {ratio}, {t.band_last.value} now{since}"
    if t.projected_crossing_step is not None and t.projected_band is not None:
        return (
            f"{label}: {ratio} → {t.projected_band.value} at ≈ step "
            f"{fmt_step(t.projected_crossing_step)} if the trend holds"
        )
    earlier = (
        f"; was out of band at step {fmt_step(t.first_out_of_band_step)}"
        if t.first_out_of_band_step is not None
        else ""
    )
    if t.drift_per_1k_steps is None:
        return f"{label}: {ratio} ({t.band_last.value}){earlier}"
    return f"{label}: {ratio} ({t.band_last.value}), no band edge ahead at this drift{earlier}"


def projection(t: Trend) -> str:
    if t.projected_crossing_step is None or t.projected_band is None:
        return "-"
    return f"{t.projected_band.value} ≈ {fmt_step(t.projected_crossing_step)}"


def anomaly_outlook(report: SeriesReport) -> list[str]:
    """One sentence per norm that has left its peers at the latest checkpoint, and since when."""
    since: dict[str, int] = {}
    for row in report.rows:  # series order: the start of each norm's current anomalous streak
        if row.norm.anomaly:
            since.setdefault(row.norm.name, row.step)
        else:
            since.pop(row.norm.name, None)
    return [
        f"{row.norm.name}: {ratio_text(row.norm.ratio)} against a peer median of "
        f"{ratio_text(row.norm.peer_median)}, an anomaly since step "
        f"{fmt_step(since[row.norm.name])}"
        for row in latest_rows(report)
        if row.norm.anomaly and row.norm.peer_median is not None
    ]


def header_lines(report: SeriesReport) -> list[tuple[str, str]]:
    """The facts of the header panel as (label, value) pairs."""
    m, s, io = report.model, report.summary, report.io
    sources = ", ".join(report.source[:3])
    if len(report.source) > 3:
        sources += f" and {len(report.source) - 3} more"
    first, last = report.checkpoints[0].step, report.checkpoints[-1].step
    by = "position in the list" if report.steps_from is StepSource.position else "name"
    how = {
        Executor.serial: "serial",
        Executor.process: f"{io.jobs} processes",
        Executor.thread: f"{io.jobs} threads",
        Executor.auto: "auto",
    }[io.executor]
    return [
        ("source", sources),
        (
            "model",
            f"{m.model_type or '?'} (rules: {m.family}), hidden {m.hidden_size or '?'}, "
            f"{m.num_layers if m.num_layers is not None else '?'} layers, MTP depth {m.mtp_depth}",
        ),
        (
            "checkpoints",
            f"{len(report.checkpoints)}, steps {first} … {last} (from the {by}); "
            f"{len(report.skipped)} skipped",
        ),
        ("read", f"{human_bytes(io.bytes_read)} in {io.seconds:.2f} s ({how})"),
        (
            "gate",
            f"band [{s.thresholds.low:g}, {s.thresholds.high:g}]; {s.gated_out_of_band} norm(s) "
            f"in scope '{s.scope}' out of band at step {s.latest_step}",
        ),
    ]
