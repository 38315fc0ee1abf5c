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
from normscope.render.common import (
    BAND_STYLE,
    SEVERITY,
    fmt,
    frame_csv,
    header_panel,
    human_bytes,
    short_name,
    where,
)
from normscope.schema import NormStats, Report
from normscope.scope import DEFAULT

if TYPE_CHECKING:
    from rich.console import RenderableType

NORM_FIELDS = tuple(f.name for f in dataclasses.fields(NormStats))


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


def _headline_text(report: Report) -> str:
    parts = []
    for h in report.summary.headline:
        label = "final norm" if h.mtp_depth is None else f"MTP {h.mtp_depth} {h.role.value[4:]}"
        parts.append(f"{label} {fmt(h.ratio)} ({h.band.value})")
    return "; ".join(parts) if parts else "no final or MTP norm identified"


def header_lines(report: Report) -> list[tuple[str, str]]:
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
        ("headline", _headline_text(report)),
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


def _norm_table(title: str, rows: Sequence[NormStats], width: int) -> RenderableType:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    role_width = max([len(n.role.value) for n in rows] + [4])
    # Columns are separated by one space; the name column gets what the numbers leave, and long
    # names keep their informative tail ("…layers.61.shared_head.norm"). Numbers are never cut.
    fixed = sum(w for _, w in _FIXED_COLUMNS) + role_width + len(_FIXED_COLUMNS) + 1
    name_width = max(12, min(60, width - fixed - 1))
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        padding=0,
        show_edge=False,
        pad_edge=False,
    )
    table.add_column("name", no_wrap=True, max_width=name_width)
    table.add_column("layer", justify="right", no_wrap=True, min_width=5)
    table.add_column("role", no_wrap=True, min_width=role_width)
    for col, col_width in _FIXED_COLUMNS[1:]:
        table.add_column(
            col, justify="left" if col == "band" else "right", no_wrap=True, min_width=col_width
        )
    for n in rows:
        style = BAND_STYLE[n.band]
        offset = n.parametrization.value == "offset"
        table.add_row(
            escape(short_name(n.name, name_width - (1 if offset else 0))) + ("¹" if offset else ""),
            where(n),
            n.role.value,
            f"[{style}]{fmt(n.ratio)}[/]",
            f"[{style}]{n.band.value}[/]",
            fmt(n.mean),
            fmt(n.std),
            fmt(n.min),
            fmt(n.max),
        )
    if any(n.parametrization.value == "offset" for n in rows):
        table.caption = "¹ offset norm: statistics of the effective gain 1 + w"
        table.caption_justify = "left"
    return table


def render_table(report: Report, show_all: bool = False, width: int = 100) -> list[RenderableType]:
    """The people view: header panel, per-role summary, headline norms, out-of-band norms."""
    from rich import box
    from rich.table import Table

    out: list[RenderableType] = [
        header_panel(f"normscope {report.normscope_version}", header_lines(report))
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
        out.append(_norm_table("all norms", report.norms, width))
        return out
    heads = DEFAULT.matching(report.norms)
    if heads:
        out.append(_norm_table("final and MTP norms", heads, width))
    bad = [n for n in report.norms if n.band.out_of_band]
    if bad:
        shown = bad[:MAX_OUT_OF_BAND_ROWS]
        more = (
            f" (first {len(shown)} of {len(bad)}; --all lists every norm)"
            if len(bad) > len(shown)
            else ""
        )
        out.append(_norm_table(f"out-of-band norms{more}", shown, width))
    return out


def render_markdown(report: Report, show_all: bool = False) -> str:
    """Markdown for PR comments and job summaries: header, per-role summary, norm rows."""
    lines = [f"### normscope {report.normscope_version}", ""]
    lines += [f"- **{label}**: {value}" for label, value in header_lines(report)]
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
    if show_all:
        sections = [("All norms", list(report.norms))]
    else:
        sections = [
            ("Final and MTP norms", DEFAULT.matching(report.norms)),
            ("Out-of-band norms", [n for n in report.norms if n.band.out_of_band]),
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
    if report.warnings:
        lines += ["", "#### Warnings", ""] + [f"- {w}" for w in report.warnings]
    return "\n".join(lines) + "\n"
