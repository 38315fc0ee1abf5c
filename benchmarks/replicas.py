"""Sparse replicas of real large checkpoints, for benchmarking normscope.

A replica has the real tensor names, shapes, dtypes and shard split of a released model, and
safetensors headers written byte-for-byte as `safetensors` writes them. Only the norm vectors hold
data (seeded, realistic values); every other byte is a hole (`ftruncate` to the logical size), so
the 688 GB DeepSeek-V3 layout costs a few MB of disk. Reading a hole returns zeros at memory speed
and costs no disk I/O, so timings here are warm-cache timings (see benchmarks/README.md).

    python benchmarks/replicas.py                 # build all replicas under benchmarks/out/
    python benchmarks/replicas.py deepseek-v3     # one of them
    python benchmarks/replicas.py --check         # header byte-identity + safe_open + normscope

Layouts (sources in benchmarks/README.md):
- deepseek-v3: DeepSeek-V3 671B with MTP (config_671B), F8_E4M3 linears + F32 128x128 block
  `weight_scale_inv`, BF16 norms/router/embeddings, MTP at model.layers.61; 163 shards.
- llama-3-70b: Llama-3-70B, BF16, HF save_pretrained order, 30 shards.
- qwen3-next-80b-a3b: Qwen3-Next-80B-A3B, BF16, hybrid Gated-DeltaNet / gated attention (every
  4th layer full), 512 experts, zero-centred (offset) norms except `linear_attn.norm`, top-level
  `mtp.*`; 41 shards.
- series: 100 HF-Trainer `checkpoint-<step>` folders of a 1B-class Llama-like model (16 layers,
  hidden 2048, single shard) with norms drifting away from the identity over training.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
REPLICAS = OUT / "replicas"
FORMAT_VERSION = 3  # bump when a layout or the value generator changes: replicas are rebuilt

DTYPE_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "F8_E4M3": 1, "F8_E5M2": 1}
# safetensors orders the data section by dtype, largest first in its `Dtype` enum order, then by
# name (safetensors/src/tensor.rs `prepare`: `right.dtype().cmp(&left.dtype()).then(lname.cmp)`).
# Ranks of the dtypes used here in that enum; `selfcheck()` verifies the resulting bytes against
# the installed safetensors.
DTYPE_RANK = {"F8_E5M2": 6, "F8_E4M3": 7, "F16": 11, "BF16": 12, "F32": 15, "F64": 17}


@dataclass(frozen=True, slots=True)
class Tensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    norm: str | None = None
    """None for an ordinary tensor (a hole); else how to fill it: 'std' (ratio ~ g) or 'offset'
    (stored w, effective 1 + w)."""

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_BYTES[self.dtype]


@dataclass(frozen=True, slots=True)
class Layout:
    name: str
    config: dict
    shards: list[list[Tensor]]
    shard_names: list[str]
    metadata: dict[str, str]
    notes: str


# ---------------------------------------------------------------------------------------------
# safetensors header, exactly as safetensors serializes it


def header_bytes(tensors: Sequence[Tensor], metadata: dict[str, str] | None) -> tuple[bytes, dict]:
    """The 8-byte length + JSON header (space-padded to 8 bytes) and each tensor's data offsets."""
    ordered = sorted(tensors, key=lambda t: (-DTYPE_RANK[t.dtype], t.name))
    entries: dict[str, object] = {}
    if metadata:
        entries["__metadata__"] = metadata
    offsets: dict[str, tuple[int, int]] = {}
    pos = 0
    for t in ordered:
        end = pos + t.nbytes
        entries[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [pos, end]}
        offsets[t.name] = (pos, end)
        pos = end
    raw = json.dumps(entries, separators=(",", ":"), ensure_ascii=False).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw, offsets


def compile_normscope() -> None:
    """Write normscope's bytecode (`__pycache__`) before anything is timed.

    NOTE: a pip install compiles a package's modules when it installs them, and an editable one
    writes them on first import — unless PYTHONDONTWRITEBYTECODE is set, as it is on the machines
    these benchmarks run on. Then every run compiled normscope's ~80 modules from source again:
    ~35 ms of each scan (measured: 0.386 s vs 0.347 s, DeepSeek-V3, paired), a cost no user
    pays. The competitors (numpy, torch, safetensors) come compiled from their wheels.
    """
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("normscope")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        compileall.compile_dir(folder, quiet=1)


