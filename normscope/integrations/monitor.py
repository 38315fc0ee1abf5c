"""The framework-neutral half of the training callbacks: scan the live model, judge it, decide.

`NormMonitor.observe(model, step)` scans the model where it lives (`sources.memory`: only the
norm vectors leave the device), runs the checks of `normscope check` under the same policy as CI
(defaults < `[tool.normscope]` of the nearest pyproject.toml, or `config` < the keywords), and
returns what a callback logs (scalars, per-role gains γ for histograms) and whether to stop.
When the gate trips, the scan and check reports are saved as JSON (the shapes of `scan -f json`
and `check -f json`) before training is stopped.

A scan that fails (a NormscopeError: the model changed shape, tensors moved to several
devices...; or any other exception, such as a full disk for the reports) never stops training
unless `on_error` says so: `warn` (the default) logs it on the
`normscope` logger and goes on, `stop` stops training with the error saved, `raise` raises it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from normscope.errors import NormscopeError, UsageError

if TYPE_CHECKING:
    import numpy as np

    from normscope.scanner import Measured, ScanOptions
    from normscope.schema import CheckReport, Policy

OnError = Literal["warn", "stop", "raise"]
LOG = logging.getLogger("normscope")


@dataclass(frozen=True)
class Observation:
    """One scan of the live model at a step: what to log, and what the gate said."""

    step: int
    scalars: dict[str, float] = field(default_factory=dict)
    """Every norm's ratio (`normscope/ratio/...`), the counts out of band and anomalous."""
    gammas: dict[str, np.ndarray] = field(default_factory=dict)
    """The effective gains γ, concatenated per role (`normscope/gamma/<role>`): histograms."""
    check: CheckReport | None = None
    stop: bool = False
    """True when training should stop: the gate tripped, or a failed scan with on_error=stop."""
    saved: tuple[Path, ...] = ()
    """The reports written (when stopping)."""
    error: str | None = None
    """Why the scan failed (None: it did not)."""


