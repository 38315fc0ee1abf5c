"""Renderers of `normscope fold`: a FoldReport as JSON, CSV, Markdown, HTML or a rich table, and
`FoldView`, which holds them together for the command line."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from normscope.enums import FoldStatus, Module, Role
from normscope.naming import fit_names
from normscope.render import html
from normscope.render.common import (
    BAND_STYLE,
    NAME_FLOOR,
    display_name,
    fmt,
    for_people,
    frame_csv,
    header_panel,
    human_bytes,
    name_column_width,
    render_json,
    short_name,
    text_safe,
    where,
)
from normscope.schema.fold import FoldNorm, FoldReport

if TYPE_CHECKING:
    from rich.console import RenderableType


def render_fold_json(report: FoldReport) -> str:
    """One JSON object, keys in field order, NaN/inf as null."""
    return render_json(report)


@text_safe
def render_fold_csv(report: FoldReport) -> str:
    """A header row and one row per norm (consumers/producers as JSON lists)."""
    return frame_csv(report.to_frame())


def _band(n: FoldNorm) -> str:
    return n.folded_band.value if n.folded_band is not None else "-"


def _consumer_text(n: FoldNorm) -> str:
    names = n.consumers or n.producers
    text = ", ".join(sorted({short_name(c, 200).rsplit(".", 1)[-1] for c in names}))
    if n.producers:
        text = "producers: " + text
    if n.experts_sampled is not None:
        text += f" (+{n.experts_sampled}/{n.experts_total} experts)"
    return text


def header_lines(report: FoldReport) -> list[tuple[str, str]]:
    """The facts of the header panel."""
    m, p, s = report.model, report.plan, report.fold_summary
    bands = ", ".join(f"{v} {k}" for k, v in dataclasses.asdict(s.folded_bands).items() if v)
    return [
        ("source", report.source),
        (
            "model",
            f"{m.model_type or '?'} (rules: {m.family}), hidden {m.hidden_size or '?'}, "
            f"MTP depth {m.mtp_depth}",
        ),
        (
            "norms",
            f"{s.folded} folded ({bands or 'none'}), {s.not_applicable} not applicable, "
            f"{s.no_consumer} without consumer, {s.skipped} skipped",
        ),
        (
            "read",
            f"{human_bytes(p.bytes_planned)} of matrices ({p.tensors} tensors) on {p.device}, "
            f"{report.io.seconds:.2f} s, budget {human_bytes(p.max_memory)}, "
            f"peak {human_bytes(p.peak_buffered_bytes)} buffered",
        ),
    ]


_COLUMNS = ("layer", "role", "ratio", "folded", "band", "comp", "top1%", "max/med", "balance")
_NARROW_DROPS = (("balance", "max/med", "top1%"), ("comp",))
"""Columns a narrow terminal gives up, in turn, before a name is cut (JSON/CSV keep them)."""


def _row(n: FoldNorm) -> list[str]:
    return [
        where(n),
        n.role.value,
        fmt(n.ratio),
        fmt(n.folded_ratio),
        _band(n),
        fmt(n.compensation, 2),
        fmt(n.top_share),
        fmt(n.max_over_median, 1),
        fmt(n.input_balance, 2),
    ]


def _selected(report: FoldReport, show_all: bool) -> list[FoldNorm]:
    folded = [n for n in report.norms if n.status is FoldStatus.folded]
    if show_all:
        return folded
    return [
        n
        for n in folded
        if n.module is Module.mtp
        or n.role is Role.final
        or (n.folded_band is not None and n.folded_band.out_of_band)
    ]


@for_people
def render_fold_table(
    report: FoldReport, show_all: bool = False, width: int = 120
) -> list[RenderableType]:
    """Header panel, then the final/MTP norms and the out-of-band ones (all with show_all)."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    out: list[RenderableType] = [
        header_panel(f"normscope {report.normscope_version} fold", header_lines(report))
    ]
    rows = _selected(report, show_all)
    if not rows:
        return out
    title = "folded norms" if show_all else "final, MTP and out-of-band folded norms"
    table = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=0, show_edge=False
    )
    cells = [_row(n) for n in rows]
    widths = [max(len(col), *(len(c[i]) for c in cells)) for i, col in enumerate(_COLUMNS)]
    names = [display_name(n) for n in rows]
    shown = list(range(len(_COLUMNS)))

    def room() -> int:  # what the name column may take; one-space dividers
        return width - sum(widths[i] + 1 for i in shown) - 1

    longest = max(map(len, names))
    for stage, drops in enumerate(_NARROW_DROPS):  # numbers and bands are never cut
        if room() >= (longest if stage == 0 else min(longest, NAME_FLOOR)):
            break
        shown = [i for i in shown if _COLUMNS[i] not in drops]
    name_width = name_column_width(names, room())
    table.add_column("name", no_wrap=True, min_width=name_width, max_width=name_width)
    for i in shown:
        left = _COLUMNS[i] in ("role", "band")
        table.add_column(
            _COLUMNS[i], justify="left" if left else "right", no_wrap=True, min_width=widths[i]
        )
    if len(shown) < len(_COLUMNS):
        gone = ", ".join(c for i, c in enumerate(_COLUMNS) if i not in shown)
        table.caption, table.caption_justify = f"{gone}: -f json or -f csv", "left"
    for n, name, row in zip(rows, fit_names(names, name_width), cells, strict=True):
        if n.folded_band is not None:
            row[4] = f"[{BAND_STYLE[n.folded_band]}]{row[4]}[/]"
        table.add_row(escape(name), *(row[i] for i in shown))
    out.append(table)
    return out


