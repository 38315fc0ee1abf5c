"""The progress bar of a series, drawn on stderr: one definition for the command line and the
Python API (`normscope.series(..., progress=...)`).

On by default only where stderr is a terminal (a log file or a pipe gets no bar); `show=False`
turns it off, `show=True` draws it even on a stream that is no terminal. Transient: gone once the
series is measured. rich draws it (and formats the byte count, decimal units as the reports).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from normscope.series import ProgressCallback, SeriesProgress


@contextmanager
def series_bar(
    show: bool | None = None, console: Console | None = None
) -> Iterator[ProgressCallback | None]:
    """A progress callback for `measure_series` drawing a bar, or None when it is not shown."""
    if show is False or (show is None and not sys.stderr.isatty()):
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
