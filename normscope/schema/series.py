"""The schema of `normscope series`: checkpoints of one run, tidy rows, trends, the summary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from normscope.enums import Band, Executor, Module, Order, Role, StepSource
from normscope.notebook import Notebook, Row
from normscope.schema.check import RoleBand
from normscope.schema.scan import ModelInfo, NormStats, Thresholds

if TYPE_CHECKING:
    import pandas


@dataclass(frozen=True, slots=True)
class SeriesCheckpoint:
    """One measured checkpoint of a series."""

    path: str
    step: int
    bytes_read: int
    """Header, metadata and norm bytes read from this checkpoint."""
    seconds: float
    """Wall time of its scan."""


@dataclass(frozen=True, slots=True)
class Skipped:
    """A checkpoint (or a folder named like one) left out of a series, and why."""

    path: str
    step: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class SeriesRow:
    """One norm at one checkpoint; JSON and CSV flatten it: checkpoint, step, NormStats fields."""

    checkpoint: str
    """The checkpoint's path."""
    step: int
    norm: NormStats
    rel_change: float | None
    """‖g − g_prev‖₂/‖g_prev‖₂ against the previous checkpoint of the series; null for the first."""


@dataclass(frozen=True, slots=True)
class Trend:
    """A headline norm followed across the series (or a role's median ratio, `aggregate`)."""

    name: str
    """Tensor name, or `median(ROLE)` / `median(mtp:ROLE)` for a role's median ratio."""
    role: Role
    module: Module
    ratio_first: float
    ratio_last: float
    band_last: Band
    first_out_of_band_step: int | None
    """The first step at which the ratio was collapse, explosion or nonfinite; null if never."""
    drift_per_1k_steps: float | None
    """Least-squares slope of ratio vs step over the last min(n, 5) checkpoints, × 1000."""
    projected_crossing_step: int | None
    """Where a steady drift at that rate crosses the low or high band edge; null when the ratio
    is flat, already out of band, or the crossing lies further ahead than 3x the span of steps
    observed (an extrapolation with no information in it)."""
    projected_band: Band | None
    """`collapse` or `explosion`: the band that crossing leads into."""
    mtp_depth: int | None
    aggregate: bool
    """True for a role's median ratio (a pseudo-norm)."""
    count: int
    """Norms behind the number: 1, or the size of the role at the last checkpoint."""
    ratios: tuple[float | None, ...]
    """The ratio at each checkpoint, aligned with `SeriesReport.checkpoints` (null: absent)."""


@dataclass(frozen=True, slots=True)
class SeriesSummary:
    """Trends of the headline norms and the gate inputs of the latest checkpoint."""

    thresholds: Thresholds
    scope: str
    """The gate scope (a `normscope.scope` expression)."""
    window: int
    """Checkpoints in the drift fit: min(n, 5)."""
    latest_step: int
    gated_out_of_band: int
    """Norms in scope that are out of band at the latest checkpoint."""
    headline: tuple[Trend, ...]
    """The final norm, each MTP norm, then each (module, role)'s median ratio."""
    roles: tuple[RoleBand, ...] = ()
    """Per-role bands of the configuration (`[tool.normscope.roles]`): a norm of such a role is
    banded, and its trend projected, against its own band; the others against `thresholds`."""


@dataclass(frozen=True, slots=True)
class SeriesIO:
    """What a series cost."""

    bytes_read: int
    seconds: float
    executor: Executor
    """`serial`, `thread` or `process`: what actually ran."""
    jobs: int
    """Workers of the pool (1 when serial)."""


@dataclass(frozen=True, slots=True)
class TrinityRow:
    """One checkpoint's three signals (seed playbook §04): losses from TensorBoard, the ratio."""

    step: int
    main_loss: float | None
    """The main loss at the last logged step at or before `step` (null: none logged yet)."""
    mtp_loss: float | None
    """The MTP loss, likewise."""
    gap: float | None
    """mtp_loss - main_loss."""
    final_ratio: float | None
    """The final norm's ratio ‖g‖/√d at this checkpoint."""
    final_band: Band | None


@dataclass(frozen=True, slots=True)
class Trinity:
    """`series --events`: the main and MTP loss trends, their gap and the final-norm ratio."""

    events: str
    """The TensorBoard log folder read."""
    main_tag: str | None
    """The tag read for the main loss (null: none of the candidates was logged)."""
    mtp_tag: str | None
    rows: tuple[TrinityRow, ...]
    """One per checkpoint, in series order."""
    main_trend: float | None
    """Least-squares slope of the main loss per 1,000 steps over the drift window."""
    mtp_trend: float | None
    gap_trend: float | None
    ratio_trend: float | None
    """The final norm's drift per 1,000 steps (as in the trend table)."""


@dataclass(frozen=True, slots=True, repr=False)
class SeriesReport(Notebook):
    """The result of `normscope series`: one training run's norms, checkpoint by checkpoint."""

    schema_version: int
    normscope_version: str
    source: tuple[str, ...]
    """The arguments: one run folder, or the checkpoints listed."""
    model: ModelInfo
    """Of the latest checkpoint."""
    steps_from: StepSource
    order: Order
    checkpoints: tuple[SeriesCheckpoint, ...]
    """Measured checkpoints, in series order."""
    skipped: tuple[Skipped, ...]
    rows: tuple[SeriesRow, ...]
    """One per (checkpoint, norm), in series order, norms in scan order."""
    summary: SeriesSummary
    io: SeriesIO
    warnings: tuple[str, ...] = ()
    trinity: Trinity | None = None
    """With `--events`: the playbook's stability trinity; null otherwise."""

    def to_frame(self) -> pandas.DataFrame:
        """Return the tidy rows: checkpoint, step, every NormStats field, rel_change."""
        from normscope.frames import series_frame

        return series_frame(self.rows, NormStats)

    def _json_data(self) -> Any:
        from normscope.frames import series_data

        return series_data(self)

    def _facts(self) -> list[tuple[str, Any]]:
        steps = [c.step for c in self.checkpoints]
        return [
            ("source", ", ".join(self.source)),
            ("family", self.model.family),
            ("checkpoints", len(self.checkpoints)),
            ("steps", f"{steps[0]}..{steps[-1]}" if steps else "-"),
            ("skipped", len(self.skipped)),
            ("rows", len(self.rows)),
            ("gated out of band", self.summary.gated_out_of_band),
            ("warnings", len(self.warnings)),
        ]

    def _table(self) -> tuple[tuple[str, ...], list[Row], str]:
        columns = ("trend", "role", "ratio first", "ratio last", "band", "projected crossing")
        cells: list[Row] = [
            (
                t.name,
                t.role,
                t.ratio_first,
                t.ratio_last,
                t.band_last,
                t.projected_crossing_step,
            )
            for t in self.summary.headline
        ]
        return columns, cells, "headline trends (every row: .to_frame())"
