"""analysis.py: decoding, statistics, bands, ordering, checked against independent computations.

Decoding is compared with torch's own dtype conversions over every bit pattern of the 8- and
16-bit formats; statistics with torch float64 reductions (or exact hand values), never with
normscope's own output.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from normscope.analysis import (
    MAX_OUTLIERS,
    SUPPORTED_DTYPES,
    compute_stats,
    count_bands,
    decode,
    headline,
    parametrization_doubt,
    sort_key,
)
from normscope.schema import (
    Band,
    BandCounts,
    Group,
    Kind,
    Module,
    NormInfo,
    NormStats,
    Outlier,
    Parametrization,
    Role,
    Thresholds,
)

STD = Parametrization.standard
OFF = Parametrization.offset


def info(
    name: str = "model.norm.weight",
    parametrization: Parametrization = STD,
    role: Role = Role.final,
    module: Module = Module.main,
    layer: int | None = None,
    mtp_depth: int | None = None,
) -> NormInfo:
    return NormInfo(
        name=name,
        module=module,
        mtp_depth=mtp_depth,
        layer=layer,
        role=role,
        group=Group.input,
        parametrization=parametrization,
    )


def stats(values: object, parametrization: Parametrization = STD, **kw: object) -> NormStats:
    bias = kw.pop("bias", None)
    thresholds = kw.pop("thresholds", Thresholds())
    return compute_stats(
        info(parametrization=parametrization),
        np.asarray(values, dtype=np.float64),
        None if bias is None else np.asarray(bias, dtype=np.float64),
        thresholds,  # type: ignore[arg-type]
    )


# --- decode ---------------------------------------------------------------------------------------


def _assert_same(got: np.ndarray | None, want: torch.Tensor) -> None:
    assert got is not None
    assert got.dtype == np.float64
    expected = want.to(torch.float64).numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    finite = ~np.isnan(expected)
    np.testing.assert_array_equal(got[finite], expected[finite])  # exact, infinities included
    # Signed zeros too: -0.0 == 0.0 would hide a wrong sign bit.
    np.testing.assert_array_equal(np.signbit(got[finite]), np.signbit(expected[finite]))


@pytest.mark.parametrize(
    ("dtype", "torch_dtype"),
    [("BF16", torch.bfloat16), ("F16", torch.float16)],
)
def test_decode_every_16_bit_pattern(dtype: str, torch_dtype: torch.dtype) -> None:
    codes = np.arange(65536, dtype=np.uint16)
    data = codes.astype("<u2").tobytes()
    reference = torch.from_numpy(codes.view(np.int16).copy()).view(torch_dtype)
    _assert_same(decode(dtype, data), reference)


@pytest.mark.parametrize(
    ("dtype", "torch_dtype"),
    [("F8_E4M3", torch.float8_e4m3fn), ("F8_E5M2", torch.float8_e5m2)],
)
def test_decode_every_8_bit_pattern(dtype: str, torch_dtype: torch.dtype) -> None:
    codes = np.arange(256, dtype=np.uint8)
    reference = torch.from_numpy(codes.copy()).view(torch_dtype)
    _assert_same(decode(dtype, codes.tobytes()), reference)


def test_decode_e4m3_landmarks() -> None:
    # OCP FP8 E4M3FN: max 448, min subnormal 2^-9, S.1111.111 is NaN, no infinities.
    got = decode("F8_E4M3", bytes([0x7E, 0x01, 0x7F, 0xFF, 0x38, 0x80]))
    assert got is not None
    assert got[0] == 448.0
    assert got[1] == 2.0**-9
    assert np.isnan(got[2]) and np.isnan(got[3])
    assert got[4] == 1.0
    assert got[5] == 0.0 and np.signbit(got[5])


@pytest.mark.parametrize(
    ("dtype", "torch_dtype", "width"),
    [("F32", torch.float32, 4), ("F64", torch.float64, 8)],
)
def test_decode_wide_floats_random_and_special_bits(
    dtype: str, torch_dtype: torch.dtype, width: int
) -> None:
    rng = np.random.default_rng(1)
    unsigned = np.uint32 if width == 4 else np.uint64
    signed = np.int32 if width == 4 else np.int64
    random_bits = rng.integers(0, np.iinfo(unsigned).max, size=20000, dtype=unsigned)
    specials = np.array(
        [0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, np.finfo(torch_dtype_np(dtype)).tiny],
        dtype=torch_dtype_np(dtype),
    ).view(unsigned)
    codes = np.concatenate([random_bits, specials])
    data = codes.astype(codes.dtype.newbyteorder("<")).tobytes()
    reference = torch.from_numpy(codes.view(signed).copy()).view(torch_dtype)
    _assert_same(decode(dtype, data), reference)


def torch_dtype_np(dtype: str) -> type[np.floating]:
    return np.float32 if dtype == "F32" else np.float64


def test_decode_reads_little_endian() -> None:
    got = decode("F32", bytes([0x00, 0x00, 0x80, 0x3F]))  # 1.0f little-endian
    assert got is not None and got.tolist() == [1.0]
    got = decode("BF16", bytes([0x80, 0x3F]))
    assert got is not None and got.tolist() == [1.0]


@pytest.mark.parametrize("dtype", ["I8", "U8", "I16", "I32", "I64", "BOOL", "F8_E8M0", "F4", "C64"])
def test_decode_unsupported_dtypes_return_none(dtype: str) -> None:
    assert dtype not in SUPPORTED_DTYPES
    assert decode(dtype, b"\0" * 16) is None


def test_supported_dtypes_all_decode() -> None:
    for dtype in SUPPORTED_DTYPES:
        got = decode(dtype, b"\0" * 16)
        assert got is not None and (got == 0).all()


# --- compute_stats against an independent computation ---------------------------------------------


def _reference(values: np.ndarray, shift: float) -> dict[str, float]:
    g = torch.from_numpy(values.astype(np.float64)) + shift
    l2 = torch.linalg.vector_norm(g).item()
    return {
        "l2": l2,
        "ratio": l2 / math.sqrt(g.numel()),
        "mean": g.mean().item(),
        "std": g.std(correction=0).item(),
        "min": g.min().item(),
        "max": g.max().item(),
        "negative": int((g < 0).sum().item()),
    }


@pytest.mark.parametrize("parametrization", [STD, OFF])
@pytest.mark.parametrize("seed", range(5))
def test_compute_stats_matches_torch(parametrization: Parametrization, seed: int) -> None:
    rng = np.random.default_rng(seed)
    dim = int(rng.integers(1, 4096))
    values = rng.normal(0.1 * seed, 0.5 + seed, size=dim)
    got = stats(values, parametrization)
    want = _reference(values, parametrization.shift)
    for key in ("l2", "ratio", "mean", "std"):
        assert getattr(got, key) == pytest.approx(want[key], rel=1e-12, abs=1e-12), key
    assert got.min == want["min"] and got.max == want["max"]
    assert got.negative == want["negative"]
    assert got.dim == dim
    assert got.kind is Kind.rmsnorm and got.bias_l2 is None and got.bias_abs_max is None
    assert got.parametrization is parametrization


def test_compute_stats_exact_small_vector() -> None:
    got = stats([3.0, -4.0, 0.0, 1.0])
    assert got.l2 == math.sqrt(26.0)
    assert got.ratio == math.sqrt(26.0) / 2.0
    assert got.mean == 0.0
    assert got.std == math.sqrt(6.5)
    assert (got.min, got.max, got.negative) == (-4.0, 3.0, 1)
    assert got.band is Band.explosion  # ratio 2.55 > 1.8


def test_compute_stats_flattens_per_head_gains() -> None:
    values = np.arange(12, dtype=np.float64).reshape(3, 4) / 10
    got = compute_stats(info(), values, None, Thresholds())
    assert got.dim == 12
    assert got.l2 == pytest.approx(float(np.sqrt((values**2).sum())), rel=1e-15)


def test_compute_stats_bias() -> None:
    bias = np.array([0.0, -3.0, 4.0, 0.0])
    got = stats(np.ones(4), bias=bias)
    assert got.kind is Kind.layernorm
    assert got.bias_l2 == 5.0
    assert got.bias_abs_max == 4.0
    assert not got.identity


# --- identity -------------------------------------------------------------------------------------


def test_identity_standard_ones() -> None:
    assert stats(np.ones(16)).identity
    assert stats(np.ones(16)).band is Band.balanced


def test_identity_offset_zeros() -> None:
    got = stats(np.zeros(16), OFF)
    assert got.identity and got.ratio == 1.0 and got.mean == 1.0 and got.std == 0.0


def test_identity_layernorm_needs_an_exactly_zero_bias() -> None:
    assert stats(np.ones(4), bias=np.zeros(4)).identity
    assert stats(np.ones(4), bias=np.array([0.0, -0.0, 0.0, 0.0])).identity
    assert not stats(np.ones(4), bias=np.array([0.0, 1e-30, 0.0, 0.0])).identity


@pytest.mark.parametrize(
    "values",
    [
        np.r_[np.ones(7), 1 + 1e-7],
        np.r_[np.ones(7), np.float32(1 + 1e-7)],  # the nearest float32 is still not 1
        np.r_[np.ones(7), 1 - 2**-52],
        np.zeros(8),  # zeros read as standard: collapsed, not identity
        np.full(8, 2.0),
    ],
)
def test_not_identity(values: np.ndarray) -> None:
    assert not stats(values).identity


def test_offset_ones_is_not_identity() -> None:
    assert not stats(np.ones(8), OFF).identity  # gain 2


def test_identity_is_false_when_nonfinite() -> None:
    assert not stats(np.r_[np.ones(3), np.nan]).identity
    assert not stats(np.ones(4), bias=np.r_[0.0, 0.0, np.nan, 0.0]).identity


# --- bands ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ratio", "band"),
    [
        (0.0, Band.collapse),
        (np.nextafter(0.4, 0), Band.collapse),
        (0.4, Band.shrink),  # low edge belongs to the act band
        (np.nextafter(0.9, 0), Band.shrink),
        (0.9, Band.balanced),  # balanced is [0.9, 1.12] inclusive
        (1.0, Band.balanced),
        (1.12, Band.balanced),
        (np.nextafter(1.12, 2), Band.grow),
        (1.8, Band.grow),  # high edge belongs to the act band
        (np.nextafter(1.8, 2), Band.explosion),
        (1e300, Band.explosion),
        (math.nan, Band.nonfinite),
        (math.inf, Band.nonfinite),
        (-math.inf, Band.nonfinite),
    ],
)
def test_default_band_edges(ratio: float, band: Band) -> None:
    assert Thresholds().classify(float(ratio)) is band


def test_default_thresholds_are_the_playbooks() -> None:
    t = Thresholds()
    assert (t.low, t.balanced_low, t.balanced_high, t.high) == (0.4, 0.9, 1.12, 1.8)


@pytest.mark.parametrize(
    ("ratio", "band"),
    [
        (0.19, Band.collapse),
        (0.2, Band.shrink),
        (0.95, Band.balanced),
        (1.05, Band.balanced),
        (1.051, Band.grow),
        (3.0, Band.grow),
        (3.0001, Band.explosion),
    ],
)
def test_custom_thresholds(ratio: float, band: Band) -> None:
    t = Thresholds(low=0.2, high=3.0, balanced_low=0.95, balanced_high=1.05)
    assert t.classify(ratio) is band


def test_band_uses_ratio_of_constant_vector() -> None:
    # A constant vector c has ratio |c| exactly: the band edges apply to the data.
    assert stats(np.full(64, 0.4)).band is Band.shrink
    assert stats(np.full(64, 0.3)).band is Band.collapse
    assert stats(np.full(64, 1.8)).band is Band.grow
    assert stats(np.full(64, 1.9)).band is Band.explosion
    assert stats(np.full(64, 0.5), thresholds=Thresholds(low=0.6)).band is Band.collapse


def test_out_of_band_bands() -> None:
    assert {b for b in Band if b.out_of_band} == {Band.collapse, Band.explosion, Band.nonfinite}


# --- nonfinite ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nonfinite_gain(bad: float) -> None:
    values = np.ones(10)
    values[[2, 7]] = bad
    got = stats(values)
    assert got.band is Band.nonfinite
    assert [o.index for o in got.outliers] == [2, 7]
    assert all(not math.isfinite(o.value) for o in got.outliers)
    assert not got.identity


def test_nonfinite_outliers_capped() -> None:
    values = np.full(20, np.nan)
    assert [o.index for o in stats(values).outliers] == list(range(MAX_OUTLIERS))


def test_nonfinite_bias_makes_the_norm_nonfinite() -> None:
    got = stats(np.ones(4), bias=[0.0, np.inf, 0.0, 0.0])
    assert got.band is Band.nonfinite
    assert got.ratio == 1.0  # the gain itself is fine
    assert got.bias_abs_max == math.inf


def test_nonfinite_offset_gain() -> None:
    got = stats(np.r_[np.zeros(3), np.nan], OFF)
    assert got.band is Band.nonfinite
    assert got.outliers[0].index == 3


# --- outliers -------------------------------------------------------------------------------------


def test_outliers_top5_by_distance_from_median() -> None:
    values = np.ones(32)
    deviations = {3: 0.5, 9: -2.0, 11: 0.1, 20: 5.0, 25: -0.3, 30: 0.2, 31: -0.05}
    for i, d in deviations.items():
        values[i] += d
    got = stats(values)
    # median stays 1.0: 25 of 32 entries are ones.
    expected = sorted(deviations, key=lambda i: -abs(deviations[i]))[:MAX_OUTLIERS]
    assert [o.index for o in got.outliers] == expected == [20, 9, 3, 25, 30]
    assert got.outliers[0] == Outlier(20, 6.0)
    assert got.outliers[1] == Outlier(9, -1.0)


def test_outliers_fewer_than_five_when_few_differ() -> None:
    values = np.ones(10)
    values[4] = 3.0
    assert stats(values).outliers == (Outlier(4, 3.0),)


@pytest.mark.parametrize("value", [1.0, 0.0, -2.5])
def test_no_outliers_for_a_constant_vector(value: float) -> None:
    assert stats(np.full(17, value)).outliers == ()


def test_outliers_are_of_the_effective_gain() -> None:
    values = np.zeros(8)
    values[5] = 0.5
    assert stats(values, OFF).outliers == (Outlier(5, 1.5),)


# --- properties -----------------------------------------------------------------------------------

finite_vectors = hnp.arrays(
    np.float64,
    st.integers(1, 300),
    elements=st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False),
)


@settings(max_examples=60, deadline=None)
@given(values=finite_vectors, data=st.data())
def test_permutation_invariance(values: np.ndarray, data: st.DataObject) -> None:
    perm = data.draw(st.permutations(range(values.size)))
    a = stats(values)
    b = stats(values[np.array(perm, dtype=np.int64)])
    scale = float(np.abs(values).max()) + 1.0
    for key in ("l2", "ratio"):
        assert getattr(b, key) == pytest.approx(getattr(a, key), rel=1e-12, abs=1e-300)
    assert b.mean == pytest.approx(a.mean, rel=1e-12, abs=1e-12 * scale)
    assert b.std == pytest.approx(a.std, rel=1e-9, abs=1e-9 * scale)
    assert (b.min, b.max, b.negative, b.dim, b.band, b.identity) == (
        a.min,
        a.max,
        a.negative,
        a.dim,
        a.band,
        a.identity,
    )
    # The same channels stand out (indices permuted with the data), when deviations are unique.
    deviation = np.abs(values - np.median(values))
    if len(set(deviation.tolist())) == values.size:
        assert [perm[o.index] for o in b.outliers] == [o.index for o in a.outliers]


@settings(max_examples=30, deadline=None)
@given(dim=st.integers(1, 5000))
def test_ones_vector(dim: int) -> None:
    got = stats(np.ones(dim))
    assert (got.mean, got.std, got.ratio, got.min, got.max) == (1.0, 0.0, 1.0, 1.0, 1.0)
    assert got.l2 == pytest.approx(math.sqrt(dim), rel=1e-15)
    assert got.identity and got.band is Band.balanced and got.outliers == ()


@settings(max_examples=60, deadline=None)
@given(values=finite_vectors)
def test_offset_applied_consistently(values: np.ndarray) -> None:
    offset = stats(values, OFF)
    standard = stats(values + 1.0, STD)
    assert dataclasses.replace(offset, parametrization=STD) == standard


@settings(max_examples=60, deadline=None)
@given(values=finite_vectors)
def test_stats_are_finite_and_ordered(values: np.ndarray) -> None:
    got = stats(values)
    assert got.min <= got.mean + 1e-9 * (abs(got.mean) + 1) and got.mean <= got.max + 1e-9 * (
        abs(got.max) + 1
    )
    assert got.std >= 0 and got.l2 >= 0
    assert got.ratio == pytest.approx(got.l2 / math.sqrt(got.dim), rel=1e-15)
    assert got.band is Thresholds().classify(got.ratio)
    assert len(got.outliers) <= MAX_OUTLIERS


# --- parametrization_doubt ------------------------------------------------------------------------


def test_doubt_zeros_read_as_standard() -> None:
    message = parametrization_doubt(info(parametrization=STD), np.zeros(8))
    assert message is not None and "offset" in message


def test_doubt_ones_read_as_offset() -> None:
    message = parametrization_doubt(info(parametrization=OFF), np.ones(8))
    assert message is not None and "+1" in message


@pytest.mark.parametrize(
    ("parametrization", "values"),
    [
        (STD, np.ones(8)),
        (OFF, np.zeros(8)),
        (STD, np.r_[np.zeros(7), 1e-3]),
        (OFF, np.r_[np.ones(7), 0.5]),
        (STD, np.zeros(0)),
        (OFF, np.zeros(0)),
    ],
)
def test_no_doubt(parametrization: Parametrization, values: np.ndarray) -> None:
    assert parametrization_doubt(info(parametrization=parametrization), values) is None


# --- count_bands, headline, sort_key --------------------------------------------------------------


def norm(
    name: str,
    role: Role = Role.attn_input,
    layer: int | None = None,
    module: Module = Module.main,
    mtp_depth: int | None = None,
    ratio: float = 1.0,
) -> NormStats:
    base = compute_stats(
        info(name, role=role, module=module, layer=layer, mtp_depth=mtp_depth),
        np.full(4, ratio),
        None,
        Thresholds(),
    )
    return base


def test_count_bands() -> None:
    norms = [norm("a", ratio=r) for r in (0.1, 0.5, 1.0, 1.0, 1.5, 2.0, 2.0, 2.0, math.nan)]
    assert count_bands(norms) == BandCounts(
        collapse=1, shrink=1, balanced=2, grow=1, explosion=3, nonfinite=1
    )
    assert count_bands([]) == BandCounts()


def test_headline_final_then_each_mtp_depth() -> None:
    norms = [
        norm("mtp.2.final", Role.mtp_final, module=Module.mtp, mtp_depth=2, ratio=0.3),
        norm("mtp.1.hnorm", Role.mtp_hidden, module=Module.mtp, mtp_depth=1),
        norm("layers.0.in", Role.attn_input, layer=0),
        norm("mtp.1.block.in", Role.attn_input, module=Module.mtp, mtp_depth=1),
        norm("mtp.1.final", Role.mtp_final, module=Module.mtp, mtp_depth=1),
        norm("mtp.1.enorm", Role.mtp_embedding, module=Module.mtp, mtp_depth=1),
        norm("model.norm", Role.final, ratio=0.27),
        norm("mtp.2.enorm", Role.mtp_embedding, module=Module.mtp, mtp_depth=2),
    ]
    got = headline(norms)
    assert [h.name for h in got] == [
        "model.norm",
        "mtp.1.enorm",
        "mtp.1.hnorm",
        "mtp.1.final",
        "mtp.2.enorm",
        "mtp.2.final",
    ]
    assert got[0].ratio == 0.27 and got[0].band is Band.collapse and got[0].mtp_depth is None
    assert got[-1].band is Band.collapse and got[-1].mtp_depth == 2


def test_headline_empty_without_final_or_mtp() -> None:
    assert headline([norm("layers.0.in", layer=0)]) == ()


def test_sort_key_order() -> None:
    expected = [
        norm("model.embed_norm", Role.embedding),
        norm("model.layers.0.input_layernorm", Role.attn_input, layer=0),
        norm("model.layers.0.post_attention_layernorm", Role.mlp_input, layer=0),
        norm("model.layers.0.self_attn.k_norm", Role.qk, layer=0),
        norm("model.layers.0.self_attn.q_norm", Role.qk, layer=0),
        norm("model.layers.2.input_layernorm", Role.attn_input, layer=2),
        norm("model.layers.9.input_layernorm", Role.attn_input, layer=9),
        norm("model.layers.10.input_layernorm", Role.attn_input, layer=10),
        norm("model.layers.100.input_layernorm", Role.attn_input, layer=100),
        norm("model.norm", Role.final),
        norm("model.unplaced_norm", Role.unknown),
        norm("mtp.layers.0.input_layernorm", Role.attn_input, module=Module.mtp, mtp_depth=1),
        norm("mtp.pre_fc_norm_embedding", Role.mtp_embedding, module=Module.mtp, mtp_depth=1),
        norm("mtp.norm", Role.mtp_final, module=Module.mtp, mtp_depth=1),
        norm("mtp.layers.1.enorm", Role.mtp_embedding, module=Module.mtp, mtp_depth=2),
    ]
    shuffled = list(reversed(expected))
    shuffled = shuffled[1::2] + shuffled[::2]
    assert [n.name for n in sorted(shuffled, key=sort_key)] == [n.name for n in expected]


def test_huge_finite_gains_are_not_called_nonfinite() -> None:
    g = np.array([1e200, -1e200, 3e199, 0.0])
    info = NormInfo("x.weight", Module.main, None, 0, Role.final, None, Parametrization.standard)
    stats = compute_stats(info, g, None, Thresholds())
    expected = 1e200 * math.sqrt(2 + 0.09)
    assert stats.l2 == pytest.approx(expected, rel=1e-12)
    assert stats.ratio == pytest.approx(expected / 2, rel=1e-12)
    assert stats.band is Band.explosion
    assert math.isfinite(stats.std)
