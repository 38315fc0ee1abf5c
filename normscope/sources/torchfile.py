"""PyTorch state dict files (`.bin`, `.pt`, `.pth`) as a checkpoint source.

Loaded with `torch.load(weights_only=True, mmap=True)` — the restricted unpickler, never plain
pickle, and memory-mapped, so only the pages of the tensors read are touched. Like a DCP save,
the file is presented as one virtual shard: synthetic `TensorRef`s laid end to end, whose bytes
`read` returns as raw little-endian data. Nested dicts (`{"model": {...}}`, `{"state_dict": ...}`)
are flattened with dots; non-tensor entries are ignored. Needs `normscope[torch]`.
"""

from __future__ import annotations

import importlib
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from normscope.errors import SourceError
from normscope.sources.dcp.bounds import check_pickle_bytes
from normscope.sources.jsonload import load_json
from normscope.sources.local import OneFile, read_small_file
from normscope.sources.memory import TensorStore
from normscope.sources.safetensors import ShardHeader
from normscope.sources.store import MAX_SMALL_FILE, Checkpoint

if TYPE_CHECKING:
    import torch

INSTALL = "pip install 'normscope[torch]'"


MAX_NESTING = 32
"""Levels of nested dicts a state dict may use (real ones: 1-3)."""


def _flatten(obj: Any, where: Path) -> dict[str, torch.Tensor]:
    """The tensors of nested dicts, keys joined with dots, in order; iterative, each dict once.

    NOTE: the pickle memo lets a few bytes describe a dict holding itself, or levels that each
    hold the one below twice (2^30 paths from 30 dicts): a state dict holds neither, so a dict met
    twice or nested past MAX_NESTING is refused before the walk can hang. Keys other than
    strings and integers are no parameter names and are skipped unformatted."""
    import torch

    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    stack: list[tuple[Any, str, int]] = [(obj, "", 0)]
    while stack:
        value, prefix, depth = stack.pop()
        if isinstance(value, torch.Tensor):
            out[prefix] = value
            continue
        if not isinstance(value, Mapping):
            continue
        if id(value) in seen or depth >= MAX_NESTING:
            why = "holds the same dict twice" if id(value) in seen else "is nested too deep"
            raise SourceError(f"the PyTorch file's state dict {why}: not a state dict ({where})")
        seen.add(id(value))
        items = [(k, v) for k, v in value.items() if type(k) in (str, int)]
        for key, item in reversed(items):
            stack.append((item, f"{prefix}.{key}" if prefix else str(key), depth + 1))
    return out


_WRAPPERS = ("state_dict", "model", "module", "model_state_dict")
"""Training checkpoints keep the weights under one of these keys, next to optimizer state."""


def _unwrap(obj: Any) -> Any:
    """`{"model": {...}, "optimizer": {...}}` -> the model's state dict."""
    for _ in range(MAX_NESTING):  # a dict may hold itself under "model": never loop
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            return obj
        obj = inner
    return obj


class TorchFileStore(OneFile, TensorStore):
    """One state dict file, its tensors laid end to end in a virtual shard (`memory.TensorStore`:
    the same reads as a state dict in memory), with the file's folder for config.json
    (`local.OneFile`)."""

    def __init__(self, path: Path, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__(str(path), tensors)
        self.file = path

    def fetch(self, name: str) -> bytes | None:
        return read_small_file(self.file.parent / name, self.counter)

    def no_shards(self) -> SourceError:
        return SourceError(f"no tensors in the PyTorch file ({self.file})")


def check_archive(path: Path) -> None:
    """Bound what `torch.load` will inflate and unpickle, before it runs: torch's zip reader
    inflates a deflated member whole (a 3 MB `.bin` can hold a 3 GB `data.pkl`), and its pickle
    may be all one-byte containers. A member that is compressed, or the pickle, must declare at
    most MAX_SMALL_FILE bytes (miniz inflates into a buffer of the declared size); the pickle
    passes `dcp.bounds.check_pickle_bytes`. Tensor storages, stored uncompressed, are mapped,
    whatever their size. Not a zip (a legacy torch file): torch.load says what is wrong."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError):
        return
    with archive:
        for info in archive.infolist():
            pickle_member = info.filename.endswith("data.pkl")
            compressed = info.compress_type != zipfile.ZIP_STORED
            if (pickle_member or compressed) and info.file_size > MAX_SMALL_FILE:
                raise SourceError(
                    f"the PyTorch file's member {info.filename} would inflate to "
                    f"{info.file_size} bytes (at most {MAX_SMALL_FILE}): not read ({path})"
                )
            if pickle_member:
                try:
                    data = archive.read(info)
                except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
                    raise SourceError(f"cannot read the PyTorch file: {exc} ({path})") from None
                check_pickle_bytes(data, str(path), "PyTorch state dict")


def open_torch_checkpoint(path: Path, source: str) -> Checkpoint:
    """Open a `.bin`/`.pt`/`.pth` state dict with torch's restricted loader (weights only)."""
    try:
        torch = importlib.import_module("torch")
    except ImportError:
        raise SourceError(
            f"a PyTorch state dict file: reading it needs torch, which is not installed ({path})",
            hint=f"{INSTALL}, or convert the file to safetensors",
        ) from None
    check_archive(path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ...: all bad input
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(
            f"cannot load the PyTorch file with weights_only=True: {first} ({path})",
            hint="normscope never unpickles arbitrary objects: save a plain state dict "
            "(torch.save(model.state_dict(), ...)) or safetensors",
        ) from None
    tensors: dict[str, Any] = _flatten(_unwrap(loaded), path)
    store = TorchFileStore(path, tensors)
    if not store.refs:
        raise store.no_shards()
    config_bytes = store.fetch("config.json")
    config = None
    if config_bytes is not None:
        try:
            config = load_json(config_bytes)
        except ValueError:
            store.warnings.append(f"config.json is not JSON: ignored ({path.parent})")
    size = path.stat().st_size
    shards = [ShardHeader(str(path), size, 0, {}, {})]
    return Checkpoint(source, config, shards, dict(store.refs), store, store.warnings)
