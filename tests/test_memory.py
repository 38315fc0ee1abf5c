"""`normscope.scan/diff/check` of a state dict or module in memory (`sources/memory.py`).

The model is built by transformers (a two-layer Llama at SmolLM2-135M's width) and carries the
real trained norm gains of SmolLM2-135M; the same weights saved by `save_pretrained` (safetensors)
and scanned from disk are the independent reference, compared field by field.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
import transformers
from realmodels import smollm2_norms as read_smollm2_norms

import normscope
from normscope.errors import ArchError, NormscopeError, SourceError, UsageError
from normscope.sources.memory import InMemory, open_memory_checkpoint

smollm2_norms = functools.cache(read_smollm2_norms)


def tiny_llama(layers: int = 2) -> transformers.LlamaForCausalLM:
    """A Llama built by transformers at SmolLM2's width, its norms SmolLM2-135M's own."""
    norms, meta = smollm2_norms()
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=meta["embedding_length"], intermediate_size=64,
        num_hidden_layers=layers, num_attention_heads=meta["attention.head_count"],
        num_key_value_heads=meta["attention.head_count_kv"], rms_norm_eps=1e-5,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    state = model.state_dict()
    with torch.no_grad():
        for name, value in norms.items():
            if name in state:
                state[name].copy_(torch.from_numpy(value))
    return model


@pytest.fixture(scope="module")
def model() -> transformers.LlamaForCausalLM:
    return tiny_llama()


@pytest.fixture(scope="module")
def saved(model: transformers.LlamaForCausalLM, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("saved")
    model.save_pretrained(folder)  # safetensors + config.json, as transformers writes them
    assert (folder / "model.safetensors").is_file()
    return folder


def _same_report(got: normscope.Report, want: normscope.Report) -> None:
    """Every field but where the weights came from and what reading them cost."""
    for f in dataclasses.fields(want):
        if f.name not in ("source", "io", "warnings"):
            assert getattr(got, f.name) == getattr(want, f.name), f.name
    assert [w.replace(got.source, "") for w in got.warnings] == [
        w.replace(want.source, "") for w in want.warnings
    ]


def test_module_report_equals_the_saved_checkpoint(model: Any, saved: Path) -> None:
    want = normscope.scan(saved)
    got = normscope.scan(model)
    assert got.source == "memory:LlamaForCausalLM"
    assert (
        len(got.norms) == 5 and got.model.num_layers == 2 and got.model.family == want.model.family
    )
    _same_report(got, want)
    # the norms' numbers, independently: ratio = ||g|| / sqrt(d) of the real SmolLM2 gains
    norms, _ = smollm2_norms()
    for n in got.norms:
        g = norms[n.name].astype(np.float64)
        assert n.ratio == pytest.approx(np.linalg.norm(g) / np.sqrt(g.size), rel=1e-12)


def test_state_dict_with_config_equals_the_saved_checkpoint(model: Any, saved: Path) -> None:
    want = normscope.scan(saved)
    _same_report(normscope.scan(model.state_dict(), model_config=model.config), want)
    as_dict = model.config.to_dict() | {"architectures": ["LlamaForCausalLM"]}
    _same_report(normscope.scan(model.state_dict(), model_config=as_dict), want)
    numpy_sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    _same_report(normscope.scan(numpy_sd, model_config=as_dict), want)


def test_diff_and_check_take_a_model(model: Any, saved: Path) -> None:
    d = normscope.diff(saved, model)
    assert len(d.norms) == 5 and all(
        r.rel_change == 0.0 and r.cosine == pytest.approx(1.0) for r in d.norms
    )
    assert d.b == "memory:LlamaForCausalLM"
    want = normscope.check(saved, baseline=saved)
    got = normscope.check(model, baseline=saved)
    assert got.verdict == want.verdict
    assert [dataclasses.replace(f) for f in got.findings] == list(want.findings)


class Tracked(torch.Tensor):
    """A tensor that records every torch function applied to it (by the state dict's name)."""

    calls: ClassVar[dict[int, list[str]]] = {}

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        for a in args:
            if isinstance(a, Tracked):
                cls.calls.setdefault(id(a), []).append(getattr(func, "__name__", str(func)))
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_only_the_norm_vectors_leave_their_tensors(model: Any, device: str) -> None:
    """Every tensor's data is touched (reshape, copy, view, numpy) only for the norms; the other
    tensors are asked their shape, dtype, size and device, nothing else. On CUDA the norms are
    the only tensors copied to the host (`.cpu()` called on them alone)."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    tracked = {k: v.detach().to(device).as_subclass(Tracked) for k, v in model.state_dict().items()}
    names = {id(v): k for k, v in tracked.items()}
    Tracked.calls.clear()
    report = normscope.scan(tracked, model_config=model.config)
    norm_names = {n.name for n in report.norms}
    metadata = {"__get__", "dim", "size", "numel", "element_size"}
    touched = {names[i] for i, calls in Tracked.calls.items() if set(calls) - metadata}
    assert touched == norm_names
    assert report.io.bytes_read == sum(tracked[n].nbytes for n in norm_names) == 4 * 576 * 5
    assert report.io.bytes_total == sum(v.nbytes for v in tracked.values())
    copied = {names[i] for i, calls in Tracked.calls.items() if "cpu" in calls}
    assert copied == (norm_names if device == "cuda" else set())
    if device == "cuda":
        _same_report(report, normscope.scan(model))


def test_bf16_tensors_decode_as_saved(model: Any, tmp_path: Path) -> None:
    half = tiny_llama().to(torch.bfloat16)
    half.save_pretrained(tmp_path)
    _same_report(normscope.scan(half), normscope.scan(tmp_path))


@pytest.mark.parametrize(
    ("state", "error", "words"),
    [
        (
            {"model.norm.weight": torch.ones(8), "step": 3},
            SourceError,
            "'step' is a int, not a tensor",
        ),
        ({"model.norm.weight": [1.0, 1.0]}, SourceError, "is a list, not a tensor"),
        (
            {
                "model.norm.weight": torch.ones(8),
                "model.layers.0.input_layernorm.weight": torch.ones(8, device="meta"),
            },
            SourceError,
            "on 2 devices",
        ),
        ({"lm_head.weight": torch.ones(4, 4)}, ArchError, "no norm tensors found among 1"),
        ({}, SourceError, "no tensors in the state dict"),
    ],
)
def test_bad_state_dicts_are_one_clear_error(state: dict, error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        normscope.scan(state)


def test_module_without_norms_is_an_arch_error() -> None:
    with pytest.raises(ArchError) as info:
        normscope.scan(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()))
    assert isinstance(info.value, NormscopeError)
    assert info.value.message == "no norm tensors found among 2 tensors"


def test_usage_errors() -> None:
    with pytest.raises(UsageError, match="not a int"):
        normscope.scan(3)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="revision applies to Hub repos"):
        normscope.scan({"model.norm.weight": np.ones(4)}, revision="main")
    with pytest.raises(UsageError, match="model_config applies"):
        normscope.scan("some/path", model_config={})
    with pytest.raises(SourceError, match="the config is a int"):
        normscope.scan({"model.norm.weight": np.ones(4)}, model_config=5)


def test_the_named_source_and_numpy_dtypes() -> None:
    cp = open_memory_checkpoint(
        InMemory({"a": np.ones(3, np.float16), "b": np.ones(2, ">f4")}, name="step-7")
    )
    assert cp.source == "step-7"
    assert {k: r.dtype for k, r in cp.tensors.items()} == {"a": "F16"}  # big-endian: not read


def readme_python(marker: str) -> str:
    """The README's Python block that contains `marker`."""
    import re

    from conftest import REPO_ROOT

    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL) if marker in b]
    return block


