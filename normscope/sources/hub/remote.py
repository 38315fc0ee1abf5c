"""Requests to the Hub, through huggingface_hub: its session, headers, backoff and errors.

`RepoContext` is the repo being read (id, revision, the commit it resolved to, counters,
warnings, caches); `Remote` makes the requests, counts each one (redirect hops included) and
every body byte received, and turns every failure into one `SourceError` with a next step.
huggingface_hub is imported inside the methods: only a Hub source that needs the network pays.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from normscope.errors import SourceError
from normscope.sources.hub.cache import HubCache, folder_name
from normscope.sources.hub.retry import (
    RETRIES,
    RETRY_STATUS,
    TIMEOUT_ENV,
    Attempts,
    RetryStatus,
    hopeless,
    hub_timeout,
    quiet_hub_logging,
    retry_after,
    watchdog,
)
from normscope.sources.hub.spec import HubFile
from normscope.sources.store import CORRUPT_CACHE, ReadCounter

_EXPIRED = (400, 401, 403, 404, 410)
_ETAG = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_LOGIN = "log in with `hf auth login` or set HF_TOKEN"


@dataclass
class RepoContext:
    """One Hub repo being read: what was asked, what it resolved to, and what it cost."""

    repo_id: str
    revision: str
    offline: bool
    cache: HubCache
    hf_cache: Path
    """huggingface_hub's cache folder (HF_HUB_CACHE)."""
    commit: str = ""
    counter: ReadCounter = field(default_factory=ReadCounter)
    warnings: list[str] = field(default_factory=list)
    verbose: bool = False
    """Let huggingface_hub's own log lines through (`-v`)."""
    token: str | None = field(default=None, repr=False)
    """`--token`; None: huggingface_hub's own (HF_TOKEN, `hf auth login`)."""
    local_also: str = ""
    """Added to errors for a bare `org/name`: no local path either (`hf://`, a Hub URL: none)."""

    @property
    def where(self) -> str:
        """`org/name@revision`, as messages name the repo."""
        return f"{self.repo_id}@{self.revision}"

    def not_cached(self, what: str, also: str = "") -> SourceError:
        """The error for data the caches lack while offline (and why, if an entry was corrupt)."""
        corrupt = next((w for w in self.warnings if w.startswith(CORRUPT_CACHE)), None)
        if corrupt is not None:
            also += f"; {corrupt}"
        return SourceError(
            f"offline (HF_HUB_OFFLINE=1) and {what} is not cached ({self.where}){also}",
            hint=f"run once online to cache its headers and norms, or download the model with "
            f"`hf download {self.repo_id}`",
        )

    def hf_cached(self, name: str) -> Path | None:
        """The file in the Hugging Face cache at our commit, if it was downloaded."""
        path = self.hf_cache / folder_name(self.repo_id) / "snapshots" / self.commit / name
        return path if path.is_file() else None


class HubUnreachable(SourceError):
    """The Hub could not be reached at all (the caches may still answer)."""


class HubMismatch(SourceError):
    """A `/resolve/` answer disagrees with the file list: another commit or another file."""


@contextlib.contextmanager
def staged_writes(cache: HubCache) -> Iterator[None]:
    """The cache writes of a block reach the disk only if the block succeeds; after a
    `HubMismatch`, what this scan had written is removed too, and nothing more is kept."""
    cache.begin()
    try:
        yield
    except HubMismatch:
        cache.discard(poison=True)
        raise
    except BaseException:
        cache.discard()
        raise
    cache.commit()


@dataclass
class _Transfer:
    """One file's GET across its tries: the bytes asked, those received, the time left."""

    file: HubFile
    start: int
    expected: int
    ranged: bool
    """A byte range (a header, norm bytes), not a whole file (config, index)."""
    attempts: Attempts
    buf: bytearray = field(default_factory=bytearray)
    retried_resolve: bool = False
    """The redirect target was refused once and /resolve/ asked again."""

    @property
    def key(self) -> tuple[str, str]:
        """The redirect memo's key: a target is reused only for the same file version."""
        return (self.file.name, self.file.etag)


