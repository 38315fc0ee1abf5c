"""The project's configuration file: `[tool.normscope]` of the nearest `pyproject.toml` (searched
from the current directory upward) or a TOML file given with `--config` (its `[tool.normscope]`
table, or its top level). Read once per command (`ProjectConfig`); the architecture rules of its
`rules` table are read here (`user_rules`), the rest of the table by `normscope.policy`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from normscope.arch.rules import RuleSet
from normscope.arch.userrules import load_rules, rules_from_pyproject
from normscope.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@dataclass(frozen=True, slots=True)
class ProjectConfig:
    """One read of the configuration file: its `[tool.normscope]` table and where it came from."""

    path: Path
    table: dict[str, Any]
    prefix: str
    """How its keys are named in messages: `tool.normscope.` (a pyproject table) or `` (a
    dedicated file's top level)."""


def read_project_config(
    config: Path | None = None, start: Path | None = None
) -> ProjectConfig | None:
    """`config` (which must exist), else the nearest pyproject.toml with a `[tool.normscope]`
    table from `start` (the current directory) upward; None when there is none.

    Raises ConfigError naming the file for a missing `config`, bad TOML or a table that is none.
    """
    if config is not None:
        if not config.is_file():
            raise ConfigError(f"config file not found ({config})")
        data = read_toml(config)
        table = tool_table(data, config, required=True) or {}
        return ProjectConfig(config, table, "tool.normscope." if "tool" in data else "")
    found = find_pyproject(start or Path.cwd())
    if found is None:
        return None
    table = tool_table(read_toml(found), found, required=False) or {}
    return ProjectConfig(found, table, "tool.normscope.")


def user_rules(rules_file: Path | None = None, project: ProjectConfig | None = None) -> RuleSet:
    """The user's architecture rules: the `rules` table of the project's configuration, then
    `--rules FILE`, which is tried first.

    Raises ConfigError naming the file and the bad key.
    """
    rules = RuleSet()
    if project is not None and "rules" in project.table:
        where = f"{project.path} [tool.normscope.rules]"
        rules = rules_from_pyproject(project.table["rules"], where)
    if rules_file is not None:
        if not rules_file.is_file():
            raise ConfigError(f"rules file not found ({rules_file})")
        rules = rules.merged(load_rules(rules_file))
    return rules


def find_pyproject(start: Path) -> Path | None:
    """The nearest pyproject.toml with a [tool.normscope] table, from `start` upward."""
    for directory in (start, *start.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            table = tool_table(read_toml(candidate), candidate, required=False)
            if table is not None:
                return candidate
    return None


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's data; ConfigError naming the file when it cannot be read or parsed."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config: {exc.strerror} ({path})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc} ({path})") from None


def tool_table(data: dict[str, Any], path: Path, required: bool) -> dict[str, Any] | None:
    """`[tool.normscope]` of `data`; with `required` (a dedicated file), its top level when the
    file has no such table; else None."""
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
