"""A DCP save: where it is (`find_dcp_dir`, a save still being written), opening it, the flag.

`open_dcp_checkpoint` reads `.metadata` with the restricted unpickler, presents the model
tensors as a `Checkpoint` and reads nothing else until the norms are asked for. Megatron's
zero-centred gamma is read from the common state, else a run config beside the save (the
package docstring says in which order).
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from normscope.errors import SourceError
from normscope.sources.dcp.bounds import check_extents
from normscope.sources.dcp.store import (
    DcpCheckpoint,
    DcpStore,
    check_byteorder,
    check_file_sizes,
    common_state,
    file_size,
    present,
)
from normscope.sources.dcp.unpickle import DcpMetadata, read_common_args, read_metadata
from normscope.sources.formats import DCP_METADATA
from normscope.sources.jsonload import load_json
from normscope.sources.local import read_small_file
from normscope.sources.safetensors import DTYPE_BITS, ShardHeader
from normscope.sources.store import MAX_DCP_METADATA, MAX_SMALL_FILE

METADATA = DCP_METADATA
TRACKER = "latest_checkpointed_iteration.txt"
"""Megatron's tracker file in a save dir: the last finished iteration, or `release`."""
ZERO_CENTERED = "layernorm_zero_centered_gamma"
_INSTALL = 'pip install "normscope[torch]"'
# OLMo-core keeps model and optimizer state one level down (olmo_core/train/checkpoint.py).
_NESTED = ("model_and_optim",)


def find_dcp_dir(path: Path) -> Path | None:
    """The DCP folder of a checkpoint folder: itself, or `model_and_optim/` (OLMo-core)."""
    for folder in (path, *(path / n for n in _NESTED)):
        if (folder / METADATA).is_file():
            return folder
    return None


def unfinished_dcp_dir(path: Path) -> Path | None:
    """A DCP folder with `.distcp` files but no `.metadata` yet: a save still being written
    (torch writes `.metadata` last, in `finish`) or one that died half-way."""
    for folder in (path, *(path / n for n in _NESTED)):
        if not (folder / METADATA).is_file() and next(folder.glob("*.distcp"), None):
            return folder
    return None


def _require_torch(where: str) -> None:
    try:
        importlib.import_module("torch")
    except ImportError:
        raise SourceError(
            f"reading a PyTorch DCP checkpoint needs torch, which is not installed ({where})",
            hint=_INSTALL,
        ) from None


def open_dcp_checkpoint(directory: Path, source: str) -> DcpCheckpoint:
    """Open a DCP folder: parse `.metadata`, present its model tensors, read no tensor data."""
    where = str(directory / METADATA)
    _require_torch(where)
    check_byteorder(where)
    store = DcpStore(directory)
    raw = read_small_file(directory / METADATA, None, MAX_DCP_METADATA) or b""
    store.counter.bytes_read += len(raw)
    store.counter.reads += 1
    metadata = read_metadata(raw, where)
    _check_backend(store)
    store.set_pieces(present(metadata, store.virtual))
    if not store.pieces:
        raise SourceError(
            f"no model tensors in the DCP checkpoint ({len(metadata.tensors)} tensor(s), all "
            f"optimizer state) ({directory})"
        )
    shards = [ShardHeader(where, len(raw), len(raw), {}, {})]
    for name in _files(metadata):
        path = directory / name
        if not path.is_file():
            raise SourceError(
                f"the DCP metadata names '{name}' but it is missing ({directory})",
                hint="the save is incomplete: copy every __*_*.distcp file",
            )
        shards.append(ShardHeader(str(path), file_size(path), 0, {}, {}))
    check_file_sizes(metadata, {Path(s.path).name: s.size for s in shards[1:]}, directory)
    check_extents(_extents(metadata), {Path(s.path).name: s.size for s in shards[1:]}, where)
    config = _read_config(store, directory)
    zero_centered, said = _zero_centered(store, metadata, directory)
    in_pickle = zero_centered is None and (directory / "common.pt").is_file()
    if zero_centered is not None:
        config = {**(config or {}), ZERO_CENTERED: zero_centered}
        form = "1 + w (offset)" if zero_centered else "w (standard)"
        store.warnings.append(
            f"{ZERO_CENTERED} = {str(zero_centered).lower()} (--apply-layernorm-1p), read from "
            f"{said}: Megatron norms are stored as {form} ({directory})"
        )
    elif in_pickle:
        store.warnings.append(
            "Megatron's common.pt is a full pickle and is never opened, so "
            f"{ZERO_CENTERED} (--apply-layernorm-1p) is unknown: gains are read as standard; "
            f"pass --parametrization offset if the run used it ({directory})"
        )
    tensors = {name: piece.ref for name, piece in store.pieces.items()}
    checkpoint = DcpCheckpoint(source, config, shards, tensors, store, store.warnings)
    checkpoint.parametrization_source = said
    checkpoint.parametrization_said = zero_centered is not None or in_pickle
    return checkpoint


def _files(metadata: DcpMetadata) -> list[str]:
    names = {c.file for t in metadata.tensors.values() for c in t.chunks}
    names.update(o.file for o in metadata.objects.values())
    return sorted(names)


