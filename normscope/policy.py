"""`normscope check`: the policy (defaults < config file < flags) and the checks it runs.

Configuration lives in `[tool.normscope]` of the nearest `pyproject.toml` (searched from the
current directory upward) or in a TOML file given with `--config` (its `[tool.normscope]` table,
or its top level). Every key is validated: an unknown key or a bad value is a ConfigError naming
the key, never ignored.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from normscope import __version__
from normscope.compare import diff_measured
from normscope.errors import ConfigError
from normscope.scanner import Measured
from normscope.schema import (
    SCHEMA_VERSION,
    Band,
    CheckName,
    CheckReport,
    Finding,
    Module,
    NormStats,
    Parametrization,
    Policy,
    Role,
    RoleBand,
    Severities,
    Severity,
    Thresholds,
)
from normscope.scope import parse_scope

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

_KEYS = {
    "low",
    "high",
    "scope",
    "max_drift",
    "expect_init",
    "expect_mtp",
    "parametrization",
    "severity",
    "roles",
}


def find_pyproject(start: Path) -> Path | None:
    """The nearest pyproject.toml with a [tool.normscope] table, from `start` upward."""
    for directory in (start, *start.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            table = _tool_table(_read_toml(candidate), candidate, required=False)
            if table is not None:
                return candidate
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config: {exc.strerror} ({path})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc} ({path})") from None


def _tool_table(data: dict[str, Any], path: Path, required: bool) -> dict[str, Any] | None:
    tool = data.get("tool")
    if isinstance(tool, dict) and "normscope" in tool:
        table = tool["normscope"]
        if not isinstance(table, dict):
            raise ConfigError(f"[tool.normscope] is not a table ({path})")
        return table
    if required:
        # A dedicated normscope file may hold the keys at its top level.
        return {k: v for k, v in data.items() if k != "tool"}
    return None


def _number(key: str, value: Any, where: str, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{key} must be a number, not {value!r} ({where})")
    if value < minimum:
        raise ConfigError(f"{key} must be >= {minimum}, not {value!r} ({where})")
    return float(value)


def _severity(key: str, value: Any, where: str) -> Severity:
    try:
        return Severity(value)
    except ValueError:
        raise ConfigError(
            f"{key} must be one of error, warn, off, not {value!r} ({where})"
        ) from None


def _apply(policy: Policy, table: Mapping[str, Any], where: str, prefix: str) -> Policy:
    """Return `policy` updated with the validated keys of one config table."""
    changes: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if key not in _KEYS:
            raise ConfigError(
                f"unknown key '{name}' ({where})", hint=f"known keys: {', '.join(sorted(_KEYS))}"
            )
        if key in ("low", "high") or key == "max_drift":
            changes[key] = _number(name, value, where)
        elif key == "scope":
            if isinstance(value, list):
                value = ",".join(str(v) for v in value)
            if not isinstance(value, str):
                raise ConfigError(f"{name} must be a string or a list ({where})")
            parse_scope(value)
            changes[key] = value
        elif key == "expect_init":
            if not isinstance(value, bool):
                raise ConfigError(f"{name} must be true or false, not {value!r} ({where})")
            changes[key] = value
        elif key == "expect_mtp":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be a whole number >= 0, not {value!r} ({where})")
            changes[key] = value
        elif key == "parametrization":
            try:
                changes[key] = Parametrization(value)
            except ValueError:
                raise ConfigError(
                    f"{name} must be standard or offset, not {value!r} ({where})"
                ) from None
        elif key == "severity":
            changes[key] = _severities(policy.severity, value, where, name)
        elif key == "roles":
            changes[key] = _roles(value, where, name)
    return dataclasses.replace(policy, **changes)


def _severities(current: Severities, value: Any, where: str, name: str) -> Severities:
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a table of check = severity ({where})")
    known = {f.name for f in dataclasses.fields(Severities)}
    changes = {}
    for check, level in value.items():
        if check not in known:
            raise ConfigError(
                f"unknown check '{name}.{check}' ({where})",
                hint=f"checks with a severity: {', '.join(sorted(known))}",
            )
        changes[check] = _severity(f"{name}.{check}", level, where)
    return dataclasses.replace(current, **changes)


def _roles(value: Any, where: str, name: str) -> tuple[RoleBand, ...]:
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a table of role = {{low, high}} ({where})")
    out = []
    for role_name, band in value.items():
        try:
            role = Role(role_name)
        except ValueError:
            raise ConfigError(f"unknown role '{name}.{role_name}' ({where})") from None
        if not isinstance(band, dict) or not set(band) <= {"low", "high"}:
            raise ConfigError(f"{name}.{role_name} takes only low and high ({where})")
        # A missing edge inherits the policy's (so `high = 3.0` or --high still applies).
        low = _number(f"{name}.{role_name}.low", band["low"], where) if "low" in band else None
        high = _number(f"{name}.{role_name}.high", band["high"], where) if "high" in band else None
        out.append(RoleBand(role, low, high))
    return tuple(out)


def load_policy(
    config: Path | None = None,
    flags: Mapping[str, Any] | None = None,
    start: Path | None = None,
) -> Policy:
    """Build the effective policy: defaults, then the config file, then explicit flags."""
    policy = Policy()
    origin = ["defaults"]
    if config is not None:
        if not config.is_file():
            raise ConfigError(f"config file not found ({config})")
        data = _read_toml(config)
        table = _tool_table(data, config, required=True) or {}
        prefix = "tool.normscope." if "tool" in data else ""
        policy = _apply(policy, table, str(config), prefix)
        origin.append(str(config))
    else:
        found = find_pyproject(start or Path.cwd())
        if found is not None:
            table = _tool_table(_read_toml(found), found, required=False) or {}
            policy = _apply(policy, table, str(found), "tool.normscope.")
            origin.append(str(found))
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    if given:
        severity = given.pop("severity", None)
        policy = _apply(policy, given, "flags", "--")
        if severity:
            policy = dataclasses.replace(
                policy, severity=_severities(policy.severity, severity, "flags", "--severity")
            )
        origin.append("flags")
    if not 0 < policy.low < policy.high:
        raise ConfigError(f"need 0 < low < high, got low={policy.low}, high={policy.high}")
    for rb in policy.roles:
        t = thresholds_for(policy, rb.role)
        if not 0 < t.low < t.high:
            raise ConfigError(
                f"roles.{rb.role.value} needs 0 < low < high, got low={t.low:g}, high={t.high:g}"
            )
    return dataclasses.replace(policy, origin=tuple(origin))


def policy_toml(policy: Policy) -> str:
    """The effective policy as a `[tool.normscope]` TOML table (for --show-config).

    NOTE: written by hand: the standard library reads TOML but does not write it, and this
    table is flat enough not to need a dependency for it.
    """

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return repr(v)

    lines = [f"# effective policy (from: {' < '.join(policy.origin)})", "[tool.normscope]"]
    lines.append(f"low = {value(policy.low)}")
    lines.append(f"high = {value(policy.high)}")
    lines.append(f"scope = {value(policy.scope)}")
    if policy.max_drift is not None:
        lines.append(f"max_drift = {value(policy.max_drift)}")
    lines.append(f"expect_init = {value(policy.expect_init)}")
    if policy.expect_mtp is not None:
        lines.append(f"expect_mtp = {policy.expect_mtp}")
    if policy.parametrization is not None:
        lines.append(f"parametrization = {value(policy.parametrization.value)}")
    lines += ["", "[tool.normscope.severity]"]
    for f in dataclasses.fields(Severities):
        lines.append(f"{f.name} = {value(getattr(policy.severity, f.name).value)}")
    for rb in policy.roles:
        lines += ["", f"[tool.normscope.roles.{rb.role.value}]"]
        edges = (("low", rb.low), ("high", rb.high))
        lines += [f"{edge} = {value(v)}" for edge, v in edges if v is not None]
    return "\n".join(lines) + "\n"


# --- the checks ----------------------------------------------------------------------------------

_NONFINITE_FIX = "training diverged or the file is corrupt: resume from the last finite checkpoint"


def _band_fix(n: NormStats, band: Band) -> str:
    """The playbook's advice (seed 000, section 06) for a norm outside its band."""
    gated = n.module is Module.mtp or n.role is Role.final
    if not gated:
        return (
            "compare with earlier checkpoints (normscope series) before acting: pre-sublayer "
            "input norms can sit far from 1 because the next linear map absorbs their scale"
        )
    if band is Band.collapse:
        advice = "lower the MTP loss weight (mtp_loss_scaling_factor, e.g. 0.3 -> 0.1)"
        if n.role is Role.final:
            advice += (
                f"; the final norm gates the MTP gradient into the trunk, which now arrives at "
                f"about {n.ratio:.2f}x its intended size"
            )
        return advice
    return (
        "add an RMSNorm at the input of each MTP module (NormFormer style) to cap the scale "
        "entering the MTP projection; see the outlier channels in normscope scan"
    )


