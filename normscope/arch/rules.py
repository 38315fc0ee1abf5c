"""The rule format: `Family` and `NormRule`, their validation from TOML-shaped data, the pattern
compiler, and the combined index that matches every name once against every table.

The built-in tables (`families.py`, `vocab.py`) and a user's rules file are written in the same
format and go through the same `parse_family`, so a user can copy a built-in table, change it and
load it with `load_rules`. `dump_rules` writes tables back as TOML (the round trip is tested).

Patterns match the *canonical* name of a norm (`vocab.parse_site`): the tensor name without its
parameter suffix (`.weight`, `.bias`, TE's `.layer_norm_weight`), without a wrapper prefix
(`model.`, `model.language_model.`, `transformer.`, ...), without sublayer/head indices (LongCat
`input_layernorm.0`, StableLM `norms.3`) and without a leaf wrapper (`enorm.m`). The layer or MTP
index after a container word (`layers.7`, `mtp.0`, `mtp_emb_norm.0`) is kept. In a pattern `.`
is a literal dot, `(a|b)` an alternative, `{L}` a layer index, `{M}` a 0-based MTP index, `{ANY}`
any text and `{NORM}` one name component that names a norm.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from normscope.errors import ConfigError
from normscope.schema import Group, Module, Parametrization, Role


@dataclass(frozen=True, slots=True)
class NormRule:
    """One norm name pattern and what a match means."""

    pattern: str
    role: Role
    """The role when the name matches; `alt_roles` may replace it when the width says so."""
    module: Module | None = None
    """None: from the name's structure (an MTP container or an MTP layer N+k is `mtp`)."""
    parametrization: Parametrization | None = None
    """Pinned for this tensor (e.g. Qwen3-Next's standard `linear_attn.norm`); None: the config's
    zero-centred flag, else the family's default."""
    group: Group | None = None
    """None: derived from the role by `default_group`."""
    if_present: str | None = None
    """Only match if this sibling tensor (the norm's last name component replaced) exists."""
    alt_roles: tuple[Role, ...] = ()
    """Roles the width may choose instead of `role` (config widths break ties, never the name)."""
    mtp_depth: int | None = None
    """Fixed 1-based MTP depth for MTP norms whose name carries no index."""
    if_block_type: tuple[str, ...] = ()
    """Only match when the config's block type (OLMo-core `block.name`) is one of these."""
    consumers: tuple[str, ...] = ()
    """Patterns of the linear maps that read this norm's output (for folding γ away)."""
    producers: tuple[str, ...] = ()
    """Patterns of the tensors whose output this norm normalises."""
    at_stack_end: bool = False
    """Only a norm outside every block, in the module holding a stack (`structure.py`)."""
    if_final_norm: bool | None = None
    """Only when the norm's stack ends (true) or not (false) in a final norm: pre/post-LN."""


@dataclass(frozen=True, slots=True)
class Family:
    """The norm rules of one architecture family (or of one naming vocabulary)."""

    name: str
    model_types: tuple[str, ...]
    architectures: tuple[str, ...]
    parametrization: Parametrization
    rules: tuple[NormRule, ...]
    source: str
    """Where the rules come from (repository @ commit : path)."""
    mtp_in_layers: bool = False
    """MTP modules are stored as extra trunk layers `layers.{N+k}` even without enorm/hnorm
    markers (MiniMax-M2): layers from config's num_hidden_layers on are MTP."""
    final_norm: bool = True
    """False for encoders (BERT) that have no final norm before a head."""
    note: str | None = None
    """A caveat shown as a warning whenever this family is used."""


@dataclass(frozen=True, slots=True)
class RuleSet:
    """User families loaded from a rules file or `[tool.normscope.rules]`; empty by default."""

    families: tuple[Family, ...] = ()
    origin: tuple[str, ...] = ()
    """Where the families came from (file paths or `pyproject.toml [tool.normscope.rules]`)."""

    def __bool__(self) -> bool:
        return bool(self.families)

    def merged(self, other: RuleSet) -> RuleSet:
        """Both rule sets; `other`'s families take precedence (they are tried first)."""
        return RuleSet(other.families + self.families, self.origin + other.origin)


# --- validation ---------------------------------------------------------------------------------

