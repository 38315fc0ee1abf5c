"""What the user named, parsed once: a typed `SourceSpec` that `open_checkpoint` dispatches on.

A source is read in one place, in this order: an in-memory state dict or module (the Python
API); a pasted Hub URL (`https://huggingface.co/org/name`, `.../tree/REV`); an object-store URL
(`s3://`, `gs://`, `az://`, `file://`); an existing local path (a `.metadata` file or a DCP
folder, a GGUF or torch file, a `.safetensors` file, a folder of shards — a local path always
wins); else a Hub repo id (`org/name[@rev]`, `hf://org/name`). `--revision` is a field of the
Hub spec, never text glued to the source and parsed back out.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from normscope.enums import SourceKind
from normscope.errors import SourceError, UsageError
from normscope.sources import formats

if TYPE_CHECKING:  # NOTE: the hub package is imported only for a source that is no local path
    from normscope.sources.hub.spec import HubSpec

Source = str | os.PathLike[str]
"""A source as a user names it: a path, a URL or a repo id."""


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """A parsed source: its kind and what that kind needs to be opened."""

    kind: SourceKind
    text: str
    """The source as named (a report's `source` for local kinds)."""
    path: Path | None = None
    """The local file or folder to open (local kinds; for DCP the folder of `.metadata`)."""
    hub: HubSpec | None = None
    """The repo and revision (kind hub)."""
    obj: object | None = field(default=None, compare=False, repr=False)
    """The `memory.InMemory` holding the state dict or module, and its config (kind memory)."""

    def __str__(self) -> str:
        return str(self.hub) if self.hub is not None else self.text


def parse_source(source: Source | SourceSpec | object, revision: str | None = None) -> SourceSpec:
    """Parse a source once. Raises SourceError for a path that does not exist and reads as no
    repo, or a file normscope does not read; UsageError for a `revision` that cannot apply."""
    if isinstance(source, SourceSpec):
        spec = source
    elif _in_memory(source):
        from normscope.sources.memory import InMemory

        held = source if isinstance(source, InMemory) else InMemory(source)
        spec = SourceSpec(SourceKind.memory, held.source, obj=held)
    elif isinstance(source, str | os.PathLike):
        if revision is not None and not revision.strip():
            raise UsageError("--revision is empty", param="--revision")
        spec = _parse_text(source, revision is not None)
    else:
        raise UsageError(
            f"a source is a path, a URL, a Hub repo id, a state dict or a module, not a "
            f"{type(source).__name__}",
            param="SOURCE",
        )
    return spec if revision is None else at_revision(spec, revision)


def at_revision(spec: SourceSpec, revision: str) -> SourceSpec:
    """The Hub spec at `revision`; UsageError naming `--revision` for any other kind, or for a
    spec that already names another revision."""
    if not revision.strip():
        raise UsageError("--revision is empty", param="--revision")
    if spec.hub is None:
        if spec.path is not None:
            message = f"--revision applies to Hub repos, but '{spec.text}' is a local path"
        else:
            message = f"--revision applies to Hub repos (org/name), and '{spec.text}' is not one"
        raise UsageError(message, param="--revision")
    if spec.hub.revision is not None and spec.hub.revision != revision:
        raise UsageError(
            f"'{spec.text}' names revision '{spec.hub.revision}' but --revision is '{revision}': "
            "give one",
            param="--revision",
        )
    return replace(spec, hub=replace(spec.hub, revision=revision))


def _in_memory(source: object) -> bool:
    """A state dict (a mapping of names to tensors), a module with `state_dict()`, or a
    `memory.InMemory` (either, with its config)."""
    if isinstance(source, Mapping) or callable(getattr(source, "state_dict", None)):
        return True
    if isinstance(source, str | os.PathLike):
        return False
    from normscope.sources.memory import InMemory

    return isinstance(source, InMemory)


def _parse_text(source: str | os.PathLike[str], revised: bool = False) -> SourceSpec:
    text = os.fspath(source)
    named = isinstance(source, str)  # a PathLike is a path, never a repo id or a URL
    if named and text.startswith(("https://", "http://")):
        from normscope.sources.hub.spec import parse_hub_url

        hub = parse_hub_url(text)
        if hub is not None:
            return SourceSpec(SourceKind.hub, text, hub=hub)
    if named and "://" in text:
        from normscope.sources import objstore  # stdlib only until an object is really read

        if objstore.looks_like_url(text):
            return SourceSpec(SourceKind.object_store, text)
    path = Path(os.path.expanduser(text))
    if path.exists():
        return _parse_local(path, text)
    hub = _parse_repo_id(text) if named else None
    if hub is not None:
        _refuse_ambiguous(text)
        return SourceSpec(SourceKind.hub, text, hub=hub)
    if revised:
        raise UsageError(
            f"--revision applies to Hub repos (org/name), and '{text}' is not one",
            param="--revision",
        )
    raise SourceError(f"no such file or directory ({path})")


def _parse_repo_id(text: str) -> HubSpec | None:
    """A text that is no existing path, read as a Hub repo id: the one call of the Hub spec
    parser per source. A text shaped like a local path (`./x`, `/x`, `~/x`, `C:`) never is."""
    if text.startswith((".", "/", "~", "\\")) or (len(text) > 1 and text[1] == ":"):
        return None
    from normscope.sources.hub.spec import parse_hub_spec

    return parse_hub_spec(text)  # raises for an `hf://` URI that names no model repo


def _parse_local(path: Path, text: str) -> SourceSpec:
    """An existing file or folder: which reader opens it."""
    if path.is_file():
        return _parse_file(path, text)
    if not path.is_dir():
        raise SourceError(f"not a file or directory ({path})")
    if any(path.glob("*.safetensors")):
        return SourceSpec(SourceKind.folder, text, path)
    from normscope.sources import dcp  # its restricted unpickler only for a DCP save

    folder = dcp.find_dcp_dir(path)
    if folder is not None:
        return SourceSpec(SourceKind.dcp, text, folder)
    unfinished = dcp.unfinished_dcp_dir(path)
    if unfinished is not None:
        raise SourceError(
            f"PyTorch DCP save without its .metadata: still being written, or interrupted "
            f"({unfinished})",
            hint="wait for the save to finish (torch writes .metadata last)",
        )
    single = formats.single_torch_file(path)
    if single is not None:
        return SourceSpec(SourceKind.torch, text, single)
    gguf_file = formats.single_gguf_file(path)
    if gguf_file is not None:
        return SourceSpec(SourceKind.gguf, text, gguf_file)
    hint = formats.folder_hint(path)
    if hint is not None:
        raise SourceError(f"no .safetensors files in directory ({path})", hint=hint)
    return SourceSpec(SourceKind.folder, text, path)


def _parse_file(path: Path, text: str) -> SourceSpec:
    if path.name == formats.DCP_METADATA:
        return SourceSpec(SourceKind.dcp, text, path.parent)
    kind = formats.sniff(path)
    if kind == "torch":
        return SourceSpec(SourceKind.torch, text, path)
    if kind == formats.GGUF:
        return SourceSpec(SourceKind.gguf, text, path)
    if kind is not None:
        raise formats.refuse(path, kind)
    return SourceSpec(SourceKind.safetensors, text, path)


def _refuse_ambiguous(spec: str) -> None:
    """A bare `a/b` that is no path while `a/` is a local folder: a typo or a repo? Ask."""
    if spec.startswith("hf://"):
        return
    head = spec.split("/", 1)[0]
    if head and Path(head).is_dir():
        raise SourceError(
            f"no such path ({spec}); '{head}/' is a local folder. For the Hub repo write "
            f"hf://{spec}",
            hint=f"check the path; for the Hub write hf://{spec}",
        )
