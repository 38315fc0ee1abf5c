"""Object stores as a `Store`: `s3://`, `gs://`, `az://` (and `file://`) read with ranged GETs.

`open_object_checkpoint("s3://bucket/run/checkpoint-500")` returns the `Checkpoint` a local
folder would give, so `scan`, `diff`, `series` and `check` work unchanged. What is read: one
LIST of the prefix (names, sizes and ETags), config.json and the index whole, each shard's
header with one ranged GET sized by a guess (`ranged.HeaderSizer`), then only the byte
ranges asked for, close ranges coalesced (`ranged.plan_reads`), at most `MAX_IN_FLIGHT`
requests at once. Every request and body byte is counted (`ReadCounter.requests`,
`bytes_transferred`). Range GETs carry `If-Match: <ETag>`: an object rewritten during a scan is
an error, never a mix of two versions.

Client: obstore (Rust object_store), chosen by measurement over fsspec's s3fs for this pattern
(benchmarks/objstore_bench.py: 163 headers + 252 norm ranges of DeepSeek-V3 on loopback moto,
0.75 s against 1.7 s; fresh interpreter 0.8 s against 1.6-2.2 s). Credentials come from each
cloud's standard chain, never from a normscope format: AWS through boto3's session when boto3
is installed (environment, profiles and SSO, container and instance metadata), else
object_store's own chain (environment, web identity, container, instance metadata); GCS from
GOOGLE_APPLICATION_CREDENTIALS, application default credentials or the metadata server; Azure
from AZURE_STORAGE_* variables, managed identity or the Azure CLI. AWS_ENDPOINT_URL and the
other variables of each SDK apply.

Headers are cached under normscope's cache folder keyed by the object's URL and ETag (and
version): a re-scan of unchanged objects costs one LIST per checkpoint, and an object whose
ETag changed is read again, never served stale.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from normscope.errors import SourceError
from normscope.sources.layout import open_layout
from normscope.sources.ranged import HeaderSizer, parallel, plan_reads, whole_header
from normscope.sources.safetensors import INDEX_SUFFIX, header_length
from normscope.sources.store import (
    MAX_SMALL_FILE,
    Checkpoint,
    ProgressFactory,
    ReadCounter,
    Span,
    cache_root,
    read_cache_file,
    write_cache_file,
)

MAX_IN_FLIGHT = 16
"""Ranged GETs in flight at once per store (benchmarks/objstore_bench.py measured at 16)."""
EXTRAS = {
    "s3": "s3",
    "s3a": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "az": "azure",
    "abfs": "azure",
    "abfss": "azure",
    "azure": "azure",
    "file": "s3",
}
"""URL scheme -> the optional extra that reads it (file:// needs obstore too: any extra)."""
if TYPE_CHECKING:
    from obstore import GetOptions

_CODE = re.compile(r"<Code>([A-Za-z]+)</Code>")
_T = TypeVar("_T")


def looks_like_url(spec: str) -> bool:
    """True for an object-store URL normscope reads (`s3://`, `gs://`, `az://`, `file://`...)."""
    scheme, sep, _ = spec.partition("://")
    return bool(sep) and scheme.lower() in EXTRAS


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One object under a prefix: its name below the prefix, size, ETag and version."""

    name: str
    size: int
    etag: str


class Bucket:
    """One obstore store rooted at a URL's bucket; every request is counted in `counter`."""

    def __init__(self, url: str, counter: ReadCounter) -> None:
        self.url = url.rstrip("/")
        self.scheme, self.bucket, root = _split(self.url)
        self.counter = counter
        self._lock = threading.Lock()
        try:
            import obstore
        except ImportError:
            extra = EXTRAS[self.scheme]
            raise SourceError(
                f"reading {self.scheme}:// URLs needs the {extra} extra: "
                f'pip install "normscope[{extra}]"'
            ) from None
        self._obstore = obstore
        base = f"{self.scheme}://{self.bucket}" if self.scheme != "file" else "file:///"
        self.root = root if self.scheme != "file" else urlsplit(self.url).path.lstrip("/")
        self.store = _make_store(self.scheme, base)

    def _count(self, body: int) -> None:
        with self._lock:
            self.counter.requests += 1
            self.counter.bytes_transferred += body

    def key(self, name: str) -> str:
        return f"{self.root}/{name}" if self.root and name else self.root or name

    def list(self, below: str = "") -> tuple[list[str], list[ObjectInfo]]:
        """The sub-prefixes and objects one level below `self.url/below` (names below it)."""
        prefix = self.key(below).strip("/")
        try:
            found = self._obstore.list_with_delimiter(self.store, prefix or None)
        except Exception as exc:  # obstore's errors, mapped to one line
            raise _error(exc, self.url) from None
        self._count(0)
        cut = len(prefix) + 1 if prefix else 0
        dirs = [p[cut:].strip("/") for p in found["common_prefixes"]]
        objects = [
            ObjectInfo(m["path"][cut:], int(m["size"]), _etag(m.get("e_tag"), m.get("version")))
            for m in found["objects"]
        ]
        return dirs, objects

    def get(self, info: ObjectInfo, start: int | None = None, end: int | None = None) -> bytes:
        """Bytes [start, end) of an object (the whole object without a range), If-Match its ETag."""
        options: GetOptions = {}
        if start is not None:
            options["range"] = (start, end if end is not None else info.size)
        etag, _, version = info.etag.partition("@")
        if etag and self.scheme != "file":
            options["if_match"] = etag
        if version:
            options["version"] = version
        where = f"{self.url}/{info.name}"
        try:
            data = bytes(
                self._obstore.get(self.store, self.key(info.name), options=options).bytes()
            )
        except Exception as exc:
            raise _error(exc, where) from None
        self._count(len(data))
        # object_store checks each response's Content-Range; the length is checked here too,
        # as the Hub's are: bytes that are not the range asked are never measured.
        begin = 0 if start is None else start
        expected = (info.size if start is None or end is None else end) - begin
        if len(data) != expected:
            raise SourceError(
                f"the object store answered {len(data)} bytes for bytes {begin}-"
                f"{begin + expected - 1} of {info.name} ({info.size} bytes): the object changed "
                f"during the scan, or the store is not what it says ({where})",
                hint="run again",
            )
        return data


def _split(url: str) -> tuple[str, str, str]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in EXTRAS:
        raise SourceError(f"not an object-store URL ({url})")
    if scheme == "file":
        return scheme, "", parts.path
    if not parts.netloc:
        raise SourceError(f"no bucket in the URL ({url})")
    return scheme, parts.netloc, parts.path.strip("/")


def _make_store(scheme: str, base: str) -> Any:
    from obstore.store import from_url

    retry = {"max_retries": 3, "retry_timeout": timedelta(seconds=30)}
    if scheme == "file":
        return from_url(base)
    kwargs: dict[str, Any] = {"retry_config": retry}
    if scheme in ("s3", "s3a"):
        base = "s3://" + base.split("://", 1)[1]
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint and endpoint.startswith("http://"):
            kwargs["client_options"] = {"allow_http": True}
        with contextlib.suppress(ImportError):  # boto3: the AWS SDK's own credential chain
            import boto3
            from obstore.auth.boto3 import Boto3CredentialProvider

            session = boto3.Session()
            if session.get_credentials() is not None:
                kwargs["credential_provider"] = Boto3CredentialProvider(session)
    elif scheme in ("gs", "gcs"):
        base = "gs://" + base.split("://", 1)[1]
    try:
        return from_url(base, **kwargs)
    except Exception as exc:
        raise _error(exc, base) from None


def _etag(etag: str | None, version: str | None) -> str:
    return (etag or "") + (f"@{version}" if version else "")


def _error(exc: BaseException, where: str) -> SourceError:
    """One line for an obstore failure: no bucket, no object, denied, refused credentials."""
    if isinstance(exc, SourceError):
        return exc
    text = str(exc)
    code = _CODE.search(text)
    name = type(exc).__name__
    kind = code.group(1) if code else ""
    if kind in ("NoSuchBucket", "ContainerNotFound") or "bucket does not exist" in text.lower():
        return SourceError(f"no such bucket '{_split(where)[1]}' ({where})")
    if kind in ("AccessDenied", "AuthorizationFailure", "AuthorizationPermissionMismatch") or (
        name == "PermissionDeniedError"
    ):
        return SourceError(f"access denied: the credentials in use may not read it ({where})")
    if kind in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken") or (
        name == "UnauthenticatedError"
    ):
        return SourceError(f"the credentials were refused ({kind or name}) ({where})")
    if kind in ("NoSuchKey", "BlobNotFound") or isinstance(exc, FileNotFoundError):
        return SourceError(f"no such object ({where})")
    if kind == "PreconditionFailed" or name == "PreconditionError":
        return SourceError(f"the object changed while it was read: scan again ({where})")
    first = text.strip().splitlines()[0] if text.strip() else name
    return SourceError(f"cannot read the object store: {first[:200]} ({where})")


