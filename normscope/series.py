"""Follow a training run: measure its checkpoints concurrently and summarise the trends.

`measure_series(sources)` is the library entry point behind `normscope series`; it prints
nothing. `discovery.discover` finds and orders the checkpoints, this module measures them, and
`trends` turns the ratios into drift, first out-of-band steps and projected crossings.

Measurement: one `scan.measure` per checkpoint, results consumed in series order with at most
2 x jobs held, so only the previous checkpoint's gains stay in memory (for the relative
change). Processes, not threads: header JSON parsing and rule matching hold the GIL. Measured
on the 2-core development machine, 8 checkpoints of 47k tensors (5.3 MB of headers) each: one
loop 2.9-3.7 s, two threads 3.2-4.3 s (slower; CPU/wall 1.0), two processes 2.5-2.6 s. `auto`
measures the first checkpoints inline and starts a (forkserver) process pool only when the
rest would outlast its start-up: 200 tiny checkpoints take 0.1 s in one loop.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import (
    FIRST_COMPLETED,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from concurrent.futures import Executor as PoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from normscope.analysis import relative_change
from normscope.discovery import Candidate, Discovery, discover
from normscope.errors import NormscopeError, SourceError
from normscope.executors import ClusterSpec, Lost, cluster
from normscope.scanner import Measured, ScanOptions, measure
from normscope.schema import (
    SCHEMA_VERSION,
    Executor,
    ModelInfo,
    NormStats,
    Order,
    SeriesCheckpoint,
    SeriesIO,
    SeriesReport,
    SeriesRow,
    SeriesSummary,
    Skipped,
)
from normscope.trends import DRIFT_WINDOW, headline_trends
from normscope.version import __version__

__all__ = ["SeriesOptions", "SeriesProgress", "measure_series"]


@dataclass(frozen=True, slots=True)
class PoolCost:
    """What a process pool of two costs here, fitted on whole series (benchmarks/series_pool.py,
    benchmarks/RESULTS.md "Round 3d"): `start` seconds to start it, then
    `share` of the serial work, plus `per_task` seconds a checkpoint (IPC, the result's
    pickle)."""

    start: float
    share: float
    per_task: float

    def pays(self, seconds_per_scan: float, remaining: int) -> bool:
        """Whether the pool would finish `remaining` scans of `seconds_per_scan` each faster
        than one loop, with a margin (`POOL_MARGIN`): a wrong pool costs more than a missed
        one. NOTE: `share` was measured with two workers on two cores; more workers are not
        assumed to do better (no such machine measured), so on a bigger one auto may miss a
        speed-up, and never picks a pool that measured slower."""
        if remaining < 2:  # two workers cannot split one scan
            return False
        serial = seconds_per_scan * remaining
        pooled = self.start + self.share * serial + self.per_task * remaining
        return POOL_MARGIN * pooled < serial


POOL_COST = PoolCost(start=0.22, share=0.62, per_task=0.0017)
"""Least squares over 8 series from 8 tiny to 8 DeepSeek-V3-sized checkpoints (8-240 ms a scan):
predicted within 0.06 s of each measured pool (2-core machine, load ~1)."""
POOL_MARGIN = 1.1


@dataclass(frozen=True, slots=True)
class SeriesOptions:
    """Everything a series can be told."""

    scan: ScanOptions = field(default_factory=ScanOptions)
    order: Order | None = None
    """None: a run folder by step, an explicit list as given."""
    jobs: int | None = None
    """Pool size; None: min(4, usable CPUs)."""
    executor: Executor = Executor.auto
    strict: bool = False
    """Raise SourceError on the first skipped checkpoint instead of warning."""
    cluster: ClusterSpec | None = None
    """Where `Executor.dask` runs (None: `$DASK_SCHEDULER_ADDRESS`, else a local cluster of
    `jobs` workers)."""


@dataclass(frozen=True, slots=True)
class SeriesProgress:
    """One progress event: sent once before the first scan (done 0) and after each scan."""

    done: int
    total: int
    bytes_read: int
    """Bytes read so far, all checkpoints together."""
    path: str
    """The checkpoint just finished (empty in the first event)."""


ProgressCallback = Callable[[SeriesProgress], None]
Observer = Callable[[str, Measured], None]
"""`observe(path, measured)`: sees each scan (its gains too) before only its report is kept."""


# --- discovery ----------------------------------------------------------------------------------


# --- measurement --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What a worker sends back: a scan, or the reason the checkpoint is skipped."""

    measured: Measured | None
    error: str | None
    seconds: float


