"""Errors the core raises for problems with the user's input (exit code 2 in the CLI).

Every message names what is wrong and where (a path, a shard, a tensor, a config key); `hint`
says what to do next. The core never prints and never exits: `cli/` turns these into one line
on stderr.
"""

from __future__ import annotations

import re

# C0/C1 controls (a newline would split the one `Error:` line; ESC starts a terminal sequence),
# the Unicode bidirectional controls (U+202E RIGHT-TO-LEFT OVERRIDE and kin, which reorder what
# a terminal or a browser shows: Trojan Source, CVE-2021-42574), line/paragraph separators and
# lone surrogates (from a non-UTF-8 file name or a JSON escape; no encoder writes them).
_UNPRINTABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ud800-\udfff]"
)


def printable(text: str) -> str:
    """`text` with control characters, bidirectional overrides and lone surrogates escaped
    (`\\n`, `\\x1b`, `\\u202e`, `\\udcff`).

    Names in messages come from the input (tensor names, file names, config keys): escaped here,
    every message is one line that any stream can encode. The one definition: every view for
    people uses it too (`render.common.visible`).
    """
    return _UNPRINTABLE.sub(lambda m: ascii(m.group())[1:-1], text)


class NormscopeError(Exception):
    """Base class: nothing could be analysed because of the input."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        message = printable(message)
        super().__init__(message)
        self.message = message
        self.hint = None if hint is None else printable(hint)


class SourceError(NormscopeError):
    """The checkpoint cannot be found or read, or its files are not valid safetensors."""


class ArchError(NormscopeError):
    """The architecture cannot be determined or the checkpoint has no norm tensors."""


class AnalysisError(NormscopeError):
    """The tensors are readable but cannot be analysed as asked (e.g. mismatched dimensions)."""


class ConfigError(NormscopeError):
    """A normscope policy/config file or flag value is invalid."""


class UsageError(NormscopeError):
    """Options that cannot apply together or to this input (the CLI's usage-error exit 2)."""

    def __init__(self, message: str, param: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.param = param
        """The option or argument at fault, e.g. `--revision`."""


class OutputError(NormscopeError):
    """The output (an `-o` file, a plot, a report folder) cannot be written where asked."""


class NotJudged(NormscopeError):
    """A gate was asked for and looked at nothing (its scope matched no norm): it cannot pass
    (exit 2, `normscope.exitcodes`)."""
