"""The Hub repo as a `Store`: each file from the HF cache, normscope's cache, or ranged GETs.

Where each file's bytes come from, first hit wins, file by file:
1. the Hugging Face cache (what `hf download` or `from_pretrained` left there), read with
   positioned reads and no request;
2. normscope's cache (`cache.py`): config, index, shard headers and norm ranges fetched before;
3. the Hub: config.json and the index whole; each shard's header with one ranged GET sized by a
   guess; then only the byte ranges asked for, ranges that are close in a shard coalesced, at
   most `MAX_IN_FLIGHT` requests at once (`sources/ranged.py`). Nothing else is ever downloaded.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from normscope.errors import SourceError
from normscope.sources.hub.cache import HubCache
from normscope.sources.hub.remote import Remote, RepoContext, staged_writes
from normscope.sources.hub.spec import HubFile
from normscope.sources.local import pread_spans, read_header, read_small_file
from normscope.sources.ranged import HeaderSizer, parallel, plan_reads, whole_header
from normscope.sources.safetensors import header_length
from normscope.sources.store import (
    MAX_SMALL_FILE,
    ProgressFactory,
    ProgressTask,
    ReadCounter,
    Span,
)

MAX_IN_FLIGHT = 20
"""Requests in flight at once. Measured at 50 ms per request on the DeepSeek-V3 replica (163
shards, 452 requests): 8 → 4.6 s, 16 → 2.9 s, 20 → 2.6 s, 32 → 2.0 s. Not more than 20: that is
the keep-alive pool of huggingface_hub's httpx session, so every connection is reused; beyond it
each request over 20 would open a new TLS connection to the real Hub or CDN (2-3 round trips more),
which the loopback fake Hub of the benchmark does not charge."""
MAX_CACHED_RANGE = 1 << 20
"""Ranges kept in normscope's cache are at most this long: norm vectors (KBs, coalesced a little
more) are, the matrix row blocks `normscope fold` streams are not — caching those would copy
hundreds of GB of a checkpoint onto the disk."""
PROGRESS_MIN = 8
"""Show progress (when the caller gave a factory) for phases of at least this many requests."""


class _NoProgress:
    def advance(self, amount: int) -> None:
        pass

    def close(self) -> None:
        pass


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
            data = read_small_file(local, None) or b""
        else:
            cached = ctx.cache.blob("files", file.etag)
            if cached is not None and len(cached) == file.size:
                data = cached
            else:
                if ctx.offline:
                    raise ctx.not_cached(file.name)
                if file.size > MAX_SMALL_FILE:
                    raise SourceError(
                        f"{file.name} is {file.size} bytes, more than normscope reads of a "
                        f"metadata file (at most {MAX_SMALL_FILE}) ({ctx.where})"
                    )
                with self.remote.whole_read():
                    data = self.remote.get(file, 0, None)
                _check_digest(file, data, ctx.where)
                ctx.cache.set_blob("files", file.etag, data)
        self.counter.metadata_bytes += len(data)
        return data

    def headers(self, names: Sequence[str], weight_map: Mapping[str, str] | None) -> list[bytes]:
        files = [self.listing[n] for n in names]
        sizer = HeaderSizer(weight_map)
        remote = [f for f in files if self.ctx.hf_cached(f.name) is None]
        progress = self._progress("Reading shard headers", len(remote))
        try:
            with self.remote.whole_read():
                raws = parallel(
                    [functools.partial(self._header, f, sizer, progress) for f in files],
                    MAX_IN_FLIGHT,
                )
        finally:
            progress.close()
        self._header_bytes = sum(len(r) for r in raws)
        self._over_read = sizer.over
        return raws

    def read(self, spans: Mapping[str, Sequence[Span]]) -> dict[tuple[str, int, int], bytes]:
        """The spans, from the caches or the Hub; what is fetched is cached only if all of it
        arrives, and nothing more of this scan is cached after a `HubMismatch`."""
        with staged_writes(self.ctx.cache), self.remote.whole_read():
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
                data = _from_ranges(ctx.cache, cached, span)
                if data is None:
                    missing.setdefault(shard, []).append(span)
                else:
                    out[(shard, *span)] = data
        if not missing:
            return out
        if ctx.offline:
            count = sum(len(v) for v in missing.values())
            raise ctx.not_cached(f"the bytes of {count} norm tensor(s)")
        plan, self._over_read = plan_reads(missing, self._header_bytes, self._over_read)
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
            for got in parallel(tasks, MAX_IN_FLIGHT):
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
            if not whole_header(raw, file.size):
                if ctx.offline:
                    raise ctx.not_cached(f"the header of {file.name}")
                if file.size < 8:
                    header_length(b"", shard, file.size)  # raises: too short for safetensors
                # The 8-byte length and a guess of the JSON in one GET, the rest (if the guess
                # was short) in a second one (see the module doc).
                first = self.remote.get(file, 0, sizer.first_read(file.name, file.size))
                n = header_length(first[:8], shard, file.size)
                rest = self.remote.get(file, len(first), 8 + n) if 8 + n > len(first) else b""
                fetched = len(first) + len(rest)
                raw = (first + rest)[: 8 + n]
                ctx.cache.set_blob("headers", file.etag, raw)
                progress.advance(1)
        sizer.learn(file.name, file.size, len(raw) - 8, fetched)
        return raw


def _check_digest(file: HubFile, data: bytes, where: str) -> None:
    """A file read whole must hash to its etag in the file list: the git blob id (SHA-1 of
    `blob <size>\\0` + content) of a regular file, the SHA-256 of an LFS one. Bytes changed in
    transit (a faulty proxy or mirror) are an error, never cached. An etag of another form
    (a mirror's) cannot be checked."""
    etag = file.etag.lower()
    if len(etag) == 40:
        got = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    elif len(etag) == 64:
        got = hashlib.sha256(data).hexdigest()
    else:
        return
    if got != etag:
        raise SourceError(
            f"{file.name} as received does not match its digest in the repo's file list "
            f"({etag[:12]}, got {got[:12]}): changed in transit; nothing was cached ({where})",
            hint="run again; if it persists, check HF_ENDPOINT and any proxy in between",
        )


def _from_ranges(cache: HubCache, cached: list[tuple[int, int, Path]], span: Span) -> bytes | None:
    """The span from a cached range that covers it (read whole, to check its digest)."""
    start_wanted, end_wanted = span
    for start, end, path in cached:
        if start <= start_wanted and end_wanted <= end:
            data = cache.range_bytes(path)
            if data is None or len(data) != end - start:
                return None
            return data[start_wanted - start : end_wanted - start]
    return None
