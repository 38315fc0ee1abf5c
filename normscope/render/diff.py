"""Renderers of `normscope diff`: a DiffReport as JSON, CSV, Markdown, HTML or rich tables, and
`DiffView`, which holds them together for the command line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape as html_escape
from typing import TYPE_CHECKING

from normscope.enums import MatchedBy
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
from normscope.render.heatmap import Entry, grids
from normscope.schema import DiffReport, NormDiff

if TYPE_CHECKING:
    from rich.console import RenderableType


def escape(text: str) -> str:
    """Text, never markup (a name may hold `[...]`)."""
    from rich.markup import escape as _escape

    return _escape(text)


TOP_MOVERS = 15
MAX_LISTED = 10

__all__ = ["render_diff_csv", "render_diff_markdown", "render_diff_table"]


@text_safe
def render_diff_csv(result: DiffReport) -> str:
    """One row per matched norm (NormDiff fields; `movers` as a JSON string)."""
    return frame_csv(result.to_frame())


def _band(d: NormDiff) -> str:
    return f"{d.band_a.value}→{d.band_b.value}" if d.band_changed else d.band_b.value


def _pct(x: float) -> str:
    return fmt(100 * x, 1) + "%"


def header_lines(result: DiffReport) -> list[tuple[str, str]]:
    by_identity = sum(1 for d in result.norms if d.matched_by is MatchedBy.identity)
    ma, mb = result.model_a, result.model_b
    return [
        ("A", result.a),
        ("B", result.b),
        ("models", f"A {ma.model_type or ma.family}, B {mb.model_type or mb.family}"),
        (
            "matched",
            f"{len(result.norms)} norms"
            + (f" ({by_identity} by module/role/layer)" if by_identity else "")
            + f"; only in A: {len(result.only_a)}, only in B: {len(result.only_b)}",
        ),
        ("bands", f"{result.band_changes} norm(s) changed band"),
    ]


_NARROW_DROPS = (("Δratio", "cosine"), ("change",))
"""Columns a narrow terminal gives up, in turn, before a name is cut (JSON/CSV and --wide keep
them); the band (`balanced→explosion`) is never cut."""


def _diff_table(
    title: str, rows: Sequence[NormDiff], width: int, wide: bool = False
) -> RenderableType:
    from rich import box
    from rich.table import Table

    role_width = max([len(d.role.value) for d in rows] + [4])
    band_width = max([len(_band(d)) for d in rows] + [4])
    names = [display_name(d, wide) for d in rows]
    cells = {
        "ratio A": [fmt(d.ratio_a) for d in rows],
        "ratio B": [fmt(d.ratio_b) for d in rows],
        "Δratio": [f"{d.delta_ratio:+.3f}" for d in rows],
        "change": [_pct(d.rel_change) for d in rows],
        "cosine": [fmt(d.cosine, 4) for d in rows],
    }
    widths = {k: max(len(k), *map(len, v)) for k, v in cells.items()}

    def room(columns: Sequence[str]) -> int:  # what the name column may take; 1-space dividers
        fixed = 5 + role_width + band_width + sum(widths[c] for c in columns)
        return width - fixed - (len(columns) + 3)

    # Numbers and the band are never cut: when the names do not fit, Δratio and cosine go first.
    columns = list(cells)
    headers = {c: c for c in cells}
    longest = max(map(len, names), default=0)
    for stage, drops in enumerate(_NARROW_DROPS):
        if wide or room(columns) >= (longest if stage == 0 else min(longest, NAME_FLOOR)):
            break
        columns = [c for c in columns if c not in drops]
        headers |= {"ratio A": "A", "ratio B": "B"}  # the ratios' own width: 5 characters
        widths |= {c: max(map(len, cells[c]), default=1) for c in ("ratio A", "ratio B")}
    name_width = name_column_width(names, room(columns), wide)
    table = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=0, show_edge=False
    )
    table.add_column("name", no_wrap=True, min_width=name_width, max_width=name_width)
    table.add_column("layer", justify="right", no_wrap=True, min_width=5)
    table.add_column("role", no_wrap=True, min_width=role_width)
    for col in columns:
        table.add_column(headers[col], justify="right", no_wrap=True, min_width=widths[col])
    table.add_column("band", no_wrap=True, min_width=band_width)
    for i, (d, name) in enumerate(zip(rows, fit_names(names, name_width), strict=True)):
        band = escape(_band(d))
        if d.band_changed:
            band = f"{d.band_a.value}→[{BAND_STYLE[d.band_b]}]{d.band_b.value}[/]"
        table.add_row(
            escape(name),
            where(d),
            d.role.value,
            *(cells[col][i] for col in columns),
            band,
        )
    if len(columns) < len(cells):
        gone = ", ".join(c for c in cells if c not in columns)
        table.caption = f"A, B: ratio ‖g‖/√d; {gone}: --wide or -f json"
        table.caption_justify = "left"
    return table


def moved(result: DiffReport) -> list[NormDiff]:
    """Matched norms that moved at all (largest relative change first)."""
    return [d for d in result.norms if d.rel_change > 0 or d.band_changed]


@for_people
def render_diff_table(
    result: DiffReport, show_all: bool = False, width: int = 100, wide: bool = False
) -> list[RenderableType]:
    """Header, per-role drift, biggest movers, band transitions not among them, one-sided norms."""
    from rich import box
    from rich.table import Table

    out: list[RenderableType] = [
        header_panel(f"normscope diff {result.normscope_version}", header_lines(result))
    ]
    roles = Table(
        title="relative change per role",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        padding=(0, 1, 0, 0),
        show_edge=False,
    )
    for col in ("module", "role", "count", "median", "max"):
        roles.add_column(col, justify="right" if col in ("count", "median", "max") else "left")
    for r in result.roles:
        roles.add_row(
            r.module.value,
            r.role.value,
            str(r.count),
            _pct(r.rel_change_median),
            _pct(r.rel_change_max),
        )
    out.append(roles)
    if show_all:
        out.append(_diff_table("all matched norms", result.norms, width, wide))
    else:
        movers = moved(result)
        top = movers[:TOP_MOVERS]
        if top:
            more = (
                f" (top {len(top)} of {len(movers)}; --all for every norm)"
                if len(movers) > len(top)
                else ""
            )
            out.append(_diff_table(f"biggest movers{more}", top, width, wide))
        else:
            out.append("no norm moved: the gains of A and B are identical")
        listed = {d.name for d in top}
        changed = [d for d in result.norms if d.band_changed and d.name not in listed]
        if changed:
            out.append(_diff_table("band transitions (not among the movers)", changed, width, wide))
        elif result.band_changes:
            out.append(
                f"band transitions: all {result.band_changes} are among the movers above "
                "(band column)"
            )
    out.extend(escape(line) for line in anomaly_lines(result))
    for label, names in (("only in A", result.only_a), ("only in B", result.only_b)):
        if names:
            shown = list(names) if show_all else list(names[:MAX_LISTED])
            extra = "" if len(shown) == len(names) else f" … and {len(names) - len(shown)} more"
            out.append(f"[bold]{label}[/] ({len(names)}): " + escape(", ".join(shown)) + extra)
    return out


@for_people(markdown=True)
def render_diff_markdown(result: DiffReport, show_all: bool = False) -> str:
    """Markdown: header, per-role drift and the movers (or every row with show_all)."""
    lines = [f"### normscope diff {result.normscope_version}", ""]
    lines += [f"- **{label}**: {value}" for label, value in header_lines(result)]
    lines += ["", "| module | role | count | median change | max change |", "|---|---|--:|--:|--:|"]
    lines += [
        f"| {r.module.value} | {r.role.value} | {r.count} | {_pct(r.rel_change_median)} | "
        f"{_pct(r.rel_change_max)} |"
        for r in result.roles
    ]
    rows = result.norms if show_all else moved(result)[:TOP_MOVERS]
    lines += [
        "",
        "| name | layer | role | ratio A | ratio B | change | cosine | band |",
        "|---|--:|---|--:|--:|--:|--:|---|",
    ]
    for d in rows:
        band = d.band_b.value if not d.band_changed else f"{d.band_a.value} → {d.band_b.value}"
        lines.append(
            f"| `{d.name}` | {where(d)} | {d.role.value} | {fmt(d.ratio_a)} | "
            f"{fmt(d.ratio_b)} | {_pct(d.rel_change)} | {fmt(d.cosine, 4)} | {band} |"
        )
    changes = anomaly_lines(result)
    if changes:
        lines += ["", "#### Peer anomalies", ""] + [f"- {line}" for line in changes]
    for label, names in (("Only in A", result.only_a), ("Only in B", result.only_b)):
        if names:
            lines += ["", f"**{label}**: " + ", ".join(f"`{n}`" for n in names)]
    return "\n".join(lines) + "\n"


def anomaly_lines(result: DiffReport) -> list[str]:
    """One line per norm that left its peers between A and B (or came back to them)."""
    out = []
    for d in result.norms:
        if d.anomaly_b and not d.anomaly_a:
            out.append(f"became an anomaly in B: {d.name} (ratio {fmt(d.ratio_b)}, left its peers)")
        elif d.anomaly_a and d.anomaly_b is False:
            out.append(f"back among its peers in B: {d.name} (ratio {fmt(d.ratio_b)})")
    return out


# --- HTML ---------------------------------------------------------------------------------------


def _heatmap(result: DiffReport) -> str:
    """Each matched norm's ratio in B in a cell of its own (the move from A in its tooltip)."""
    tip = "{0.name}: ratio {1} ({0.band_a.value}) in A, {2} ({0.band_b.value}) in B; change {3}"
    entries = [
        Entry(
            d, d.ratio_b, d.band_b, tip.format(d, fmt(d.ratio_a), fmt(d.ratio_b), fmt(d.rel_change))
        )
        for d in result.norms
    ]
    return grids(entries, "ratio ‖g‖/√d in B by layer and norm")


