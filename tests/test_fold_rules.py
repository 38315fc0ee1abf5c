"""Consumer and producer patterns of architecture rules: regular expressions of the rule grammar.

Every built-in pattern of `arch/families.py` resolves to the matrices it names, and to the same
ones fold's name vocabulary finds (so a rule never folds a norm against part of its consumers);
user patterns with `(a|b)`, `(x.)?`, no `.weight`, or a matrix above the wrapper prefix
resolve; a pattern that matches nothing is said, not silently replaced.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from normscope import arch
from normscope.arch.families import FAMILIES
from normscope.fold.consumers import ExpertChoice, Plan, consumer_regex, plan_all
from normscope.schema import Module, NormInfo, Parametrization, Role, TensorRef

H = 8
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def ref(name: str, shape: tuple[int, ...]) -> TensorRef:
    return TensorRef(name, "model.safetensors", "BF16", shape, 0, 0)


def expand(pattern: str) -> list[str]:
    """Every name a pattern (without placeholders) matches: `(a|b)` and `(x.)?` spelled out."""
    m = re.search(r"\(([^()]*)\)(\?)?", pattern)
    if m is None:
        return [pattern]
    options = m.group(1).split("|") + ([""] if m.group(2) else [])
    return [n for o in options for n in expand(pattern[: m.start()] + o + pattern[m.end() :])]


def _fill(pattern: str) -> str:
    return pattern.replace("{L}", "1").replace("{M}", "0")


def _plans(infos: list[NormInfo], tensors: dict[str, TensorRef], family: str) -> list[Plan]:
    return plan_all(infos, tensors, family, ExpertChoice())


def _without_rules(infos: list[NormInfo]) -> list[NormInfo]:
    return [dataclasses.replace(i, consumers=(), producers=()) for i in infos]


def _parts(plan: Plan) -> tuple[object, ...]:
    return (plan.consumers, plan.producers, plan.experts_sampled, plan.reason)


BUILTIN = [
    (family, rule)
    for family in FAMILIES
    for rule in family.rules
    if rule.consumers or rule.producers
]


@pytest.mark.parametrize(
    ("family", "rule"), BUILTIN, ids=[f"{f.name}:{r.pattern}" for f, r in BUILTIN]
)
def test_every_builtin_pattern_resolves(family: arch.Family, rule: arch.NormRule) -> None:
    """The norm of each rule, alone with every matrix its patterns name: the rule names them
    all, and fold's name vocabulary finds the same ones."""
    norm = expand(_fill(rule.pattern))[0]
    weight = norm + ("_weight" if norm.endswith(".layer_norm") else ".weight")
    tensors = {weight: ref(weight, (H,)), "model.embed_tokens.weight": ref("e", (32, H))}
    if not family.model_types:  # chosen by its names (Megatron-Core): a decoder's final norm
        tensors["decoder.final_layernorm.weight"] = ref("decoder.final_layernorm.weight", (H,))
    wanted = set()
    for pattern in (*rule.consumers, *rule.producers):
        filled = _fill(pattern)
        # A pattern with an index is written from the model's root (`layers.{L}.eh_proj`);
        # one without, relative to the norm's layer (`self_attention.linear_qkv`), or beside
        # the norm (`eh_proj`).
        at = norm.find("." + filled.split(".")[0] + ".")
        block = norm[: at + 1] if at > 0 else norm.rsplit(".", 1)[0] + "."
        if "{L}" in pattern or "{M}" in pattern or norm.startswith(filled.split(".")[0] + "."):
            block = ""
        for name in expand(block + filled):
            wide = rule.role.value in ("mtp_embedding", "mtp_hidden")
            tensors[name + ".weight"] = ref(name + ".weight", (H, 2 * H) if wide else (H, H))
            wanted.add(name + ".weight")
    config = {
        "model_type": (family.model_types or ("",))[0],
        "hidden_size": H,
        "num_hidden_layers": 1,
        "num_nextn_predict_layers": 1,
    }
    infos = [i for i in arch.classify(tensors, config).norms if i.name == weight]
    assert len(infos) == 1 and infos[0].rule == f"{family.name}:{rule.pattern}", infos
    assert infos[0].consumers or infos[0].producers
    (plan,) = _plans(infos, tensors, family.name)
    assert plan.unmatched == ()  # the rule's patterns decided
    assert {p.tensor for p in (*plan.consumers, *plan.producers)} == wanted
    (by_name,) = _plans(_without_rules(infos), tensors, family.name)
    assert _parts(plan) == _parts(by_name)


_WITH_PATTERNS = {f.name for f, _ in BUILTIN}
FIXTURE_DIRS = sorted(p for p in FIXTURES.iterdir() if p.is_dir() and p.name.endswith("trained"))


