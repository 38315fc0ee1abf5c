"""normscope: are the normalization scale vectors in this checkpoint healthy?

Offline analysis of RMSNorm/LayerNorm gains in safetensors checkpoints, main model and
Multi-Token-Prediction modules alike. `scan(path)` returns a `Report`; `diff(a, b)` compares two
checkpoints; the `normscope` command line renders them.

The public names are imported lazily, so that `normscope --help` does not pay for numpy.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from normscope.version import __version__

if TYPE_CHECKING:
    from normscope.compare import diff
    from normscope.errors import NormscopeError
    from normscope.scanner import Measured, ScanOptions, measure, scan
    from normscope.schema import (
        CheckReport,
        DiffReport,
        NormStats,
        PeerRule,
        Report,
        SeriesReport,
        Thresholds,
    )
    from normscope.series import measure_series

_LAZY = {
    "diff": "normscope.compare",
    "NormscopeError": "normscope.errors",
    "Measured": "normscope.scanner",
    "ScanOptions": "normscope.scanner",
    "measure": "normscope.scanner",
    "scan": "normscope.scanner",
    "DiffReport": "normscope.schema",
    "NormStats": "normscope.schema",
    "PeerRule": "normscope.schema",
    "Report": "normscope.schema",
    "Thresholds": "normscope.schema",
    "CheckReport": "normscope.schema",
    "SeriesReport": "normscope.schema",
    "measure_series": "normscope.series",
}

__all__ = [
    "CheckReport",
    "DiffReport",
    "Measured",
    "NormStats",
    "NormscopeError",
    "PeerRule",
    "Report",
    "ScanOptions",
    "SeriesReport",
    "Thresholds",
    "__version__",
    "diff",
    "measure",
    "measure_series",
    "scan",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'normscope' has no attribute {name!r}")