def selfcheck() -> None:
    """Assert our header bytes equal safetensors' own for a small mixed-dtype file."""
    import torch
    from safetensors.torch import save

    torch_dtype = {
        "F32": torch.float32,
        "BF16": torch.bfloat16,
        "F8_E4M3": torch.float8_e4m3fn,
        "F16": torch.float16,
        "F64": torch.float64,
    }
    specs = [
        Tensor("model.layers.3.mlp.experts.7.up_proj.weight", "F8_E4M3", (4, 6)),
        Tensor("model.layers.3.mlp.experts.7.up_proj.weight_scale_inv", "F32", (1, 1)),
        Tensor("model.layers.3.input_layernorm.weight", "BF16", (6,)),
        Tensor("model.layers.3.mlp.gate.e_score_correction_bias", "F32", (3,)),
        Tensor("a.half", "F16", (5,)),
        Tensor("b.double", "F64", (1,)),
        Tensor("model.layers.3.mlp.gate.weight", "BF16", (3, 6)),
    ]
    tensors = {t.name: torch.zeros(t.shape, dtype=torch_dtype[t.dtype]) for t in specs}
    for meta in ({"format": "pt"}, None):
        theirs = save(tensors, metadata=meta)
        ours, _ = header_bytes(specs, meta)
        assert theirs[: len(ours)] == ours, (theirs[: len(ours)], ours)
        assert len(theirs) == len(ours) + sum(t.nbytes for t in specs)


# ---------------------------------------------------------------------------------------------
# Norm values


def _bf16(values: np.ndarray) -> bytes:
    """float -> BF16 bytes (round to nearest even), as torch does."""
    f = np.asarray(values, dtype="<f4").view("<u4").astype(np.uint64)
    rounded = (f + 0x7FFF + ((f >> 16) & 1)) >> 16
    return rounded.astype("<u2").tobytes()


def _encode(values: np.ndarray, dtype: str) -> bytes:
    if dtype == "BF16":
        return _bf16(values)
    if dtype == "F32":
        return np.asarray(values, dtype="<f4").tobytes()
    if dtype == "F16":
        return np.asarray(values, dtype="<f2").tobytes()
    raise ValueError(dtype)


