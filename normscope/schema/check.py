"""The schema of `normscope check`: the effective policy, each finding, the verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from normscope.enums import CheckName, Parametrization, Role, Severity, Verdict
from normscope.notebook import Notebook, Row
from normscope.schema.scan import DEFAULT_HIGH, DEFAULT_LOW, PeerRule, Thresholds
from normscope.scope import DEFAULT, Selector

if TYPE_CHECKING:
    import pandas


@dataclass(frozen=True, slots=True)
class RoleBand:
    """A per-role band, e.g. a wider one for QK norms."""

    role: Role
    low: float | None
    """None: the policy's `low`."""
    high: float | None
    """None: the policy's `high`."""


def role_thresholds(band: Thresholds, roles: tuple[RoleBand, ...], role: Role) -> Thresholds:
    """The band of one role: its entry in `roles`, the edges it leaves unset from `band`."""
    for rb in roles:
        if rb.role is role:
            return Thresholds(
                low=band.low if rb.low is None else rb.low,
                high=band.high if rb.high is None else rb.high,
            )
    return band


@dataclass(frozen=True, slots=True)
class Severities:
    """Severity of each configurable check (`finite` is always an error)."""

    band: Severity = Severity.error
    drift: Severity = Severity.error
    band_change: Severity = Severity.error
    init: Severity = Severity.error
    mtp: Severity = Severity.error
    anomaly: Severity = Severity.warn
    """A layer that left its peers is reported; it fails the job only when set to error."""
    final_band: Severity = Severity.warn
    """The band check on the final norm of a model WITHOUT MTP (with MTP: `band`): the
    playbook's band is about what the final norm sends the MTP modules (seed 000), and healthy
    released models sit outside it (SmolLM2-135M 1.83, Gemma-3-270M 54.1): reported, gated
    only when set to error."""
    zero_channels: Severity = Severity.error
    offset: Severity = Severity.error
    identical: Severity = Severity.error
    mtp_declared: Severity = Severity.error
    norm_dtype: Severity = Severity.error


@dataclass(frozen=True, slots=True)
class Policy:
    """The effective policy of a check run: defaults < config file < flags."""

    low: float = DEFAULT_LOW
    high: float = DEFAULT_HIGH
    scope: Selector = DEFAULT
    """Norms the band, drift and band_change checks look at (JSON: its text)."""
    max_drift: float | None = None
    """Largest allowed ‖g - g_base‖/‖g_base‖; None: no drift limit (band changes still checked)."""
    expect_init: bool = False
    expect_mtp: int | None = None
    parametrization: Parametrization | None = None
    severity: Severities = field(default_factory=Severities)
    roles: tuple[RoleBand, ...] = ()
    anomaly: PeerRule = field(default_factory=PeerRule)
    """When a norm counts as having left its peers (`normscope.peers`)."""
    max_unknown: float = 0.1
    """Largest share of norms normscope may fail to understand (role unknown by no rule)
    before `check` refuses to judge the checkpoint (exit 2), unless `allow_unknown`."""
    allow_unknown: bool = False
    """Judge what could be read even when the architecture was not understood."""
    origin: tuple[str, ...] = ("defaults",)
    """Where the settings came from, in precedence order."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One evaluated (check, subject): passed, or a violation with its evidence."""

    check: CheckName
    subject: str
    """The tensor name, or `model` for checks about the whole checkpoint."""
    passed: bool
    severity: Severity
    value: float | None
    """The measured number (ratio, relative change, max |g - 1|, MTP depth)."""
    limit: str
    """The threshold it was held to, in words: `[0.4, 1.8]`, `<= 0.15`, `== 1`."""
    message: str
    fix: str | None
    """What the playbook suggests doing, for violations."""


@dataclass(frozen=True, slots=True, repr=False)
class CheckReport(Notebook):
    """The result of `normscope check`."""

    schema_version: int
    normscope_version: str
    source: str
    baseline: str | None
    policy: Policy
    findings: tuple[Finding, ...]
    errors: int
    """Failed findings of severity error."""
    warned: int
    """Failed findings of severity warn."""
    verdict: Verdict
    warnings: tuple[str, ...] = ()

    def to_frame(self) -> pandas.DataFrame:
        """Return one row per finding (Finding fields)."""
        from normscope.frames import rows_frame

        return rows_frame(self.findings, Finding)

    def _facts(self) -> list[tuple[str, Any]]:
        return [
            ("source", self.source),
            ("baseline", self.baseline),
            ("verdict", self.verdict.value),
            ("findings", len(self.findings)),
            ("errors", self.errors),
            ("warned", self.warned),
            ("warnings", len(self.warnings)),
        ]

    def _table(self) -> tuple[tuple[str, ...], list[Row], str]:
        order = sorted(self.findings, key=lambda f: (f.passed, f.severity is not Severity.error))
        columns = ("check", "subject", "passed", "severity", "value", "limit", "message")
        cells: list[Row] = [
            (f.check, f.subject, f.passed, f.severity, f.value, f.limit, f.message) for f in order
        ]
        return columns, cells, "findings, failures first"
