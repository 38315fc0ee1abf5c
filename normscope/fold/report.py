"""The fold report: frozen dataclasses (the JSON contract) and its JSON/CSV/table/Markdown views.

`FoldReport` carries the scan's `model`, `io` and `summary` blocks unchanged in shape, and a
`norms` list whose entries start with the scan's identity fields (name, module, mtp_depth,
layer, role, parametrization, dim, ratio) followed by what folding adds. JSON and CSV keep full
precision and field order; the table and Markdown round, and are for people only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from normscope.report import (
    BAND_STYLE,
    fmt,
    frame_csv,
    header_panel,
    human_bytes,
    render_json,
    rows_frame,
    short_name,
)
from normscope.schema import (
    Band,
    BandCounts,
    Group,
    IOStats,
    ModelInfo,
    Module,
    Parametrization,
    Role,
    Summary,
)

if TYPE_CHECKING:
    from rich.console import RenderableType

FOLD_SCHEMA_VERSION = 1


class FoldStatus(str, Enum):
    """What happened to one norm."""

    folded = "folded"
    """Consumers (or producers) read and reduced: the metrics are set."""
    not_applicable = "not_applicable"
    """QK norms: their output feeds no linear map."""
    no_consumer = "no_consumer"
    """No matrix found that reads (or writes) this norm; `reason` says what was looked for."""
    skipped = "skipped"
    """Matrices found but not decodable (bnb, MLX, GPTQ, FP4...); `reason` says which."""
    planned = "planned"
    """Dry run: the consumers are listed, nothing was read."""


@dataclass(frozen=True, slots=True)
class FoldNorm:
    """One norm folded against the matrices it feeds (a JSON object, a CSV row)."""

    name: str
    module: Module
    mtp_depth: int | None
    layer: int | None
    role: Role
    parametrization: Parametrization
    dim: int
    ratio: float
    """The scan's ratio ‖γ_eff‖₂ / √d."""
    group: Group | None
    status: FoldStatus
    consumers: tuple[str, ...]
    """Tensors that read the norm's output (empty for output norms and when none was found)."""
    producers: tuple[str, ...]
    """Output norms (Gemma-2/3, OLMo-2 post norms): tensors whose output rows the norm scales."""
    experts_sampled: int | None
    """Routed experts read (of `experts_total`), when the consumers include an MoE."""
    experts_total: int | None
    folded_ratio: float | None
    """‖γ_eff ⊙ c‖ / ‖c‖, c_i² = Σ over consumers and rows of W[r, i]² (the final norm: the
    logit scale ‖W·diag γ‖_F / ‖W‖_F)."""
    folded_band: Band | None
    """The scan's bands applied to folded_ratio."""
    compensation: float | None
    """Spearman rank correlation of |γ_eff| and c (negative: γ and W trade scale)."""
    top_share: float | None
    """Share of ‖γ_eff ⊙ c‖² held by the top 1% of channels (at least one)."""
    max_over_median: float | None
    """max_i |γ_i c_i| / median_i |γ_i c_i|."""
    input_balance: float | None
    """MTP input norms: log2(‖W_e·diag γ_e‖_F / ‖W_h·diag γ_h‖_F) (> 0: the embedding dominates)."""
    reason: str | None
    """Why the metrics are null (no consumer, not applicable, not decodable)."""


@dataclass(frozen=True, slots=True)
class FoldPlan:
    """What was (or, in a dry run, would be) read, and how."""

    device: str
    max_memory: int
    """The memory budget (bytes) for blocks in flight."""
    experts: str
    """`shared`, `all` or the number of routed experts sampled per MoE layer."""
    dry_run: bool
    tensors: int
    """Consumer/producer matrices (plus their scales) to read."""
    bytes_planned: int
    """Their bytes: what a fold reads beyond the scan."""
    skipped_tensors: tuple[str, ...]
    """Matrices found but not decodable, each with its reason."""
    block_bytes: int
    blocks: int
    peak_buffered_bytes: int
    """Most bytes of row blocks alive at once: bounded by max_memory."""
    read_seconds: float
    compute_seconds: float
    wait_seconds: float
    """Time the compute side waited for reads (large: I/O-bound)."""


@dataclass(frozen=True, slots=True)
class FoldSummary:
    """Counts over the fold."""

    folded: int
    not_applicable: int
    no_consumer: int
    skipped: int
    folded_bands: BandCounts
    gated_out_of_band: int
    """Folded norms in the scope whose folded band is collapse, explosion or nonfinite."""


@dataclass(frozen=True, slots=True)
class FoldReport:
    """The result of `normscope fold`."""

    schema_version: int
    normscope_version: str
    source: str
    model: ModelInfo
    io: IOStats
    plan: FoldPlan
    norms: tuple[FoldNorm, ...]
    summary: Summary
    """The scan's summary (bands of the scan ratios)."""
    fold_summary: FoldSummary
    warnings: tuple[str, ...] = ()


# --- renderers ---------------------------------------------------------------------------------


def render_fold_json(report: FoldReport) -> str:
    """One JSON object, keys in field order, NaN/inf as null."""
    return render_json(report)


def render_fold_csv(report: FoldReport) -> str:
    """A header row and one row per norm (consumers/producers as JSON lists)."""
    return frame_csv(rows_frame(report.norms, FoldNorm))


def _where(n: FoldNorm) -> str:
    if n.module is Module.mtp:
        return f"mtp{n.mtp_depth}"
    return "-" if n.layer is None else str(n.layer)


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


def _row(n: FoldNorm) -> list[str]:
    return [
        _where(n),
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
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    name_width = max(16, min(50, width - 78))
    table.add_column("name", no_wrap=True, max_width=name_width)
    for col in _COLUMNS:
        table.add_column(col, justify="left" if col in ("role", "band") else "right")
    for n in rows:
        cells = _row(n)
        if n.folded_band is not None:
            style = BAND_STYLE[n.folded_band]
            cells[4] = f"[{style}]{cells[4]}[/]"
        table.add_row(escape(short_name(n.name, name_width)), *cells)
    out.append(table)
    return out


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


def count_statuses(norms: Sequence[FoldNorm]) -> dict[FoldStatus, int]:
    """How many norms ended in each status."""
    counts = dict.fromkeys(FoldStatus, 0)
    for n in norms:
        counts[n.status] += 1
    return counts


def finite_or_none(value: float | None) -> float | None:
    """NaN/inf to None (JSON null) at the dataclass level, so every view agrees."""
    if value is None or not math.isfinite(value):
        return None
    return value
