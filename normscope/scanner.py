"""One scan: open a checkpoint, classify its norms, read only their bytes, build the Report.

This is the library entry point behind `normscope.scan(path)` and `normscope scan PATH`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from normscope import __version__
from normscope.analysis import (
    SUPPORTED_DTYPES,
    compute_stats,
    count_bands,
    decode,
    headline,
    parametrization_doubt,
    sort_key,
)
from normscope.arch import RuleSet, classify, read_config
from normscope.errors import ArchError
from normscope.schema import (
    SCHEMA_VERSION,
    IOStats,
    ModelInfo,
    NormStats,
    Parametrization,
    Report,
    Role,
    Summary,
    Thresholds,
)
from normscope.scope import DEFAULT_SCOPE, parse_scope
from normscope.sources import Checkpoint, open_checkpoint


@dataclass(frozen=True, slots=True)
class ScanOptions:
    """Everything a scan can be told."""

    thresholds: Thresholds = field(default_factory=Thresholds)
    parametrization: Parametrization | None = None
    """Override for every norm; None: the architecture rules decide."""
    scope: str = DEFAULT_SCOPE
    """Which norms `Summary.gated_out_of_band` counts (see `normscope.scope`)."""
    rules: RuleSet = field(default_factory=RuleSet)
    """User architecture rules (`normscope.arch.load_rules`), tried before the built-in ones."""


@dataclass(frozen=True, slots=True)
class Measured:
    """A Report plus the effective gains it was computed from (for diff, check and series)."""

    report: Report
    gains: dict[str, np.ndarray]
    """Effective gain (stored + shift, float64, flattened) by norm name."""
    undecoded: dict[str, str] = field(default_factory=dict)
    """Norms found but not measured (unsupported dtype, empty), with the reason: a gate must
    not vouch for them (`check` fails them)."""


def scan(source: str | os.PathLike[str], options: ScanOptions | None = None) -> Report:
    """Scan one checkpoint (a .safetensors file or a directory of shards) and return its Report."""
    return measure(source, options).report


def measure(source: str | os.PathLike[str], options: ScanOptions | None = None) -> Measured:
    """Scan one checkpoint and keep the effective gain vectors next to the Report."""
    started = time.perf_counter()
    checkpoint = open_checkpoint(source)
    return analyze_checkpoint(checkpoint, options or ScanOptions(), started)


def analyze_checkpoint(
    checkpoint: Checkpoint, options: ScanOptions, started: float | None = None
) -> Measured:
    """Classify, read and measure the norms of an opened checkpoint."""
    started = time.perf_counter() if started is None else started
    warnings = list(checkpoint.warnings)
    cls = classify(
        checkpoint.tensors, checkpoint.config, options.parametrization, rules=options.rules
    )
    warnings.extend(cls.warnings)

    wanted = []
    for info in cls.norms:
        wanted.append(checkpoint.tensors[info.name])
        if info.bias_name is not None:
            wanted.append(checkpoint.tensors[info.bias_name])
    readable = [r for r in wanted if r.dtype in SUPPORTED_DTYPES]
    data = checkpoint.read(readable)

    stats: list[NormStats] = []
    gains: dict[str, np.ndarray] = {}
    undecoded: dict[str, str] = {}
    doubts: list[tuple[str, str]] = []
    for info in cls.norms:
        ref = checkpoint.tensors[info.name]
        gain = decode(ref.dtype, data[info.name]) if info.name in data else None
        bias = None
        if info.bias_name is not None:
            bias_ref = checkpoint.tensors[info.bias_name]
            bias = decode(bias_ref.dtype, data[info.bias_name]) if info.bias_name in data else None
            if bias is None or bias.size != ref.numel:
                warnings.append(
                    f"bias '{info.bias_name}' ignored: dtype {bias_ref.dtype}, shape "
                    f"{list(bias_ref.shape)} does not fit the gain"
                )
                bias = None
        if gain is None:
            undecoded[info.name] = (
                f"dtype {ref.dtype} is not a float format normscope decodes "
                f"({', '.join(SUPPORTED_DTYPES)})"
            )
        elif gain.size == 0:
            undecoded[info.name] = "empty tensor"
        if gain is None or info.name in undecoded:
            warnings.append(f"skipped '{info.name}': {undecoded[info.name]}")
            continue
        doubt = parametrization_doubt(info, gain)
        if doubt:
            doubts.append((info.name, doubt))
        row = compute_stats(info, gain, bias, options.thresholds)
        stats.append(row)
        gains[row.name] = gain.reshape(-1) + info.parametrization.shift
    if doubts:
        warnings.append(
            f"{len(doubts)} norm(s) look mis-parametrized, e.g. '{doubts[0][0]}' is "
            f"{doubts[0][1]} Pass --parametrization to override"
        )
    if not stats:
        raise ArchError(
            f"none of the {len(cls.norms)} norm tensors could be decoded ({checkpoint.source})"
        )
    stats.sort(key=sort_key)

    facts = read_config(checkpoint.config)
    hidden = facts.hidden_size
    if hidden is None:
        finals = [s.dim for s in stats if s.role is Role.final]
        dims = [s.dim for s in stats]
        hidden = finals[0] if finals else max(set(dims), key=dims.count)
    selector = parse_scope(options.scope)
    out_of_band = [s for s in stats if s.band.out_of_band]
    gated = [s for s in out_of_band if selector(s)]
    summary = Summary(
        bands=count_bands(stats),
        out_of_band=len(out_of_band),
        scope=selector.text,
        gated_out_of_band=len(gated),
        headline=headline(stats),
        thresholds=options.thresholds,
    )
    counter = checkpoint.counter
    io = IOStats(
        bytes_read=counter.bytes_read,
        bytes_total=checkpoint.bytes_total,
        metadata_bytes=counter.metadata_bytes,
        files=len(checkpoint.shards),
        seconds=time.perf_counter() - started,
        requests=counter.requests,
        bytes_transferred=counter.bytes_transferred,
    )
    model = ModelInfo(facts.model_type, cls.family, hidden, cls.num_layers, cls.mtp_depth)
    report = Report(
        schema_version=SCHEMA_VERSION,
        normscope_version=__version__,
        source=checkpoint.source,
        model=model,
        io=io,
        norms=tuple(stats),
        summary=summary,
        warnings=tuple(warnings),
    )
    return Measured(report, gains, undecoded)
