"""A source is parsed once into a typed spec and opened by its kind (issue 22): every kind, the
Hub URL a user pastes, `--revision` as a field, and the errors of sources that cannot apply."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import llama_config, llama_tensors, write_checkpoint, write_raw_safetensors

from normscope.enums import SourceKind
from normscope.errors import SourceError, UsageError
from normscope.sources import SourceSpec, open_checkpoint, parse_source
from normscope.sources.hub.spec import HubSpec, parse_hub_url


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_checkpoint(tmp_path / "llama", llama_tensors(), llama_config())


def test_local_kinds(tmp_path: Path, folder: Path) -> None:
    import gguf
    import torch

    assert parse_source(str(folder)) == SourceSpec(SourceKind.folder, str(folder), folder)
    shard = next(folder.glob("*.safetensors"))
    assert parse_source(shard).kind is SourceKind.safetensors  # a PathLike is a path
    assert parse_source(shard).path == shard

    torch_file = tmp_path / "pt" / "model.bin"
    torch_file.parent.mkdir()
    torch.save({"model.norm.weight": torch.ones(4)}, torch_file)
    assert parse_source(str(torch_file)).kind is SourceKind.torch
    assert parse_source(str(torch_file.parent)) == SourceSpec(
        SourceKind.torch, str(torch_file.parent), torch_file
    )  # a folder holding exactly one state dict

    gguf_file = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(str(gguf_file), "llama")
    writer.add_tensor("output_norm.weight", np.ones(4, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    spec = parse_source(str(gguf_file))
    assert (spec.kind, spec.path) == (SourceKind.gguf, gguf_file)


def test_a_dcp_save_by_its_folder_or_its_metadata(tmp_path: Path) -> None:
    import torch
    import torch.distributed.checkpoint as dcp

    save = tmp_path / "iter_0000010"
    with pytest.warns(UserWarning, match="single process"):
        dcp.save({"model.norm.weight": torch.ones(4)}, checkpoint_id=save, no_dist=True)
    assert parse_source(str(save)) == SourceSpec(SourceKind.dcp, str(save), save)
    by_metadata = parse_source(str(save / ".metadata"))
    assert (by_metadata.kind, by_metadata.path) == (SourceKind.dcp, save)


@pytest.mark.parametrize(
    ("text", "repo", "revision"),
    [
        ("org/name", "org/name", None),
        ("org/name@v1", "org/name", "v1"),
        ("hf://org/name@v1", "org/name", "v1"),
        ("hf://models/org/name", "org/name", None),
        ("https://huggingface.co/org/name", "org/name", None),
        ("https://huggingface.co/org/name/", "org/name", None),
        ("https://huggingface.co/org/name/tree/main", "org/name", "main"),
        ("https://huggingface.co/org/name/tree/refs%2Fpr%2F1", "org/name", "refs/pr/1"),
        ("https://hf.co/org/name/tree/stage1-step100", "org/name", "stage1-step100"),
    ],
)
def test_hub_sources(text: str, repo: str, revision: str | None) -> None:
    spec = parse_source(text)
    assert spec == SourceSpec(SourceKind.hub, text, hub=HubSpec(repo, revision))
    with_flag = parse_source(text, revision="v2") if revision is None else None
    if with_flag is not None:  # --revision is a field of the spec, never glued into its text
        assert with_flag.hub == HubSpec(repo, "v2") and with_flag.text == text


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://huggingface.co/datasets/org/name", "not datasets"),
        ("https://huggingface.co/spaces/org/name", "not spaces"),
        (
            "https://huggingface.co/org/name/blob/main/model.safetensors",
            "not a Hub model repo page",
        ),
        ("https://huggingface.co/org", "not a Hub model repo page"),
        ("https://huggingface.co/org/name/tree/main/sub", "not a Hub model repo page"),
    ],
)
def test_hub_urls_that_name_no_model_repo(url: str, says: str) -> None:
    with pytest.raises(SourceError, match=says):
        parse_source(url)


def test_other_urls_are_not_hub_urls() -> None:
    assert parse_hub_url("https://example.com/org/name") is None
    assert parse_source("s3://bucket/run/ckpt").kind is SourceKind.object_store
    assert parse_source("file:///tmp/ckpt").kind is SourceKind.object_store


def test_revision_applies_to_hub_sources_only(folder: Path) -> None:
    with pytest.raises(UsageError, match="is a local path") as raised:
        parse_source(str(folder), revision="v1")
    assert raised.value.param == "--revision"
    with pytest.raises(UsageError, match="names revision 'v1' but --revision is 'v2'"):
        parse_source("org/name@v1", revision="v2")
    assert parse_source("org/name@v1", revision="v1").hub == HubSpec("org/name", "v1")
    with pytest.raises(UsageError, match="is not one"):
        parse_source("no-such-thing", revision="v1")
    with pytest.raises(UsageError, match="--revision is empty"):
        parse_source("org/name", revision=" ")
    with pytest.raises(UsageError, match="Hub repos"):
        parse_source("s3://bucket/ckpt", revision="v1")


def test_errors_of_paths_that_are_no_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SourceError, match="no such file or directory"):
        parse_source(tmp_path / "missing")  # a PathLike never reads as a repo id
    with pytest.raises(SourceError, match="no such file or directory"):
        parse_source(str(tmp_path / "missing"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org").mkdir()
    with pytest.raises(SourceError, match="'org/' is a local folder"):
        parse_source("org/nam")  # a typo of a local path, or a repo? Asked, not guessed
    onnx = write_raw_safetensors(tmp_path / "model.onnx", b"{}")
    onnx.write_bytes(b"\x08\x07")
    with pytest.raises(SourceError, match="ONNX file, not safetensors"):
        parse_source(onnx)


def test_an_in_memory_source_is_its_own_kind() -> None:
    """(Was a placeholder refusal until #27: a state dict or module is now read in memory,
    tests/test_memory.py.)"""
    import torch

    from normscope.sources.memory import InMemory

    state = {"model.norm.weight": torch.ones(4)}
    spec = parse_source(state)
    assert spec.kind is SourceKind.memory and isinstance(spec.obj, InMemory)
    assert spec.obj.obj is state and spec.text == "memory:dict"
    assert parse_source(torch.nn.LayerNorm(4)).kind is SourceKind.memory
    assert list(open_checkpoint(state).tensors) == ["model.norm.weight"]  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="not a int"):
        parse_source(3)


def test_a_spec_opens_like_its_text(folder: Path) -> None:
    by_text = open_checkpoint(str(folder))
    by_spec = open_checkpoint(parse_source(str(folder)))
    assert by_spec.tensors == by_text.tensors and by_spec.source == by_text.source == str(folder)
