"""normscope fold: each norm gain γ against the matrices it feeds, streamed to the device.

`fold(source, options)` scans the checkpoint (the light scan: headers and norm vectors), finds
for every norm the matrices that read its output (`consumers.py`), streams only their byte ranges
through a bounded pipeline (`pipeline.py`) to reduce them to per-channel column norms c on the
CPU or a GPU (`metrics.py`), and reports the folded ratio ‖γ ⊙ c‖/‖c‖, compensation,
concentration and the MTP input balance (computed in `metrics.py`, per norm in `rows.py`).

Rooms: `options.py` (what a fold can be told), `run.py` (one fold, step by step), `tasks.py`
(which matrices are read, without torch), `consumers.py`, `pipeline.py`, `metrics.py`,
`report.py` (the rows), `distributed.py` (the reductions on a Dask cluster). This module only
hands their names on.

torch is needed (`pip install "normscope[torch]"`) and imported only once a fold's plan is known;
a dry run never imports it, and this package itself imports without it, so a CLI can import
`fold` and turn `TorchMissing` into exit 2.
"""

from __future__ import annotations

from normscope.enums import FoldStatus
from normscope.fold.options import FoldOptions, TorchMissing, parse_memory
from normscope.fold.run import fold
from normscope.schema.fold import FoldNorm, FoldPlan, FoldReport

__all__ = [
    "FoldNorm",
    "FoldOptions",
    "FoldPlan",
    "FoldReport",
    "FoldStatus",
    "TorchMissing",
    "fold",
    "parse_memory",
]
