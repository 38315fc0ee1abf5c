"""The exit codes of every command, in one place (README's table says the same, tested).

| code | meaning |
|---|---|
| 0 | judged and passed: the report was produced and no gate tripped (`check`: no error) |
| 1 | a gate tripped: `--fail-on` / `--max-drift`, or a `check` finding of severity error |
| 2 | could not judge: a usage error, bad input (path, file, config, rules, architecture), an
      output that cannot be written, or a gate that looked at nothing (its scope matched no norm) |
| 3 | internal error (a bug): a traceback on stderr |
| 130 | interrupted (SIGINT, Ctrl-C) |
| 143 | terminated (SIGTERM) |

A reader that closes stdout early (`normscope scan ... | head`) does not change the code: the
verdict's own code is returned, with no message and no traceback.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What a command's exit status means."""

    passed = 0
    tripped = 1
    unjudged = 2
    internal = 3
    interrupted = 130
    terminated = 143


class Terminated(BaseException):
    """SIGTERM arrived: unwind like KeyboardInterrupt (no `except Exception` catches it) and exit
    143 (128 + SIGTERM), as a shell reports a process the signal ended."""