@for_people(markdown=True)
def render_fold_markdown(report: FoldReport, show_all: bool = False) -> str:
    """Markdown: header facts and one row per selected folded norm, with its consumers."""
    lines = [f"### normscope {report.normscope_version} fold", ""]
    lines += [f"- **{label}**: {value}" for label, value in header_lines(report)]
    rows = _selected(report, show_all)
    if rows:
        lines += [
            "",
            "| name | " + " | ".join(_COLUMNS) + " | consumers |",
            "|---|--:|---|--:|--:|---|--:|--:|--:|--:|---|",
        ]
        for n in rows:
            lines.append(f"| `{n.name}` | " + " | ".join(_row(n)) + f" | {_consumer_text(n)} |")
    if report.warnings:
        lines += ["", "#### Warnings", ""] + [f"- {w}" for w in report.warnings]
    return "\n".join(lines) + "\n"


# --- HTML ---------------------------------------------------------------------------------------


@for_people
def render_fold_html(result: FoldReport) -> str:
    """`normscope fold --format html`: every norm against the matrices it feeds."""
    rows = [
        [
            html.text(n.name, "name"),
            html.text(where(n)),
            html.text(n.role.value),
            html.num(n.ratio),
            html.num(n.folded_ratio),
            html.band(n.folded_band) if n.folded_band else html.text("-"),
            html.num(n.compensation),
            html.num(n.top_share),
            html.num(n.max_over_median),
            html.num(n.input_balance),
            html.text(n.status.value),
            html.text(", ".join(n.consumers or n.producers) or (n.reason or ""), "name prose"),
        ]
        for n in result.norms
    ]
    sections = [
        html.legend(result.summary.thresholds),
        html.table(
            "norms",
            f"folded norms ({len(result.norms)})",
            [
                "name",
                "layer",
                "role",
                "ratio",
                "folded",
                "folded band",
                "compensation",
                "top 1% share",
                "max/median",
                "input balance",
                "status",
                "consumers",
            ],
            rows,
        ),
    ]
    sections += html.warnings_section(result.warnings)
    return html.page(f"normscope fold {result.normscope_version}", header_lines(result), sections)


@dataclass(frozen=True, slots=True)
class FoldView:
    """A fold report as it is to be shown, in every format (`cli/output.render` picks one)."""

    report: FoldReport
    show_all: bool = False
    wide: bool = False
    """The fold table has no wide layout: written at 120 columns to a file, as the others."""

    def table(self, width: int) -> list[RenderableType]:
        return render_fold_table(self.report, self.show_all, width)

    def json(self) -> str:
        return render_fold_json(self.report)

    def csv(self) -> str:
        return render_fold_csv(self.report)

    def markdown(self) -> str:
        return render_fold_markdown(self.report, self.show_all)

    def html(self) -> str:
        return render_fold_html(self.report)