def _measure_one(path: str, options: ScanOptions) -> _Outcome:
    started = time.perf_counter()
    try:
        return _Outcome(measure(path, options), None, time.perf_counter() - started)
    except NormscopeError as exc:
        return _Outcome(None, exc.message, time.perf_counter() - started)
    except OSError as exc:  # e.g. a shard unreadable by permissions
        return _Outcome(None, f"{exc.strerror or exc} ({path})", time.perf_counter() - started)


def usable_cpus() -> int:
    """CPUs this process may run on (affinity and cgroup-aware where the OS says)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_jobs() -> int:
    """min(4, usable CPUs)."""
    return min(4, usable_cpus())


def _cpu_sample() -> tuple[float, float] | None:
    """(busy, idle) CPU seconds of the whole machine so far (/proc/stat); None elsewhere."""
    try:
        with open("/proc/stat", "rb") as fh:
            fields = fh.readline().split()[1:]
    except OSError:
        return None
    if len(fields) < 5:
        return None
    ticks = [int(f) for f in fields[:8]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return (sum(ticks) - idle) / hz, idle / hz


def free_cores(since: tuple[float, float] | None) -> float | None:
    """How many cores stood idle on average since the sample `since` (the machine's, not this
    process's: other processes count as busy); None where unknown."""
    now = _cpu_sample()
    if since is None or now is None:
        return None
    busy, idle = now[0] - since[0], now[1] - since[1]
    if busy + idle <= 0:
        return None
    return (os.cpu_count() or 1) * idle / (busy + idle)


def _process_pool(jobs: int) -> ProcessPoolExecutor:
    # NOTE: forkserver, not fork: the CLI may run a progress-bar thread, and forking a threaded
    # process can deadlock (Python 3.14 made forkserver the Linux default for this reason).
    # Preloading normscope in the server makes each worker start in milliseconds.
    if "forkserver" in multiprocessing.get_all_start_methods():
        server = multiprocessing.get_context("forkserver")
        server.set_forkserver_preload(["normscope.series"])
        return ProcessPoolExecutor(max_workers=jobs, mp_context=server)
    return ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))


def _pooled(
    pool: PoolExecutor, paths: Sequence[str], options: ScanOptions, jobs: int
) -> Iterator[_Outcome]:
    """Run the scans in `pool`, yield outcomes in input order, at most 2 × jobs held at once."""
    window = 2 * jobs
    pending: dict[Future[_Outcome], int] = {}
    finished: dict[int, _Outcome] = {}
    submitted = consumed = 0
    while consumed < len(paths):
        while submitted < len(paths) and len(pending) + len(finished) < window:
            pending[pool.submit(_measure_one, paths[submitted], options)] = submitted
            submitted += 1
        if consumed not in finished:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                finished[pending.pop(future)] = future.result()
        while consumed in finished:
            yield finished.pop(consumed)
            consumed += 1


def _outcomes(
    paths: Sequence[str], options: SeriesOptions, used: list[tuple[Executor, int]]
) -> Generator[_Outcome, None, None]:
    """Yield one outcome per path, in order; record the executor used in `used`."""
    jobs = max(1, options.jobs or default_jobs())
    kind = options.executor
    if kind is Executor.dask:
        yield from _on_cluster(paths, options, jobs, used)
        return
    start = 0
    if kind is Executor.auto:
        # Measure inline while deciding (`POOL_COST.pays`). The first scan also pays one-off
        # costs (imports, regex compilation: ~1.1x a DeepSeek-V3 scan, more for a tiny one),
        # so alone it counts half; later ones decide by their fastest time, as one sample on a
        # busy machine can be a hiccup.
        kind = Executor.serial
        times: list[float] = []
        sample = _cpu_sample()
        while start < len(paths) and len(times) < 3 and kind is Executor.serial:
            outcome = _measure_one(paths[start], options.scan)
            start += 1
            yield outcome
            if outcome.measured is None:
                continue
            times.append(outcome.seconds)
            remaining = len(paths) - start
            per_scan = min(times[1:]) if len(times) > 1 else times[0] / 2
            if jobs > 1 and POOL_COST.pays(per_scan, remaining):
                # NOTE: measured, not assumed: a worker beside this one runs only on a core
                # that stood idle while the inline scans ran. Where other processes kept the
                # machine busy (a shared 2-core box under four test suites), a pool was slower
                # than one loop (0.81x, issue 29): serial then, or fewer workers.
                free = free_cores(sample)
                spare = jobs - 1 if free is None else int(free + 0.25)
                if spare >= 1:
                    kind, jobs = Executor.process, min(jobs, 1 + spare)
    rest = paths[start:]
    if kind is Executor.serial or jobs == 1 or len(rest) < 2:
        used.append((Executor.serial, 1))
        for path in rest:
            yield _measure_one(path, options.scan)
        return
    jobs = min(jobs, len(rest))
    used.append((kind, jobs))
    pool: PoolExecutor = (
        _process_pool(jobs) if kind is Executor.process else ThreadPoolExecutor(jobs)
    )
    try:
        yield from _pooled(pool, rest, options.scan, jobs)
    finally:
        # Also on an error or a --strict abort: drop what has not started.
        pool.shutdown(wait=True, cancel_futures=True)


