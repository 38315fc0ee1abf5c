"""The output schema: enums and frozen dataclasses passed between modules.

The field names of `NormStats` are the JSON keys, the CSV headers and the table columns, in this
order. They are a contract with every script that reads normscope's output: changing one bumps
`SCHEMA_VERSION` and needs a CHANGELOG entry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas stays off the import path of a scan
    import pandas

SCHEMA_VERSION = 1


class Role(str, Enum):
    """What a norm does in the network (ARCHITECTURES.md naming mapped to one closed set)."""

    attn_input = "attn_input"
    mlp_input = "mlp_input"
    attn_output = "attn_output"
    mlp_output = "mlp_output"
    qk = "qk"
    latent = "latent"
    linear_attn = "linear_attn"
    final = "final"
    mtp_embedding = "mtp_embedding"
    mtp_hidden = "mtp_hidden"
    mtp_final = "mtp_final"
    embedding = "embedding"
    unknown = "unknown"


class Module(str, Enum):
    """Which part of the model a norm belongs to."""

    main = "main"
    mtp = "mtp"


class Group(str, Enum):
    """Input norms feed a linear map (foldable); output norms join the residual stream."""

    input = "input"
    output = "output"


class Kind(str, Enum):
    """`layernorm` when the checkpoint stores a bias next to the gain, else `rmsnorm`."""

    rmsnorm = "rmsnorm"
    layernorm = "layernorm"


class Parametrization(str, Enum):
    """How the stored vector w maps to the effective gain: `w` or `1 + w`."""

    standard = "standard"
    offset = "offset"

    @property
    def shift(self) -> float:
        """The constant added to the stored vector to get the effective gain."""
        return 1.0 if self is Parametrization.offset else 0.0


class Band(str, Enum):
    """Health band of a norm's ratio ‖g_eff‖₂/√d (diagnostic playbook, DOMAIN.md section 3)."""

    collapse = "collapse"
    shrink = "shrink"
    balanced = "balanced"
    grow = "grow"
    explosion = "explosion"
    nonfinite = "nonfinite"

    @property
    def out_of_band(self) -> bool:
        """True for the bands that leave the playbook's act band [low, high]."""
        return self in (Band.collapse, Band.explosion, Band.nonfinite)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Band edges on the ratio ‖g_eff‖₂/√d."""

    low: float = 0.4
    """Below this: collapse."""
    high: float = 1.8
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
class TensorRef:
    """Where one tensor's bytes live: a shard and an absolute byte range in it."""

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
    bias_name: str | None = None
    """The LayerNorm bias tensor's name, when the checkpoint stores one."""
    rule: str = ""
    """Which rule matched (family:pattern, vocab:name:pattern, vision, width or generic)."""
    consumers: tuple[str, ...] = ()
    """Patterns (rule syntax, indices filled in, prefix prepended) of the linear maps that read
    this norm's output, when its rule names them: what folding γ away needs."""
    producers: tuple[str, ...] = ()
    """Patterns of the tensors whose output this norm normalises, when its rule names them."""
    vocabulary: str | None = None
    """The naming vocabulary that read this norm, when no family rule lists it."""
    recognised: bool = True
    """False when no rule, vocabulary or width placed the norm (role `unknown`, not understood)."""


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
    role: Role
    group: Group | None
    """`input` (foldable into the next linear map), `output` (joins the residual), or null."""
    kind: Kind
    parametrization: Parametrization
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


@dataclass(frozen=True, slots=True)
class Report:
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
        from normscope.report import to_frame

        return to_frame(self.norms)


# --- diff ----------------------------------------------------------------------------------------


class MatchedBy(str, Enum):
    """How a norm of checkpoint A was paired with one of checkpoint B."""

    name = "name"
    identity = "identity"
    """Same module, MTP depth, layer, role and dim under different names (e.g. Megatron vs HF)."""


@dataclass(frozen=True, slots=True)
class Mover:
    """One channel that moved between two checkpoints."""

    index: int
    before: float
    after: float


@dataclass(frozen=True, slots=True)
class NormDiff:
    """One norm present in both checkpoints (a JSON object / CSV row of `diff`)."""

    name: str
    """Name in checkpoint B."""
    name_a: str
    """Name in checkpoint A (differs from `name` only when matched by identity)."""
    matched_by: MatchedBy
    module: Module
    mtp_depth: int | None
    layer: int | None
    role: Role
    group: Group | None
    dim: int
    ratio_a: float
    ratio_b: float
    delta_ratio: float
    """ratio_b - ratio_a."""
    rel_change: float
    """‖g_B - g_A‖₂ / ‖g_A‖₂ on the effective gains."""
    cosine: float
    """Cosine similarity of g_A and g_B."""
    band_a: Band
    band_b: Band
    band_changed: bool
    movers: tuple[Mover, ...]
    """Up to 5 channels with the largest |g_B - g_A|, largest first."""


