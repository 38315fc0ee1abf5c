"""What every renderer shares: JSON and CSV text, rounding, colours, names that fit, the header.

Pure functions; `cli/output.py` decides where their output goes. JSON and CSV carry full
precision and the schema's field names in order; rounding, colour and truncation happen only in
the views for people (tables, Markdown, HTML), which must never be parsed.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import io
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar

from normscope.enums import Band, Module
from normscope.errors import printable
from normscope.frames import json_text, plain
from normscope.naming import fit_name, strip_weight, structural_name
from normscope.naming import where as _where_text

if TYPE_CHECKING:
    import pandas
    from rich.console import RenderableType


_P = ParamSpec("_P")
_R = TypeVar("_R")


class View(Protocol):
    """One report as it is to be shown, with a renderer per output format; `cli/output.render`
    calls the one the user asked for. Each report's view lives beside its renderers
    (`scan.ScanView`, `diff.DiffView`, `series.SeriesView`, `fold.FoldView`)."""

    @property
    def wide(self) -> bool:
        """Tables as wide as they need (`--wide`), not the terminal's width."""
        ...

    def table(self, width: int) -> Sequence[Any]:
        """The rich renderables of the people view for a terminal of `width` columns."""
        ...

    def json(self) -> str: ...

    def csv(self) -> str: ...

    def markdown(self) -> str: ...

    def html(self) -> str: ...


def writable(text: str) -> str:
    """`text`, with what UTF-8 cannot encode (a lone surrogate from a non-UTF-8 file name or a
    config string) written as a backslash escape (`\\udcff`)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def text_safe(render: Callable[_P, str]) -> Callable[_P, str]:
    """A text renderer whose output always encodes as UTF-8 (`writable`): rendering never fails
    on a strange name. JSON needs none: it escapes such characters itself."""

    @functools.wraps(render)
    def rendered(*args: _P.args, **kwargs: _P.kwargs) -> str:
        return writable(render(*args, **kwargs))

    return rendered


# --- names are data: what a view for people shows of them -----------------------------------

_MARKDOWN = str.maketrans({"|": "\\|", "`": "\\x60"})


def visible(text: str, markdown: bool = False) -> str:
    """A string from the input (a tensor or file name, a config value, a warning) as every
    view for people shows it: control characters (ESC, BEL, newlines), the bidirectional
    overrides (U+202E and kin) and lone surrogates written as visible escapes (`\\x1b`,
    `\\u202e`), so no name can drive the terminal, reorder a line or break a table row
    (`errors.printable`, the one definition, which error lines use too). `markdown`: also `|`
    as `\\|` (GitHub tables split cells on it, even inside a code span) and a backtick as
    `\\x60` (it would end the code span names are written in)."""
    text = printable(text)
    return text.translate(_MARKDOWN) if markdown else text


def _escaped(value: Any, markdown: bool, seen: dict[str, str]) -> Any:
    """`value` with every string inside it (dataclass fields, tuples, lists, dicts) passed
    through `visible`; the same object where nothing changed."""
    kind = type(value)
    if kind is str:
        out = seen.get(value)
        if out is None:
            out = seen[value] = visible(value, markdown)
        return out
    if kind in (tuple, list):
        items = [_escaped(v, markdown, seen) for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else kind(items)
    if kind is dict:
        pairs = [
            (_escaped(k, markdown, seen), _escaped(v, markdown, seen)) for k, v in value.items()
        ]
        same = all(a is k and b is v for (a, b), (k, v) in zip(pairs, value.items(), strict=True))
        return value if same else dict(pairs)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changed = {}
        for f in dataclasses.fields(value):
            old = getattr(value, f.name)
            new = _escaped(old, markdown, seen)
            if new is not old:
                changed[f.name] = new
        if not changed:
            return value
        clone = copy.copy(value)
        for name, new in changed.items():
            object.__setattr__(clone, name, new)  # frozen dataclasses: a copy, set once
        return clone
    return value


def for_people(render: Callable[_P, _R] | None = None, *, markdown: bool = False) -> Any:
    """Decorate a renderer for people (a table, Markdown, HTML, JUnit, GitHub annotations): the
    report it is given is shown with every string `visible` (markdown: `visible(markdown=True)`),
    and text it returns always encodes as UTF-8 (`writable`). JSON and CSV, for machines, keep
    the names as they are (JSON escapes control characters itself; CSV: `frame_csv`)."""

    def decorate(func: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(func)
        def rendered(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            if args:
                args = (_escaped(args[0], markdown, {}), *args[1:])  # type: ignore[assignment]
            out = func(*args, **kwargs)
            return writable(out) if isinstance(out, str) else out  # type: ignore[return-value]

        return rendered

    return decorate if render is None else decorate(render)


def to_dict(report: Any) -> dict[str, Any]:
    """A report dataclass (scan, diff, check, series) as plain JSON-ready data, keys in order."""
    data: dict[str, Any] = plain(report)
    return data


def render_json(report: Any) -> str:
    """One JSON object, indented by 2; NaN/inf are written as null (`frames.json_text`: the
    text a report's `to_json()` returns too)."""
    return json_text(to_dict(report))


_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (OWASP CSV injection: it starts with
    `=`, `+`, `-`, `@`, a tab or a carriage return) prefixed with `'`; anything else as is."""
    if type(cell) is str and cell.startswith(_FORMULA):
        return "'" + cell
    return cell


def frame_csv(frame: pandas.DataFrame) -> str:
    """CSV text of a frame: header row, no index, full float precision, empty cells for null.

    NOTE: text columns go through `spreadsheet_safe`; numeric columns never do: pandas writes a
    number as a number (`-0.312`, `1e-05`), which no spreadsheet evaluates, and a `'` before a
    negative ratio would turn every `min` below zero into text for pandas and for the sheet.
    """
    from pandas.api.types import is_object_dtype, is_string_dtype

    text = [c for c in frame.columns if is_object_dtype(frame[c]) or is_string_dtype(frame[c])]
    if text:
        frame = frame.assign(**{c: frame[c].map(spreadsheet_safe) for c in text})
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, lineterminator="\n")
    return buffer.getvalue()


BAND_STYLE = {
    Band.collapse: "bold red",
    Band.shrink: "yellow",
    Band.balanced: "green",
    Band.grow: "yellow",
    Band.explosion: "bold red",
    Band.nonfinite: "bold magenta",
}
SEVERITY = {
    Band.balanced: 0,
    Band.shrink: 1,
    Band.grow: 1,
    Band.collapse: 2,
    Band.explosion: 2,
    Band.nonfinite: 3,
}


def human_bytes(n: float) -> str:
    """1234567 -> '1.2 MB' (decimal units, as disks and the Hub count)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def fmt(value: float | None, digits: int = 3) -> str:
    """Round for people; None and non-finite values shown as such."""
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}f}" if abs(value) < 1e4 else f"{value:.3g}"