class NormMonitor:
    """Scan a model every `every_n_steps` steps (and at each save), check it, decide to stop.

    `gate`: stop training when the check's verdict is `fail` (False: only log). `config`, `low`,
    `high`, `scope`, `severity`, `max_drift`, `expect_mtp`, `allow_unknown`: as for
    `normscope.check` (`severity` maps a check to error|warn|off). `baseline="start"`: the first
    scan is the baseline of the drift and band-change checks (None: no baseline). `report_dir`:
    where reports are saved (None: the framework's output folder). `model_config`: for a model
    whose names need one and that has no `.config` of its own.
    """

    def __init__(
        self,
        every_n_steps: int = 100,
        *,
        on_save: bool = True,
        gate: bool = True,
        on_error: OnError = "warn",
        config: str | os.PathLike[str] | None = None,
        low: float | None = None,
        high: float | None = None,
        scope: str | None = None,
        severity: Mapping[str, str] | None = None,
        max_drift: float | None = None,
        expect_mtp: int | None = None,
        allow_unknown: bool | None = None,
        baseline: Literal["start"] | None = None,
        report_dir: str | os.PathLike[str] | None = None,
        model_config: Any = None,
    ) -> None:
        if every_n_steps < 1:
            raise UsageError(
                f"every_n_steps must be >= 1, not {every_n_steps}", param="every_n_steps"
            )
        if on_error not in ("warn", "stop", "raise"):
            raise UsageError(
                f"on_error must be warn, stop or raise, not {on_error!r}", param="on_error"
            )
        if baseline not in (None, "start"):
            raise UsageError(
                f"baseline must be 'start' or None, not {baseline!r}", param="baseline"
            )
        self.every_n_steps = every_n_steps
        self.on_save = on_save
        self.gate = gate
        self.on_error: OnError = on_error
        self.report_dir = Path(report_dir) if report_dir is not None else None
        self.model_config = model_config
        self.use_baseline = baseline == "start"
        self.policy, self.options = _settings(
            config, low, high, scope, severity, max_drift, expect_mtp, allow_unknown
        )
        self.baseline: Measured | None = None
        self.last: Observation | None = None
        self.history: list[Observation] = []
        """Every scan, without its gains (`last` has them)."""

    def due(self, step: int) -> bool:
        """Is `step` a step to scan at (every N steps, not twice)?"""
        return step % self.every_n_steps == 0 and not self.seen(step)

    def seen(self, step: int) -> bool:
        return self.last is not None and self.last.step == step

    def observe(
        self,
        model: Any,
        step: int,
        out_dir: str | os.PathLike[str] | None,
        model_config: Any = None,
    ) -> Observation:
        """Scan and check `model` at `step` (`model_config`: when the monitor has none); save
        the reports when stopping. Raises only with on_error=raise."""
        if self.seen(step):
            assert self.last is not None
            return self.last
        try:
            observation = self._scan(model, step, out_dir, self.model_config or model_config)
        except NormscopeError as exc:
            observation = self._failed(step, exc, exc.message, exc.hint, out_dir)
        except Exception as exc:  # a monitor must not end a run by its own fault (a full disk)
            observation = self._failed(step, exc, f"{type(exc).__name__}: {exc}", None, out_dir)
        self.last = observation
        # NOTE: the gains are a model's worth of norm vectors: only the last scan keeps them, so a
        # long run's history stays a few numbers per scan
        self.history.append(dataclasses.replace(observation, gammas={}))
        return observation

    def _scan(
        self, model: Any, step: int, out_dir: str | os.PathLike[str] | None, model_config: Any
    ) -> Observation:
        from normscope.events import norm_scalars, role_gains
        from normscope.gates import run_checks
        from normscope.scanner import measure
        from normscope.sources import parse_source
        from normscope.sources.memory import InMemory

        source = parse_source(InMemory(model, model_config, f"step {step}"))
        measured = measure(source, self.options)
        if self.use_baseline and self.baseline is None:
            self.baseline = measured
        check = run_checks(measured, self.policy, self.baseline if self.use_baseline else None)
        tripped = self.gate and check.verdict.value == "fail"
        saved: tuple[Path, ...] = ()
        if tripped:
            try:
                saved = self._save(step, out_dir, {"scan": measured.report, "check": check})
                where = f"reports in {saved[0].parent}"
            except OSError as exc:  # the gate stands: stop all the same
                where = f"the reports could not be saved: {exc}"
            LOG.warning(
                "normscope: the norm gate failed at step %d (%d error(s)); stopping training, %s",
                step,
                check.errors,
                where,
            )
        return Observation(
            step, norm_scalars(measured), role_gains(measured), check, tripped, saved
        )

    def _failed(
        self,
        step: int,
        exc: Exception,
        what: str,
        hint: str | None,
        out_dir: str | os.PathLike[str] | None,
    ) -> Observation:
        if self.on_error == "raise":
            raise exc
        message = what + (f" (hint: {hint})" if hint else "")
        stop = self.on_error == "stop"
        saved: tuple[Path, ...] = ()
        if stop:
            try:
                saved = self._save(step, out_dir, {"error": message})
            except OSError as problem:
                message += f"; the error report could not be saved: {problem}"
        LOG.warning(
            "normscope: cannot scan the model at step %d: %s%s",
            step,
            message,
            "; stopping training" if stop else "; training goes on",
        )
        return Observation(step, stop=stop, saved=saved, error=message)

    def _save(
        self, step: int, out_dir: str | os.PathLike[str] | None, reports: Mapping[str, Any]
    ) -> tuple[Path, ...]:
        """Each report as `normscope-step-<N>.<kind>.json`, written atomically."""
        from normscope.render.common import render_json
        from normscope.sources.store import write_cache_file

        folder = self.report_dir or Path(out_dir or ".") / "normscope"
        out = []
        for kind, report in reports.items():
            path = folder / f"normscope-step-{step}.{kind}.json"
            text = (
                render_json(report) if not isinstance(report, str) else render_json({kind: report})
            )
            write_cache_file(path, text.encode(), digest=False)  # atomic; a plain JSON file
            out.append(path)
        return tuple(out)


def _settings(
    config: str | os.PathLike[str] | None,
    low: float | None,
    high: float | None,
    scope: str | None,
    severity: Mapping[str, str] | None,
    max_drift: float | None,
    expect_mtp: int | None,
    allow_unknown: bool | None,
) -> tuple[Policy, ScanOptions]:
    """The check's policy and the scan options it implies, built once by the builder of every
    command (`normscope.settings`): what `normscope check` would apply in CI."""
    from normscope.settings import Flags, build_settings

    settings = build_settings(
        Flags(
            low=low,
            high=high,
            scope=scope,
            config=Path(config) if config is not None else None,
            max_drift=max_drift,
            expect_mtp=expect_mtp,
            severity=severity,
            allow_unknown=allow_unknown,
        )
    )
    return settings.policy, settings.scan
