"""The stability trinity of a series (playbook §04) in every view: the main and MTP losses from
TensorBoard, their gap, and the final norm's ratio against its band, by checkpoint step.

`series --events` adds it (`events.trinity`); the table, Markdown and HTML renderers of the series
report (`series.py`) and the plot (`plot.py`, its panel under the ratios) each take their part.
"""

from __future__ import annotations

import math
from html import escape as html_escape
from typing import TYPE_CHECKING, Any

from normscope.render import chart, html
from normscope.render.common import BAND_STYLE
from normscope.render.series_text import drift_text, fmt_step, ratio_text, sample_indices
from normscope.schema import SeriesReport

if TYPE_CHECKING:
    import numpy as np
    from rich.console import RenderableType


def loss_text(value: float | None) -> str:
    """A loss to four places, `-` when it was not logged."""
    return "-" if value is None else f"{value:.4f}"


def trinity_lines(report: SeriesReport) -> list[tuple[str, str]]:
    """The trinity's trends in words: (signal, drift per 1k steps)."""
    tri = report.trinity
    assert tri is not None
    return [
        (f"main loss ({tri.main_tag or 'not logged'})", drift_text(tri.main_trend)),
        (f"MTP loss ({tri.mtp_tag or 'not logged'})", drift_text(tri.mtp_trend)),
        ("gap (MTP − main)", drift_text(tri.gap_trend)),
        ("final norm ratio", drift_text(tri.ratio_trend)),
    ]


