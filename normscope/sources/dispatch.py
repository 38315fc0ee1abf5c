"""`open_checkpoint`: a parsed source (`spec.SourceSpec`) to the reader of its kind.

Each kind is opened by its own module; the layout check, the byte counting and everything above
are shared (`layout.open_layout`). A local safetensors layout goes through the header cache
(`headercache`) unless the options turned it off.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

from normscope.enums import SourceKind
from normscope.schema import Leaves, TensorRef
from normscope.sources import formats, headercache
from normscope.sources.layout import full_loader, kept_form, light_map, merge_shards, open_layout
from normscope.sources.local import LocalStore
from normscope.sources.spec import Source, SourceSpec, parse_source
from normscope.sources.store import Checkpoint, ProgressFactory, hf_cache_folder


def open_checkpoint(
    source: Source | SourceSpec,
    progress: ProgressFactory | None = None,
    *,
    cache: bool = True,
    verbose: bool = False,
    token: str | None = None,
    light: bool = False,
    leaves: Leaves | None = None,
) -> Checkpoint:
    """Open a checkpoint: parse config.json, the index and every shard header.

    Reads headers only; tensor data is read later with `Checkpoint.read`. `source` is parsed
    once (`spec.parse_source`: a local path always wins over a Hub repo id) unless it is a
    `SourceSpec` already. `progress` reports long transfers (Hub, object stores); `cache`:
    reuse a local layout's cached headers; `verbose`: let huggingface_hub's log lines through;
    `token`: a Hugging Face token for a Hub source (None: huggingface_hub's own).
    `light`: a local safetensors layout keeps the refs of its gain-shaped and scalar tensors, the
    names `leaves` covers, the count and a dtype summary (`layout.open_layout`): what a scan
    needs. Other kinds ignore it.
    """
    spec = parse_source(source)
    match spec.kind:
        case SourceKind.folder | SourceKind.safetensors:
            return _open_safetensors(spec, cache, leaves or Leaves() if light else None)
        case SourceKind.torch:
            from normscope.sources.torchfile import open_torch_checkpoint

            return open_torch_checkpoint(_path(spec), spec.text)
        case SourceKind.gguf:
            return _open_gguf(spec)
        case SourceKind.dcp:
            from normscope.sources import dcp  # its restricted unpickler only for a DCP save

            return dcp.open_dcp_checkpoint(_path(spec), spec.text)
        case SourceKind.hub:
            from normscope.sources import hub  # huggingface_hub only when a repo is opened

            assert spec.hub is not None
            return hub.open_hub_checkpoint(spec.hub, progress, verbose=verbose, token=token)
        case SourceKind.object_store:
            from normscope.sources import objstore  # obstore only when an object is read

            return objstore.open_object_checkpoint(spec.text, progress)
        case SourceKind.memory:
            from normscope.sources.memory import InMemory, open_memory_checkpoint

            assert isinstance(spec.obj, InMemory), spec
            return open_memory_checkpoint(spec.obj)
        case _:  # pragma: no cover - exhaustive over SourceKind
            raise AssertionError(spec.kind)


def _path(spec: SourceSpec) -> Path:
    assert spec.path is not None, spec
    return spec.path


def _open_gguf(spec: SourceSpec) -> Checkpoint:
    """GGUF: `sources/gguf.py` where it is installed, else the conversion hint."""
    try:
        reader = importlib.import_module("normscope.sources.gguf")
    except ModuleNotFoundError:
        raise formats.refuse(_path(spec), formats.GGUF) from None
    checkpoint: Checkpoint = reader.open_gguf_checkpoint(_path(spec), spec.text)
    return checkpoint


def _open_safetensors(spec: SourceSpec, cache: bool, light: Leaves | None) -> Checkpoint:
    path = _path(spec)
    if spec.kind is SourceKind.safetensors:
        store = LocalStore(path.parent, only=path.name)
    else:
        store = LocalStore(path)
    checkpoint = _open_local(store, spec.text, cache, light)
    if _cached_hub_repo(spec.text):  # `org/name`: a folder and a repo
        checkpoint.warnings.append(
            f"'{spec.text}' is a local folder and a Hub repo in the HF cache: read the local "
            f"folder (for the Hub write hf://{spec.text})"
        )
    return checkpoint


def _open_local(store: LocalStore, source: str, cache: bool, light: Leaves | None) -> Checkpoint:
    """`open_layout` (`light`: the leaves of a light one), or its result from the header cache
    when no file changed since."""
    if not cache:
        return open_layout(store, source, light=light)
    directory, only = store.directory, store.only
    try:
        files = headercache.snapshot(directory, headercache.layout_files(directory, only))
    except OSError:
        files = None
    if files is not None:
        hit = headercache.load(directory, only, source, files, store.warnings, light)
        if hit is not None:
            config, shards, warnings = hit
            store.warnings.extend(warnings)
            if light is not None:
                names = [Path(s.path).name for s in shards]
                loader = full_loader(store, names)
                tensors: Mapping[str, TensorRef] = light_map(shards, loader, light)
            else:
                tensors = merge_shards(shards)
            return Checkpoint(source, config, shards, tensors, store, store.warnings)
    checkpoint = open_layout(store, source, light=light)
    if files is not None:
        config, shards, warnings = checkpoint.config, checkpoint.shards, checkpoint.warnings
        if light is not None:
            # Saved as the cold open kept it (every name up to KEEP_NAMES tensors, slimmed past
            # it): a slimmed entry for a small checkpoint made each warm scan whose norms need
            # the structural inference read every header again. `lighten` too: a layout judged
            # in full (an index that disagreed, with a warning) comes back with every ref.
            shards = kept_form(shards, light)
        problem = headercache.save(directory, only, source, files, config, shards, warnings, light)
        if problem is not None:
            checkpoint.warnings.append(problem)
    return checkpoint


def _cached_hub_repo(spec: str) -> bool:
    """True when `spec` reads as a repo id that the local Hugging Face cache also holds."""
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        return False
    # The folder first: importing the hub package (~10 ms) is only paid when such a folder exists.
    repo_id = spec.strip().partition("@")[0]
    if not (hf_cache_folder("hub") / ("models--" + repo_id.replace("/", "--"))).is_dir():
        return False
    from normscope.sources.hub.spec import parse_hub_spec

    return parse_hub_spec(spec) is not None