def gain(name: str, dim: int, ratio: float, seed: int = 0) -> np.ndarray:
    """A realistic effective gain of length `dim` whose ‖g‖₂/√d is `ratio`.

    Log-normal spread around the mean with a few amplified channels, like trained RMSNorm gains.
    """
    rng = np.random.default_rng(zlib.crc32(name.encode()) ^ seed)
    g = np.exp(rng.normal(0.0, 0.25, dim))
    hot = rng.choice(dim, size=max(1, dim // 512), replace=False)
    g[hot] *= rng.uniform(2.0, 4.0, hot.size)
    g *= ratio / np.sqrt(np.mean(g * g))
    return g


def _ratio_for(name: str, seed: int = 0) -> float:
    """Seeded per-norm target ratio: input norms low (0.3–0.9), final/MTP ~1, latent ~1.1–1.5."""
    rng = np.random.default_rng(zlib.crc32(b"ratio:" + name.encode()) ^ seed)
    if "q_a_layernorm" in name or "kv_a_layernorm" in name:
        return float(rng.uniform(1.05, 1.5))
    if "input_layernorm" in name or "pre_fc_norm" in name or name.endswith(("enorm.weight",)):
        return float(rng.uniform(0.3, 0.9))
    if "post_attention_layernorm" in name:
        return float(rng.uniform(0.5, 1.2))
    if "q_norm" in name or "k_norm" in name:
        return float(rng.uniform(0.7, 1.4))
    return float(rng.uniform(0.85, 1.3))


def norm_bytes(t: Tensor, seed: int = 0, ratio: float | None = None) -> bytes:
    dim = math.prod(t.shape)
    g = gain(t.name, dim, _ratio_for(t.name, seed) if ratio is None else ratio, seed)
    stored = g - 1.0 if t.norm == "offset" else g
    return _encode(stored, t.dtype)


# ---------------------------------------------------------------------------------------------
# Sharding


def _next_fit(tensors: Sequence[Tensor], limit: int) -> list[list[Tensor]]:
    """HF `save_pretrained` sharding: start a new shard when the next tensor would exceed limit."""
    shards: list[list[Tensor]] = [[]]
    size = 0
    for t in tensors:
        if shards[-1] and size + t.nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return shards


def _split_near(tensors: Sequence[Tensor], n: int) -> list[list[Tensor]]:
    """`split` into `n` shards, else the nearest count next-fit reaches (n +- 1, ...: the
    count is not monotonic in the size limit; 16 x DeepSeek-V3 gives 2,559, not 2,560)."""
    for k in range(n // 10):
        for m in (n - k, n + k):
            shards = _split_or_none(tensors, m)
            if shards is not None:
                return shards
    return split(tensors, n)


def _split_or_none(tensors: Sequence[Tensor], n: int) -> list[list[Tensor]] | None:
    try:
        return split(tensors, n)
    except ValueError:
        return None


def split(tensors: Sequence[Tensor], n: int) -> list[list[Tensor]]:
    """Next-fit shards with the smallest size limit that gives exactly `n` shards."""
    lo, hi = max(t.nbytes for t in tensors), sum(t.nbytes for t in tensors)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(_next_fit(tensors, mid)) <= n:
            hi = mid
        else:
            lo = mid + 1
    shards = _next_fit(tensors, lo)
    if len(shards) != n:
        raise ValueError(f"cannot split into exactly {n} shards (got {len(shards)})")
    return shards


# ---------------------------------------------------------------------------------------------
# DeepSeek-V3 671B (deepseek-ai/DeepSeek-V3 @9b4e978 inference/configs/config_671B.json and the
# HF config.json; tensor list as in the released index: 91,991 tensors, 163 shards)

DEEPSEEK_CONFIG = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "ep_size": 1,
    "first_k_dense_replace": 3,
    "hidden_act": "silu",
    "hidden_size": 7168,
    "initializer_range": 0.02,
    "intermediate_size": 18432,
    "kv_lora_rank": 512,
    "max_position_embeddings": 163840,
    "model_type": "deepseek_v3",
    "moe_intermediate_size": 2048,
    "moe_layer_freq": 1,
    "n_group": 8,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "norm_topk_prob": True,
    "num_attention_heads": 128,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 61,
    "num_key_value_heads": 128,
    "num_nextn_predict_layers": 1,
    "q_lora_rank": 1536,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "quantization_config": {
        "activation_scheme": "dynamic",
        "fmt": "e4m3",
        "quant_method": "fp8",
        "weight_block_size": [128, 128],
    },
    "rms_norm_eps": 1e-06,
    "rope_theta": 10000,
    "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid",
    "tie_word_embeddings": False,
    "topk_group": 4,
    "topk_method": "noaux_tc",
    "torch_dtype": "bfloat16",
    "transformers_version": "4.46.3",
    "v_head_dim": 128,
    "vocab_size": 129280,
}


def _fp8_linear(name: str, out_f: int, in_f: int) -> list[Tensor]:
    return [
        Tensor(f"{name}.weight", "F8_E4M3", (out_f, in_f)),
        Tensor(f"{name}.weight_scale_inv", "F32", (math.ceil(out_f / 128), math.ceil(in_f / 128))),
    ]


def _deepseek_layer(i: int, c: dict) -> list[Tensor]:
    h, p = c["hidden_size"], f"model.layers.{i}."
    heads, qk = c["num_attention_heads"], c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
    out = [
        *_fp8_linear(p + "self_attn.q_a_proj", c["q_lora_rank"], h),
        Tensor(p + "self_attn.q_a_layernorm.weight", "BF16", (c["q_lora_rank"],), "std"),
        *_fp8_linear(p + "self_attn.q_b_proj", heads * qk, c["q_lora_rank"]),
        *_fp8_linear(
            p + "self_attn.kv_a_proj_with_mqa", c["kv_lora_rank"] + c["qk_rope_head_dim"], h
        ),
        Tensor(p + "self_attn.kv_a_layernorm.weight", "BF16", (c["kv_lora_rank"],), "std"),
        *_fp8_linear(
            p + "self_attn.kv_b_proj",
            heads * (c["qk_nope_head_dim"] + c["v_head_dim"]),
            c["kv_lora_rank"],
        ),
        *_fp8_linear(p + "self_attn.o_proj", h, heads * c["v_head_dim"]),
    ]
    if i < c["first_k_dense_replace"]:
        inter = c["intermediate_size"]
        for proj in ("gate_proj", "up_proj"):
            out += _fp8_linear(f"{p}mlp.{proj}", inter, h)
        out += _fp8_linear(f"{p}mlp.down_proj", h, inter)
    else:
        inter = c["moe_intermediate_size"]
        for e in range(c["n_routed_experts"]):
            for proj in ("gate_proj", "up_proj"):
                out += _fp8_linear(f"{p}mlp.experts.{e}.{proj}", inter, h)
            out += _fp8_linear(f"{p}mlp.experts.{e}.down_proj", h, inter)
        shared = inter * c["n_shared_experts"]
        for proj in ("gate_proj", "up_proj"):
            out += _fp8_linear(f"{p}mlp.shared_experts.{proj}", shared, h)
        out += _fp8_linear(f"{p}mlp.shared_experts.down_proj", h, shared)
        out += [
            Tensor(p + "mlp.gate.weight", "BF16", (c["n_routed_experts"], h)),
            Tensor(p + "mlp.gate.e_score_correction_bias", "F32", (c["n_routed_experts"],)),
        ]
    out += [
        Tensor(p + "input_layernorm.weight", "BF16", (h,), "std"),
        Tensor(p + "post_attention_layernorm.weight", "BF16", (h,), "std"),
    ]
    return out


def deepseek_v3(scale: int = 1) -> Layout:
    """The DeepSeek-V3 layout; `scale` k > 1 stacks k x 61 layers into 160 k trunk shards (the
    same layer, dtypes and MTP module, k times the tensors: the scaling curve of issue 29)."""
    c = dict(DEEPSEEK_CONFIG, num_hidden_layers=61 * scale)
    h, v, n = c["hidden_size"], c["vocab_size"], c["num_hidden_layers"]
    trunk = [Tensor("model.embed_tokens.weight", "BF16", (v, h))]
    for i in range(n):
        trunk += _deepseek_layer(i, c)
    trunk += [
        Tensor("model.norm.weight", "BF16", (h,), "std"),
        Tensor("lm_head.weight", "BF16", (v, h)),
    ]
    # MTP module k=0 stored as layer 61 (README_WEIGHTS.md: "MTP Module's layer ID is 61").
    p = f"model.layers.{n}."
    mtp = _deepseek_layer(n, c) + [
        Tensor(p + "embed_tokens.weight", "BF16", (v, h)),
        Tensor(p + "enorm.weight", "BF16", (h,), "std"),
        Tensor(p + "hnorm.weight", "BF16", (h,), "std"),
        Tensor(p + "eh_proj.weight", "BF16", (h, 2 * h)),
        Tensor(p + "shared_head.norm.weight", "BF16", (h,), "std"),
        Tensor(p + "shared_head.head.weight", "BF16", (v, h)),
    ]
    # The released split: the embedding and layers 0-2 open shard 1, model.norm and lm_head sit in
    # shard 160, the MTP layer 61 fills shards 161-163 (its embed/head/eh_proj/norms in 163).
    shards = _split_near(trunk, 160 * scale) + split(mtp, 3)
    names = [f"model-{k:05d}-of-{len(shards):06d}.safetensors" for k in range(1, len(shards) + 1)]
    return Layout(
        "deepseek-v3" if scale == 1 else f"deepseek-v3-x{scale}",
        c,
        shards,
        names,
        {"format": "pt"},
        "DeepSeek-V3 671B + MTP; names/shapes/dtypes as the released checkpoint; shard split: "
        "next-fit into 160 trunk + 3 MTP shards (the released boundaries are not reproduced)",
    )


# ---------------------------------------------------------------------------------------------
# Llama-3-70B (meta-llama/Meta-Llama-3-70B config.json; HF save_pretrained, 30 shards)

LLAMA70_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "hidden_act": "silu",
    "hidden_size": 8192,
    "initializer_range": 0.02,
    "intermediate_size": 28672,
    "max_position_embeddings": 8192,
    "model_type": "llama",
    "num_attention_heads": 64,
    "num_hidden_layers": 80,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.40.0.dev0",
    "vocab_size": 128256,
}


def _llama_tensors(c: dict, dtype: str = "BF16") -> list[Tensor]:
    h, inter, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    hd = h // c["num_attention_heads"]
    kv = c["num_key_value_heads"] * hd
    out = [Tensor("model.embed_tokens.weight", dtype, (v, h))]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [
            Tensor(p + "self_attn.q_proj.weight", dtype, (h, h)),
            Tensor(p + "self_attn.k_proj.weight", dtype, (kv, h)),
            Tensor(p + "self_attn.v_proj.weight", dtype, (kv, h)),
            Tensor(p + "self_attn.o_proj.weight", dtype, (h, h)),
            Tensor(p + "mlp.gate_proj.weight", dtype, (inter, h)),
            Tensor(p + "mlp.up_proj.weight", dtype, (inter, h)),
            Tensor(p + "mlp.down_proj.weight", dtype, (h, inter)),
            Tensor(p + "input_layernorm.weight", dtype, (h,), "std"),
            Tensor(p + "post_attention_layernorm.weight", dtype, (h,), "std"),
        ]
    out.append(Tensor("model.norm.weight", dtype, (h,), "std"))
    if not c.get("tie_word_embeddings"):
        out.append(Tensor("lm_head.weight", dtype, (v, h)))
    return out


def llama3_70b() -> Layout:
    shards = split(_llama_tensors(LLAMA70_CONFIG), 30)
    names = [f"model-{k:05d}-of-{len(shards):05d}.safetensors" for k in range(1, len(shards) + 1)]
    return Layout(
        "llama-3-70b",
        LLAMA70_CONFIG,
        shards,
        names,
        {"format": "pt"},
        "Llama-3-70B; HF save_pretrained module order, next-fit into 30 shards",
    )


# ---------------------------------------------------------------------------------------------
# Qwen3-Next-80B-A3B (Qwen/Qwen3-Next-80B-A3B-Instruct config.json; 41 shards)

QWEN3_NEXT_CONFIG = {
    "architectures": ["Qwen3NextForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "decoder_sparse_step": 1,
    "eos_token_id": 151645,
    "full_attention_interval": 4,
    "head_dim": 256,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 5120,
    "linear_conv_kernel_dim": 4,
    "linear_key_head_dim": 128,
    "linear_num_key_heads": 16,
    "linear_num_value_heads": 32,
    "linear_value_head_dim": 128,
    "max_position_embeddings": 262144,
    "mlp_only_layers": [],
    "model_type": "qwen3_next",
    "moe_intermediate_size": 512,
    "norm_topk_prob": True,
    "num_attention_heads": 16,
    "num_experts": 512,
    "num_experts_per_tok": 10,
    "num_hidden_layers": 48,
    "num_key_value_heads": 2,
    "output_router_logits": False,
    "partial_rotary_factor": 0.25,
    "rms_norm_eps": 1e-06,
    "rope_theta": 10000000,
    "router_aux_loss_coef": 0.001,
    "shared_expert_intermediate_size": 512,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.57.0.dev0",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
}


def _qwen3_next_block(p: str, c: dict, full: bool) -> list[Tensor]:
    h, bf = c["hidden_size"], "BF16"
    out: list[Tensor] = []
    if full:
        hd, nh, nkv = c["head_dim"], c["num_attention_heads"], c["num_key_value_heads"]
        out += [
            # gated attention: q_proj emits the query and its output gate
            Tensor(p + "self_attn.q_proj.weight", bf, (2 * nh * hd, h)),
            Tensor(p + "self_attn.k_proj.weight", bf, (nkv * hd, h)),
            Tensor(p + "self_attn.v_proj.weight", bf, (nkv * hd, h)),
            Tensor(p + "self_attn.o_proj.weight", bf, (h, nh * hd)),
            Tensor(p + "self_attn.q_norm.weight", bf, (hd,), "offset"),
            Tensor(p + "self_attn.k_norm.weight", bf, (hd,), "offset"),
        ]
    else:
        kd = c["linear_num_key_heads"] * c["linear_key_head_dim"]
        vd = c["linear_num_value_heads"] * c["linear_value_head_dim"]
        nv = c["linear_num_value_heads"]
        out += [
            Tensor(p + "linear_attn.A_log", bf, (nv,)),
            Tensor(
                p + "linear_attn.conv1d.weight", bf, (2 * kd + vd, 1, c["linear_conv_kernel_dim"])
            ),
            Tensor(p + "linear_attn.dt_bias", bf, (nv,)),
            Tensor(p + "linear_attn.in_proj_ba.weight", bf, (2 * nv, h)),
            Tensor(p + "linear_attn.in_proj_qkvz.weight", bf, (2 * kd + 2 * vd, h)),
            # gated RMSNorm on the DeltaNet output: standard (ones-init), not offset
            Tensor(p + "linear_attn.norm.weight", bf, (c["linear_value_head_dim"],), "std"),
            Tensor(p + "linear_attn.out_proj.weight", bf, (h, vd)),
        ]
    inter, ne = c["moe_intermediate_size"], c["num_experts"]
    out.append(Tensor(p + "mlp.gate.weight", bf, (ne, h)))
    for e in range(ne):
        out += [
            Tensor(f"{p}mlp.experts.{e}.gate_proj.weight", bf, (inter, h)),
            Tensor(f"{p}mlp.experts.{e}.up_proj.weight", bf, (inter, h)),
            Tensor(f"{p}mlp.experts.{e}.down_proj.weight", bf, (h, inter)),
        ]
    si = c["shared_expert_intermediate_size"]
    out += [
        Tensor(p + "mlp.shared_expert.gate_proj.weight", bf, (si, h)),
        Tensor(p + "mlp.shared_expert.up_proj.weight", bf, (si, h)),
        Tensor(p + "mlp.shared_expert.down_proj.weight", bf, (h, si)),
        Tensor(p + "mlp.shared_expert_gate.weight", bf, (1, h)),
        Tensor(p + "input_layernorm.weight", bf, (h,), "offset"),
        Tensor(p + "post_attention_layernorm.weight", bf, (h,), "offset"),
    ]
    return out


def qwen3_next_80b() -> Layout:
    c = QWEN3_NEXT_CONFIG
    h, v, every = c["hidden_size"], c["vocab_size"], c["full_attention_interval"]
    tensors = [Tensor("model.embed_tokens.weight", "BF16", (v, h))]
    for i in range(c["num_hidden_layers"]):
        tensors += _qwen3_next_block(f"model.layers.{i}.", c, full=(i + 1) % every == 0)
    tensors += [
        Tensor("model.norm.weight", "BF16", (h,), "offset"),
        Tensor("lm_head.weight", "BF16", (v, h)),
        # MTP, top level (vllm qwen3_next_mtp.py): fc [H, 2H], two input norms, one full block, norm
        Tensor("mtp.fc.weight", "BF16", (h, 2 * h)),
        Tensor("mtp.pre_fc_norm_embedding.weight", "BF16", (h,), "offset"),
        Tensor("mtp.pre_fc_norm_hidden.weight", "BF16", (h,), "offset"),
        *_qwen3_next_block("mtp.layers.0.", c, full=True),
        Tensor("mtp.norm.weight", "BF16", (h,), "offset"),
    ]
    shards = split(tensors, 41)
    names = [f"model-{k:05d}-of-{len(shards):05d}.safetensors" for k in range(1, len(shards) + 1)]
    return Layout(
        "qwen3-next-80b-a3b",
        c,
        shards,
        names,
        {"format": "pt"},
        "Qwen3-Next-80B-A3B; offset norms stored as w = g - 1 (near 0), linear_attn.norm standard; "
        "next-fit into 41 shards",
    )


LAYOUTS = {
    "deepseek-v3": deepseek_v3,
    "llama-3-70b": llama3_70b,
    "qwen3-next-80b-a3b": qwen3_next_80b,
}
SCALED: dict[str, Callable[[], Layout]] = {
    "deepseek-v3-x4": lambda: deepseek_v3(4),  # 640 + 3 shards, 368k tensors, ~60 MB on disk
    "deepseek-v3-x16": lambda: deepseek_v3(16),  # 2,559 + 3 shards, 1.5M tensors, ~0.4 GB
}
"""Built only when named (`python benchmarks/replicas.py deepseek-v3-x16`): the scaling curve."""


# ---------------------------------------------------------------------------------------------
# Writing


def _write_shard(
    path: Path,
    tensors: Sequence[Tensor],
    metadata: dict[str, str] | None,
    fill: dict[str, bytes] | None = None,
    seed: int = 0,
) -> dict:
    """Write one sparse shard: header + norm bytes; everything else is a hole."""
    head, offsets = header_bytes(tensors, metadata)
    base = len(head)
    size = base + sum(t.nbytes for t in tensors)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.pwrite(fd, head, 0)
        normb = 0
        for t in tensors:
            if t.norm is None:
                continue
            data = fill[t.name] if fill is not None else norm_bytes(t, seed)
            assert len(data) == t.nbytes
            os.pwrite(fd, data, base + offsets[t.name][0])
            normb += len(data)
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    return {
        "file": path.name,
        "size": size,
        "header_bytes": base,
        "norm_bytes": normb,
        "norms": sum(t.norm is not None for t in tensors),
        "tensors": len(tensors),
    }


def _spec_hash(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _manifest_ok(directory: Path, key: str) -> bool:
    try:
        m = json.loads((directory / "replica.json").read_text())
    except (OSError, ValueError):
        return False
    return m.get("key") == key and all((directory / s["file"]).is_file() for s in m["shards"])


def build(name: str, root: Path = REPLICAS, force: bool = False) -> Path:
    """Build replica `name` under `root` (skipped when an identical one is there)."""
    layout = (LAYOUTS | SCALED)[name]()
    directory = root / name
    key = _spec_hash(
        [FORMAT_VERSION, layout.config, layout.shard_names]
        + [[(t.name, t.dtype, t.shape, t.norm) for t in s] for s in layout.shards]
    )
    if not force and _manifest_ok(directory, key):
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.safetensors"):
        stale.unlink()
    shards = []
    weight_map: dict[str, str] = {}
    for fname, tensors in zip(layout.shard_names, layout.shards, strict=True):
        shards.append(_write_shard(directory / fname, tensors, layout.metadata))
        weight_map.update({t.name: fname for t in tensors})
    total = sum(t.nbytes for s in layout.shards for t in s)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    # HF save_pretrained: json.dumps(index, indent=2, sort_keys=True) + "\n"
    (directory / "model.safetensors.index.json").write_text(
        json.dumps(index, indent=2, sort_keys=True) + "\n"
    )
    (directory / "config.json").write_text(json.dumps(layout.config, indent=2) + "\n")
    manifest = _summarize(layout.name, key, layout.notes, shards, directory)
    (directory / "replica.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return directory


def _summarize(name: str, key: str, notes: str, shards: list[dict], directory: Path) -> dict:
    disk = sum(os.stat(directory / s["file"]).st_blocks * 512 for s in shards)
    return {
        "name": name,
        "key": key,
        "notes": notes,
        "shards_count": len(shards),
        "tensors": sum(s["tensors"] for s in shards),
        "norms": sum(s["norms"] for s in shards),
        "logical_bytes": sum(s["size"] for s in shards),
        "header_bytes": sum(s["header_bytes"] for s in shards),
        "norm_bytes": sum(s["norm_bytes"] for s in shards),
        "disk_bytes": disk,
        "index_bytes": (directory / "model.safetensors.index.json").stat().st_size
        if (directory / "model.safetensors.index.json").exists()
        else 0,
        "config_bytes": (directory / "config.json").stat().st_size,
        "shards": shards,
    }


# ---------------------------------------------------------------------------------------------
# Series: a 1B-class Llama-like run, one single-shard checkpoint per save

SERIES_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "head_dim": 64,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 8192,
    "max_position_embeddings": 131072,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 16,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "vocab_size": 128256,
}
SERIES_STEP = 500


def series_gains(name: str, dim: int, step: int, last_step: int) -> np.ndarray:
    """Effective gain at `step`: exactly ones at step 0, drifting smoothly toward a per-norm
    target shape (ratio 0.3–1.5), plus a little step-to-step noise."""
    if step == 0:
        return np.ones(dim)
    target = gain(name, dim, _ratio_for(name))
    progress = 1.0 - math.exp(-3.0 * step / max(last_step, 1))
    rng = np.random.default_rng(zlib.crc32(name.encode()) ^ step)
    g = 1.0 + (target - 1.0) * progress
    return g * (1.0 + rng.normal(0.0, 0.002, dim))


def build_series(count: int = 100, root: Path = REPLICAS, force: bool = False) -> Path:
    directory = root / "series-llama-1b"
    tensors = _llama_tensors(SERIES_CONFIG)
    key = _spec_hash([FORMAT_VERSION, "series", count, SERIES_CONFIG, SERIES_STEP])
    marker = directory / "series.json"
    if not force and marker.is_file():
        try:
            if json.loads(marker.read_text()).get("key") == key:
                return directory
        except ValueError:
            pass
    directory.mkdir(parents=True, exist_ok=True)
    steps = [k * SERIES_STEP for k in range(count)]
    last = steps[-1]
    shard_stats = []
    for step in steps:
        ckpt = directory / f"checkpoint-{step}"
        ckpt.mkdir(exist_ok=True)
        fill = {
            t.name: _bf16(series_gains(t.name, math.prod(t.shape), step, last))
            for t in tensors
            if t.norm is not None
        }
        shard_stats.append(
            _write_shard(ckpt / "model.safetensors", tensors, {"format": "pt"}, fill)
        )
        (ckpt / "config.json").write_text(json.dumps(SERIES_CONFIG, indent=2) + "\n")
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}) + "\n")
    marker.write_text(
        json.dumps(
            {
                "key": key,
                "checkpoints": count,
                "steps": steps,
                "per_checkpoint": shard_stats[0] | {"file": "model.safetensors"},
            },
            indent=1,
        )
        + "\n"
    )
    return directory


