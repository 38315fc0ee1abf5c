"""JSON Schemas (draft 2020-12) of the reports, generated from the dataclasses so they cannot drift.

`json_schema(cls)` walks a report dataclass — field order, types, optional fields, enums — and
writes the schema of the JSON `render_json` makes of it (`frames.plain`: enums as their values,
NaN/inf as null, tuples as arrays). The shipped files `normscope/schema/json/<report>.schema.json`
are this function's output (tests/test_jsonschema.py keeps them equal; `python -m
normscope.schema.jsonschema` rewrites them). Each schema's `$id` names the report and the
`schema_version` it describes: `normscope:schema/v<N>/<report>`.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any

from normscope.schema.check import CheckReport
from normscope.schema.diff import DiffReport
from normscope.schema.scan import SCHEMA_VERSION, NormStats, Report
from normscope.schema.series import SeriesReport

DIALECT = "https://json-schema.org/draft/2020-12/schema"
REPORTS: dict[str, type] = {
    "scan": Report,
    "diff": DiffReport,
    "series": SeriesReport,
    "check": CheckReport,
}
SHIPPED = Path(__file__).with_name("json")


def _type(hint: Any, defs: dict[str, Any]) -> dict[str, Any]:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [_type(a, defs) for a in args]
        if {"type": ["number", "null"]} in options:  # float | None: null already allowed
            options = [o for o in options if o != {"type": "null"}]
        return options[0] if len(options) == 1 else {"anyOf": options}
    if hint is type(None):
        return {"type": "null"}
    if origin in (tuple, list):
        return {"type": "array", "items": _type(args[0], defs)} if args else {"type": "array"}
    if origin is dict:
        return {"type": "object", "additionalProperties": _type(args[1], defs)}
    if isinstance(hint, type) and issubclass(hint, Enum):
        return {"enum": [m.value for m in hint]}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if hint.__name__ not in defs:
            defs[hint.__name__] = {}  # a placeholder breaks recursion
            defs[hint.__name__] = _object(hint, defs)
        return {"$ref": f"#/$defs/{hint.__name__}"}
    if hint is bool:
        return {"type": "boolean"}
    if hint is int:
        return {"type": "integer"}
    if hint is float:  # NaN and infinities are written as null
        return {"type": ["number", "null"]}
    if hint is str or hasattr(hint, "__plain__") or hasattr(hint, "text"):
        return {"type": "string"}  # a parsed scope selector is written as its text
    raise TypeError(f"no JSON type for {hint!r}")


def _object(cls: type, defs: dict[str, Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    return {
        "type": "object",
        "properties": {name: _type(hints[name], defs) for name in fields},
        "required": fields,
        "additionalProperties": False,
    }


def json_schema(report: str) -> dict[str, Any]:
    """The JSON Schema of one report's JSON (`scan`, `diff`, `series` or `check`)."""
    cls = REPORTS[report]
    defs: dict[str, Any] = {}
    body = _object(cls, defs)
    if cls is SeriesReport:  # its JSON flattens each row: checkpoint, step, NormStats, rel_change
        norm = _object(NormStats, defs)
        body["properties"]["rows"] = {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "checkpoint": {"type": "string"},
                    "step": {"type": "integer"},
                    **norm["properties"],
                    "rel_change": {"type": ["number", "null"]},
                },
                "required": ["checkpoint", "step", *norm["required"], "rel_change"],
                "additionalProperties": False,
            },
        }
        defs.pop("SeriesRow", None)
    body["properties"]["schema_version"] = {"const": SCHEMA_VERSION}
    reached: set[str] = set()
    todo = [body]
    while todo:  # keep the definitions the report reaches (SeriesRow is flattened away)
        text = json.dumps(todo.pop())
        for name in defs:
            if name not in reached and f'"#/$defs/{name}"' in text:
                reached.add(name)
                todo.append(defs[name])
    defs = {k: v for k, v in defs.items() if k in reached}
    return {
        "$schema": DIALECT,
        "$id": f"normscope:schema/v{SCHEMA_VERSION}/{report}",
        "title": f"normscope {report} report, schema_version {SCHEMA_VERSION}",
        **body,
        "$defs": dict(sorted(defs.items())),
    }


def shipped_schema(report: str) -> dict[str, Any]:
    """The schema file shipped in the package for `report`."""
    data: dict[str, Any] = json.loads(
        (SHIPPED / f"{report}.schema.json").read_text(encoding="utf-8")
    )
    return data


def schema_text(report: str) -> str:
    return json.dumps(json_schema(report), indent=2, ensure_ascii=False) + "\n"


def write_schemas(directory: Path = SHIPPED) -> list[Path]:
    """Write every report's schema file; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for report in REPORTS:
        path = directory / f"{report}.schema.json"
        path.write_text(schema_text(report), encoding="utf-8")
        out.append(path)
    return out


if __name__ == "__main__":  # pragma: no cover - maintainers: python -m normscope.schema.jsonschema
    for written in write_schemas():
        print(written)