@pytest.mark.parametrize("fixture", FIXTURE_DIRS, ids=[p.name for p in FIXTURE_DIRS])
def test_rule_consumers_equal_the_name_vocabulary_on_every_fixture(fixture: Path) -> None:
    """On each family's fixture, every norm whose rule names consumers gets exactly the
    matrices the name vocabulary finds, and the rule's patterns are what matched."""
    from normscope.scanner import ScanOptions, analyze_checkpoint
    from normscope.sources import open_checkpoint

    checkpoint = open_checkpoint(fixture)
    measured = analyze_checkpoint(checkpoint, ScanOptions(), 0.0)
    family = measured.report.model.family
    infos = list(measured.infos)
    by_rules = _plans(infos, checkpoint.tensors, family)
    by_name = _plans(_without_rules(infos), checkpoint.tensors, family)
    for a, b in zip(by_rules, by_name, strict=True):
        if a.info.consumers or a.info.producers:
            assert a.unmatched == (), a.info.name
        assert _parts(a) == _parts(b), a.info.name
    assert any(i.consumers for i in infos) or family not in _WITH_PATTERNS


def _infos(tensors: dict[str, TensorRef], consumers: tuple[str, ...]) -> list[NormInfo]:
    info = NormInfo(
        "model.blocks.2.pre_norm.weight",
        Module.main,
        None,
        2,
        Role.attn_input,
        None,
        Parametrization.standard,
        consumers=consumers,
    )
    return [info]


@pytest.mark.parametrize(
    ("pattern", "found"),
    [
        (
            "blocks.2.(mix.wq|mix.wkv)",
            {"model.blocks.2.mix.wq.weight", "model.blocks.2.mix.wkv.weight"},
        ),
        ("blocks.2.mix.wq", {"model.blocks.2.mix.wq.weight"}),  # no .weight in the pattern
        ("blocks.2.mix.wq.weight", {"model.blocks.2.mix.wq.weight"}),
        ("blocks.2.(gated.)?mix.wq", {"model.blocks.2.mix.wq.weight"}),
        ("mix.wkv", {"model.blocks.2.mix.wkv.weight"}),  # relative to the norm's block
        ("head", {"head.weight"}),  # above the wrapper prefix: the root
        ("blocks.2.{ANY}.wq", {"model.blocks.2.mix.wq.weight"}),
    ],
)
def test_user_patterns_are_regexes_anchored_at_the_nearest_ancestor(
    pattern: str, found: set[str]
) -> None:
    names = ["model.blocks.2.pre_norm.weight", "model.blocks.2.mix.wq.weight"]
    names += ["model.blocks.2.mix.wkv.weight", "model.blocks.3.mix.wq.weight", "head.weight"]
    tensors = {n: ref(n, (H,) if "norm" in n else (H, H)) for n in names}
    (plan,) = _plans(_infos(tensors, (pattern,)), tensors, "zephyrine")
    assert {p.tensor for p in plan.consumers} == found
    assert plan.unmatched == ()


def test_a_pattern_matching_nothing_is_said_and_the_names_decide() -> None:
    names = ["model.blocks.2.pre_norm.weight", "model.blocks.2.attn.q_proj.weight"]
    tensors = {n: ref(n, (H,) if "norm" in n else (H, H)) for n in names}
    (plan,) = _plans(_infos(tensors, ("blocks.2.mixer.in_proj",)), tensors, "zephyrine")
    assert plan.unmatched == ("blocks.2.mixer.in_proj",)
    assert [p.tensor for p in plan.consumers] == ["model.blocks.2.attn.q_proj.weight"]


def test_the_regex_is_anchored_and_literal() -> None:
    regex = consumer_regex("layers.1.mlp.(gate_proj|up_proj)")
    assert regex.match("layers.1.mlp.gate_proj.weight")
    assert regex.match("layers.1.mlp.up_proj")
    assert not regex.match("layers.1.mlp.gate_proj.weight_scale_inv")
    assert not regex.match("layers.11.mlp.gate_proj.weight")
    assert not regex.match("layers.1Xmlp.gate_proj.weight")  # '.' is a dot, not any character


_USER_RULES = """
[[family]]
name = "llama-{name}"
model_types = ["llama"]
parametrization = "standard"
source = "tests/test_fold_rules.py (a user's rules file)"
extends = "llama"

[[family.norm]]
pattern = "layers.{{L}}.input_layernorm"
role = "attn_input"
consumers = ["{pattern}"]
"""


@pytest.mark.parametrize(
    ("pattern", "folded_against"),
    [
        ("layers.{L}.self_attn.(q_proj|k_proj)", ("k_proj", "q_proj")),  # the rule decides
        ("layers.{L}.self_attn.qkv_typo", ("k_proj", "q_proj", "v_proj")),  # the names decide
    ],
)
def test_a_users_consumer_patterns_in_a_fold(
    tmp_path: Path, pattern: str, folded_against: tuple[str, ...]
) -> None:
    from normscope.fold import FoldOptions, fold

    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(_USER_RULES.format(name="x", pattern=pattern))
    options = FoldOptions(device="cpu", rules=arch.load_rules(rules_file))
    report = fold(FIXTURES / "llama-trained", options)
    inputs = [n for n in report.norms if n.role is Role.attn_input]
    assert report.model.family == "llama-x" and len(inputs) > 1
    for n in inputs:
        assert tuple(sorted(c.rsplit(".", 2)[-2] for c in n.consumers)) == folded_against
    said = [w for w in report.warnings if "matched no tensor" in w]
    if "typo" in pattern:
        assert said == [
            f"{len(inputs)} norm(s): the rules' consumer pattern(s) matched no tensor, the "
            f"matrices were found by name instead, e.g. '{inputs[0].name}' "
            f"('layers.0.self_attn.qkv_typo')"
        ]
    else:
        assert said == []
