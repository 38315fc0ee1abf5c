"""The gates of `scan`, `diff`, `series` and `fold`: their `--fail-on` / `--max-drift` flags
judged on a report into `Violation`s. Each says when it looked at nothing (its scope matched no
norm): such a gate cannot pass (exit 2, `normscope.exitcodes`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from normscope.enums import CheckName
from normscope.schema import DiffReport, Report, SeriesReport
from normscope.scope import Selector

if TYPE_CHECKING:  # NOTE: trends is imported where used (not by scan)
    from normscope.schema.fold import FoldReport


@dataclass(frozen=True, slots=True)
class Violation:
    """One tripped gate: what, on which norm (or `model`), in words."""

    check: CheckName
    subject: str
    message: str


@dataclass(frozen=True, slots=True)
class GateResult:
    """The violations of one gated command, and what the user must hear besides."""

    violations: tuple[Violation, ...] = ()
    warnings: tuple[str, ...] = ()
    unjudged: tuple[str, ...] = ()
    """What a gate asked for could not judge (its scope matched no norm): exit 2, never a
    silent pass (`normscope.exitcodes`)."""
    hint: str | None = None

    @property
    def failed(self) -> bool:
        """True when any gate tripped (the command exits 1)."""
        return bool(self.violations)


SCOPE_HINT = "this model may have no final or MTP norm identified; try --scope all"


def empty_scope(matched: int, scope: Selector, what: str = "the gate") -> list[str]:
    """What a gate whose scope matched no norm says (exit 2); nothing when it matched some."""
    if matched:
        return []
    return [f"no norm matches the scope '{scope.text}': {what} looked at nothing"]


def scan_gate(report: Report, scope: Selector, out_of_band: bool) -> GateResult:
    """`scan --fail-on out-of-band`: any norm in scope out of band."""
    if not out_of_band:
        return GateResult()
    unjudged = empty_scope(len(scope.matching(report.norms)), scope)
    count, t = report.summary.gated_out_of_band, report.summary.thresholds
    violations: tuple[Violation, ...] = ()
    if count:
        message = (
            f"{count} norm(s) in scope '{report.summary.scope}' are out of band "
            f"[{t.low:g}, {t.high:g}]"
        )
        violations = (Violation(CheckName.band, "model", message),)
    return _result(violations, [], unjudged)


def _result(
    violations: Sequence[Violation], warnings: list[str], unjudged: list[str]
) -> GateResult:
    scoped = any(u.startswith("no norm matches") for u in unjudged)
    return GateResult(
        tuple(violations), tuple(warnings), tuple(unjudged), SCOPE_HINT if scoped else None
    )


def diff_gate(
    result: DiffReport,
    scope: Selector,
    band_change: bool = False,
    out_of_band: bool = False,
    max_drift: float | None = None,
) -> GateResult:
    """`diff --fail-on band-change|out-of-band` and `--max-drift`, over the norms in scope."""
    if not (band_change or out_of_band or max_drift is not None):
        return GateResult()
    scoped = scope.matching(result.norms)
    out: list[Violation] = []
    if band_change:
        out += [
            Violation(
                CheckName.band_change,
                d.name,
                f"{d.name} changed band {d.band_a.value} -> {d.band_b.value}",
            )
            for d in scoped
            if d.band_changed
        ]
    if out_of_band:
        out += [
            Violation(
                CheckName.band,
                d.name,
                f"{d.name} is out of band in B ({d.band_b.value}, ratio {d.ratio_b:.3f})",
            )
            for d in scoped
            if d.band_b.out_of_band
        ]
    if max_drift is not None:
        out += [
            Violation(
                CheckName.drift,
                d.name,
                f"{d.name} moved {100 * d.rel_change:.1f}% (limit {100 * max_drift:g}%)",
            )
            for d in scoped
            if not d.rel_change <= max_drift
        ]
    return _result(out, [], empty_scope(len(scoped), scope))


def series_gate(
    report: SeriesReport, scope: Selector, out_of_band: bool, max_drift: float | None
) -> GateResult:
    """`series --fail-on out-of-band` and `--max-drift`, at the latest checkpoint."""
    if not (out_of_band or max_drift is not None):
        return GateResult()
    from normscope.trends import latest_rows

    rows = [r for r in latest_rows(report) if scope(r.norm)]
    unjudged = empty_scope(len(rows), scope)
    warnings: list[str] = []
    out: list[Violation] = []
    t = report.summary.thresholds
    if out_of_band:
        out += [
            Violation(
                CheckName.band,
                r.norm.name,
                f"{r.norm.name} is out of band at step {r.step} ({r.norm.band.value}, ratio "
                f"{r.norm.ratio:.3f}, band [{t.low:g}, {t.high:g}])",
            )
            for r in rows
            if r.norm.band.out_of_band
        ]
    if max_drift is not None:
        if len(report.checkpoints) < 2:
            said = "--max-drift needs two checkpoints: not checked"
            (warnings if out_of_band else unjudged).insert(0, said)
        else:
            before = report.checkpoints[-2].step
            out += [
                Violation(
                    CheckName.drift,
                    r.norm.name,
                    f"{r.norm.name} moved {100 * r.rel_change:.1f}% between step {before} and "
                    f"{r.step} (limit {100 * max_drift:g}%)",
                )
                for r in rows
                if r.rel_change is not None and not r.rel_change <= max_drift
            ]
    return _result(out, warnings, unjudged)


def fold_gate(result: FoldReport, out_of_band: bool) -> GateResult:
    """`fold --fail-on out-of-band`: any folded norm in scope out of band."""
    gated = result.fold_summary.gated_out_of_band
    if not (out_of_band and gated):
        return GateResult()
    scope = result.summary.scope
    message = f"{gated} folded norm(s) in scope '{scope}' are out of band"
    return GateResult((Violation(CheckName.band, "model", message),))
