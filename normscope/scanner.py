"""One scan: open a checkpoint, classify its norms, read only their bytes, build the Report.

This is the library entry point behind `normscope.scan(path)` and `normscope scan PATH`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from normscope.analysis import (
    SUPPORTED_DTYPES,
    Gains,
    compute_stats,
    count_bands,
    decode,
    headline,
    identity_kind,
    parametrization_doubt,
    settle_at_init,
    sort_key,
    stored_gain,
)
from normscope.arch import RuleSet, classify, present_leaves
from normscope.errors import ArchError
from normscope.peers import find_anomalies
from normscope.schema import (
    SCHEMA_VERSION,
    IOStats,
    ModelInfo,
    NormInfo,
    NormStats,
    Parametrization,
    PeerRule,
    Report,
    Role,
    RoleBand,
    Summary,
    Thresholds,
)
from normscope.schema.check import role_thresholds
from normscope.scope import DEFAULT, Selector, parse_scope
from normscope.sources import Checkpoint, ProgressFactory, Source, SourceSpec, open_checkpoint
from normscope.version import __version__


@dataclass(frozen=True, slots=True)
class ScanOptions:
    """Everything a scan can be told."""

    thresholds: Thresholds = field(default_factory=Thresholds)
    parametrization: Parametrization | None = None
    """Override for every norm; None: the architecture rules decide."""
    scope: Selector = DEFAULT
    """Which norms `Summary.gated_out_of_band` counts (a text is parsed: `normscope.scope`)."""
    peers: PeerRule = field(default_factory=PeerRule)
    """The anomaly rule: when a norm has left its peers (`normscope.peers`)."""
    rules: RuleSet = field(default_factory=RuleSet)
    """User architecture rules (`normscope.arch.load_rules`), tried before the built-in ones."""
    roles: tuple[RoleBand, ...] = ()
    """Per-role bands (`[tool.normscope.roles]`): a norm of such a role is banded by its own."""
    cache: bool = True
    """Reuse a local checkpoint's cached layout (`--no-cache`: False)."""
    verbose: bool = False
    """Let huggingface_hub's own log lines reach stderr (`-v`)."""
    token: str | None = field(default=None, repr=False)
    """A Hugging Face token for Hub sources (`--token`); None: huggingface_hub's own (HF_TOKEN,
    `hf auth login`). Never printed: no repr, no report, no `--show-config`."""

    def __post_init__(self) -> None:
        if isinstance(self.scope, str):  # the library's edge: parse a scope given as text
            object.__setattr__(self, "scope", parse_scope(self.scope))

    def band_of(self, role: Role) -> Thresholds:
        """The band a norm of `role` is held to: its `roles` entry, else `thresholds`."""
        return role_thresholds(self.thresholds, self.roles, role)


@dataclass(frozen=True, slots=True)
class Measured:
    """A Report plus the effective gains it was computed from (for diff, check and series)."""

    report: Report
    gains: Mapping[str, np.ndarray]
    """Effective gain (stored + shift, float64, flattened) by norm name (a scan's: `Gains`,
    decoded at each lookup)."""
    undecoded: dict[str, str] = field(default_factory=dict)
    """Norms found but not measured (unsupported dtype, empty), with the reason: a gate must
    not vouch for them (`check` fails them)."""
    unread: tuple[str, ...] = ()
    """Norm-looking tensors no architecture rule understood (measured with role `unknown`)."""
    missing_final: bool = False
    """The architecture has a final norm (decoders do; post-LN encoders like BERT not) but none
    was identified among the tensors."""
    final_less: bool = False
    """The architecture rules say this model has no final norm (post-LN encoders: BERT, MPNet,
    nomic-bert): a default band scope (final, MTP) that holds nothing is then no hole."""
    infos: tuple[NormInfo, ...] = ()
    """What the architecture rules said of every norm found (fold reads its consumers)."""
    declared_mtp: int = 0
    """MTP depths the config declares (`num_nextn_predict_layers`, ...; 0 when none)."""
    norm_dtypes: tuple[str, ...] = ()
    """The stored float dtype of each measured norm."""
    other_dtypes: tuple[tuple[str, int], ...] = ()
    """(float dtype, bytes) of the tensors that are no norm or bias: what `faults` compares the
    norms' dtype with."""


def scan(source: Source | SourceSpec, options: ScanOptions | None = None) -> Report:
    """Scan one checkpoint (a .safetensors file or a directory of shards) and return its Report."""
    return measure(source, options).report


