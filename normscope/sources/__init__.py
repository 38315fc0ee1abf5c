"""Checkpoint sources: find the shards, parse their headers, read only the byte ranges asked for.

`open_checkpoint(spec)` opens a `.safetensors` file, a folder of shards (with or without
`model.safetensors.index.json`, usually with a `config.json` beside it), a PyTorch DCP save
(Megatron torch_dist `iter_*/`, torchtitan `step-*/`, OLMo-core `step*/model_and_optim/`) or a
Hugging Face Hub model repo, or a prefix in an object store (`s3://`, `gs://`, `az://`,
`file://`: `objstore.py`), and returns a `Checkpoint` whose `read` fetches exactly the tensors
asked for.

Rooms: `store.py` (the interface every source implements, and `Checkpoint`), `safetensors.py`
(the header format and its validation), `layout.py` (config, index, shards: one check for every
store), `local.py` (positioned reads of local files), `hub/` (the Hub: spec, cache, remote,
reader), `dcp/` (DCP saves: restricted unpickling of `.metadata`, chunks read one by one).

What runs where, and why: a scan needs the headers (a few MB even for a 688 GB checkpoint) and
the norm vectors (a millionth of the bytes). So headers are parsed here and tensors read with
positioned reads (or ranged GETs), every byte counted. A shard is never mapped or read whole,
and torch is never imported for safetensors: `import torch` alone costs about 1 s here, five
times the whole useful work of a scan of a 160-shard DeepSeek-V3-sized layout. Only a DCP
source needs torch (`normscope[torch]`), to load its chunks with `weights_only=True`.
"""

from __future__ import annotations

import os
from pathlib import Path

from normscope.errors import SourceError
from normscope.sources import formats, headercache
from normscope.sources.layout import merge_shards, open_layout
from normscope.sources.local import LocalStore
from normscope.sources.safetensors import MAX_HEADER_SIZE, ShardHeader, parse_header
from normscope.sources.store import (
    Checkpoint,
    ProgressFactory,
    ReadCounter,
    Store,
    hf_cache_folder,
)

__all__ = [
    "MAX_HEADER_SIZE",
    "Checkpoint",
    "ProgressFactory",
    "ReadCounter",
    "ShardHeader",
    "Store",
    "merge_shards",
    "open_checkpoint",
    "parse_header",
]


def open_checkpoint(
    spec: str | os.PathLike[str], progress: ProgressFactory | None = None
) -> Checkpoint:
    """Open a checkpoint: parse config.json, the index and every shard header.

    Reads headers only; tensor data is read later with `Checkpoint.read`. A string that is no
    existing path but reads as a Hub repo (`org/name[@rev]`, `hf://...`) opens that repo;
    `progress` then reports long transfers. A folder without `.safetensors` that holds a DCP
    save (`.metadata` + `.distcp`, or OLMo-core's `model_and_optim/`), or a `.metadata` file,
    opens as a DCP checkpoint (`normscope.sources.dcp`). An object-store URL opens that prefix
    (or that `.safetensors` object) with ranged GETs (`normscope.sources.objstore`).
    """
    if isinstance(spec, str) and "://" in spec:
        from normscope.sources import objstore  # obstore only when an object is really read

        if objstore.looks_like_url(spec):
            return objstore.open_object_checkpoint(spec, progress)
    path = Path(os.path.expanduser(spec))
    if isinstance(spec, str) and not path.exists():
        from normscope.sources import hub  # stdlib only until a Hub source is really opened

        if hub.looks_like_hub(spec):
            _refuse_ambiguous(spec)
            return hub.open_hub_checkpoint(spec, progress)
    if not path.exists():
        raise SourceError(f"no such file or directory ({path})")
    if path.is_file() and path.name == formats.DCP_METADATA:
        from normscope.sources import dcp  # its restricted unpickler only for a DCP save

        return dcp.open_dcp_checkpoint(path.parent, str(spec))
    if path.is_file():
        kind = formats.sniff(path)
        if kind == "torch":
            from normscope.sources.torchfile import open_torch_checkpoint

            return open_torch_checkpoint(path, str(spec))
        if kind is not None:
            raise formats.refuse(path, kind)
        store = LocalStore(path.parent, only=path.name)
    elif path.is_dir():
        if not any(path.glob("*.safetensors")):
            from normscope.sources import dcp

            folder = dcp.find_dcp_dir(path)
            if folder is not None:
                return dcp.open_dcp_checkpoint(folder, str(spec))
            unfinished = dcp.unfinished_dcp_dir(path)
            if unfinished is not None:
                raise SourceError(
                    f"PyTorch DCP save without its .metadata: still being written, or "
                    f"interrupted ({unfinished})",
                    hint="wait for the save to finish (torch writes .metadata last)",
                )
            single = formats.single_torch_file(path)
            if single is not None:
                from normscope.sources.torchfile import open_torch_checkpoint

                return open_torch_checkpoint(single, str(spec))
            hint = formats.folder_hint(path)
            if hint is not None:
                raise SourceError(f"no .safetensors files in directory ({path})", hint=hint)
        store = LocalStore(path)
    else:
        raise SourceError(f"not a file or directory ({path})")
    checkpoint = _open_local(store, str(spec))
    if isinstance(spec, str) and _cached_hub_repo(spec):  # `org/name`: a folder and a repo
        checkpoint.warnings.append(
            f"'{spec}' is a local folder and a Hub repo in the HF cache: read the local folder "
            f"(for the Hub write hf://{spec})"
        )
    return checkpoint


def _open_local(store: LocalStore, source: str) -> Checkpoint:
    """`open_layout`, or its result from the header cache when no file changed since."""
    if not headercache.enabled():
        return open_layout(store, source)
    directory, only = store.directory, store.only
    try:
        files = headercache.snapshot(directory, headercache.layout_files(directory, only))
    except OSError:
        files = None
    if files is not None:
        hit = headercache.load(directory, only, source, files, store.warnings)
        if hit is not None:
            config, shards, warnings = hit
            store.warnings.extend(warnings)
            tensors = merge_shards(shards)
            return Checkpoint(source, config, shards, tensors, store, store.warnings)
    checkpoint = open_layout(store, source)
    if files is not None:
        problem = headercache.save(
            directory, only, source, files, checkpoint.config, checkpoint.shards,
            checkpoint.warnings,
        )  # fmt: skip
        if problem is not None:
            checkpoint.warnings.append(problem)
    return checkpoint


def _cached_hub_repo(spec: str) -> bool:
    """True when `spec` reads as a repo id that the local Hugging Face cache also holds."""
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        return False
    # The folder first: `parse_hub_spec`'s repo id is the text before `@`, and importing the hub
    # package (~10 ms) is then only paid when such a folder exists.
    repo_id = spec.strip().partition("@")[0]
    if not (hf_cache_folder("hub") / ("models--" + repo_id.replace("/", "--"))).is_dir():
        return False
    from normscope.sources.hub.spec import parse_hub_spec

    return parse_hub_spec(spec) is not None


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
