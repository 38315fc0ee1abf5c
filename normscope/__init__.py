"""normscope: are the normalization scale vectors in this checkpoint healthy?

Offline analysis of RMSNorm/LayerNorm gains in safetensors checkpoints, main model and
Multi-Token-Prediction modules alike. `scan(path)` returns a `Report`; `diff(a, b)` compares two
checkpoints; the `normscope` command line renders them.

The public names are imported lazily, so that `normscope --help` does not pay for numpy.
"""

from __future__ import annotations

import sys
from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from normscope.compare import diff
    from normscope.errors import NormscopeError
    from normscope.scan import Measured, ScanOptions, measure, scan
    from normscope.schema import DiffReport, NormStats, Report, Thresholds

_LAZY = {
    "diff": "normscope.compare",
    "NormscopeError": "normscope.errors",
    "Measured": "normscope.scan",
    "ScanOptions": "normscope.scan",
    "measure": "normscope.scan",
    "scan": "normscope.scan",
    "DiffReport": "normscope.schema",
    "NormStats": "normscope.schema",
    "Report": "normscope.schema",
    "Thresholds": "normscope.schema",
}

__all__ = [
    "DiffReport",
    "Measured",
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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'normscope' has no attribute {name!r}")


class _Package(ModuleType):
    # NOTE: the first import of the submodule `normscope.scan` (by the CLI, `compare`, or a user's
    # `from normscope.scan import ScanOptions`) binds it as the attribute `normscope.scan`, which
    # would shadow the lazy function: `normscope.scan(path)` then fails with "'module' object is
    # not callable". Keep the function bound instead.
    def __setattr__(self, name: str, value: Any) -> None:
        if name == "scan" and isinstance(value, ModuleType):
            value = value.scan
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