def thresholds_for(policy: Policy, role: Role) -> Thresholds:
    """The band of one role: its override in `roles`, edges it leaves unset from the policy."""
    for rb in policy.roles:
        if rb.role is role:
            return Thresholds(
                low=policy.low if rb.low is None else rb.low,
                high=policy.high if rb.high is None else rb.high,
            )
    return Thresholds(low=policy.low, high=policy.high)


def _label(n: NormStats) -> str:
    if n.module is Module.mtp:
        return f"MTP {n.mtp_depth} {n.role.value}"
    if n.role is Role.final:
        return "final norm"
    return n.role.value + (f" (layer {n.layer})" if n.layer is not None else "")


def run_checks(measured: Measured, policy: Policy, baseline: Measured | None = None) -> CheckReport:
    """Evaluate every check of `policy` on one scan (and its baseline)."""
    report = measured.report
    selector = parse_scope(policy.scope)
    sev = policy.severity
    findings: list[Finding] = []

    for n in report.norms:
        finite = n.band is not Band.nonfinite
        findings.append(
            Finding(
                CheckName.finite,
                n.name,
                finite,
                Severity.error,
                None,
                "finite",
                "finite" if finite else f"{_label(n)} holds NaN or Inf",
                None if finite else _NONFINITE_FIX,
            )
        )

    # A norm the gate cannot read must not pass silently, whatever the scope.
    for name, reason in measured.undecoded.items():
        findings.append(
            Finding(
                CheckName.decodable,
                name,
                False,
                Severity.error,
                None,
                "decodable",
                f"could not be measured: {reason}",
                "convert the checkpoint's norm gains to a float dtype (F32, BF16, ...)",
            )
        )
    if not measured.undecoded:
        findings.append(
            Finding(
                CheckName.decodable,
                "model",
                True,
                Severity.error,
                None,
                "decodable",
                f"all {len(report.norms)} norms measured",
                None,
            )
        )

    if sev.band is not Severity.off:
        for n in report.norms:
            if not selector(n) or n.band is Band.nonfinite:
                continue
            t = thresholds_for(policy, n.role)
            band = t.classify(n.ratio)
            ok = not band.out_of_band
            side = "below low" if band is Band.collapse else "above high"
            findings.append(
                Finding(
                    CheckName.band,
                    n.name,
                    ok,
                    sev.band,
                    n.ratio,
                    f"[{t.low:g}, {t.high:g}]",
                    f"{_label(n)} ratio {n.ratio:.3f} ({band.value})"
                    if ok
                    else f"{_label(n)} ratio {n.ratio:.3f} is {side} "
                    f"{t.low if band is Band.collapse else t.high:g} ({band.value})",
                    None if ok else _band_fix(n, band),
                )
            )

    if baseline is not None:
        findings += _drift_findings(measured, baseline, policy)

    if policy.expect_init and sev.init is not Severity.off:
        for n in report.norms:
            findings.append(_init_finding(n, measured.gains[n.name], sev.init))

    if policy.expect_mtp is not None and sev.mtp is not Severity.off:
        findings.append(
            _mtp_finding(report.norms, report.model.mtp_depth, policy.expect_mtp, sev.mtp)
        )

    failed = [f for f in findings if not f.passed]
    errors = sum(1 for f in failed if f.severity is Severity.error)
    warned = sum(1 for f in failed if f.severity is Severity.warn)
    warnings = list(report.warnings)
    if sev.band is not Severity.off and not any(selector(n) for n in report.norms):
        # A gate that looks at nothing must not pass silently.
        warnings.append(
            f"no norm matches the scope '{selector.text}': the band check looked at nothing "
            "(this model may have no final or MTP norm identified; try --scope all)"
        )
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
        verdict="fail" if errors else "pass",
        warnings=tuple(warnings),
    )