def where(n: Any) -> str:
    """The `layer` column of a norm (or a diff row): `mtp1`, the layer index, or `-`."""
    return _where_text(n.module is Module.mtp, n.mtp_depth, n.layer)


NAME_WIDTH = 40
NAME_FLOOR = 16
"""A name column narrower than this makes a table drop more of its secondary columns (the
first of them go as soon as the longest name does not fit)."""


def display_name(n: Any, wide: bool = False, with_layer: bool = False) -> str:
    """A norm (or diff row, or trend) as the table views name it: the leaf after the layer
    (`input_layernorm`, `shared_head.norm`, `vision L3 layer_norm1`), or the whole name (less
    `.weight`) with `--wide`. JSON, CSV and Markdown always carry the full name."""
    if wide or getattr(n, "aggregate", False):
        return strip_weight(n.name) if not getattr(n, "aggregate", False) else n.name
    depth = n.mtp_depth if n.module is Module.mtp else None
    name = structural_name(n.name, depth, getattr(n, "layer", None), with_layer)
    stack = getattr(n, "stack", None)
    # An encoder-decoder's two stacks share their layer numbers and leaf names.
    return (
        f"{stack.value} {name}"
        if stack is not None and getattr(n, "layer", None) is not None
        else name
    )


def name_column_width(names: Sequence[str], room: int, wide: bool = False) -> int:
    """The name column: as wide as the longest name, at most what the other columns leave."""
    longest = max((len(x) for x in names), default=4)
    return max(longest, 4) if wide else max(8, min(longest, room))


def short_name(name: str, width: int = NAME_WIDTH) -> str:
    """Drop the `.weight` suffix; keep the informative tail of long names."""
    for suffix in (".weight", "_weight"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return fit_name(name, width)


def header_panel(title: str, lines: Sequence[tuple[str, str]]) -> RenderableType:
    """The framed (label, value) header of every table view; values are text, never markup."""
    from rich.markup import escape
    from rich.panel import Panel
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for label, value in lines:
        grid.add_row(label, escape(value))  # a path may hold `[...]`: text, not markup
    return Panel(grid, title=title, expand=False)