def measure(
    source: Source | SourceSpec,
    options: ScanOptions | None = None,
    progress: ProgressFactory | None = None,
) -> Measured:
    """Scan one checkpoint and keep the effective gain vectors next to the Report.

    `progress` reports long transfers (Hub sources); None: quiet.
    """
    started = time.perf_counter()
    options = options or ScanOptions()
    # light: the refs of the gain-shaped tensors only (the names the rules ask about, a dtype
    # summary): a scan reads no other tensor (`TensorMap`).
    checkpoint = open_checkpoint(
        source,
        progress,
        cache=options.cache,
        verbose=options.verbose,
        token=options.token,
        light=True,
        leaves=present_leaves(options.rules),
    )
    return analyze_checkpoint(checkpoint, options, started)


def analyze_checkpoint(
    checkpoint: Checkpoint, options: ScanOptions, started: float | None = None
) -> Measured:
    """Classify, read and measure the norms of an opened checkpoint."""
    started = time.perf_counter() if started is None else started
    warnings = list(checkpoint.warnings)
    opened = len(checkpoint.warnings)
    model_type = None
    if checkpoint.kind == "gguf" and checkpoint.config is not None:
        from normscope.arch.gguf import classify_gguf

        cls, model_type = classify_gguf(
            checkpoint.tensors, checkpoint.config, options.parametrization
        )
    else:
        cls = classify(
            checkpoint.tensors,
            checkpoint.config,
            options.parametrization,
            rules=options.rules,
            family_note=not checkpoint.parametrization_said,
        )
    warnings.extend(cls.warnings)
    measured = _measure_norms(checkpoint, cls.norms, options, warnings)
    # What the store said while reading the norms (a corrupt cache entry fetched again).
    warnings.extend(checkpoint.warnings[opened:])
    if not measured.stats:
        raise ArchError(
            f"none of the {len(cls.norms)} norm tensors could be decoded ({checkpoint.source})"
        )
    stats = _with_peers(sorted(measured.stats, key=sort_key), options.peers)
    hidden_size = _hidden_size(cls.facts.hidden_size, stats)
    model_type = model_type or cls.facts.model_type
    model = ModelInfo(model_type, cls.family, hidden_size, cls.num_layers, cls.mtp_depth)
    report = Report(
        schema_version=SCHEMA_VERSION,
        normscope_version=__version__,
        source=checkpoint.source,
        model=model,
        io=io_stats(checkpoint, started),
        norms=tuple(stats),
        summary=_summary(stats, options),
        warnings=tuple(warnings),
    )
    unread = tuple(cls.unknown)
    missing_final = cls.expects_final_norm and not any(n.role is Role.final for n in cls.norms)
    return Measured(
        report,
        measured.gains,
        measured.undecoded,
        unread,
        missing_final,
        not cls.expects_final_norm,
        tuple(measured.infos),
        declared_mtp=cls.facts.mtp_depth or 0,
        norm_dtypes=tuple(checkpoint.tensors[s.name].dtype for s in stats),
        other_dtypes=_other_floats(checkpoint, cls.norms),
    )


def _other_floats(checkpoint: Checkpoint, norms: Sequence[NormInfo]) -> tuple[tuple[str, int], ...]:
    """Bytes per float dtype of the tensors that are no norm or bias: the checkpoint's dtype
    summary less the norms' and biases' own (no pass over every tensor)."""
    mine = {n.name for n in norms} | {n.bias_name for n in norms if n.bias_name}
    counts = checkpoint.dtype_counts()
    for name in mine:
        ref = checkpoint.tensors[name]
        counts[ref.dtype][0] -= 1
        counts[ref.dtype][1] -= ref.nbytes
    return tuple(
        sorted((d, size) for d, (n, size) in counts.items() if n and d in SUPPORTED_DTYPES)
    )


@dataclass
class _Measurements:
    """What reading and measuring the norms gave: statistics, gains, the norms left out."""

    stats: list[NormStats] = field(default_factory=list)
    gains: Gains = field(default_factory=Gains)
    undecoded: dict[str, str] = field(default_factory=dict)
    infos: list[NormInfo] = field(default_factory=list)
    """The norms as measured: the rules' NormInfo, parametrization settled by the data at init."""


def _measure_norms(
    checkpoint: Checkpoint,
    norms: Sequence[NormInfo],
    options: ScanOptions,
    warnings: list[str],
) -> _Measurements:
    """Read the bytes of every norm (and bias) at once, then measure each norm.

    Without a --parametrization override, in a tower whose every gain is exactly all
    zeros or all ones — a checkpoint at init — the data settles the parametrization (zeros:
    offset, ones: standard, `settle_at_init`), and a warning names the norms where it
    contradicts the rules.
    """
    wanted = []
    for info in norms:
        wanted.append(checkpoint.tensors[info.name])
        if info.bias_name is not None:
            wanted.append(checkpoint.tensors[info.bias_name])
    data = checkpoint.read([r for r in wanted if r.dtype in SUPPORTED_DTYPES])
    out = _Measurements()
    measurable = _measurable(checkpoint, norms, data, options, out, warnings)
    doubts: list[tuple[str, str]] = []
    for info in measurable:
        out.infos.append(info)
        ref = checkpoint.tensors[info.name]
        gain = stored_gain(ref.dtype, data[info.name], info.stored_offset)
        assert gain is not None  # decoded in the first pass
        bias = _bias(checkpoint, info, ref.numel, data, warnings)
        doubt = parametrization_doubt(info, gain)
        if doubt:
            doubts.append((info.name, doubt))
        row = compute_stats(info, gain, bias, options.band_of(info.role))
        out.stats.append(row)
        out.gains.add(info, ref.dtype, data[info.name])
    if doubts:
        warnings.append(
            f"{len(doubts)} norm(s) look mis-parametrized, e.g. '{doubts[0][0]}' is "
            f"{doubts[0][1]} Pass --parametrization to override"
        )
    return out


