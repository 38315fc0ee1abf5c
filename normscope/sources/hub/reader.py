"""The Hub repo as a `Store`: each file from the HF cache, normscope's cache, or ranged GETs.

Where each file's bytes come from, first hit wins, file by file:
1. the Hugging Face cache (what `hf download` or `from_pretrained` left there), read with
   positioned reads and no request;
2. normscope's cache (`cache.py`): config, index, shard headers and norm ranges fetched before;
3. the Hub: config.json and the index whole; each shard's header with one ranged GET sized by a
   guess (`HeaderSizer`); then only the byte ranges asked for, ranges that are close in a shard
   coalesced, at most `MAX_IN_FLIGHT` requests at once. Nothing else is ever downloaded.

NOTE: a header is read with one ranged GET of `8 + guess` bytes, not with the blind 100 kB first
read of `HfApi.parse_safetensors_file_metadata` (which transfers the tensor bytes behind a 20 kB
header: more than the header and the norms together), nor exactly in two GETs (the 8-byte length,
then the JSON: one request more per shard). A guess too short costs a second GET for the rest;
the bytes read past a header are charged to the `GAP_SHARE` budget of coalesced gaps.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TypeVar

from normscope.errors import SourceError
from normscope.sources.hub.remote import Remote, RepoContext, staged_writes
from normscope.sources.hub.spec import HubFile
from normscope.sources.local import pread_spans, read_header
from normscope.sources.safetensors import MAX_HEADER_SIZE, header_length
from normscope.sources.store import ProgressFactory, ProgressTask, ReadCounter, Span

MAX_IN_FLIGHT = 20
"""Requests in flight at once. Measured at 50 ms per request on the DeepSeek-V3 replica (163
shards, 452 requests): 8 → 4.6 s, 16 → 2.9 s, 20 → 2.6 s, 32 → 2.0 s. Not more than 20: that is
the keep-alive pool of huggingface_hub's httpx session, so every connection is reused; beyond it
each request over 20 would open a new TLS connection to the real Hub or CDN (2-3 round trips more),
which the loopback fake Hub of the benchmark does not charge."""
MAX_GAP = 4096
"""Two ranges of a shard at most this far apart are fetched with one request..."""
GAP_SHARE = 0.05
"""...as long as all the gap bytes fetched, and the bytes read past headers, stay within this
share of header + requested bytes."""
HEADER_ENTRY = 55
"""Bytes of a header entry beyond the tensor's name, before any header of the checkpoint is known,
plus 2 per digit of the shard's size (the two data offsets): `"":{"dtype":"","shape":[],
"data_offsets":[,]},` is 45, a dtype and a short shape ~10 more."""
MAX_SMALL_FILE = 256 * 1024 * 1024
"""config.json and the index are fetched whole: refuse anything this large."""
MAX_CACHED_RANGE = 1 << 20
"""Ranges kept in normscope's cache are at most this long: norm vectors (KBs, coalesced a little
more) are, the matrix row blocks `normscope fold` streams are not — caching those would copy
hundreds of GB of a checkpoint onto the disk."""
PROGRESS_MIN = 8
"""Show progress (when the caller gave a factory) for phases of at least this many requests."""
_T = TypeVar("_T")


class _NoProgress:
    def advance(self, amount: int) -> None:
        pass

    def close(self) -> None:
        pass


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

    def first_read(self, file: HubFile) -> int:
        """The end of the first ranged read of `file`'s header: 8 + the JSON's guessed length."""
        count, names = self.entries.get(file.name, (0, 0))
        with self.lock:
            if not count or self.over > GAP_SHARE * self.seen:
                return 8
            offsets = 2 * len(str(file.size))
            if self.per_entry is None:
                # `{"__metadata__":{"format":"pt"},` and the padding to 8 bytes: 40 more.
                guess = names + (HEADER_ENTRY + offsets) * count + 40
            else:
                guess = names + math.ceil((self.per_entry + offsets) * count) + 8
        return min(8 + guess, 8 + MAX_HEADER_SIZE, file.size)

    def learn(self, file: HubFile, length: int, fetched: int) -> None:
        """Note a header of `length` JSON bytes, for which `fetched` bytes were transferred."""
        count, names = self.entries.get(file.name, (0, 0))
        with self.lock:
            self.seen += 8 + length
            self.over += max(0, fetched - 8 - length)
            if count:
                per = (length - names) / count - 2 * len(str(file.size))
                self.per_entry = per if self.per_entry is None else max(self.per_entry, per)


def _whole_header(raw: bytes, size: int) -> bool:
    """True when `raw` (from the cache) is an 8-byte length and that many header bytes."""
    if len(raw) < 8:
        return False
    n = int.from_bytes(raw[:8], "little")
    return len(raw) == 8 + n and n <= size - 8


class HubStore:
    """The files of one Hub repo at one commit (see the module doc for where bytes come from)."""

    def __init__(
        self,
        ctx: RepoContext,
        remote: Remote,
        listing: dict[str, HubFile],
        progress: ProgressFactory | None = None,
    ) -> None:
        self.ctx = ctx
        self.remote = remote
        self.listing = listing
        self.counter: ReadCounter = ctx.counter
        self.warnings: list[str] = ctx.warnings
        self._progress_factory = progress
        self._files = {self.path(name): file for name, file in listing.items()}
        """Shard ids (`org/name@rev/file`) -> file, for `read`."""
        self._header_bytes = 0
        """Header bytes of all shards: the coalescing budget is a share of headers + ranges."""
        self._over_read = 0
        """Bytes read past the headers, not yet charged to a coalescing budget."""

    def _progress(self, description: str, total: int) -> ProgressTask:
        if self._progress_factory is None or total < PROGRESS_MIN:
            return _NoProgress()
        return self._progress_factory(description, total)

    # --- the Store interface ----------------------------------------------------------------

    def path(self, name: str) -> str:
        return f"{self.ctx.where}/{name}"

    def names(self, suffix: str) -> list[str]:
        return [n for n in self.listing if n.endswith(suffix)]

    def size(self, name: str) -> int | None:
        file = self.listing.get(name)
        return None if file is None else file.size

    def fetch(self, name: str) -> bytes | None:
        """config.json or the index: HF cache, normscope cache, else one GET."""
        file = self.listing.get(name)
        if file is None:
            return None
        ctx = self.ctx
        local = ctx.hf_cached(file.name)
        if local is not None:
            data = local.read_bytes()
        else:
            cached = ctx.cache.blob("files", file.etag)
            if cached is not None and len(cached) == file.size:
                data = cached
            else:
                if ctx.offline:
                    raise ctx.not_cached(file.name)
                if file.size > MAX_SMALL_FILE:
                    raise SourceError(
                        f"{file.name} is {file.size} bytes: too large to be a config or an index "
                        f"({ctx.where})"
                    )
                data = self.remote.get(file, 0, None)
                ctx.cache.set_blob("files", file.etag, data)
        self.counter.metadata_bytes += len(data)
        return data

    def headers(self, names: Sequence[str], weight_map: Mapping[str, str] | None) -> list[bytes]:
        files = [self.listing[n] for n in names]
        sizer = HeaderSizer(weight_map)
        remote = [f for f in files if self.ctx.hf_cached(f.name) is None]
        progress = self._progress("Reading shard headers", len(remote))
        try:
            raws = parallel([functools.partial(self._header, f, sizer, progress) for f in files])
        finally:
            progress.close()
        self._header_bytes = sum(len(r) for r in raws)
        self._over_read = sizer.over
        return raws

    def read(self, spans: Mapping[str, Sequence[Span]]) -> dict[tuple[str, int, int], bytes]:
        """The spans, from the caches or the Hub; what is fetched is cached only if all of it
        arrives, and nothing more of this scan is cached after a `HubMismatch`."""
        with staged_writes(self.ctx.cache):
            return self._read(spans)

    def _read(self, spans: Mapping[str, Sequence[Span]]) -> dict[tuple[str, int, int], bytes]:
        ctx = self.ctx
        out: dict[tuple[str, int, int], bytes] = {}
        missing: dict[str, list[Span]] = {}
        for shard, shard_spans in spans.items():
            file = self._files[shard]
            local = ctx.hf_cached(file.name)
            if local is not None:
                out.update(pread_spans(local, shard, shard_spans))
                continue
            cached = ctx.cache.ranges(file.etag)
            for span in shard_spans:
                data = _from_ranges(cached, span)
                if data is None:
                    missing.setdefault(shard, []).append(span)
                else:
                    out[(shard, *span)] = data
        if not missing:
            return out
        if ctx.offline:
            count = sum(len(v) for v in missing.values())
            raise ctx.not_cached(f"the bytes of {count} norm tensor(s)")
        wanted = sum(end - start for rs in missing.values() for start, end in rs)
        budget = int(GAP_SHARE * (self._header_bytes + wanted))
        charged = min(budget, self._over_read)  # header over-reads come out of the same share
        budget, self._over_read = budget - charged, self._over_read - charged
        plan = coalesce(missing, budget)
        progress = self._progress("Reading norm tensors", sum(len(v) for v in plan.values()))

        def fetch(shard: str, start: int, end: int) -> dict[tuple[str, int, int], bytes]:
            file = self._files[shard]
            data = self.remote.get(file, start, end)
            if len(data) <= MAX_CACHED_RANGE:
                ctx.cache.set_range(file.etag, start, data)
            progress.advance(1)
            return {
                (shard, a, b): data[a - start : b - start]
                for a, b in missing[shard]
                if start <= a and b <= end
            }

        tasks = [
            functools.partial(fetch, shard, a, b)
            for shard, ranges in plan.items()
            for a, b in ranges
        ]
        try:
            for got in parallel(tasks):
                out.update(got)
        finally:
            progress.close()
        return out

    def missing_shard(self, name: str, index: str) -> SourceError:
        return SourceError(
            f"the index names shard '{name}' but the repo has no such file ({index})",
            hint="the repo is incomplete at this revision: try another revision",
        )

    def no_shards(self) -> SourceError:
        names = sorted(self.listing)
        return SourceError(
            f"no .safetensors files in Hub repo ({self.ctx.where})",
            hint=f"normscope reads safetensors checkpoints; the repo has {len(self.listing)} "
            f"top-level file(s), e.g. {', '.join(names[:3]) or 'none'}",
        )

    # --- headers --------------------------------------------------------------------------

    def _header(self, file: HubFile, sizer: HeaderSizer, progress: ProgressTask) -> bytes:
        ctx = self.ctx
        shard = self.path(file.name)
        local = ctx.hf_cached(file.name)
        fetched = 0
        if local is not None:
            raw = read_header(local, shard)
        else:
            raw = ctx.cache.blob("headers", file.etag) or b""
            if not _whole_header(raw, file.size):
                if ctx.offline:
                    raise ctx.not_cached(f"the header of {file.name}")
                if file.size < 8:
                    header_length(b"", shard, file.size)  # raises: too short for safetensors
                # The 8-byte length and a guess of the JSON in one GET, the rest (if the guess
                # was short) in a second one (see the module doc).
                first = self.remote.get(file, 0, sizer.first_read(file))
                n = header_length(first[:8], shard, file.size)
                rest = self.remote.get(file, len(first), 8 + n) if 8 + n > len(first) else b""
                fetched = len(first) + len(rest)
                raw = (first + rest)[: 8 + n]
                ctx.cache.set_blob("headers", file.etag, raw)
                progress.advance(1)
        sizer.learn(file, len(raw) - 8, fetched)
        return raw


def parallel(tasks: Sequence[Callable[[], _T]]) -> list[_T]:
    """Run `tasks` on MAX_IN_FLIGHT threads; return results in order; stop at the first error."""
    if len(tasks) <= 1:
        return [task() for task in tasks]
    with ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT, thread_name_prefix="normscope") as pool:
        futures: list[Future[_T]] = [pool.submit(task) for task in tasks]
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


def _from_ranges(cached: list[tuple[int, int, Path]], span: Span) -> bytes | None:
    start_wanted, end_wanted = span
    for start, end, path in cached:
        if start <= start_wanted and end_wanted <= end:
            try:
                with open(path, "rb") as handle:
                    handle.seek(start_wanted - start)
                    data = handle.read(end_wanted - start_wanted)
            except OSError:
                return None
            return data if len(data) == end_wanted - start_wanted else None
    return None