def _extents(metadata: DcpMetadata) -> Iterator[tuple[str, str, int, int, int | None]]:
    """Every item's place in its file and the most bytes it may take (for `check_extents`)."""
    for fqn, entry in metadata.tensors.items():
        bits = DTYPE_BITS.get(entry.dtype)
        for chunk in entry.chunks:
            data = None if bits is None else -(-math.prod(chunk.sizes) * bits // 8)
            yield (
                f"chunk {list(chunk.offsets)} of '{fqn}'",
                chunk.file,
                chunk.offset,
                chunk.length,
                data,
            )
    for fqn, item in metadata.objects.items():
        yield f"item '{fqn}'", item.file, item.offset, item.length, None


def _check_backend(store: DcpStore) -> None:
    """Megatron's `metadata.json` names the sharded backend; only torch_dist is DCP."""
    data = store.fetch("metadata.json")
    if data is None:
        return
    try:
        backend = load_json(data).get("sharded_backend")
    except (ValueError, AttributeError):
        return  # not Megatron's file: the .metadata decides
    if isinstance(backend, str) and backend != "torch_dist":
        raise SourceError(
            f"Megatron sharded backend '{backend}' is not supported, only torch_dist "
            f"({store.path('metadata.json')})"
        )


def _read_config(store: DcpStore, directory: Path) -> dict[str, Any] | None:
    """`config.json` in the DCP folder, or beside `model_and_optim/` (OLMo-core)."""
    folders = [directory] + ([directory.parent] if directory.name in _NESTED else [])
    for folder in folders:
        path = folder / "config.json"
        data = read_small_file(path, store.counter)
        if data is not None:
            try:
                config = load_json(data)
            except ValueError as exc:
                store.warnings.append(f"config.json is malformed ({exc}); ignored ({path})")
                return None
            return config if isinstance(config, dict) else None
    return None


def _zero_centered(
    store: DcpStore, metadata: DcpMetadata, directory: Path
) -> tuple[bool | None, str | None]:
    """`layernorm_zero_centered_gamma` and where it was read, or (None, None)."""
    item = common_state(metadata)
    if item is not None and item.length > MAX_SMALL_FILE:
        store.warnings.append(
            f"the common state is {item.length} bytes, more than normscope reads of side "
            f"information (at most {MAX_SMALL_FILE}): not read ({item.fqn} in {item.file})"
        )
        item = None
    if item is not None:
        where = f"{item.fqn} in {item.file}"
        blob = store.read_blob(item.file, item.offset, item.length, item.transforms, where)
        # Side information, not tensor data: counted with the small files.
        store.counter.bytes_read -= item.length
        store.counter.metadata_bytes += item.length
        args = read_common_args(blob, f"{where} ({directory})")
        value = (args or {}).get("apply_layernorm_1p")
        if isinstance(value, bool):
            return value, "args.apply_layernorm_1p in the common state"
    for path, label in (
        (directory / "run_config.yaml", "Megatron-Bridge run_config.yaml"),
        (directory / "model_config.yaml", "NeMo model_config.yaml"),
        (directory.parent / "model_config.yaml", "NeMo model_config.yaml"),
    ):
        text = read_small_file(path, store.counter)
        if text is not None:
            value = yaml_flag(text.decode("utf-8", "replace"))
            if value is not None:
                return value, f"{label} ({path})"
    return None, None


_FLAG_LINE = re.compile(
    r"^\s*(layernorm_zero_centered_gamma|apply_layernorm_1p|normalization)\s*:\s*"
    r"['\"]?([A-Za-z0-9_]+)['\"]?\s*(?:#.*)?$",
    re.MULTILINE,
)
_TRUE = {"true": True, "false": False, "layernorm1p": True}


def yaml_flag(text: str) -> bool | None:
    """The zero-centred-gamma flag of a run config: `layernorm_zero_centered_gamma` (Bridge,
    NeMo 2), `apply_layernorm_1p` (Megatron args), or NeMo 1's `normalization: layernorm1p`.

    `yaml.safe_load` when PyYAML is installed (never `yaml.load`), else a line reader for the
    one key; the `model:` section wins over other sections.
    """
    try:
        yaml: Any = importlib.import_module("yaml")
        doc = yaml.safe_load(text)
    except Exception:  # no PyYAML, or a document it cannot read: the line reader decides
        doc = None
    if isinstance(doc, dict):
        model = doc.get("model")
        for scope in ([model] if isinstance(model, dict) else []) + [doc]:
            found = _flag_in(scope)
            if found is not None:
                return found
        return None
    for m in _FLAG_LINE.finditer(text):
        value = m.group(2).lower()
        if m.group(1) == "normalization":
            if value == "layernorm1p":
                return True
            continue
        if value in ("true", "false"):
            return _TRUE[value]
    return None


def _flag_in(scope: dict[str, Any]) -> bool | None:
    for key in (ZERO_CENTERED, "apply_layernorm_1p"):
        if isinstance(scope.get(key), bool):
            return bool(scope[key])
    if scope.get("normalization") == "layernorm1p":
        return True
    return None