def build_linked_series(name: str = "deepseek-v3", count: int = 6, root: Path = REPLICAS) -> Path:
    """`count` checkpoint folders that hard-link one replica's files (no extra disk): a series
    whose every checkpoint costs a full large-model scan, to measure a series on both cores."""
    source = build(name, root)
    directory = root / f"series-{name}-x{count}"
    files = [p for p in sorted(source.iterdir()) if p.is_file() and p.name != "replica.json"]
    for k in range(count):
        ckpt = directory / f"checkpoint-{k * 1000}"
        ckpt.mkdir(parents=True, exist_ok=True)
        for f in files:
            target = ckpt / f.name
            if target.exists() and os.path.samefile(f, target):
                continue
            if target.exists():
                target.unlink()
            os.link(f, target)
        for stale in ckpt.iterdir():
            if stale.name not in {f.name for f in files}:
                stale.unlink()
    return directory


def series_subset(series: Path, count: int) -> list[Path]:
    """The first `count` checkpoints of the series, in step order."""
    ckpts = sorted(series.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return ckpts[:count]


# ---------------------------------------------------------------------------------------------
# Verification


def check(directory: Path) -> Iterator[str]:
    """Open replica shards with safetensors.safe_open (keys, shapes, norm bytes round-trip), then
    scan the same shard files with `normscope scan` and compare the norm count."""
    import subprocess

    import torch
    from safetensors import safe_open

    manifest = json.loads((directory / "replica.json").read_text())
    layout = (LAYOUTS | SCALED)[manifest["name"]]()
    # the shard with the most norms, and the last one (DeepSeek-V3: the MTP layer's norms)
    most = max(
        range(len(layout.shards)), key=lambda j: sum(t.norm is not None for t in layout.shards[j])
    )
    for k in sorted({most, len(layout.shards) - 1}):
        path = directory / layout.shard_names[k]
        expected = {t.name: t for t in layout.shards[k]}
        norms = [t for t in expected.values() if t.norm is not None]
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
            assert keys == set(expected), "key set differs"
            for name in keys:
                assert tuple(f.get_slice(name).get_shape()) == expected[name].shape, name
            for t in norms:
                got = f.get_tensor(t.name)
                want = torch.frombuffer(bytearray(norm_bytes(t)), dtype=torch.bfloat16)
                assert torch.equal(got.view(-1), want), t.name
        yield (
            f"safe_open {path.name}: {len(keys)} tensors, shapes ok, {len(norms)} norms round-trip"
        )
        exe = Path(sys.executable).parent / "normscope"
        p = subprocess.run(
            [
                str(exe) if exe.exists() else "normscope",
                "scan",
                str(path),
                "--format",
                "json",
                "-q",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert p.returncode == 0, p.stderr[-1000:]
        rep = json.loads(p.stdout)
        got_names = {n["name"] for n in rep["norms"]}
        assert got_names == {t.name for t in norms}, sorted(got_names ^ {t.name for t in norms})
        need = len(header_bytes(layout.shards[k], layout.metadata)[0]) + sum(
            t.nbytes for t in norms
        )
        assert rep["io"]["bytes_read"] == need, (rep["io"]["bytes_read"], need)
        yield (
            f"normscope scan {path.name}: {len(rep['norms'])} norms, bytes_read "
            f"{rep['io']['bytes_read']:,} = header + norm bytes"
        )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "names",
        nargs="*",
        help=f"{', '.join(LAYOUTS | SCALED)}, series (default: all but the scaled ones)",
    )
    ap.add_argument("--root", type=Path, default=REPLICAS)
    ap.add_argument("--force", action="store_true", help="rebuild even if up to date")
    ap.add_argument("--series-count", type=int, default=100)
    ap.add_argument("--check", action="store_true", help="verify after building")
    args = ap.parse_args(argv)
    names = args.names or [*LAYOUTS, "series"]
    selfcheck()
    for name in names:
        if name == "series":
            d = build_series(args.series_count, args.root, args.force)
            print(f"series: {d}")
            continue
        d = build(name, args.root, args.force)
        m = json.loads((d / "replica.json").read_text())
        print(
            f"{name}: {m['shards_count']} shards, {m['tensors']:,} tensors, {m['norms']} norms, "
            f"{m['logical_bytes'] / 1e9:.1f} GB logical, {m['disk_bytes'] / 1e6:.1f} MB on disk, "
            f"headers {m['header_bytes'] / 1e6:.2f} MB, norms {m['norm_bytes'] / 1e6:.3f} MB ({d})"
        )
        if args.check:
            for line in check(d):
                print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
