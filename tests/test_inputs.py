"""Inputs recognised (issue 14): local paths never go to the Hub, ambiguous `a/b` is an error
naming both readings, other formats by their magic bytes, PyTorch state dicts through torch's
weights-only loader."""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import REPO_ROOT
from typer.testing import CliRunner

from normscope.cli import app
from normscope.errors import SourceError
from normscope.sources import open_checkpoint
from normscope.sources.hub.spec import looks_like_hub

runner = CliRunner()
TRAINED = REPO_ROOT / "fixtures" / "llama-trained"


@pytest.mark.parametrize(
    ("spec", "hub"),
    [
        ("org/name", True),
        ("hf://org/name@main", True),
        ("./org/name", False),
        ("../org/name", False),
        ("/org/name", False),
        ("~/org/name", False),
        ("org/name.safetensors", False),
    ],
)
def test_looks_like_hub(spec: str, hub: bool) -> None:
    assert looks_like_hub(spec) is hub


def never_the_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    from normscope.sources import hub

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("sent to the Hub")

    monkeypatch.setattr(hub, "open_hub_checkpoint", boom)


def test_typo_next_to_a_local_folder_names_both_readings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    never_the_hub(monkeypatch)
    (tmp_path / "fixtures").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SourceError) as err:
        open_checkpoint("fixtures/llama-trainde")
    assert "no such path (fixtures/llama-trainde)" in err.value.message
    assert "hf://fixtures/llama-trainde" in err.value.message
    with pytest.raises(SourceError, match="no such file or directory"):
        open_checkpoint("./fixtures/llama-trainde")


def test_hub_id_that_is_a_local_folder_says_which_it_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    never_the_hub(monkeypatch)
    shutil.copytree(TRAINED, tmp_path / "org" / "llama")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert open_checkpoint("org/llama").warnings == []  # only a folder: nothing to say
    (tmp_path / "hub" / "models--org--llama").mkdir(parents=True)
    checkpoint = open_checkpoint("org/llama")  # the HF cache holds the repo too: say which
    assert any("read the local folder" in w and "hf://org/llama" in w for w in checkpoint.warnings)


def test_npz_onnx_get_a_conversion_hint(tmp_path: Path) -> None:
    np.savez(tmp_path / "m.npz", a=np.ones(3))
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07\x12\x04test" + bytes(16))
    for name, kind, tool in (
        ("m.npz", "NumPy .npz", "np.load"),
        ("m.onnx", "ONNX", "onnx.load"),
    ):
        with pytest.raises(SourceError) as err:
            open_checkpoint(str(tmp_path / name))
        assert kind in err.value.message and "absurdly" not in err.value.message
        assert err.value.hint is not None and tool in err.value.hint


def test_a_gguf_without_keys_is_read_and_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(64))
    with pytest.raises(SourceError, match=r"GGUF file without general\.architecture"):
        open_checkpoint(str(tmp_path / "m.gguf"))


def test_folder_of_gguf_files_gets_a_hint(tmp_path: Path) -> None:
    (tmp_path / "a.gguf").write_bytes(b"GGUF" + bytes(8))
    (tmp_path / "b.gguf").write_bytes(b"GGUF" + bytes(8))
    with pytest.raises(SourceError) as err:
        open_checkpoint(str(tmp_path))
    assert err.value.hint is not None and "several .gguf" in err.value.hint


torch = pytest.importorskip("torch")


def save_state_dict(path: Path, wrap: bool = False) -> None:
    from safetensors.torch import load_file

    state = load_file(TRAINED / "model.safetensors")
    torch.save({"model": state, "step": 3} if wrap else state, path)
    shutil.copy(TRAINED / "config.json", path.parent)


@pytest.mark.parametrize("wrap", [False, True], ids=["plain", "wrapped"])
def test_torch_state_dict_scans_like_the_safetensors(tmp_path: Path, wrap: bool) -> None:
    from normscope import scan

    save_state_dict(tmp_path / "pytorch_model.bin", wrap)
    got = scan(str(tmp_path / "pytorch_model.bin"))
    want = scan(str(TRAINED))
    assert [(n.name, n.ratio, n.band) for n in got.norms] == [
        (n.name, n.ratio, n.band) for n in want.norms
    ]
    # A folder with one state dict file opens it.
    assert [n.ratio for n in scan(str(tmp_path)).norms] == [n.ratio for n in want.norms]


def test_torch_load_is_weights_only_and_mapped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_state_dict(tmp_path / "model.pt")
    calls: list[dict[str, Any]] = []
    real = torch.load

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    open_checkpoint(str(tmp_path / "model.pt"))
    assert calls and all(c["weights_only"] is True and c["mmap"] is True for c in calls)


def test_a_pickle_of_objects_is_refused(tmp_path: Path) -> None:
    import argparse

    torch.save({"thing": argparse.Namespace(x=1)}, tmp_path / "evil.pt")
    with pytest.raises(SourceError, match="weights_only=True"):
        open_checkpoint(str(tmp_path / "evil.pt"))


def test_without_torch_the_error_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_state_dict(tmp_path / "model.pt")
    real = importlib.import_module

    def no_torch(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "torch":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", no_torch)
    result = runner.invoke(app, ["scan", str(tmp_path / "model.pt")])
    assert result.exit_code == 2
    assert "normscope[torch]" in result.stderr