_FAMILY_KEYS = {
    "name": "the family's name (required)",
    "model_types": "config.json model_type values it claims",
    "architectures": "config.json architectures it claims",
    "parametrization": "standard or offset: the default of its norms",
    "source": "where the facts come from",
    "extends": "a built-in family whose rules follow these",
    "mtp_in_layers": "MTP stored as layers N+k",
    "final_norm": "whether the model has a final norm",
    "note": "a caveat shown with every scan",
    "norm": "the rules: an array of [[family.norm]] tables (required)",
}
_RULE_KEYS = {
    "pattern": "the canonical name pattern (required)",
    "role": "a role, or a list: the first is the default, the others chosen by width",
    "module": "main or mtp",
    "mtp_depth": "a fixed 1-based MTP depth",
    "parametrization": "standard or offset, pinned for this tensor",
    "group": "input or output",
    "if_present": "a sibling tensor that must exist",
    "if_block_type": "config block types this rule is limited to",
    "consumers": "patterns of the maps reading the norm's output",
    "producers": "patterns of the tensors it normalises",
    "at_stack_end": "outside every block, in the module holding a stack (a final norm)",
    "if_final_norm": "only when the norm's stack ends (true) or not (false) in a final norm",
}
_PLACEHOLDERS = {"{L}", "{M}", "{ANY}", "{NORM}"}
_PATTERN_CHARS = re.compile(r"[A-Za-z0-9_.|(){}?\-]+")


