"""The one options builder: what a command or an API call was told, and the project's
configuration, into the options of every command.

Precedence: defaults < `[tool.normscope]` of the nearest pyproject.toml, or `--config FILE` (read
once, `arch.project`) < the flags (API keywords). Every command applies the same configuration:
the bands (`low`, `high`, `[roles]`), `scope`, `parametrization`, the anomaly rule and the
architecture rules (`[rules]`, `--rules`); `check` also its knobs (drift, init, MTP, severity,
unknown). Side channels are fields too: `--no-cache` (or `NORMSCOPE_NO_CACHE`) and `-v` (or
`NORMSCOPE_VERBOSE`) travel in `ScanOptions`, which pickles to worker processes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from normscope.arch.project import ProjectConfig, read_project_config, user_rules
from normscope.enums import Executor, Order, Parametrization
from normscope.errors import UsageError
from normscope.policy import PolicyOverrides, policy_from, policy_toml
from normscope.scanner import ScanOptions
from normscope.schema import Policy, Thresholds

if TYPE_CHECKING:
    from normscope.fold import FoldOptions
    from normscope.series import SeriesOptions

NO_CACHE_ENV = "NORMSCOPE_NO_CACHE"
"""Set (to anything but 0): do not reuse local layouts' cached headers, as `--no-cache`."""
VERBOSE_ENV = "NORMSCOPE_VERBOSE"
"""1/true/yes/on: let huggingface_hub's own log lines through, as `-v`."""


@dataclass(frozen=True, slots=True)
class Flags:
    """What the caller said, as a flag or an API keyword; None: not said (the configuration or
    the default stands)."""

    low: float | None = None
    high: float | None = None
    scope: str | None = None
    parametrization: Parametrization | str | None = None
    rules: Path | None = None
    """`--rules FILE.toml`, tried before `[tool.normscope.rules]` and the built-in rules."""
    config: Path | None = None
    """`--config FILE`; None: `[tool.normscope]` of the nearest pyproject.toml."""
    max_drift: float | None = None
    expect_init: bool | None = None
    expect_mtp: int | None = None
    severity: Mapping[str, str] | None = None
    allow_unknown: bool | None = None
    no_cache: bool | None = None
    """None: `$NORMSCOPE_NO_CACHE` decides."""
    verbose: bool | None = None
    """None: `$NORMSCOPE_VERBOSE` decides."""
    token: str | None = field(default=None, repr=False)
    """`--token` for Hub sources; None: huggingface_hub's own (HF_TOKEN, `hf auth login`)."""
    start: Path | None = None
    """Where the search for pyproject.toml begins (None: the current directory)."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The effective options of one command: the policy and the scan options it implies."""

    policy: Policy
    scan: ScanOptions
    rules_from: tuple[str, ...] = ()
    """Where user architecture rules came from (for `--show-config`)."""

    def show(self) -> str:
        """The merged configuration as TOML (`--show-config`)."""
        text = policy_toml(self.policy)
        if self.rules_from:
            text += f"\n# architecture rules from: {' < '.join(self.rules_from)}\n"
        return text


