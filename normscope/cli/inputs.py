"""What every command does the same way before it reads anything: its settings from the flags
and the project's configuration (`normscope.settings`, the builder the API uses too), the
`--show-config` answer, and the `-v` of the root command."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from normscope.enums import Parametrization

if TYPE_CHECKING:
    from normscope.settings import Settings


def settings(
    ctx: typer.Context,
    low: float | None,
    high: float | None,
    scope: str | None,
    parametrization: Parametrization | None,
    rules: Path | None,
    config: Path | None,
    no_cache: bool,
    token: str | None,
    **check: Any,
) -> Settings:
    """The command's settings: defaults < `[tool.normscope]` or `--config` < the flags given.
    `check`: the policy flags of `normscope check` (max_drift, expect_init, ...)."""
    from normscope.settings import Flags, build_settings

    return build_settings(
        Flags(
            low=low,
            high=high,
            scope=scope,
            parametrization=parametrization,
            rules=rules,
            config=config,
            no_cache=True if no_cache else None,
            token=token,
            verbose=True if verbose(ctx) else None,
            **check,
        )
    )


def verbose(ctx: typer.Context) -> bool:
    """Whether `normscope -v` was given (the root command keeps it in its context)."""
    root = ctx.find_root()
    return bool(isinstance(root.obj, dict) and root.obj.get("verbose"))


def show_config(settings: Settings, show: bool, output: str | None) -> bool:
    """`--show-config`: print the merged configuration; True when the command stops there."""
    if show:
        from normscope.cli import output as out

        out.write_output(settings.show(), output)
    return show


def nonnegative(value: float | None, param: str) -> None:
    """A usage error for a negative limit."""
    if value is not None and not value >= 0:
        raise typer.BadParameter("must be >= 0", param_hint=param)
