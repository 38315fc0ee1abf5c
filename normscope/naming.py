"""How norms and files are named and ordered for people: natural sort and the layer column.

One definition of each, used by the sources (shard order), discovery (series order) and the
renderers (the `layer` column). Standard library only.
"""

from __future__ import annotations

import re

_DIGITS = re.compile(r"([0-9]+)")


def natural_key(name: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key that compares runs of ASCII digits as numbers: `x-10` after `x-9`.

    Digit runs compare by their value without converting them to `int` (a 5,000-digit run
    would exceed Python's int-string limit): by length once leading zeros are dropped, then
    lexicographically; ties keep the zeros' order stable through the raw text. Unicode digits
    such as `²` are plain text, never numbers.
    """
    key = []
    for i, part in enumerate(_DIGITS.split(name)):
        if i % 2:  # a digit run
            value = part.lstrip("0") or "0"
            key.append((0, len(value), value))
            key.append((1, 0, part))
        elif part:
            key.append((2, 0, part))
    return tuple(key)


def where(module_is_mtp: bool, mtp_depth: int | None, layer: int | None) -> str:
    """The table's `layer` column: `mtp1` for MTP norms, the layer index, or `-`."""
    if module_is_mtp:
        return f"mtp{mtp_depth}"
    return "-" if layer is None else str(layer)
