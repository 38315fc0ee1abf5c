"""A fake Hugging Face Hub on 127.0.0.1: the endpoints huggingface_hub 2.x calls, served honestly.

Two real HTTP servers (`http.server` in threads): the Hub itself and a CDN on another port, so
that a large file's `/resolve/` answer is a cross-origin redirect, as on huggingface.co (where
LFS/Xet files live on cas-bridge.xethub.hf.co). What is served, and why:

- `GET /api/models/{repo}[/revision/{rev}]` (`model_info`, `?blobs=true` adds size, blobId and
  LFS sha256 to each sibling): resolves a branch or tag to a commit and lists the files.
- `GET /api/models/{repo}/refs` (`list_repo_refs`): branches and tags with their commits.
- `HEAD|GET /{repo}/resolve/{rev}/{path}`: a regular file answers 200 (206 with `Range`) with
  `ETag` (git blob id), `X-Repo-Commit`, `Content-Length`, gzip-encoded when the client
  accepts it and asked for no range (as the Hub serves text files); an LFS file
  (`*.safetensors`) answers 302 to the CDN with `X-Linked-Etag` (sha256), `X-Linked-Size`,
  `X-Repo-Commit`.
- `HEAD|GET /blobs/{sha256}` on the CDN: the bytes, honouring one `Range` (206 + `Content-Range`,
  416 when unsatisfiable), without authentication (a client must not send its token there).
- `GET /api/agent-harnesses`: fetched by huggingface_hub itself once a process (`served` and
  the counters leave it out: it is not the client's doing).
- Errors as the Hub sends them, with `X-Error-Code` / `X-Error-Message`: RepoNotFound (401 without
  a token, 404 with one), RevisionNotFound and EntryNotFound (404), GatedRepo (401 without a
  token, 403 with one that has no access), an invalid token (401), and injected faults: any
  status (429 with `RateLimit` headers), latency, a connection closed after N body bytes.

Every request is logged with the body bytes actually written, so tests can assert what a client
transferred. Run it by hand with `python tests/hubserver.py org/name=DIR ...`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
HOUSEKEEPING = ("/api/agent-harnesses",)
CHUNK = 16 * 1024


@dataclass(frozen=True)
class Blob:
    """One file's bytes and the ids the Hub derives from them."""

    data: bytes
    lfs: bool

    @property
    def oid(self) -> str:
        """The git blob id (sha1 of `blob <size>\\0<data>`; of the pointer file for LFS files)."""
        body = self.pointer if self.lfs else self.data
        return hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        return (
            f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\n"
            f"size {len(self.data)}\n"
        ).encode()


