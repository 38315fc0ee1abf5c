"""normscope: are the normalization scale vectors in this checkpoint healthy?

Offline analysis of RMSNorm/LayerNorm gains in safetensors checkpoints, main model and
Multi-Token-Prediction modules alike. `scan(path)` returns a `Report`; the `normscope` command
line renders it.
"""

from __future__ import annotations

__version__ = "0.1.0"

from normscope.compare import diff
from normscope.errors import NormscopeError
from normscope.scan import ScanOptions, measure, scan
from normscope.schema import NormStats, Report, Thresholds

__all__ = [
    "NormStats",
    "NormscopeError",
    "Report",
    "ScanOptions",
    "Thresholds",
    "__version__",
    "diff",
    "measure",
    "scan",
]