class ObjectStore:
    """The objects directly under one prefix (or one object of it), as a `Store`."""

    def __init__(self, bucket: Bucket, objects: Sequence[ObjectInfo], only: str | None = None):
        self.bucket = bucket
        self.counter = bucket.counter
        self.warnings: list[str] = []
        self.only = only
        self.objects = {o.name: o for o in objects}
        self._progress: ProgressFactory | None = None
        self._header_bytes = 0
        self._over_read = 0

    # --- the Store interface ----------------------------------------------------------------

    def path(self, name: str) -> str:
        return f"{self.bucket.url}/{name}"

    def names(self, suffix: str) -> list[str]:
        if self.only is not None:
            return [] if suffix == INDEX_SUFFIX else [self.only]
        return [n for n in self.objects if n.endswith(suffix)]

    def size(self, name: str) -> int | None:
        info = self.objects.get(name)
        return None if info is None else info.size

    def fetch(self, name: str) -> bytes | None:
        info = self.objects.get(name)
        if info is None or self.only is not None:
            return None
        if info.size > MAX_SMALL_FILE:
            raise SourceError(
                f"{name} is {info.size} bytes, more than normscope reads of a metadata file "
                f"(at most {MAX_SMALL_FILE}) ({self.path(name)})"
            )
        data = self.bucket.get(info)
        self.counter.metadata_bytes += len(data)
        return data

    def headers(self, names: Sequence[str], weight_map: Mapping[str, str] | None) -> list[bytes]:
        sizer = HeaderSizer(weight_map)
        tasks = [functools.partial(self._header, self.objects[n], sizer) for n in names]
        progress = self._progress("Reading shard headers", len(tasks)) if self._progress else None
        try:
            raws = parallel(tasks, MAX_IN_FLIGHT, None if progress is None else progress.advance)
        finally:
            if progress is not None:
                progress.close()
        self._header_bytes = sum(len(r) for r in raws)
        self._over_read = sizer.over
        return raws

    def read(self, spans: Mapping[str, Sequence[Span]]) -> dict[tuple[str, int, int], bytes]:
        by_shard = {shard: sorted(set(s)) for shard, s in spans.items()}
        plan, self._over_read = plan_reads(
            {s: list(r) for s, r in by_shard.items()}, self._header_bytes, self._over_read
        )
        prefix = len(self.bucket.url) + 1

        def fetch(shard: str, start: int, end: int) -> dict[tuple[str, int, int], bytes]:
            info = self.objects[shard[prefix:]]
            data = self.bucket.get(info, start, end)
            if len(data) != end - start:
                raise SourceError(
                    f"short read of bytes {start}..{end}: the object changed or is truncated "
                    f"({shard})"
                )
            return {
                (shard, a, b): data[a - start : b - start]
                for a, b in by_shard[shard]
                if start <= a and b <= end
            }

        out: dict[tuple[str, int, int], bytes] = {}
        tasks = [functools.partial(fetch, s, a, b) for s, rs in plan.items() for a, b in rs]
        for got in parallel(tasks, MAX_IN_FLIGHT):
            out.update(got)
        return out

    def missing_shard(self, name: str, index: str) -> SourceError:
        return SourceError(
            f"the index names shard '{name}' but there is no such object ({index})",
            hint="the checkpoint is incomplete in the bucket: upload every shard",
        )

    def no_shards(self) -> SourceError:
        hint = None
        with contextlib.suppress(SourceError):
            if self.bucket.list()[0]:
                hint = "for a prefix of checkpoints, use `normscope series`"
        return SourceError(f"no .safetensors objects under the prefix ({self.bucket.url}/)", hint)

    # --- headers ----------------------------------------------------------------------------

    def _header(self, info: ObjectInfo, sizer: HeaderSizer) -> bytes:
        shard = self.path(info.name)
        cache = _cache_path(shard, info.etag)
        raw = read_cache_file(cache, self.warnings) if cache is not None else None
        fetched = 0
        if raw is None or not whole_header(raw, info.size):
            if info.size < 8:
                header_length(b"", shard, info.size)  # raises: too short for safetensors
            first = self.bucket.get(info, 0, sizer.first_read(info.name, info.size))
            n = header_length(first[:8], shard, info.size)
            rest = self.bucket.get(info, len(first), 8 + n) if 8 + n > len(first) else b""
            fetched = len(first) + len(rest)
            raw = (first + rest)[: 8 + n]
            if cache is not None:
                _write_cached(cache, raw, self.warnings)
        sizer.learn(info.name, info.size, len(raw) - 8, fetched)
        return raw