@dataclass
class Repo:
    """A model repo: commits (file name -> Blob), branches and tags."""

    repo_id: str
    private: bool = False
    gated: bool = False
    commits: dict[str, dict[str, Blob]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> str | None:
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.tags:
            return self.tags[revision]
        if re.fullmatch(r"[0-9a-f]{7,40}", revision):
            hits = [c for c in self.commits if c.startswith(revision)]
            if len(hits) == 1:
                return hits[0]
        return None


@dataclass(frozen=True)
class Served:
    """One request as the server saw it."""

    server: str
    """`hub` or `cdn`."""
    method: str
    path: str
    status: int
    range: str | None
    body_bytes: int
    """Body bytes actually written (fewer than announced when the connection was broken)."""
    authorized: bool
    """Whether an Authorization header came with it."""
    authorization: str | None = field(default=None, repr=False)
    """The Authorization header itself (a test of `--token` compares it)."""


@dataclass
class Fault:
    """Something to do instead of serving a matching request."""

    pattern: re.Pattern[str]
    """Searched in `METHOD server:path range` (e.g. `GET cdn:/blobs/<sha> bytes=8-4711`)."""
    status: int = 0
    """Answer with this status (0: serve normally, but see break_after)."""
    error_code: str | None = None
    message: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    break_after: int | None = None
    """Close the connection after this many body bytes."""
    times: int | None = None
    """How many requests it applies to (None: all)."""
    reset: bool = False
    """With break_after: abort the connection (TCP RST) instead of closing it (FIN)."""
    stall: float = 0.0
    """With break_after: after that many bytes, send nothing for this many seconds (or until
    the server stops), then close."""
    corrupt: bool = False
    """Serve the file with a bit of its first byte flipped (bytes changed in transit)."""
    trickle: float = 0.0
    """With break_after: after that many bytes, send the rest one byte every this many seconds
    (a body that never stalls long enough for a read timeout)."""
    override: dict[str, str] = field(default_factory=dict)
    """Headers to send instead of the true ones (a wrong ETag, Content-Range, X-Repo-Commit)."""
    ignore_range: bool = False
    """Answer a ranged request with the whole file (200), as a server without Range support."""
    commit: str | None = None
    """On /resolve/: serve the file of this commit whatever the URL names (a repo that moved
    under a mirror or cache that ignores the revision)."""


class FakeHub:
    """The fake Hub and its CDN; `start()` them, point `HF_ENDPOINT` at `endpoint`."""

    def __init__(self, latency: float = 0.0) -> None:
        self.repos: dict[str, Repo] = {}
        self.tokens: dict[str, set[str]] = {}
        self.latency = latency
        self.faults: list[Fault] = []
        self.log: list[Served] = []
        self.active = 0
        """Requests being answered right now."""
        self._lock = threading.Lock()
        self._servers: list[ThreadingHTTPServer] = []
        self.endpoint = ""
        self.cdn = ""
        self.stopping = threading.Event()
        """Set by stop(): stalled answers give up at once."""

    # --- content ----------------------------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, bytes] | Path,
        *,
        branch: str = "main",
        tags: tuple[str, ...] = (),
        private: bool = False,
        gated: bool = False,
    ) -> str:
        """Create a repo whose first commit holds `files` (a mapping or a directory); return it."""
        self.repos[repo_id] = Repo(repo_id, private=private, gated=gated)
        return self.add_commit(repo_id, files, branch=branch, tags=tags)

    def add_commit(
        self,
        repo_id: str,
        files: Mapping[str, bytes] | Path,
        *,
        branch: str | None = "main",
        tags: tuple[str, ...] = (),
    ) -> str:
        """Add a commit holding exactly `files`, move `branch` to it, tag it; return its id."""
        repo = self.repos[repo_id]
        if isinstance(files, Path):
            files = {p.name: p.read_bytes() for p in sorted(files.iterdir()) if p.is_file()}
        blobs = {name: Blob(data, name.endswith(LFS_SUFFIXES)) for name, data in files.items()}
        seed = json.dumps([len(repo.commits), {n: b.oid for n, b in sorted(blobs.items())}])
        commit = hashlib.sha1(f"{repo_id}\0{seed}".encode()).hexdigest()
        repo.commits[commit] = blobs
        if branch is not None:
            repo.branches[branch] = commit
        for tag in tags:
            repo.tags[tag] = commit
        return commit

    def grant(self, token: str, *repo_ids: str) -> None:
        """Make `token` valid, with read access to `repo_ids` (gated or private)."""
        self.tokens.setdefault(token, set()).update(repo_ids)

    # --- faults -----------------------------------------------------------------------------------

    def fail(
        self,
        pattern: str,
        status: int,
        *,
        error_code: str | None = None,
        message: str | None = None,
        headers: dict[str, str] | None = None,
        times: int | None = None,
    ) -> None:
        """Answer requests matching `pattern` with `status` (and the Hub's error headers)."""
        self.faults.append(
            Fault(re.compile(pattern), status, error_code, message, headers or {}, None, times)
        )

    def rate_limit(self, pattern: str, times: int | None = None) -> None:
        """Answer 429 the way the Hub does (IETF RateLimit headers, nothing left in the window)."""
        self.fail(
            pattern,
            429,
            message="You have exceeded our hourly quotas for action 'resolve'.",
            headers={
                "RateLimit": '"resolvers";r=0;t=1',
                "RateLimit-Policy": '"fixed window";"resolvers";q=3000;w=300',
            },
            times=times,
        )

    def break_after(self, pattern: str, nbytes: int, times: int | None = None) -> None:
        """Close the connection after `nbytes` body bytes of matching requests."""
        self.faults.append(Fault(re.compile(pattern), break_after=nbytes, times=times))

    def inject(self, pattern: str, times: int | None = None, **what: Any) -> Fault:
        """Add a fault of any kind (see `Fault`) for requests matching `pattern`."""
        fault = Fault(re.compile(pattern), times=times, **what)
        self.faults.append(fault)
        return fault

    def _fault(self, key: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.pattern.search(key) and (fault.times is None or fault.times > 0):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    # --- accounting -------------------------------------------------------------------------------

    def record(self, served: Served) -> None:
        with self._lock:
            self.log.append(served)

    def reset_log(self) -> None:
        """Forget what was served, once the requests still being answered are done (else a
        late request of the previous step lands in the next step's log)."""
        self._wait_idle()
        with self._lock:
            self.log.clear()

    def _wait_idle(self, seconds: float = 5) -> None:
        deadline = time.monotonic() + seconds
        while self.active and time.monotonic() < deadline:
            time.sleep(0.01)

    @property
    def served(self) -> list[Served]:
        """The log without the library's own housekeeping (its agent registry, once a process).

        Waits (up to 5 s) for requests still being answered: a client that gave up early may
        return before the server has finished writing.
        """
        self._wait_idle()
        with self._lock:
            return [s for s in self.log if s.path not in HOUSEKEEPING]

    @property
    def requests(self) -> int:
        return len(self.served)

    @property
    def bytes_sent(self) -> int:
        return sum(s.body_bytes for s in self.served)

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> FakeHub:
        for role in ("hub", "cdn"):
            server = _Server(("127.0.0.1", 0), _handler(self, role))
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
            self._servers.append(server)
        self.endpoint = f"http://127.0.0.1:{self._servers[0].server_address[1]}"
        self.cdn = f"http://127.0.0.1:{self._servers[1].server_address[1]}"
        return self

    def stop(self) -> None:
        self.stopping.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()

    # --- what the Hub answers ---------------------------------------------------------------------

    def access(self, repo_id: str, token: str | None, files: bool) -> tuple[int, str, str] | None:
        """None when the request may proceed, else (status, X-Error-Code, X-Error-Message)."""
        if token is not None and token not in self.tokens:
            return 401, "", "Invalid credentials in Authorization header"
        repo = self.repos.get(repo_id)
        allowed = token is not None and repo_id in self.tokens.get(token, set())
        if repo is None or (repo.private and not allowed):
            return (404 if token else 401), "RepoNotFound", "Repository not found"
        if repo.gated and files and not allowed:
            if token is None:
                return (
                    401,
                    "GatedRepo",
                    f"Access to model {repo_id} is restricted. You must have access to it and be "
                    "authenticated to access it. Please log in.",
                )
            return (
                403,
                "GatedRepo",
                f"Access to model {repo_id} is restricted and you are not in the authorized list. "
                f"Visit {self.endpoint}/{repo_id} to ask for access.",
            )
        return None

    def model_info(self, repo: Repo, commit: str, blobs: bool) -> dict[str, Any]:
        siblings = []
        for name, blob in sorted(repo.commits[commit].items()):
            entry: dict[str, Any] = {"rfilename": name}
            if blobs:
                entry["blobId"] = blob.oid
                entry["size"] = len(blob.data)
                if blob.lfs:
                    entry["lfs"] = {
                        "sha256": blob.sha256,
                        "size": len(blob.data),
                        "pointerSize": len(blob.pointer),
                    }
            siblings.append(entry)
        return {
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "private": repo.private,
            "pipeline_tag": "text-generation",
            "library_name": "transformers",
            "tags": ["transformers", "safetensors"],
            "downloads": 0,
            "likes": 0,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit,
            "lastModified": "2025-01-01T00:00:00.000Z",
            "gated": "auto" if repo.gated else False,
            "disabled": False,
            "siblings": siblings,
            "createdAt": "2025-01-01T00:00:00.000Z",
        }


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client hanging up mid-body is part of the tests, not an error to print


def _parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """(start, end) for one satisfiable range (end exclusive); None: none; 'bad': unsatisfiable."""
    if header is None:
        return None
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None  # multi-range or malformed: serve the whole file, as many servers do
    if m.group(1) == "":
        n = int(m.group(2))
        return (max(0, size - n), size) if n else "bad"
    start = int(m.group(1))
    end = min(size, int(m.group(2)) + 1) if m.group(2) else size
    if start >= size or end <= start:
        return "bad"
    return start, end


def _handler(hub: FakeHub, role: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "FakeHub/1.0"
        fault: Fault | None = None

        def log_message(self, format: str, *args: Any) -> None:  # silence stderr
            pass

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def do_GET(self) -> None:
            self._serve(head=False)

        # --- plumbing ---------------------------------------------------------------------------

        def _token(self) -> str | None:
            auth = self.headers.get("Authorization")
            if auth and auth.lower().startswith("bearer "):
                return auth[7:].strip()
            return None

        def _send(
            self,
            status: int,
            body: bytes = b"",
            headers: Mapping[str, str] | None = None,
            head: bool = False,
            break_after: int | None = None,
            fault: Fault | None = None,
        ) -> None:
            self.send_response(status)
            headers = {**(headers or {}), **(fault.override if fault is not None else {})}
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            written = 0
            if not head and body:
                if fault is not None and fault.trickle and break_after is not None:
                    self.wfile.write(body[:break_after])
                    written = break_after
                    try:
                        for i in range(break_after, len(body)):
                            if hub.stopping.wait(fault.trickle):
                                break
                            self.wfile.write(body[i : i + 1])
                            self.wfile.flush()
                            written += 1
                    except (BrokenPipeError, ConnectionResetError, OSError):
                        pass
                    self.close_connection = True
                elif break_after is not None and break_after < len(body):
                    self.wfile.write(body[:break_after])
                    self.wfile.flush()
                    written = break_after
                    self.close_connection = True
                    if fault is not None and fault.stall:
                        hub.stopping.wait(fault.stall)
                    if fault is not None and fault.reset:
                        # SO_LINGER 0: close() sends RST, not FIN.
                        with suppress(OSError):
                            self.connection.setsockopt(
                                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                            )
                            self.connection.close()
                    # NOTE: shut the socket down now, so the client sees a short body at once.
                    with suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                else:
                    # In chunks, so a client that hangs up is seen (and counted) early.
                    try:
                        for i in range(0, len(body), CHUNK):
                            self.wfile.write(body[i : i + CHUNK])
                            written += len(body[i : i + CHUNK])
                    except (BrokenPipeError, ConnectionResetError):
                        self.close_connection = True
            hub.record(
                Served(
                    role,
                    self.command,
                    urlsplit(self.path).path,
                    status,
                    self.headers.get("Range"),
                    written,
                    self.headers.get("Authorization") is not None,
                    self.headers.get("Authorization"),
                )
            )

        def _error(self, status: int, code: str, message: str, head: bool, **extra: str) -> None:
            headers = {"Content-Type": "application/json", **extra}
            if code:
                headers["X-Error-Code"] = code
            headers["X-Error-Message"] = message
            self._send(status, json.dumps({"error": message}).encode(), headers, head)

        def _serve(self, head: bool) -> None:
            with hub._lock:
                hub.active += 1
            try:
                self._route(head)
            finally:
                with hub._lock:
                    hub.active -= 1

        def _route(self, head: bool) -> None:
            if hub.latency:
                time.sleep(hub.latency)
            split = urlsplit(self.path)
            fault = hub._fault(f"{self.command} {role}:{split.path} {self.headers.get('Range')}")
            if fault is not None and fault.status:
                self._error(
                    fault.status,
                    fault.error_code or "",
                    fault.message or "injected",
                    head,
                    **fault.headers,
                )
                return
            self.fault = fault
            brk = fault.break_after if fault is not None else None
            parts = [unquote(p) for p in split.path.split("/")[1:]]
            query = parse_qs(split.query)
            if role == "cdn":
                self._cdn(parts, head, brk)
            elif parts == ["api", "agent-harnesses"]:
                # huggingface_hub fetches this once per process for its user-agent.
                body = json.dumps({"standardEnvVars": [], "harnesses": {}}).encode()
                self._send(200, body, {"Content-Type": "application/json"}, head)
            elif parts[:2] == ["api", "models"] and len(parts) >= 4:
                self._api(parts[2:], query, head)
            elif len(parts) >= 5 and parts[2] == "resolve":
                self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]), head, brk)
            else:
                self._error(404, "", "Sorry, we can't find the page you are looking for.", head)

        # --- endpoints --------------------------------------------------------------------------

        def _api(self, parts: list[str], query: dict[str, list[str]], head: bool) -> None:
            repo_id, rest = "/".join(parts[:2]), parts[2:]
            denied = hub.access(repo_id, self._token(), files=False)
            if denied:
                self._error(denied[0], denied[1], denied[2], head)
                return
            repo = hub.repos[repo_id]
            if rest == ["refs"]:

                def refs(kind: str, names: dict[str, str]) -> list[dict[str, str]]:
                    return [
                        {"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": c}
                        for n, c in names.items()
                    ]

                data: dict[str, Any] = {
                    "branches": refs("heads", repo.branches),
                    "tags": refs("tags", repo.tags),
                    "converts": [],
                }
                if query.get("include_prs"):
                    data["pullRequests"] = []
            elif rest == [] or (len(rest) == 2 and rest[0] == "revision"):
                revision = rest[1] if rest else "main"
                commit = repo.resolve(revision)
                if commit is None:
                    self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
                    return
                blobs = query.get("blobs", ["false"])[0].lower() in ("1", "true")
                data = hub.model_info(repo, commit, blobs)
            else:
                self._error(404, "", "Not Found", head)
                return
            body = json.dumps(data).encode()
            brk = self.fault.break_after if self.fault is not None else None
            self._send(200, body, {"Content-Type": "application/json"}, head, brk, self.fault)

        def _resolve(
            self, repo_id: str, revision: str, path: str, head: bool, brk: int | None
        ) -> None:
            denied = hub.access(repo_id, self._token(), files=True)
            if denied:
                self._error(denied[0], denied[1], denied[2], head)
                return
            repo = hub.repos[repo_id]
            commit = repo.resolve(revision)
            if self.fault is not None and self.fault.commit is not None:
                commit = self.fault.commit
            if commit is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
                return
            blob = repo.commits[commit].get(path)
            if blob is None:
                self._error(
                    404, "EntryNotFound", "Entry not found", head, **{"X-Repo-Commit": commit}
                )
                return
            common = {"X-Repo-Commit": commit, "Accept-Ranges": "bytes"}
            if blob.lfs:
                location = f"{hub.cdn}/blobs/{blob.sha256}?sig={quote(commit[:8])}"
                self._send(
                    302,
                    b"",
                    {
                        **common,
                        "Location": location,
                        "ETag": f'"{blob.oid}"',
                        "X-Linked-Etag": f'"{blob.sha256}"',
                        "X-Linked-Size": str(len(blob.data)),
                    },
                    head,
                    fault=self.fault,
                )
                return
            self._bytes(blob.data, {**common, "ETag": f'"{blob.oid}"'}, head, brk, gzip_ok=True)

        def _cdn(self, parts: list[str], head: bool, brk: int | None) -> None:
            if len(parts) == 2 and parts[0] == "blobs":
                for repo in hub.repos.values():
                    for files in repo.commits.values():
                        for blob in files.values():
                            if blob.lfs and blob.sha256 == parts[1]:
                                headers = {"ETag": f'"{blob.sha256}"'}
                                self._bytes(blob.data, headers, head, brk)
                                return
            self._send(404, b"NoSuchKey", {"Content-Type": "text/plain"}, head)

        def _bytes(
            self,
            data: bytes,
            headers: dict[str, str],
            head: bool,
            brk: int | None,
            gzip_ok: bool = False,
        ) -> None:
            headers = {
                "Content-Type": "application/octet-stream",
                "Accept-Ranges": "bytes",
                **headers,
            }
            span = _parse_range(self.headers.get("Range"), len(data))
            if self.fault is not None and self.fault.ignore_range:
                span = None
            if span == "bad":
                self._send(416, b"", {**headers, "Content-Range": f"bytes */{len(data)}"}, head)
            elif span is None:
                data = _corrupted(data, self.fault)
                # The Hub gzips the text files it serves itself when the client accepts it.
                if gzip_ok and "gzip" in self.headers.get("Accept-Encoding", ""):
                    data = gzip.compress(data, mtime=0)
                    headers["Content-Encoding"] = "gzip"
                self._send(200, data, headers, head, brk, self.fault)
            else:
                assert isinstance(span, tuple)
                start, end = span
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
                body = _corrupted(data[start:end], self.fault)
                self._send(206, body, headers, head, brk, self.fault)

    return Handler


