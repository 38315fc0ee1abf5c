"""How norms and files are named and ordered for people: natural sort and the layer column.

One definition of each, used by the sources (shard order), discovery (series order) and the
renderers (the `layer` column). Standard library only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

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


_WRAPPERS = frozenset(
    {"model", "language_model", "transformer", "encoder", "decoder", "layers", "layer", "h"}
    | {"blocks", "block", "backbone", "module", "base_model", "decoder_layers", "encoder_layers"}
)


def strip_weight(name: str) -> str:
    """`model.norm.weight` -> `model.norm`: the gain's suffix says nothing in a norm table."""
    for suffix in (".weight", "_weight", ".scale"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _tower(parts: list[str]) -> str:
    """`vision` for `vision_tower.vision_model.encoder`; '' when only wrappers lead the name."""
    for part in parts:
        if part not in _WRAPPERS and not part.isdigit():
            for suffix in ("_tower", "_model", "_encoder", "_decoder"):
                if part.endswith(suffix) and len(part) > len(suffix):
                    return part[: -len(suffix)]
            return part
    return ""


def structural_name(
    name: str, mtp_depth: int | None, layer: int | None, with_layer: bool = False
) -> str:
    """A norm's name for the table views, read from its structure: the leaf after the layer.

    `model.layers.3.input_layernorm.weight` at layer 3 is `input_layernorm` (the layer has its own
    column), `model.layers.61.shared_head.norm.weight` of MTP depth 1 is `shared_head.norm`, a
    layer of another tower (`vision_tower.vision_model.encoder.layers.3.layer_norm1`) is
    `vision L3 layer_norm1`. `with_layer` prefixes `mtp1 `/`L3 ` for views without a layer column.
    Names with no layer index are kept whole (less the `.weight` suffix).
    """
    base = strip_weight(name)
    parts = base.split(".")
    wanted = str(layer) if layer is not None and mtp_depth is None else None
    index = next(
        (
            i
            for i, part in enumerate(parts[:-1])
            if i > 0 and (part == wanted if wanted is not None else part.isdigit())
        ),
        None,
    )
    if index is None:
        return base
    leaf = ".".join(parts[index + 1 :])
    if mtp_depth is not None:
        return f"mtp{mtp_depth} {leaf}" if with_layer else leaf
    if layer is not None:
        return f"L{layer} {leaf}" if with_layer else leaf
    tower = _tower(parts[:index])
    return f"{tower} L{parts[index]} {leaf}".lstrip()


def fit_name(text: str, width: int) -> str:
    """Cut a name that does not fit at its start, never in the middle: the end informs.

    Whole dotted parts go first (`…kv_a_layernorm`), then characters (`…t_attention_layernorm`).
    """
    if len(text) <= width:
        return text
    parts = text.split(".")
    while len(parts) > 1 and len(".".join(parts)) + 1 > width:
        parts = parts[1:]
    tail = ".".join(parts)
    return "…" + tail if len(tail) + 1 <= width else "…" + text[-(width - 1) :]


def fit_names(names: Sequence[str], width: int) -> list[str]:
    """Cut the names of one table column to `width`, keeping different names different.

    Each name is cut as `fit_name` cuts it; names that then read the same (four different norms
    all `…yernorm`, both TE-fused norms `…layer_norm`) are cut again, among themselves: the end by
    characters (`…_qkv.layer_norm`, `…_fc1.layer_norm`), else from the middle, keeping the head
    after what they share and the end (`inp…norm`, `post…orm`; `…q_a…orm`, `…kv_…orm` once
    `self_attn.` is what two of them share). Equal names stay equal (the layer tells them apart).
    """
    cut = {n: fit_name(n, width) for n in dict.fromkeys(names)}
    for _ in range(6):  # each round settles the names that share a common head
        clashes = _clashes(cut)
        if not clashes:
            break
        for group in clashes:
            taken = {text for name, text in cut.items() if name not in group}
            cut.update(_distinguish(group, width, taken))
    return [cut[n] for n in names]


def _clashes(cut: dict[str, str]) -> list[list[str]]:
    by_text: dict[str, list[str]] = {}
    for name, text in cut.items():
        by_text.setdefault(text, []).append(name)
    return [group for group in by_text.values() if len(group) > 1]


def _distinguish(group: Sequence[str], width: int, taken: set[str]) -> dict[str, str]:
    """New cuts for names that read the same: by characters from the end if that tells them
    apart, else from the middle after their common head (the split telling most apart); never
    a cut another name of the column already shows (`taken`)."""

    def apart(texts: dict[str, str]) -> int:
        return len(set(texts.values()) - taken)

    tails = {n: "…" + n[-(width - 1) :] if len(n) > width else n for n in group}
    # The end tells them apart only if what differs shows: 3 characters before the shared end.
    ending = len(os.path.commonprefix([n[::-1] for n in group]))  # noqa: RUF071 - characters
    if (apart(tails) == len(group) and width - 1 - ending >= 3) or width < 4:
        return tails
    shared = os.path.commonprefix(list(group))  # noqa: RUF071 - characters, not paths
    start = max(shared.rfind("."), shared.rfind("_")) + 1 if len(shared) < len(min(group)) else 0
    lead = "…" if start else ""
    room = width - len(lead) - 1
    best: dict[str, str] = tails
    for head in sorted(range(1, room), key=lambda h: abs(h - room // 2)):
        texts = {n: _middle(n[start:], lead, head, room - head, width) for n in group}
        if apart(texts) > apart(best):
            best = texts
        if apart(best) == len(group):
            break
    return best


def _middle(rest: str, lead: str, head: int, tail: int, width: int) -> str:
    if len(lead) + len(rest) <= width:
        return lead + rest
    return lead + rest[:head] + "…" + rest[-tail:]
