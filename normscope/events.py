"""TensorBoard both ways: read a run's losses for the stability trinity, write the norm series.

`read_losses(logdir, tags)` reads the scalar events of a TensorBoard log folder with the
`tensorboard` package's own event reader (`normscope[tensorboard]`); `trinity(report, ...)`
joins the main and MTP losses to the checkpoints by step — the last value logged at or before
each checkpoint's step — next to the final norm's ratio (seed playbook §04: the main loss trend,
the MTP loss trend, their gap, the final-norm ratio against its band). `write_scalars(report,
outdir)` writes the series as TensorBoard scalars (`normscope/ratio/<role>/<layer>/<leaf>`,
`normscope/band/low|high`) and the per-role histograms of the effective gains γ
(`normscope/gamma/<role>`, MTP's under `normscope/gamma/mtp/<role>`) so they sit next to the
training curves, stamped with each checkpoint's own time (its files' mtime), replacing the event
files an earlier run of normscope left in that folder.
"""

from __future__ import annotations

import bisect
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from normscope.enums import Module, Role
from normscope.errors import SourceError
from normscope.naming import structural_name, where
from normscope.schema import SeriesReport, Trinity, TrinityRow
from normscope.trends import fit_drift

if TYPE_CHECKING:
    import numpy as np

    from normscope.scanner import Measured

MAIN_TAGS = (
    "lm loss",
    "lm_loss",
    "train/lm_loss",
    "train/lm loss",
    "loss",
    "train/loss",
    "train_loss",
    "training_loss",
)
"""Candidates for the main loss, first match wins: Megatron's `lm loss` first."""
MTP_TAGS = (
    "mtp_1 loss",
    "mtp_1_loss",
    "mtp loss",
    "mtp_loss",
    "train/mtp_loss",
    "train/mtp_1_loss",
    "mtp/loss",
)
"""Candidates for the MTP loss (Megatron's `mtp_1 loss` first)."""
INSTALL = "pip install 'normscope[tensorboard]'"

Scalars = dict[str, list[tuple[int, float]]]


def _tensorboard(what: str) -> Any:
    try:
        from tensorboard.backend.event_processing import event_accumulator
    except ImportError:
        raise SourceError(
            f"{what} needs the tensorboard package, which is not installed", hint=INSTALL
        ) from None
    return event_accumulator


def require_tensorboard(what: str) -> None:
    """Raise SourceError when the tensorboard package is missing (`series` asks before it
    measures, as it does for `--plot`'s matplotlib)."""
    _tensorboard(what)


def read_scalars(logdir: str | Path) -> Scalars:
    """Every scalar of every event file under `logdir` (runs in subfolders too), by tag."""
    root = Path(logdir)
    if not root.is_dir():
        raise SourceError(f"no such TensorBoard log folder ({root})")
    files = sorted(root.rglob("events.out.tfevents.*"))
    if not files:
        raise SourceError(f"no TensorBoard event files (events.out.tfevents.*) in {root}")
    accumulator = _tensorboard("--events")
    out: Scalars = {}
    for folder in sorted({f.parent for f in files}):
        acc = accumulator.EventAccumulator(
            str(folder), size_guidance={accumulator.SCALARS: 0, accumulator.TENSORS: 0}
        )
        acc.Reload()
        tags = acc.Tags()
        for tag in tags.get("scalars", []):
            out.setdefault(tag, []).extend((e.step, float(e.value)) for e in acc.Scalars(tag))
        for tag in tags.get("tensors", []):  # TF2-style summaries keep scalars as tensors
            for e in acc.Tensors(tag):
                if e.tensor_proto.dtype == 1 and e.tensor_proto.float_val:  # DT_FLOAT
                    out.setdefault(tag, []).append((e.step, float(e.tensor_proto.float_val[0])))
    for values in out.values():
        values.sort()
    return out


def pick_tag(scalars: Scalars, candidates: Sequence[str]) -> str | None:
    """The first candidate logged (exact, then case-insensitive)."""
    for tag in candidates:
        if tag in scalars:
            return tag
    lower = {t.lower(): t for t in scalars}
    return next((lower[c.lower()] for c in candidates if c.lower() in lower), None)


def _at(values: list[tuple[int, float]] | None, step: int) -> float | None:
    """The last value logged at or before `step`."""
    if not values:
        return None
    i = bisect.bisect_right(values, (step, math.inf))
    return values[i - 1][1] if i else None


def _slope(steps: Sequence[int], values: Sequence[float | None], window: int) -> float | None:
    pairs = [(s, v) for s, v in zip(steps, values, strict=True) if v is not None]
    return fit_drift([s for s, _ in pairs], [v for _, v in pairs], window) if pairs else None


