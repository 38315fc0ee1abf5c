"""One layout check for every store: config, shard index, shard headers, tiling, merge.

A checkpoint is a `config.json` (optional), a `*.safetensors.index.json` (optional) and one or
more `.safetensors` shards. This module reads and checks them through the `Store` interface, so
a local folder and a Hub repo are judged by the same rules: every shard the index names exists,
every tensor it lists is where it says, no tensor is stored twice, and every header is valid
safetensors (`safetensors.parse_header`).
"""

from __future__ import annotations

import array
import contextlib
import gc
import itertools
import operator
import os
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

from normscope.errors import SourceError
from normscope.naming import natural_key
from normscope.schema import Leaves, TensorMap, TensorRef
from normscope.sources.jsonload import JSONLimitError, load_json, load_name_map
from normscope.sources.safetensors import INDEX_SUFFIX, ShardHeader, lighten, parse_header, slim
from normscope.sources.store import Checkpoint, Store

_gc_lock = threading.Lock()
_gc_holders = 0
_gc_was_enabled = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for a block, and restore its state afterwards.

    NOTE: parsing builds ~100k long-lived dicts and TensorRefs and no reference cycles; left on,
    the cyclic GC rescans that growing heap again and again (json.loads of DeepSeek-V3's 163
    headers: ~75 ms paused, ~200-260 ms not). The pause is counted, so that threads parsing at
    once (a series, a Hub scan) restore the collector only when the last of them is done, and
    only if it was enabled before the first.
    """
    global _gc_holders, _gc_was_enabled
    with _gc_lock:
        if _gc_holders == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_holders += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_holders -= 1
            if _gc_holders == 0 and _gc_was_enabled:
                gc.enable()


def open_layout(store: Store, source: str, *, light: Leaves | None = None) -> Checkpoint:
    """Read config, index and every shard header of `store`; check they agree.

    `light` (local stores: a scan), the leaves a light layout keeps names of: the checkpoint's
    `tensors` is a `TensorMap` (the refs `light_kept` keeps, the count, the names the leaves
    cover, `ShardHeader.dtypes`), and each header is parsed and checked against the index as
    it is read, then dropped.
    Validation is the same; an index or shards that disagree are judged on the full layout,
    with the same messages.
    """
    warnings = store.warnings
    config = _read_config(store, warnings)
    shard_names, weight_map, index = _shard_names(store, source, warnings)
    if light is not None:
        shards, sound = _parse_each(store, shard_names, weight_map, light)
        if sound:
            kept = light_map(shards, full_loader(store, shard_names), light)
            return Checkpoint(source, config, shards, kept, store, warnings)
        # An index and shards that disagree, or a tensor stored twice: the full layout names
        # it. The headers are read again for that (counted once).
        raws = store.headers(shard_names, weight_map)
    else:
        raws = store.headers(shard_names, weight_map)
        for raw in raws:
            _count(store, raw)
    shards = _parse_full(store, shard_names, raws)
    tensors = merge_shards(shards)
    if weight_map is not None and not _agrees(shards, shard_names, weight_map):
        actual: dict[str, str] = {}
        for name, shard in zip(shard_names, shards, strict=True):
            actual.update(dict.fromkeys(shard.tensors, name))
        _check_index(weight_map, actual, tensors, store, index, warnings)
    return Checkpoint(source, config, shards, tensors, store, warnings)


def _shard_names(
    store: Store, source: str, warnings: list[str]
) -> tuple[list[str], dict[str, str] | None, str]:
    """The shards to read (the index's, else every .safetensors file), the index's weight map
    (None: no index) and the index's path."""
    indexes = sorted(store.names(INDEX_SUFFIX))
    if not indexes:
        shard_names = sorted(store.names(".safetensors"), key=natural_key)
        if not shard_names:
            raise store.no_shards()
        return shard_names, None, ""
    index = indexes[0]
    if len(indexes) > 1:
        warnings.append(f"several shard indexes; using {index} ({source})")
    files = store.names(".safetensors")
    weight_map = _read_index(store, index, files)
    shard_names = sorted(set(weight_map.values()), key=natural_key)
    for name in shard_names:
        if store.size(name) is None:
            raise store.missing_shard(name, store.path(index))
    listed = set(shard_names)
    extra = sorted(n for n in files if n not in listed)
    if extra:
        warnings.append(
            f"ignored {len(extra)} .safetensors file(s) not named in the index: "
            f"{', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''} ({source})"
        )
    return shard_names, weight_map, store.path(index)


def _count(store: Store, raw: bytes) -> None:
    store.counter.bytes_read += len(raw)
    store.counter.reads += 2  # the length prefix, then the JSON


KEEP_NAMES = 65_536
"""A light layout keeps every tensor name up to this many tensors (~8 MiB of them; Mixtral has
995, Qwen3-235B-A22B 37k); past it, only the names the rules ask about (`Leaves`, issue 29:
DeepSeek-V3's 92k names are 9 MB, 16x its layers 150 MB)."""


def kept_form(shards: Sequence[ShardHeader], leaves: Leaves) -> list[ShardHeader]:
    """`shards` in the light form a cold open keeps them: every name up to `KEEP_NAMES`
    tensors, slimmed past it (`_parse_each`); a shard judged in full is lightened first. The
    header cache saves this form, so that a warm scan answers without a header read what the
    cold light one did (a layout judged in full past KEEP_NAMES: the cold scan held every ref,
    the warm one loads them for a question beyond its leaves, counted)."""
    light = [lighten(s) for s in shards]
    if sum(s.tensor_count for s in light) > KEEP_NAMES:
        return [slim(s, leaves) for s in light]
    return light


def _parse_each(
    store: Store, shard_names: Sequence[str], weight_map: Mapping[str, str] | None, leaves: Leaves
) -> tuple[list[ShardHeader], bool]:
    """Each shard's header read, counted, parsed light and checked (`_Agreement`) in turn: one
    raw header held at once (DeepSeek-V3: 11.5 MB of them; 16x its layers: 184 MB). Past
    `KEEP_NAMES` tensors, every shard is slimmed (`safetensors.slim`) as it is parsed. The
    shards, and whether the layout is sound."""
    shards: list[ShardHeader] = []
    agreement = _Agreement(weight_map)
    slimming = False
    with gc_paused():
        for name in shard_names:
            (raw,) = store.headers([name], weight_map)
            _count(store, raw)
            shard = parse_header(raw[8:], store.path(name), store.size(name) or 0, light=True)
            agreement.add(name, shard.all_names)
            shards.append(slim(shard, leaves) if slimming else shard)
            if not slimming and agreement.total > KEEP_NAMES:
                shards, slimming = [slim(s, leaves) for s in shards], True
    return shards, agreement.sound()


class _Agreement:
    """Whether the shards' names agree with the index, checked one shard at a time.

    With an index: the index lists every tensor of the shards, each in the shard that holds
    it, and nothing else, and no tensor is stored twice. NOTE: linear, and with no second
    name->shard map (issue 29): the index's names are grouped by the shard it names (one pass
    in C over its runs: HF writes it sorted by name, so a shard's names come in a few runs;
    DeepSeek-V3: 2,979 runs for 92k names), and each shard's group is compared with its header
    as sets: as many names, and every one in the header. A header holds each name once
    (`parse_header`) and the index each name once (a JSON object's keys), so that is equality;
    over every shard the index names (`_shard_names` reads them all), and with every index entry
    in some group, it is exactly the statement above. A shard's set is small and stays in the
    cache where one lookup per name into the whole index missed it (1.5M names: 0.18 s against
    0.55 s; benchmarks/RESULTS.md, Round 3d). The groups hold a reference to each index name
    until its shard is read (8 bytes a name: 12 MB at 1.5M), and an index not written by name
    (shards interleaved entry by entry) makes many runs: slower, as exact.

    Without an index: no name is in two shards (a header holds each name once: `parse_header`).
    NOTE: checked on the names' hashes, 8 bytes each in a numpy array, not on a set of 1.5M
    names; distinct hashes prove distinct names, and equal ones (a name stored twice, or a
    collision) send the layout to the full path, which decides exactly.
    """

    def __init__(self, weight_map: Mapping[str, str] | None) -> None:
        self.weight_map = weight_map
        self.found = self.total = 0
        self.hashes: list[array.array[int]] = []
        self.groups: dict[str, list[str]] = {}
        if weight_map is not None:
            name_of = operator.itemgetter(0)
            for shard, run in itertools.groupby(weight_map.items(), key=operator.itemgetter(1)):
                group = self.groups.get(shard)
                if group is None:
                    self.groups[shard] = list(map(name_of, run))
                else:
                    group.extend(map(name_of, run))

    def add(self, shard: str, names: list[str]) -> None:
        self.total += len(names)
        if self.weight_map is not None:
            # A shard whose group differs counts its tensors in `total` only: then either the
            # two counts part, or (a header with no tensors) its group is never counted.
            group = self.groups.pop(shard, [])
            if len(group) == len(names) and set(names).issuperset(group):
                self.found += len(group)
        else:
            self.hashes.append(array.array("q", map(hash, names)))

    def sound(self) -> bool:
        if self.weight_map is not None:
            return self.found == self.total == len(self.weight_map)
        if len(self.hashes) < 2:
            return True
        import numpy as np  # a scan has it loaded already (its statistics)

        every = np.concatenate([np.frombuffer(h, dtype=np.int64) for h in self.hashes])
        every.sort()
        return not bool((every[1:] == every[:-1]).any())


def _agrees(
    shards: Sequence[ShardHeader], shard_names: Sequence[str], weight_map: Mapping[str, str]
) -> bool:
    """`_Agreement` of full shards with the index."""
    agreement = _Agreement(weight_map)
    for own, shard in zip(shard_names, shards, strict=True):
        agreement.add(own, shard.all_names)
    return agreement.sound()


def full_loader(store: Store, shard_names: Sequence[str]) -> Callable[[], Mapping[str, TensorRef]]:
    """What a light `TensorMap` calls for a tensor it did not keep: every shard header read
    again (and counted) and parsed in full. Only the structural inference of a norm no rule
    names asks for one (the zoo's rarer architectures; no built-in family)."""

    def load() -> Mapping[str, TensorRef]:
        raws = store.headers(shard_names, None)
        for raw in raws:
            _count(store, raw)
        return merge_shards(_parse_full(store, shard_names, raws))

    return load


def _parse_full(
    store: Store, shard_names: Sequence[str], raws: Sequence[bytes]
) -> list[ShardHeader]:
    with gc_paused():
        return [
            parse_header(raw[8:], store.path(name), store.size(name) or 0)
            for name, raw in zip(shard_names, raws, strict=True)
        ]


def light_map(
    shards: Sequence[ShardHeader], load: Callable[[], Mapping[str, TensorRef]], leaves: Leaves
) -> TensorMap:
    """The `TensorMap` of light shards whose layout was judged sound (also the header cache's):
    complete when no shard was slimmed."""
    kept: dict[str, TensorRef] = {}
    for shard in shards:
        kept.update(shard.tensors)
    count = sum(s.tensor_count for s in shards)
    if all(s.count is None for s in shards):
        every = dict.fromkeys(itertools.chain.from_iterable(s.all_names for s in shards))
        return TensorMap(kept, count, every, load)
    present = set(itertools.chain.from_iterable(s.names or () for s in shards))
    return TensorMap(kept, count, present, load, leaves)


def _read_config(store: Store, warnings: list[str]) -> dict[str, Any] | None:
    """config.json as transformers reads it (the last of duplicate keys wins), within the
    loader's limits: a config nested deeper than any model config, or holding a number of
    hundreds of digits, is no config a tool wrote, and is refused rather than guessed around."""
    where = store.path("config.json")
    try:
        data = store.fetch("config.json")
        if data is None:
            return None
        config = load_json(data, duplicates=True)
    except JSONLimitError as exc:
        raise SourceError(
            f"config.json is {exc}: not a model config ({where})",
            hint="fix or remove config.json; without it the architecture is inferred from "
            "the tensor names",
        ) from None
    except (OSError, ValueError) as exc:
        warnings.append(
            f"config.json is malformed ({exc}); the architecture is inferred from tensor names "
            f"({where})"
        )
        return None
    if not isinstance(config, dict):
        warnings.append(f"config.json is not a JSON object; ignored ({where})")
        return None
    return config


def _read_index(store: Store, name: str, files: Collection[str]) -> dict[str, str]:
    """The index's weight_map, shard names normalised (`./x` and `x` are one shard). `files`:
    the store's .safetensors files."""
    try:
        data = store.fetch(name)
        if data is None:
            raise OSError(f"{name} vanished")
        # NOTE: the shards' names shared by every entry where provable (issue 29: 1.5M copies
        # of 2,562 names, 123 MB, at 16x DeepSeek-V3's layers); else the general decode.
        weight_map = load_name_map(data, "weight_map", files)
        if weight_map is None:
            weight_map = load_json(data)["weight_map"]
        # The set of shard names is small; an unhashable value raises TypeError, caught below.
        if not isinstance(weight_map, dict) or not all(
            isinstance(v, str) for v in set(weight_map.values())
        ):
            raise TypeError("weight_map is not an object of file names")
        if not weight_map:  # else: "no .safetensors files" beside the shards it failed to name
            raise ValueError("weight_map is empty")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise SourceError(f"invalid shard index: {exc} ({store.path(name)})") from None
    # Per distinct name: the map has one entry per tensor (92k in DeepSeek-V3).
    normal = {v: os.path.normpath(v) for v in set(weight_map.values())}
    for shard in normal.values():
        if "/" in shard or "\\" in shard or shard in (".", ".."):
            raise SourceError(
                f"the index names shard '{shard}' outside the checkpoint's folder "
                f"({store.path(name)})"
            )
    if any(k != v for k, v in normal.items()):
        weight_map = {k: normal[v] for k, v in weight_map.items()}
    return weight_map


def merge_shards(shards: Sequence[ShardHeader]) -> dict[str, TensorRef]:
    """All tensors by name; a name stored in two shards is an error."""
    tensors: dict[str, TensorRef] = {}
    for shard in shards:
        tensors.update(shard.tensors)
    if len(tensors) != sum(len(s.tensors) for s in shards):  # slow path: name the duplicate
        seen: dict[str, str] = {}
        for shard in shards:
            for name in shard.tensors:
                if name in seen:
                    raise SourceError(
                        f"tensor '{name}' is stored in two shards: {seen[name]} and {shard.path}"
                    )
                seen[name] = shard.path
    return tensors


def _check_index(
    weight_map: Mapping[str, str],
    actual: Mapping[str, str],
    tensors: Mapping[str, TensorRef],
    store: Store,
    index: str,
    warnings: list[str],
) -> None:
    """Every tensor the index lists is in the shard it names (`actual`: tensor -> the shard file
    that holds it); tensors the index does not list are a warning."""
    # NOTE: 92k entries in DeepSeek-V3: the two maps are compared as item views, a loop in C
    # (~2 ms, a tenth of the Python loop below), which runs only to name a disagreement.
    if not weight_map.items() <= actual.items():
        _name_index_disagreement(weight_map, tensors, store, index)
    # Every index entry was found above, so extra tensors exist only if the counts differ.
    unlisted = [n for n in tensors if n not in weight_map] if len(tensors) > len(weight_map) else []
    if unlisted:
        warnings.append(
            f"{len(unlisted)} tensor(s) in the shards are not listed in the index, e.g. "
            f"'{unlisted[0]}' ({index})"
        )


def _name_index_disagreement(
    weight_map: Mapping[str, str], tensors: Mapping[str, TensorRef], store: Store, index: str
) -> None:
    """Raise for the first index entry whose tensor is not in the shard the index names."""
    expected = {shard: store.path(shard) for shard in set(weight_map.values())}
    for name, shard_name in weight_map.items():
        ref = tensors.get(name)
        if ref is None or ref.shard != expected[shard_name]:
            raise SourceError(
                f"tensor '{name}' is listed in the index but absent from shard '{shard_name}' "
                f"({index})",
                hint="the index and the shards disagree: re-save or re-download the checkpoint",
            )
    raise SourceError(f"the index and the shards disagree ({index})")  # pragma: no cover
