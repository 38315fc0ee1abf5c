"""normscope's version, on the bottom floor so that any module may name it in its reports."""

from __future__ import annotations

__version__ = "0.1.0"
