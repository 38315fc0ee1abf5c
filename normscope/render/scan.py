"""Renderers of `normscope scan`: a Report as CSV, Markdown, HTML, or rich renderables for the
table; `ScanView` holds them together for the command line.

JSON is `common.render_json`. The table shows, after the header panel and the per-role summary,
the norms of the playbook's gate scope (the final and every MTP norm) and the out-of-band norms.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from normscope.enums import Band, Module, Role
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
    name_column_width,
    render_json,
    text_safe,
    where,
)
from normscope.render.scan_text import (
    header_lines,
    summarize_roles,
)
from normscope.schema import NormStats, Report
from normscope.scope import DEFAULT, Selector

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.table import Table

NORM_FIELDS = tuple(f.name for f in dataclasses.fields(NormStats))


@text_safe
def render_csv(report: Report) -> str:
    """CSV: a header row and one row per norm, full float precision, empty cells for null."""
    return frame_csv(report.to_frame())


# --- views for people ---------------------------------------------------------------------------

MAX_OUT_OF_BAND_ROWS = 25


_FIXED_COLUMNS = (
    ("layer", 5),
    ("ratio", 6),
    ("band", 9),
    ("mean", 6),
    ("std", 6),
    ("min", 6),
    ("max", 6),
)
_NARROW_DROPS = (("min", "max"), ("mean", "std"))
"""Columns a narrow terminal gives up, in turn, before a name is cut (JSON/CSV and --wide keep
them): at 60 columns the name, the ratio and the band matter most."""


def _norm_table(
    title: str, rows: Sequence[NormStats], width: int, wide: bool = False
) -> RenderableType:
    from rich.markup import escape

    role_width = max([len(n.role.value) for n in rows] + [4])
    names = [display_name(n, wide) + ("¹" if _offset(n) else "") for n in rows]
    longest = max(len(x) for x in names)
    # Columns are separated by one space; the name column gets what the numbers leave. When the
    # names do not fit, min and max go first; a name still too long keeps its informative tail.
    columns = list(_FIXED_COLUMNS)

    def fixed() -> int:
        return sum(w for _, w in columns) + role_width + len(columns) + 1

    dropped: list[str] = []
    for stage, drops in enumerate(_NARROW_DROPS):
        if wide or width - fixed() - 1 >= (longest if stage == 0 else min(longest, NAME_FLOOR)):
            break
        columns = [c for c in columns if c[0] not in drops]
        dropped = [*drops, *dropped]
    name_width = name_column_width(names, width - fixed() - 1, wide)
    cut = fit_names(names, name_width)
    table = _named_table(title, name_width, role_width)
    for col, col_width in columns[1:]:
        table.add_column(
            col, justify="left" if col == "band" else "right", no_wrap=True, min_width=col_width
        )
    for n, name in zip(rows, cut, strict=True):
        style = BAND_STYLE[n.band]
        values = {"mean": n.mean, "std": n.std, "min": n.min, "max": n.max}
        table.add_row(
            escape(name),
            where(n),
            n.role.value,
            f"[{style}]{fmt(n.ratio)}[/]",
            f"[{style}]{n.band.value}[/]",
            *(fmt(values[col]) for col, _ in columns[3:]),
        )
    notes = []
    if any(_offset(n) for n in rows):
        notes.append("¹ offset norm: statistics of the effective gain 1 + w")
    if dropped:
        notes.append(f"{', '.join(dropped)}: --wide or -f json")
    if notes:
        table.caption = "\n".join(notes)
        table.caption_justify = "left"
    return table


def _offset(n: NormStats) -> bool:
    return n.parametrization.value == "offset"


@for_people
def render_table(
    report: Report,
    show_all: bool = False,
    width: int = 100,
    scope: Selector = DEFAULT,
    wide: bool = False,
) -> list[RenderableType]:
    """The people view: header panel, per-role summary, the final and MTP norms, the gated
    norms out of band, what lies outside the gate scope (summarised), the anomalies."""
    out: list[RenderableType] = [
        header_panel(f"normscope {report.normscope_version}", header_lines(report, scope)),
        _role_table(report),
    ]

    if show_all:
        out.append(_norm_table("all norms", report.norms, width, wide))
        return out
    sections = sections_of(report, scope)
    if sections.watched:
        out.append(_norm_table("final and MTP norms", sections.watched, width, wide))
    if sections.gated_bad:
        bad = sections.gated_bad
        shown = bad[:MAX_OUT_OF_BAND_ROWS]
        more = (
            f" (first {len(shown)} of {len(bad)}; --all lists every norm)"
            if len(bad) > len(shown)
            else ""
        )
        title = f"out-of-band norms in scope '{scope.text}'{more}"
        out.append(_norm_table(title, shown, width, wide))
    if sections.outside:
        from rich.padding import Padding
        from rich.text import Text

        out.append("[bold]out of band outside the gate scope[/] (not alarms; --all lists them)")
        out += [Padding(Text(line), (0, 0, 0, 2)) for line in sections.outside]
    if sections.anomalies:
        out.append(_anomaly_table(sections.anomalies, width, wide))
    return out


def _role_table(report: Report) -> Table:
    """Per (module, role): count, ratio min, median and max, the worst band."""
    from rich import box
    from rich.table import Table

    roles = Table(
        title="per role: ratio",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        padding=(0, 1, 0, 0),
        show_edge=False,
    )
    for col, justify in (
        ("module", "left"),
        ("role", "left"),
        ("count", "right"),
        ("min", "right"),
        ("median", "right"),
        ("max", "right"),
        ("worst band", "left"),
    ):  # never cut, never wrapped: 57 columns for the longest role (`mtp_embedding`)
        roles.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for r in summarize_roles(report.norms):
        style = BAND_STYLE[r.worst]
        roles.add_row(
            r.module,
            r.role,
            str(r.count),
            fmt(r.ratio_min),
            fmt(r.ratio_median),
            fmt(r.ratio_max),
            f"[{style}]{r.worst.value}[/]",
        )
    return roles


@dataclasses.dataclass(frozen=True, slots=True)
class Sections:
    """What the scan views list, each norm in one place only."""

    watched: list[NormStats]
    """The final and every MTP norm (the playbook's gate scope)."""
    gated_bad: list[NormStats]
    """Out-of-band norms of the gate scope not already watched (with a wider --scope)."""
    outside: list[str]
    """Out-of-band norms outside the gate scope, one summary line per (module, role, band)."""
    anomalies: list[NormStats]
    """Norms that left their peers, not already listed."""


# What an out-of-band norm outside the gate scope usually means, by group (seed 001,
# docs/architectures.md#input-and-output-norms).
_OUTSIDE = {
    "input": "typical of trained pre-norm models: the next linear map absorbs their scale",
    "output": "output norms scale what joins the residual stream: compare with earlier "
    "checkpoints (normscope series)",
    None: "their placement is unknown: compare with earlier checkpoints (normscope series)",
}


def sections_of(report: Report, scope: Selector = DEFAULT) -> Sections:
    """Split a report's norms into the views' sections (no norm in two of them)."""
    watched = DEFAULT.matching(report.norms)
    listed = {n.name for n in watched}
    gated_bad = [n for n in scope.matching(report.norms) if n.band.out_of_band]
    gated_bad = [n for n in gated_bad if n.name not in listed]
    listed |= {n.name for n in gated_bad}
    groups: dict[tuple[Module, Role, Band], list[NormStats]] = {}
    for n in report.norms:
        if n.band.out_of_band and not scope(n):
            groups.setdefault((n.module, n.role, n.band), []).append(n)
    outside = []
    for (module, role, band), rows in groups.items():
        where_text = "" if module is Module.main else "MTP "
        why = _OUTSIDE[rows[0].group.value if rows[0].group else None]
        outside.append(f"{where_text}{role.value}: {len(rows)} in {band.value} — {why}")
    anomalies = [n for n in report.norms if n.anomaly and n.name not in listed]
    return Sections(watched, gated_bad, outside, anomalies)


def _anomaly_table(rows: Sequence[NormStats], width: int, wide: bool = False) -> RenderableType:
    from rich.markup import escape

    role_width = max([len(n.role.value) for n in rows] + [4])
    fixed = 5 + role_width + 6 + 11 + 7 + 9 + 6
    names = [display_name(n, wide) for n in rows]
    name_width = name_column_width(names, width - fixed - 1, wide)
    table = _named_table(
        "anomalies (a norm that left its peers in other layers)", name_width, role_width
    )
    table.add_column("ratio", justify="right", no_wrap=True, min_width=6)
    table.add_column("peer median", justify="right", no_wrap=True, min_width=11)
    table.add_column("× peers", justify="right", no_wrap=True, min_width=7)
    table.add_column("band", no_wrap=True, min_width=9)
    for n, name in zip(rows, fit_names(names, name_width), strict=True):
        table.add_row(
            escape(name),
            where(n),
            n.role.value,
            fmt(n.ratio),
            fmt(n.peer_median),
            _fold(n),
            f"[{BAND_STYLE[n.band]}]{n.band.value}[/]",
        )
    return table


def _fold(n: NormStats) -> str:
    """`×3.1` above the peers, `÷8.1` below them."""
    if n.peer_median is None or not n.peer_median or not math.isfinite(n.ratio) or n.ratio <= 0:
        return "-"
    if n.ratio >= n.peer_median:
        return f"×{n.ratio / n.peer_median:.1f}"
    return f"÷{n.peer_median / n.ratio:.1f}"


@for_people(markdown=True)
def render_markdown(report: Report, show_all: bool = False, scope: Selector = DEFAULT) -> str:
    """Markdown for PR comments and job summaries: header, per-role summary, norm rows."""
    lines = [f"### normscope {report.normscope_version}", ""]
    lines += [f"- **{label}**: {value}" for label, value in header_lines(report, scope)]
    lines += [
        "",
        "| module | role | count | ratio min | median | max | worst band |",
        "|---|---|--:|--:|--:|--:|---|",
    ]
    for r in summarize_roles(report.norms):
        lines.append(
            f"| {r.module} | {r.role} | {r.count} | {fmt(r.ratio_min)} | "
            f"{fmt(r.ratio_median)} | {fmt(r.ratio_max)} | {r.worst.value} |"
        )
    parts = sections_of(report, scope)
    if show_all:
        sections = [("All norms", list(report.norms))]
    else:
        sections = [
            ("Final and MTP norms", parts.watched),
            (f"Out-of-band norms in scope '{scope.text}'", parts.gated_bad),
        ]
    for title, rows in sections:
        if not rows:
            continue
        lines += [
            "",
            f"#### {title}",
            "",
            "| name | layer | role | gain | dim | ratio | band | mean | std | min | max |",
            "|---|--:|---|---|--:|--:|---|--:|--:|--:|--:|",
        ]
        for n in rows:
            gain = "1+w" if n.parametrization.value == "offset" else "w"
            lines.append(
                f"| `{n.name}` | {where(n)} | {n.role.value} | {gain} | {n.dim} | "
                f"{fmt(n.ratio)} | {n.band.value} | {fmt(n.mean)} | {fmt(n.std)} | "
                f"{fmt(n.min)} | {fmt(n.max)} |"
            )
    if not show_all and parts.outside:
        lines += ["", "#### Out of band outside the gate scope (not alarms)", ""]
        lines += [f"- {line}" for line in parts.outside]
    if not show_all and parts.anomalies:
        lines += [
            "",
            "#### Anomalies (a norm that left its peers in other layers)",
            "",
            "| name | layer | role | ratio | peer median | × peers | band |",
            "|---|--:|---|--:|--:|--:|---|",
        ]
        lines += [
            f"| `{n.name}` | {where(n)} | {n.role.value} | {fmt(n.ratio)} | "
            f"{fmt(n.peer_median)} | {_fold(n)} | {n.band.value} |"
            for n in parts.anomalies
        ]
    if report.warnings:
        lines += ["", "#### Warnings", ""] + [f"- {w}" for w in report.warnings]
    return "\n".join(lines) + "\n"


def _named_table(title: str, name_width: int, role_width: int) -> Table:
    """A borderless table whose first columns are a norm's name, layer and role."""
    from rich import box
    from rich.table import Table

    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        padding=0,
        show_edge=False,
        pad_edge=False,
    )
    table.add_column("name", no_wrap=True, min_width=name_width, max_width=name_width)
    table.add_column("layer", justify="right", no_wrap=True, min_width=5)
    table.add_column("role", no_wrap=True, min_width=role_width)
    return table


