"""The policy of every command, from defaults < config file < flags (the checks: `gates.py`).

Configuration lives in `[tool.normscope]` of the nearest `pyproject.toml` or in a TOML file given
with `--config` (found and read once by `arch.project`). Every key is validated: an unknown key
or a bad value is a ConfigError naming the key, never ignored. The bands, roles, scope,
parametrization and anomaly rule apply to every command (`normscope.settings`); the checks'
knobs (max_drift, expect_*, severity, max_unknown) to `check`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from normscope.arch.project import ProjectConfig, read_project_config
from normscope.enums import Parametrization, Role, Severity
from normscope.errors import ConfigError, UsageError
from normscope.schema import PeerRule, Policy, RoleBand, Severities, Thresholds
from normscope.schema.check import role_thresholds
from normscope.scope import parse_scope

# The keys of [tool.normscope] besides `rules` (read by `arch` for every command).
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
    "anomaly",
    "max_unknown",
    "allow_unknown",
}
_SHARED_KEYS = {"rules"}
"""Keys of the same table that other parts of normscope read (the architecture rules)."""


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
        if key in _SHARED_KEYS:
            continue
        if key not in _KEYS:
            raise ConfigError(
                f"unknown key '{name}' ({where})", hint=f"known keys: {', '.join(sorted(_KEYS))}"
            )
        changes[key] = _VALIDATE[key](policy, name, value, where)
    return dataclasses.replace(policy, **changes)


def _scope(policy: Policy, name: str, value: Any, where: str) -> Any:
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string or a list ({where})")
    return parse_scope(value)


def _flag(policy: Policy, name: str, value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, not {value!r} ({where})")
    return value


def _count(policy: Policy, name: str, value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be a whole number >= 0, not {value!r} ({where})")
    return value


def _parametrization(policy: Policy, name: str, value: Any, where: str) -> Parametrization:
    try:
        return Parametrization(value)
    except ValueError:
        raise ConfigError(f"{name} must be standard or offset, not {value!r} ({where})") from None


def _share(policy: Policy, name: str, value: Any, where: str) -> float:
    share = _number(name, value, where)
    if share > 1:
        raise ConfigError(f"{name} is a share of the norms: at most 1, not {value!r} ({where})")
    return share


def _anomaly(policy: Policy, name: str, value: Any, where: str) -> PeerRule:
    """`[tool.normscope.anomaly]`: factor, mad_k, min_factor, min_peers (`normscope.peers`)."""
    known = {f.name for f in dataclasses.fields(PeerRule)}
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a table of {', '.join(sorted(known))} ({where})")
    changes: dict[str, Any] = {}
    for key, item in value.items():
        if key not in known:
            raise ConfigError(
                f"unknown key '{name}.{key}' ({where})", hint=f"known: {', '.join(sorted(known))}"
            )
        if key in ("min_peers", "window"):
            changes[key] = _count(policy, f"{name}.{key}", item, where)
        else:
            changes[key] = _number(f"{name}.{key}", item, where)
    try:
        return dataclasses.replace(policy.anomaly, **changes)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc} ({where})") from None


_VALIDATE: dict[str, Any] = {
    "low": lambda policy, name, value, where: _number(name, value, where),
    "high": lambda policy, name, value, where: _number(name, value, where),
    "max_drift": lambda policy, name, value, where: _number(name, value, where),
    "scope": _scope,
    "expect_init": _flag,
    "expect_mtp": _count,
    "parametrization": _parametrization,
    "severity": lambda policy, name, value, where: _severities(policy.severity, value, where, name),
    "roles": lambda policy, name, value, where: _roles(value, where, name),
    "anomaly": _anomaly,
    "max_unknown": _share,
    "allow_unknown": _flag,
}


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


@dataclass(frozen=True, slots=True)
class PolicyOverrides:
    """What the command line sets (None: not given, the config file or default stands)."""

    low: float | None = None
    high: float | None = None
    scope: str | None = None
    max_drift: float | None = None
    expect_init: bool | None = None
    expect_mtp: int | None = None
    parametrization: Parametrization | None = None
    severity: Mapping[str, str] | None = None
    """CHECK -> error|warn|off, from repeated `--severity CHECK=LEVEL`."""
    allow_unknown: bool | None = None

    def given(self) -> dict[str, Any]:
        """The settings given, as config keys and values."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or (f.name == "severity" and not value):
                continue
            out[f.name] = value.value if isinstance(value, Parametrization) else value
        return out


