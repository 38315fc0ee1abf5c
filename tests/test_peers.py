"""normscope.peers: the peer-relative anomaly rule on hand-built norms (issue #11)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from normscope.peers import PeerRule, PeerVerdict, _trend, find_anomalies, peer_key
from normscope.schema import Module, Role


@dataclass(frozen=True, slots=True)
class Fake:
    name: str
    module: Module
    mtp_depth: int | None
    role: Role
    ratio: float


_HF = {
    Role.attn_input: "input_layernorm",
    Role.mlp_input: "pre_feedforward_layernorm",
    Role.attn_output: "post_attention_layernorm",
    Role.mlp_output: "post_feedforward_layernorm",
}


def layer_norm(layer: int, role: Role, ratio: float) -> Fake:
    return Fake(f"model.layers.{layer}.{_HF[role]}.weight", Module.main, None, role, ratio)


def flagged(verdicts: dict[str, PeerVerdict]) -> set[str]:
    return {name for name, v in verdicts.items() if v.anomaly}


def gemma_like(post_ffn: dict[int, float], layers: int = 62) -> list[Fake]:
    """A 62-layer model: post-FFN norms at 0.8 unless overridden, other roles spread around."""
    rng = np.random.default_rng(0)
    norms = [layer_norm(i, Role.mlp_output, post_ffn.get(i, 0.8)) for i in range(layers)]
    norms += [layer_norm(i, Role.attn_input, float(rng.uniform(0.15, 0.25))) for i in range(layers)]
    norms += [layer_norm(i, Role.attn_output, float(rng.uniform(2.0, 3.0))) for i in range(layers)]
    norms.append(Fake("model.norm.weight", Module.main, None, Role.final, 1.5))
    return norms


# --- the cases -----------------------------------------------------------------------


@pytest.mark.parametrize("planted", [0.1, 3.0])
def test_a_planted_single_layer_deviation_is_flagged_in_both_directions(planted: float) -> None:
    verdicts = find_anomalies(gemma_like({10: planted}))
    target = "model.layers.10.post_feedforward_layernorm.weight"
    assert flagged(verdicts) == {target}
    assert verdicts[target] == PeerVerdict(peer_median=0.8, anomaly=True, peers=61)
    # The 61 others keep 0.8 as their leave-one-out median (60 at 0.8 plus the planted one).
    other = verdicts["model.layers.11.post_feedforward_layernorm.weight"]
    assert other == PeerVerdict(peer_median=0.8, anomaly=False, peers=61)


def test_all_equal_peers_flag_nothing() -> None:
    norms = [layer_norm(i, r, 0.8) for i in range(30) for r in (Role.attn_input, Role.mlp_input)]
    verdicts = find_anomalies(norms)
    assert flagged(verdicts) == set()
    assert {v.peer_median for v in verdicts.values()} == {0.8}
    assert {v.anomaly for v in verdicts.values()} == {False}


def test_a_uniform_shift_of_a_whole_role_is_not_an_anomaly() -> None:
    # Every post-FFN norm at 0.1 (8x below the others' 0.8): a band matter, no peer left its peers.
    shifted = gemma_like(dict.fromkeys(range(62), 0.1))
    assert flagged(find_anomalies(shifted)) == set()


def test_roles_with_fewer_than_4_other_peers_get_no_verdict() -> None:
    four = [layer_norm(i, Role.attn_input, 0.3 if i else 3.0) for i in range(4)]
    five = [layer_norm(i, Role.mlp_input, 0.3 if i else 3.0) for i in range(5)]
    final = Fake("model.norm.weight", Module.main, None, Role.final, 9.0)
    verdicts = find_anomalies([*four, *five, final])
    # min_peers counts the OTHER peers: 4 norms give each 3 others, too few; 5 give 4.
    for n in four:
        assert verdicts[n.name] == PeerVerdict(None, None, 3)
    assert verdicts[final.name] == PeerVerdict(None, None, 0)
    assert verdicts[five[0].name] == PeerVerdict(0.3, True, 4)
    assert [verdicts[n.name].anomaly for n in five[1:]] == [False] * 4


def test_bf16_rounding_noise_among_near_identical_peers_flags_nothing() -> None:
    # 62 layers whose gains are the same vector up to BF16 rounding of tiny per-layer noise.
    rng = np.random.default_rng(11)
    base = rng.uniform(0.6, 1.0, size=2048)
    ratios = []
    for _ in range(62):
        g = torch.from_numpy(base * (1 + rng.normal(0, 2e-3, base.size))).to(torch.bfloat16)
        g64 = g.to(torch.float64).numpy()
        ratios.append(float(np.sqrt(np.mean(g64**2))))
    # And the worst case for the MAD test: peers exactly equal (MAD = 0) but one a BF16 ulp off.
    ulp_off = [0.80078125] * 30 + [0.8046875]
    norms = [layer_norm(i, Role.mlp_output, r) for i, r in enumerate(ratios)]
    norms += [layer_norm(i, Role.attn_input, r) for i, r in enumerate(ulp_off)]
    assert len(set(ratios)) > 1  # the noise is really there
    assert flagged(find_anomalies(norms)) == set()


# --- the robust (MAD) half of the rule -------------------------------------------------------


def test_tight_peers_make_a_smaller_deviation_an_anomaly_and_spread_peers_do_not() -> None:
    rng = np.random.default_rng(5)
    tight = [0.8 * float(f) for f in rng.uniform(0.98, 1.02, 40)]
    spread = [0.8 * float(f) for f in np.exp(np.linspace(-0.5, 0.5, 40))]  # within 1.65x
    norms = [layer_norm(i, Role.mlp_output, r) for i, r in enumerate([*tight, 0.8 * 1.6])]
    norms += [layer_norm(i, Role.attn_input, r) for i, r in enumerate([*spread, 0.8 * 1.6])]
    verdicts = find_anomalies(norms)
    # 1.6x is below the 2x factor: only the peers' tightness makes it an outlier.
    assert flagged(verdicts) == {"model.layers.40.post_feedforward_layernorm.weight"}


def test_the_robust_test_needs_min_factor_too() -> None:
    # Identical peers (MAD 0): 1.2x away passes the MAD test, not min_factor 1.25; 1.3x is flagged.
    for off, expected in ((1.2, False), (1.3, True)):
        norms = [layer_norm(i, Role.mlp_output, 0.5) for i in range(10)]
        norms.append(layer_norm(10, Role.mlp_output, 0.5 * off))
        verdicts = find_anomalies(norms)
        assert verdicts["model.layers.10.post_feedforward_layernorm.weight"].anomaly is expected


def test_thresholds_come_from_the_rule() -> None:
    norms = gemma_like({10: 0.5})  # 1.6x below 0.8, peers all equal
    target = "model.layers.10.post_feedforward_layernorm.weight"
    assert flagged(find_anomalies(norms)) == {target}
    assert flagged(find_anomalies(norms, PeerRule(factor=2.0, min_factor=1.7))) == set()
    # Against every peer (window 0) a factor of 1.5 flags the planted layer only; against the 4
    # nearest layers it also flags a layer of the noisy attn_input role (uniform 0.15-0.25,
    # whose 4-neighbour median is noisier than a 61-peer one): 1.5 is below the noise.
    wide = PeerRule(factor=1.5, min_factor=1.7, window=0)
    assert flagged(find_anomalies(norms, wide)) == {target}
    local = flagged(find_anomalies(norms, PeerRule(factor=1.5, min_factor=1.7)))
    assert target in local and all("input_layernorm" in n for n in local - {target})
    assert flagged(find_anomalies(norms, PeerRule(min_peers=62))) == set()


# --- leave-one-out median, checked independently ---------------------------------------------


def test_peer_median_is_the_leave_one_out_median_of_the_other_peers() -> None:
    rng = np.random.default_rng(3)
    for size in (5, 6, 7, 30, 31):
        ratios = [float(x) for x in rng.lognormal(-1.0, 0.5, size)]
        ratios[2] = ratios[3]  # ties must be removed once, by position
        norms = [layer_norm(i, Role.attn_input, r) for i, r in enumerate(ratios)]
        verdicts = find_anomalies(norms, PeerRule(window=0))
        for i, n in enumerate(norms):
            others = sorted(r for j, r in enumerate(ratios) if j != i)
            mid = len(others) // 2
            expected = others[mid] if len(others) % 2 else (others[mid - 1] + others[mid]) / 2
            assert verdicts[n.name].peer_median == pytest.approx(expected, rel=1e-15)
            assert verdicts[n.name].peers == size - 1


def _repeated_median_at(xs: list[float], ys: list[float], at: float) -> float:
    """An independent repeated-median line (Siegel 1982, plain Python), read at `at`."""
    slope = statistics.median(
        statistics.median((ys[j] - ys[i]) / (xs[j] - xs[i]) for j in range(len(xs)) if j != i)
        for i in range(len(xs))
    )
    return statistics.median(y - slope * x for x, y in zip(xs, ys, strict=True)) + slope * at


def test_peer_median_is_the_robust_trend_of_the_nearest_layers_in_depth() -> None:
    rng = np.random.default_rng(5)
    for size, window in ((5, 2), (9, 2), (30, 2), (30, 3), (31, 1)):
        ratios = [float(x) for x in rng.lognormal(-1.0, 0.5, size)]
        norms = [layer_norm(i, Role.attn_input, r) for i, r in enumerate(ratios)]
        rule = PeerRule(window=window)
        half = max(window, 2)  # at least min_peers = 4 neighbours
        verdicts = find_anomalies(norms, rule)
        for i, n in enumerate(norms):
            # i - half .. i + half without i; at the ends the window slides inward.
            start = min(max(i - half, 0), max(size - 1 - 2 * half, 0))
            chosen = [j for j in range(start, min(start + 2 * half, size - 1) + 1) if j != i]
            logs = [math.log(ratios[j]) for j in chosen]
            expected = math.exp(_repeated_median_at([float(j) for j in chosen], logs, float(i)))
            assert verdicts[n.name].peer_median == pytest.approx(expected, rel=1e-12), (size, i)
            assert verdicts[n.name].peers == size - 1
    # Trend-free neighbours give their median; a geometric rise gives itself, ends included.
    flat = [layer_norm(i, Role.attn_input, 0.3) for i in range(12)]
    assert {v.peer_median for v in find_anomalies(flat).values()} == {0.3}
    rise = [layer_norm(i, Role.attn_input, 0.3 * 1.5**i) for i in range(12)]
    for i, v in enumerate(find_anomalies(rise).values()):
        assert v.peer_median == pytest.approx(0.3 * 1.5**i, rel=1e-12)


def test_a_smooth_rise_with_depth_is_no_anomaly_but_a_layer_leaving_it_is() -> None:
    # Gemma-3-270M's post-FFN norms rise smoothly from ~7 to ~380 (tests/test_corpus.py).
    rising = {i: 7.0 * 1.265**i for i in range(18)}
    norms = [layer_norm(i, Role.mlp_output, r) for i, r in rising.items()]
    assert flagged(find_anomalies(norms)) == set()
    assert len(flagged(find_anomalies(norms, PeerRule(window=0)))) >= 8  # the old rule
    rising[9] /= 3.0
    norms = [layer_norm(i, Role.mlp_output, r) for i, r in rising.items()]
    assert flagged(find_anomalies(norms)) == {"model.layers.9.post_feedforward_layernorm.weight"}


# --- invariance ------------------------------------------------------------------------------

_ratio = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(
    groups=st.lists(st.lists(_ratio, min_size=1, max_size=12), min_size=1, max_size=4),
    exponent=st.integers(min_value=-20, max_value=20),
)
def test_scaling_every_ratio_by_a_constant_changes_no_verdict(
    groups: list[list[float]], exponent: int
) -> None:
    roles = list(_HF)
    norms = [layer_norm(i, roles[g], r) for g, rs in enumerate(groups) for i, r in enumerate(rs)]
    scale = 2.0**exponent  # exact in floating point, so the verdicts must be identical
    scaled = [Fake(n.name, n.module, n.mtp_depth, n.role, n.ratio * scale) for n in norms]
    before, after = find_anomalies(norms), find_anomalies(scaled)
    assert {k: v.anomaly for k, v in before.items()} == {k: v.anomaly for k, v in after.items()}
    for k, v in before.items():
        if v.peer_median is not None:
            assert after[k].peer_median == v.peer_median * scale


def test_scaling_by_an_arbitrary_constant_keeps_the_planted_anomaly() -> None:
    for scale in (0.37, 3.7, 123.4):
        norms = [
            Fake(n.name, n.module, n.mtp_depth, n.role, n.ratio * scale)
            for n in gemma_like({10: 3.0})
        ]
        assert flagged(find_anomalies(norms)) == {
            "model.layers.10.post_feedforward_layernorm.weight"
        }


# --- grouping --------------------------------------------------------------------------------


def test_norms_sharing_a_role_under_different_names_are_not_peers() -> None:
    # Qwen3-style q_norm at ~1.0 and k_norm at ~4.0, both role qk: pooled, half would be flagged.
    norms = [
        Fake(f"model.layers.{i}.self_attn.{kind}.weight", Module.main, None, Role.qk, ratio)
        for i in range(20)
        for kind, ratio in (("q_norm", 1.0 + 0.01 * i), ("k_norm", 4.0 - 0.01 * i))
    ]
    verdicts = find_anomalies(norms)
    assert flagged(verdicts) == set()
    assert {v.peers for v in verdicts.values()} == {19}


def test_mtp_depths_and_modules_are_separate_groups() -> None:
    trunk = [layer_norm(i, Role.attn_input, 0.3) for i in range(8)]
    mtp = [
        Fake(f"model.layers.{8 + k}.enorm.weight", Module.mtp, k + 1, Role.mtp_embedding, 5.0)
        for k in range(6)
    ]
    verdicts = find_anomalies([*trunk, *mtp])
    # Each MTP depth's enorm is alone of its kind: no verdict, and no pull on the trunk.
    assert all(verdicts[n.name] == PeerVerdict(None, None, 0) for n in mtp)
    assert flagged(verdicts) == set()
    assert peer_key(trunk[0]) == (
        Module.main,
        None,
        Role.attn_input,
        "model.layers.#.input_layernorm.weight",
    )


def test_only_whole_numeric_components_are_layer_indices() -> None:
    ln = Fake("h.3.ln_1.weight", Module.main, None, Role.attn_input, 1.0)
    assert peer_key(ln)[3] == "h.#.ln_1.weight"
    assert peer_key(Fake("0.norm.weight", Module.main, None, Role.final, 1.0))[3] == "#.norm.weight"


# --- unusable ratios -------------------------------------------------------------------------


def test_nonfinite_ratios_get_no_verdict_and_do_not_poison_their_peers() -> None:
    ratios = [0.8] * 6 + [math.nan, math.inf, 3.0]
    norms = [layer_norm(i, Role.mlp_output, r) for i, r in enumerate(ratios)]
    verdicts = find_anomalies(norms)
    nan, inf, high = (verdicts[n.name] for n in norms[6:])
    assert nan == PeerVerdict(0.8, None, 7)  # the 7 usable ratios are its peers
    assert inf == PeerVerdict(0.8, None, 7)
    assert high == PeerVerdict(0.8, True, 6)  # NaN and inf are nobody's peers
    assert flagged(verdicts) == {norms[8].name}


def test_an_all_zero_gain_among_positive_peers_is_an_anomaly() -> None:
    norms = [layer_norm(i, Role.mlp_output, 0.0 if i == 3 else 0.8) for i in range(8)]
    verdicts = find_anomalies(norms)
    assert verdicts[norms[3].name] == PeerVerdict(0.8, True, 7)
    assert flagged(verdicts) == {norms[3].name}
    # All zero: no usable peer, so no verdict (the band check reports the collapse).
    zeros = [layer_norm(i, Role.mlp_output, 0.0) for i in range(8)]
    assert {v.anomaly for v in find_anomalies(zeros).values()} == {None}


def test_bad_rules_and_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError, match="factor > 1"):
        PeerRule(factor=1.0)
    with pytest.raises(ValueError, match="min_peers >= 2"):
        PeerRule(min_peers=1)
    with pytest.raises(ValueError, match="duplicate norm name"):
        find_anomalies([layer_norm(0, Role.attn_input, 1.0)] * 2)


def test_a_200_layer_model_with_10_roles_is_instant() -> None:
    rng = np.random.default_rng(1)
    roles = [*Role][:10]
    norms = [
        Fake(f"model.layers.{i}.norm{j}.weight", Module.main, None, role, float(r))
        for j, role in enumerate(roles)
        for i, r in enumerate(rng.lognormal(0.0, 0.4, 200))
    ]
    verdicts = find_anomalies(norms)
    assert len(verdicts) == 2000


def _siegel(depths: np.ndarray, ratios: np.ndarray, at: float) -> float:
    """Siegel's repeated-median line read at `at`, written out point by point with np.median."""
    scale = float(np.median(ratios))
    logs = np.log(ratios / scale)
    inner = []
    for i in range(ratios.size):
        others = [j for j in range(ratios.size) if depths[j] != depths[i]]
        if others:
            inner.append(np.median([(logs[j] - logs[i]) / (depths[j] - depths[i]) for j in others]))
    if not inner:
        return scale
    slope = float(np.median(inner))
    return float(scale * math.exp(float(np.median(logs - slope * depths)) + slope * at))


def test_trend_is_the_repeated_median_line_to_the_bit() -> None:
    """`_trend` (its rows' medians in one partition) against the line point by point: random
    neighbourhoods, some sharing depths (rows of different lengths), some constant."""
    rng = np.random.default_rng(29)
    for trial in range(2000):
        size = int(rng.integers(1, 14))
        if trial % 3 == 0:
            depths = np.sort(rng.integers(0, 5, size)).astype(float)
        else:
            depths = np.sort(rng.choice(200, size, replace=False)).astype(float)
        ratios = np.exp(rng.normal(0.0, 0.3, size)) * 2.0 ** int(rng.integers(-3, 3))
        if trial % 5 == 0:
            ratios[:] = ratios[0]
        at = float(rng.integers(0, 200))
        assert _trend(depths, ratios, at) == _siegel(depths, ratios, at)
