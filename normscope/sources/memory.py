"""A state dict or a module in this process as a checkpoint source (the Python API, callbacks).

`open_memory_checkpoint(InMemory(obj, config))` presents an in-memory `state_dict` (torch tensors
on any one device, or numpy arrays) or an `nn.Module` (its `state_dict()`, the names
`save_pretrained` writes) as one virtual shard: synthetic `TensorRef`s laid end to end, as a DCP
save or a `.pt` file is presented. Only what `Checkpoint.read` asks for leaves the device: the
norm vectors and their biases, each copied to host memory once, never a matrix. Everything above
(classification, statistics, gates, reports) is the same code a file on disk goes through, so
the report is the one the same weights saved as safetensors give.

A transformers model's `PretrainedConfig` is taken from `module.config`; a state dict gets its
config (a dict or a `PretrainedConfig`) from the caller. torch is never imported here: a torch
tensor is recognised by its type's module, a numpy array by `numpy.ndarray`.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from normscope.errors import SourceError
from normscope.schema import TensorRef
from normscope.sources.safetensors import ShardHeader
from normscope.sources.store import Checkpoint, ReadCounter, ShortRead, Span

DTYPES = {
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "float64": "F64",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "int8": "I8",
    "uint8": "U8",
    "int16": "I16",
    "int32": "I32",
    "int64": "I64",
    "bool": "BOOL",
}
"""dtype names as safetensors spells them: torch's (without `torch.`) and numpy's (bfloat16 and
the FP8 types are ml_dtypes', where installed) are the same words."""

EXTRA_STATE = "_extra_state"
"""A module's `get_extra_state()` entry (TransformerEngine, quantizers): any object, no weight."""


@dataclass(frozen=True)
class InMemory:
    """A state dict or module to scan in this process, with the config its names may need."""

    obj: Any
    config: Any = None
    """A dict or a transformers `PretrainedConfig`; None: the module's `.config`, if any."""
    name: str | None = field(default=None)
    """How the report names the source (None: `memory:<type>`, e.g. `memory:LlamaForCausalLM`)."""

    @property
    def source(self) -> str:
        return self.name or f"memory:{type(self.obj).__name__}"


def _kind(value: object) -> str | None:
    """'torch' for a torch tensor, 'numpy' for a numpy array, None for anything else."""
    for klass in type(value).__mro__:
        if klass.__module__ == "torch" and klass.__name__ == "Tensor":
            return "torch"
    import numpy as np

    return "numpy" if isinstance(value, np.ndarray) else None


def _flatten(obj: Mapping[Any, Any], prefix: str, out: dict[str, Any], module: bool) -> None:
    for key, value in obj.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if module and name.endswith(EXTRA_STATE) and _kind(value) is None:
            continue  # a module's extra state (`get_extra_state()`) is no weight
        if isinstance(value, Mapping):
            _flatten(value, name, out, module)
        elif type(value).__name__ == "DTensor":  # FSDP2 / tensor parallel: a shard per rank
            raise SourceError(
                f"state dict entry '{name}' is a DTensor (sharded across ranks): reading it "
                f"here would start a collective on this rank alone",
                hint="scan each rank's local shard (tensor.to_local()) or a saved checkpoint",
            )
        elif _kind(value) is not None:
            out[name] = value
        else:
            raise SourceError(
                f"state dict entry '{name}' is a {type(value).__name__}, not a tensor: give a "
                f"mapping of names to torch tensors or numpy arrays",
                hint="pass model.state_dict() (or the module itself)",
            )


def _config_dict(config: Any, source: str) -> dict[str, Any] | None:
    """A dict, or a `PretrainedConfig` as the dict `save_pretrained` writes (its `to_dict()`)."""
    if config is None or isinstance(config, dict):
        return config
    to_dict = getattr(config, "to_dict", None)
    if callable(to_dict):
        out = to_dict()
        if isinstance(out, dict):
            return out
    raise SourceError(
        f"the config is a {type(config).__name__}: give a dict (config.json's content) or a "
        f"transformers PretrainedConfig ({source})"
    )


class TensorStore:
    """Tensors in memory, laid end to end in one virtual shard; `read` copies only the spans
    asked for off their device, one tensor at a time, and counts them."""

    def __init__(self, virtual: str, tensors: Mapping[str, Any]) -> None:
        self.counter = ReadCounter()
        self.warnings: list[str] = []
        self.virtual = virtual
        self.by_start: dict[int, tuple[int, Any]] = {}
        """Each tensor by its first byte: (its end, the tensor)."""
        self.refs: dict[str, TensorRef] = {}
        self.device: str | None = None
        offset = 0
        for name, tensor in tensors.items():
            dtype = _dtype_of(tensor)
            if dtype is None:
                continue
            nbytes = int(tensor.nbytes)
            ref = TensorRef(
                name, virtual, dtype, tuple(int(d) for d in tensor.shape), offset, offset + nbytes
            )
            self.refs[name] = ref
            self.by_start[offset] = (offset + nbytes, tensor)
            offset += nbytes
        self.nbytes = offset
        self.starts = sorted(self.by_start)

    def path(self, name: str) -> str:
        return self.virtual

    def names(self, suffix: str) -> list[str]:
        return []

    def size(self, name: str) -> int | None:
        return None

    def fetch(self, name: str) -> bytes | None:
        return None

    def headers(self, names: Sequence[str], weight_map: Mapping[str, str] | None) -> list[bytes]:
        return []

    def read(self, spans: Mapping[str, Sequence[Span]]) -> dict[tuple[str, int, int], bytes]:
        out: dict[tuple[str, int, int], bytes] = {}
        for shard, ranges in spans.items():
            for start, end in ranges:
                out[(shard, start, end)] = self._bytes(start, end)
        return out

    def _bytes(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the virtual shard: inside one tensor (a whole norm, or a row
        block of a matrix for `fold`), only those elements copied off its device."""
        i = bisect.bisect_right(self.starts, start) - 1
        if i < 0:
            raise ShortRead(self.virtual, start, end)
        first = self.starts[i]
        stop, tensor = self.by_start[first]
        if end > stop:
            raise ShortRead(self.virtual, start, end)
        return host_bytes(tensor, start - first, end - first)

    def missing_shard(self, name: str, index: str) -> SourceError:
        return SourceError(f"the index names '{name}' but it is missing ({index})")

    def no_shards(self) -> SourceError:
        return SourceError(f"no tensors in the state dict ({self.virtual})")


def _dtype_of(tensor: Any) -> str | None:
    if _kind(tensor) == "torch":
        return DTYPES.get(str(tensor.dtype).removeprefix("torch."))
    return DTYPES.get(str(tensor.dtype)) if tensor.dtype.byteorder in "=|<" else None


def host_bytes(tensor: Any, start: int = 0, end: int | None = None) -> bytes:
    """Raw little-endian bytes [start, end) of one tensor's data, copied off its device (torch)
    or not (numpy): only the elements the span covers."""
    size = int(tensor.element_size() if _kind(tensor) == "torch" else tensor.itemsize)
    end = int(tensor.nbytes) if end is None else end
    lo, hi = start // size, -(-end // size)
    if _kind(tensor) == "torch":
        import torch

        flat = tensor.detach().reshape(-1)[lo:hi]
        if flat.device.type != "cpu":
            flat = flat.cpu()
        raw = bytes(flat.contiguous().view(torch.uint8).numpy().tobytes())
    else:
        import numpy as np

        raw = bytes(np.ascontiguousarray(tensor).reshape(-1)[lo:hi].view(np.uint8).tobytes())
    return raw[start - lo * size : end - lo * size]


def _devices(tensors: Mapping[str, Any]) -> dict[str, str]:
    """The device of each torch tensor's first name ('cpu' for numpy arrays)."""
    first: dict[str, str] = {}
    for name, tensor in tensors.items():
        device = str(tensor.device) if _kind(tensor) == "torch" else "cpu"
        first.setdefault(device, name)
    return first


def open_memory_checkpoint(source: InMemory) -> Checkpoint:
    """Open an in-memory state dict or module. Raises SourceError for a value that is no tensor,
    tensors on several devices, a config of another type, or nothing to read; a module whose
    tensors hold no norm is refused later, by the classifier (ArchError), as a file would be."""
    obj, label = source.obj, source.source
    module = not isinstance(obj, Mapping)
    config = source.config
    if module:
        state_dict = getattr(obj, "state_dict", None)
        if not callable(state_dict):
            raise SourceError(
                f"a {type(obj).__name__} is neither a state dict nor a module ({label})"
            )
        if config is None:
            config = getattr(obj, "config", None)
        obj = state_dict()
        if not isinstance(obj, Mapping):
            raise SourceError(f"state_dict() gave a {type(obj).__name__}, not a mapping ({label})")
    tensors: dict[str, Any] = {}
    _flatten(obj, "", tensors, module)
    devices = _devices(tensors)
    if len(devices) > 1:
        where = ", ".join(f"'{n}' on {d}" for d, n in list(devices.items())[:3])
        raise SourceError(
            f"the state dict's tensors are on {len(devices)} devices ({where}): scan one "
            f"device's tensors at a time ({label})",
            hint="move the model to one device, or scan each rank's shard on its own device",
        )
    config_dict = _config_dict(config, label)
    if module and config_dict is not None and not config_dict.get("architectures"):
        # save_pretrained writes the class that saved the weights; the rules may read it
        config_dict = {**config_dict, "architectures": [type(source.obj).__name__]}
    store = TensorStore(label, tensors)
    if not store.refs:
        raise store.no_shards()
    store.device = next(iter(devices), None)
    shards = [ShardHeader(label, store.nbytes, 0, {}, {})]
    return Checkpoint(label, config_dict, shards, dict(store.refs), store, store.warnings)
