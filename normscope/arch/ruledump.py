"""The rule format written back as TOML: `dump_rules(families)` makes the rules file that
`load_rules` reads back to equal families (the round trip is tested)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from normscope.arch.rules import Family


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return "[" + ", ".join(_toml_value(v) for v in value) + "]"


def family_table(family: Family) -> dict[str, Any]:
    """The TOML-shaped table of one family (only non-default keys)."""
    out: dict[str, Any] = {"name": family.name}
    if family.model_types:
        out["model_types"] = list(family.model_types)
    if family.architectures:
        out["architectures"] = list(family.architectures)
    out["parametrization"] = family.parametrization.value
    out["source"] = family.source
    if family.mtp_in_layers:
        out["mtp_in_layers"] = True
    if not family.final_norm:
        out["final_norm"] = False
    if family.note:
        out["note"] = family.note
    rules = []
    for r in family.rules:
        t: dict[str, Any] = {"pattern": r.pattern}
        t["role"] = [r.role.value, *(a.value for a in r.alt_roles)] if r.alt_roles else r.role.value
        optional: tuple[tuple[str, Any], ...] = (
            ("module", r.module.value if r.module else None),
            ("mtp_depth", r.mtp_depth),
            ("parametrization", r.parametrization.value if r.parametrization else None),
            ("group", r.group.value if r.group else None),
            ("if_present", r.if_present),
            ("if_block_type", list(r.if_block_type) or None),
            ("consumers", list(r.consumers) or None),
            ("producers", list(r.producers) or None),
            ("at_stack_end", True if r.at_stack_end else None),
            ("if_final_norm", r.if_final_norm),
        )
        t.update({k: v for k, v in optional if v is not None})
        rules.append(t)
    out["norm"] = rules
    return out


def dump_rules(families: Iterable[Family]) -> str:
    """Write families as a rules file (TOML) that `load_rules` reads back to equal families."""
    lines: list[str] = []
    for family in families:
        table = family_table(family)
        lines.append("[[family]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items() if k != "norm"]
        for rule in table["norm"]:
            lines.append("")
            lines.append("[[family.norm]]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in rule.items()]
        lines.append("")
    return "\n".join(lines)
