"""How long and how often a Hub request is tried, and how quietly.

Each request gets at most `RETRIES` retries (5xx, 408, 429 after the server's delay, a broken
body resumed where it broke), all within one deadline (`NORMSCOPE_HUB_TIMEOUT`, 60 s) that holds
for the whole read — every request of a phase (the shard headers, the norm bytes) shares it, and
a watchdog closes a connection whose body is still coming when it passes — every attempt counted
in `io.requests`.
huggingface_hub's own log lines are silenced meanwhile unless the user asked for them
(`-v` or `NORMSCOPE_VERBOSE`, read into the scan options): normscope says what failed in its
own one line.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from normscope.errors import SourceError

RETRIES = 5
"""Retries of a failed request (huggingface_hub's default), waiting RETRY_WAIT, doubled up to 8x."""
RETRY_WAIT = 1.0
# Statuses retried (huggingface_hub's `_DEFAULT_RETRY_ON_STATUS_CODES`). A 429 waits what the
# server asks (RateLimit reset when nothing remains, else Retry-After), as huggingface_hub's
# `http_backoff` does, but only when that wait ends within the deadline: else it is reported at
# once with its reset time rather than waited out silently for minutes.
RETRY_STATUS = (408, 429, 500, 502, 503, 504)
TIMEOUT_ENV = "NORMSCOPE_HUB_TIMEOUT"
DEFAULT_TIMEOUT = 60.0
"""Seconds one request may take in all, retries and resumed transfers included."""


def hub_timeout() -> float:
    """The total seconds allowed per Hub request: $NORMSCOPE_HUB_TIMEOUT, else 60."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise SourceError(
            f"{TIMEOUT_ENV} must be a positive number of seconds, not '{raw[:40]}'",
            hint=f"unset {TIMEOUT_ENV} for the default of {DEFAULT_TIMEOUT:g} s",
        )
    return value


# --- huggingface_hub's logging ------------------------------------------------------------------

_log_lock = threading.Lock()
_log_holders = 0
_log_level = logging.NOTSET


@contextlib.contextmanager
def quiet_hub_logging(verbose: bool = False) -> Iterator[None]:
    """Silence the `huggingface_hub` logger during a block, unless `verbose` (`-v`: the scan
    options' `verbose`).

    NOTE: normscope turns every Hub failure into its own one line, so the library's warnings
    ("Retrying in 1s [Retry 1/5]", "HTTP Error 503 thrown while ...") are noise by default. The
    level is process-wide: like `layout.gc_paused`, the quiet is counted, so that threads in
    requests at once restore it only when the last of them is done.
    """
    global _log_holders, _log_level
    if verbose:
        yield
        return
    logger = logging.getLogger("huggingface_hub")
    with _log_lock:
        if _log_holders == 0:
            _log_level = logger.level
            logger.setLevel(logging.CRITICAL + 1)
        _log_holders += 1
    try:
        yield
    finally:
        with _log_lock:
            _log_holders -= 1
            if _log_holders == 0:
                logger.setLevel(_log_level)


_HOPELESS = (socket.gaierror, ConnectionRefusedError)


def hopeless(exc: BaseException) -> bool:
    """A connection no retry can make: the host name did not resolve (no network, a mistyped
    HF_ENDPOINT) or nothing listens there. Retrying those only makes a user wait (5 retries took
    24 s to say "cannot reach the Hub" for a mistyped local path); a broken or timed-out
    transfer, a 5xx, a 429 are retried as before.

    httpx wraps the socket's error (httpx.ConnectError <- httpcore.ConnectError <- OSError):
    the chain of causes is walked, a few links deep."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, _HOPELESS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class Attempts:
    """The tries of one request: at most RETRIES retries, all within one deadline (`until`, the
    deadline of the whole read it belongs to, when sooner than `timeout` from now)."""

    def __init__(self, timeout: float, until: float | None = None) -> None:
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        if until is not None:
            self.deadline = min(self.deadline, until)
        self.failures = 0

    def io_timeout(self, per_operation: float) -> float:
        """httpx's timeout for each connect/read: the library's, within what is left."""
        return max(0.001, min(per_operation, self.deadline - time.monotonic()))

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def retry(self, wait: float | None = None) -> bool:
        """Count a failure; wait before the next try and return True, or False: give up."""
        self.failures += 1
        if self.failures > RETRIES:
            return False
        if wait is None:
            wait = min(RETRY_WAIT * 2 ** (self.failures - 1), 8 * RETRY_WAIT)
        if time.monotonic() + wait >= self.deadline:
            return False
        time.sleep(wait)
        return True


@contextlib.contextmanager
def watchdog(response: Any, deadline: float) -> Iterator[None]:
    """Shut the socket under `response` down when `deadline` passes, so that a body trickling
    in, or stalled between two reads, cannot outlive the deadline by a read timeout (httpx's
    timeouts bound each read, not the whole body). The read then fails as a broken transfer."""
    stream = getattr(response, "extensions", {}).get("network_stream")
    sock = None
    with contextlib.suppress(Exception):
        sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is None:
        yield
        return

    def cut() -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(max(0.0, deadline - time.monotonic()), cut)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def retry_after(response: Any) -> float | None:
    """The seconds the server asks to wait, as huggingface_hub's `http_backoff` reads them: a
    429's RateLimit reset when no request remains, else `Retry-After: <seconds>` (an HTTP date
    is not honoured); None: the usual backoff."""
    headers = getattr(response, "headers", {})
    if getattr(response, "status_code", None) == 429:
        with contextlib.suppress(Exception):
            from huggingface_hub.utils import parse_ratelimit_headers

            info = parse_ratelimit_headers(headers)
            if info is not None and info.remaining == 0:
                return float(info.reset_in_seconds)
    value = headers.get("Retry-After", "").strip()
    return float(value) if value.isdigit() and len(value) <= 6 else None


class RetryStatus(Exception):
    """A response with a status worth retrying (5xx, 408)."""

    def __init__(self, response: Any) -> None:
        super().__init__(response.status_code)
        self.response = response
