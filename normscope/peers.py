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


def _spread_outlier(others: np.ndarray, ratio: float, median: float, rule: PeerRule) -> bool:
    """The robust (MAD) test in log space, relative to the peer median.

    NOTE: logs are taken of ratios already divided by the peer median. Mathematically this is
    the issue's |log r - median(log peers)|; numerically it makes the verdict bit-for-bit
    invariant when every ratio is scaled by a power of two (tested), and the same up to rounding
    for any other constant.
    """
    logs = np.log(others / median)
    centre = numeric.median(logs)
    mad = numeric.median(np.abs(logs - centre))
    return abs(math.log(ratio / median) - centre) > rule.mad_k * _MAD_SCALE * mad


def find_anomalies(
    norms: Iterable[PeerSubject], rule: PeerRule | None = None
) -> dict[str, PeerVerdict]:
    """Compare every norm's ratio with its peers; return name -> verdict for every norm given.

    Cost: one sort per group plus an O(1) leave-one-out median per norm; the MAD (O(n)) is only
    computed for the few norms between `min_factor` and `factor` away from their peers.

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
        valid = sorted((n for n in members if _usable(n.ratio)), key=lambda n: n.ratio)
        ordered = np.array([n.ratio for n in valid], dtype=np.float64)
        position = {n.name: i for i, n in enumerate(valid)}
        for n in members:
            i = position.get(n.name)
            # Members with an unusable ratio see every valid member as a peer.
            others = ordered.size - (0 if i is None else 1)
            if others < rule.min_peers:
                out[n.name] = PeerVerdict(None, None, others)
                continue
            if i is None:
                anomaly = True if n.ratio == 0.0 else None
                out[n.name] = PeerVerdict(numeric.median(ordered), anomaly, others)
                continue
            median = _loo_median(ordered, i)
            away = max(n.ratio / median, median / n.ratio)
            anomaly = away >= rule.factor or (
                away >= rule.min_factor
                and _spread_outlier(np.delete(ordered, i), n.ratio, median, rule)
            )
            out[n.name] = PeerVerdict(median, anomaly, others)
    return out