def _corrupted(body: bytes, fault: Fault | None) -> bytes:
    """`body` with a bit of its first byte flipped when the fault says so (changed in transit)."""
    if fault is None or not fault.corrupt or not body:
        return body
    return bytes([body[0] ^ 1]) + body[1:]


@contextmanager
def running(hub: FakeHub) -> Iterator[FakeHub]:
    """Start `hub`, yield it, stop it."""
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


if __name__ == "__main__":  # pragma: no cover - manual use
    import sys

    server = FakeHub()
    for arg in sys.argv[1:]:
        name, _, directory = arg.partition("=")
        server.add_repo(name, Path(directory))
    with running(server):
        print(f"HF_ENDPOINT={server.endpoint}", flush=True)
        with suppress(KeyboardInterrupt):
            threading.Event().wait()


def point_huggingface_hub_at(server: FakeHub, monkeypatch: Any, tmp_path: Path) -> None:
    """Make huggingface_hub (and normscope's Hub source) talk to `server`, online, with no user
    token or cache involved and no retry waits."""
    from huggingface_hub import constants
    from huggingface_hub.utils import close_session

    from normscope.sources.hub import retry

    endpoint = server.endpoint
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(
        constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        endpoint + "/{repo_id}/resolve/{revision}/{filename}",
    )
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    # Never the user's token or agent registry (their paths were fixed at import).
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf-stored-tokens"))
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "agents.json"))
    monkeypatch.setenv("NORMSCOPE_CACHE", str(tmp_path / "normscope-cache"))
    monkeypatch.setattr(retry, "RETRY_WAIT", 0.0)
    close_session()
