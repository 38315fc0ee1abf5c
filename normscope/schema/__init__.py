"""The output schema: frozen dataclasses passed between modules (the enums are in `enums.py`).

One module per report: `scan` (TensorRef, NormInfo, NormStats, Report...), `diff`, `check`,
`series`. Their field names are the JSON keys and CSV headers: a contract with every script that
reads normscope's output (changing one bumps `SCHEMA_VERSION` and needs a CHANGELOG entry).
`to_frame()` on each report builds a pandas DataFrame through `frames.py`, which imports no other
normscope module. Everything is re-exported here: `from normscope.schema import Report`.
"""

from __future__ import annotations

from normscope.enums import (
    Band,
    CheckName,
    Executor,
    Group,
    Kind,
    MatchedBy,
    Module,
    Order,
    Parametrization,
    Role,
    Severity,
    Stack,
    StepSource,
    Tower,
    Verdict,
)
from normscope.schema.check import CheckReport, Finding, Policy, RoleBand, Severities
from normscope.schema.diff import DiffReport, Mover, NormDiff, RoleDrift
from normscope.schema.scan import (
    DEFAULT_HIGH,
    DEFAULT_LOW,
    SCHEMA_VERSION,
    BandCounts,
    Headline,
    IOStats,
    ModelInfo,
    NormInfo,
    NormStats,
    Outlier,
    PeerRule,
    Report,
    Summary,
    TensorRef,
    Thresholds,
)
from normscope.schema.series import (
    SeriesCheckpoint,
    SeriesIO,
    SeriesReport,
    SeriesRow,
    SeriesSummary,
    Skipped,
    Trend,
    Trinity,
    TrinityRow,
)

__all__ = [
    "DEFAULT_HIGH",
    "DEFAULT_LOW",
    "SCHEMA_VERSION",
    "Band",
    "BandCounts",
    "CheckName",
    "CheckReport",
    "DiffReport",
    "Executor",
    "Finding",
    "Group",
    "Headline",
    "IOStats",
    "Kind",
    "MatchedBy",
    "ModelInfo",
    "Module",
    "Mover",
    "NormDiff",
    "NormInfo",
    "NormStats",
    "Order",
    "Outlier",
    "Parametrization",
    "PeerRule",
    "Policy",
    "Report",
    "Role",
    "RoleBand",
    "RoleDrift",
    "SeriesCheckpoint",
    "SeriesIO",
    "SeriesReport",
    "SeriesRow",
    "SeriesSummary",
    "Severities",
    "Severity",
    "Skipped",
    "Stack",
    "StepSource",
    "Summary",
    "TensorRef",
    "Thresholds",
    "Tower",
    "Trend",
    "Trinity",
    "TrinityRow",
    "Verdict",
]