# --- HTML ---------------------------------------------------------------------------------------


def heatmap(report: Report) -> str:
    """Every norm's ratio in a cell of its own, by layer and kind of norm (`heatmap.grids`)."""
    from normscope.render.heatmap import Entry, grids  # HTML only: not a text or JSON scan's

    entries = [
        Entry(n, n.ratio, n.band, f"{n.name}: ratio {fmt(n.ratio)} ({n.band.value})")
        for n in report.norms
    ]
    return grids(entries, "ratio ‖g‖/√d by layer and norm")


@for_people
def render_scan_html(report: Report, scope: Selector = DEFAULT) -> str:
    """`--format html`: the header, the band legend, the heatmap, the per-role table, every norm
    (sortable)."""
    roles = [
        [
            html.text(r.module),
            html.text(r.role),
            html.num(r.count, 0),
            html.num(r.ratio_min),
            html.num(r.ratio_median),
            html.num(r.ratio_max),
            html.band(r.worst),
        ]
        for r in summarize_roles(report.norms)
    ]
    norms = [
        [
            html.text(n.name, "name"),
            html.text(where(n)),
            html.text(n.role.value),
            html.num(n.ratio),
            html.band(n.band),
            html.num(n.mean),
            html.num(n.std),
            html.num(n.min),
            html.num(n.max),
            html.text(n.parametrization.value),
        ]
        for n in report.norms
    ]
    role_headers = ["module", "role", "count", "ratio min", "median", "max", "worst band"]
    norm_headers = ["name", "layer", "role", "ratio", "band", "mean", "std", "min", "max", "gain"]
    sections = [
        html.legend(report.summary.thresholds),
        heatmap(report),
        html.table("roles", "per role", role_headers, roles),
        html.table("norms", f"all norms ({len(report.norms)})", norm_headers, norms),
    ]
    sections += html.warnings_section(report.warnings)
    return html.page(f"normscope {report.normscope_version}", header_lines(report, scope), sections)


@dataclasses.dataclass(frozen=True, slots=True)
class ScanView:
    """A scan report as it is to be shown, in every format (`cli/output.render` picks one)."""

    report: Report
    show_all: bool = False
    scope: Selector = DEFAULT
    wide: bool = False

    def table(self, width: int) -> list[RenderableType]:
        return render_table(self.report, self.show_all, width, self.scope, self.wide)

    def json(self) -> str:
        return render_json(self.report)

    def csv(self) -> str:
        return render_csv(self.report)

    def markdown(self) -> str:
        return render_markdown(self.report, self.show_all, self.scope)

    def html(self) -> str:
        return render_scan_html(self.report, self.scope)
