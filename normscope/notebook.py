"""How a report shows itself in Python and in a notebook: a one-line `repr`, a compact HTML
card (`_repr_html_`, what Jupyter shows), and `to_json()`, the bytes `--format json` writes.

A report says what it is (`_facts`: a few (label, value) pairs) and which rows matter first
(`_table`: the columns and every row, most telling first); this mixin does the rest. The card
lists at most `MAX_ROWS` rows and says how many more `to_frame()` holds: a 600-checkpoint series
is a card of its headline trends, never its 600 × N rows (its dataclass repr was 18 MB).
Standard library only (and `frames`): the schema's dataclasses inherit it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from normscope.enums import Module
from normscope.frames import json_text, plain
from normscope.naming import strip_weight, where

MAX_ROWS = 20
"""Rows of the card's table; the rest are one `to_frame()` away."""

Row = Sequence[Any]


class Notebook:
    """The notebook face of a report dataclass (`@dataclass(..., repr=False)` keeps this
    `__repr__`)."""

    __slots__ = ()

    def _facts(self) -> list[tuple[str, Any]]:
        """(label, value) pairs: the repr's fields and the card's header."""
        raise NotImplementedError

    def _table(self) -> tuple[tuple[str, ...], list[Row], str]:
        """The card's columns, every row (most telling first), and what the rows are."""
        raise NotImplementedError

    def _json_data(self) -> Any:
        """The JSON document's data (a series flattens its rows)."""
        return plain(self)

    def to_json(self) -> str:
        """The report as JSON: the exact text `--format json` writes (indent 2, NaN as null)."""
        return json_text(self._json_data())

    def __repr__(self) -> str:
        fields = ", ".join(f"{label.replace(' ', '_')}={value!r}" for label, value in self._facts())
        return f"{type(self).__name__}({fields})"

    def _repr_html_(self) -> str:
        """A compact card: the facts, then at most MAX_ROWS rows of the table."""
        columns, rows, what = self._table()
        esc = html.escape
        facts = "".join(
            f"<tr><th style='text-align:left'>{esc(label)}</th>"
            f"<td style='text-align:left'>{esc(_cell(value))}</td></tr>"
            for label, value in self._facts()
        )
        head = "".join(f"<th>{esc(c)}</th>" for c in columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{esc(_cell(v))}</td>" for v in row) + "</tr>"
            for row in rows[:MAX_ROWS]
        )
        shown = min(len(rows), MAX_ROWS)
        more = f"; {len(rows) - shown} more in .to_frame()" if len(rows) > shown else ""
        return (
            f"<div class='normscope'><strong>{esc(type(self).__name__)}</strong>"
            f"<table>{facts}</table>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            f"<p>{shown} of {len(rows)} {esc(what)}{esc(more)}</p></div>"
        )


def _cell(value: Any) -> str:
    """A value as a card shows it: numbers to 3 decimals, None as '-', enums as their value."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1e4 else f"{value:.3g}"
    return str(value)


def deviation(ratio: float | None) -> float:
    """How far a ratio is from 1 on a log scale (inf for none, zero or non-finite): the order
    of a card's rows."""
    if ratio is None or not (0 < ratio < math.inf):
        return math.inf
    return abs(math.log(ratio))


def norm_row(n: Any, *values: Any) -> Row:
    """A card's row of a norm: its name (less `.weight`), its layer column, its role, `values`."""
    layer = where(n.module is Module.mtp, n.mtp_depth, n.layer)
    return (strip_weight(n.name), layer, n.role, *values)
