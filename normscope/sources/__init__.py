"""Checkpoint sources: find the shards, parse their headers, read only the byte ranges asked for.

`open_checkpoint(source)` parses the source once (`spec.py`: a typed `SourceSpec`) and opens, by
its kind (`dispatch.py`), a `.safetensors` file, a folder of shards (with or without
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

from normscope.sources.dispatch import open_checkpoint
from normscope.sources.layout import merge_shards
from normscope.sources.safetensors import MAX_HEADER_SIZE, ShardHeader, parse_header
from normscope.sources.spec import Source, SourceSpec, parse_source
from normscope.sources.store import Checkpoint, ProgressFactory, ReadCounter, Store

__all__ = [
    "MAX_HEADER_SIZE",
    "Checkpoint",
    "ProgressFactory",
    "ReadCounter",
    "ShardHeader",
    "Source",
    "SourceSpec",
    "Store",
    "merge_shards",
    "open_checkpoint",
    "parse_header",
    "parse_source",
]