def _enum(enum: Any, key: str, value: Any, where: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(m.value for m in enum)
        raise ConfigError(f"{key} must be one of {choices}, not {value!r} ({where})") from None


def _str(key: str, value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a non-empty string, not {value!r} ({where})")
    return value


def _strs(key: str, value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{key} must be a list of strings, not {value!r} ({where})")
    return tuple(value)


def _bool(key: str, value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, not {value!r} ({where})")
    return value


def _opt_bool(table: Mapping[str, Any], key: str, name: str, where: str) -> bool | None:
    return _bool(f"{key}.{name}", table[name], where) if name in table else None


def check_pattern(key: str, pattern: Any, where: str) -> str:
    """Validate one pattern (raise ConfigError naming `key`) and return it."""
    pattern = _str(key, pattern, where)
    problem = None
    if not _PATTERN_CHARS.fullmatch(pattern):
        problem = "only letters, digits, '_', '-', '.', '(a|b)', '(x.)?' and {L} {M} {ANY} {NORM}"
    elif set(re.findall(r"\{[^}]*\}", pattern)) - _PLACEHOLDERS:
        problem = "unknown placeholder; use {L}, {M}, {ANY} or {NORM}"
    elif pattern.count("{L}") > 1 or pattern.count("{M}") > 1:
        problem = "{L} and {M} may appear once each"
    elif any(c.isdigit() for c in re.split(r"[.|()]", pattern)):
        problem = "a component that is a number: write the index as {L} or {M}"
    elif pattern.startswith(".") or pattern.endswith(".") or ".." in pattern:
        problem = "empty name component"
    if problem is not None:
        raise ConfigError(f"{key} = {pattern!r}: {problem} ({where})")
    return pattern


@functools.cache
def rule_regex(pattern: str) -> re.Pattern[str]:
    """The compiled, anchored regex of a rule pattern, compiled once per process on first use.

    NOTE: compiled lazily, not when a table is parsed: the ~250 built-in patterns cost ~25 ms
    to compile, paid at every start-up, while a scan matches only the few rules whose last
    component its names end in (`RuleIndex`). User rules are compiled when read
    (`_check_regexes`), so a broken pattern is still refused naming its key.
    """
    return re.compile(f"^{compile_pattern(pattern)}$")


def _regex_problem(pattern: str) -> str | None:
    try:
        rule_regex(pattern)
    except re.error as exc:
        return f"not a valid pattern ({exc})"
    return None


def _check_regexes(family: Family, own: int, key: str, where: str) -> None:
    """Compile the patterns of `family`'s first `own` rules (those of its table, not `extends`)."""
    for j, rule in enumerate(family.rules[:own]):
        for field_name, patterns in (
            ("pattern", (rule.pattern,)),
            ("consumers", rule.consumers),
            ("producers", rule.producers),
        ):
            for pattern in patterns:
                problem = _regex_problem(pattern)
                if problem is not None:
                    raise ConfigError(
                        f"{key} ('{family.name}').norm[{j}].{field_name} = {pattern!r}: "
                        f"{problem} ({where})"
                    )


def _unknown_key(key: str, known: Mapping[str, str], where: str) -> ConfigError:
    return ConfigError(f"unknown key '{key}' ({where})", hint=f"known keys: {', '.join(known)}")


def parse_rule(table: Any, key: str, where: str) -> NormRule:
    """Validate one `[[family.norm]]` table."""
    if not isinstance(table, dict):
        raise ConfigError(f"{key} must be a table ({where})")
    for k in table:
        if k not in _RULE_KEYS:
            raise _unknown_key(f"{key}.{k}", _RULE_KEYS, where)
    for required in ("pattern", "role"):
        if required not in table:
            raise ConfigError(f"{key}.{required} is required ({where})")
    roles = table["role"] if isinstance(table["role"], list) else [table["role"]]
    if not roles:
        raise ConfigError(f"{key}.role must name at least one role ({where})")
    parsed = [_enum(Role, f"{key}.role", r, where) for r in roles]
    depth = table.get("mtp_depth")
    if depth is not None and (type(depth) is not int or not 1 <= depth <= 64):
        raise ConfigError(f"{key}.mtp_depth must be a whole number 1..64, not {depth!r} ({where})")
    opt = table.get
    return NormRule(
        pattern=check_pattern(f"{key}.pattern", table["pattern"], where),
        role=parsed[0],
        module=_enum(Module, f"{key}.module", opt("module"), where) if "module" in table else None,
        parametrization=(
            _enum(Parametrization, f"{key}.parametrization", opt("parametrization"), where)
            if "parametrization" in table
            else None
        ),
        group=_enum(Group, f"{key}.group", opt("group"), where) if "group" in table else None,
        if_present=_str(f"{key}.if_present", opt("if_present"), where)
        if "if_present" in table
        else None,
        alt_roles=tuple(parsed[1:]),
        mtp_depth=depth,
        if_block_type=_strs(f"{key}.if_block_type", opt("if_block_type", []), where),
        consumers=tuple(
            check_pattern(f"{key}.consumers", p, where)
            for p in _strs(f"{key}.consumers", opt("consumers", []), where)
        ),
        producers=tuple(
            check_pattern(f"{key}.producers", p, where)
            for p in _strs(f"{key}.producers", opt("producers", []), where)
        ),
        at_stack_end=bool(_opt_bool(table, key, "at_stack_end", where)),
        if_final_norm=_opt_bool(table, key, "if_final_norm", where),
    )


def parse_family(
    table: Any, key: str, where: str, bases: Mapping[str, Family] | None = None
) -> Family:
    """Validate one `[[family]]` table; `extends` looks names up in `bases`."""
    if not isinstance(table, dict):
        raise ConfigError(f"{key} must be a table ({where})")
    for k in table:
        if k not in _FAMILY_KEYS:
            raise _unknown_key(f"{key}.{k}", _FAMILY_KEYS, where)
    if "name" not in table:
        raise ConfigError(f"{key}.name is required ({where})")
    name = _str(f"{key}.name", table["name"], where)
    key = f"{key} ('{name}')"
    base: Family | None = None
    if "extends" in table:
        ext = _str(f"{key}.extends", table["extends"], where)
        if bases is None or ext not in bases:
            known = ", ".join(sorted(bases or {}))
            raise ConfigError(f"{key}.extends names no known family: {ext!r} ({where})", hint=known)
        base = bases[ext]
    norms = table.get("norm", [])
    if not isinstance(norms, list) or (not norms and base is None):
        raise ConfigError(f"{key}.norm must be a non-empty array of tables ({where})")
    rules = tuple(parse_rule(t, f"{key}.norm[{i}]", where) for i, t in enumerate(norms))
    param = table.get("parametrization")
    return Family(
        name=name,
        model_types=_strs(f"{key}.model_types", table.get("model_types", []), where),
        architectures=_strs(f"{key}.architectures", table.get("architectures", []), where),
        parametrization=(
            _enum(Parametrization, f"{key}.parametrization", param, where)
            if param is not None
            else (base.parametrization if base else Parametrization.standard)
        ),
        rules=rules + (base.rules if base else ()),
        source=_str(f"{key}.source", table["source"], where)
        if "source" in table
        else (base.source if base else where),
        mtp_in_layers=_bool(f"{key}.mtp_in_layers", table["mtp_in_layers"], where)
        if "mtp_in_layers" in table
        else bool(base and base.mtp_in_layers),
        final_norm=_bool(f"{key}.final_norm", table["final_norm"], where)
        if "final_norm" in table
        else (base.final_norm if base else True),
        note=_str(f"{key}.note", table["note"], where) if "note" in table else None,
    )


def parse_families(
    data: Any, where: str, bases: Mapping[str, Family] | None = None
) -> tuple[Family, ...]:
    """Validate a rules document: `{"family": [<family table>, ...]}`."""
    if not isinstance(data, dict):
        raise ConfigError(f"rules must be a table ({where})")
    for k in data:
        if k != "family":
            raise _unknown_key(k, {"family": "an array of [[family]] tables"}, where)
    tables = data.get("family", [])
    if not isinstance(tables, list):
        raise ConfigError(f"family must be an array of [[family]] tables ({where})")
    known = dict(bases or {})
    out: list[Family] = []
    for i, table in enumerate(tables):
        family = parse_family(table, f"family[{i}]", where, known)
        _check_regexes(family, len(table.get("norm", [])), f"family[{i}]", where)
        if any(f.name == family.name for f in out):
            raise ConfigError(f"family[{i}].name {family.name!r} is used twice ({where})")
        out.append(family)
        known[family.name] = family
    return tuple(out)


# --- matching -----------------------------------------------------------------------------------


def compile_pattern(pattern: str) -> str:
    """The regex (without anchors) of one pattern."""
    out = pattern.replace(".", r"\.").replace("(", "(?:")
    out = out.replace("{L}", r"(?P<layer>[0-9]+)").replace("{M}", r"(?P<mtp>[0-9]+)")
    out = out.replace("{NORM}", r"(?:[^.]*(?:norm|Norm)[^.]*|ln_?[^.]*)")
    return out.replace("{ANY}", ".*")


def _last_components(pattern: str) -> set[str] | None:
    """Every literal last name component a pattern can end in; None: any (a placeholder)."""
    alternatives = [pattern]
    while any("(" in a for a in alternatives):
        expanded = []
        for a in alternatives:
            m = re.search(r"\(([^()]*)\)", a)
            if m is None:
                expanded.append(a)
                continue
            options = m.group(1).split("|")
            end = m.end()
            if a[end : end + 1] == "?":  # an optional group
                options, end = [*options, ""], end + 1
            expanded += [a[: m.start()] + alt + a[end:] for alt in options]
        alternatives = expanded
    lasts = set()
    for a in alternatives:
        last = a.rsplit(".", 1)[-1]
        if last in ("{L}", "{M}"):
            last = "#"
        elif "{" in last or not last:
            return None
        lasts.add(last)
    return lasts


def bucket_key(canonical: str) -> str:
    """The index key of a canonical name: its last component (`#` for an index)."""
    last = canonical.rsplit(".", 1)[-1]
    return "#" if last.isdigit() else last


@dataclass(frozen=True, slots=True)
class Hit:
    """One rule of one table whose pattern matches a canonical name template."""

    table: int
    rule: NormRule
    index_kind: str | None
    """`layer` or `mtp`: which placeholder captured the name's index (None: none did)."""


@dataclass
class RuleIndex:
    """Every rule of several tables, bucketed by the last component its pattern can end in.

    `hits(template)` matches one canonical name template against the few rules of its bucket
    and remembers the answer, so a checkpoint costs one dictionary look-up per norm plus one
    regex pass per distinct template (tens, whatever the number of layers or experts).
    """

    tables: Sequence[Family]
    _buckets: dict[str, list[tuple[int, int, NormRule]]] = field(default_factory=dict)
    _wild: list[tuple[int, int, NormRule]] = field(default_factory=list)
    _memo: dict[str, tuple[Hit, ...]] = field(default_factory=dict)
    matches: int = 0
    """Regex matches run so far (the cost the index exists to bound)."""

    def __post_init__(self) -> None:
        for t, family in enumerate(self.tables):
            for r, rule in enumerate(family.rules):
                entry = (t, r, rule)
                lasts = _last_components(rule.pattern)
                if lasts is None:
                    self._wild.append(entry)
                else:
                    for last in lasts:
                        self._buckets.setdefault(last, []).append(entry)

    def keys(self) -> set[str]:
        """The last components some rule can end in (`#`: an index)."""
        return set(self._buckets)

    def wild_heads(self) -> set[str]:
        """The literal text before the first placeholder of each rule that can end anywhere."""
        return {re.split(r"[{(]", entry[2].pattern, maxsplit=1)[0] for entry in self._wild}

    def hits(self, template: str) -> tuple[Hit, ...]:
        """Every (table, rule) matching `template`, in table then rule order."""
        found = self._memo.get(template)
        if found is not None:
            return found
        entries = self._buckets.get(bucket_key(template), []) + self._wild
        out = []
        for t, _r, rule in sorted(entries, key=lambda e: (e[0], e[1])):
            self.matches += 1
            m = rule_regex(rule.pattern).match(template)
            if m is not None:
                groups = m.groupdict()
                kind = "mtp" if groups.get("mtp") else "layer" if groups.get("layer") else None
                out.append(Hit(t, rule, kind))
        self._memo[template] = result = tuple(out)
        return result
