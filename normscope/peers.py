"""Peer-relative anomalies: a norm whose ratio left the norms that play its part in other layers.

Pure and self-contained (issue #11, part 1). The absolute bands of the playbook judge a norm against
its initialization; trained pre-norm models legitimately sit far from it
(docs/architectures.md#the-ratio-and-its-bands), so a single layer that broke away from its peers is
drowned among dozens of legitimate small input norms. This module compares each norm's ratio with
its peers instead:

- Peers: the norms of the same module, MTP depth and role, and the same tensor name up to the layer
  index (see `peer_key`), in other layers. The name refinement keeps distinct norms that share a
  role apart (DeepSeek's `q_a_layernorm` and `kv_a_layernorm` are both `latent`; Qwen3's `q_norm`
  and `k_norm` are both `qk`): mixing two populations whose ratios differ 2x would flag half of
  them.
- The peer median is the median of the OTHER peers' ratios (leave-one-out), so the norm under test
  never pulls its own reference.
- A norm is an anomaly when its ratio is at least `factor` away from the peer median on either
  side, or when it is a robust outlier among spread-out peers: |log r - median(log peers)| >
  `mad_k` x 1.4826 x MAD(log peers) and at least `min_factor` away from the peer median (so BF16
  rounding noise among near-identical peers never counts, although their MAD is tiny).

Invariants (tested): all-equal peers flag nothing; multiplying every ratio by the same constant
(a uniform shift of a whole role, a band matter) changes no verdict.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from normscope import numeric
from normscope.enums import Module, Role
from normscope.schema import PeerRule
from normscope.scope import Located

# NOTE: 1.4826 = 1 / Phi^-1(3/4) makes the MAD a consistent estimator of a normal sigma.
_MAD_SCALE = 1.4826


class PeerSubject(Located, Protocol):
    """What the rule reads of a norm: where it is (`NormStats` and `NormDiff` both qualify) and
    its ratio."""

    @property
    def ratio(self) -> float: ...


@dataclass(frozen=True, slots=True)
class PeerVerdict:
    """One norm compared with its peers."""

    peer_median: float | None
    """Median ratio of the other peers; None with fewer than `min_peers` of them."""
    anomaly: bool | None
    """True/False; None without enough peers or when the norm's own ratio is unusable."""
    peers: int
    """Number of other peers with a usable (finite, positive) ratio."""


_LAYER_INDEX = re.compile(r"(?<![^.])\d+(?![^.])")


def peer_key(n: PeerSubject) -> tuple[Module, int | None, Role, str]:
    """The group a norm is compared within: module, MTP depth, role, name with indices as `#`.

    Only whole dot-separated numeric components are replaced (`layers.7.` -> `layers.#.`),
    so GPT-2's `ln_1`/`ln_2` stay distinct names (their roles differ anyway).
    """
    return (n.module, n.mtp_depth, n.role, _LAYER_INDEX.sub("#", n.name))


def _usable(ratio: float) -> bool:
    return math.isfinite(ratio) and ratio > 0.0