def _measurable(
    checkpoint: Checkpoint,
    norms: Sequence[NormInfo],
    data: Mapping[str, bytes],
    options: ScanOptions,
    out: _Measurements,
    warnings: list[str],
) -> list[NormInfo]:
    """The norms whose gains decode, their parametrization settled by the data at init; the
    others are noted in `out.undecoded` and `out.infos`.

    NOTE: the first of two passes, each decoding one norm at a time: whether a tower is at init
    needs every norm of it first, and holding every decoded gain meanwhile was 122 MiB of
    float64 at 1.5M tensors (issue 29); the second decode costs ~10 us a norm.
    """
    kinds: list[tuple[NormInfo, Parametrization | None]] = []
    for info in norms:
        ref = checkpoint.tensors[info.name]
        raw = data.get(info.name)
        gain = None if raw is None else stored_gain(ref.dtype, raw, info.stored_offset)
        if gain is None:
            out.undecoded[info.name] = (
                f"dtype {ref.dtype} is not a float format normscope decodes "
                f"({', '.join(SUPPORTED_DTYPES)})"
            )
        elif gain.size == 0:
            out.undecoded[info.name] = "empty tensor"
        if gain is None or info.name in out.undecoded:
            warnings.append(f"skipped '{info.name}': {out.undecoded[info.name]}")
            out.infos.append(info)
            continue
        kinds.append((info, identity_kind(gain) if options.parametrization is None else None))
    if options.parametrization is None:
        return settle_at_init(kinds, warnings)
    return [info for info, _ in kinds]


def _bias(
    checkpoint: Checkpoint,
    info: NormInfo,
    numel: int,
    data: dict[str, bytes],
    warnings: list[str],
) -> np.ndarray | None:
    """The LayerNorm bias of a norm, when it has one that fits its gain."""
    if info.bias_name is None:
        return None
    bias_ref = checkpoint.tensors[info.bias_name]
    raw = data.get(info.bias_name)
    bias = decode(bias_ref.dtype, raw) if raw is not None else None
    if bias is None or bias.size != numel:
        warnings.append(
            f"bias '{info.bias_name}' ignored: dtype {bias_ref.dtype}, shape "
            f"{list(bias_ref.shape)} does not fit the gain"
        )
        return None
    return bias


def _with_peers(stats: list[NormStats], rule: PeerRule) -> list[NormStats]:
    """Each norm with its peer median and anomaly verdict."""
    verdicts = find_anomalies(stats, rule)
    return [
        dataclasses.replace(
            n, peer_median=verdicts[n.name].peer_median, anomaly=verdicts[n.name].anomaly
        )
        for n in stats
    ]


def _hidden_size(configured: int | None, stats: Sequence[NormStats]) -> int:
    """The config's hidden size, else the final norm's width, else the commonest width."""
    if configured is not None:
        return configured
    finals = [s.dim for s in stats if s.role is Role.final]
    dims = [s.dim for s in stats]
    return finals[0] if finals else max(set(dims), key=dims.count)


def _summary(stats: Sequence[NormStats], options: ScanOptions) -> Summary:
    out_of_band = [s for s in stats if s.band.out_of_band]
    return Summary(
        bands=count_bands(stats),
        out_of_band=len(out_of_band),
        scope=options.scope.text,
        gated_out_of_band=len(options.scope.matching(out_of_band)),
        headline=headline(stats),
        thresholds=options.thresholds,
        anomalies=sum(1 for s in stats if s.anomaly),
    )


def io_stats(checkpoint: Checkpoint, started: float) -> IOStats:
    """What was read (and transferred) to open and measure `checkpoint`, and how long it took."""
    counter = checkpoint.counter
    return IOStats(
        bytes_read=counter.bytes_read,
        bytes_total=checkpoint.bytes_total,
        metadata_bytes=counter.metadata_bytes,
        files=len(checkpoint.shards),
        seconds=time.perf_counter() - started,
        requests=counter.requests,
        bytes_transferred=counter.bytes_transferred,
    )
