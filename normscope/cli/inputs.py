"""What several commands check the same way before they read anything: the scan options (band,
scope, rules), `--revision`, non-negative limits."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from normscope.enums import Parametrization

if TYPE_CHECKING:
    from normscope.scanner import ScanOptions


def scan_options(
    low: float,
    high: float,
    parametrization: Parametrization | None,
    scope: str,
    rules: Path | None,
) -> ScanOptions:
    """The options of one scan, validated: a bad band, scope or rules file fails before any
    checkpoint is read."""
    from normscope.policy import user_rules
    from normscope.scanner import ScanOptions
    from normscope.schema import Thresholds
    from normscope.scope import parse_scope

    if not 0 < low < high:
        raise typer.BadParameter("need 0 < --low < --high", param_hint="--low/--high")
    return ScanOptions(
        Thresholds(low=low, high=high), parametrization, parse_scope(scope), rules=user_rules(rules)
    )


def at_revision(source: str, revision: str | None) -> str:
    """Fold --revision into a Hub source (org/name@rev); a usage error where it cannot apply."""
    if revision is None:
        return source
    from normscope.sources.hub.spec import with_revision

    return with_revision(source, revision)


def nonnegative(value: float | None, param: str) -> None:
    """A usage error for a negative limit."""
    if value is not None and value < 0:
        raise typer.BadParameter("must be >= 0", param_hint=param)
