"""Scope selectors: which norms a gate looks at.

Grammar: terms separated by `,` are alternatives (OR); conditions joined by `&` inside a term
must all hold (AND). Conditions:

  final            the main model's final norm (of the text tower; each stack's in an
                   encoder-decoder)
  mtp              every norm of every MTP module
  all              every norm
  role=ROLE        e.g. role=mlp_input (see `normscope.schema.Role`)
  module=main|mtp
  group=input|output
  layer=N, layer>=N, layer>N, layer<=N, layer<N   (trunk layer index; norms without one never match)
  depth=N          MTP depth
  name=GLOB        fnmatch pattern on the tensor name, e.g. name=*q_norm*

`default` is an alias of `final,mtp`, the norms the diagnostic playbook gates. Examples:
`--scope all`, `--scope final,mtp,role=qk`, `--scope 'role=mlp_input&layer>=40'`.
"""

from __future__ import annotations

import fnmatch
import operator
import re
from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

from normscope.enums import DEFAULT_SCOPE, Group, Module, Role, Tower
from normscope.errors import ConfigError


class Located(Protocol):
    """What a selector looks at: NormStats and NormDiff both have these fields."""

    @property
    def name(self) -> str: ...
    @property
    def module(self) -> Module: ...
    @property
    def mtp_depth(self) -> int | None: ...
    @property
    def layer(self) -> int | None: ...
    @property
    def role(self) -> Role: ...
    @property
    def group(self) -> Group | None: ...


Condition = Callable[[Located], bool]
_L = TypeVar("_L", bound=Located)

_COMPARE = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "=": operator.eq,
}
_CONDITION = re.compile(r"^(?P<key>[a-z_]+)\s*(?P<op>>=|<=|>|<|=)\s*(?P<value>.+)$")


def _int(key: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"scope condition {key}: '{value}' is not an integer") from None


def _condition(text: str) -> Condition:
    text = text.strip()
    if text == "final":
        return lambda n: (
            n.role is Role.final
            and n.module is Module.main
            and getattr(n, "tower", Tower.text) is Tower.text
        )
    if text == "mtp":
        return lambda n: n.module is Module.mtp
    if text == "all":
        return lambda n: True
    m = _CONDITION.match(text)
    if m is None:
        raise ConfigError(
            f"invalid scope condition '{text}'",
            hint="use final, mtp, all, role=ROLE, module=main|mtp, group=input|output, "
            "layer>=N, depth=N or name=GLOB, joined by ',' (or) and '&' (and)",
        )
    key, op, value = m.group("key"), m.group("op"), m.group("value").strip()
    compare = _COMPARE[op]
    if key == "layer":
        number = _int(key, value)
        return lambda n: n.layer is not None and compare(n.layer, number)
    if key == "depth":
        number = _int(key, value)
        return lambda n: n.mtp_depth is not None and compare(n.mtp_depth, number)
    if op != "=":
        raise ConfigError(f"scope condition '{text}': {key} only takes '='")
    if key == "role":
        try:
            role = Role(value)
        except ValueError:
            raise ConfigError(
                f"unknown role '{value}' in scope",
                hint=f"roles: {', '.join(r.value for r in Role)}",
            ) from None
        return lambda n: n.role is role
    if key == "module":
        try:
            module = Module(value)
        except ValueError:
            raise ConfigError(f"unknown module '{value}' in scope (main or mtp)") from None
        return lambda n: n.module is module
    if key == "group":
        try:
            group = Group(value)
        except ValueError:
            raise ConfigError(f"unknown group '{value}' in scope (input or output)") from None
        return lambda n: n.group is group
    if key == "name":
        return lambda n: fnmatch.fnmatchcase(n.name, value)
    raise ConfigError(f"unknown scope key '{key}' in '{text}'")


class Selector:
    """A parsed scope: OR of ANDs of conditions; equal, hashed and pickled by its text.

    Parsed once, where a scope enters (a flag, a config file, the library's defaults), and
    passed around parsed; JSON shows its text (`__plain__`).
    """

    __slots__ = ("terms", "text")

    def __init__(self, text: str, terms: tuple[tuple[Condition, ...], ...]) -> None:
        self.text = text
        self.terms = terms

    def __call__(self, n: Located) -> bool:
        return any(all(cond(n) for cond in term) for term in self.terms)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Selector) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"Selector({self.text!r})"

    def __reduce__(self) -> tuple[object, tuple[str]]:
        # The conditions are closures: a worker process re-parses the text instead.
        return parse_scope, (self.text,)

    def __plain__(self) -> str:
        return self.text

    def matching(self, norms: Iterable[_L]) -> list[_L]:
        """The norms this scope selects, in order."""
        return [n for n in norms if self(n)]


def parse_scope(text: str) -> Selector:
    """Parse a scope expression; raise ConfigError naming the bad part."""
    text = text.strip()
    if text in ("", "default"):
        text = DEFAULT_SCOPE
    terms = []
    for term in text.split(","):
        if not term.strip():
            raise ConfigError(f"empty term in scope '{text}'")
        terms.append(tuple(_condition(part) for part in term.split("&")))
    return Selector(text, tuple(terms))


DEFAULT = parse_scope(DEFAULT_SCOPE)
"""The playbook's gate scope: the final norm and every MTP norm."""