def _cache_path(url: str, etag: str) -> Path | None:
    """`<cache>/objects/<sha256(url + etag)>`; None for an object without an ETag."""
    if not etag:
        return None
    digest = hashlib.sha256(f"{url}\0{etag}".encode()).hexdigest()
    return cache_root() / "objects" / digest[:2] / digest


def _write_cached(path: Path, data: bytes, warnings: list[str]) -> None:
    """Atomic and best-effort: a cache that cannot be written is said once, never an error."""
    try:
        write_cache_file(path, data)
    except OSError as exc:
        message = f"cannot write the normscope cache ({exc.strerror}) ({path.parent.parent})"
        if message not in warnings:
            warnings.append(message)


def list_prefix(url: str) -> tuple[list[str], list[ObjectInfo]]:
    """The sub-prefixes and objects directly under `url` (discovery of a run's checkpoints)."""
    return Bucket(url, ReadCounter()).list()


def open_object_checkpoint(url: str, progress: ProgressFactory | None = None) -> Checkpoint:
    """Open the checkpoint at an object-store URL: a prefix of shards, or one `.safetensors`."""
    url = url.rstrip("/")
    only = None
    if url.endswith(".safetensors"):
        url, _, only = url.rpartition("/")
    bucket = Bucket(url, ReadCounter())
    dirs, objects = bucket.list()
    if only is not None:
        objects = [o for o in objects if o.name == only]
        if not objects:
            raise SourceError(f"no such object ({url}/{only})")
    elif not objects and not dirs:
        raise SourceError(f"no objects under the prefix ({url}/)")
    store = ObjectStore(bucket, objects, only)
    store._progress = progress
    return open_layout(store, url if only is None else f"{url}/{only}")
