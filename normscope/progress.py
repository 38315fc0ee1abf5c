"""The progress bar of a series, drawn on stderr: one definition for the command line and the
Python API (`normscope.series(..., progress=...)`).

On by default only where stderr is a terminal (a log file or a pipe gets no bar); `show=False`
turns it off, `show=True` draws it even on a stream that is no terminal. Transient: gone once the
series is measured. rich draws it (and formats the byte count, decimal units as the reports).

`bars_allowed` is the rule of every bar normscope draws (series, Hub transfers, fold), as
huggingface_hub's `utils/tqdm.py` has it: `HF_HUB_DISABLE_PROGRESS_BARS=1` turns them all off
and wins over everything, even `progress=True`; `huggingface_hub.utils.disable_progress_bars()`
(all groups, or the group "normscope") turns them off where huggingface_hub is already loaded.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from normscope.series import ProgressCallback, SeriesProgress


DISABLE_ENV = "HF_HUB_DISABLE_PROGRESS_BARS"
_TRUE = ("1", "ON", "YES", "TRUE")
"""huggingface_hub's `constants.ENV_VARS_TRUE_VALUES`, compared upper-cased as it does."""
GROUP = "normscope"
"""The group of `huggingface_hub.utils.disable_progress_bars(GROUP)`."""


def bars_allowed() -> bool:
    """False when huggingface_hub's settings turn progress bars off (see the module's text).

    NOTE: the variable is read at each call (huggingface_hub reads it once, at import), and the
    library's programmatic switch only when it is already imported: a local scan never pays
    for importing it."""
    if os.environ.get(DISABLE_ENV, "").strip().upper() in _TRUE:
        return False
    tqdm = sys.modules.get("huggingface_hub.utils.tqdm")
    disabled = getattr(tqdm, "are_progress_bars_disabled", None)
    return not (callable(disabled) and disabled(GROUP))


@contextmanager
def series_bar(
    show: bool | None = None, console: Console | None = None
) -> Iterator[ProgressCallback | None]:
    """A progress callback for `measure_series` drawing a bar, or None when it is not shown."""
    if show is False or (show is None and not sys.stderr.isatty()) or not bars_allowed():
        yield None
        return
    from rich.console import Console
    from rich.filesize import decimal
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    if console is None:
        console = Console(stderr=True, highlight=False, force_terminal=show or None)
    columns: tuple[Any, ...] = (TextColumn("measuring"), BarColumn(), MofNCompleteColumn())
    extra = (TextColumn("{task.fields[read]}"), TimeRemainingColumn())
    with Progress(*columns, *extra, console=console, transient=True) as bar:
        task = bar.add_task("series", total=None, read="")

        def update(event: SeriesProgress) -> None:
            read = f"{decimal(event.bytes_read)} read"
            bar.update(task, total=event.total, completed=event.done, read=read)

        yield update
