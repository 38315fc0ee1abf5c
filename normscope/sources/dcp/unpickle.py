"""Restricted unpickling of DCP metadata and of Megatron's common state: no code ever runs.

A DCP `.metadata` file is a pickle, and torch's own `FileSystemReader.read_metadata` reads it
with plain `pickle.load` (checked in torch 2.13): whoever wrote the file chooses what runs. Here
every global a pickle names goes through `find_class`, the one choke point of unpickling
(`GLOBAL`, `STACK_GLOBAL`, `INST`, `OBJ` and the extension registry all resolve through it), and
`find_class` never returns a real class or function:

- `.metadata` (`read_metadata`): only the globals in `METADATA_GLOBALS` are accepted, each mapped
  to an inert stand-in defined here (a record, a tuple, a string); anything else is refused
  with `SourceError` naming `module.global`. torch is not even imported.
- Megatron's common state (`read_common_args`, a `torch.save` zip): every global becomes an
  inert stub, so `args.apply_layernorm_1p` can be read without trusting the rest (argparse
  Namespace, optimizer configs, RNG states, numpy arrays, tensors: all stubs, none built).
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from normscope.errors import SourceError
from normscope.sources.dcp.bounds import (
    MAX_DIMS,
    MAX_VALUE,
    check_graph,
    check_pickle_bytes,
    show,
)
from normscope.sources.store import MAX_SMALL_FILE

# torch dtype name -> safetensors dtype (safetensors/src/tensor.rs `Dtype`).
TORCH_DTYPES: dict[str, str] = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "float8_e8m0fnu": "F8_E8M0",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint64": "U64",
    "uint32": "U32",
    "uint16": "U16",
    "uint8": "U8",
    "bool": "BOOL",
    "complex64": "C64",
}


class _Record:
    """An inert object: keeps what the pickle gives it (a `__dict__` or a state tuple)."""

    state: Any = None

    def __init__(self, *args: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.state = state


class _Dtype(str):
    """A torch dtype global (`torch.bfloat16`), kept as its name."""


def _record(name: str) -> type[_Record]:
    return type(name, (_Record,), {})


def _torch_size(values: Any = ()) -> tuple[int, ...]:
    return tuple(values)


def _path(*parts: Any) -> str:
    return "/".join(str(p) for p in parts)


def _first(value: Any) -> Any:
    return value


_DCP = "torch.distributed.checkpoint.metadata"
_MCORE = "megatron.core.dist_checkpointing.strategies.torch"
_PLANNER = "torch.distributed.checkpoint.planner"

# Every global a DCP `.metadata` may name, and the stand-in it becomes. Where each was seen:
# - torch 2.13 `dcp.save` (tests/test_dcp.py::test_metadata_globals_are_the_allowlist records
#   them from real saves: plain tensors, ShardedTensor, DTensor, bytes, every dtype below, a
#   relative and an absolute checkpoint_id): the `_DCP` classes, `_StorageInfo`, `torch.Size`,
#   `torch.serialization._get_layout` (TensorProperties.layout), `_MEM_FORMAT_ENCODING`
#   (TensorProperties.__getstate__), `pathlib.PosixPath` (StorageMeta.checkpoint_id), dtypes.
# - Megatron-Core 0.15 (NVIDIA/Megatron-LM d8c6aa4c0b..5ab481cb45,
#   dist_checkpointing/strategies/torch.py): `MCoreMetadata(Metadata)`, a dataclass adding
#   `mcore_data: dict[str, dict[str, tuple]]`; still unpicklable by Megatron @d98e8a6 through a
#   dummy class of that name.
# - Megatron-Core 0.16.1 (`dist_checkpointing/strategies/state_dict_saver.py`
#   `save_state_dict_async_plan`: `global_metadata.all_local_plans = all_local_plans`, on by
#   default since the decentralized global plan): every rank's `SavePlan`, whose items are torch
#   2.13 `planner.py` dataclasses — `WriteItem(index, type, bytes_io_data, tensor_data)`,
#   `WriteItemType` (an Enum, pickled as a call with its value), `TensorWriteData(chunk,
#   properties, size)`. `BytesIOWriteData` is never built by torch 2.13 (`planner_helpers.py`
#   writes byte items without it) and `_StoragePrefix` only without collectives, which Megatron
#   never turns off: both stay refused. normscope reads none of the plans; they are inert records
#   (tests/test_megatron.py records these globals from real 0.16.1 saves, TP=1 and TP=2).
#   Megatron-Core 0.15.3's saver sets the same attribute (its state_dict_saver.py, read, not run).
# - `collections.OrderedDict`: a plain container (planner data of older savers).
METADATA_GLOBALS: dict[tuple[str, str], Any] = {
    (_DCP, "Metadata"): _record("Metadata"),
    (_DCP, "MetadataIndex"): _record("MetadataIndex"),
    (_DCP, "TensorStorageMetadata"): _record("TensorStorageMetadata"),
    (_DCP, "BytesStorageMetadata"): _record("BytesStorageMetadata"),
    (_DCP, "ChunkStorageMetadata"): _record("ChunkStorageMetadata"),
    (_DCP, "TensorProperties"): _record("TensorProperties"),
    (_DCP, "StorageMeta"): _record("StorageMeta"),
    (_DCP, "_MEM_FORMAT_ENCODING"): _first,
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"): _record("_StorageInfo"),
    ("torch.serialization", "_get_layout"): _first,
    ("torch", "Size"): _torch_size,
    ("pathlib", "PosixPath"): _path,
    ("pathlib", "WindowsPath"): _path,
    ("collections", "OrderedDict"): dict,
    (_MCORE, "MCoreMetadata"): _record("Metadata"),
    (_PLANNER, "SavePlan"): _record("SavePlan"),
    (_PLANNER, "WriteItem"): _record("WriteItem"),
    (_PLANNER, "WriteItemType"): _record("WriteItemType"),
    (_PLANNER, "TensorWriteData"): _record("TensorWriteData"),
} | {("torch", name): _Dtype(name) for name in TORCH_DTYPES}


class _Restricted(pickle.Unpickler):
    """Resolves globals through `resolve`; persistent ids (tensor storages) become None."""

    def __init__(self, data: bytes, resolve: Callable[[str, str], Any]) -> None:
        super().__init__(io.BytesIO(data))
        self._resolve = resolve

    def find_class(self, module: str, name: str) -> Any:
        return self._resolve(module, name)

    def persistent_load(self, pid: Any) -> Any:
        return None


@dataclass(frozen=True, slots=True)
class ChunkInfo:
    """One saved piece of a tensor: where it sits in the tensor and where its bytes are."""

    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    file: str
    """The `.distcp` file, relative to the DCP folder."""
    offset: int
    length: int
    transforms: tuple[str, ...]
    """Stream transforms applied at save (`stream.zstd/1`); empty: a plain torch.save blob."""


@dataclass(frozen=True, slots=True)
class TensorEntry:
    """One tensor of the saved state dict: its global shape, dtype and chunks."""

    fqn: str
    dtype: str
    """safetensors dtype string (BF16, F32, ...) or `torch.<name>` for one without."""
    shape: tuple[int, ...]
    chunks: tuple[ChunkInfo, ...]


@dataclass(frozen=True, slots=True)
class BytesEntry:
    """One non-tensor item (a `torch.save`d object or raw bytes)."""

    fqn: str
    file: str
    offset: int
    length: int
    transforms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DcpMetadata:
    """What normscope needs of a DCP `.metadata`: tensors and byte items, in saved order."""

    tensors: dict[str, TensorEntry]
    objects: dict[str, BytesEntry]
    version: str | None


class _Refused(Exception):
    pass


class _Allowlist:
    """`find_class` for `.metadata`: the stand-in of an allowed global, in the order met."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, module: str, name: str) -> Any:
        found = METADATA_GLOBALS.get((module, name))
        if found is None:
            raise _Refused(f"{module}.{name}")
        if f"{module}.{name}" not in self.seen:
            self.seen.append(f"{module}.{name}")
        return found