@for_people
def render_diff_html(result: DiffReport) -> str:
    """`--format html`: the legend, the grid of B's ratios, the per-role drift, every pair."""
    roles = [
        [
            html.text(r.module.value),
            html.text(r.role.value),
            html.num(r.count, 0),
            html.num(r.rel_change_median),
            html.num(r.rel_change_max),
        ]
        for r in result.roles
    ]
    rows = [
        [
            html.text(d.name, "name"),
            html.text(where(d)),
            html.text(d.role.value),
            html.num(d.ratio_a),
            html.num(d.ratio_b),
            html.num(d.delta_ratio),
            html.num(d.rel_change),
            html.num(d.cosine, 4),
            html.band(d.band_a),
            html.band(d.band_b),
        ]
        for d in result.norms
    ]
    sections = [
        html.legend(None, "(the edges: the band the diff was run with, --low/--high)"),
        _heatmap(result),
        html.table(
            "roles", "relative change per role", ["module", "role", "count", "median", "max"], roles
        ),
        html.table(
            "norms",
            f"matched norms ({len(result.norms)}), largest change first",
            [
                "name",
                "layer",
                "role",
                "ratio A",
                "ratio B",
                "Δratio",
                "change",
                "cosine",
                "band A",
                "band B",
            ],
            rows,
        ),
    ]
    for label, names in (("only in A", result.only_a), ("only in B", result.only_b)):
        if names:
            sections.append(f"<h2>{label}</h2><p>{html_escape(', '.join(names))}</p>")
    sections += html.warnings_section(result.warnings)
    return html.page(f"normscope diff {result.normscope_version}", header_lines(result), sections)


@dataclass(frozen=True, slots=True)
class DiffView:
    """A diff report as it is to be shown, in every format (`cli/output.render` picks one)."""

    report: DiffReport
    show_all: bool = False
    wide: bool = False

    def table(self, width: int) -> list[RenderableType]:
        return render_diff_table(self.report, self.show_all, width, self.wide)

    def json(self) -> str:
        return render_json(self.report)

    def csv(self) -> str:
        return render_diff_csv(self.report)

    def markdown(self) -> str:
        return render_diff_markdown(self.report, self.show_all)

    def html(self) -> str:
        return render_diff_html(self.report)
