"""DCP saves written by torch's own `torch.distributed.checkpoint.save`, in the layouts of
Megatron-Core (torch_dist), torchtitan and OLMo-core, small enough to write in a test session.

`dcp.save` needs a process group to know the world: `process_group()` starts a world_size=1
gloo group on a `file://` store (without one, `dcp.save` warns that it assumes a single
process, and the suite turns warnings into errors). ShardedTensors with several local shards
on rank 0 write a tensor in several chunks, as a sharded run does: one chunk per layer for
Megatron's layer-stacked keys, and norms split in two.

Values are seeded; `norm_values` returns what each presented norm should read (layer-stacked
keys unstacked), and `torch_load` is the independent reader: `dcp.load` of one key.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import pickle
import sys
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed._shard.sharded_tensor import Shard, ShardMetadata, init_from_local_shards
from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
from torch.distributed.checkpoint.metadata import Metadata

H, FFN, V, L = 32, 64, 256, 4
"""Hidden size, MLP width, vocabulary, layers: matrices and optimizer state dominate."""


@contextlib.contextmanager
def process_group(folder: Path) -> Iterator[None]:
    """A world_size=1 gloo process group on a `file://` store in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    dist.init_process_group("gloo", init_method=f"file://{folder / 'store'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def chunked(tensor: torch.Tensor, pieces: list[tuple[list[int], list[int]]]) -> Any:
    """A ShardedTensor of `tensor` saved as the given (offsets, sizes) chunks, all on rank 0."""
    shards = []
    for offsets, sizes in pieces:
        index = tuple(slice(o, o + n) for o, n in zip(offsets, sizes, strict=True))
        meta = ShardMetadata(list(offsets), list(sizes), "rank:0/cpu")
        shards.append(Shard(tensor[index].clone(), meta))
    return init_from_local_shards(shards, list(tensor.shape))


def per_layer(tensor: torch.Tensor) -> Any:
    """Megatron's layer-stacked chunking: one chunk per layer at offset [i, 0, ...]."""
    rest = list(tensor.shape[1:])
    return chunked(tensor, [([i] + [0] * len(rest), [1, *rest]) for i in range(tensor.shape[0])])


def halves(tensor: torch.Tensor) -> Any:
    """Two chunks along the last axis (per layer for a stacked tensor): a norm in two chunks."""
    *lead, d = tensor.shape
    half = d // 2
    if not lead:
        return chunked(tensor, [([0], [half]), ([half], [d - half])])
    pieces = []
    for i in range(lead[0]):
        pieces += [([i, 0], [1, half]), ([i, half], [1, d - half])]
    return chunked(tensor, pieces)


class MegatronPlanner(DefaultSavePlanner):
    """Saves `io.BytesIO` values as they are, as Megatron's MCoreSavePlanner does (the default
    planner would `torch.save` the BytesIO object itself); optionally wraps the metadata in a
    Megatron-Core 0.15 `MCoreMetadata`."""

    def __init__(self, mcore_metadata: bool = False) -> None:
        super().__init__()
        self.mcore_metadata = mcore_metadata

    def transform_object(self, write_item: Any, obj: Any) -> Any:
        if isinstance(obj, io.BytesIO):
            return obj
        return super().transform_object(write_item, obj)

    def create_global_plan(self, all_plans: list[Any]) -> tuple[list[Any], Metadata]:
        plans, metadata = super().create_global_plan(all_plans)
        if self.mcore_metadata:
            cls = _mcore_metadata_class()
            metadata = cls(mcore_data={"decoder.final_layernorm.weight": {}}, **vars(metadata))
            self.metadata = metadata
        return plans, metadata


_MCORE = "megatron.core.dist_checkpointing.strategies.torch"


def _mcore_metadata_class() -> type:
    """`megatron.core.dist_checkpointing.strategies.torch.MCoreMetadata` as Megatron-Core 0.15
    defined it (NVIDIA/Megatron-LM d8c6aa4c0b): a dataclass adding `mcore_data` to Metadata.
    Defined in a stand-in module of that name (see `_megatron_modules`), so that the pickle
    names it as a real save does."""
    from dataclasses import dataclass as _dataclass

    @_dataclass
    class MCoreMetadata(Metadata):
        mcore_data: dict[str, dict[str, Any]] | None = None

    MCoreMetadata.__module__ = _MCORE
    MCoreMetadata.__qualname__ = "MCoreMetadata"
    sys.modules[_MCORE].MCoreMetadata = MCoreMetadata  # type: ignore[attr-defined]
    return MCoreMetadata


@contextlib.contextmanager
def _megatron_modules() -> Iterator[None]:
    """Stand-in `megatron.*` modules for the length of one save (pickle imports the module of
    every class it writes); removed afterwards, so no test sees a fake Megatron."""
    parts = _MCORE.split(".")
    names = [".".join(parts[: i + 1]) for i in range(len(parts))]
    added = [n for n in names if n not in sys.modules]
    for n in added:
        sys.modules[n] = types.ModuleType(n)
    try:
        yield
    finally:
        for n in added:
            del sys.modules[n]


def _common_state(zero_centered: bool, iteration: int) -> io.BytesIO:
    """Megatron's common state as saved since mid-2026: `torch.save([state_dict])`, with args
    (an argparse Namespace), RNG-like tensors and numpy values the reader must stub out."""
    args = argparse.Namespace(
        apply_layernorm_1p=zero_centered, num_layers=L, hidden_size=H, mtp_num_layers=1
    )
    state = {
        "args": args,
        "iteration": iteration,
        "checkpoint_version": 3.0,
        "rng_state": [{"random_rng_state": torch.arange(4), "np": [1, 2]}],
        "num_floating_point_operations_so_far": 0,
    }
    buf = io.BytesIO()
    torch.save([state], buf)
    buf.seek(0)
    return buf


class _Evil:
    """A pickle that creates `path` when loaded: `common.pt` must never be opened."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


@dataclass
class Save:
    """A written fixture: its folder, the DCP folder inside and the expected norm values."""

    path: Path
    dcp_dir: Path
    norms: dict[str, torch.Tensor]
    """Presented norm name -> values (layer-stacked keys unstacked)."""


def _gain(gen: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return (scale * (1.0 + 0.1 * torch.randn(*shape, generator=gen))).to(torch.bfloat16)


def _matrix(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return (0.02 * torch.randn(*shape, generator=gen)).to(torch.bfloat16)


def _optimizer(model: Mapping[str, torch.Tensor], gen: torch.Generator) -> dict[str, Any]:
    """Megatron's fully sharded optimizer keys: `optimizer.state.<kind>.<param key>` (fp32)."""
    out: dict[str, Any] = {}
    for key, value in model.items():
        for kind in ("exp_avg", "exp_avg_sq", "fp32_param"):
            out[f"optimizer.state.{kind}.{key}"] = torch.randn(value.shape, generator=gen)
    return out


def write_megatron(
    path: Path,
    seed: int = 0,
    scale: float = 1.0,
    zero_centered: bool | None = False,
    stacked: bool = True,
    mcore_metadata: bool = False,
    legacy_common: Path | None = None,
    iteration: int = 100,
) -> Save:
    """A Megatron-Core torch_dist save of a GPT with one MTP depth.

    `stacked`: homogeneous layers (one key per parameter with a leading layer axis, TE fused
    input norms, one chunk per layer); else non-homogeneous (`decoder.layers.<N>.*`, local-spec
    norms, MLA latent norms, MoE `pre_mlp_layernorm`, MTP block as `mtp_model_layer`).
    `zero_centered` goes into the common state's args (None: no common state item).
    `legacy_common`: write a `common.pt` that would create that file if it were unpickled.
    """
    gen = torch.Generator().manual_seed(seed)
    model: dict[str, torch.Tensor] = {}
    layout: dict[str, Any] = {}
    norms: dict[str, torch.Tensor] = {}

    def put(key: str, value: torch.Tensor, chunks: Any = None, norm: bool = False) -> None:
        model[key] = value
        layout[key] = value if chunks is None else chunks(value)
        if norm and stacked and value.dim() == 2 and key.startswith("decoder.layers."):
            for i in range(value.shape[0]):
                norms[key.replace("decoder.layers.", f"decoder.layers.{i}.", 1)] = value[i]
        elif norm:
            norms[key] = value

    put("embedding.word_embeddings.weight", _matrix(gen, V, H))
    if stacked:
        put(
            "decoder.layers.self_attention.linear_qkv.layer_norm_weight",
            _gain(gen, L, H, scale=scale),
            per_layer,
            norm=True,
        )
        put("decoder.layers.self_attention.linear_qkv.weight", _matrix(gen, L, 3 * H, H), per_layer)
        put("decoder.layers.self_attention.linear_proj.weight", _matrix(gen, L, H, H), per_layer)
        put(
            "decoder.layers.mlp.linear_fc1.layer_norm_weight",
            _gain(gen, L, H, scale=scale),
            halves,
            norm=True,
        )
        put("decoder.layers.mlp.linear_fc1.weight", _matrix(gen, L, 2 * FFN, H), per_layer)
        put("decoder.layers.mlp.linear_fc2.weight", _matrix(gen, L, H, FFN), per_layer)
    else:
        for i in range(L):
            p = f"decoder.layers.{i}."
            put(p + "input_layernorm.weight", _gain(gen, H, scale=scale), norm=True)
            put(p + "self_attention.linear_q_down_proj.weight", _matrix(gen, 24, H))
            put(
                p + "self_attention.linear_q_up_proj.layer_norm_weight",
                _gain(gen, 24, scale=scale),
                norm=True,
            )
            put(p + "self_attention.linear_q_up_proj.weight", _matrix(gen, 3 * H, 24))
            put(
                p + "self_attention.linear_kv_up_proj.layer_norm_weight",
                _gain(gen, 16, scale=scale),
                norm=True,
            )
            put(p + "self_attention.linear_kv_up_proj.weight", _matrix(gen, 2 * H, 16))
            put(p + "pre_mlp_layernorm.weight", _gain(gen, H, scale=scale), halves, norm=True)
            put(p + "mlp.linear_fc1.weight", _matrix(gen, 2 * FFN, H))
    put("decoder.final_layernorm.weight", _gain(gen, H, scale=scale), halves, norm=True)
    mtp = "mtp.layers.0."
    block = mtp + ("transformer_layer." if stacked else "mtp_model_layer.")
    put(mtp + "enorm.weight", _gain(gen, H, scale=scale), norm=True)
    put(mtp + "hnorm.weight", _gain(gen, H, scale=scale), norm=True)
    put(mtp + "eh_proj.weight", _matrix(gen, H, 2 * H))
    put(block + "self_attention.linear_qkv.layer_norm_weight", _gain(gen, H), norm=True)
    put(block + "self_attention.linear_qkv.weight", _matrix(gen, 3 * H, H))
    put(block + "mlp.linear_fc1.layer_norm_weight", _gain(gen, H), norm=True)
    put(block + "mlp.linear_fc1.weight", _matrix(gen, 2 * FFN, H))
    put(mtp + "final_layernorm.weight", _gain(gen, H, scale=scale), norm=True)
    put("output_layer.weight", _matrix(gen, V, H))

    state: dict[str, Any] = dict(layout)
    state.update(_optimizer(model, gen))
    # TE FP8 metadata is a ShardedObject: a bytes item, never a tensor.
    state["decoder.layers.self_attention.linear_qkv._extra_state/shard_0_4"] = io.BytesIO(b"te")
    if zero_centered is not None:
        state["common_state/shard_0_1"] = _common_state(zero_centered, iteration)
    with _megatron_modules():
        dcp.save(state, checkpoint_id=path, planner=MegatronPlanner(mcore_metadata))
    backend = {"sharded_backend": "torch_dist", "sharded_backend_version": 1}
    (path / "metadata.json").write_text(json.dumps({**backend, "common_backend": "torch"}))
    if legacy_common is not None:
        (path / "common.pt").write_bytes(pickle.dumps({"args": _Evil(legacy_common)}))
    return Save(path, path, norms)


def write_torchtitan(path: Path, seed: int = 1) -> Save:
    """torchtitan `step-<N>/`: model keys flat at the top level next to `optimizer`,
    `lr_scheduler` and `train_state` (torchtitan/components/checkpointer/dcp.py
    `_flattened_model_states_sd`); `norm.weight` in two chunks, as FSDP shards it."""
    gen = torch.Generator().manual_seed(seed)
    model: dict[str, torch.Tensor] = {"tok_embeddings.weight": _matrix(gen, V, H)}
    for i in range(L):
        p = f"layers.{i}."
        model[p + "attention_norm.weight"] = _gain(gen, H)
        model[p + "attention.wq.weight"] = _matrix(gen, H, H)
        model[p + "ffn_norm.weight"] = _gain(gen, H)
        model[p + "feed_forward.w1.weight"] = _matrix(gen, FFN, H)
    model["norm.weight"] = _gain(gen, H)
    model["output.weight"] = _matrix(gen, V, H)
    norms = {k: v for k, v in model.items() if k.endswith("norm.weight")}
    state: dict[str, Any] = {k: (halves(v) if k == "norm.weight" else v) for k, v in model.items()}
    state["optimizer"] = {
        "state": {
            k: {"exp_avg": torch.randn(v.shape, generator=gen), "exp_avg_sq": torch.rand(v.shape)}
            for k, v in model.items()
        },
        "param_groups": [{"lr": 3e-4, "params": list(model)}],
    }
    state["lr_scheduler"] = {"last_epoch": 10}
    state["train_state"] = {"step": 10}
    dcp.save(state, checkpoint_id=path)
    return Save(path, path, norms)


def write_olmo_core(path: Path, seed: int = 2) -> Save:
    """OLMo-core `step<N>/model_and_optim/`: `{"model": ..., "optim": ...}` flattened by DCP
    (olmo_core/distributed/checkpoint `_prepare_state_dict`), plus the trainer's config.json."""
    gen = torch.Generator().manual_seed(seed)
    model: dict[str, torch.Tensor] = {"embeddings.weight": _matrix(gen, V, H)}
    for i in range(L):
        p = f"blocks.{i}."
        model[p + "attention.w_q.weight"] = _matrix(gen, H, H)
        model[p + "attention.q_norm.weight"] = _gain(gen, H)
        model[p + "attention_norm.weight"] = _gain(gen, H)
        model[p + "feed_forward.w1.weight"] = _matrix(gen, FFN, H)
        model[p + "feed_forward_norm.weight"] = _gain(gen, H)
    model["lm_head.norm.weight"] = _gain(gen, H)
    model["lm_head.w_out.weight"] = _matrix(gen, V, H)
    norms = {f"model.{k}": v for k, v in model.items() if k.endswith("norm.weight")}
    optim = {k: {"exp_avg": torch.randn(v.shape, generator=gen)} for k, v in model.items()}
    dcp.save({"model": model, "optim": {"state": optim}}, checkpoint_id=path / "model_and_optim")
    (path / "config.json").write_text(json.dumps({"model": {"d_model": H, "n_layers": L}}))
    return Save(path, path / "model_and_optim", norms)


def torch_metadata(dcp_dir: Path) -> Metadata:
    """torch's own reading of a fixture's `.metadata` (plain `pickle.load`: our own files)."""
    from torch.distributed.checkpoint import FileSystemReader

    with _megatron_modules():
        _mcore_metadata_class()
        return FileSystemReader(dcp_dir).read_metadata()


def torch_load(dcp_dir: Path, key: str) -> torch.Tensor:
    """The independent reader: torch's `dcp.load` of one key (a partial state dict)."""
    entry = torch_metadata(dcp_dir).state_dict_metadata[key]
    target = {key: torch.empty(tuple(entry.size), dtype=entry.properties.dtype)}
    with _megatron_modules():
        _mcore_metadata_class()
        dcp.load(target, checkpoint_id=dcp_dir)
    return target[key]


def written(write: Callable[[Path], Save], folder: Path) -> Metadata:
    """`write(folder)` inside a process group (the running one, or one for the call), then
    torch's reading of the save's metadata: what the crafted-input tests and benchmarks edit."""
    if dist.is_initialized():
        save = write(folder)
    else:
        with process_group(folder.parent / "pg"):
            save = write(folder)
    return torch_metadata(save.dcp_dir)


def chunks_on_one_blob(folder: Path, metadata: Metadata, name: str, chunks: int = 64) -> None:
    """Make tensor `name` `chunks` x 2^20 BF16 elements whose chunks all point at one 2 MB blob
    appended to `__0_0.distcp` (issue 28: a small save that declares a huge norm)."""
    from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, MetadataIndex

    blob = io.BytesIO()
    piece = 1 << 20
    torch.save(torch.ones(piece, dtype=torch.bfloat16), blob)
    distcp = folder / "__0_0.distcp"
    offset = distcp.stat().st_size
    with distcp.open("ab") as handle:
        handle.write(blob.getvalue())
    template = next(v for k, v in metadata.storage_data.items() if k.fqn == name)
    for key in [k for k in metadata.storage_data if k.fqn == name]:
        del metadata.storage_data[key]
    item = metadata.state_dict_metadata[name]
    item.size = torch.Size([chunks * piece])
    item.chunks = []
    for i in range(chunks):
        offsets = torch.Size([i * piece])
        item.chunks.append(ChunkStorageMetadata(offsets=offsets, sizes=torch.Size([piece])))
        info = type(template)(template.relative_path, offset, len(blob.getvalue()))
        metadata.storage_data[MetadataIndex(name, offsets)] = info
    (folder / ".metadata").write_bytes(pickle.dumps(metadata))


def replace_item(folder: Path, metadata: Metadata, prefix: str, data: bytes) -> None:
    """Point the byte item whose key starts with `prefix` at `data`, appended to its file."""
    key = next(k for k in metadata.storage_data if k.fqn.startswith(prefix))
    info = metadata.storage_data[key]
    path = folder / info.relative_path
    offset = path.stat().st_size
    with path.open("ab") as handle:
        handle.write(data)
    info.offset, info.length = offset, len(data)
    (folder / ".metadata").write_bytes(pickle.dumps(metadata))
