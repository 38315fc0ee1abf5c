"""The layer × norm grid of the scan and diff pages: every norm a cell of its own, its value and
band written in it, coloured as the legend says (issue 26).

Rows are the layers (then each MTP depth), columns the kinds of norm a layer holds: a column per
leaf name within its role (`self_attn.q_norm` and `self_attn.k_norm` share the role `qk` but not
a column, nor do `q_a_layernorm` and `kv_a_layernorm`). Each tower or stack of an
encoder-decoder gets a grid of its own; the norms outside the layers (the final norm, a tower's
post-norm) one row of their own. Should two norms still meet at one cell, the grid keys its
columns by the full name instead. It is an HTML table: the browser sizes its columns to their
labels, and the numbers are text, readable without a tooltip.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from html import escape
from itertools import groupby
from typing import Any

from normscope.enums import Band, Module, Role
from normscope.naming import strip_weight, structural_name
from normscope.render.common import fmt
from normscope.render.html import data_value


@dataclass(frozen=True, slots=True)
class Entry:
    """One norm to draw: the norm (or diff row) for its name and place, its value and band."""

    norm: Any
    value: float | None
    band: Band
    tip: str
    """The hover text: the full name and the numbers."""


@dataclass(frozen=True, slots=True)
class _Column:
    key: Hashable
    role: Role
    label: str


def cell_text(value: float | None, band: Band) -> str:
    """`1.588 grow`; a balanced value alone."""
    number = fmt(value)
    return number if band is Band.balanced else f"{number} {band.value}"


def _place(n: Any) -> tuple[tuple[int, int], str]:
    """(row, leaf): (0, layer) for a layer's norm, (1, depth) for an MTP depth's, (2, 0) for a
    norm outside the layers. A tower's layers that the rules leave without a `layer` (a vision
    encoder's `encoder.layers.3.layer_norm1`) take the index their name holds."""
    if n.module is Module.mtp:
        return (1, n.mtp_depth or 0), structural_name(n.name, n.mtp_depth, None)
    if n.layer is not None:
        return (0, n.layer), structural_name(n.name, None, n.layer)
    parts = strip_weight(n.name).split(".")
    for i, part in enumerate(parts[:-1]):
        if i > 0 and part.isdigit() and len(part) <= 9:  # an index, not a 5,000-digit run
            return (0, int(part)), ".".join(parts[i + 1 :])
    return (2, 0), strip_weight(n.name)


def _leaf(n: Any) -> str:
    return _place(n)[1]


def _template(n: Any) -> str:
    """The name with its layer index as `*`: `model.layers.*.self_attn.q_norm`."""
    leaf, base = _leaf(n), strip_weight(n.name)
    if _row(n)[0] == 2:
        return base
    head = base[: len(base) - len(leaf) - 1].rpartition(".")[0]  # less `.<index>`
    return f"{head}.*.{leaf}"


def _aligned(entries: Sequence[Entry]) -> Callable[[Any], Hashable]:
    """(role, leaf), an MTP block's norm under the layers' norm its leaf ends with: Megatron's
    `mtp_model_layer.self_attention.linear_qkv.layer_norm` in the column of the layers'
    `self_attention.linear_qkv.layer_norm`."""
    layer_leaves = {(e.norm.role, _leaf(e.norm)) for e in entries if _row(e.norm)[0] == 0}

    def key(n: Any) -> Hashable:
        leaf = _leaf(n)
        if _row(n)[0] == 1:
            ends = [x for role, x in layer_leaves if role is n.role and leaf.endswith("." + x)]
            leaf = max(ends, key=len, default=leaf)
        return (n.role, leaf)

    return key


_KEYS: tuple[Callable[[Any], Hashable], ...] = (
    lambda n: (n.role, _leaf(n)),
    lambda n: (n.role, _template(n)),
    lambda n: n.name,
)
"""Column keys after the aligned one, from the short leaf to the full name: the grid takes the
first that gives every norm its own cell."""


def _row(n: Any) -> tuple[int, int]:
    return _place(n)[0]


def _row_label(row: tuple[int, int]) -> str:
    return (str(row[1]), f"mtp{row[1]}", "")[row[0]]


