"""Find the checkpoints of a training run: naming conventions, skip reasons, series order.

Pure of printing and of tensor I/O (it lists folders, never opens a shard). A run folder's
checkpoints are found by the conventions of docs/architectures.md#checkpoints-in-the-wild:
`checkpoint-<step>` (HF Trainer), `iter_<NNNNNNN>` (Megatron), `step-<N>` (torchtitan),
`step<N>[-unsharded]` (OLMo), `global_step<N>` (DeepSpeed), a bare `<N>` (nanotron), Hub revision
names such as `stage1-step1907359-tokens4001B`. A checkpoint is a safetensors file or folder, or a
PyTorch DCP save (`.metadata` + `.distcp`: Megatron torch_dist, torchtitan, OLMo-core's
`model_and_optim/`). Folders named like checkpoints that hold neither (optimizer state only, a DCP
save still being written, pickles, nothing) are skipped with the reason. A Megatron save dir
(`iter_*` folders, `release/`, `latest_checkpointed_iteration.txt`) is a run folder.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from normscope.errors import SourceError
from normscope.naming import natural_key
from normscope.schema import Order, Skipped, StepSource
from normscope.sources.dcp import TRACKER, find_dcp_dir, unfinished_dcp_dir

# Run-folder naming conventions (docs/architectures.md#checkpoints-in-the-wild), matched against
# the whole name.
CONVENTIONS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("HF Trainer", re.compile(r"checkpoint-(\d+)")),
    ("Megatron", re.compile(r"iter_(\d+)")),
    ("torchtitan", re.compile(r"step-(\d+)")),
    ("OLMo", re.compile(r"step(\d+)(?:-unsharded)?")),
    ("DeepSpeed", re.compile(r"global_step(\d+)")),
    ("nanotron", re.compile(r"(\d+)")),
    ("Hub revision", re.compile(r"(?:stage\d+-)?step(\d+)-tokens\d+[A-Za-z]*")),
    ("ckpt", re.compile(r"ckpt[-_]?(\d+)")),
)
# Explicitly listed checkpoints may be named more freely (`run-a/ckpt-step500`, `model_1000`).
_LOOSE_STEP = re.compile(r"(?:step|iter|checkpoint|ckpt)[-_]?(\d+)", re.IGNORECASE)
_TRAILING_NUMBER = re.compile(r"(\d+)$")
_SUFFIX = ".safetensors"


def parse_step(name: str, loose: bool = False) -> int | None:
    """The step number in a checkpoint's name (docs/architectures.md#checkpoints-in-the-wild).

    `loose` (explicit lists) also accepts `step`/`iter`/`checkpoint`/`ckpt` followed by a number
    anywhere in the name, then a trailing number.
    """
    if name.endswith(_SUFFIX):
        name = name[: -len(_SUFFIX)]
    for _, pattern in CONVENTIONS:
        m = pattern.fullmatch(name)
        if m:
            return int(m.group(1))
    if loose:
        m = _LOOSE_STEP.search(name) or _TRAILING_NUMBER.search(name)
        if m:
            return int(m.group(1))
    return None


# What a folder that is no safetensors checkpoint holds instead.
_OPTIMIZER = re.compile(
    r"(optimizer|scheduler|rng_state|scaler|trainer_state|.*optim_states|.*optim\b).*", re.I
)
_META = re.compile(r".*\.(json|txt|yaml|yml|md|model)|training_args\.bin|latest.*", re.I)
_PICKLE_WEIGHTS = re.compile(r".*\.(bin|pt|pth|ckpt)", re.I)


def why_not_checkpoint(path: Path) -> str | None:
    """None when `path` holds a safetensors or DCP checkpoint, else the reason it is skipped."""
    if not path.exists():
        return "no such file or directory"
    if path.is_file():
        return None if path.name.endswith(_SUFFIX) else "not a .safetensors file"
    if not path.is_dir():
        return "not a file or directory"
    try:
        children = sorted(path.iterdir(), key=lambda p: natural_key(p.name))
    except OSError as exc:
        return f"cannot list the folder: {exc.strerror}"
    files = [p.name for p in children if p.is_file() and not p.name.startswith(".")]
    dirs = [p for p in children if p.is_dir() and not p.name.startswith(".")]
    if any(name.endswith(_SUFFIX) for name in files):
        return None
    if not files and not dirs and not any(p.name == ".metadata" for p in children):
        return "empty folder"
    if find_dcp_dir(path) is not None:
        return None
    unfinished = unfinished_dcp_dir(path)
    if unfinished is not None:
        where = "" if unfinished == path else f" in '{unfinished.relative_to(path)}'"
        return (
            f"PyTorch DCP save{where} without .metadata yet: still being written (torch "
            "writes .metadata last), or interrupted"
        )
    dcp = _find(path, "*.distcp", 3) or _find(path, ".metadata", 3)
    if dcp is not None:
        return (
            f"no checkpoint at the top level, but a PyTorch DCP save in "
            f"'{dcp.parent.relative_to(path)}': pass that folder"
        )
    if any(d.name.startswith("mp_rank_") for d in dirs):
        return "Megatron legacy torch checkpoint (mp_rank_*/model_optim_rng.pt), not safetensors"
    states = [n for n in files if n.endswith("_model_states.pt")]
    if states:
        return (
            f"DeepSpeed checkpoint ({states[0]}), not safetensors: convert it with "
            "zero_to_fp32.py --safe_serialization"
        )
    state = [n for n in files if _OPTIMIZER.fullmatch(n)]
    weights = [
        n
        for n in files
        if _PICKLE_WEIGHTS.fullmatch(n) and n not in state and not _META.fullmatch(n)
    ]
    if weights:
        return f"PyTorch pickle weights ({_listing(weights, 3)}), not safetensors"
    if state and all(n in state or _META.fullmatch(n) for n in files):
        return f"only optimizer/trainer state ({_listing(state)}): no model weights"
    if dirs and _is_run_folder(path):
        return "a folder of checkpoints, not a checkpoint: pass it alone to discover them"
    nested = _find(path, "*" + _SUFFIX, 3)
    if nested is not None:
        inner = nested.parent.relative_to(path)
        return f"no .safetensors at the top level, but some in '{inner}': pass that folder"
    return f"no .safetensors files ({_listing(files + [d.name + '/' for d in dirs])})"


def _find(folder: Path, pattern: str, depth: int) -> Path | None:
    """The first file matching `pattern` in `folder` or up to `depth` - 1 levels below it."""
    for level in range(depth):
        found = next(folder.glob("*/" * level + pattern), None)
        if found is not None:
            return found
    return None


def _listing(names: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


@dataclass(frozen=True, slots=True)
class Candidate:
    """A checkpoint to measure."""

    path: str
    step: int
    mtime: float


@dataclass(frozen=True, slots=True)
class Discovery:
    """The checkpoints of a series, in order, and what was left out."""

    candidates: tuple[Candidate, ...]
    skipped: tuple[Skipped, ...]
    steps_from: StepSource
    warnings: tuple[str, ...]
    order: Order = Order.step
    """The order applied (`given` for an explicit list unless told otherwise)."""


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return math.inf


def _is_run_folder(path: Path) -> bool:
    """A folder whose children are named like checkpoints, or a Megatron save dir."""
    if not path.is_dir():
        return False
    if (path / TRACKER).is_file():
        return True
    try:
        return any(
            parse_step(p.name) is not None and (p.is_dir() or p.name.endswith(_SUFFIX))
            for p in path.iterdir()
            if not p.name.startswith(".")
        )
    except OSError:
        return False


def _scan_run_folder(run: Path, warnings: list[str]) -> list[tuple[Path, int | None]]:
    found: list[tuple[Path, int | None]] = []
    ignored = []
    for child in sorted(run.iterdir(), key=lambda p: natural_key(p.name)):
        if child.name.startswith(".") or not (child.is_dir() or child.name.endswith(_SUFFIX)):
            continue
        step = parse_step(child.name)
        if step is not None:
            found.append((child, step))
        elif child.is_dir() and why_not_checkpoint(child) is None:
            ignored.append(child.name)
    if ignored:
        warnings.append(
            f"ignored {len(ignored)} checkpoint folder(s) without a step number in the name: "
            f"{_listing(ignored)} (list checkpoints explicitly to include them) ({run})"
        )
    tracked = _tracked_iteration(run)
    if tracked is not None and tracked not in {step for _, step in found}:
        warnings.append(
            f"{TRACKER} names iteration {tracked} but no iter_* folder has that number ({run})"
        )
    if any(p.name.endswith(_SUFFIX) for p in run.iterdir() if p.is_file()):
        warnings.append(
            f"the run folder itself holds a checkpoint; it has no step and is not part of the "
            f"series (list it explicitly to include it) ({run})"
        )
    return found


def _tracked_iteration(run: Path) -> int | None:
    """The iteration in Megatron's tracker file (None: no file, `release`, or unreadable).

    Megatron rewrites it after each save has finished (training/checkpointing.py), so a newer
    `iter_*` folder without `.metadata` is a save in progress.
    """
    try:
        text = (run / TRACKER).read_text(encoding="utf-8", errors="replace")[:64].strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def discover(sources: Sequence[str | os.PathLike[str]], order: Order | None = None) -> Discovery:
    """Find and order the checkpoints of a series: one run folder, or an explicit list.

    `order` None: a run folder by step, an explicit list as given (`Order.given`).

    An explicit list may name Hub revisions (`org/name@step1000`): their step is parsed from
    the revision, and `scan` reads them as it reads one Hub checkpoint.
    """
    if not sources:
        raise SourceError("no checkpoints given")
    warnings: list[str] = []
    entries, loose = _entries([os.fspath(s) for s in sources], warnings)
    usable, skipped = _usable(entries)
    if order is None:
        order = Order.given if loose else Order.step
    elif order is Order.given and not loose:
        order = Order.step  # a run folder has no order of its own
    steps_from = _steps_from(loose, usable, warnings)
    usable = _ordered(usable, order, steps_from, warnings)
    candidates: list[Candidate] = []
    seen: dict[int, str] = {}
    for position, (spec, step) in enumerate(usable):
        value = position if steps_from is StepSource.position or step is None else step
        if value in seen:
            skipped.append(Skipped(spec, value, f"duplicate step {value} (also {seen[value]})"))
            continue
        seen[value] = spec
        candidates.append(Candidate(spec, value, _mtime(Path(spec))))
    return Discovery(tuple(candidates), tuple(skipped), steps_from, tuple(warnings), order)


def _entries(specs: list[str], warnings: list[str]) -> tuple[list[tuple[str, int | None]], bool]:
    """The checkpoints named, each with the step its name gives; `loose`: an explicit list
    (not a run folder or a run prefix in an object store)."""
    first = Path(specs[0])
    run_url = _run_prefix(specs[0], warnings) if len(specs) == 1 and _is_url(specs[0]) else None
    if run_url is not None:
        return run_url, False
    if len(specs) == 1 and _is_run_folder(first):
        return [(str(p), step) for p, step in _scan_run_folder(first, warnings)], False
    if (
        len(specs) == 1
        and not (_is_hub(specs[0]) or _is_url(specs[0]))
        and why_not_checkpoint(first) is not None
    ):
        if not first.exists():
            raise SourceError(f"no such file or directory ({first})")
        raise SourceError(
            f"no checkpoints in {first}: {why_not_checkpoint(first)}",
            hint="a run folder holds checkpoint folders named checkpoint-<step>, iter_<N>, "
            "step-<N>, step<N>, global_step<N> or <N>; or list the checkpoints explicitly",
        )
    if len(specs) == 1:
        warnings.append(
            f"a series of one checkpoint: no drift to measure ({specs[0]}); "
            "pass a run folder or several checkpoints"
        )
    return [(spec, _step_of_listed(Path(spec))) for spec in specs], True


def _usable(
    entries: list[tuple[str, int | None]],
) -> tuple[list[tuple[str, int | None]], list[Skipped]]:
    """The entries that are checkpoints, and the others with the reason they are not."""
    skipped: list[Skipped] = []
    usable: list[tuple[str, int | None]] = []
    for spec, step in entries:
        remote = _is_hub(spec) or _is_url(spec)  # read (or skipped) when measured
        reason = None if remote else why_not_checkpoint(Path(spec))
        if reason is None:
            usable.append((spec, step))
        else:
            skipped.append(Skipped(spec, step, reason))
    return usable, skipped


def _steps_from(
    loose: bool, usable: list[tuple[str, int | None]], warnings: list[str]
) -> StepSource:
    """Steps from the names, or the positions 0, 1, 2, ... when a listed name has none."""
    if not loose or all(step is not None for _, step in usable):
        return StepSource.name
    unnamed = [Path(spec).name for spec, step in usable if step is None]
    if len(unnamed) < len(usable):
        warnings.append(
            f"no step number in the name of {_listing(unnamed)}: steps are the positions "
            "0, 1, 2, ... of the checkpoints in the series"
        )
    return StepSource.position


def _ordered(
    usable: list[tuple[str, int | None]],
    order: Order,
    steps_from: StepSource,
    warnings: list[str],
) -> list[tuple[str, int | None]]:
    """The checkpoints in `order`; sorting keeps the given order of an explicit list whose
    steps are positions."""

    def key(item: tuple[str, int | None]) -> tuple[Any, ...]:
        spec, step = item
        natural = (natural_key(Path(spec).name), spec)
        if order is Order.mtime:
            return (_mtime(Path(spec)), *natural)
        if order is Order.natural or steps_from is StepSource.position:
            return natural
        return (step, *natural)

    if order is Order.given:
        steps = [step for _, step in usable if step is not None and steps_from is StepSource.name]
        if steps != sorted(steps):
            warnings.append(
                "the checkpoints are kept in the order given, which is not the order of the steps "
                "in their names: pass --order step to sort them"
            )
    elif not (order is Order.step and steps_from is StepSource.position):
        usable.sort(key=key)
    return usable


def _is_url(spec: str) -> bool:
    """True for an object-store URL (`s3://`, `gs://`, `az://`, `file://`)."""
    if "://" not in spec:
        return False
    from normscope.sources.objstore import looks_like_url

    return looks_like_url(spec)


def _run_prefix(url: str, warnings: list[str]) -> list[tuple[str, int | None]] | None:
    """The checkpoints under an object-store prefix named by the conventions (one LIST), or
    None when the prefix is itself a checkpoint (it holds `.safetensors` objects, or is one)."""
    from normscope.sources.objstore import list_prefix

    url = url.rstrip("/")
    if url.endswith(_SUFFIX):
        return None
    dirs, objects = list_prefix(url)
    if any(o.name.endswith(_SUFFIX) and parse_step(o.name) is None for o in objects):
        return None
    named = [(d, parse_step(d)) for d in dirs] + [
        (o.name, parse_step(o.name)) for o in objects if o.name.endswith(_SUFFIX)
    ]
    found = sorted(((n, s) for n, s in named if s is not None), key=lambda i: natural_key(i[0]))
    if not found:
        if not dirs and not objects:
            raise SourceError(f"no objects under the prefix ({url}/)")
        raise SourceError(
            f"no checkpoints under {url}/: no .safetensors objects, and no sub-prefix named "
            f"like a checkpoint ({_listing([d + '/' for d in dirs] + [o.name for o in objects])})",
            hint="a run prefix holds checkpoint-<step>/, iter_<N>/, step-<N>/, step<N>/ ...; "
            "or list the checkpoints explicitly",
        )
    ignored = [d for d in dirs if parse_step(d) is None]
    if ignored:
        warnings.append(
            f"ignored {len(ignored)} sub-prefix(es) without a step number in the name: "
            f"{_listing(ignored)} ({url}/)"
        )
    return [(f"{url}/{name}", step) for name, step in found]


def _is_hub(spec: str) -> bool:
    """True for a Hub repo spec (`org/name@revision`, `hf://...`) that is no local path."""
    if Path(spec).exists():
        return False
    from normscope.sources.hub.spec import looks_like_hub  # stdlib only

    return looks_like_hub(spec)


def _step_of_listed(path: Path) -> int | None:
    step = parse_step(path.name, loose=True)
    if step is None and path.name.endswith(_SUFFIX):
        step = parse_step(path.parent.name, loose=True)  # run/checkpoint-500/model.safetensors
    return step