def trinity_table(report: SeriesReport) -> RenderableType:
    """The rich table: one row per checkpoint, the trends in the caption."""
    from rich import box
    from rich.table import Table

    tri = report.trinity
    assert tri is not None
    trends = "; ".join(f"{k} {v}" for k, v in trinity_lines(report))
    table = Table(
        title="stability trinity (playbook §04): losses from TensorBoard, the final norm",
        caption=f"drift/1k: {trends}",
        title_justify="left",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        padding=(0, 1, 0, 0),
        show_edge=False,
    )
    for col in ("step", "main loss", "MTP loss", "gap", "final ratio"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("band", no_wrap=True)
    for r in tri.rows:
        band = (
            "-" if r.final_band is None else f"[{BAND_STYLE[r.final_band]}]{r.final_band.value}[/]"
        )
        table.add_row(
            fmt_step(r.step),
            loss_text(r.main_loss),
            loss_text(r.mtp_loss),
            "-" if r.gap is None else f"{r.gap:+.4f}",
            ratio_text(r.final_ratio),
            band,
        )
    return table


def trinity_markdown(report: SeriesReport) -> list[str]:
    """The Markdown section: a row per checkpoint, then the trends."""
    tri = report.trinity
    assert tri is not None
    lines = [
        "",
        "#### Stability trinity (playbook §04)",
        "",
        "| step | main loss | MTP loss | gap | final ratio | band |",
        "|--:|--:|--:|--:|--:|---|",
    ]
    lines += [
        f"| {r.step} | {loss_text(r.main_loss)} | {loss_text(r.mtp_loss)} | "
        f"{'-' if r.gap is None else f'{r.gap:+.4f}'} | {ratio_text(r.final_ratio)} | "
        f"{'-' if r.final_band is None else r.final_band.value} |"
        for r in tri.rows
    ]
    lines += ["", *(f"- {k}: {v} per 1k steps" for k, v in trinity_lines(report))]
    return lines


MAX_TRINITY_ROWS = 24
"""A longer run's trinity table shows evenly spaced checkpoints and the worst ones (JSON: all)."""


def trinity_rows(report: SeriesReport) -> tuple[list[int], str]:
    """The indices of the trinity rows a page lists, and the note saying what was left out.

    Up to `MAX_TRINITY_ROWS` checkpoints: all of them. Beyond: evenly spaced ones (the first and
    the last among them), the final ratio farthest from 1 and the widest gap.
    """
    tri = report.trinity
    assert tri is not None
    n = len(tri.rows)
    if n <= MAX_TRINITY_ROWS:
        return list(range(n)), ""
    picked = set(sample_indices(n, MAX_TRINITY_ROWS - 2))
    ratios = [i for i, r in enumerate(tri.rows) if r.final_ratio is not None and r.final_ratio > 0]
    if ratios:
        picked.add(max(ratios, key=lambda i: abs(math.log(tri.rows[i].final_ratio or 1.0))))
    gaps = [i for i, r in enumerate(tri.rows) if r.gap is not None]
    if gaps:
        picked.add(max(gaps, key=lambda i: abs(tri.rows[i].gap or 0.0)))
    shown = sorted(picked)
    note = (
        f"{len(shown)} of {n} checkpoints: evenly spaced (the first and the last among them), "
        f"the final ratio farthest from 1 and the widest gap; {n - len(shown)} more in -f json "
        "or -f csv"
    )
    return shown, note


def trinity_sections(report: SeriesReport) -> list[str]:
    """The three signals side by side: the losses, their gap, the final norm against its band;
    then their trends and the table by checkpoint (capped: `trinity_rows`)."""
    tri = report.trinity
    if tri is None:
        return []
    steps = [r.step for r in tri.rows]
    shown, note = trinity_rows(report)
    rows = [
        [
            (str(r.step), r.step, "num"),
            (loss_text(r.main_loss), _nan(r.main_loss), "num"),
            (loss_text(r.mtp_loss), _nan(r.mtp_loss), "num"),
            html.num(r.gap, 4),
            html.num(r.final_ratio),
            html.band(r.final_band) if r.final_band is not None else html.text("-"),
        ]
        for r in (tri.rows[i] for i in shown)
    ]
    trends = "".join(
        f"<li>{html_escape(k)}: {html_escape(v)} per 1k steps</li>"
        for k, v in trinity_lines(report)
    )
    figures = [
        chart.Chart(
            "trinity-loss",
            "main and MTP loss",
            "loss",
            steps,
            [
                ("main loss", [r.main_loss for r in tri.rows]),
                ("MTP loss", [r.mtp_loss for r in tri.rows]),
            ],
        ),
        chart.Chart(
            "trinity-gap", "gap (MTP − main)", "gap", steps, [("gap", [r.gap for r in tri.rows])]
        ),
        chart.Chart(
            "trinity-ratio",
            "final norm ratio and its band",
            "ratio ‖g‖/√d",
            steps,
            [("final ratio", [r.final_ratio for r in tri.rows])],
            report.summary.thresholds,
        ),
    ]
    return [
        "<h2>stability trinity (playbook §04)</h2>"
        + chart.charts([chart.figure(f) for f in figures])
        + f"<ul>{trends}</ul>",
        html.table(
            "trinity",
            "trinity by checkpoint",
            ["step", "main loss", "MTP loss", "gap", "final ratio", "band"],
            rows,
            note,
        ),
    ]


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def draw_trinity(ax: Any, report: SeriesReport, steps: np.ndarray) -> None:
    """Main and MTP loss (left axis) and their gap (right axis), by checkpoint step."""
    tri = report.trinity
    assert tri is not None

    def series(values: list[float | None]) -> list[float]:
        return [math.nan if v is None else v for v in values]

    ax.plot(
        steps,
        series([r.main_loss for r in tri.rows]),
        marker="o",
        color="#1565c0",
        label=f"main loss ({tri.main_tag or 'not logged'})",
    )
    ax.plot(
        steps,
        series([r.mtp_loss for r in tri.rows]),
        marker="s",
        ls="--",
        color="#ef6c00",
        label=f"MTP loss ({tri.mtp_tag or 'not logged'})",
    )  # dashed: never hidden
    gap_ax = ax.twinx()
    gap_ax.plot(
        steps,
        series([r.gap for r in tri.rows]),
        marker="^",
        ls=":",
        color="#6a1b9a",
        label="gap (MTP − main)",
    )
    ax.set_ylabel("loss")
    gap_ax.set_ylabel("gap")
    if len(steps) <= 12:
        ax.set_xticks(steps)  # ticks on the checkpoints' steps
    lines = ax.get_legend_handles_labels()
    extra = gap_ax.get_legend_handles_labels()
    ax.legend(lines[0] + extra[0], lines[1] + extra[1], fontsize=8, loc="upper right")
    ax.set_title("stability trinity: losses and their gap (the final ratio is above)", fontsize=9)