def trinity(
    report: SeriesReport,
    logdir: str | Path,
    main_tags: Sequence[str] = MAIN_TAGS,
    mtp_tags: Sequence[str] = MTP_TAGS,
) -> tuple[Trinity, list[str]]:
    """The three signals by checkpoint, and warnings (a tag not found, losses that end early)."""
    scalars = read_scalars(logdir)
    main_tag, mtp_tag = pick_tag(scalars, main_tags), pick_tag(scalars, mtp_tags)
    warnings = []
    for label, tag, tried in (("main", main_tag, main_tags), ("MTP", mtp_tag, mtp_tags)):
        if tag is None:
            warnings.append(
                f"no {label} loss in {logdir}: none of the tags {', '.join(tried)} was logged "
                f"(logged: {', '.join(sorted(scalars)[:12]) or 'none'})"
            )
    final = next(
        (t for t in report.summary.headline if t.role is Role.final and t.module is Module.main),
        None,
    )
    rows = []
    for i, checkpoint in enumerate(report.checkpoints):
        main = _at(scalars.get(main_tag or ""), checkpoint.step)
        mtp = _at(scalars.get(mtp_tag or ""), checkpoint.step)
        ratio = final.ratios[i] if final is not None else None
        band = report.summary.thresholds.classify(ratio) if ratio is not None else None
        gap = mtp - main if main is not None and mtp is not None else None
        rows.append(TrinityRow(checkpoint.step, main, mtp, gap, ratio, band))
    steps = [r.step for r in rows]
    window = report.summary.window
    result = Trinity(
        str(logdir),
        main_tag,
        mtp_tag,
        tuple(rows),
        _slope(steps, [r.main_loss for r in rows], window),
        _slope(steps, [r.mtp_loss for r in rows], window),
        _slope(steps, [r.gap for r in rows], window),
        final.drift_per_1k_steps if final is not None else None,
    )
    return result, warnings


def scalar_tag(name: str, role: Role, module: Module, depth: int | None, layer: int | None) -> str:
    """`normscope/ratio/mlp_input/3/post_attention_layernorm`, `.../final/-/model.norm`."""
    leaf = structural_name(name, depth if module is Module.mtp else None, layer)
    return f"normscope/ratio/{role.value}/{where(module is Module.mtp, depth, layer)}/{leaf}"


SUFFIX = ".normscope"
"""The file name suffix of normscope's event files: a rerun replaces these, and only these."""
HISTOGRAM_BINS = 30


@dataclass(frozen=True, slots=True)
class Histogram:
    """One TensorBoard histogram (its `HistogramProto` fields), computed with numpy."""

    min: float
    max: float
    num: int
    sum: float
    sum_squares: float
    limits: tuple[float, ...]
    """Each bucket's right edge."""
    counts: tuple[float, ...]

    @classmethod
    def of(cls, values: np.ndarray, bins: int = HISTOGRAM_BINS) -> Histogram:
        import numpy as np

        v = values[np.isfinite(values)].astype(np.float64)
        if v.size == 0:
            return cls(0.0, 0.0, 0, 0.0, 0.0, (), ())
        counts, edges = np.histogram(v, bins=bins if v.min() < v.max() else 1)
        return cls(
            float(v.min()),
            float(v.max()),
            int(v.size),
            float(v.sum()),
            float(np.dot(v, v)),
            tuple(float(e) for e in edges[1:]),
            tuple(float(c) for c in counts),
        )

    def proto(self) -> Any:
        from tensorboard.compat.proto import summary_pb2

        return summary_pb2.HistogramProto(
            min=self.min,
            max=self.max,
            num=self.num,
            sum=self.sum,
            sum_squares=self.sum_squares,
            bucket_limit=list(self.limits),
            bucket=list(self.counts),
        )


def gamma_tag(role: Role, module: Module) -> str:
    """`normscope/gamma/attn_input`, `normscope/gamma/mtp/final`."""
    return f"normscope/gamma/{'mtp/' if module is Module.mtp else ''}{role.value}"


def role_gains(measured: Measured) -> dict[str, np.ndarray]:
    """The effective gains γ of every norm of one scan, concatenated per role (MTP apart)."""
    import numpy as np

    parts: dict[str, list[np.ndarray]] = {}
    for n in measured.report.norms:
        gain = measured.gains.get(n.name)
        if gain is not None:
            parts.setdefault(gamma_tag(n.role, n.module), []).append(gain)
    return {tag: np.concatenate(values) for tag, values in parts.items()}