def _drift_findings(measured: Measured, baseline: Measured, policy: Policy) -> list[Finding]:
    sev = policy.severity
    selector = parse_scope(policy.scope)
    result = diff_measured(baseline, measured)
    by_name = {n.name: n for n in measured.report.norms}
    out = []
    for d in result.norms:
        if not selector(d):
            continue
        n = by_name[d.name]
        if policy.max_drift is not None and sev.drift is not Severity.off:
            ok = d.rel_change <= policy.max_drift
            out.append(
                Finding(
                    CheckName.drift,
                    d.name,
                    ok,
                    sev.drift,
                    d.rel_change,
                    f"<= {policy.max_drift:g}",
                    f"{_label(n)} moved {100 * d.rel_change:.1f}% since the baseline"
                    + ("" if ok else f" (limit {100 * policy.max_drift:g}%)"),
                    None if ok else "inspect the channels that moved: normscope diff BASELINE CKPT",
                )
            )
        if sev.band_change is not Severity.off:
            t = thresholds_for(policy, d.role)
            before, after = t.classify(d.ratio_a), t.classify(d.ratio_b)
            ok = before is after
            out.append(
                Finding(
                    CheckName.band_change,
                    d.name,
                    ok,
                    sev.band_change,
                    d.ratio_b,
                    f"== {before.value}",
                    f"{_label(n)} band {before.value}"
                    + (
                        ""
                        if ok
                        else f" -> {after.value} (ratio {d.ratio_a:.3f} -> {d.ratio_b:.3f})"
                    ),
                    None
                    if ok
                    else _band_fix(n, after)
                    if after.out_of_band
                    else "a band change inside the act band: watch the trend (normscope series)",
                )
            )
    return out