def _found(seen: list[str]) -> str:
    """What the pickle named before the refused global, for the hint."""
    if not seen:
        return (
            "it is the pickle's first global (a DCP .metadata begins with torch.distributed."
            "checkpoint.metadata.Metadata)"
        )
    short = [n.rsplit(".", 1)[-1] for n in seen]
    names = ", ".join(short if len(short) <= 6 else [*short[:3], "…", *short[-3:]])
    return f"before it the pickle named {len(seen)} allowed DCP/torch global(s): {names}"


def read_metadata(raw: bytes, where: str) -> DcpMetadata:
    """Parse a DCP `.metadata` pickle with the allowlist; SourceError on anything else."""
    check_pickle_bytes(raw, where)
    allow = _Allowlist()
    try:
        md = _Restricted(raw, allow).load()
    except _Refused as exc:
        raise SourceError(
            f"refused to unpickle '{exc}': DCP metadata may name only the torch.distributed."
            f"checkpoint metadata and planner records, torch dtypes and plain containers; "
            f"nothing was run ({where})",
            hint=f"{_found(allow.seen)}; do not load this file with torch.load or pickle. If "
            "a torch or Megatron-Core release newer than those normscope verified (torch "
            "2.13, Megatron-Core 0.16.1) wrote it, report the class name",
        ) from None
    except Exception as exc:  # a truncated or garbled pickle: any unpickling error
        raise SourceError(
            f"invalid DCP metadata: {type(exc).__name__}: {show(str(exc))} ({where})"
        ) from None
    # Bounded before any use (formatting included): see bounds.py.
    check_graph(md, len(raw), where)
    try:
        return _convert(md)
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        raise SourceError(f"invalid DCP metadata: {exc} ({where})") from None


def _ints(value: Any) -> tuple[int, ...]:
    """A shape or an offset: a tuple or list of at most MAX_DIMS integers in [0, MAX_VALUE]."""
    if not isinstance(value, (tuple, list)) or len(value) > MAX_DIMS:
        raise ValueError(f"not a shape: {show(value)}")
    out = tuple(value)
    if not all(type(v) is int and 0 <= v <= MAX_VALUE for v in out):
        raise ValueError(f"not a shape: {show(out)}")
    return out


