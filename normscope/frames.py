"""Results as plain data and as pandas DataFrames: the machine edge of every report.

`plain()` turns a report dataclass into JSON-ready data (enums to their values, NaN and
infinities to None, keys in field order); `rows_frame()` lays rows of dataclasses out as a
DataFrame whose columns are the field names, in order — the same names as the JSON keys and the
CSV header. This module imports no other normscope module, so the schema's `to_frame()` methods
and the renderers can both use it without a cycle. pandas is imported only when a frame is built.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas


_ATOMS = frozenset({str, int, bool, type(None)})
"""Types `plain` returns as they are (exact types: an Enum mixing in str is not one)."""
_FIELDS: dict[type, tuple[str, ...]] = {}
"""Field names of each dataclass `plain` has met, in order (`dataclasses.fields` is slow)."""


def plain(value: Any) -> Any:
    """JSON-ready data: dataclasses to dicts (field order), enums to values, NaN/inf to None.

    An object with a `text` attribute and no fields (a parsed scope selector) becomes its text.
    """
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if kind in _ATOMS:
        return value
    names = _FIELDS.get(kind)
    if names is None and dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = _FIELDS[kind] = tuple(f.name for f in dataclasses.fields(value))
    if names is not None:
        return {name: plain(getattr(value, name)) for name in names}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if hasattr(value, "__plain__"):
        return value.__plain__()
    return value


def json_text(data: Any) -> str:
    """Plain data as one JSON object, indented by 2, NaN/inf refused (`plain` made them null):
    what `--format json` writes and a report's `to_json()` returns.

    NOTE: the same bytes as `json.dumps(data, indent=2)`, made faster: an indent sends `json`
    to its pure-Python encoder (7 ms for a DeepSeek-V3 report), so the compact document is
    encoded in C and re-indented by msgspec, which copies every token as written (tested equal
    on every golden report). msgspec refuses a lone surrogate escape (`\\ud800`, from a
    hostile tensor name) that `json` writes: such a document takes the pure-Python encoder.
    """
    import msgspec

    compact = json.dumps(data, separators=(",", ":"), allow_nan=False)
    try:
        return msgspec.json.format(compact, indent=2) + "\n"
    except msgspec.DecodeError:
        return json.dumps(data, indent=2, allow_nan=False) + "\n"


def series_data(report: Any) -> dict[str, Any]:
    """A series report as JSON-ready data with flat rows (each row's `norm` merged into it)."""
    data: dict[str, Any] = plain(report)
    data["rows"] = [
        {
            "checkpoint": r["checkpoint"],
            "step": r["step"],
            **r["norm"],
            "rel_change": r["rel_change"],
        }
        for r in data["rows"]
    ]
    return data


def rows_frame(rows: Sequence[Any], row_type: type) -> pandas.DataFrame:
    """One row per dataclass instance, columns in field order; nested lists as JSON strings."""
    import pandas as pd

    fields = [f.name for f in dataclasses.fields(row_type)]
    records = []
    for row in rows:
        data = plain(row)
        records.append(
            {f: json.dumps(data[f]) if isinstance(data[f], list) else data[f] for f in fields}
        )
    frame = pd.DataFrame(records, columns=fields)
    # Nullable integers, so that a layer index stays 3 and never becomes 3.0 next to a null.
    ints = {f: "Int64" for f in ("layer", "mtp_depth") if f in fields}
    return frame.astype(ints)


def series_frame(rows: Sequence[Any], norm_type: type) -> pandas.DataFrame:
    """Series rows flattened: `checkpoint`, `step`, the norm's fields in order, `rel_change`."""
    import numpy as np

    frame = rows_frame([r.norm for r in rows], norm_type)
    frame.insert(0, "checkpoint", [r.checkpoint for r in rows])
    frame.insert(1, "step", np.asarray([r.step for r in rows], dtype=np.int64))
    frame["rel_change"] = [math.nan if r.rel_change is None else r.rel_change for r in rows]
    return frame
