"""The `normscope` command line: the only part of normscope that prints or exits.

`options.py` defines every flag once, `output.py` decides where output goes (data to stdout or
an atomic `-o` file; warnings, FAIL lines and errors to stderr), `inputs.py` checks what several
commands take; `app.py` holds the app and scan, diff, series and cache, `gate.py` check,
`folding.py` fold, `runs.py` what series does around its measurement.
"""

from __future__ import annotations

import os
import sys
import traceback
import types
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    import typer

__all__ = ["app", "main"]


class _Cli(types.ModuleType):
    """This package, whose `app` (the typer app) is built on first use: `normscope --version`
    answers without importing typer (~30 ms)."""

    @property
    def app(self) -> typer.Typer:
        if "_typer_app" not in self.__dict__:
            from normscope.cli.app import app

            self.__dict__["_typer_app"] = app
        return self.__dict__["_typer_app"]

    @app.setter
    def app(self, value: typer.Typer) -> None:
        # The import system binds the submodule `normscope.cli.app` here once it is loaded:
        # `normscope.cli.app` stays the typer app, as when this package imported it eagerly.
        if not isinstance(value, types.ModuleType):
            self.__dict__["_typer_app"] = value


sys.modules[__name__].__class__ = _Cli
_this = cast("_Cli", sys.modules[__name__])


def main() -> None:
    """Console-script entry point."""
    # NOTE: numpy's OpenBLAS starts a thread per core when numpy is imported (~25 ms of a scan's
    # wall time, ~90 ms CPU on 2 cores) and normscope never multiplies a matrix: one thread. Only
    # here, in the command line's own process, and only when the user has not chosen; the
    # library (`import normscope`) leaves its host's settings alone. numpy is imported lazily
    # (inside the commands), so this runs before it. `fold` reduces matrices (torch, whose
    # builds on some platforms use OpenBLAS): it keeps every thread.
    if sys.argv[1:] == ["--version"]:  # what typer's eager --version prints, without typer
        from normscope.version import version_line

        print(version_line())
        return
    command = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    if command != "fold":
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        _this.app()
    except SystemExit:
        raise
    except BaseException:  # pragma: no cover - output.errors() handles errors inside commands
        traceback.print_exc()
        sys.exit(3)
