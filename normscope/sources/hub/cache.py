"""normscope's cache of Hub headers and norm bytes, beside the Hugging Face cache.

Layout under `<root>/models--org--name/`: `refs/<revision>` (a commit id), `manifests/<commit>.json`
(the repo's top-level files with size and etag), `files/<etag>` (config.json, the index),
`headers/<etag>` (8-byte length + JSON header of a shard), `ranges/<etag>/<start>-<end>` (byte
ranges of a shard, absolute offsets). Writes are atomic and best-effort. Standard library only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from normscope.sources.hub.spec import COMMIT, HubFile
from normscope.sources.jsonload import load_json
from normscope.sources.store import cache_root, read_cache_file, write_cache_file

_SAFE_KEY = re.compile(r"[0-9A-Za-z_-][0-9A-Za-z_.-]{0,127}")


def folder_name(repo_id: str) -> str:
    return "models--" + repo_id.replace("/", "--")


def _key(value: str) -> str:
    """A file name for an etag or revision: itself when safe, else a hash of it."""
    if _SAFE_KEY.fullmatch(value):
        return value
    return hashlib.sha256(value.encode()).hexdigest()


def _ref_file(revision: str) -> str:
    """A file name for a branch or tag (`refs/pr/1` -> `refs%2Fpr%2F1`), reversible by unquote."""
    name = quote(revision, safe="")
    return name if name not in (".", "..") else hashlib.sha256(name.encode()).hexdigest()


class HubCache:
    """One repo's part of the normscope cache. Writes are atomic, transactional and best-effort.

    Layout under `<root>/models--org--name/`: `refs/<revision>` (a commit id),
    `manifests/<commit>.json` (the repo's top-level files with size and etag), `files/<etag>`
    (config.json, the index), `headers/<etag>` (8-byte length + JSON header of a shard),
    `ranges/<etag>/<start>-<end>` (byte ranges of a shard, absolute offsets).

    NOTE: between `begin()` and `commit()` writes are staged in memory (headers and norms: a few
    MB even for DeepSeek-V3), so that a scan that fails leaves nothing half-written, and a scan
    that found the Hub disagreeing with itself (`discard(poison=True)`) leaves nothing at all:
    what it committed earlier is removed too, and nothing more is written.
    """

    def __init__(self, root: Path, repo_id: str, warnings: list[str]) -> None:
        self.root = root
        self.dir = root / folder_name(repo_id)
        self._warnings = warnings
        self._failed = False
        self._lock = threading.Lock()
        self._staged: dict[Path, bytes] | None = None
        self._created: list[Path] = []
        """Files this scan committed that were not there before (removed by a poison)."""
        self._poisoned = False

    def begin(self) -> None:
        """Stage writes from now on, until `commit` or `discard`."""
        with self._lock:
            if self._staged is None:
                self._staged = {}

    def commit(self) -> None:
        """Write what was staged (then keep staging, for the next step of the scan)."""
        with self._lock:
            staged, self._staged = self._staged, ({} if self._staged is not None else None)
            if self._poisoned or not staged:
                return
        for path, data in staged.items():
            existed = path.exists()
            if self._write(path, data) and not existed:
                self._created.append(path)

    def discard(self, poison: bool = False) -> None:
        """Drop what was staged; with `poison`, also what this scan committed, for good."""
        with self._lock:
            if self._staged is not None:
                self._staged = {}
            if poison:
                self._poisoned = True
                created, self._created = self._created, []
            else:
                created = []
        for path in created:
            with contextlib.suppress(OSError):
                path.unlink()

    def _put(self, path: Path, data: bytes) -> None:
        with self._lock:
            if self._poisoned:
                return
            if self._staged is not None:
                self._staged[path] = data
                return
        self._write(path, data)

    def _write(self, path: Path, data: bytes) -> bool:
        try:
            if not (self.root / "CACHEDIR.TAG").exists():
                write_cache_file(
                    self.root / "CACHEDIR.TAG",
                    b"Signature: 8a477f597d28d172789f06886806bc55\n"
                    b"# normscope cache of Hub headers and norm bytes: `normscope cache --clear`\n",
                    digest=False,
                )
            write_cache_file(path, data)
            return True
        except OSError as exc:
            with self._lock:
                if not self._failed:
                    self._failed = True
                    self._warnings.append(
                        f"cannot write the normscope cache ({exc.strerror}); nothing fetched is "
                        f"kept for the next run ({self.root})"
                    )
            return False

    def _get(self, path: Path) -> bytes | None:
        with self._lock:
            if self._staged is not None and path in self._staged:
                return self._staged[path]
        with self._lock:  # the warnings list is shared by the reading threads
            return read_cache_file(path, self._warnings)

    def ref(self, revision: str) -> tuple[str, float] | None:
        path = self.dir / "refs" / _ref_file(revision)
        data = self._get(path)
        if data is None or not COMMIT.fullmatch(data.decode(errors="replace").strip()):
            return None
        return data.decode().strip(), path.stat().st_mtime

    def set_ref(self, revision: str, commit: str) -> None:
        self._put(self.dir / "refs" / _ref_file(revision), commit.encode())

    def manifest(self, commit: str) -> dict[str, HubFile] | None:
        data = self._get(self.dir / "manifests" / f"{commit}.json")
        if data is None:
            return None
        try:
            files = [HubFile(f["name"], int(f["size"]), str(f["etag"])) for f in load_json(data)]
        except (ValueError, KeyError, TypeError):
            return None
        return {f.name: f for f in files}

    def set_manifest(self, commit: str, files: dict[str, HubFile]) -> None:
        rows = [{"name": f.name, "size": f.size, "etag": f.etag} for f in files.values()]
        self._put(self.dir / "manifests" / f"{commit}.json", json.dumps(rows).encode())

    def blob(self, kind: str, etag: str) -> bytes | None:
        return self._get(self.dir / kind / _key(etag)) if etag else None

    def set_blob(self, kind: str, etag: str, data: bytes) -> None:
        if etag:
            self._put(self.dir / kind / _key(etag), data)

    def ranges(self, etag: str) -> list[tuple[int, int, Path]]:
        folder = self.dir / "ranges" / _key(etag)
        out = []
        with contextlib.suppress(OSError):
            for path in folder.iterdir():
                m = re.fullmatch(r"(\d+)-(\d+)", path.name)
                if m:
                    out.append((int(m.group(1)), int(m.group(2)), path))
        return out

    def range_bytes(self, path: Path) -> bytes | None:
        """The content of one `ranges` entry, checked (see `read_cache_file`)."""
        return self._get(path)

    def set_range(self, etag: str, start: int, data: bytes) -> None:
        if etag:
            self._put(self.dir / "ranges" / _key(etag) / f"{start}-{start + len(data)}", data)


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """What normscope keeps for one repo."""

    repo_id: str
    commits: int
    """Commits whose file list is cached."""
    files: int
    bytes: int


@dataclass(frozen=True, slots=True)
class CacheSummary:
    """The normscope cache: where it is and what it holds (or held, after a clear)."""

    root: str
    entries: tuple[CacheEntry, ...]
    files: int
    bytes: int


OTHER_CACHES = {
    "objects": "(object-store headers)",
    "layouts": "(local checkpoint layouts)",
}
"""normscope's other caches under the same root (sources/objstore.py, sources/headercache.py):
folder -> how `normscope cache` lists them."""


def cache_summary() -> CacheSummary:
    """Describe the normscope cache (repos, files, bytes). Reads nothing over the network."""
    root = cache_root()
    entries = []
    if root.is_dir():
        for folder in sorted(root.glob("models--*")):
            if not folder.is_dir():
                continue
            sizes = [p.stat().st_size for p in folder.rglob("*") if p.is_file()]
            commits = len(list((folder / "manifests").glob("*.json")))
            repo_id = folder.name[len("models--") :].replace("--", "/", 1)
            entries.append(CacheEntry(repo_id, commits, len(sizes), sum(sizes)))
        for other, label in OTHER_CACHES.items():
            sizes = [p.stat().st_size for p in (root / other).rglob("*") if p.is_file()]
            if sizes:
                entries.append(CacheEntry(label, 0, len(sizes), sum(sizes)))
    return CacheSummary(
        str(root),
        tuple(entries),
        sum(e.files for e in entries),
        sum(e.bytes for e in entries),
    )


def clear_cache() -> CacheSummary:
    """Delete what normscope cached; return what was there.

    Only the repo folders normscope created are removed, never the root itself: NORMSCOPE_CACHE
    may point at a folder that holds other things. The Hugging Face cache is never touched.
    """
    summary = cache_summary()
    root = Path(summary.root)
    for entry in summary.entries:
        if entry.repo_id not in OTHER_CACHES.values():
            shutil.rmtree(root / folder_name(entry.repo_id), ignore_errors=True)
    for folder in OTHER_CACHES:
        shutil.rmtree(root / folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        (root / "CACHEDIR.TAG").unlink()
    return summary
