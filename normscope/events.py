"""TensorBoard both ways: read a run's losses for the stability trinity, write the norm series.

`read_losses(logdir, tags)` reads the scalar events of a TensorBoard log folder with the
`tensorboard` package's own event reader (`normscope[tensorboard]`); `trinity(report, ...)`
joins the main and MTP losses to the checkpoints by step — the last value logged at or before
each checkpoint's step — next to the final norm's ratio (seed playbook §04: the main loss trend,
the MTP loss trend, their gap, the final-norm ratio against its band). `write_scalars(report,
outdir)` writes the series as TensorBoard scalars (`normscope/ratio/<role>/<layer>/<leaf>`,
`normscope/band/low|high`) so they sit next to the training curves.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from normscope.enums import Module, Role
from normscope.errors import SourceError
from normscope.naming import structural_name, where
from normscope.schema import SeriesReport, Trinity, TrinityRow
from normscope.trends import fit_drift

MAIN_TAGS = ("lm loss", "lm_loss", "train/lm_loss", "train/lm loss", "loss", "train/loss",
             "train_loss", "training_loss")  # fmt: skip
"""Candidates for the main loss, first match wins: Megatron's `lm loss` first."""
MTP_TAGS = ("mtp_1 loss", "mtp_1_loss", "mtp loss", "mtp_loss", "train/mtp_loss",
            "train/mtp_1_loss", "mtp/loss")  # fmt: skip
"""Candidates for the MTP loss (Megatron's `mtp_1 loss` first)."""
INSTALL = "pip install 'normscope[tensorboard]'"

Scalars = dict[str, list[tuple[int, float]]]


def _tensorboard(what: str) -> Any:
    try:
        from tensorboard.backend.event_processing import event_accumulator
    except ImportError:
        raise SourceError(f"{what} needs the tensorboard package, which is not installed",
                          hint=INSTALL) from None  # fmt: skip
    return event_accumulator


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


def write_scalars(report: SeriesReport, outdir: str | Path) -> Path:
    """Write every norm's ratio by step and the band edges as TensorBoard scalars; return the
    event file's folder."""
    _tensorboard("--tensorboard")
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    folder = Path(outdir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SourceError(
            f"cannot create the TensorBoard folder: {exc.strerror} ({folder})"
        ) from None
    writer = EventFileWriter(str(folder), filename_suffix=".normscope")
    t = report.summary.thresholds
    by_step: dict[int, list[tuple[str, float]]] = {}
    for row in report.rows:
        n = row.norm
        if math.isfinite(n.ratio):
            tag = scalar_tag(n.name, n.role, n.module, n.mtp_depth, n.layer)
            by_step.setdefault(row.step, []).append((tag, n.ratio))
    for c in report.checkpoints:
        values = [*by_step.get(c.step, []), ("normscope/band/low", t.low),
                  ("normscope/band/high", t.high)]  # fmt: skip
        summary = summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in values]
        )
        writer.add_event(event_pb2.Event(step=c.step, wall_time=c.seconds, summary=summary))
    writer.close()
    return folder
