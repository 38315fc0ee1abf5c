"""Ranged reads over a network, shared by the Hub (`hub/reader.py`) and object stores
(`objstore.py`): each shard's header in one GET sized by a guess (`HeaderSizer`), close byte
ranges coalesced within a budget (`plan_reads`, `coalesce`), requests run on a few threads at
once (`parallel`).

NOTE: a header is read with one ranged GET of `8 + guess` bytes, not with the blind 100 kB first
read of `HfApi.parse_safetensors_file_metadata` (which transfers the tensor bytes behind a 20 kB
header: more than the header and the norms together), nor exactly in two GETs (the 8-byte length,
then the JSON: one request more per shard). A guess too short costs a second GET for the rest;
the bytes read past a header are charged to the `GAP_SHARE` budget of coalesced gaps.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import TypeVar

from normscope.sources.safetensors import MAX_HEADER_SIZE
from normscope.sources.store import Span

MAX_GAP = 4096
"""Two ranges of a shard at most this far apart are fetched with one request..."""
GAP_SHARE = 0.05
"""...as long as all the gap bytes fetched, and the bytes read past headers, stay within this
share of header + requested bytes."""
HEADER_ENTRY = 55
"""Bytes of a header entry beyond the tensor's name, before any header of the checkpoint is known,
plus 2 per digit of the shard's size (the two data offsets): `"":{"dtype":"","shape":[],
"data_offsets":[,]},` is 45, a dtype and a short shape ~10 more."""
_T = TypeVar("_T")


class HeaderSizer:
    """How many bytes to read for a shard's header in one request (see the module doc).

    A header holds, for each tensor the index maps to the shard, its name and ~50-80 bytes of
    dtype, shape and data offsets: the guess is the names' length plus bytes per entry, 2 per
    digit of the shard's size (the offsets) plus `HEADER_ENTRY` until headers of this checkpoint
    are known, then plus the most seen in them (its shards agree within a byte or two).
    Counts the bytes read past headers (`over`), and reads exactly (8 bytes first) without an
    index, or once the over-reads exceed `GAP_SHARE` of the header bytes seen.
    """

    def __init__(self, weight_map: Mapping[str, str] | None) -> None:
        entries: dict[str, list[int]] = {}
        for name, shard in (weight_map or {}).items():
            entry = entries.get(shard)
            if entry is None:
                entries[shard] = [1, len(name)]
            else:
                entry[0] += 1
                entry[1] += len(name)
        self.entries = {shard: (count, names) for shard, (count, names) in entries.items()}
        """Shard file name -> (tensors, characters of their names) from the index."""
        self.lock = threading.Lock()
        self.per_entry: float | None = None
        """The most header bytes per entry beyond its name and 2 per digit of the shard's size
        (the offsets) seen in this checkpoint's headers."""
        self.seen = 0
        """Header bytes known (fetched or cached)."""
        self.over = 0
        """Bytes fetched past the end of headers."""

    def first_read(self, name: str, size: int) -> int:
        """The end of the first ranged read of the header of shard `name` (`size` bytes): 8 + the
        JSON's guessed length."""
        count, names = self.entries.get(name, (0, 0))
        with self.lock:
            if not count or self.over > GAP_SHARE * self.seen:
                return 8
            offsets = 2 * len(str(size))
            if self.per_entry is None:
                # `{"__metadata__":{"format":"pt"},` and the padding to 8 bytes: 40 more.
                guess = names + (HEADER_ENTRY + offsets) * count + 40
            else:
                guess = names + math.ceil((self.per_entry + offsets) * count) + 8
        return min(8 + guess, 8 + MAX_HEADER_SIZE, size)

    def learn(self, name: str, size: int, length: int, fetched: int) -> None:
        """Note a header of `length` JSON bytes of shard `name` (`size` bytes), for which
        `fetched` bytes were transferred."""
        count, names = self.entries.get(name, (0, 0))
        with self.lock:
            self.seen += 8 + length
            self.over += max(0, fetched - 8 - length)
            if count:
                per = (length - names) / count - 2 * len(str(size))
                self.per_entry = per if self.per_entry is None else max(self.per_entry, per)


def whole_header(raw: bytes, size: int) -> bool:
    """True when `raw` (from a cache) is an 8-byte length and that many header bytes, a length
    a shard of `size` bytes can hold."""
    n = int.from_bytes(raw[:8], "little") if len(raw) >= 8 else -1
    return 0 <= n <= min(size - 8, MAX_HEADER_SIZE) and len(raw) == 8 + n


def plan_reads(
    spans: dict[str, list[Span]], header_bytes: int, over_read: int
) -> tuple[dict[str, list[Span]], int]:
    """The ranged GETs for `spans`: close ranges coalesced while the gap bytes, and the bytes
    headers read past their end (`over_read`, not yet paid for), stay within GAP_SHARE of
    header + requested bytes. Returns the plan and the over-read still unpaid."""
    wanted = sum(end - start for ranges in spans.values() for start, end in ranges)
    budget = int(GAP_SHARE * (header_bytes + wanted))
    charged = min(budget, over_read)
    return coalesce(spans, budget - charged), over_read - charged


def parallel(
    tasks: Sequence[Callable[[], _T]], workers: int, done: Callable[[int], None] | None = None
) -> list[_T]:
    """Run `tasks` on up to `workers` threads; results in order; the first error stops the rest.
    `done(1)` is called as each task finishes (a progress bar's `advance`)."""
    if len(tasks) <= 1:
        return [task() for task in tasks]
    with ThreadPoolExecutor(min(workers, len(tasks)), thread_name_prefix="normscope") as pool:
        futures: list[Future[_T]] = [pool.submit(task) for task in tasks]
        if done is not None:
            for future in futures:
                future.add_done_callback(lambda _: done(1))
        _, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for future in pending:
            future.cancel()
        for future in futures:
            error = None if future.cancelled() or not future.done() else future.exception()
            if error is not None:
                raise error
        return [future.result() for future in futures]


def coalesce(
    spans: dict[str, list[tuple[int, int]]], budget: int, max_gap: int = MAX_GAP
) -> dict[str, list[tuple[int, int]]]:
    """Merge byte ranges per shard: touching ones always, gaps up to `max_gap` smallest first
    while all merged gap bytes fit in `budget`. Returns sorted, disjoint [start, end) ranges."""
    gaps: list[tuple[int, str, int]] = []
    ordered = {shard: sorted(s) for shard, s in spans.items()}
    for shard, items in ordered.items():
        gaps.extend((max(0, items[i][0] - items[i - 1][1]), shard, i) for i in range(1, len(items)))
    joined: set[tuple[str, int]] = set()
    spent = 0
    for gap, shard, i in sorted(gaps):
        if gap == 0 or (gap <= max_gap and spent + gap <= budget):
            joined.add((shard, i))
            spent += gap
    out: dict[str, list[tuple[int, int]]] = {}
    for shard, items in ordered.items():
        merged: list[tuple[int, int]] = []
        for i, (start, end) in enumerate(items):
            if merged and (shard, i) in joined:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        out[shard] = merged
    return out
