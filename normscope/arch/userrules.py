"""User rules: a TOML rules file (`--rules FILE.toml`) or `[tool.normscope.rules]` in
pyproject.toml, in the format of the built-in tables (`rules.py`).

    [[family]]
    name = "acme"
    model_types = ["acme"]
    parametrization = "standard"

    [[family.norm]]
    pattern = "layers.{L}.mix_norm"
    role = "attn_input"

Every key is validated: an unknown key or a bad value raises ConfigError naming the key and the
file (exit code 2 in the CLI).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from normscope.arch.families import FAMILY_BY_NAME
from normscope.arch.rules import RuleSet, parse_families
from normscope.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def rules_from_data(data: Mapping[str, Any], where: str) -> RuleSet:
    """Validate a rules document (`{"family": [...]}`) read from `where`."""
    families = parse_families(dict(data), where, FAMILY_BY_NAME)
    return RuleSet(families, (where,))


def rules_from_pyproject(data: Mapping[str, Any], where: str) -> RuleSet:
    """Validate the contents of a `[tool.normscope.rules]` table; `where` names it in errors
    (e.g. 'pyproject.toml [tool.normscope.rules]')."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"[tool.normscope.rules] must be a table ({where})")
    return rules_from_data(data, where)


def load_rules(path: str | os.PathLike[str]) -> RuleSet:
    """Read and validate a rules file. A pyproject.toml is read from its
    `[tool.normscope.rules]` table; any other file from its top level."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read rules file: {exc.strerror} ({p})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc} ({p})") from None
    tool = data.get("tool")
    if isinstance(tool, dict) and isinstance(tool.get("normscope"), dict) and "family" not in data:
        table = tool["normscope"].get("rules")
        if table is None:
            raise ConfigError(f"no [tool.normscope.rules] table ({p})")
        return rules_from_pyproject(table, f"{p} [tool.normscope.rules]")
    return rules_from_data(data, str(p))