class Remote:
    """Requests to the Hub: huggingface_hub's session, headers, backoff and error mapping.

    Counts every request (redirect hops included) and every body byte received.
    """

    def __init__(self, ctx: RepoContext) -> None:
        self.ctx = ctx
        self.lock = threading.Lock()
        self._until: float | None = None
        """The deadline of the read in progress (`whole_read`), shared by its requests."""
        self._headers: dict[str, str] | None = None
        self._locations: dict[tuple[str, str], str] = {}
        """Where each file's `/resolve/` redirected, by (name, etag): the CDN URL, checked."""

    @contextlib.contextmanager
    def whole_read(self) -> Iterator[None]:
        """Every request made in the block (from any thread) ends within one `hub_timeout()`
        from now: the deadline is for the whole read (the shard headers, the norm ranges), not
        for each of its requests. Nested blocks keep the outer deadline."""
        if self._until is not None:
            yield
            return
        self._until = time.monotonic() + hub_timeout()
        try:
            yield
        finally:
            self._until = None

    def _attempts(self) -> Attempts:
        return Attempts(hub_timeout(), self._until)

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            from huggingface_hub.utils import build_hf_headers

            self._headers = build_hf_headers(token=self.ctx.token)
        return self._headers

    def _count(self, response: Any) -> None:
        """Count a response and its redirect hops: requests, and body bytes as they came over
        the wire (compressed, for a gzip-encoded config or index)."""
        with self.lock:
            self.ctx.counter.requests += 1 + len(response.history)
            self.ctx.counter.bytes_transferred += response.num_bytes_downloaded + sum(
                h.num_bytes_downloaded for h in response.history
            )

    def api(self, path: str, params: dict[str, Any]) -> Any:
        """GET a JSON document from the Hub API (retried on 5xx and broken connections)."""
        from huggingface_hub import constants
        from huggingface_hub.utils import close_session, get_session, hf_raise_for_status, httpx

        url = f"{constants.ENDPOINT}/{path}"
        what = "the repo's file list"
        attempts = self._attempts()
        with quiet_hub_logging(self.ctx.verbose):
            while True:
                try:
                    with (
                        get_session().stream(
                            "GET",
                            url,
                            headers=self.headers,
                            params=params,
                            timeout=attempts.io_timeout(constants.HF_HUB_ETAG_TIMEOUT),
                        ) as response,
                        watchdog(response, attempts.deadline),
                    ):
                        response.read()
                except httpx.TransportError as exc:
                    if isinstance(exc, httpx.ConnectError):
                        close_session()
                    if attempts.expired:
                        raise self._timed_out(what, attempts) from None
                    if not hopeless(exc) and attempts.retry():
                        continue
                    raise self.translate(exc, what) from None
                self._count(response)
                if response.status_code in RETRY_STATUS and attempts.retry(retry_after(response)):
                    continue
                try:
                    hf_raise_for_status(response)
                    return response.json()
                except Exception as exc:
                    raise self.translate(exc, what) from None

    def get(self, file: HubFile, start: int, end: int | None) -> bytes:
        """GET bytes [start, end) of `file` (end None: all of it), resuming a broken transfer.

        Retries 5xx answers and broken bodies (from where they broke, as huggingface_hub's own
        `http_get` does), every try counted in `requests`, all within `hub_timeout()` seconds.
        Checks every `/resolve/` hop against the file list (`_verify`) and reuses its redirect
        target, keyed by the file's etag. Refuses a 200 answer to a ranged request instead of
        downloading the whole file. A whole file (config, index) may come gzip-encoded, as the
        Hub serves text files: the index of DeepSeek-V3 is 9 MB.
        """
        from huggingface_hub.utils import close_session, hf_raise_for_status, httpx

        expected = (end if end is not None else file.size) - start
        t = _Transfer(file, start, expected, end is not None, self._attempts())
        with quiet_hub_logging(self.ctx.verbose):
            while True:
                location = self._locations.get(t.key)
                try:
                    return self._transfer(t, location)
                except SourceError:
                    raise
                except RetryStatus as status:
                    if t.attempts.retry(retry_after(status.response)):
                        continue
                    try:
                        hf_raise_for_status(status.response)
                    except Exception as exc:
                        raise self.translate(exc, file.name) from None
                    raise self.translate(status, file.name) from None
                except httpx.TransportError as exc:
                    if isinstance(exc, httpx.ConnectError):
                        close_session()
                    if not t.ranged:
                        t.buf.clear()  # a whole (maybe compressed) file restarts from its start
                    if t.attempts.expired:
                        raise self._timed_out(file.name, t.attempts, len(t.buf), expected) from None
                    if hopeless(exc):
                        raise self.translate(exc, file.name) from None
                    if t.attempts.retry():
                        continue
                    raise SourceError(
                        f"the transfer of {file.name} broke after {len(t.buf)} of {expected} "
                        f"bytes and {RETRIES} retries: {exc} ({self.ctx.where})",
                        hint="check the connection and run again",
                    ) from None
                except Exception as exc:
                    status_code = _status(exc)
                    if location is not None and not t.retried_resolve and status_code in _EXPIRED:
                        # The signed CDN URL expired or was refused: go through /resolve/ again.
                        self._locations.pop(t.key, None)
                        t.retried_resolve = True
                        continue
                    raise self.translate(exc, file.name) from None

    def _transfer(self, t: _Transfer, location: str | None) -> bytes:
        """One GET of what is still missing, from /resolve/ or the redirect target it gave."""
        from huggingface_hub import constants, hf_hub_url
        from huggingface_hub.utils import get_session, httpx

        url = location or hf_hub_url(self.ctx.repo_id, t.file.name, revision=self.ctx.commit)
        headers = dict(self.headers)
        if location is not None and _origin(location) != _origin(constants.ENDPOINT):
            # A signed CDN URL: the token must not leave the Hub.
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        position = t.start + len(t.buf)
        if t.ranged:
            headers["Range"] = f"bytes={position}-{t.start + t.expected - 1}"
            headers["Accept-Encoding"] = "identity"  # CDNs may ignore Range on gzip
        with (
            get_session().stream(
                "GET",
                url,
                headers=headers,
                timeout=t.attempts.io_timeout(constants.HF_HUB_DOWNLOAD_TIMEOUT),
            ) as response,
            watchdog(response, t.attempts.deadline),
        ):
            try:
                self._receive(response, t, position)
            finally:
                self._count(response)
        if len(t.buf) == t.expected:
            return bytes(t.buf)
        raise httpx.RemoteProtocolError(f"short body: {len(t.buf)} of {t.expected} bytes")

    def _receive(self, response: Any, t: _Transfer, position: int) -> None:
        """Check one answer (status, the file list, the range asked) and append its body."""
        from huggingface_hub.utils import hf_raise_for_status

        if response.status_code in RETRY_STATUS:
            response.read()
            raise RetryStatus(response)
        if response.status_code >= 400:
            response.read()
            hf_raise_for_status(response)
        self._verify(response, t.file)
        if t.ranged and response.status_code != 206:
            raise self._range_ignored(t.file, response.status_code)
        _check_content_range(response, position, t.expected - len(t.buf), t.file)
        if response.history:
            self._locations[t.key] = str(response.url)
        for chunk in response.iter_bytes():
            t.buf += chunk
            if len(t.buf) > t.expected:
                raise SourceError(
                    f"the server sent more bytes of {t.file.name} than asked ({self.ctx.where})"
                )
            if t.attempts.expired and len(t.buf) < t.expected:
                raise self._timed_out(t.file.name, t.attempts, len(t.buf), t.expected)

    def _verify(self, response: Any, file: HubFile) -> None:
        """Check each `/resolve/` hop of `response` against the file list: the commit it served
        (`X-Repo-Commit`) and the file's etag (`X-Linked-Etag` for LFS files, else `ETag`).

        A header that is absent, or an etag that is no git or LFS hash, is not checked (mirrors,
        weak etags); one that disagrees is a `HubMismatch`.
        """
        for hop in (*response.history, response):
            if "/resolve/" not in hop.url.path:
                continue
            commit = hop.headers.get("X-Repo-Commit")
            if commit is not None and commit.strip() != self.ctx.commit:
                raise HubMismatch(
                    f"the Hub served {file.name} of commit {commit.strip()[:12]}, not of "
                    f"{self.ctx.commit[:12]} whose file list this scan read: the repo changed "
                    f"during the scan, or a proxy ignores the revision ({self.ctx.where})",
                    hint="run again to scan the new commit; nothing from this scan was cached",
                )
            etag = _etag(hop.headers.get("X-Linked-Etag") or hop.headers.get("ETag"))
            if etag is not None and file.etag and etag != file.etag:
                raise HubMismatch(
                    f"the Hub served {file.name} with etag {etag[:12]}, but the file list of "
                    f"commit {self.ctx.commit[:12]} gives {file.etag[:12]}: the file changed "
                    f"during the scan, or a proxy serves another version ({self.ctx.where})",
                    hint="run again; nothing from this scan was cached",
                )

    def _range_ignored(self, file: HubFile, status: int) -> SourceError:
        return SourceError(
            f"the server answered a ranged request for {file.name} with HTTP {status}: "
            f"normscope will not download the whole file ({self.ctx.where})",
            hint="if HF_ENDPOINT points at a mirror, make it honour Range requests, or download "
            f"the model with `hf download {self.ctx.repo_id}` and scan it from the HF cache",
        )

    def _timed_out(
        self, what: str, attempts: Attempts, got: int | None = None, expected: int | None = None
    ) -> SourceError:
        progress = "" if got is None else f" ({got} of {expected} bytes)"
        return SourceError(
            f"no complete answer for {what} within {attempts.timeout:g} s{progress}: the "
            f"transfer stalled ({self.ctx.where})",
            hint=f"check the connection and run again; {TIMEOUT_ENV} sets the limit in seconds",
        )

    def translate(self, exc: Exception, what: str) -> SourceError:
        """One line and a next step for every way the Hub can fail."""
        from huggingface_hub import constants, errors
        from huggingface_hub.utils import httpx

        if isinstance(exc, SourceError):
            return exc
        if isinstance(exc, errors.OfflineModeIsEnabled):
            return self.ctx.not_cached(what)
        refused = self._refused(exc)
        if refused is not None:
            return refused
        if isinstance(exc, errors.RemoteEntryNotFoundError):
            return SourceError(f"{what} not found in the Hub repo ({self.ctx.where})")
        if isinstance(exc, errors.HfHubHTTPError):
            return self._http_error(exc, what)
        if isinstance(exc, httpx.TransportError):
            return HubUnreachable(
                f"cannot reach the Hub at {constants.ENDPOINT}: {exc or type(exc).__name__} "
                f"({self.ctx.where})",
                hint="check the connection or HF_ENDPOINT; with HF_HUB_OFFLINE=1 normscope uses "
                "cached data only",
            )
        return SourceError(f"reading {what} from the Hub failed: {exc} ({self.ctx.where})")

    def _refused(self, exc: Exception) -> SourceError | None:
        """A gated repo, a missing revision or repo (or a private one): what to do about it."""
        from huggingface_hub import constants, errors

        ctx = self.ctx
        where, repo = ctx.where, ctx.repo_id
        page = f"{constants.ENDPOINT}/{repo}"
        if isinstance(exc, errors.GatedRepoError):
            if self._token() is None:
                return SourceError(
                    f"the Hub repo is gated and normscope has no token to read it ({where})",
                    hint=f"accept its conditions at {page}, then {_LOGIN}",
                )
            return SourceError(
                f"your token has no access to this gated Hub repo ({where})",
                hint=f"request access at {page} (or use a token that has it)",
            )
        if isinstance(exc, errors.RevisionNotFoundError):
            return SourceError(
                f"revision '{ctx.revision}' not found in Hub repo ({repo})",
                hint=f"check the branch, tag or commit; they are listed at {page}",
            )
        if isinstance(exc, errors.RepositoryNotFoundError):
            token = self._token() is not None
            return SourceError(
                f"no such Hub model repo, or it is private ({repo}){ctx.local_also}",
                hint="check the name"
                + ("; your token cannot see it" if token else f"; for a private repo, {_LOGIN}"),
            )
        return None

    def _http_error(self, exc: Any, what: str) -> SourceError:
        """An HTTP error answer: rate limits (with when to retry), a refused token, the rest."""
        where = self.ctx.where
        status = _status(exc)
        if status == 429:
            reset: float | None = None
            with contextlib.suppress(Exception):
                from huggingface_hub.utils import parse_ratelimit_headers

                info = parse_ratelimit_headers(exc.response.headers)
                reset = info.reset_in_seconds if info is not None else None
            if reset is None:
                reset = retry_after(exc.response)
            when = f"in about {reset:g} s" if reset else "in a few minutes"
            return SourceError(
                f"the Hub rate-limited these requests (HTTP 429) while reading {what} ({where})",
                hint=f"retry {when}"
                + ("" if self._token() else f"; to get higher limits, {_LOGIN}"),
            )
        if status == 401:
            return SourceError(
                f"the Hub refused the token (HTTP 401) ({where})",
                hint=f"{_LOGIN} again: the token is invalid or expired",
            )
        return SourceError(
            f"the Hub answered HTTP {status} while reading {what} ({where})",
            hint="retry later" if status is None or status >= 500 else None,
        )

    def _token(self) -> str | None:
        from huggingface_hub import get_token

        with contextlib.suppress(Exception):  # an unreadable token file: as no token
            return self.ctx.token or get_token()
        return None


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _etag(value: str | None) -> str | None:
    """A `W/"..."` or `"..."` header value as the bare hash, or None when it is no git/LFS hash."""
    if value is None:
        return None
    value = value.strip().removeprefix("W/").strip('"').lower()
    return value if _ETAG.fullmatch(value) else None


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


def _check_content_range(response: Any, start: int, length: int, file: HubFile) -> None:
    """A 206 must cover exactly what was asked, in a file of the size the Hub announced."""
    if response.status_code != 206:
        return
    m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", ""))
    if (
        m is None
        or int(m.group(1)) != start
        or int(m.group(2)) != start + length - 1
        or (m.group(3) != "*" and int(m.group(3)) != file.size)
    ):
        raise SourceError(
            f"unexpected Content-Range '{response.headers.get('Content-Range')}' for bytes "
            f"{start}-{start + length - 1} of {file.name} ({file.size} bytes): the file changed "
            "or the server is not a Hub"
        )
