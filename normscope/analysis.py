"""Numbers: decode norm vectors and compute the statistics of their effective gain.

Pure functions of (NormInfo, raw bytes or arrays): no I/O, no printing. Every statistic is computed
in float64 on the EFFECTIVE gain (w, or 1 + w for offset-parametrized norms), whatever the dtype
the checkpoint stores.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from normscope.naming import natural_key
from normscope.numeric import median
from normscope.schema import (
    Band,
    BandCounts,
    Headline,
    Kind,
    Module,
    NormInfo,
    NormStats,
    Outlier,
    Parametrization,
    Role,
    Thresholds,
    Tower,
)

MAX_OUTLIERS = 5


def _e4m3fn_table() -> np.ndarray:
    """All 256 values of float8 e4m3fn (OCP FP8: bias 7, no infinities, S.1111.111 is NaN)."""
    codes = np.arange(256, dtype=np.int64)
    sign = np.where(codes & 0x80, -1.0, 1.0)
    exponent = (codes >> 3) & 0xF
    mantissa = (codes & 0x7).astype(np.float64)
    normal = (1.0 + mantissa / 8.0) * np.exp2(exponent - 7.0)
    subnormal = (mantissa / 8.0) * 2.0**-6
    values = sign * np.where(exponent == 0, subnormal, normal)
    values[(codes & 0x7F) == 0x7F] = np.nan
    return values


# NOTE: numpy has no bfloat16 or float8 dtypes. Both decode exactly by bit manipulation (BF16 is
# the top half of a float32, E5M2 the top half of a float16) or a 256-entry table (E4M3), which
# is smaller than depending on ml_dtypes or importing torch (about 1 s) for a few vectors.
_E4M3 = _e4m3fn_table()
SUPPORTED_DTYPES = ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2")


def decode(dtype: str, data: bytes) -> np.ndarray | None:
    """Decode little-endian safetensors bytes to float64; None for dtypes that are not floats."""
    # NOTE: widening a signalling NaN raises FE_INVALID (a RuntimeWarning, an error under
    # `-W error`); it still decodes to NaN, which the statistics report as nonfinite.
    with np.errstate(invalid="ignore"):
        if dtype == "F64":
            return np.frombuffer(data, dtype="<f8").astype(np.float64)
        if dtype == "F32":
            return np.frombuffer(data, dtype="<f4").astype(np.float64)
        if dtype == "F16":
            return np.frombuffer(data, dtype="<f2").astype(np.float64)
        if dtype == "BF16":
            bits = np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16
            return bits.view(np.float32).astype(np.float64)
        if dtype == "F8_E4M3":
            return _E4M3[np.frombuffer(data, dtype=np.uint8)]
        if dtype == "F8_E5M2":
            bits = np.frombuffer(data, dtype=np.uint8).astype(np.uint16) << 8
            return bits.view(np.float16).astype(np.float64)
    return None


_CHUNK = 1 << 20
"""Elements scanned at once when looking for the first few indices of a mask."""


def _first_indices(mask: np.ndarray, count: int) -> list[int]:
    """The first `count` indices where `mask` is true, in chunks: memory stays O(chunk), not O(n)
    (np.flatnonzero of a mostly-true mask of 2^24 elements allocates 128 MB)."""
    out: list[int] = []
    for start in range(0, mask.size, _CHUNK):
        hits = np.flatnonzero(mask[start : start + _CHUNK])[: count - len(out)]
        out.extend(int(i) + start for i in hits)
        if len(out) == count:
            break
    return out


def _outliers(gain: np.ndarray) -> tuple[Outlier, ...]:
    """The MAX_OUTLIERS channels farthest from the median, largest first, ties by channel index.

    NOTE: O(n) time and O(n) memory in float64 temporaries whatever the values: ties (a norm of
    2^24 equal values, a sparse file's zeros) never reach a Python-level sort, which used to
    take 3.2 GB and 9.6 s there.
    """
    finite = np.isfinite(gain)
    if not finite.all():
        # The channels to look at first are the broken ones.
        return tuple(Outlier(i, float(gain[i])) for i in _first_indices(~finite, MAX_OUTLIERS))
    deviation = np.abs(gain - median(gain))
    # NOTE: MAX_OUTLIERS argmax passes, each taking the first of the largest (the tie rule) and
    # striking it: O(n) and 4x faster than one partition plus the ties' bookkeeping at
    # d = 7168 (issue 29: 3,912 norms of a 1.5M-tensor checkpoint). Deviations are >= 0.
    picked: list[int] = []
    for _ in range(min(MAX_OUTLIERS, deviation.size)):
        i = int(deviation.argmax())
        if not deviation[i] > 0:
            break
        picked.append(i)
        deviation[i] = -1.0
    return tuple(Outlier(i, float(gain[i])) for i in picked)


def compute_stats(
    info: NormInfo,
    stored: np.ndarray,
    bias: np.ndarray | None,
    thresholds: Thresholds,
) -> NormStats:
    """Statistics of one norm's effective gain `stored + shift` (and of its bias, if any)."""
    gain = np.asarray(stored, dtype=np.float64).reshape(-1) + info.parametrization.shift
    dim = int(gain.size)
    finite = bool(np.isfinite(gain).all())
    with np.errstate(all="ignore"):
        # Squares of huge (finite) F64 entries overflow: scale by the largest entry first then.
        scale = float(np.abs(gain).max()) if finite and dim else 1.0
        scale = scale if scale > 1e150 else 1.0
        unit = gain / scale
        l2 = scale * float(np.sqrt(np.dot(unit, unit)))
        ratio = l2 / math.sqrt(dim)
        mean = float(gain.mean())
        std = scale * float(unit.std())
    bias_l2 = bias_abs_max = None
    bias_zero = True
    if bias is not None:
        b = np.asarray(bias, dtype=np.float64).reshape(-1)
        with np.errstate(all="ignore"):
            bias_l2 = float(np.sqrt(np.dot(b, b)))
            bias_abs_max = float(np.abs(b).max()) if b.size else 0.0
        bias_zero = bool((b == 0).all())
        finite = finite and bool(np.isfinite(b).all())
    return NormStats(
        name=info.name,
        module=info.module,
        mtp_depth=info.mtp_depth,
        layer=info.layer,
        tower=info.tower,
        stack=info.stack,
        role=info.role,
        group=info.group,
        kind=Kind.layernorm if bias is not None else Kind.rmsnorm,
        parametrization=info.parametrization,
        stored_offset=info.stored_offset,
        dim=dim,
        l2=l2,
        ratio=ratio,
        mean=mean,
        std=std,
        min=float(gain.min()),
        max=float(gain.max()),
        negative=int((gain < 0).sum()),
        outliers=_outliers(gain),
        bias_l2=bias_l2,
        bias_abs_max=bias_abs_max,
        identity=finite and bool((gain == 1.0).all()) and bias_zero,
        band=thresholds.classify(ratio) if finite else Band.nonfinite,
    )


def parametrization_doubt(info: NormInfo, stored: np.ndarray) -> str | None:
    """Name a disagreement between the parametrization and the data, if the data is conclusive.

    An all-zero vector read as standard would be a collapsed norm, but it is exactly what an
    offset norm looks like at init; an all-ones vector read as offset is a gain of 2, but it is
    what a converter that baked +1 into offset gains (llama.cpp, NeMo 1.0) writes at init.
    """
    if stored.size == 0:
        return None
    if info.parametrization is Parametrization.standard and (stored == 0).all():
        return "all zeros but read as standard: an offset (1 + w) norm at init?"
    if info.parametrization is Parametrization.offset and (stored == 1).all():
        return "all ones but read as offset (gain 2): a converter that baked in the +1?"
    return None


def stored_gain(dtype: str, data: bytes, stored_offset: float) -> np.ndarray | None:
    """The model's own weight of a norm: `data` decoded, less what a converter baked in
    (`NormInfo.stored_offset`); None: a dtype that is not a float `decode` knows."""
    gain = decode(dtype, data)
    if gain is not None and stored_offset:
        gain = gain - stored_offset  # undo the converter: the model's own weight
    return gain


class Gains(Mapping[str, np.ndarray]):
    """The effective gain of each measured norm (stored + shift, float64, flattened) by name,
    decoded from its stored bytes at each lookup (a new array each time).

    NOTE: issue 29: the float64 gains of a 1.5M-tensor checkpoint's 3,912 norms are 122 MiB,
    their BF16 bytes 31 MiB (held anyway: they were read); a d = 7168 vector decodes in ~10 us.
    """

    __slots__ = ("_stored",)

    def __init__(self) -> None:
        self._stored: dict[str, tuple[str, bytes, float, float]] = {}

    def add(self, info: NormInfo, dtype: str, data: bytes) -> None:
        """Keep `info`'s stored bytes (`data`, of `dtype`) to decode its effective gain."""
        self._stored[info.name] = (dtype, data, info.stored_offset, info.parametrization.shift)

    def __getitem__(self, name: str) -> np.ndarray:
        dtype, data, stored_offset, shift = self._stored[name]
        gain = stored_gain(dtype, data, stored_offset)
        assert gain is not None  # `add` is given measured norms only
        return gain.reshape(-1) + shift

    def __iter__(self) -> Iterator[str]:
        return iter(self._stored)

    def __len__(self) -> int:
        return len(self._stored)


def identity_kind(stored: np.ndarray) -> Parametrization | None:
    """The parametrization whose identity `stored` exactly is: all zeros an offset (1 + w)
    norm's, all ones a standard norm's; None: neither (trained)."""
    if (stored == 0).all():
        return Parametrization.offset
    if (stored == 1).all():
        return Parametrization.standard
    return None


def settle_at_init(
    kinds: Sequence[tuple[NormInfo, Parametrization | None]], warnings: list[str]
) -> list[NormInfo]:
    """Let the data decide the parametrization of the towers that are exactly at init.

    At init every gain is the identity: a standard norm stores ones, an offset (1 + w) norm
    zeros (docs/architectures.md#stacks-towers-and-the-model-zoo). So in a tower
    (`NormInfo.tower`) whose every stored gain is exactly all zeros or all ones (`kinds`:
    each norm's `identity_kind`), the stored vector says which each norm is, whatever the name,
    the config flags or the family said — and a disagreement is named in a warning, never
    settled silently. A tower with any other value is trained: its all-zero norm may be a real
    collapse, so the rules stand there (`parametrization_doubt` warns).
    """
    at_init: dict[Any, bool] = {}
    for info, kind in kinds:
        at_init[info.tower] = at_init.get(info.tower, True) and kind is not None
    out = []
    changed: list[str] = []
    for info, kind in kinds:
        if (
            kind is not None
            and at_init[info.tower]
            and kind is not info.parametrization
            and not info.pinned
        ):
            changed.append(info.name)
            info = dataclasses.replace(info, parametrization=kind)
        out.append(info)
    if changed:
        warnings.append(
            f"{len(changed)} norm(s) at init store the identity of another parametrization "
            f"than the rules say (zeros: offset 1 + w, ones: standard), e.g. '{changed[0]}': "
            "read as the data says; pass --parametrization to override"
        )
    return out


def count_bands(norms: Iterable[NormStats]) -> BandCounts:
    """Count norms per band."""
    counts = dict.fromkeys((b.value for b in Band), 0)
    for n in norms:
        counts[n.band.value] += 1
    return BandCounts(**counts)


HEADLINE_ROLES = (Role.final, Role.mtp_embedding, Role.mtp_hidden, Role.mtp_final)
"""The roles of the headline norms, in the order they are shown."""


def is_headline(n: NormInfo | NormStats) -> bool:
    """The norms the playbook watches by name: the main model's final norm, and each MTP
    depth's embedding, hidden and final norms (not the MTP block's inner norms)."""
    if n.module is Module.main:  # a vision or audio tower's final norm feeds no LM head
        return n.role is Role.final and n.tower is Tower.text
    return n.role in HEADLINE_ROLES


def headline_key(n: NormInfo | NormStats) -> tuple[int, int, str]:
    """Headline order: by MTP depth (the final norm first), then role, then name."""
    return (n.mtp_depth or 0, HEADLINE_ROLES.index(n.role), n.name)


def headline(norms: Sequence[NormStats]) -> tuple[Headline, ...]:
    """The final norm, then each MTP depth's embedding, hidden and final norms."""
    rows = sorted((n for n in norms if is_headline(n)), key=headline_key)
    return tuple(Headline(n.name, n.role, n.mtp_depth, n.ratio, n.band) for n in rows)


_ROLE_ORDER = {r: i for i, r in enumerate(Role)}


def sort_key(n: NormStats) -> tuple[Any, ...]:
    """Main before MTP; embedding first, then by layer, final last; then role, then name."""
    if n.layer is not None:
        position: float = n.layer
    elif n.role is Role.embedding:
        position = -1
    else:
        position = math.inf
    return (
        0 if n.module is Module.main else 1,
        n.mtp_depth or 0,
        position,
        _ROLE_ORDER[n.role],
        natural_key(n.name),
    )


def relative_change(before: np.ndarray, after: np.ndarray) -> float:
    """‖after − before‖₂/‖before‖₂ on effective gains (diff, check and series all use this)."""
    delta = after - before
    with np.errstate(all="ignore"):
        norm_before = float(np.sqrt(np.dot(before, before)))
        norm_delta = float(np.sqrt(np.dot(delta, delta)))
    if norm_before > 0:
        return norm_delta / norm_before
    return 0.0 if norm_delta == 0 else math.inf
