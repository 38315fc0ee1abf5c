"""`normscope check`: every check of the policy evaluated on one scan (and its baseline) into
`Finding`s and a verdict. A checkpoint whose architecture was not understood, or whose band check
would look at nothing, is refused (exit 2) rather than passed."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from normscope.advice import anomaly_advice, band_advice
from normscope.enums import (
    DEFAULT_SCOPE,
    Band,
    CheckName,
    Module,
    Parametrization,
    Role,
    Severity,
    Verdict,
)
from normscope.errors import ArchError, NotJudged
from normscope.faults import fault_findings, mtp_finding
from normscope.gates.verdict import SCOPE_HINT, empty_scope
from normscope.peers import peer_key
from normscope.scanner import Measured
from normscope.schema import (
    SCHEMA_VERSION,
    CheckReport,
    Finding,
    NormStats,
    Policy,
)
from normscope.version import __version__


def _label(n: NormStats) -> str:
    if n.module is Module.mtp:
        return f"MTP {n.mtp_depth} {n.role.value}"
    if n.role is Role.final:
        return "final norm"
    return n.role.value + (f" (layer {n.layer})" if n.layer is not None else "")


def _fix(n: NormStats, band: Band, has_mtp: bool) -> str | None:
    """The advice that fits this norm, its band and the model (`normscope.advice`)."""
    advice = band_advice(n, band, has_mtp=has_mtp)
    return None if advice is None else advice.text


def require_understood(measured: Measured, policy: Policy) -> None:
    """Fail closed: refuse to judge a checkpoint whose architecture normscope did not read.

    Raises ArchError (exit 2) when the architecture has a final norm but none was identified, or
    when more than `policy.max_unknown` of the norms matched no rule — unless `allow_unknown`.
    """
    if policy.allow_unknown:
        return
    norms = measured.report.norms
    unread = [n for n in measured.unread if n not in measured.undecoded]
    no_final = measured.missing_final
    share = len(unread) / len(norms) if norms else 1.0
    if not no_final and share <= policy.max_unknown:
        return
    reasons = []
    if no_final:
        reasons.append("no final norm was identified")
    if share > policy.max_unknown:
        example = ", ".join(f"'{n}'" for n in unread[:3]) + (" ..." if len(unread) > 3 else "")
        reasons.append(
            f"{len(unread)} of {len(norms)} norms ({100 * share:.0f}%, limit "
            f"{100 * policy.max_unknown:g}%) match no architecture rule: {example}"
        )
    raise ArchError(
        f"normscope did not understand this checkpoint's architecture "
        f"({measured.report.model.model_type or 'no model_type'}, rules: "
        f"{measured.report.model.family}): {'; '.join(reasons)} ({measured.report.source})",
        hint="teach normscope the names with --rules FILE.toml (README: adding an "
        "architecture), or pass --allow-unknown to judge only what was read",
    )


def _require_scope(measured: Measured, policy: Policy) -> str | None:
    """A passing check whose band check looked at nothing is no pass: NotJudged (exit 2) when
    the band check's scope holds no norm.

    One exception, said in the report (the warning returned): the default scope (final, MTP) of
    a model whose architecture rules say it has no final norm (post-LN encoders) and that has no
    MTP holds nothing by construction, not by a name normscope missed; the other checks judged
    its norms. An explicit `--scope` that holds nothing still exits 2.
    """
    report, scope = measured.report, policy.scope
    unjudged = empty_scope(len(scope.matching(report.norms)), scope, "the band check")
    if not unjudged:
        return None
    by_design = (
        measured.final_less
        and scope.text == DEFAULT_SCOPE
        and report.model.mtp_depth == 0
        and measured.declared_mtp == 0
        and bool(report.norms)
    )
    if by_design:
        return (
            f"band: nothing to gate in the default scope '{scope.text}': the {report.model.family} "
            f"rules say this architecture has no final norm (post-LN: each LayerNorm normalises "
            f"the residual stream) and it has no MTP; the other checks judged its "
            f"{len(report.norms)} norms (--scope all gates every norm by the playbook band)"
        )
    raise NotJudged(
        f"{unjudged[0]} ({report.source})", hint=SCOPE_HINT + ", or set severity.band = 'off'"
    )


def run_checks(measured: Measured, policy: Policy, baseline: Measured | None = None) -> CheckReport:
    """Evaluate every check of `policy` on one scan (and its baseline).

    Raises ArchError when the architecture was not understood (`require_understood`),
    NotJudged when the band check's scope holds no norm.
    """
    require_understood(measured, policy)
    report = measured.report
    sev = policy.severity
    has_mtp = report.model.mtp_depth > 0
    findings = _finite_findings(report.norms) + _decodable_findings(measured)
    if sev.band is not Severity.off:
        findings += _band_findings(report.norms, policy, has_mtp)
    if sev.anomaly is not Severity.off:
        findings += _anomaly_findings(report.norms, sev.anomaly)
    if baseline is not None:
        findings += _drift_findings(measured, baseline, policy)
    if policy.expect_init and sev.init is not Severity.off:
        findings += [_init_finding(n, measured.gains[n.name], sev.init) for n in report.norms]
    if policy.expect_mtp is not None and sev.mtp is not Severity.off:
        findings.append(
            mtp_finding(report.norms, report.model.mtp_depth, policy.expect_mtp, sev.mtp)
        )
    findings += fault_findings(measured, policy)

    failed = [f for f in findings if not f.passed]
    errors = sum(1 for f in failed if f.severity is Severity.error)
    warned = sum(1 for f in failed if f.severity is Severity.warn)
    warnings = list(report.warnings)
    if not errors and sev.band is not Severity.off:  # a failing check was judged: exit 1
        unjudged = _require_scope(measured, policy)
        warnings += [unjudged] if unjudged else []
    if baseline is not None:
        warnings += [f"baseline: {w}" for w in baseline.report.warnings]
    return CheckReport(
        schema_version=SCHEMA_VERSION,
        normscope_version=__version__,
        source=report.source,
        baseline=baseline.report.source if baseline is not None else None,
        policy=policy,
        findings=tuple(findings),
        errors=errors,
        warned=warned,
        verdict=Verdict.failed if errors else Verdict.passed,
        warnings=tuple(warnings),
    )


def _finite_findings(norms: Sequence[NormStats]) -> list[Finding]:
    out = []
    for n in norms:
        finite = n.band is not Band.nonfinite
        out.append(
            Finding(
                check=CheckName.finite,
                subject=n.name,
                passed=finite,
                severity=Severity.error,
                value=None,
                limit="finite",
                message="finite" if finite else f"{_label(n)} holds NaN or Inf",
                fix=None if finite else _fix(n, Band.nonfinite, has_mtp=False),
            )
        )
    return out


def _decodable_findings(measured: Measured) -> list[Finding]:
    """A norm the gate cannot read must not pass silently, whatever the scope."""
    out = [
        Finding(
            check=CheckName.decodable,
            subject=name,
            passed=False,
            severity=Severity.error,
            value=None,
            limit="decodable",
            message=f"could not be measured: {reason}",
            fix="convert the checkpoint's norm gains to a float dtype (F32, BF16, ...)",
        )
        for name, reason in measured.undecoded.items()
    ]
    if not out:
        out.append(
            Finding(
                check=CheckName.decodable,
                subject="model",
                passed=True,
                severity=Severity.error,
                value=None,
                limit="decodable",
                message=f"all {len(measured.report.norms)} norms measured",
                fix=None,
            )
        )
    return out


def _anomaly_findings(norms: Sequence[NormStats], severity: Severity) -> list[Finding]:
    """One finding per norm with a peer verdict: passed, or it left its peers."""
    groups = Counter(peer_key(n) for n in norms if math.isfinite(n.ratio) and n.ratio > 0)
    out = []
    for n in norms:
        if n.anomaly is None or n.peer_median is None:
            continue
        peers = groups[peer_key(n)] - (1 if math.isfinite(n.ratio) and n.ratio > 0 else 0)
        fold = n.ratio / n.peer_median if n.peer_median else math.inf
        message = f"{_label(n)} ratio {n.ratio:.3f}, peer median {n.peer_median:.3f}"
        out.append(
            Finding(
                check=CheckName.anomaly,
                subject=n.name,
                passed=not n.anomaly,
                severity=severity,
                value=fold,
                limit="peers",
                message=message + (" (left its peers)" if n.anomaly else ""),
                fix=anomaly_advice(n, n.peer_median, peers=peers).text if n.anomaly else None,
            )
        )
    return out


def _band_findings(norms: Sequence[NormStats], policy: Policy, has_mtp: bool) -> list[Finding]:
    from normscope.policy import thresholds_for

    out = []
    for n in policy.scope.matching(norms):
        # The playbook's band guards what the final norm sends the MTP modules: without MTP, the
        # final norm is reported at its own severity (warn), not failed by default.
        no_mtp_final = not has_mtp and n.module is Module.main and n.role is Role.final
        severity = policy.severity.final_band if no_mtp_final else policy.severity.band
        if n.band is Band.nonfinite or severity is Severity.off:
            continue
        t = thresholds_for(policy, n.role)
        band = t.classify(n.ratio)
        ok = not band.out_of_band
        if ok:
            message = f"{_label(n)} ratio {n.ratio:.3f} ({band.value})"
        else:
            side, edge = ("below low", t.low) if band is Band.collapse else ("above high", t.high)
            message = f"{_label(n)} ratio {n.ratio:.3f} is {side} {edge:g} ({band.value})"
            if no_mtp_final:
                message += (
                    "; reported only: the band gates the final norm of models with "
                    "multi-token prediction (severity final_band = error gates it here)"
                )
        out.append(
            Finding(
                check=CheckName.band,
                subject=n.name,
                passed=ok,
                severity=severity,
                value=n.ratio,
                limit=f"[{t.low:g}, {t.high:g}]",
                message=message,
                fix=None if ok else _fix(n, band, has_mtp),
            )
        )
    return out


def _drift_findings(measured: Measured, baseline: Measured, policy: Policy) -> list[Finding]:
    from normscope.compare import diff_measured
    from normscope.policy import thresholds_for

    sev = policy.severity
    result = diff_measured(baseline, measured)
    by_name = {n.name: n for n in measured.report.norms}
    out = []
    for d in policy.scope.matching(result.norms):
        n = by_name[d.name]
        if policy.max_drift is not None and sev.drift is not Severity.off:
            ok = d.rel_change <= policy.max_drift
            out.append(
                Finding(
                    check=CheckName.drift,
                    subject=d.name,
                    passed=ok,
                    severity=sev.drift,
                    value=d.rel_change,
                    limit=f"<= {policy.max_drift:g}",
                    message=f"{_label(n)} moved {100 * d.rel_change:.1f}% since the baseline"
                    + ("" if ok else f" (limit {100 * policy.max_drift:g}%)"),
                    fix=None
                    if ok
                    else "inspect the channels that moved: normscope diff BASELINE CKPT",
                )
            )
        if sev.band_change is not Severity.off:
            t = thresholds_for(policy, d.role)
            before, after = t.classify(d.ratio_a), t.classify(d.ratio_b)
            ok = before is after
            if ok:
                fix = None
            elif after.out_of_band:
                fix = _fix(n, after, measured.report.model.mtp_depth > 0)
            else:
                fix = "a band change inside the act band: watch the trend (normscope series)"
            change = "" if ok else f" -> {after.value} (ratio {d.ratio_a:.3f} -> {d.ratio_b:.3f})"
            out.append(
                Finding(
                    check=CheckName.band_change,
                    subject=d.name,
                    passed=ok,
                    severity=sev.band_change,
                    value=d.ratio_b,
                    limit=f"== {before.value}",
                    message=f"{_label(n)} band {before.value}{change}",
                    fix=fix,
                )
            )
    return out


def _init_finding(n: NormStats, gain: np.ndarray, severity: Severity) -> Finding:
    if n.identity:
        return Finding(
            check=CheckName.init,
            subject=n.name,
            passed=True,
            severity=severity,
            value=0.0,
            limit="== identity",
            message=f"{_label(n)} is the identity",
            fix=None,
        )
    with np.errstate(all="ignore"):
        deviation = np.abs(gain - 1.0)
    worst = int(np.nanargmax(deviation)) if np.isfinite(deviation).any() else 0
    value = float(deviation[worst])
    bias = "" if n.bias_abs_max in (None, 0.0) else f"; bias max |b| = {n.bias_abs_max:.3g}"
    stored = "1 + w" if n.parametrization is Parametrization.offset else "w"
    return Finding(
        check=CheckName.init,
        subject=n.name,
        passed=False,
        severity=severity,
        value=value,
        limit="== identity",
        message=f"{_label(n)} is not the identity: max |g - 1| = {value:.3g} at channel "
        f"{worst}{bias}",
        fix=f"at step 0 every effective gain ({stored}) must be exactly 1 and every bias 0: "
        "check the init code, or whether this checkpoint was saved after an optimizer step",
    )