def build_settings(
    flags: Flags | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """The options of one command, validated before any checkpoint is read.

    Raises UsageError for a flag that cannot apply (a band with low >= high, a negative limit,
    a parametrization that is none), ConfigError naming the file and key for a bad
    configuration or rules file.
    """
    flags = flags or Flags()
    env = os.environ if environ is None else environ
    project = read_project_config(flags.config, flags.start)
    configured = policy_from(project, check=False)
    _check_flags(flags, configured)
    policy = _with_flags(project, flags)
    rules = user_rules(flags.rules, project)
    rules_from = [str(project.path)] if project is not None and "rules" in project.table else []
    if flags.rules is not None:
        rules_from.append(str(flags.rules))
    scan = ScanOptions(
        Thresholds(low=policy.low, high=policy.high),
        policy.parametrization,
        policy.scope,
        peers=policy.anomaly,
        rules=rules,
        roles=policy.roles,
        cache=not (flags.no_cache if flags.no_cache is not None else _env_on(env, NO_CACHE_ENV)),
        verbose=flags.verbose if flags.verbose is not None else _env_true(env, VERBOSE_ENV),
        token=flags.token,
    )
    return Settings(policy, scan, tuple(rules_from))


def _check_flags(flags: Flags, configured: Policy) -> None:
    """The usage errors of the flags, in the words of the flags."""
    if flags.low is not None or flags.high is not None:
        low = configured.low if flags.low is None else flags.low
        high = configured.high if flags.high is None else flags.high
        if not 0 < low < high:  # NOTE: nan fails every comparison, so it is refused too
            raise UsageError("need 0 < --low < --high", param="--low/--high")
    if flags.token is not None and not flags.token.strip():
        raise UsageError("is empty", param="--token")
    if flags.max_drift is not None and not (
        flags.max_drift >= 0 and math.isfinite(flags.max_drift)
    ):
        raise UsageError("must be >= 0", param="--max-drift")
    if flags.parametrization is not None:
        try:
            Parametrization(flags.parametrization)
        except ValueError:
            raise UsageError(
                f"must be standard or offset, not {flags.parametrization!r}",
                param="--parametrization",
            ) from None


def _with_flags(project: ProjectConfig | None, flags: Flags) -> Policy:
    """The policy with the flags applied over the configuration."""
    given = PolicyOverrides(
        low=flags.low,
        high=flags.high,
        scope=flags.scope,
        max_drift=flags.max_drift,
        expect_init=flags.expect_init,
        expect_mtp=flags.expect_mtp,
        parametrization=(
            Parametrization(flags.parametrization) if flags.parametrization is not None else None
        ),
        severity=flags.severity,
        allow_unknown=flags.allow_unknown,
    )
    return policy_from(project, given)


def _env_on(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "") not in ("", "0")


def _env_true(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def series_options(
    settings: Settings,
    order: Order | str | None = None,
    jobs: int | None = None,
    strict: bool = False,
    executor: Executor | str = Executor.auto,
    cluster: str | None = None,
) -> SeriesOptions:
    """The options of `series`: the scan options of every checkpoint, and where they run
    (`executor` dask, or a `cluster` address: on a Dask cluster; else here)."""
    from normscope.executors import ClusterSpec
    from normscope.series import SeriesOptions

    if cluster is not None and not cluster.strip():
        raise UsageError("empty address", param="--cluster")
    if jobs is not None and jobs < 1:
        raise UsageError("must be >= 1", param="--jobs")
    kind = Executor.auto if executor == "local" else Executor(executor)
    spec = ClusterSpec(cluster) if kind is Executor.dask or cluster is not None else None
    return SeriesOptions(
        settings.scan,
        Order(order) if order is not None else None,
        jobs,
        Executor.dask if spec is not None else kind,
        strict=strict,
        cluster=spec,
    )


def fold_options(
    settings: Settings,
    device: str = "auto",
    max_memory: str | int = "2GB",
    experts: str = "8",
    dry_run: bool = False,
    executor: Executor | str = Executor.auto,
    cluster: str | None = None,
) -> FoldOptions:
    """The options of `fold`: the scan's bands, scope, parametrization and rules, and the fold's
    own (device, memory budget, experts, a Dask cluster)."""
    from normscope.executors import ClusterSpec
    from normscope.fold import FoldOptions, parse_memory

    if cluster is not None and not cluster.strip():
        raise UsageError("empty address", param="--cluster")
    dask = executor == Executor.dask.value or cluster is not None
    scan = settings.scan
    return FoldOptions(
        device=device,
        max_memory=parse_memory(max_memory) if isinstance(max_memory, str) else max_memory,
        experts=experts,
        dry_run=dry_run,
        thresholds=scan.thresholds,
        parametrization=scan.parametrization,
        scope=scan.scope,
        rules=scan.rules,
        cluster=ClusterSpec(cluster) if dask else None,
        cache=scan.cache,
        verbose=scan.verbose,
        token=scan.token,
    )