def _init_finding(n: NormStats, gain: np.ndarray, severity: Severity) -> Finding:
    if n.identity:
        return Finding(
            CheckName.init,
            n.name,
            True,
            severity,
            0.0,
            "== identity",
            f"{_label(n)} is the identity",
            None,
        )
    with np.errstate(all="ignore"):
        deviation = np.abs(gain - 1.0)
    worst = int(np.nanargmax(deviation)) if np.isfinite(deviation).any() else 0
    value = float(deviation[worst])
    bias = "" if n.bias_abs_max in (None, 0.0) else f"; bias max |b| = {n.bias_abs_max:.3g}"
    stored = "1 + w" if n.parametrization is Parametrization.offset else "w"
    return Finding(
        CheckName.init,
        n.name,
        False,
        severity,
        value,
        "== identity",
        f"{_label(n)} is not the identity: max |g - 1| = {value:.3g} at channel {worst}{bias}",
        f"at step 0 every effective gain ({stored}) must be exactly 1 and every bias 0: check "
        "the init code, or whether this checkpoint was saved after an optimizer step",
    )


_MTP_ROLES = (Role.mtp_embedding, Role.mtp_hidden, Role.mtp_final)


def _mtp_finding(
    norms: tuple[NormStats, ...], depth: int, expected: int, severity: Severity
) -> Finding:
    missing = []
    for k in range(1, expected + 1):
        have = {n.role for n in norms if n.module is Module.mtp and n.mtp_depth == k}
        # Qwen3-Next/3.5 share one set of embedding/hidden/final norms across depths.
        shared = {n.role for n in norms if n.module is Module.mtp and n.mtp_depth == 1}
        lacking = [r.value for r in _MTP_ROLES if r not in have and r not in shared]
        if lacking or not have:
            missing.append(f"depth {k}: " + (", ".join(lacking) if lacking else "no norms"))
    ok = depth == expected and not missing
    message = f"MTP depth {depth}" + ("" if ok else f", expected {expected}")
    if missing:
        message += " (missing " + "; ".join(missing) + ")"
    return Finding(
        CheckName.mtp,
        "model",
        ok,
        severity,
        float(depth),
        f"== {expected}",
        message,
        None
        if ok
        else "the MTP weights are not in this checkpoint: Hugging Face re-saves drop "
        "them (_keys_to_ignore_on_load_unexpected); export from the training framework instead",
    )
