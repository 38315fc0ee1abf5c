"""Issue #10: the rules format — user rules files, `[tool.normscope.rules]`, validation errors,
the built-in tables round-tripping through the same format, and robustness (huge indices, cost
linear in the number of tensors)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import load_make_fixtures

import normscope
from normscope import arch
from normscope.arch.classify import _select  # the name-based family choice
from normscope.arch.resolve import Tables, candidates, parse_all
from normscope.arch.rules import RuleIndex
from normscope.errors import ArchError, ConfigError
from normscope.scanner import ScanOptions
from normscope.schema import Module, Parametrization, Role, TensorRef

mf = load_make_fixtures()
H = 16

# A made-up architecture: "Zephyrine" pre-mixes tokens with a gated norm before each block, keeps
# a zero-centred output norm after the mixer, and has one MTP head named `lookahead.N`.
ZEPHYRINE = """
[[family]]
name = "zephyrine"
model_types = ["zephyrine"]
parametrization = "standard"
source = "zephyr-labs/zephyrine @abc1234 modeling_zephyrine.py (ZephyrNorm: ones, w * x)"

[[family.norm]]
pattern = "stack.{L}.premix_norm"
role = "attn_input"
consumers = ["stack.{L}.mixer.in_proj"]

[[family.norm]]
pattern = "stack.{L}.postmix_norm"
role = "attn_output"
parametrization = "offset"

[[family.norm]]
pattern = "stack.{L}.channel_norm"
role = "mlp_input"

[[family.norm]]
pattern = "lookahead.{M}.token_norm"
role = "mtp_embedding"
module = "mtp"

[[family.norm]]
pattern = "lookahead.{M}.state_norm"
role = "mtp_hidden"
module = "mtp"

[[family.norm]]
pattern = "out_norm"
role = "final"
"""


def ref(name: str, shape: tuple[int, ...]) -> TensorRef:
    return TensorRef(name, "model.safetensors", "BF16", shape, 0, 0)


def zephyrine_names() -> dict[str, tuple[int, ...]]:
    names: dict[str, tuple[int, ...]] = {"embed.weight": (64, H), "out_norm.weight": (H,)}
    for i in range(2):
        for n in ("premix_norm", "postmix_norm", "channel_norm"):
            names[f"stack.{i}.{n}.weight"] = (H,)
        names[f"stack.{i}.mixer.in_proj.weight"] = (H, H)
    names["lookahead.0.token_norm.weight"] = (H,)
    names["lookahead.0.state_norm.weight"] = (H,)
    names["lookahead.0.proj.weight"] = (H, 2 * H)
    return names


def _write(tmp_path: Path, text: str, name: str = "rules.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_a_rules_file_teaches_a_made_up_architecture(tmp_path: Path) -> None:
    rules = arch.load_rules(_write(tmp_path, ZEPHYRINE))
    tensors = {n: ref(n, s) for n, s in zephyrine_names().items()}
    before = arch.classify(tensors, {"model_type": "zephyrine"})
    assert before.family == "generic" and before.unknown  # not understood without the file
    c = arch.classify(tensors, {"model_type": "zephyrine"}, rules=rules)
    assert c.family == "zephyrine"
    got = {n.name: n for n in c.norms}
    assert len(got) == 9
    p = got["stack.1.premix_norm.weight"]
    assert (p.role, p.layer, p.module, p.parametrization) == (
        Role.attn_input,
        1,
        Module.main,
        Parametrization.standard,
    )
    assert p.consumers == ("stack.1.mixer.in_proj",)
    assert got["stack.0.postmix_norm.weight"].parametrization is Parametrization.offset
    t = got["lookahead.0.token_norm.weight"]
    assert (t.role, t.module, t.mtp_depth, t.layer) == (Role.mtp_embedding, Module.mtp, 1, None)
    assert got["out_norm.weight"].role is Role.final
    assert c.mtp_depth == 1 and c.unknown == [] and c.warnings == []


def test_scan_with_rules_end_to_end(tmp_path: Path) -> None:
    entries = [
        mf.SparseEntry(n, "BF16", s, 1.0 if len(s) == 1 else None)
        for n, s in zephyrine_names().items()
    ]
    mf.write_sparse_layout(tmp_path / "ckpt", entries, {"model_type": "zephyrine"})
    rules = arch.load_rules(_write(tmp_path, ZEPHYRINE))
    r = normscope.scan(tmp_path / "ckpt", ScanOptions(rules=rules))
    assert r.model.family == "zephyrine"
    assert r.model.mtp_depth == 1
    roles = {n.name: (n.role.value, n.parametrization.value) for n in r.norms}
    assert roles["stack.0.postmix_norm.weight"] == ("attn_output", "offset")
    # An offset gain stored as 1.0 is an effective 2.0: ratio 2, explosion (it is read as 1 + w).
    assert {n.name for n in r.norms if n.band.value == "explosion"} == {
        "stack.0.postmix_norm.weight",
        "stack.1.postmix_norm.weight",
    }


def test_rules_extend_a_builtin_family(tmp_path: Path) -> None:
    text = """
