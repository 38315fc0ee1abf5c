"""Real Megatron-Core saves for the tests: GPT models built and saved by megatron-core itself.

`python tests/megatron_saves.py OUT` builds small `GPTModel`s on the CPU (local layer spec, no
Transformer Engine, no apex), gives their norms known per-layer scales, and saves them with
`megatron.core.dist_checkpointing.save` (torch_dist, default strategy and settings):

- `run/iter_0000001` (model only) and `run/iter_0000002` (after two Adam steps, model and the
  optimizer state of Megatron's `FP32Optimizer.sharded_state_dict`), with
  `latest_checkpointed_iteration.txt`: 3 layers, hidden 64, RMSNorm, `qk_layernorm`,
  `mtp_num_layers=1`, FP32; one single-process gloo group.
- `deep/iter_0000005`: 12 layers, hidden 32, LayerNorm (weights and biases), no MTP, no QK
  norm, BF16 parameters, the output layer tied to the embedding; one single-process gloo group.
- `tp2/iter_0000003`: the `run` architecture with tensor parallelism 2: two gloo processes.

Beside each save, `expected/<name>.safetensors` holds the model's own `state_dict()` at save
time (per TP rank: `<name>.rank<r>.safetensors`), the independent truth the tests compare with,
and `expected/<name>.json` the model's configuration. `export/<name>/` holds that state dict as
the Hugging Face export of Megatron-Bridge's GLM-4.5 mapping names it (see `export_hf`).

CPU patches (and only these): `torch.cuda.current_device` returns "cpu" (rotary embeddings,
the checkpoint strategy's consistency all-reduce), `torch.cuda.synchronize` is a no-op (the
async writer's preload), and `FP32Optimizer.__init__`'s loss-scale tensor is built on the CPU
(`torch.tensor(..., device="cuda")`). Megatron imports torch and numpy only at the top level;
everything is imported inside functions so the spawned writer processes start fast.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SEED = 1234
RUN = {"layers": 3, "hidden": 64, "mtp": 1, "qk": True, "norm": "RMSNorm", "bf16": False}
DEEP = {"layers": 12, "hidden": 32, "mtp": 0, "qk": False, "norm": "LayerNorm", "bf16": True}
DEEP["tied"] = True  # Megatron-LM's default: the output layer is the embedding, not saved
HEADS, VOCAB, SEQ = 4, 128, 32


@contextlib.contextmanager
def cpu_for_cuda() -> Iterator[None]:
    """The CUDA calls a CPU run of Megatron-Core cannot make, and nothing else."""
    import torch

    saved = (torch.cuda.current_device, torch.cuda.synchronize)
    torch.cuda.current_device = lambda: "cpu"  # type: ignore[assignment,return-value]
    torch.cuda.synchronize = lambda *a, **k: None  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.cuda.current_device, torch.cuda.synchronize = saved


def scale_of(name: str) -> float:
    """The known scale of each norm (before noise): spread over the bands, varying by layer."""
    layer = next((int(p) for p in name.split(".") if p.isdigit()), 0)
    if name.startswith("mtp."):
        for key, value in (("enorm", 2.4), ("hnorm", 1.0), ("final_layernorm", 1.4)):
            if f".{key}." in name and "transformer_layer" not in name:
                return value
        return {"input_layernorm": 1.1, "pre_mlp_layernorm": 0.8}.get(_leaf(name), 0.9)
    if "final_layernorm" in name:
        return 0.27
    table = {
        "input_layernorm": 0.3 + 0.25 * layer,
        "pre_mlp_layernorm": 1.9 - 0.15 * layer,
        "q_layernorm": 0.7 + 0.1 * layer,
        "k_layernorm": 1.2,
    }
    return table.get(_leaf(name), 1.0)


def _leaf(name: str) -> str:
    return name.removesuffix(".weight").removesuffix(".bias").rsplit(".", 1)[-1]


def build(spec: dict[str, Any], tp: int) -> Any:
    """A GPTModel of `spec` on the CPU, its norms set to their known scales (seeded noise).

    `model.keys_map` is the layer spec's `sharded_state_dict_keys_map`: how the saved keys
    rename the model's own `state_dict()` keys (the local spec saves `input_layernorm.` as
    `self_attention.linear_qkv.layer_norm_`, Transformer Engine's fused name)."""
    import torch
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import (
        get_gpt_layer_local_spec,
        get_gpt_mtp_block_spec,
    )
    from megatron.core.transformer.transformer_config import TransformerConfig

    dtype = torch.bfloat16 if spec["bf16"] else torch.float32
    config = TransformerConfig(
        num_layers=spec["layers"],
        hidden_size=spec["hidden"],
        num_attention_heads=HEADS,
        ffn_hidden_size=2 * spec["hidden"],
        normalization=spec["norm"],
        qk_layernorm=spec["qk"],
        mtp_num_layers=spec["mtp"] or None,
        tensor_model_parallel_size=tp,
        gated_linear_unit=True,
        add_bias_linear=False,
        use_cpu_initialization=True,
        params_dtype=dtype,
        bf16=spec["bf16"],
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    layer = get_gpt_layer_local_spec(normalization=spec["norm"], qk_layernorm=spec["qk"])
    mtp = (
        get_gpt_mtp_block_spec(config, layer, use_transformer_engine=False) if spec["mtp"] else None
    )
    torch.manual_seed(SEED)
    model = GPTModel(
        config,
        layer,
        vocab_size=VOCAB,
        max_sequence_length=SEQ,
        position_embedding_type="rope",
        mtp_block_spec=mtp,
        share_embeddings_and_output_weights=bool(spec.get("tied")),
    )
    noise = torch.Generator().manual_seed(SEED)  # the same on every TP rank: norms replicate
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "layernorm" in name or ".enorm." in name or ".hnorm." in name:
                if name.endswith(".bias"):
                    param.copy_(0.05 * torch.randn(param.shape, generator=noise))
                else:
                    s = scale_of(name)
                    param.copy_(s * (1 + 0.2 * torch.randn(param.shape, generator=noise)))
    model.keys_map = dict(layer.submodules.sharded_state_dict_keys_map)
    return model


def adam_steps(model: Any, steps: int) -> Any:
    """Two Adam steps on seeded gradients (no forward pass needed for real optimizer state)."""
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    grads = torch.Generator().manual_seed(SEED + 1)
    for _ in range(steps):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=grads).to(p.dtype)
        optimizer.step()
        optimizer.zero_grad()
    return optimizer


