"""The schema of a scan: where a tensor lives, what a norm is, its statistics, the Report.

The field names of `NormStats` are the JSON keys, the CSV headers and the table columns, in this
order. They are a contract with every script that reads normscope's output: changing one bumps
`SCHEMA_VERSION` and needs a CHANGELOG entry.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from normscope.enums import (
    DEFAULT_HIGH,
    DEFAULT_LOW,
    Band,
    Group,
    Kind,
    Module,
    Parametrization,
    Role,
    Stack,
    Tower,
)
from normscope.notebook import Notebook, Row, deviation, norm_row

if TYPE_CHECKING:  # pandas stays off the import path of a scan
    import pandas

SCHEMA_VERSION = 4
"""2: NormStats.peer_median/anomaly, Summary.anomalies, NormDiff.anomaly_a/b (issue #11).
3: SeriesReport.trinity (`series --events`), series order `given` (issue #14).
4: NormStats.tower/stack, roles cross_attn_input/cross_attn_output (issue #25);
NormStats.stored_offset (GGUF input, issue #24)."""


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Band edges on the ratio ‖g_eff‖₂/√d."""

    low: float = DEFAULT_LOW
    """Below this: collapse."""
    high: float = DEFAULT_HIGH
    """Above this: explosion."""
    balanced_low: float = 0.9
    """[balanced_low, balanced_high] is balanced; between low and balanced_low is shrink."""
    balanced_high: float = 1.12
    """Between balanced_high and high is grow."""

    def classify(self, ratio: float) -> Band:
        """Return the band of one ratio; NaN and infinities are `nonfinite`."""
        if not math.isfinite(ratio):
            return Band.nonfinite
        if ratio < self.low:
            return Band.collapse
        if ratio > self.high:
            return Band.explosion
        if ratio < self.balanced_low:
            return Band.shrink
        if ratio > self.balanced_high:
            return Band.grow
        return Band.balanced


@dataclass(frozen=True, slots=True)
class PeerRule:
    """Thresholds of the anomaly rule (policy settings; the policy embeds one of these)."""

    factor: float = 2.0
    """A ratio at least this many times above or below its peer median is an anomaly."""
    mad_k: float = 3.5
    """Robust outlier: more than mad_k x 1.4826 x MAD of the peers' log ratios from their median."""
    min_factor: float = 1.25
    """...and at least this many times away from the peer median (ignores BF16-level noise)."""
    min_peers: int = 4
    """Fewest OTHER peers (the norm itself not counted) with a usable ratio for a verdict."""
    window: int = 2
    """Layer norms are compared with their `window` nearest peers in depth on each side (at
    least `min_peers` in all), so a smooth trend with depth is no anomaly; 0: with every peer."""

    def __post_init__(self) -> None:
        if not (self.factor > 1 and self.min_factor > 1 and self.mad_k > 0):
            raise ValueError(
                f"need factor > 1, min_factor > 1 and mad_k > 0, got factor={self.factor}, "
                f"min_factor={self.min_factor}, mad_k={self.mad_k}"
            )
        if self.min_peers < 2:
            raise ValueError(f"need min_peers >= 2 (a median needs company), got {self.min_peers}")
        if self.window < 0:
            raise ValueError(f"need window >= 0 (0: compare with every peer), got {self.window}")


class TensorRef(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """Where one tensor's bytes live: a shard and an absolute byte range in it.

    NOTE: a frozen msgspec Struct, not a frozen dataclass like the rest of the schema: a
    checkpoint holds one per tensor (92k in DeepSeek-V3), and a Struct is built ~3x faster and,
    with `gc=False`, is never tracked by the cyclic garbage collector (it holds only str, int and
    a tuple of ints: it cannot be part of a cycle). Same fields, equality, hashing, pickling and
    immutability as the dataclass it replaced.
    """

    name: str
    """Tensor name, verbatim from the safetensors header."""
    shard: str
    """Path (or Hub file name) of the shard holding it."""
    dtype: str
    """safetensors dtype string: F32, BF16, F8_E4M3, ..."""
    shape: tuple[int, ...]
    """Tensor shape from the header."""
    start: int
    """Absolute offset of the first byte in the shard file."""
    end: int
    """Absolute offset one past the last byte."""

    @property
    def nbytes(self) -> int:
        """Size of the tensor's data in bytes."""
        return self.end - self.start

    @property
    def numel(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)


def gain_shaped(name: str, shape: tuple[int, ...]) -> bool:
    """Whether a tensor is shaped like a norm's gain or bias: 1-D, or 2-D with `norm` in its
    name (per-head gains). The one test both the architecture rules' candidates
    (`arch.resolve.candidates`) and a light open (`TensorMap`) apply."""
    ndim = len(shape)
    return ndim == 1 or (ndim == 2 and "norm" in name.lower())


def light_kept(name: str, shape: tuple[int, ...]) -> bool:
    """Whether a light layout keeps a tensor's ref: gain-shaped (`gain_shaped`), or a scalar.
    So a tensor it knows of and holds no ref of has two or more dimensions (`is_matrix`)."""
    return not shape or gain_shaped(name, shape)


def is_matrix(tensors: Mapping[str, TensorRef], name: str) -> bool:
    """Whether `name` is a tensor of two or more dimensions; a `TensorMap` answers without
    loading the full map when it knows of the name (`TensorMap.matrix`)."""
    if isinstance(tensors, TensorMap):
        return tensors.matrix(name)
    ref = tensors.get(name)
    return ref is not None and len(ref.shape) >= 2


class Leaves:
    """The names a light layout keeps besides its refs (`light_kept`): those ending with one of
    `leaves` (a relative tensor name such as `post_feedforward_layernorm.weight`), which is
    what the architecture rules' `if_present` conditions ask about (`arch.present_leaves`)."""

    __slots__ = ("_dotted", "_exact", "leaves")

    def __init__(self, leaves: Iterable[str] = ()) -> None:
        self.leaves: tuple[str, ...] = tuple(sorted(set(leaves)))
        self._dotted = tuple("." + leaf for leaf in self.leaves)
        self._exact = frozenset(self.leaves)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Leaves) and other.leaves == self.leaves

    def __hash__(self) -> int:
        return hash(self.leaves)

    def __repr__(self) -> str:
        return f"Leaves({list(self.leaves)!r})"

    def covers(self, name: str) -> bool:
        """Whether a light layout kept `name`, were it a tensor of the checkpoint."""
        return name.endswith(self._dotted) or name in self._exact

    def select(self, names: Sequence[str]) -> list[str]:
        """The names of `names` this covers."""
        if not self.leaves:
            return []
        # NOTE: at C speed (`map` of a methodcaller): it runs over every name of every header.
        ends = operator.methodcaller("endswith", self._dotted)
        return [*itertools.compress(names, map(ends, names)), *self._exact.intersection(names)]


class TensorMap(Mapping[str, TensorRef]):
    """The tensors of a checkpoint as a scan keeps them: the `TensorRef` of each gain-shaped one
    and each scalar (`kept`, `light_kept`), how many there are, and their names, all of them or
    only those a rule may ask for.

    What a scan keeps of a layout (`sources.layout.open_layout(light=leaves)`). `complete`: every
    name is in `present` (in shard order, then header order, as the full map holds them), and
    `in`, `len` and iteration are answered from it. Otherwise (a checkpoint of more than
    `layout.KEEP_NAMES` tensors: issue 29, no per-tensor object beyond the norms), `present`
    holds only the names `leaves` covers (what the rules' `if_present` asks), and `in` is
    answered for those and the kept ones; any other question (the structural inference of a
    norm no rule names asks what sits beside it) loads the full map, once. Looking up the ref of
    a tensor that is not kept loads it too. `load` reads the headers again and counts it.
    `fold`, which reads matrices, opens the full map from the start.
    """

    __slots__ = ("_count", "_full", "_leaves", "_load", "_present", "complete", "kept")

    def __init__(
        self,
        kept: dict[str, TensorRef],
        count: int,
        present: Collection[str],
        load: Callable[[], Mapping[str, TensorRef]],
        leaves: Leaves | None = None,
    ) -> None:
        self.kept = kept
        self._count = count
        self._present = present
        self._leaves = leaves
        self.complete = leaves is None
        self._load = load
        self._full: Mapping[str, TensorRef] | None = None

    @property
    def loaded(self) -> bool:
        """Whether the full map had to be loaded (a question beyond what a scan keeps)."""
        return self._full is not None

    def _every(self) -> Mapping[str, TensorRef]:
        if self._full is None:
            self._full = self._load()
        return self._full

    def _settled(self, name: object) -> bool | None:
        """Whether `name` is a tensor, when what was kept says; None: ask the full map."""
        if name in self.kept or name in self._present:
            return True
        if self._leaves is None:
            return False
        if self._full is None and isinstance(name, str) and self._leaves.covers(name):
            return False  # every name it covers was kept
        return None

    def __getitem__(self, name: str) -> TensorRef:
        ref = self.kept.get(name)
        if ref is not None:
            return ref
        if self._settled(name) is False:
            raise KeyError(name)
        return self._every()[name]

    def __contains__(self, name: object) -> bool:
        settled = self._settled(name)
        return settled if settled is not None else name in self._every()

    def matrix(self, name: str) -> bool:
        """Whether `name` is a tensor of two or more dimensions. A name known without a kept ref
        is one (`light_kept`: the gain-shaped and the scalars are kept), so the structural
        inference's count of a module's matrices loads nothing when every name was kept."""
        ref = self.kept.get(name)
        if ref is not None:
            return len(ref.shape) >= 2
        settled = self._settled(name)
        if settled is not None:
            return settled
        ref = self._every().get(name)
        return ref is not None and len(ref.shape) >= 2

    def __iter__(self) -> Iterator[str]:
        return iter(self._present if self.complete else self._every())

    def __len__(self) -> int:
        return self._count


@dataclass(frozen=True, slots=True)
class NormInfo:
    """What the architecture rules say one norm is; no numbers."""

    name: str
    """The gain tensor's name, verbatim."""
    module: Module
    mtp_depth: int | None
    """1-based MTP depth for MTP norms, else None."""
    layer: int | None
    """Trunk layer index for main-model layer norms; None for final, embedding and MTP norms."""
    role: Role
    group: Group | None
    parametrization: Parametrization
    tower: Tower = Tower.text
    """The tower the norm is in: text, vision, audio or projector (from the name's structure)."""
    stack: Stack | None = None
    """encoder or decoder in an encoder-decoder stack; None otherwise."""
    bias_name: str | None = None
    """The LayerNorm bias tensor's name, when the checkpoint stores one."""
    rule: str = ""
    """Which rule matched (family:pattern, vocab:name:pattern, vision, width, structure — placed
    by `arch/infer.py` — or generic)."""
    consumers: tuple[str, ...] = ()
    """Patterns (rule syntax, indices filled in) of the linear maps that read this norm's
    output, when its rule names them: what folding γ away needs. Matched as regular
    expressions of the rule grammar against tensor names (`.weight` optional), anchored at the
    nearest ancestor of the norm where they match (`model.layers.3.` … `model.`, the root)."""
    producers: tuple[str, ...] = ()
    """Patterns of the tensors whose output this norm normalises, when its rule names them."""
    vocabulary: str | None = None
    """The naming vocabulary that read this norm, when no family rule lists it."""
    recognised: bool = True
    """False when no rule, vocabulary or width placed the norm (role `unknown`, not understood)."""
    pinned: bool = False
    """The matching rule pins the parametrization (Qwen3-Next's standard `linear_attn.norm`, a
    user rule): the data at init does not override it (`analysis.settle_at_init`)."""
    stored_offset: float = 0.0
    """What the file's converter added to the model's weight before storing it: 1.0 where
    llama.cpp baked the +1 of a zero-centred norm into a GGUF (`normscope.arch.gguf`), else 0.
    The model's weight is stored − stored_offset; the effective gain adds the parametrization's
    shift to that."""


@dataclass(frozen=True, slots=True)
class Outlier:
    """One channel far from the vector's median."""

    index: int
    value: float


@dataclass(frozen=True, slots=True)
class NormStats:
    """One norm: classification and statistics of its effective gain (a JSON object, a CSV row)."""

    name: str
    """Gain tensor name, verbatim."""
    module: Module
    """`main` or `mtp`."""
    mtp_depth: int | None
    """1-based MTP depth, or null."""
    layer: int | None
    """Trunk layer index for main-model layer norms, else null."""
    tower: Tower
    """`text`, `vision`, `audio` or `projector`: the tower of a multimodal model."""
    stack: Stack | None
    """`encoder` or `decoder` in an encoder-decoder model, else null."""
    role: Role
    group: Group | None
    """`input` (foldable into the next linear map), `output` (joins the residual), or null."""
    kind: Kind
    parametrization: Parametrization
    stored_offset: float
    """What the file's converter added before storing the weight (1.0: llama.cpp baked the +1 of
    a zero-centred norm into a GGUF, which then holds the effective gain); 0.0 otherwise."""
    dim: int
    """Number of entries of the gain vector (all of them, for 2-D per-head gains)."""
    l2: float
    """‖g_eff‖₂."""
    ratio: float
    """l2 / √dim: 1.0 at initialization."""
    mean: float
    std: float
    """Population standard deviation of g_eff."""
    min: float
    max: float
    negative: int
    """Number of entries of g_eff below zero."""
    outliers: tuple[Outlier, ...]
    """Up to 5 channels with the largest |g_eff - median|, largest first; empty when all equal."""
    bias_l2: float | None
    """‖β‖₂ of the LayerNorm bias, or null when there is none."""
    bias_abs_max: float | None
    identity: bool
    """True when g_eff is exactly all ones and the bias (if any) exactly zero."""
    band: Band
    peer_median: float | None = None
    """Median ratio of this norm's peers (same module, MTP depth, role and name, other layers;
    leave-one-out); null with fewer than `min_peers` of them (`normscope.peers`)."""
    anomaly: bool | None = None
    """True when the ratio left its peers (see `normscope.peers`); null without enough peers."""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the config and the tensors say about the model."""

    model_type: str | None
    """config.json's model_type (null without a config)."""
    family: str
    """The normscope rule table used (`generic` when none fits)."""
    hidden_size: int | None
    """From config.json, else the final norm's length."""
    num_layers: int | None
    mtp_depth: int
    """Number of MTP depths whose norms are in the checkpoint (0 when none)."""


@dataclass(frozen=True, slots=True)
class IOStats:
    """What was read to produce the report (and, for a Hub repo, transferred)."""

    bytes_read: int
    """Bytes read from safetensors files: headers plus the byte ranges of the analysed tensors."""
    bytes_total: int
    """Size of all safetensors shards of the checkpoint."""
    metadata_bytes: int
    """Bytes of config.json and the shard index read besides the shards."""
    files: int
    """Number of safetensors shards."""
    seconds: float
    """Wall time of the scan."""
    requests: int = 0
    """HTTP requests made to the Hub (redirects included); 0 for local files and cache hits."""
    bytes_transferred: int = 0
    """Response body bytes received from the Hub: the API answer, config/index, header and norm
    ranges (plus coalesced gaps); 0 for local files and cache hits."""


@dataclass(frozen=True, slots=True)
class BandCounts:
    """How many norms fall in each band."""

    collapse: int = 0
    shrink: int = 0
    balanced: int = 0
    grow: int = 0
    explosion: int = 0
    nonfinite: int = 0


@dataclass(frozen=True, slots=True)
class Headline:
    """A headline norm: the final norm and each MTP depth's embedding/hidden/final norms."""

    name: str
    role: Role
    mtp_depth: int | None
    ratio: float
    band: Band


@dataclass(frozen=True, slots=True)
class Summary:
    """Counts over all norms and the gate's verdict inputs."""

    bands: BandCounts
    out_of_band: int
    """Norms (any scope) whose band is collapse, explosion or nonfinite."""
    scope: str
    """The gate scope used for `gated_out_of_band` (a `normscope.scope` expression)."""
    gated_out_of_band: int
    """Norms in the gate scope that are out of band: what `--fail-on out-of-band` looks at."""
    headline: tuple[Headline, ...]
    thresholds: Thresholds
    anomalies: int = 0
    """Norms whose ratio left their peers (`NormStats.anomaly`)."""


@dataclass(frozen=True, slots=True, repr=False)
class Report(Notebook):
    """The result of one scan."""

    schema_version: int
    normscope_version: str
    source: str
    model: ModelInfo
    io: IOStats
    norms: tuple[NormStats, ...]
    summary: Summary
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_frame(self) -> pandas.DataFrame:
        """Return one row per norm as a pandas DataFrame (columns in schema order)."""
        from normscope.frames import rows_frame

        return rows_frame(self.norms, NormStats)

    def _facts(self) -> list[tuple[str, Any]]:
        return [
            ("source", self.source),
            ("family", self.model.family),
            ("norms", len(self.norms)),
            ("out of band", self.summary.out_of_band),
            ("gated out of band", self.summary.gated_out_of_band),
            ("warnings", len(self.warnings)),
        ]

    def _table(self) -> tuple[tuple[str, ...], list[Row], str]:
        rows = sorted(self.norms, key=lambda n: (not n.band.out_of_band, -deviation(n.ratio)))
        columns = ("name", "layer", "role", "ratio", "band")
        return columns, [norm_row(n, n.ratio, n.band) for n in rows], "norms, out of band first"