def _on_cluster(
    paths: Sequence[str], options: SeriesOptions, jobs: int, used: list[tuple[Executor, int]]
) -> Generator[_Outcome, None, None]:
    """Each checkpoint a unit of work on a Dask cluster; a lost one becomes a skip reason."""
    spec = options.cluster or ClusterSpec()
    if spec.address is None and spec.workers is None:
        spec = ClusterSpec(None, jobs, spec.retries)
    unit = functools.partial(_measure_one, options=options.scan)
    with cluster(spec) as engine:
        used.append((Executor.dask, engine.slots))
        for result in engine.map_ordered(unit, paths):
            if isinstance(result, Lost):
                yield _Outcome(None, f"on the cluster, {result.reason}", 0.0)
            else:
                yield result


@dataclass
class _Collected:
    """What the measurement loop gathers, in series order."""

    checkpoints: list[SeriesCheckpoint] = field(default_factory=list)
    rows: list[SeriesRow] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    models: list[ModelInfo] = field(default_factory=list)
    warnings: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    rel_warnings: list[str] = field(default_factory=list)
    previous: Mapping[str, np.ndarray] = field(default_factory=dict)
    """Effective gains of the last measured checkpoint: only they stay in memory."""
    bytes_read: int = 0

    def add(self, candidate: Candidate, measured: Measured) -> None:
        report, io = measured.report, measured.report.io
        bytes_read = io.bytes_read + io.metadata_bytes
        self.bytes_read += bytes_read
        self.checkpoints.append(
            SeriesCheckpoint(candidate.path, candidate.step, bytes_read, io.seconds)
        )
        self.models.append(report.model)
        self.warnings.append((candidate.path, report.warnings))
        for norm in report.norms:
            rel = _rel_change(
                norm, self.previous, measured.gains, candidate.path, self.rel_warnings
            )
            self.rows.append(SeriesRow(candidate.path, candidate.step, norm, rel))
        self.previous = measured.gains


def measure_series(
    sources: Sequence[str | os.PathLike[str]],
    options: SeriesOptions | None = None,
    progress: ProgressCallback | None = None,
    observe: Observer | None = None,
) -> SeriesReport:
    """Discover, measure and summarise the checkpoints of a training run.

    `observe` is called with each checkpoint measured, in series order (e.g. to keep the
    per-role histograms of its gains for TensorBoard).

    Raises SourceError when no checkpoint is usable, and on the first skip with `strict`.
    """
    options = options or SeriesOptions()
    started = time.perf_counter()
    found = discover(sources, options.order)
    if options.strict and found.skipped:
        _strict_failure(found.skipped[0])
    got = _Collected(skipped=list(found.skipped))
    if not found.candidates:
        raise SourceError(_nothing_usable(sources, got.skipped))
    used: list[tuple[Executor, int]] = []
    _measure_all(found.candidates, options, progress, observe, got, used)
    if not got.checkpoints:
        raise SourceError(_nothing_usable(sources, got.skipped))
    executor, jobs = used[-1] if used else (Executor.serial, 1)
    return SeriesReport(
        schema_version=SCHEMA_VERSION,
        normscope_version=__version__,
        source=tuple(str(s) for s in sources),
        model=got.models[-1],
        steps_from=found.steps_from,
        order=found.order,
        checkpoints=tuple(got.checkpoints),
        skipped=tuple(got.skipped),
        rows=tuple(got.rows),
        summary=_summary(got, options),
        io=SeriesIO(got.bytes_read, time.perf_counter() - started, executor, jobs),
        warnings=tuple(_warnings(found, got)),
    )