def optimizer_state(optimizer: Any, model_sharded: Any) -> Any:
    """Megatron's own optimizer sharded state dict (`FP32Optimizer`, as a TP/PP run saves it)."""
    import torch
    from megatron.core.optimizer import OptimizerConfig
    from megatron.core.optimizer.optimizer import FP32Optimizer

    real = torch.tensor

    def cpu_tensor(*args: Any, **kwargs: Any) -> Any:  # FP32Optimizer's _scale on "cuda"
        if kwargs.get("device") == "cuda":
            kwargs["device"] = "cpu"
        return real(*args, **kwargs)

    torch.tensor = cpu_tensor  # type: ignore[assignment]
    try:
        wrapped = FP32Optimizer(optimizer, OptimizerConfig(optimizer="adam"), lambda o, c: None)
    finally:
        torch.tensor = real  # type: ignore[assignment]
    return wrapped.sharded_state_dict(model_sharded)


def save(model: Any, folder: Path, optimizer: Any = None) -> None:
    """`dist_checkpointing.save` with default settings (torch_dist, the default strategy)."""
    from megatron.core import dist_checkpointing

    folder.mkdir(parents=True, exist_ok=True)
    sharded = model.sharded_state_dict()
    state: dict[str, Any] = {"model": sharded}
    if optimizer is not None:
        state["optimizer"] = optimizer_state(optimizer, sharded)
    dist_checkpointing.save(state, str(folder))


def dump(model: Any, path: Path) -> None:
    """The model's own `state_dict()` tensors (TE/extra state entries are not tensors)."""
    import torch
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: v.detach().clone().contiguous()
        for k, v in model.state_dict().items()
        if isinstance(v, torch.Tensor)
    }
    save_file(tensors, str(path))


