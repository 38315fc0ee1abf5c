"""Renderers of `normscope series`: a SeriesReport as JSON, CSV, Markdown, HTML or rich tables,
and `SeriesView`, which holds them together for the command line.

JSON and CSV carry the tidy rows at full precision: one per (checkpoint, norm), columns
`checkpoint`, `step`, every `NormStats` field in schema order, then `rel_change`. The table and
Markdown views are for people: the headline ratios at up to 12 steps, a sparkline of all of them,
the band now, the first step out of band, the drift per 1,000 steps and where it leads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from normscope.naming import fit_names
from normscope.render import chart, html
from normscope.render.common import (
    BAND_STYLE,
    NAME_FLOOR,
    display_name,
    fmt,
    for_people,
    frame_csv,
    header_panel,
    name_column_width,
    text_safe,
    where,
)
from normscope.render.series_text import (
    anomaly_outlook,
    drift_text,
    fmt_step,
    header_lines,
    outlook,
    projection,
    ratio_text,
    role_scales,
    sample_indices,
    sparkline,
    step_labels,
)
from normscope.render.trinity import trinity_markdown, trinity_sections, trinity_table
from normscope.schema import SeriesReport, Trend
from normscope.schema.check import role_thresholds
from normscope.trends import latest_rows, norm_trends

if TYPE_CHECKING:
    from rich.console import RenderableType

MAX_STEP_COLUMNS = 12

__all__ = [
    "render_series_csv",
    "render_series_json",
    "render_series_markdown",
    "render_series_table",
]


# --- machine formats ----------------------------------------------------------------------------


@text_safe
def render_series_csv(report: SeriesReport) -> str:
    """CSV of the tidy rows: a header row, full float precision, empty cells for null."""
    return frame_csv(report.to_frame())


def render_series_json(report: SeriesReport) -> str:
    """One JSON object: schema_version ... checkpoints, skipped, rows (flat), summary, warnings:
    `report.to_json()`."""
    return report.to_json()


def _styled(text: str, t: Trend) -> str:
    from rich.markup import escape

    return f"[{BAND_STYLE[t.band_last]}]{escape(text)}[/]"


# --- rich views ---------------------------------------------------------------------------------


@for_people
def render_series_table(
    report: SeriesReport, show_all: bool = False, width: int = 100, wide: bool = False
) -> list[RenderableType]:
    """Header, headline ratios by step, trends, outlook, every norm with show_all, skipped."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    out: list[RenderableType] = [
        header_panel(f"normscope series {report.normscope_version}", header_lines(report))
    ]
    trends = report.summary.headline
    if trends:
        out += [_ratio_table(report, width, wide), _trend_table(report, width, wide)]
        lines = [outlook(t) for t in trends if not t.aggregate] + anomaly_outlook(report)
        if lines:
            out.append("[bold]outlook[/]")
            out += [f"  {escape(line)}" for line in lines]
    if report.trinity is not None:
        out.append(trinity_table(report))
    if show_all:
        out.append(_all_table(report, width, wide))
    if report.skipped:
        skipped = Table(
            title=f"skipped ({len(report.skipped)})",
            title_justify="left",
            box=box.SIMPLE_HEAD,
            padding=(0, 1, 0, 0),
            show_edge=False,
        )
        skipped.add_column("checkpoint", no_wrap=True, max_width=30)
        skipped.add_column("reason", overflow="fold")
        for s in report.skipped:
            skipped.add_row(escape(Path(s.path).name), escape(s.reason))
        out.append(skipped)
    return out


def _trend_name(t: Trend, wide: bool) -> str:
    """`model.norm`, `mtp1 enorm`, `median(mtp:attn_input)` (the table has no layer column)."""
    return display_name(t, wide, with_layer=True)