def _measure_all(
    candidates: Sequence[Candidate],
    options: SeriesOptions,
    progress: ProgressCallback | None,
    observe: Observer | None,
    got: _Collected,
    used: list[tuple[Executor, int]],
) -> None:
    """Measure every candidate (in order, whatever the executor) into `got`, each shown to
    `observe`; `used` learns which executor ran them."""
    paths = [c.path for c in candidates]
    if progress:
        progress(SeriesProgress(0, len(paths), 0, ""))
    outcomes = _outcomes(paths, options, used)
    try:
        for done, (candidate, outcome) in enumerate(
            zip(candidates, outcomes, strict=True), start=1
        ):
            if outcome.measured is not None:
                got.add(candidate, outcome.measured)
                if observe is not None:
                    observe(candidate.path, outcome.measured)
            else:
                skip = Skipped(candidate.path, candidate.step, outcome.error or "unknown error")
                if options.strict:
                    _strict_failure(skip)
                got.skipped.append(skip)
            if progress:
                progress(SeriesProgress(done, len(paths), got.bytes_read, candidate.path))
    finally:
        outcomes.close()  # shuts a pool down at once on --strict or Ctrl-C


def _warnings(found: Discovery, got: _Collected) -> list[str]:
    """Discovery's, the skips, each checkpoint's (merged), and a change of architecture."""
    warnings = list(found.warnings)
    warnings += [f"skipped {s.path}: {s.reason}" for s in got.skipped]
    warnings += _merge_warnings(got.warnings) + got.rel_warnings
    families = sorted({m.family for m in got.models})
    if len(families) > 1:
        warnings.append(
            f"the checkpoints do not share one architecture (rules: {', '.join(families)}): "
            "trends compare norms by name"
        )
    return warnings


def _summary(got: _Collected, options: SeriesOptions) -> SeriesSummary:
    """The gate's view of the latest checkpoint and the headline trends."""
    selector = options.scan.scope
    latest = got.checkpoints[-1]
    at_latest = [r.norm for r in got.rows if r.checkpoint == latest.path]
    return SeriesSummary(
        thresholds=options.scan.thresholds,
        scope=selector.text,
        window=min(len(got.checkpoints), DRIFT_WINDOW),
        latest_step=latest.step,
        gated_out_of_band=sum(1 for n in at_latest if n.band.out_of_band and selector(n)),
        headline=tuple(
            headline_trends(got.checkpoints, got.rows, options.scan.thresholds, options.scan.roles)
        ),
        roles=options.scan.roles,
    )


def _strict_failure(skip: Skipped) -> None:
    raise SourceError(
        f"--strict: checkpoint skipped: {skip.reason} ({skip.path})",
        hint="fix or remove it, or drop --strict to skip it with a warning",
    )


def _nothing_usable(sources: Sequence[str | os.PathLike[str]], skipped: Sequence[Skipped]) -> str:
    where = str(sources[0]) if len(sources) == 1 else f"{len(sources)} paths"
    reasons = "; ".join(f"{Path(s.path).name}: {s.reason}" for s in skipped[:3])
    more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    return f"no usable safetensors checkpoint in {where} ({len(skipped)} skipped: {reasons}{more})"


def _rel_change(
    norm: NormStats,
    previous: Mapping[str, np.ndarray],
    gains: Mapping[str, np.ndarray],
    path: str,
    warnings: list[str],
) -> float | None:
    before, after = previous.get(norm.name), gains.get(norm.name)
    if before is None or after is None:
        return None
    if before.size != after.size:
        warnings.append(
            f"norm '{norm.name}' changed from {before.size} to {after.size} entries; no relative "
            f"change computed ({path})"
        )
        return None
    return relative_change(before, after)


def _merge_warnings(per_checkpoint: Sequence[tuple[str, tuple[str, ...]]]) -> list[str]:
    """One line per distinct warning; the same warning of many checkpoints is said once."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for path, warnings in per_checkpoint:
        for w in warnings:
            groups.setdefault(w.replace(path, "<checkpoint>"), []).append((path, w))
    out = []
    for items in groups.values():
        path, first = items[0]
        text = first if path in first else f"{Path(path).name}: {first}"
        if len(items) > 1:
            text += f" (and in {len(items) - 1} more checkpoint(s))"
        out.append(text)
    return out
