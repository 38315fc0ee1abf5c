"""The `normscope` command line: the only part of normscope that prints or exits.

`options.py` defines every flag once, `output.py` decides where output goes (data to stdout or
an atomic `-o` file; warnings, FAIL lines and errors to stderr), `app.py` holds the commands.
"""

from __future__ import annotations

import sys
import traceback

from normscope.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit:
        raise
    except BaseException:  # pragma: no cover - output.errors() handles errors inside commands
        traceback.print_exc()
        sys.exit(3)