def _loo_median(ordered: np.ndarray, i: int) -> float:
    """Median of `ordered` (sorted) without the element at sorted position `i`, in O(1)."""
    m = ordered.size - 1

    def at(rank: int) -> float:  # rank among the others -> value
        return float(ordered[rank if rank < i else rank + 1])

    if m % 2:
        return at(m // 2)
    return (at(m // 2 - 1) + at(m // 2)) / 2.0


def _order(n: PeerSubject) -> int | None:
    """A norm's depth: its layer, else the number in its name (`model.layers.7.` -> 7)."""
    layer = getattr(n, "layer", None)
    if isinstance(layer, int):
        return layer
    found = _LAYER_INDEX.search(n.name)
    return int(found.group(0)) if found is not None else None


def _window(size: int, at: int, half: int, skip_self: bool) -> list[int]:
    """Ranks of the `2 * half` members nearest in depth to rank `at` among `size` (itself left
    out when `skip_self`), shifted inward at the ends so that the first and last layers get as
    many neighbours as the others."""
    want = min(2 * half, size - (1 if skip_self else 0))
    lo, hi = at - half, at + half - (0 if skip_self else 1)
    if lo < 0:
        hi, lo = hi - lo, 0
    if hi > size - 1:
        lo, hi = max(0, lo - (hi - size + 1)), size - 1
    ranks = [r for r in range(lo, hi + 1) if not (skip_self and r == at)]
    return ranks[:want]


def find_anomalies(
    norms: Iterable[PeerSubject], rule: PeerRule | None = None
) -> dict[str, PeerVerdict]:
    """Compare every norm's ratio with its peers; return name -> verdict for every norm given.

    The reference of a layer norm is the median of its `2 x rule.window` nearest peers in depth
    (leave-one-out): released models drift smoothly with depth — Gemma-3-270M's post-norms rise
    from ~2 to ~380 over 18 layers — and a trend is not an anomaly, while one layer that leaves
    its neighbours is. The robust test reads the residuals against those local references.
    `window = 0` compares with every peer (the rule before issue #24).

    NOTE: a non-finite, zero or negative ratio is never used as anyone's peer (it has no log, and
    a NaN would poison the median). A norm whose own ratio is non-finite or negative gets its peer
    median but `anomaly` None: the `finite` check already reports it, and a verdict on a NaN would
    be an accident. A ratio of exactly 0 (an all-zero effective gain) among positive peers is
    infinitely far from them and IS an anomaly.
    """
    rule = rule or PeerRule()
    groups: defaultdict[tuple[Module, int | None, Role, str], list[PeerSubject]] = defaultdict(list)
    out: dict[str, PeerVerdict] = {}
    for n in norms:
        if n.name in out:
            raise ValueError(f"duplicate norm name: {n.name}")
        out[n.name] = PeerVerdict(None, None, 0)
        groups[peer_key(n)].append(n)
    for members in groups.values():
        out.update(_judge_group(members, rule))
    return out


def _judge_group(members: list[PeerSubject], rule: PeerRule) -> dict[str, PeerVerdict]:
    """The verdicts of one peer group."""
    depth_of = [_order(n) for n in members]
    local = rule.window > 0 and None not in depth_of
    key = (lambda n: (_order(n), n.ratio)) if local else (lambda n: (0, n.ratio))
    valid = sorted((n for n in members if _usable(n.ratio)), key=key)
    ratios = np.array([n.ratio for n in valid], dtype=np.float64)
    depths = np.array([_order(n) or 0 for n in valid], dtype=np.float64)
    position = {n.name: i for i, n in enumerate(valid)}
    half = max(rule.window, -(-rule.min_peers // 2))
    ordered = np.sort(ratios)

    def reference(at: int, depth: float, skip_self: bool) -> float:
        if not local:
            if not skip_self:
                return numeric.median(ordered)
            return _loo_median(ordered, int(np.searchsorted(ordered, ratios[at])))
        ranks = _window(ratios.size, at, half, skip_self)
        return _trend(depths[ranks], ratios[ranks], depth)

    out: dict[str, PeerVerdict] = {}
    enough = ratios.size - 1 >= rule.min_peers
    refs = np.array([reference(i, depths[i], True) for i in range(ratios.size)] if enough else [])
    for n in members:
        i = position.get(n.name)
        others = ratios.size - (0 if i is None else 1)
        if others < rule.min_peers:
            out[n.name] = PeerVerdict(None, None, others)
            continue
        if i is None:
            at = _insertion(valid, n) if local else 0
            anomaly = True if n.ratio == 0.0 else None
            out[n.name] = PeerVerdict(reference(at, _order(n) or 0, False), anomaly, others)
            continue
        median = float(refs[i])
        away = max(n.ratio / median, median / n.ratio)
        anomaly = away >= rule.factor or (
            away >= rule.min_factor
            and _residual_outlier(ratios / (refs if local else median), i, rule)
        )
        out[n.name] = PeerVerdict(median, anomaly, others)
    return out


def _trend(depths: np.ndarray, ratios: np.ndarray, at: float) -> float:
    """The neighbours' robust trend in depth, read at depth `at`: Siegel's repeated-median line
    through their log ratios (slope: the median over points of the median of their slopes to
    the others; intercept: the median of y - slope x), which ignores up to half the points.

    Constant neighbours give their median; a steady geometric rise gives the value the rise
    predicts, at the first and last layers too (a plain median of one-sided neighbours would
    call the ends of every trend anomalies). NOTE: the logs are of ratios divided by the
    neighbours' median, which keeps the reference exactly proportional when every ratio is
    scaled by a power of two.
    """
    scale = numeric.median(ratios)
    logs = np.log(ratios / scale)
    run = depths[None, :] - depths[:, None]
    rise = logs[None, :] - logs[:, None]
    steps = run != 0
    counts = steps.sum(axis=1)
    counts = counts[counts > 0]
    if not counts.size:
        return scale
    slopes = rise[steps] / run[steps]  # row by row, each row's steps in order
    if (counts == counts[0]).all():
        # NOTE: every row's median in one partition (the same values as row by row: each is
        # its row's middle order statistic, or the mean of two): one call, not one a row, for
        # each of a 1.5M-tensor checkpoint's 3,904 norms (issue 29).
        inner = numeric.row_medians(slopes.reshape(counts.size, int(counts[0])))
    else:  # neighbours that share a depth: rows of different lengths
        ends = np.cumsum(counts)
        inner = np.array(
            [numeric.median(slopes[e - c : e]) for c, e in zip(counts, ends, strict=True)]
        )
    slope = numeric.median(inner)
    centre = numeric.median(logs - slope * depths) + slope * at
    return float(scale * math.exp(centre))


def _insertion(valid: list[PeerSubject], n: PeerSubject) -> int:
    """Where a norm without a usable ratio sits in depth among the valid ones."""
    depth = _order(n) or 0
    return min(sum(1 for v in valid if (_order(v) or 0) < depth), len(valid) - 1)


def _residual_outlier(residuals: np.ndarray, i: int, rule: PeerRule) -> bool:
    """The robust (MAD) test in log space: member `i`'s residual (its ratio over its reference)
    against the others' residuals.

    NOTE: against the global median (window 0) this is the issue #11 test |log r - median(log
    peers)| > mad_k x 1.4826 x MAD; logs are taken of ratios already divided by a reference,
    which keeps the verdict bit-for-bit invariant when every ratio is scaled by a power of two.
    """
    logs = np.log(residuals)
    others = np.delete(logs, i)
    centre = numeric.median(others)
    mad = numeric.median(np.abs(others - centre))
    return abs(float(logs[i]) - centre) > rule.mad_k * _MAD_SCALE * mad