def _name_width(trends: Sequence[Trend], width: int, wide: bool = False) -> int:
    """Names may lose their head when the width is short; pseudo-norm names never do."""
    longest = max((len(_trend_name(t, wide)) for t in trends), default=8)
    pseudo = max((len(t.name) for t in trends if t.aggregate), default=8)
    return longest if wide else max(8, pseudo, min(longest, 32, width // 3))


def _ratio_table(report: SeriesReport, width: int, wide: bool = False) -> RenderableType:
    from rich import box
    from rich.table import Table

    trends = report.summary.headline
    name_width = _name_width(trends, width, wide)
    n = len(report.checkpoints)
    # As many evenly spaced steps (up to 12) as the width holds. Columns are separated by one
    # space (the box's divider) and have no padding: numbers are never cut.
    for k in range(min(n, MAX_STEP_COLUMNS), 0, -1):
        picked = sample_indices(n, k)
        labels = step_labels([report.checkpoints[i].step for i in picked])
        widths = [
            max([len(label)] + [len(ratio_text(t.ratios[i])) for t in trends])
            for label, i in zip(labels, picked, strict=True)
        ]
        if name_width + sum(w + 1 for w in widths) <= width:
            break
    title = "ratio ‖g‖/√d by step"
    if len(picked) < n:
        title += f" ({len(picked)} of {n} checkpoints, evenly spaced)"
    table = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=0, show_edge=False
    )
    table.add_column("norm", no_wrap=True, max_width=name_width)
    for label, column_width in zip(labels, widths, strict=True):
        table.add_column(label, justify="right", no_wrap=True, min_width=column_width)
    thresholds = report.summary.thresholds
    cut = fit_names([_trend_name(t, wide) for t in trends], name_width)
    for t, name in zip(trends, cut, strict=True):
        texts = []
        for i in picked:
            value = t.ratios[i]
            style = BAND_STYLE[thresholds.classify(value)] if value is not None else "dim"
            texts.append(f"[{style}]{ratio_text(value)}[/]")
        table.add_row(name, *texts)
    return table


def _trend_table(report: SeriesReport, width: int, wide: bool = False) -> RenderableType:
    from rich import box
    from rich.table import Table

    trends = report.summary.headline
    name_width = _name_width(trends, width, wide)
    scales = role_scales(trends)
    n = len(report.checkpoints)
    lefts = [
        "-" if t.first_out_of_band_step is None else fmt_step(t.first_out_of_band_step)
        for t in trends
    ]
    projections = [projection(t) for t in trends]
    drifts = [drift_text(t.drift_per_1k_steps) for t in trends]
    # name, trend, band now, then what fits of drift/1k, left band, projected (in that order of
    # need); one space between columns, nothing ever cut but a name (to 12 characters).
    extra = {
        "drift/1k": max(len("drift/1k"), *map(len, drifts)),
        "left band": max(len("left band"), *map(len, lefts)),
        "projected": max(len("projected"), *map(len, projections)),
    }
    shown = list(extra)
    while shown and 12 + 5 + 9 + sum(extra[c] + 1 for c in shown) + 2 > width:
        shown.pop()
    fixed = 9 + sum(extra[c] + 1 for c in shown) + 2
    name_width = min(name_width, max(12, width - fixed - 5 - 1)) if not wide else name_width
    spark_width = max(5, min(n, 24, width - fixed - name_width - 1))
    table = Table(
        title=f"trend (drift: least squares over the last {report.summary.window} checkpoints)",
        caption="sparklines: one scale per role",
        caption_justify="left",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        padding=0,
        show_edge=False,
    )
    table.add_column("norm", no_wrap=True, max_width=name_width)
    table.add_column("trend", no_wrap=True, min_width=spark_width)
    table.add_column("band now", no_wrap=True, min_width=9)
    for col in ("left band", "drift/1k", "projected"):
        if col in shown:
            right = "right" if col != "projected" else "left"
            table.add_column(col, justify=right, no_wrap=True, min_width=extra[col])  # type: ignore[arg-type]
    if len(shown) < len(extra):
        gone = ", ".join(c for c in extra if c not in shown)
        table.caption = f"sparklines: one scale per role; {gone}: --wide or -f json"
    cut = fit_names([_trend_name(t, wide) for t in trends], name_width)
    for t, name, left, drift, projected in zip(
        trends, cut, lefts, drifts, projections, strict=True
    ):
        values = {"left band": left, "drift/1k": drift, "projected": projected}
        table.add_row(
            name,
            sparkline(t.ratios, spark_width, scales.get(t.role)),
            _styled(t.band_last.value, t),
            *(values[c] for c in ("left band", "drift/1k", "projected") if c in shown),
        )
    return table


def _all_table(report: SeriesReport, width: int, wide: bool = False) -> RenderableType:
    from rich import box
    from rich.table import Table

    trends = {t.name: t for t in norm_trends(report)}
    rows = latest_rows(report)
    role_width = max([len(r.norm.role.value) for r in rows] + [4])
    # layer, role, ratio, band and what fits of Δprev, drift/1k, left band; one-space dividers
    names = [display_name(r.norm, wide) for r in rows]
    longest = max(map(len, names), default=8)
    extra = {"Δprev": 6, "drift/1k": 8, "left band": 9}
    shown = list(extra)

    def room() -> int:
        return width - (5 + role_width + 6 + 9 + sum(extra[c] for c in shown)) - (4 + len(shown))

    while shown and not wide and room() < min(longest, NAME_FLOOR):
        shown.pop()  # left band, then drift/1k, then Δprev
    name_width = name_column_width(names, room(), wide)
    table = Table(
        title=f"every norm at step {report.summary.latest_step}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        padding=0,
        show_edge=False,
    )
    table.add_column("name", no_wrap=True, min_width=name_width, max_width=name_width)
    table.add_column("layer", justify="right", no_wrap=True, min_width=5)
    table.add_column("role", no_wrap=True, min_width=role_width)
    table.add_column("ratio", justify="right", no_wrap=True, min_width=6)
    table.add_column("band", no_wrap=True, min_width=9)
    for col in shown:
        table.add_column(col, justify="right", no_wrap=True, min_width=extra[col])
    if len(shown) < len(extra):
        table.caption = f"{', '.join(c for c in extra if c not in shown)}: --wide or -f json"
        table.caption_justify = "left"
    for r, name in zip(rows, fit_names(names, name_width), strict=True):
        t = trends[r.norm.name]
        left = "-" if t.first_out_of_band_step is None else fmt_step(t.first_out_of_band_step)
        change = "-" if r.rel_change is None else fmt(100 * r.rel_change, 1) + "%"
        values = {"Δprev": change, "drift/1k": drift_text(t.drift_per_1k_steps), "left band": left}
        table.add_row(
            name,
            where(r.norm),
            r.norm.role.value,
            _styled(ratio_text(r.norm.ratio), t),
            _styled(r.norm.band.value, t),
            *(values[c] for c in shown),
        )
    return table


# --- Markdown -----------------------------------------------------------------------------------


@for_people(markdown=True)
def render_series_markdown(report: SeriesReport, show_all: bool = False) -> str:
    """Markdown for PR comments and job summaries."""
    lines = [f"### normscope series {report.normscope_version}", ""]
    lines += [f"- **{label}**: {value}" for label, value in header_lines(report)]
    trends = report.summary.headline
    if trends:
        lines += [
            "",
            "| norm | trend | first | last | band now | left band | drift/1k | projected |",
            "|---|---|--:|--:|---|--:|--:|---|",
        ]
        for t in trends:
            left = "-" if t.first_out_of_band_step is None else str(t.first_out_of_band_step)
            lines.append(
                f"| `{t.name}` | {sparkline(t.ratios, 24)} | {ratio_text(t.ratio_first)} | "
                f"{ratio_text(t.ratio_last)} | {t.band_last.value} | {left} | "
                f"{drift_text(t.drift_per_1k_steps)} | {projection(t)} |"
            )
        picked = sample_indices(len(report.checkpoints), MAX_STEP_COLUMNS)
        labels = [str(report.checkpoints[i].step) for i in picked]
        lines += [
            "",
            "#### Ratio ‖g‖/√d by step",
            "",
            "| norm | " + " | ".join(labels) + " |",
            "|---|" + "--:|" * len(labels),
        ]
        for t in trends:
            cells = " | ".join(ratio_text(t.ratios[i]) for i in picked)
            lines.append(f"| `{t.name}` | {cells} |")
        sentences = [outlook(t) for t in trends if not t.aggregate] + anomaly_outlook(report)
        if sentences:
            lines += ["", "#### Outlook", ""] + [f"- {s}" for s in sentences]
    if report.trinity is not None:
        lines += trinity_markdown(report)
    if show_all:
        by_name = {t.name: t for t in norm_trends(report)}
        lines += [
            "",
            f"#### Every norm at step {report.summary.latest_step}",
            "",
            "| name | layer | role | ratio | band | Δprev | drift/1k |",
            "|---|--:|---|--:|---|--:|--:|",
        ]
        for r in latest_rows(report):
            change = "-" if r.rel_change is None else fmt(100 * r.rel_change, 1) + "%"
            lines.append(
                f"| `{r.norm.name}` | {where(r.norm)} | {r.norm.role.value} | "
                f"{ratio_text(r.norm.ratio)} | {r.norm.band.value} | {change} | "
                f"{drift_text(by_name[r.norm.name].drift_per_1k_steps)} |"
            )
    if report.skipped:
        lines += ["", "#### Skipped", ""]
        lines += [
            f"- `{s.path}`" + (f" (step {s.step})" if s.step is not None else "") + f": {s.reason}"
            for s in report.skipped
        ]
    if report.warnings:
        lines += ["", "#### Warnings", ""] + [f"- {w}" for w in report.warnings]
    return "\n".join(lines) + "\n"


# --- HTML ---------------------------------------------------------------------------------------


def _drift(value: float | None) -> html.Cell:
    return (drift_text(value), value if value is not None else math.nan, "num")


@for_people
def render_series_html(report: SeriesReport) -> str:
    """`--format html`: the legend, the trends, a chart per headline norm, the trinity."""
    steps = [c.step for c in report.checkpoints]
    rows = [
        [
            html.text(t.name, "name"),
            html.num(t.ratio_first),
            html.num(t.ratio_last),
            html.band(t.band_last),
            html.text("-" if t.first_out_of_band_step is None else str(t.first_out_of_band_step)),
            _drift(t.drift_per_1k_steps),
            html.text(projection(t), "prose"),
        ]
        for t in report.summary.headline
    ]
    headers = ["norm", "first", "last", "band now", "left band", "drift/1k", "projected"]
    figures = [
        chart.figure(
            chart.Chart(
                f"trend-{i}",
                f"{display_name(t, with_layer=True)}: ratio by step",
                "ratio ‖g‖/√d",
                steps,
                [(display_name(t, with_layer=True), t.ratios)],
                role_thresholds(report.summary.thresholds, report.summary.roles, t.role),
            )
        )
        for i, t in enumerate(report.summary.headline)
    ]
    sections = [html.legend(report.summary.thresholds, _role_bands(report))]
    sections.append(html.table("trends", "trends", headers, rows))
    if any(figures):
        sections.append("<h2>ratio by step</h2>" + chart.charts(figures))
    sections += trinity_sections(report)
    sections += html.warnings_section(report.warnings)
    return html.page(f"normscope series {report.normscope_version}", header_lines(report), sections)


def _role_bands(report: SeriesReport) -> str:
    """The roles judged by bands of their own (policy), as the legend's note."""
    summary = report.summary
    edges = [
        (r.role, role_thresholds(summary.thresholds, summary.roles, r.role)) for r in summary.roles
    ]
    if not edges:
        return ""
    return "per-role bands: " + "; ".join(f"{r.value} [{th.low:g}, {th.high:g}]" for r, th in edges)


@dataclass(frozen=True, slots=True)
class SeriesView:
    """A series report as it is to be shown, in every format (`cli/output.render` picks one)."""

    report: SeriesReport
    show_all: bool = False
    wide: bool = False

    def table(self, width: int) -> list[RenderableType]:
        return render_series_table(self.report, self.show_all, width, self.wide)

    def json(self) -> str:
        return render_series_json(self.report)

    def csv(self) -> str:
        return render_series_csv(self.report)

    def markdown(self) -> str:
        return render_series_markdown(self.report, self.show_all)

    def html(self) -> str:
        return render_series_html(self.report)