def parse_severities(items: list[str] | None) -> dict[str, str]:
    """`CHECK=LEVEL` items (repeatable `--severity`) as a map; UsageError for other shapes."""
    out: dict[str, str] = {}
    for item in items or []:
        check, sep, level = item.partition("=")
        if not sep:
            raise UsageError(f"expected CHECK=LEVEL, got '{item}'", param="--severity")
        out[check.strip()] = level.strip()
    return out


def load_policy(
    config: Path | None = None,
    overrides: PolicyOverrides | None = None,
    start: Path | None = None,
) -> Policy:
    """Build the effective policy: defaults, then the config file, then explicit flags."""
    return policy_from(read_project_config(config, start), overrides)


def policy_from(
    project: ProjectConfig | None, overrides: PolicyOverrides | None = None, check: bool = True
) -> Policy:
    """The effective policy of one read of the configuration (`arch.project`) and the flags;
    `check`: refuse bands with low >= high (ConfigError)."""
    policy = Policy()
    origin = ["defaults"]
    if project is not None:
        policy = _apply(policy, project.table, str(project.path), project.prefix)
        origin.append(str(project.path))
    given = (overrides or PolicyOverrides()).given()
    if given:
        severity = given.pop("severity", None)
        policy = _apply(policy, given, "flags", "--")
        if severity:
            policy = dataclasses.replace(
                policy, severity=_severities(policy.severity, severity, "flags", "--severity")
            )
        origin.append("flags")
    if check:
        _check_bands(policy)
    return dataclasses.replace(policy, origin=tuple(origin))


def _check_bands(policy: Policy) -> None:
    if not 0 < policy.low < policy.high:
        raise ConfigError(f"need 0 < low < high, got low={policy.low}, high={policy.high}")
    for rb in policy.roles:
        t = thresholds_for(policy, rb.role)
        if not 0 < t.low < t.high:
            raise ConfigError(
                f"roles.{rb.role.value} needs 0 < low < high, got low={t.low:g}, high={t.high:g}"
            )


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
    lines.append(f"scope = {value(policy.scope.text)}")
    if policy.max_drift is not None:
        lines.append(f"max_drift = {value(policy.max_drift)}")
    lines.append(f"expect_init = {value(policy.expect_init)}")
    if policy.expect_mtp is not None:
        lines.append(f"expect_mtp = {policy.expect_mtp}")
    if policy.parametrization is not None:
        lines.append(f"parametrization = {value(policy.parametrization.value)}")
    lines.append(f"max_unknown = {value(policy.max_unknown)}")
    lines.append(f"allow_unknown = {value(policy.allow_unknown)}")
    lines += ["", "[tool.normscope.anomaly]"]
    for f in dataclasses.fields(PeerRule):
        lines.append(f"{f.name} = {value(getattr(policy.anomaly, f.name))}")
    lines += ["", "[tool.normscope.severity]"]
    for f in dataclasses.fields(Severities):
        lines.append(f"{f.name} = {value(getattr(policy.severity, f.name).value)}")
    for rb in policy.roles:
        lines += ["", f"[tool.normscope.roles.{rb.role.value}]"]
        edges = (("low", rb.low), ("high", rb.high))
        lines += [f"{edge} = {value(v)}" for edge, v in edges if v is not None]
    return "\n".join(lines) + "\n"


def thresholds_for(policy: Policy, role: Role) -> Thresholds:
    """The band of one role: its override in `roles`, edges it leaves unset from the policy."""
    return role_thresholds(Thresholds(low=policy.low, high=policy.high), policy.roles, role)
