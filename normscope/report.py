"""Renderers: Report -> JSON, CSV, Markdown strings, or rich renderables for the table view.

Pure functions; `cli.py` decides where their output goes. JSON and CSV carry full precision and
the `NormStats` field names in schema order; rounding, colour and truncation happen only in the
table and Markdown views, which are for people and must never be parsed.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import statistics
from collections.abc import Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any

from normscope.schema import Band, Module, NormStats, Report, Role

if TYPE_CHECKING:
    import pandas
    from rich.console import RenderableType

NORM_FIELDS = tuple(f.name for f in dataclasses.fields(NormStats))


def _plain(value: Any) -> Any:
    """Make dataclass output JSON-safe: enums to their values, NaN/inf to None."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def to_dict(report: Any) -> dict[str, Any]:
    """A report dataclass (scan, diff or check) as plain JSON-ready data, keys in schema order."""
    data: dict[str, Any] = _plain(dataclasses.asdict(report))
    return data


def render_json(report: Any) -> str:
    """One JSON object; NaN/inf are written as null."""
    return json.dumps(to_dict(report), indent=2, allow_nan=False) + "\n"


def rows_frame(rows: Sequence[Any], row_type: type) -> pandas.DataFrame:
    """One row per dataclass instance, columns in field order; nested lists as JSON strings."""
    import pandas as pd

    fields = [f.name for f in dataclasses.fields(row_type)]
    records = []
    for row in rows:
        plain = to_dict(row)
        records.append(
            {f: json.dumps(plain[f]) if isinstance(plain[f], list) else plain[f] for f in fields}
        )
    frame = pd.DataFrame(records, columns=fields)
    # Nullable integers, so that a layer index stays 3 and never becomes 3.0 next to a null.
    ints = {f: "Int64" for f in ("layer", "mtp_depth") if f in fields}
    return frame.astype(ints)


def frame_csv(frame: pandas.DataFrame) -> str:
    """CSV text of a frame: header row, no index, full float precision, empty cells for null."""
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, lineterminator="\n")
    return buffer.getvalue()


def to_frame(norms: Sequence[NormStats]) -> pandas.DataFrame:
    """One row per norm, columns in schema order; `outliers` as a JSON string."""
    return rows_frame(norms, NormStats)


def render_csv(report: Report) -> str:
    """CSV: a header row and one row per norm, full float precision, empty cells for null."""
    return frame_csv(to_frame(report.norms))


# --- views for people ---------------------------------------------------------------------------

BAND_STYLE = {
    Band.collapse: "bold red",
    Band.shrink: "yellow",
    Band.balanced: "green",
    Band.grow: "yellow",
    Band.explosion: "bold red",
    Band.nonfinite: "bold magenta",
}
_SEVERITY = {
    Band.balanced: 0,
    Band.shrink: 1,
    Band.grow: 1,
    Band.collapse: 2,
    Band.explosion: 2,
    Band.nonfinite: 3,
}
MAX_OUT_OF_BAND_ROWS = 25


def human_bytes(n: float) -> str:
    """1234567 -> '1.2 MB' (decimal units, as disks and the Hub count)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def fmt(value: float | None, digits: int = 3) -> str:
    """Round for people; None and non-finite values shown as such."""
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}f}" if abs(value) < 1e4 else f"{value:.3g}"


def _where(n: NormStats) -> str:
    if n.module is Module.mtp:
        return f"mtp{n.mtp_depth}"
    return "-" if n.layer is None else str(n.layer)


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
        worst = max((r.band for r in rows), key=lambda b: _SEVERITY[b])
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


NAME_WIDTH = 40


def short_name(name: str, width: int = NAME_WIDTH) -> str:
    """Drop the `.weight` suffix; keep the informative tail of long names."""
    for suffix in (".weight", "_weight"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name if len(name) <= width else "…" + name[-(width - 1) :]


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
            _where(n),
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


def header_panel(title: str, lines: Sequence[tuple[str, str]]) -> RenderableType:
    """The framed (label, value) header of every table view; values are text, never markup."""
    from rich.markup import escape
    from rich.panel import Panel
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for label, value in lines:
        grid.add_row(label, escape(value))  # a path may hold `[...]`: text, not markup
    return Panel(grid, title=title, expand=False)


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
    heads = [n for n in report.norms if _is_headline(n)]
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


def _is_headline(n: NormStats) -> bool:
    return (n.module is Module.main and n.role is Role.final) or n.module is Module.mtp


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
            ("Final and MTP norms", [n for n in report.norms if _is_headline(n)]),
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
                f"| `{n.name}` | {_where(n)} | {n.role.value} | {gain} | {n.dim} | "
                f"{fmt(n.ratio)} | {n.band.value} | {fmt(n.mean)} | {fmt(n.std)} | "
                f"{fmt(n.min)} | {fmt(n.max)} |"
            )
    if report.warnings:
        lines += ["", "#### Warnings", ""] + [f"- {w}" for w in report.warnings]
    return "\n".join(lines) + "\n"