def _convert(md: Any) -> DcpMetadata:
    if type(md).__name__ != "Metadata":
        raise TypeError(f"the pickle holds a {type(md).__name__}, not DCP Metadata")
    storage: dict[tuple[str, tuple[int, ...] | None], Any] = {}
    for index, info in dict(md.storage_data).items():
        offset = getattr(index, "offset", None)
        offset = None if offset is None else _ints(offset)
        storage[(index.fqn, offset)] = info
    tensors: dict[str, TensorEntry] = {}
    objects: dict[str, BytesEntry] = {}
    for fqn, item in dict(md.state_dict_metadata).items():
        if not isinstance(fqn, str):
            raise TypeError(f"state dict key {show(fqn)} is not a string")
        kind = type(item).__name__
        if kind == "BytesStorageMetadata":
            info = storage.get((fqn, None))
            if info is not None:
                objects[fqn] = BytesEntry(fqn, *_where(info))
            continue
        if kind != "TensorStorageMetadata":
            raise TypeError(f"unknown storage metadata {kind} for '{fqn}'")
        dtype = item.properties.state[0] if item.properties.state else item.properties.dtype
        if not isinstance(dtype, str) or len(dtype) > 64:
            raise TypeError(f"the dtype of '{fqn}' is {show(dtype)}, not a torch dtype")
        shape = _ints(item.size)
        chunks = []
        for chunk in item.chunks:
            offsets, sizes = _ints(chunk.offsets), _ints(chunk.sizes)
            if (
                len(offsets) != len(shape)
                or len(sizes) != len(shape)
                or any(o + n > d for o, n, d in zip(offsets, sizes, shape, strict=True))
            ):
                raise ValueError(
                    f"chunk {list(offsets)} + {list(sizes)} does not fit '{fqn}' {list(shape)}"
                )
            info = storage.get((fqn, offsets))
            if info is None:
                raise KeyError(f"no storage for chunk {list(offsets)} of '{fqn}'")
            chunks.append(ChunkInfo(offsets, sizes, *_where(info)))
        name = str(dtype)
        tensors[fqn] = TensorEntry(
            fqn, TORCH_DTYPES.get(name, f"torch.{name}"), shape, tuple(chunks)
        )
    version = getattr(md, "version", None)
    return DcpMetadata(tensors, objects, version if isinstance(version, str) else None)


def _where(info: Any) -> tuple[str, int, int, tuple[str, ...]]:
    path, offset, length = info.relative_path, info.offset, info.length
    transforms = tuple(getattr(info, "transform_descriptors", None) or ())
    if not (isinstance(path, str) and type(offset) is int and type(length) is int):
        raise TypeError(f"invalid storage entry {show(vars(info))}")
    if not (0 <= offset <= MAX_VALUE and 0 <= length <= MAX_VALUE):
        raise ValueError(f"invalid storage entry: offset {offset}, length {length}")
    if "/" in path or "\\" in path or path.startswith(".") or len(path) > 4096:
        raise ValueError(f"storage entry outside the checkpoint folder: {show(path)}")
    if len(transforms) > 8 or not all(isinstance(t, str) and len(t) < 256 for t in transforms):
        raise TypeError(f"invalid transform descriptors {show(transforms)}")
    return path, offset, length, transforms


class _Stub(_Record):
    """Any global of the common state: callable, buildable, fillable, inert."""

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


_COMMON_CONTAINERS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): dict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
}


def _stub(module: str, name: str) -> Any:
    container = _COMMON_CONTAINERS.get((module, name))
    if container is not None:
        return container
    return type(name, (_Stub,), {"__module__": "normscope.inert"})


def read_common_args(blob: bytes, where: str) -> dict[str, Any] | None:
    """`args` of Megatron's common state (a `torch.save([state_dict])` zip), as a dict.

    Every global is a stub and every tensor storage None: only plain values survive (the
    booleans wanted here among them). None when the blob holds no `args`.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            pkl = next((n for n in archive.namelist() if n.endswith("/data.pkl")), None)
            if pkl is None:
                raise SourceError(f"the common state is no torch.save archive ({where})")
            # A compressed member may inflate without bound (a zip bomb): read at most the
            # limit, whatever its header says.
            with archive.open(pkl) as member:
                data = member.read(MAX_SMALL_FILE + 1)
            if len(data) > MAX_SMALL_FILE:
                raise SourceError(
                    f"the common state's pickle inflates past {MAX_SMALL_FILE} bytes: not "
                    f"read ({where})"
                )
            check_pickle_bytes(data, where)
        state = _Restricted(data, _stub).load()
    except SourceError:
        raise
    except Exception as exc:  # zip or pickle errors of a damaged blob
        raise SourceError(
            f"cannot read the common state: {type(exc).__name__}: {show(str(exc))} ({where})"
        ) from None
    if isinstance(state, list) and state:
        state = state[0]
    args = state.get("args") if isinstance(state, dict) else None
    if isinstance(args, _Record):
        return {k: v for k, v in vars(args).items() if k not in ("args", "state")}
    return None
