"""The stability trinity of a series (playbook §04) in every view: the main and MTP losses from
TensorBoard, their gap, and the final norm's ratio against its band, by checkpoint step.

`series --events` adds it (`events.trinity`); the table, Markdown and HTML renderers of the series
report (`series.py`) and the plot (`plot.py`, its panel under the ratios) each take their part.
"""

from __future__ import annotations

import math
from html import escape as html_escape
from typing import TYPE_CHECKING, Any

from normscope.render import html
from normscope.render.common import BAND_STYLE
from normscope.render.series_text import drift_text, fmt_step, ratio_text
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


def trinity_sections(report: SeriesReport) -> list[str]:
    """The three signals side by side: the losses, their gap, the final norm against its band."""
    tri = report.trinity
    if tri is None:
        return []
    steps = [r.step for r in tri.rows]
    rows = [
        [
            html.num(r.step, 0),
            (loss_text(r.main_loss), _nan(r.main_loss), "num"),
            (loss_text(r.mtp_loss), _nan(r.mtp_loss), "num"),
            html.num(r.gap, 4),
            html.num(r.final_ratio),
            html.band(r.final_band) if r.final_band is not None else html.text("-"),
        ]
        for r in tri.rows
    ]
    trends = "".join(
        f"<li>{html_escape(k)}: {html_escape(v)} per 1k steps</li>"
        for k, v in trinity_lines(report)
    )
    return [
        '<h2>stability trinity (playbook §04)</h2><div style="display:flex;flex-wrap:wrap">'
        + html.trend_svg(
            "trinity-loss",
            "main and MTP loss",
            steps,
            [
                ("main loss", [r.main_loss for r in tri.rows]),
                ("MTP loss", [r.mtp_loss for r in tri.rows]),
            ],
            None,
        )
        + html.trend_svg(
            "trinity-gap", "gap (MTP − main)", steps, [("gap", [r.gap for r in tri.rows])], None
        )
        + html.trend_svg(
            "trinity-ratio",
            "final norm ratio and its band",
            steps,
            [("final ratio", [r.final_ratio for r in tri.rows])],
            report.summary.thresholds,
        )
        + f"</div><ul>{trends}</ul>",
        html.table(
            "trinity",
            "trinity by checkpoint",
            ["step", "main loss", "MTP loss", "gap", "final ratio", "band"],
            rows,
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
