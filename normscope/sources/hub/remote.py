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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from normscope.errors import SourceError
from normscope.sources.hub.cache import HubCache, folder_name
from normscope.sources.hub.spec import HubFile
from normscope.sources.store import ReadCounter

RETRIES = 5
"""Retries of a failed request (huggingface_hub's default), waiting RETRY_WAIT, doubled up to 8x."""
RETRY_WAIT = 1.0
# Statuses retried by the library's backoff. 429 is not: a rate limit is reported at once with
# its reset time rather than waited out silently for minutes.
_RETRY_STATUS = (408, 500, 502, 503, 504)
_EXPIRED = (400, 401, 403, 404, 410)


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

    @property
    def where(self) -> str:
        """`org/name@revision`, as messages name the repo."""
        return f"{self.repo_id}@{self.revision}"

    def not_cached(self, what: str, also: str = "") -> SourceError:
        """The error for data the caches lack while offline."""
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


class Remote:
    """Requests to the Hub: huggingface_hub's session, headers, backoff and error mapping.

    Counts every request (redirect hops included) and every body byte received.
    """

    def __init__(self, ctx: RepoContext) -> None:
        self.ctx = ctx
        self.lock = threading.Lock()
        self._headers: dict[str, str] | None = None
        self._locations: dict[str, str] = {}

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            from huggingface_hub.utils import build_hf_headers

            self._headers = build_hf_headers()
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
        """GET a JSON document from the Hub API (retries: the library's backoff)."""
        from huggingface_hub import constants
        from huggingface_hub.utils import hf_raise_for_status, http_backoff

        url = f"{constants.ENDPOINT}/{path}"
        try:
            response = http_backoff(
                "GET",
                url,
                headers=self.headers,
                params=params,
                timeout=constants.HF_HUB_ETAG_TIMEOUT,
                max_retries=RETRIES,
                base_wait_time=RETRY_WAIT,
                max_wait_time=8 * RETRY_WAIT,
                retry_on_status_codes=_RETRY_STATUS,
            )
            self._count(response)
            hf_raise_for_status(response)
            return response.json()
        except Exception as exc:
            raise self.translate(exc, "the repo's file list") from None

    def get(self, file: HubFile, start: int, end: int | None) -> bytes:
        """GET bytes [start, end) of `file` (end None: all of it), resuming a broken transfer.

        Uses huggingface_hub's streaming backoff (retries on 5xx) and, as its own `http_get`
        does, retries a body that breaks mid-way, from where it broke. Refuses a 200 answer to a
        ranged request instead of downloading the whole file. A whole file (config, index) may
        come gzip-encoded, as the Hub serves text files: the index of DeepSeek-V3 is 9 MB.
        """
        from huggingface_hub import constants, hf_hub_url
        from huggingface_hub.utils import hf_raise_for_status, http_stream_backoff, httpx

        expected = (end if end is not None else file.size) - start
        buf = bytearray()
        failures = 0
        retried_resolve = False
        while True:
            location = self._locations.get(file.name)
            url = location or hf_hub_url(self.ctx.repo_id, file.name, revision=self.ctx.commit)
            headers = dict(self.headers)
            if location is not None and _origin(location) != _origin(constants.ENDPOINT):
                # A signed CDN URL: the token must not leave the Hub (httpx drops it on redirects).
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            position = start + len(buf)
            ranged = end is not None
            if ranged:
                headers["Range"] = f"bytes={position}-{start + expected - 1}"
                headers["Accept-Encoding"] = "identity"  # CDNs may ignore Range on gzip answers
            try:
                with http_stream_backoff(
                    "GET",
                    url,
                    headers=headers,
                    timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT,
                    max_retries=RETRIES,
                    base_wait_time=RETRY_WAIT,
                    max_wait_time=8 * RETRY_WAIT,
                    retry_on_exceptions=(),
                    retry_on_status_codes=_RETRY_STATUS,
                ) as response:
                    try:
                        if response.status_code >= 400:
                            response.read()
                            hf_raise_for_status(response)
                        if ranged and response.status_code != 206:
                            raise SourceError(
                                f"the server answered a ranged request for {file.name} with HTTP "
                                f"{response.status_code}: normscope will not download the whole "
                                f"file ({self.ctx.where})",
                                hint="if HF_ENDPOINT points at a mirror, make it honour Range "
                                f"requests, or download the model with `hf download "
                                f"{self.ctx.repo_id}` and scan it from the HF cache",
                            )
                        _check_content_range(response, position, expected - len(buf), file)
                        if response.history:
                            self._locations[file.name] = str(response.url)
                        for chunk in response.iter_bytes():
                            buf += chunk
                            if len(buf) > expected:
                                raise SourceError(
                                    f"the server sent more bytes of {file.name} than asked "
                                    f"({self.ctx.where})"
                                )
                    finally:
                        self._count(response)
                if len(buf) == expected:
                    return bytes(buf)
                raise httpx.RemoteProtocolError(f"short body: {len(buf)} of {expected} bytes")
            except SourceError:
                raise
            except httpx.TransportError as exc:
                if not ranged:
                    buf.clear()  # a whole (maybe compressed) file restarts from its start
                failures += 1
                if failures > RETRIES:
                    raise SourceError(
                        f"the transfer of {file.name} broke after {len(buf)} of {expected} bytes "
                        f"and {RETRIES} retries: {exc} ({self.ctx.where})",
                        hint="check the connection and run again: what was fetched is cached",
                    ) from None
                time.sleep(min(RETRY_WAIT * 2 ** (failures - 1), 8 * RETRY_WAIT))
            except Exception as exc:
                status = _status(exc)
                if location is not None and not retried_resolve and status in _EXPIRED:
                    # The signed CDN URL expired or was refused: go through /resolve/ again.
                    self._locations.pop(file.name, None)
                    retried_resolve = True
                    continue
                raise self.translate(exc, file.name) from None

    def translate(self, exc: Exception, what: str) -> SourceError:
        """One line and a next step for every way the Hub can fail."""
        from huggingface_hub import constants, errors
        from huggingface_hub.utils import httpx

        ctx = self.ctx
        where, repo = ctx.where, ctx.repo_id
        page = f"{constants.ENDPOINT}/{repo}"
        login = "log in with `hf auth login` or set HF_TOKEN"
        if isinstance(exc, SourceError):
            return exc
        if isinstance(exc, errors.OfflineModeIsEnabled):
            return ctx.not_cached(what)
        if isinstance(exc, errors.GatedRepoError):
            if self._token() is None:
                return SourceError(
                    f"the Hub repo is gated and normscope has no token to read it ({where})",
                    hint=f"accept its conditions at {page}, then {login}",
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
                f"no such Hub model repo, or it is private ({repo}); no local path of that name "
                "exists either",
                hint="check the name"
                + ("; your token cannot see it" if token else f"; for a private repo, {login}"),
            )
        if isinstance(exc, errors.RemoteEntryNotFoundError):
            return SourceError(f"{what} not found in the Hub repo ({where})")
        if isinstance(exc, errors.HfHubHTTPError):
            status = _status(exc)
            if status == 429:
                reset = None
                with contextlib.suppress(Exception):
                    from huggingface_hub.utils import parse_ratelimit_headers

                    info = parse_ratelimit_headers(exc.response.headers)
                    reset = info.reset_in_seconds if info is not None else None
                when = f"in about {reset} s" if reset else "in a few minutes"
                return SourceError(
                    f"the Hub rate-limited these requests (HTTP 429) while reading {what} "
                    f"({where})",
                    hint=f"retry {when}: what was fetched is cached"
                    + ("" if self._token() else f"; to get higher limits, {login}"),
                )
            if status == 401:
                return SourceError(
                    f"the Hub refused the token (HTTP 401) ({where})",
                    hint=f"{login} again: the token is invalid or expired",
                )
            return SourceError(
                f"the Hub answered HTTP {status} while reading {what} ({where})",
                hint="retry later" if status is None or status >= 500 else None,
            )
        if isinstance(exc, httpx.TransportError):
            return HubUnreachable(
                f"cannot reach the Hub at {constants.ENDPOINT}: {exc or type(exc).__name__} "
                f"({where})",
                hint="check the connection or HF_ENDPOINT; with HF_HUB_OFFLINE=1 normscope uses "
                "cached data only",
            )
        return SourceError(f"reading {what} from the Hub failed: {exc} ({where})")

    def _token(self) -> str | None:
        from huggingface_hub import get_token

        try:
            return get_token()
        except Exception:
            return None


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


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