@dataclass(frozen=True, slots=True)
class RoleDrift:
    """Relative change summarised per (module, role)."""

    module: Module
    role: Role
    count: int
    rel_change_median: float
    rel_change_max: float


@dataclass(frozen=True, slots=True)
class DiffReport:
    """The result of comparing two checkpoints."""

    schema_version: int
    normscope_version: str
    a: str
    b: str
    model_a: ModelInfo
    model_b: ModelInfo
    norms: tuple[NormDiff, ...]
    """Matched norms, largest relative change first."""
    only_a: tuple[str, ...]
    """Norms present in A only."""
    only_b: tuple[str, ...]
    """Norms present in B only."""
    roles: tuple[RoleDrift, ...]
    band_changes: int
    warnings: tuple[str, ...] = ()


# --- check ---------------------------------------------------------------------------------------


class Severity(str, Enum):
    """What a failed check means: `error` fails the job, `warn` is reported only, `off` skips it."""

    error = "error"
    warn = "warn"
    off = "off"


class CheckName(str, Enum):
    """The checks of `normscope check`."""

    finite = "finite"
    """Every gain and bias is finite (always an error)."""
    decodable = "decodable"
    """Every norm found could be measured (not an unsupported dtype or empty; always an error)."""
    band = "band"
    """Ratio inside [low, high] (per-role overrides allowed), for norms in scope."""
    drift = "drift"
    """Relative change against --baseline at most --max-drift, for norms in scope."""
    band_change = "band_change"
    """Same band as in --baseline, for norms in scope."""
    init = "init"
    """Every effective gain exactly the identity and every bias exactly zero (--expect-init)."""
    mtp = "mtp"
    """The checkpoint holds the norms of --expect-mtp MTP depths."""


@dataclass(frozen=True, slots=True)
class RoleBand:
    """A per-role band, e.g. a wider one for QK norms."""

    role: Role
    low: float | None
    """None: the policy's `low`."""
    high: float | None
    """None: the policy's `high`."""


@dataclass(frozen=True, slots=True)
class Severities:
    """Severity of each configurable check (`finite` is always an error)."""

    band: Severity = Severity.error
    drift: Severity = Severity.error
    band_change: Severity = Severity.error
    init: Severity = Severity.error
    mtp: Severity = Severity.error


@dataclass(frozen=True, slots=True)
class Policy:
    """The effective policy of a check run: defaults < config file < flags."""

    low: float = 0.4
    high: float = 1.8
    scope: str = "final,mtp"
    """Norms the band, drift and band_change checks look at (a `normscope.scope` expression)."""
    max_drift: float | None = None
    """Largest allowed ‖g - g_base‖/‖g_base‖; None: no drift limit (band changes still checked)."""
    expect_init: bool = False
    expect_mtp: int | None = None
    parametrization: Parametrization | None = None
    severity: Severities = field(default_factory=Severities)
    roles: tuple[RoleBand, ...] = ()
    origin: tuple[str, ...] = ("defaults",)
    """Where the settings came from, in precedence order."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One evaluated (check, subject): passed, or a violation with its evidence."""

    check: CheckName
    subject: str
    """The tensor name, or `model` for checks about the whole checkpoint."""
    passed: bool
    severity: Severity
    value: float | None
    """The measured number (ratio, relative change, max |g - 1|, MTP depth)."""
    limit: str
    """The threshold it was held to, in words: `[0.4, 1.8]`, `<= 0.15`, `== 1`."""
    message: str
    fix: str | None
    """What the playbook suggests doing, for violations."""


@dataclass(frozen=True, slots=True)
class CheckReport:
    """The result of `normscope check`."""

    schema_version: int
    normscope_version: str
    source: str
    baseline: str | None
    policy: Policy
    findings: tuple[Finding, ...]
    errors: int
    """Failed findings of severity error."""
    warned: int
    """Failed findings of severity warn."""
    verdict: str
    """`pass` or `fail`."""
    warnings: tuple[str, ...] = ()


# --- series --------------------------------------------------------------------------------------


class Order(str, Enum):
    """How `series` orders its checkpoints."""

    step = "step"
    """By the step number parsed from the name; natural order breaks ties."""
    natural = "natural"
    """By name, digits compared as numbers (checkpoint-10 after checkpoint-9)."""
    mtime = "mtime"
    """By modification time of the checkpoint file or folder."""


