"""Renderers of `normscope scan`: a Report as CSV, Markdown, or rich renderables for the table.

JSON is `common.render_json`. The table shows, after the header panel and the per-role summary,
the norms of the playbook's gate scope (the final and every MTP norm) and the out-of-band norms.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING

from normscope.enums import Band, Module, Role
from normscope.naming import fit_name
from normscope.render.common import (
    BAND_STYLE,
    SEVERITY,
    display_name,
    fmt,
    for_people,
    frame_csv,
    header_panel,
    human_bytes,
    name_column_width,
    text_safe,
    where,
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


@dataclasses.dataclass(frozen=True, slots=True)
class RoleSummary:
    """One line of the per-role summary."""

    module: str
    role: str
    count: int
    ratio_min: float
    ratio_median: float
    ratio_max: float
    worst: Band


def summarize_roles(norms: Sequence[NormStats]) -> list[RoleSummary]:
    """Per (module, role): count, ratio min/median/max and the worst band."""
    groups: dict[tuple[Module, Role], list[NormStats]] = {}
    for n in norms:
        groups.setdefault((n.module, n.role), []).append(n)
    out = []
    order = list(Role)
    for (module, role), rows in sorted(
        groups.items(), key=lambda kv: (kv[0][0] is Module.mtp, order.index(kv[0][1]))
    ):
        ratios = [r.ratio for r in rows if math.isfinite(r.ratio)]
        worst = max((r.band for r in rows), key=lambda b: SEVERITY[b])
        out.append(
            RoleSummary(
                module.value,
                role.value,
                len(rows),
                min(ratios, default=math.nan),
                statistics.median(ratios) if ratios else math.nan,
                max(ratios, default=math.nan),
                worst,
            )
        )
    return out


def norm_label(n: NormStats) -> str:
    """`final norm`, `MTP 1 embedding`, `layer 10 mlp_output`: a norm in a few words."""
    if n.module is Module.mtp:
        role = n.role.value[4:] if n.role.value.startswith("mtp_") else n.role.value
        return f"MTP {n.mtp_depth} {role}"
    if n.role is Role.final:
        return "final norm"
    return f"layer {n.layer} {n.role.value}" if n.layer is not None else n.role.value


def _watched_text(report: Report) -> str:
    parts = []
    for h in report.summary.headline:
        label = "final norm" if h.mtp_depth is None else f"MTP {h.mtp_depth} {h.role.value[4:]}"
        parts.append(f"{label} {fmt(h.ratio)} ({h.band.value})")
    return "; ".join(parts) if parts else "no final or MTP norm identified"


def _distance(n: NormStats) -> float:
    """How far a ratio is from 1 on a log scale (non-finite: farthest of all)."""
    if not math.isfinite(n.ratio) or n.ratio <= 0:
        return math.inf
    return abs(math.log(n.ratio))


def headline_text(report: Report, scope: Selector = DEFAULT) -> str:
    """What the numbers mean, in one line: the worst gated norm, the anomalies, the next step."""
    gated = scope.matching(report.norms)
    bad = [n for n in gated if n.band.out_of_band]
    anomalies = report.summary.anomalies
    if bad:
        worst = max(bad, key=_distance)
        parts = [
            f"{len(bad)} of {len(gated)} gated norm(s) out of band, worst {norm_label(worst)} "
            f"{fmt(worst.ratio)} ({worst.band.value})"
        ]
    elif gated:
        parts = [f"the {len(gated)} gated norm(s) are in band"]
    else:
        parts = [f"no norm in the gate scope '{scope.text}'"]
    parts.append(
        f"{anomalies} anomal{'y' if anomalies == 1 else 'ies'} (a layer that left its peers)"
        if anomalies
        else "no anomaly"
    )
    parts.append("next: normscope check for advice" if bad or anomalies else "healthy")
    return "; ".join(parts)


def header_lines(report: Report, scope: Selector = DEFAULT) -> list[tuple[str, str]]:
    """The facts of the header panel as (label, value) pairs."""
    m, i = report.model, report.io
    share = 100.0 * i.bytes_read / i.bytes_total if i.bytes_total else 0.0
    bands = dataclasses.asdict(report.summary.bands)
    band_text = ", ".join(f"{v} {k}" for k, v in bands.items() if v)
    return [
        ("source", report.source),
        (
            "model",
            f"{m.model_type or '?'} (rules: {m.family}), hidden {m.hidden_size or '?'}, "
            f"{m.num_layers if m.num_layers is not None else '?'} layers, "
            f"MTP depth {m.mtp_depth}",
        ),
        ("headline", headline_text(report, scope)),
        ("watched", _watched_text(report)),
        ("norms", f"{len(report.norms)}: {band_text}"),
        (
            "read",
            f"{human_bytes(i.bytes_read)} of {human_bytes(i.bytes_total)} "
            f"({share:.4g}%) from {i.files} file(s) in {i.seconds:.2f} s",
        ),
    ]


_FIXED_COLUMNS = (
    ("layer", 5),
    ("ratio", 6),
    ("band", 9),
    ("mean", 6),
    ("std", 6),
    ("min", 6),
    ("max", 6),
)
_NARROW_DROPS = ("min", "max")
"""Columns a narrow terminal gives up before a name is cut (JSON/CSV and --wide keep them)."""


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
    fixed = sum(w for _, w in columns) + role_width + len(columns) + 1
    if not wide and longest > width - fixed - 1:
        columns = [c for c in columns if c[0] not in _NARROW_DROPS]
        fixed = sum(w for _, w in columns) + role_width + len(columns) + 1
    name_width = name_column_width(names, width - fixed - 1, wide)
    table = _named_table(title, name_width, role_width)
    for col, col_width in columns[1:]:
        table.add_column(
            col, justify="left" if col == "band" else "right", no_wrap=True, min_width=col_width
        )
    for n, name in zip(rows, names, strict=True):
        style = BAND_STYLE[n.band]
        values = {"mean": n.mean, "std": n.std, "min": n.min, "max": n.max}
        table.add_row(
            escape(fit_name(name, name_width)),
            where(n),
            n.role.value,
            f"[{style}]{fmt(n.ratio)}[/]",
            f"[{style}]{n.band.value}[/]",
            *(fmt(values[col]) for col, _ in columns[3:]),
        )
    notes = []
    if any(_offset(n) for n in rows):
        notes.append("¹ offset norm: statistics of the effective gain 1 + w")
    if len(columns) < len(_FIXED_COLUMNS):
        notes.append("min, max: --wide or -f json")
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
    from rich import box
    from rich.table import Table

    out: list[RenderableType] = [
        header_panel(f"normscope {report.normscope_version}", header_lines(report, scope))
    ]

    roles = Table(
        title="per role",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        padding=(0, 1, 0, 0),
        show_edge=False,
    )
    for col, justify in (
        ("module", "left"),
        ("role", "left"),
        ("count", "right"),
        ("ratio min", "right"),
        ("median", "right"),
        ("max", "right"),
        ("worst band", "left"),
    ):
        roles.add_column(col, justify=justify)  # type: ignore[arg-type]
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
    out.append(roles)

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
    for n, name in zip(rows, names, strict=True):
        table.add_row(
            escape(fit_name(name, name_width)),
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
