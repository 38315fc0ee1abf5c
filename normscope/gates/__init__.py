"""Gates: a report plus a policy in, typed violations out — the one place pass/fail is decided.

`verdict.py`: `scan_gate`, `diff_gate`, `series_gate` and `fold_gate` judge the `--fail-on` /
`--max-drift` flags of those commands into a `GateResult`; `checks.py`: `run_checks` evaluates
every check of `normscope check` into `Finding`s. A gate that looked at nothing must not pass
(exit 2). The CLI only prints what comes back and picks the exit code (`normscope.exitcodes`).
"""

from __future__ import annotations

from normscope.gates.checks import require_understood, run_checks
from normscope.gates.verdict import (
    SCOPE_HINT,
    GateResult,
    Violation,
    diff_gate,
    empty_scope,
    fold_gate,
    scan_gate,
    series_gate,
)

__all__ = [
    "SCOPE_HINT",
    "GateResult",
    "Violation",
    "diff_gate",
    "empty_scope",
    "fold_gate",
    "require_understood",
    "run_checks",
    "scan_gate",
    "series_gate",
]
