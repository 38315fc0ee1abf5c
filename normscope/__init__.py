"""normscope: are the normalization scale vectors in this checkpoint healthy?

Offline analysis of RMSNorm/LayerNorm gains in safetensors checkpoints (and DCP saves and PyTorch
state dicts), main model and Multi-Token-Prediction modules alike. The API mirrors the commands:
`scan(source)` returns a `Report`, `diff(a, b)` a `DiffReport`, `series(run)` a `SeriesReport`,
`check(source)` a `CheckReport`, `fold(source)` a `FoldReport`, each with keyword options named
as the flags and `to_frame()`.

The public names are imported lazily, so that `normscope --help` does not pay for numpy.
"""

from __future__ import annotations

import sys as _sys
import types as _types
import typing as _typing

from normscope.version import __version__

if _typing.TYPE_CHECKING:
    from normscope.api import check, diff, fold, scan, series
    from normscope.enums import Order, Parametrization
    from normscope.errors import NormscopeError
    from normscope.scanner import Measured, ScanOptions, measure
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
    "check": "normscope.api",
    "diff": "normscope.api",
    "fold": "normscope.api",
    "scan": "normscope.api",
    "series": "normscope.api",
    "Order": "normscope.enums",
    "Parametrization": "normscope.enums",
    "NormscopeError": "normscope.errors",
    "Measured": "normscope.scanner",
    "ScanOptions": "normscope.scanner",
    "measure": "normscope.scanner",
    "CheckReport": "normscope.schema",
    "DiffReport": "normscope.schema",
    "NormStats": "normscope.schema",
    "PeerRule": "normscope.schema",
    "Report": "normscope.schema",
    "SeriesReport": "normscope.schema",
    "Thresholds": "normscope.schema",
    "measure_series": "normscope.series",
}

__all__ = [
    "CheckReport",
    "DiffReport",
    "Measured",
    "NormStats",
    "NormscopeError",
    "Order",
    "Parametrization",
    "PeerRule",
    "Report",
    "ScanOptions",
    "SeriesReport",
    "Thresholds",
    "__version__",
    "check",
    "diff",
    "fold",
    "measure",
    "measure_series",
    "scan",
    "series",
]


class _Face(_types.ModuleType):
    """The package object: `import normscope.series` (the module measuring a run) or
    `normscope.fold` (the package) must not replace the public function of that name, as a
    submodule import otherwise would."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in _SHADOWED and isinstance(value, _types.ModuleType):
            return  # the submodule stays reachable as sys.modules["normscope.series"]
        super().__setattr__(name, value)


_SHADOWED = frozenset({"fold", "series"})
_sys.modules[__name__].__class__ = _Face


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'normscope' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