def role_histograms(measured: Measured) -> dict[str, Histogram]:
    """`role_gains` as one histogram per role."""
    return {tag: Histogram.of(values) for tag, values in role_gains(measured).items()}


def checkpoint_time(path: str) -> float | None:
    """When a checkpoint was written: the mtime of its `trainer_state.json`, else of its newest
    file (a folder's files, not below), else of the file itself; None for a source that is not
    a local path (a Hub repo, an object-store URL)."""
    try:
        target = Path(path)
        if not target.exists():
            return None
        if target.is_file():
            return target.stat().st_mtime
        state = target / "trainer_state.json"
        if state.is_file():
            return state.stat().st_mtime
        times = [f.stat().st_mtime for f in target.iterdir() if f.is_file()]
        return max(times) if times else target.stat().st_mtime
    except OSError:
        return None


def _wall_times(paths: Sequence[str]) -> list[float]:
    """Each checkpoint's time; one without (not local) gets the time of writing, in order."""
    now = time.time()
    return [t if t is not None else now for t in map(checkpoint_time, paths)]


def write_scalars(
    report: SeriesReport,
    outdir: str | Path,
    histograms: Mapping[str, Mapping[str, Histogram]] | None = None,
) -> Path:
    """Write every norm's ratio by step, the band edges and, where given, the per-role
    histograms of γ (by checkpoint path, then tag) as TensorBoard events; return the folder.

    Each event is stamped with its checkpoint's time (`checkpoint_time`). The event files an
    earlier run wrote into the folder (`*.normscope`) are removed once the new one is complete,
    so a rerun replaces its events instead of doubling them; other programs' files stay.
    """
    folder = Path(outdir)
    earlier = set(folder.glob(f"events.out.tfevents.*{SUFFIX}"))
    writer = open_writer(folder, "--tensorboard")
    t = report.summary.thresholds
    by_step: dict[int, dict[str, float]] = {}
    for row in report.rows:
        n = row.norm
        if math.isfinite(n.ratio):
            tag = scalar_tag(n.name, n.role, n.module, n.mtp_depth, n.layer)
            by_step.setdefault(row.step, {})[tag] = n.ratio
    walls = _wall_times([c.path for c in report.checkpoints])
    for c, wall in zip(report.checkpoints, walls, strict=True):
        scalars = {
            **by_step.get(c.step, {}),
            "normscope/band/low": t.low,
            "normscope/band/high": t.high,
        }
        writer.add_event(summary_event(c.step, wall, scalars, (histograms or {}).get(c.path)))
    writer.close()
    written = set(folder.glob(f"events.out.tfevents.*{SUFFIX}")) - earlier
    try:
        for old in earlier - written:
            os.unlink(old)
    except OSError as exc:
        raise SourceError(
            f"cannot replace the earlier normscope events: {exc.strerror} ({exc.filename})"
        ) from None
    return folder


def open_writer(folder: Path, what: str) -> Any:
    """A new event file (`*.normscope`) in `folder`, created if need be: tensorboard's
    `EventFileWriter` (`add_event`, `flush`, `close`)."""
    _tensorboard(what)
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SourceError(
            f"cannot create the TensorBoard folder: {exc.strerror} ({folder})"
        ) from None
    return EventFileWriter(str(folder), filename_suffix=SUFFIX)


def summary_event(
    step: int,
    wall_time: float,
    scalars: Mapping[str, float],
    histograms: Mapping[str, Histogram] | None = None,
) -> Any:
    """One TensorBoard event: the scalars, then the histograms (by tag)."""
    from tensorboard.compat.proto import event_pb2, summary_pb2

    summary = summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in scalars.items()]
    )
    for tag, histogram in sorted((histograms or {}).items()):
        summary.value.add(tag=tag, histo=histogram.proto())
    return event_pb2.Event(step=step, wall_time=wall_time, summary=summary)


def norm_scalars(measured: Measured) -> dict[str, float]:
    """A scan's scalars for a training log: every norm's ratio (the tags of `write_scalars`),
    the norms out of band (in the scope, and all) and the anomalies."""
    report = measured.report
    out = {
        scalar_tag(n.name, n.role, n.module, n.mtp_depth, n.layer): n.ratio
        for n in report.norms
        if math.isfinite(n.ratio)
    }
    out["normscope/out_of_band"] = float(report.summary.gated_out_of_band)
    out["normscope/out_of_band_all"] = float(report.summary.out_of_band)
    out["normscope/anomalies"] = float(report.summary.anomalies)
    return out