class StepSource(str, Enum):
    """Where the `step` of each checkpoint of a series comes from."""

    name = "name"
    """Parsed from the checkpoint's name (checkpoint-500, iter_0000500, step500, ...)."""
    position = "position"
    """The 0-based position in the series: some name carried no step number."""


class Executor(str, Enum):
    """How `series` runs its scans: `auto` picks `process` when the checkpoints are big enough."""

    auto = "auto"
    serial = "serial"
    thread = "thread"
    process = "process"


@dataclass(frozen=True, slots=True)
class SeriesCheckpoint:
    """One measured checkpoint of a series."""

    path: str
    step: int
    bytes_read: int
    """Header, metadata and norm bytes read from this checkpoint."""
    seconds: float
    """Wall time of its scan."""


@dataclass(frozen=True, slots=True)
class Skipped:
    """A checkpoint (or a folder named like one) left out of a series, and why."""

    path: str
    step: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class SeriesRow:
    """One norm at one checkpoint; JSON and CSV flatten it: checkpoint, step, NormStats fields."""

    checkpoint: str
    """The checkpoint's path."""
    step: int
    norm: NormStats
    rel_change: float | None
    """‖g − g_prev‖₂/‖g_prev‖₂ against the previous checkpoint of the series; null for the first."""


@dataclass(frozen=True, slots=True)
class Trend:
    """A headline norm followed across the series (or a role's median ratio, `aggregate`)."""

    name: str
    """Tensor name, or `median(ROLE)` / `median(mtp:ROLE)` for a role's median ratio."""
    role: Role
    module: Module
    ratio_first: float
    ratio_last: float
    band_last: Band
    first_out_of_band_step: int | None
    """The first step at which the ratio was collapse, explosion or nonfinite; null if never."""
    drift_per_1k_steps: float | None
    """Least-squares slope of ratio vs step over the last min(n, 5) checkpoints, × 1000."""
    projected_crossing_step: int | None
    """Where a steady drift at that rate crosses the low or high band edge; null when the ratio
    is flat, already out of band, or the crossing lies further ahead than 3x the span of steps
    observed (an extrapolation with no information in it)."""
    projected_band: Band | None
    """`collapse` or `explosion`: the band that crossing leads into."""
    mtp_depth: int | None
    aggregate: bool
    """True for a role's median ratio (a pseudo-norm)."""
    count: int
    """Norms behind the number: 1, or the size of the role at the last checkpoint."""
    ratios: tuple[float | None, ...]
    """The ratio at each checkpoint, aligned with `SeriesReport.checkpoints` (null: absent)."""


@dataclass(frozen=True, slots=True)
class SeriesSummary:
    """Trends of the headline norms and the gate inputs of the latest checkpoint."""

    thresholds: Thresholds
    scope: str
    """The gate scope (a `normscope.scope` expression)."""
    window: int
    """Checkpoints in the drift fit: min(n, 5)."""
    latest_step: int
    gated_out_of_band: int
    """Norms in scope that are out of band at the latest checkpoint."""
    headline: tuple[Trend, ...]
    """The final norm, each MTP norm, then each (module, role)'s median ratio."""


@dataclass(frozen=True, slots=True)
class SeriesIO:
    """What a series cost."""

    bytes_read: int
    seconds: float
    executor: Executor
    """`serial`, `thread` or `process`: what actually ran."""
    jobs: int
    """Workers of the pool (1 when serial)."""


@dataclass(frozen=True, slots=True)
class SeriesReport:
    """The result of `normscope series`: one training run's norms, checkpoint by checkpoint."""

    schema_version: int
    normscope_version: str
    source: tuple[str, ...]
    """The arguments: one run folder, or the checkpoints listed."""
    model: ModelInfo
    """Of the latest checkpoint."""
    steps_from: StepSource
    order: Order
    checkpoints: tuple[SeriesCheckpoint, ...]
    """Measured checkpoints, in series order."""
    skipped: tuple[Skipped, ...]
    rows: tuple[SeriesRow, ...]
    """One per (checkpoint, norm), in series order, norms in scan order."""
    summary: SeriesSummary
    io: SeriesIO
    warnings: tuple[str, ...] = ()

    def to_frame(self) -> pandas.DataFrame:
        """Return the tidy rows: checkpoint, step, every NormStats field, rel_change."""
        from normscope.render_series import to_series_frame

        return to_series_frame(self)