def export_hf(model: Any, spec: dict[str, Any], folder: Path) -> None:
    """The model under the Hugging Face names of Megatron-Bridge's GLM-4.5 bridge.

    NVIDIA-NeMo/Megatron-Bridge @0fe9cb1 src/megatron/bridge/models/glm/glm45_bridge.py (a GPT
    with q/k layernorms and MTP): `decoder.layers.*` -> `model.layers.*` (`input_layernorm`,
    `post_attention_layernorm` for `pre_mlp_layernorm`/`linear_fc1.layer_norm_weight`,
    `self_attn.q_norm`/`k_norm`, QKVMapping to q/k/v_proj, GatedMLPMapping to gate/up_proj),
    `decoder.final_layernorm` -> `model.norm`, `output_layer` -> `lm_head`, and MTP layer k ->
    `model.layers.{num_layers + k}` with `enorm`, `hnorm`, `eh_proj`, `shared_head.norm` for
    `final_layernorm`, the inner `transformer_layer.*` mapped as a decoder layer. Rows of q/k/v
    and gate/up are split as the bridge does (per query group; the GLU's two halves).
    """
    import torch
    from safetensors.torch import save_file

    n, hidden = spec["layers"], spec["hidden"]
    head = hidden // HEADS
    src = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    out: dict[str, torch.Tensor] = {
        "model.embed_tokens.weight": src["embedding.word_embeddings.weight"],
        "model.norm.weight": src["decoder.final_layernorm.weight"],
        "lm_head.weight": src["output_layer.weight"],
    }

    def layer(mc: str, hf: str) -> None:
        out[f"{hf}.input_layernorm.weight"] = src[f"{mc}.input_layernorm.weight"]
        out[f"{hf}.post_attention_layernorm.weight"] = src[f"{mc}.pre_mlp_layernorm.weight"]
        for a, b in (("q_layernorm", "q_norm"), ("k_layernorm", "k_norm")):
            if f"{mc}.self_attention.{a}.weight" in src:
                out[f"{hf}.self_attn.{b}.weight"] = src[f"{mc}.self_attention.{a}.weight"]
        qkv = src[f"{mc}.self_attention.linear_qkv.weight"].reshape(HEADS, 3, head, hidden)
        for i, p in enumerate(("q_proj", "k_proj", "v_proj")):  # one query group per head
            out[f"{hf}.self_attn.{p}.weight"] = qkv[:, i].reshape(HEADS * head, hidden)
        out[f"{hf}.self_attn.o_proj.weight"] = src[f"{mc}.self_attention.linear_proj.weight"]
        gate, up = src[f"{mc}.mlp.linear_fc1.weight"].chunk(2, dim=0)
        out[f"{hf}.mlp.gate_proj.weight"], out[f"{hf}.mlp.up_proj.weight"] = gate, up
        out[f"{hf}.mlp.down_proj.weight"] = src[f"{mc}.mlp.linear_fc2.weight"]

    for i in range(n):
        layer(f"decoder.layers.{i}", f"model.layers.{i}")
    for k in range(spec["mtp"]):
        mc, hf = f"mtp.layers.{k}", f"model.layers.{n + k}"
        layer(f"{mc}.transformer_layer", hf)
        for a, b in (("enorm", "enorm"), ("hnorm", "hnorm"), ("eh_proj", "eh_proj")):
            out[f"{hf}.{b}.weight"] = src[f"{mc}.{a}.weight"]
        out[f"{hf}.shared_head.norm.weight"] = src[f"{mc}.final_layernorm.weight"]
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous().clone() for k, v in out.items()}, str(folder / "model.safetensors")
    )
    config = {
        "model_type": "glm4_moe",
        "architectures": ["Glm4MoeForCausalLM"],
        "hidden_size": hidden,
        "num_hidden_layers": n,
        "num_attention_heads": HEADS,
        "head_dim": head,
        "use_qk_norm": spec["qk"],
        "num_nextn_predict_layers": spec["mtp"],
        "first_k_dense_replace": n,
        "vocab_size": VOCAB,
        "tie_word_embeddings": False,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))


def _world(rank: int, world: int, store: Path) -> None:
    import torch.distributed as dist
    from megatron.core import parallel_state

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=world)


def single(out: Path) -> None:
    """The single-process saves: `run` (two iterations) and `deep`."""
    _world(0, 1, out / "store-single")
    with cpu_for_cuda():
        run = out / "run"
        model = build(RUN, 1)
        save(model, run / "iter_0000001")
        dump(model, out / "expected" / "iter_0000001.safetensors")
        export_hf(model, RUN, out / "export" / "iter_0000001")
        optimizer = adam_steps(model, 2)
        save(model, run / "iter_0000002", optimizer)
        dump(model, out / "expected" / "iter_0000002.safetensors")
        export_hf(model, RUN, out / "export" / "iter_0000002")
        (run / "latest_checkpointed_iteration.txt").write_text("2")
        deep = build(DEEP, 1)
        save(deep, out / "deep" / "iter_0000005")
        dump(deep, out / "expected" / "deep.safetensors")
        for name, spec, keys_map in (
            ("run", RUN, model.keys_map),
            ("deep", DEEP, deep.keys_map),
            ("tp2", RUN, model.keys_map),
        ):
            facts = {**spec, "keys_map": keys_map, "megatron_core": _version()}
            (out / "expected" / f"{name}.json").write_text(json.dumps(facts, indent=2))


def _version() -> str:
    from megatron.core import __version__

    return str(__version__)


def tensor_parallel(rank: int, out: Path) -> None:
    """One of the two TP=2 ranks of `tp2/iter_0000003`."""
    _world(rank, 2, out / "store-tp2")
    with cpu_for_cuda():
        model = build(RUN, 2)
        save(model, out / "tp2" / "iter_0000003")
        dump(model, out / "expected" / f"tp2.rank{rank}.safetensors")


def main(out: Path) -> int:
    """Write every save; the TP=2 pair and the single-process world run side by side."""
    out.mkdir(parents=True, exist_ok=True)
    # NOTE: fork after the imports, so the children do not import Megatron-Core again; every
    # child makes its own gloo world on its own file store.
    import megatron.core.dist_checkpointing
    import megatron.core.models.gpt  # noqa: F401

    fork = multiprocessing.get_context("fork")
    jobs = [fork.Process(target=single, args=(out,))]
    jobs += [fork.Process(target=tensor_parallel, args=(r, out)) for r in range(2)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
    failed = [j.exitcode for j in jobs if j.exitcode != 0]
    return 1 if failed else 0


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore")  # Megatron warns about missing TE/apex at import
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main(Path(sys.argv[1])))
