"""The schema of `normscope fold`: each norm against the matrices it feeds, and the plan.

`FoldReport` carries the scan's `model`, `io` and `summary` blocks unchanged in shape, and a
`norms` list whose entries start with the scan's identity fields (name, module, mtp_depth, layer,
role, parametrization, dim, ratio) followed by what folding adds. Field names are a contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from normscope.enums import Band, FoldStatus, Group, Module, Parametrization, Role
from normscope.notebook import Notebook, Row, deviation, norm_row
from normscope.schema.scan import BandCounts, IOStats, ModelInfo, Summary

if TYPE_CHECKING:
    import pandas

FOLD_SCHEMA_VERSION = 1


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


@dataclass(frozen=True, slots=True, repr=False)
class FoldReport(Notebook):
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

    def to_frame(self) -> pandas.DataFrame:
        """Return one row per norm (FoldNorm fields; `consumers` and `producers` as JSON)."""
        from normscope.frames import rows_frame

        return rows_frame(self.norms, FoldNorm)

    def _facts(self) -> list[tuple[str, Any]]:
        s = self.fold_summary
        return [
            ("source", self.source),
            ("family", self.model.family),
            ("norms", len(self.norms)),
            ("folded", s.folded),
            ("gated out of band", s.gated_out_of_band),
            ("warnings", len(self.warnings)),
        ]

    def _table(self) -> tuple[tuple[str, ...], list[Row], str]:
        def key(n: FoldNorm) -> tuple[bool, float]:
            bad = n.folded_band is not None and n.folded_band.out_of_band
            return not bad, -deviation(n.folded_ratio)

        columns = ("name", "layer", "role", "ratio", "folded ratio", "folded band", "status")
        cells = [
            norm_row(n, n.ratio, n.folded_ratio, n.folded_band, n.status)
            for n in sorted(self.norms, key=key)
        ]
        return columns, cells, "norms, folded out of band first"
