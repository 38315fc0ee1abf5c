"""normscope's version, on the bottom floor so that any module may name it in its reports."""

from __future__ import annotations

__version__ = "0.1.0"


def version_line() -> str:
    """What `normscope --version` prints."""
    return f"normscope {__version__}"