[[family]]
name = "llama-plus"
model_types = ["llama_plus"]
extends = "llama"

[[family.norm]]
pattern = "layers.{L}.post_mixer_norm"
role = "attn_output"
"""
    rules = arch.load_rules(_write(tmp_path, text))
    names = {
        "model.layers.0.input_layernorm.weight": (H,),
        "model.layers.0.post_mixer_norm.weight": (H,),
        "model.norm.weight": (H,),
    }
    c = arch.classify(
        {n: ref(n, s) for n, s in names.items()}, {"model_type": "llama_plus"}, rules=rules
    )
    got = {n.name: n.role for n in c.norms}
    assert got == {
        "model.layers.0.input_layernorm.weight": Role.attn_input,
        "model.layers.0.post_mixer_norm.weight": Role.attn_output,
        "model.norm.weight": Role.final,
    }
    assert c.family == "llama-plus"


def test_rules_from_pyproject_and_a_pyproject_file(tmp_path: Path) -> None:
    import tomllib

    text = ZEPHYRINE.replace("[[family]]", "[[tool.normscope.rules.family]]").replace(
        "[[family.norm]]", "[[tool.normscope.rules.family.norm]]"
    )
    data = tomllib.loads(text)
    rules = arch.rules_from_pyproject(data["tool"]["normscope"]["rules"], "pyproject.toml")
    assert [f.name for f in rules.families] == ["zephyrine"]
    assert rules.origin == ("pyproject.toml",)
    from_file = arch.load_rules(_write(tmp_path, text, "pyproject.toml"))
    assert from_file.families == rules.families


F = '[[family]]\nname = "x"\n'
N = '[[family.norm]]\npattern = "n"\nrole = "final"\n'
BAD: list[tuple[str, str]] = [
    (F + '[[family.norm]]\npattern = "a.norm"\nrol = "final"\n', "rol"),
    (F + '[[family.norm]]\npattern = "a.norm"\nrole = "finale"\n', "role"),
    (F + '[[family.norm]]\npattern = "layers.{X}.n"\nrole = "final"\n', "pattern"),
    (F + '[[family.norm]]\npattern = "layers.0.n"\nrole = "final"\n', "pattern"),
    (F + '[[family.norm]]\npattern = "a.(b|c"\nrole = "final"\n', "pattern"),
    (F + 'parametrization = "1p"\n' + N, "parametrization"),
    (F + N + 'module = "head"\n', "module"),
    (F + N + "mtp_depth = 0\n", "mtp_depth"),
    (F + 'model_types = "x"\nextends = "nope"\n', "extends"),
    (F, "norm"),
    ('[[family]]\nmodel_types = ["x"]\n' + N, "name"),
    (F + 'final_norm = "no"\n' + N, "final_norm"),
    ('[[families]]\nname = "x"\n', "families"),
    (F + N + "consumers = [1]\n", "consumers"),
    (F + N + 'producers = ["a.(b|c"]\n', "producers"),
    (F + N + F + N, "used twice"),
    ("[[family]\n", "invalid TOML"),
]


@pytest.mark.parametrize(("text", "key"), BAD, ids=[k for _, k in BAD])
def test_bad_rules_file_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        arch.load_rules(path)
    assert key in err.value.message
    assert str(path) in err.value.message


def test_missing_rules_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read rules file"):
        arch.load_rules(tmp_path / "absent.toml")


def test_builtin_tables_round_trip_through_the_rules_format(tmp_path: Path) -> None:
    for tables in (arch.FAMILIES, arch.VOCABULARIES):
        text = arch.dump_rules(tables)
        loaded = arch.load_rules(_write(tmp_path, text))
        assert loaded.families == tables


# --- robustness and cost -------------------------------------------------------------------------


@pytest.mark.parametrize("digits", [7, 30, 5000])
def test_an_absurd_layer_index_refuses_the_checkpoint(digits: int) -> None:
    # Skipping the norm would make a silently partial report: the checkpoint is refused, naming
    # the tensor, and the number is never converted (a 5,000-digit int() raises ValueError).
    huge = "9" * digits
    names = {
        "model.layers.0.input_layernorm.weight": (H,),
        f"model.layers.{huge}.input_layernorm.weight": (H,),
        "model.norm.weight": (H,),
    }
    with pytest.raises(ArchError) as info:
        arch.classify({n: ref(n, s) for n, s in names.items()}, {"model_type": "llama"})
    assert info.value.message == (
        f"tensor 'model.layers.{huge}.input_layernorm.weight' has a layer index of {digits} "
        "digits: far beyond any model's layers, not a checkpoint normscope can read"
    )


def test_unicode_digits_are_not_indices() -> None:
    names = {"model.layers.٣.input_layernorm.weight": (H,), "model.norm.weight": (H,)}
    c = arch.classify({n: ref(n, s) for n, s in names.items()}, {"model_type": "llama"})
    assert {n.name for n in c.norms} == set(names)


def _wide_header(layers: int, experts: int) -> dict[str, TensorRef]:
    t = {"model.norm.weight": ref("model.norm.weight", (64,))}
    for i in range(layers):
        p = f"model.layers.{i}."
        for n in ("input_layernorm", "post_attention_layernorm"):
            t[f"{p}{n}.weight"] = ref(f"{p}{n}.weight", (64,))
        for e in range(experts):
            # 1-D '.weight' tensors that are no norms, and per-expert norms no rule lists.
            t[f"{p}mlp.experts.{e}.scale.weight"] = ref(f"{p}mlp.experts.{e}.scale.weight", (64,))
            t[f"{p}mlp.experts.{e}.ffn_norm.weight"] = ref(f"{p}mlp.experts.{e}.ffn_norm", (64,))
    return t


def test_rule_matching_does_not_grow_with_the_tensors() -> None:
    # Family selection without a config used to run ~10.5M regex matches on a 480k header: each
    # distinct name template is now matched once, so the count stays flat as the header grows.
    counts = []
    for layers in (4, 40):
        tables = Tables(())
        small = _wide_header(layers, 50)
        start = tables.index.matches
        weights = [(n, b) for n, (b, p) in candidates(small).items() if p == "weight"]
        _select(None, arch.read_config(None), parse_all(weights, tables, [], []), tables, small)
        counts.append(tables.index.matches - start)
    assert counts[0] == counts[1] < 200


def test_index_buckets_by_last_component() -> None:
    index = RuleIndex(arch.FAMILIES)
    index.hits("layers.0.input_layernorm")
    first = index.matches
    assert first < 40  # only the input_layernorm rules of all families, not every rule
    index.hits("layers.0.input_layernorm")
    assert index.matches == first  # memoised