def _group(n: Any) -> str:
    """The grid a norm belongs to: its tower and its stack (encoder/decoder), if any."""
    stack = getattr(n, "stack", None)
    tower = getattr(n, "tower", None)
    return " ".join(x.value if hasattr(x, "value") else str(x) for x in (tower, stack) if x)


def grids(entries: Sequence[Entry], title: str, grid_id: str = "heatmap") -> str:
    """Every entry in a cell of its own: one grid per tower/stack, the rest in a row below;
    '' for no entries."""
    layered = [e for e in entries if _row(e.norm)[0] < 2]
    outside = [e for e in entries if _row(e.norm)[0] == 2]
    groups: dict[str, list[Entry]] = {}
    for e in layered:
        groups.setdefault(_group(e.norm), []).append(e)
    parts = []
    for index, (name, members) in enumerate(groups.items()):
        heading = f"{title}: {name}" if len(groups) > 1 and name else title
        table_id = grid_id if index == 0 else f"{grid_id}-{index}"
        parts.append(f"<h2>{escape(heading)}</h2>" + _grid(table_id, members))
    if outside:
        parts.append("<h2>norms outside the layers</h2>" + _grid(f"{grid_id}-outside", outside))
    return "".join(parts)


def _grid(table_id: str, entries: Sequence[Entry]) -> str:
    columns, key = _columns(entries)
    rows = sorted({_row(e.norm) for e in entries})
    at = {(_row(e.norm), key(e.norm)): e for e in entries}
    head_roles = "".join(
        f'<th class="role" colspan="{span}">{escape(role.value)}</th>'
        for role, span in _spans(columns)
    )
    head_leaves = "".join(f'<th class="leaf">{_breakable(c.label)}</th>' for c in columns)
    corner = "layer" if any(r[0] < 2 for r in rows) else ""
    body = []
    for row in rows:
        cells = "".join(_cell(at.get((row, c.key))) for c in columns)
        body.append(f'\n<tr><th class="row">{_row_label(row)}</th>{cells}</tr>')
    return (
        f'<div class="scroll"><table class="heat" id="{table_id}"><thead>'
        f'<tr><th></th>{head_roles}</tr><tr><th class="row">{corner}</th>{head_leaves}</tr>'
        f"</thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def _columns(entries: Sequence[Entry]) -> tuple[list[_Column], Callable[[Any], Hashable]]:
    """The columns, in role order, by the first key that puts no two norms in one cell."""
    aligned = _aligned(entries)
    key = _KEYS[-1]
    for candidate in (aligned, *_KEYS):
        cells = [(_row(e.norm), candidate(e.norm)) for e in entries]
        if len(set(cells)) == len(cells):
            key = candidate
            break
    found: dict[Hashable, _Column] = {}
    for e in entries:
        k = key(e.norm)
        if k not in found:
            label = k[1] if key is aligned and isinstance(k, tuple) else _leaf(e.norm)
            found[k] = _Column(k, e.norm.role, label)
    columns = sorted(found.values(), key=lambda c: list(Role).index(c.role))
    labels = [c.label for c in columns]
    if len(set(labels)) < len(labels):  # two columns that read alike say their whole name
        columns = [_Column(c.key, c.role, _full_label(c, entries, key)) for c in columns]
    return columns, key


def _full_label(column: _Column, entries: Sequence[Entry], key: Callable[[Any], Hashable]) -> str:
    n = next(e.norm for e in entries if key(e.norm) == column.key)
    return _template(n)


def _breakable(label: str) -> str:
    """A column label that may break after a dot (a long leaf name must not widen the page)."""
    return escape(label).replace(".", ".<wbr>")


def _spans(columns: Sequence[_Column]) -> list[tuple[Role, int]]:
    """Each run of columns of one role and its length (the role header's colspan)."""
    return [(role, len(list(run))) for role, run in groupby(columns, key=lambda c: c.role)]


def _cell(e: Entry | None) -> str:
    if e is None:
        return '<td class="empty"></td>'
    return (
        f'<td class="cell b-{e.band.value}" data-name="{escape(e.norm.name)}" '
        f'data-band="{e.band.value}" data-value="{data_value(e.value)}" '
        f'title="{escape(e.tip)}">{escape(cell_text(e.value, e.band))}</td>'
    )
