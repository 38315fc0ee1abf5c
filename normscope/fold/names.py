"""Tensor names as fold looks them up: sorted once, searched by prefix, matched by pattern.

A norm's name gives its base (without `.weight`, or TE's `.layer_norm_weight`), its parent
block and the block's ancestors; a rule's consumer pattern (the rule grammar of
`arch.rules.compile_pattern`, indices filled) is an anchored regular expression, `.weight`
optional, tried at those ancestors nearest first. Pure: names in, names out.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from normscope.arch.rules import compile_pattern
from normscope.schema import TensorRef


@dataclass
class Names:
    """The checkpoint's tensor names, sorted once for prefix look-ups (92k names in DeepSeek-V3)."""

    tensors: Mapping[str, TensorRef]
    ordered: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ordered = sorted(self.tensors)

    def under(self, prefix: str) -> list[str]:
        """Names starting with `prefix`, by bisection."""
        lo = bisect.bisect_left(self.ordered, prefix)
        hi = bisect.bisect_left(self.ordered, prefix + "\U0010ffff")
        return self.ordered[lo:hi]

    def matching(self, prefix: str, pattern: str) -> list[str]:
        """Names `prefix` + a match of the consumer pattern, found by bisection on its literal
        head (a pattern never scans all 92k names)."""
        regex = consumer_regex(pattern)
        found = self.under(prefix + _literal_head(pattern))
        return [n for n in found if regex.match(n[len(prefix) :])]


def base(name: str) -> str:
    """A gain's name without `.weight` (or Transformer Engine's `.layer_norm_weight`)."""
    for suffix in (".layer_norm_weight", ".weight"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def parent(base: str) -> str:
    """'a.b.norm' -> 'a.b.'; '' at the root."""
    return base.rsplit(".", 1)[0] + "." if "." in base else ""


def ancestors(prefix: str) -> list[str]:
    """'a.b.c.' -> ['a.b.c.', 'a.b.', 'a.', '']."""
    parts = prefix.rstrip(".").split(".") if prefix else []
    return [".".join(parts[:k]) + "." if k else "" for k in range(len(parts), -1, -1)]


@functools.cache
def consumer_regex(pattern: str) -> re.Pattern[str]:
    """A consumer pattern (rule grammar, indices filled): an anchored regex, `.weight` optional."""
    return re.compile(rf"^{compile_pattern(pattern)}(?:\.weight)?$")


def _literal_head(pattern: str) -> str:
    """The pattern's text before its first group or placeholder (the bisection key)."""
    cut = min((i for i in (pattern.find("("), pattern.find("{")) if i >= 0), default=len(pattern))
    return pattern[:cut]
