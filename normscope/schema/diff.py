"""The schema of `normscope diff`: norms paired across two checkpoints, and how they moved."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from normscope.enums import Band, Group, MatchedBy, Module, Role
from normscope.notebook import Notebook, Row, norm_row
from normscope.schema.scan import ModelInfo

if TYPE_CHECKING:
    import pandas


@dataclass(frozen=True, slots=True)
class Mover:
    """One channel that moved between two checkpoints."""

    index: int
    before: float
    after: float


@dataclass(frozen=True, slots=True)
class NormDiff:
    """One norm present in both checkpoints (a JSON object / CSV row of `diff`)."""

    name: str
    """Name in checkpoint B."""
    name_a: str
    """Name in checkpoint A (differs from `name` only when matched by identity)."""
    matched_by: MatchedBy
    module: Module
    mtp_depth: int | None
    layer: int | None
    role: Role
    group: Group | None
    dim: int
    ratio_a: float
    ratio_b: float
    delta_ratio: float
    """ratio_b - ratio_a."""
    rel_change: float
    """‖g_B - g_A‖₂ / ‖g_A‖₂ on the effective gains."""
    cosine: float
    """Cosine similarity of g_A and g_B."""
    band_a: Band
    band_b: Band
    band_changed: bool
    movers: tuple[Mover, ...]
    """Up to 5 channels with the largest |g_B - g_A|, largest first."""
    anomaly_a: bool | None = None
    """The norm's peer verdict in A (see `NormStats.anomaly`)."""
    anomaly_b: bool | None = None
    """...and in B: `anomaly_b and not anomaly_a` is a norm that left its peers in between."""


@dataclass(frozen=True, slots=True)
class RoleDrift:
    """Relative change summarised per (module, role)."""

    module: Module
    role: Role
    count: int
    rel_change_median: float
    rel_change_max: float


@dataclass(frozen=True, slots=True, repr=False)
class DiffReport(Notebook):
    """The result of comparing two checkpoints."""

    schema_version: int
    normscope_version: str
    a: str
    b: str
    model_a: ModelInfo
    model_b: ModelInfo
    norms: tuple[NormDiff, ...]
    """Matched norms, largest relative change first."""
    only_a: tuple[str, ...]
    """Norms present in A only."""
    only_b: tuple[str, ...]
    """Norms present in B only."""
    roles: tuple[RoleDrift, ...]
    band_changes: int
    warnings: tuple[str, ...] = ()

    def to_frame(self) -> pandas.DataFrame:
        """Return one row per matched norm (NormDiff fields; `movers` as a JSON string)."""
        from normscope.frames import rows_frame

        return rows_frame(self.norms, NormDiff)

    def _facts(self) -> list[tuple[str, Any]]:
        return [
            ("a", self.a),
            ("b", self.b),
            ("norms", len(self.norms)),
            ("band changes", self.band_changes),
            ("only in a", len(self.only_a)),
            ("only in b", len(self.only_b)),
            ("warnings", len(self.warnings)),
        ]

    def _table(self) -> tuple[tuple[str, ...], list[Row], str]:
        rows = sorted(self.norms, key=lambda n: (not n.band_changed, -abs(n.rel_change or 0.0)))
        columns = ("name", "layer", "role", "ratio a", "ratio b", "rel_change", "band")
        cells = [
            norm_row(n, n.ratio_a, n.ratio_b, n.rel_change, f"{n.band_a}→{n.band_b}") for n in rows
        ]
        return columns, cells, "norms, band changes and the largest moves first"