def test_the_readme_memory_example_runs(capsys: pytest.CaptureFixture) -> None:
    scope: dict[str, Any] = {}
    exec(compile(readme_python("normscope.scan(model)"), "README.md (memory)", "exec"), scope)
    assert capsys.readouterr().out == "memory:LlamaForCausalLM 5 pass\n"
    _same_report(scope["same"], scope["report"])
    assert scope["tiny"].norms[0].ratio == 1.0


def test_a_sharded_dtensor_is_refused_before_any_collective(tmp_path: Path) -> None:
    """A real DTensor on a one-process gloo group (FSDP2's parameters are such)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard

    mine = not dist.is_initialized()  # another test may have left this process its group
    if mine:
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0,
                                world_size=1)  # fmt: skip
    try:
        mesh = init_device_mesh("cpu", (1,))
        weight = DTensor.from_local(torch.ones(8), mesh, [Shard(0)])
        with pytest.raises(SourceError, match=r"'model\.norm\.weight' is a DTensor"):
            normscope.scan({"model.norm.weight": weight})
    finally:
        if mine:
            dist.destroy_process_group()


def test_a_span_inside_a_tensor_copies_only_its_rows() -> None:
    """`fold` reads matrices by row blocks (`Checkpoint.read_span`): the bytes are the rows'."""
    matrix = torch.arange(24, dtype=torch.bfloat16).reshape(6, 4)
    cp = open_memory_checkpoint(InMemory({"a": torch.ones(3), "w": matrix}))
    ref = cp.tensors["w"]
    whole = matrix.view(torch.int16).numpy().tobytes()
    assert cp.read_span(ref, 8, 24) == whole[8:24]  # rows 1-2
    assert cp.read_span(ref, 3, 5) == whole[3:5]  # across an element boundary
    assert cp.read_span(ref, 0, ref.nbytes) == whole
    numpy_cp = open_memory_checkpoint(InMemory({"w": matrix.float().numpy()}))
    assert (
        numpy_cp.read_span(numpy_cp.tensors["w"], 16, 32) == matrix.float().numpy().tobytes()[16:32]
    )


def test_a_modules_extra_state_is_no_weight() -> None:
    """`get_extra_state()` (TransformerEngine, quantizers) puts any object in the state dict:
    skipped for a module; in a state dict given as such, a value that is no tensor is refused."""

    class WithExtra(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = torch.nn.LayerNorm(8)

        def get_extra_state(self) -> Any:
            return {"fp8_meta": "scales"}

        def set_extra_state(self, state: Any) -> None:
            pass

    module = WithExtra()
    assert "_extra_state" in module.state_dict()
    report = normscope.scan(module, model_config={"model_type": "llama"})
    assert [n.name for n in report.norms] == ["norm.weight"]
    with pytest.raises(SourceError, match=r"'_extra_state\.x' is a str"):
        # a nested mapping is joined with dots; its string leaf is no tensor
        normscope.scan(dict(module.state_dict()) | {"_extra_state": {"x": "y"}})
