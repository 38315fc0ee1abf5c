"""Hugging Face Hub sources: scan a model repo reading only its headers and its norm bytes.

`open_hub_checkpoint("org/name@rev")` returns the `Checkpoint` a local folder would give, so
`scan`, `diff` and `check` work unchanged; `sources.open_checkpoint` sends here any source that
is not an existing local path and reads as `org/name`, `hf://org/name` or `hf://models/org/name`,
each with an optional `@revision`.

Where each file's bytes come from, first hit wins, file by file:
1. the Hugging Face cache (`HF_HUB_CACHE`: what `hf download` or `from_pretrained` left there),
   read with positioned reads and no request; a fully downloaded model needs no network at all;
2. normscope's cache (`NORMSCOPE_CACHE`, default `$HF_HOME/assets/normscope`, the folder
   huggingface_hub's `cached_assets_path` gives downstream libraries): config, index, each
   shard's header and the norm byte ranges already fetched, keyed by repo, commit and etag;
3. the Hub, through huggingface_hub's own session, endpoint, token, offline switch, retries and
   error types: one `model_info` call resolves the revision to a commit and lists the files with
   their sizes and etags (none when the revision is a cached commit hash, or offline); config.json
   and the index are fetched whole; each shard's header with one ranged GET sized by a guess
   (see below); then only the byte ranges of the norm tensors, ranges that are close in a shard
   coalesced, at most `MAX_IN_FLIGHT` requests at once. Nothing else is ever downloaded.

NOTE: a header is read with one ranged GET of `8 + guess` bytes, not with the blind 100 kB first
read of `HfApi.parse_safetensors_file_metadata` (which transfers the tensor bytes behind a 20 kB
header: more than the header and the norms together), nor exactly in two GETs (the 8-byte length,
then the JSON: one request more per shard). The guess comes from the index: a header holds one
entry per tensor the index maps to that shard, the name plus ~50-80 bytes of dtype, shape and
offsets; the bytes per entry are modelled from the shard's size until the first headers of the
checkpoint arrive, then taken from them (`_HeaderSizer`). A guess too short costs a second GET
for the rest; the bytes read past a header are charged to the `GAP_SHARE` budget of coalesced
gaps. Without an index (a single file) the header is read exactly. Each shard's `/resolve/` redirect
is followed once and its target reused for the header and the norm ranges, as
`hf_hub_download` does (`get_hf_file_metadata`, then a GET of `metadata.location`): the target
is a signed URL per file, so that one hop per shard stays. The transfer stays within header +
norm + config/index bytes, plus at most `GAP_SHARE` of header over-reads and coalesced gaps,
and the `model_info` answer.

huggingface_hub is imported only here and only when a Hub source is opened: `normscope --help`
and local scans never pay for it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, unquote, urlsplit

from normscope.errors import SourceError
from normscope.schema import TensorRef
from normscope.sources import (
    INDEX_SUFFIX,
    MAX_HEADER_SIZE,
    Checkpoint,
    ReadCounter,
    ShardHeader,
    _check_index,
    _header_length,
    _natural_key,
    merge_shards,
    parse_header,
    pread_tensors,
)

HF_PREFIX = "hf://"
MAX_IN_FLIGHT = 8
"""Ranged requests in flight at once (huggingface_hub's own thread maps use 8 workers)."""
MAX_GAP = 4096
"""Two norm ranges of a shard at most this far apart are fetched with one request..."""
GAP_SHARE = 0.05
"""...as long as all the gap bytes fetched, and the bytes read past headers, stay within this
share of header + norm bytes."""
HEADER_ENTRY = 55
"""Bytes of a header entry beyond the tensor's name, before any header of the checkpoint is known,
plus 2 per digit of the shard's size (the two data offsets): `"":{"dtype":"","shape":[],
"data_offsets":[,]},` is 45, a dtype and a short shape ~10 more."""
RETRIES = 5
"""Retries of a failed request (huggingface_hub's default), waiting RETRY_WAIT, doubled up to 8x."""
RETRY_WAIT = 1.0
MAX_SMALL_FILE = 256 * 1024 * 1024
"""config.json and the index are fetched whole: refuse anything this large."""
PROGRESS_MIN = 8
"""Show progress (when the CLI installed a factory) for phases of at least this many requests."""
# Statuses retried by the library's backoff. 429 is not: a rate limit is reported at once with
# its reset time rather than waited out silently for minutes.
_RETRY_STATUS = (408, 500, 502, 503, 504)
_EXPIRED = (400, 401, 403, 404, 410)
_COMMIT = re.compile(r"[0-9a-f]{40}")
_PART = r"[\w](?:[\w.-]{0,94}[\w])?"
_REPO_ID = re.compile(rf"{_PART}/{_PART}")
# A name ending like a file is a local path that does not exist, never a repo.
_FILE_SUFFIXES = (".safetensors", ".json", ".bin", ".pt", ".pth", ".gguf", ".index")
_SAFE_KEY = re.compile(r"[0-9A-Za-z_-][0-9A-Za-z_.-]{0,127}")
_T = TypeVar("_T")


# --- specs ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HubSpec:
    """A Hub model repo and the revision asked for (None: the default branch)."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return self.repo_id if self.revision is None else f"{self.repo_id}@{self.revision}"


def parse_hub_spec(spec: str) -> HubSpec | None:
    """Parse `org/name`, `hf://org/name` or `hf://models/org/name`, each with `@revision`.

    Returns None when `spec` is not shaped like a repo id; raises SourceError for an `hf://` URI
    that names no model repo. Does not look at the file system: a local path wins, and checking
    that is the caller's job.
    """
    text = spec.strip()
    explicit = text.startswith(HF_PREFIX)
    if explicit:
        text = text[len(HF_PREFIX) :]
        kind, sep, rest = text.partition("/")
        if sep and kind in ("datasets", "spaces", "buckets", "kernels"):
            raise SourceError(f"normscope reads model repos, not {kind} ({spec})")
        if sep and kind == "models":
            text = rest
    repo_id, at, revision = text.partition("@")
    ok = (
        _REPO_ID.fullmatch(repo_id) is not None
        and "--" not in repo_id
        and ".." not in repo_id
        and not repo_id.lower().endswith(_FILE_SUFFIXES)
        and not (at and not revision.strip())
    )
    if not ok:
        if explicit:
            raise SourceError(f"not a Hub model repo: expected hf://org/name[@revision] ({spec})")
        return None
    return HubSpec(repo_id, revision.strip() or None)


def looks_like_hub(spec: str) -> bool:
    """True when `spec` reads as a Hub model repo (the caller has checked it is no local path)."""
    try:
        return spec.startswith(HF_PREFIX) or parse_hub_spec(spec) is not None
    except SourceError:
        return True


def with_revision(spec: str, revision: str) -> str:
    """Fold a `--revision` into a Hub source: `org/name` -> `org/name@revision`.

    Raises ValueError (a usage error for the CLI) when `spec` is a local path or no repo id, or
    already names another revision.
    """
    if not revision.strip():
        raise ValueError("--revision is empty")
    if Path(spec).exists():
        raise ValueError(f"--revision applies to Hub repos, but '{spec}' is a local path")
    try:
        hub = parse_hub_spec(spec)
    except SourceError as exc:
        raise ValueError(exc.message) from None
    if hub is None:
        raise ValueError(f"--revision applies to Hub repos (org/name), and '{spec}' is not one")
    if hub.revision is not None and hub.revision != revision:
        raise ValueError(
            f"'{spec}' names revision '{hub.revision}' but --revision is '{revision}': give one"
        )
    prefix = HF_PREFIX if spec.strip().startswith(HF_PREFIX) else ""
    return f"{prefix}{hub.repo_id}@{revision}"


# --- progress (the CLI installs a factory; the core never prints) ---------------------------------


class ProgressTask(Protocol):
    """One progress bar: advanced from worker threads, closed once."""

    def advance(self, amount: int) -> None: ...

    def close(self) -> None: ...


ProgressFactory = Callable[[str, int], ProgressTask]
_progress_factory: ProgressFactory | None = None


def set_progress(factory: ProgressFactory | None) -> None:
    """Install `factory(description, total)` to report long Hub transfers (None: no progress)."""
    global _progress_factory
    _progress_factory = factory


class _NoProgress:
    def advance(self, amount: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(description: str, total: int) -> ProgressTask:
    if _progress_factory is None or total < PROGRESS_MIN:
        return _NoProgress()
    return _progress_factory(description, total)


# --- the normscope cache --------------------------------------------------------------------------


def cache_root() -> Path:
    """normscope's cache folder: $NORMSCOPE_CACHE, else `normscope/` in HF's assets cache.

    Mirrors huggingface_hub.constants without importing it: `$HF_ASSETS_CACHE`, default
    `$HF_HOME/assets`, with HF_HOME defaulting to `$XDG_CACHE_HOME/huggingface` or
    `~/.cache/huggingface`.
    """
    explicit = os.environ.get("NORMSCOPE_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    assets = os.environ.get("HF_ASSETS_CACHE") or os.environ.get("HUGGINGFACE_ASSETS_CACHE")
    if not assets:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        home = os.environ.get("HF_HOME") or os.path.join(xdg, "huggingface")
        assets = os.path.join(home, "assets")
    return Path(os.path.expandvars(assets)).expanduser() / "normscope"


def _folder(repo_id: str) -> str:
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


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class _Store:
    """One repo's part of the normscope cache. Writes are atomic and best-effort.

    Layout under `<root>/models--org--name/`: `refs/<revision>` (a commit id),
    `manifests/<commit>.json` (the repo's top-level files with size and etag), `files/<etag>`
    (config.json, the index), `headers/<etag>` (8-byte length + JSON header of a shard),
    `ranges/<etag>/<start>-<end>` (byte ranges of a shard, absolute offsets).
    """

    def __init__(self, root: Path, repo_id: str, warnings: list[str]) -> None:
        self.root = root
        self.dir = root / _folder(repo_id)
        self._warnings = warnings
        self._failed = False
        self._lock = threading.Lock()

    def _put(self, path: Path, data: bytes) -> None:
        try:
            if not (self.root / "CACHEDIR.TAG").exists():
                _write_atomic(
                    self.root / "CACHEDIR.TAG",
                    b"Signature: 8a477f597d28d172789f06886806bc55\n"
                    b"# normscope cache of Hub headers and norm bytes: `normscope cache --clear`\n",
                )
            _write_atomic(path, data)
        except OSError as exc:
            with self._lock:
                if not self._failed:
                    self._failed = True
                    self._warnings.append(
                        f"cannot write the normscope cache ({exc.strerror}); nothing fetched is "
                        f"kept for the next run ({self.root})"
                    )

    def _get(self, path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except OSError:
            return None

    def ref(self, revision: str) -> tuple[str, float] | None:
        path = self.dir / "refs" / _ref_file(revision)
        data = self._get(path)
        if data is None or not _COMMIT.fullmatch(data.decode(errors="replace").strip()):
            return None
        return data.decode().strip(), path.stat().st_mtime

    def set_ref(self, revision: str, commit: str) -> None:
        self._put(self.dir / "refs" / _ref_file(revision), commit.encode())

    def manifest(self, commit: str) -> dict[str, _File] | None:
        data = self._get(self.dir / "manifests" / f"{commit}.json")
        if data is None:
            return None
        try:
            files = [_File(f["name"], int(f["size"]), str(f["etag"])) for f in json.loads(data)]
        except (ValueError, KeyError, TypeError):
            return None
        return {f.name: f for f in files}

    def set_manifest(self, commit: str, files: dict[str, _File]) -> None:
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
        shutil.rmtree(root / _folder(entry.repo_id), ignore_errors=True)
    with contextlib.suppress(OSError):
        (root / "CACHEDIR.TAG").unlink()
    return summary


# --- opening a repo -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _File:
    """One file of the repo at the commit: name, size and etag (sha256 for LFS, else git oid)."""

    name: str
    size: int
    etag: str


@dataclass
class HubCheckpoint(Checkpoint):
    """A checkpoint in a Hub model repo at one commit; `read` uses the caches, then the Hub."""

    repo_id: str = ""
    revision: str = "main"
    """The revision asked for: a branch, a tag or a commit."""
    commit: str = ""
    """The commit it resolved to (the source reads `hf://org/name@<commit>`)."""
    reader: _Reader | None = field(default=None, repr=False)

    def read(self, refs: Sequence[TensorRef]) -> dict[str, bytes]:
        """Read the bytes of each tensor in `refs` (and nothing else); return them by name."""
        if self.reader is None:  # pragma: no cover - always set by open_hub_checkpoint
            return Checkpoint.read(self, refs)
        return self.reader.read(refs)


def open_hub_checkpoint(spec: str | HubSpec) -> HubCheckpoint:
    """Open a Hub model repo: resolve the revision, read config, index and every shard header.

    Tensor bytes are read later with `HubCheckpoint.read`. Raises SourceError, with a hint, for
    every Hub failure: repo or revision not found, gated or private, offline with nothing cached,
    rate limits, broken transfers.
    """
    hub = spec if isinstance(spec, HubSpec) else parse_hub_spec(spec)
    if hub is None:
        raise SourceError(f"not a Hub model repo id (org/name[@revision]) ({spec})")
    _require_huggingface_hub(str(hub))
    return _Opener(hub).open()


def _require_huggingface_hub(where: str) -> None:
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        raise SourceError(
            f"reading Hub repos needs the huggingface_hub package, which is not installed "
            f"({where})",
            hint="pip install 'huggingface-hub>=1.30', or pass a local path",
        ) from None


class _Opener:
    """Everything one open needs: the spec, the caches, the counters, the Hub session."""

    def __init__(self, spec: HubSpec) -> None:
        from huggingface_hub import constants

        self.repo_id = spec.repo_id
        self.revision = spec.revision or constants.DEFAULT_REVISION
        self.where = f"{self.repo_id}@{self.revision}"
        self.offline = bool(constants.HF_HUB_OFFLINE)
        self.counter = ReadCounter()
        self.warnings: list[str] = []
        self.store = _Store(cache_root(), self.repo_id, self.warnings)
        self.remote = _Remote(self)
        self.commit = ""
        self._hf_snapshot: Path | None = None

    # --- errors -----------------------------------------------------------------------------------

    def not_cached(self, what: str, also: str = "") -> SourceError:
        return SourceError(
            f"offline (HF_HUB_OFFLINE=1) and {what} is not cached ({self.where}){also}",
            hint=f"run once online to cache its headers and norms, or download the model with "
            f"`hf download {self.repo_id}`",
        )

    # --- the steps --------------------------------------------------------------------------------

    def open(self) -> HubCheckpoint:
        listing: dict[str, _File] | None = None
        fetched = False
        if _COMMIT.fullmatch(self.revision):
            # A pinned commit never moves: the caches can answer without any request.
            self.commit = self.revision
            listing = self._cached_listing(self.commit, snapshots=self.offline)
        if listing is None and self.offline:
            listing = self._cached_revision()
            if listing is None:
                raise self.not_cached(
                    "this revision", also=f"; no local path '{self.repo_id}' exists either"
                )
        if listing is None:
            try:
                listing = self._model_info()
                fetched = True
            except SourceError as exc:
                if not getattr(exc, "unreachable", False):
                    raise
                listing = self._cached_revision()
                if listing is None:
                    raise
                self.warnings.append(
                    f"{exc.message}; using the cached commit {self.commit[:12]} instead"
                )
        checkpoint = self._build(listing)
        if fetched:
            self.store.set_manifest(self.commit, listing)
            if self.revision != self.commit:
                self.store.set_ref(self.revision, self.commit)
        return checkpoint

    def _cached_revision(self) -> dict[str, _File] | None:
        """The newest cached commit of a branch or tag, from either cache, with its file list."""
        from huggingface_hub import constants

        candidates: list[tuple[float, str]] = []
        mine = self.store.ref(self.revision)
        if mine is not None:
            candidates.append((mine[1], mine[0]))
        theirs = Path(constants.HF_HUB_CACHE) / _folder(self.repo_id) / "refs" / self.revision
        with contextlib.suppress(OSError):
            commit = theirs.read_text().strip()
            if _COMMIT.fullmatch(commit):
                candidates.append((theirs.stat().st_mtime, commit))
        for _, commit in sorted(candidates, reverse=True):
            listing = self._cached_listing(commit, snapshots=True)
            if listing is not None:
                self.commit = commit
                return listing
        return None

    def _cached_listing(self, commit: str, snapshots: bool) -> dict[str, _File] | None:
        """The top-level files at `commit`: normscope's manifest (what model_info listed), else
        with `snapshots` what an HF cache snapshot holds (when the Hub cannot be asked: a
        snapshot may lack files the repo has, e.g. config.json after `hf download --include`)."""
        from huggingface_hub import constants

        listing = self.store.manifest(commit)
        if listing is not None or not snapshots:
            return listing
        snapshot = Path(constants.HF_HUB_CACHE) / _folder(self.repo_id) / "snapshots" / commit
        files = {}
        with contextlib.suppress(OSError):
            for path in snapshot.iterdir():
                if path.is_file():
                    # The snapshot entry links to blobs/<etag>; a copy (no symlinks) has none.
                    etag = Path(os.readlink(path)).name if path.is_symlink() else ""
                    files[path.name] = _File(path.name, path.stat().st_size, etag)
        indexes = sorted(n for n in files if n.endswith(INDEX_SUFFIX))
        if indexes:
            # Partly downloaded (`hf download --include`)? Use it only when every shard is there.
            try:
                shards = set(
                    json.loads((snapshot / indexes[0]).read_bytes())["weight_map"].values()
                )
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                return None
            if not shards or not shards <= set(files):
                return None
        elif not any(n.endswith(".safetensors") for n in files):
            return None
        return files

    def _model_info(self) -> dict[str, _File]:
        """Resolve the revision and list the files with sizes and etags: one API request."""
        from huggingface_hub.hf_api import ModelInfo

        path = f"api/models/{self.repo_id}/revision/{quote(self.revision, safe='')}"
        data = self.remote.api(path, {"blobs": True})
        try:
            info = ModelInfo(**data)
        except (TypeError, KeyError, ValueError) as exc:
            raise SourceError(f"unexpected answer from the Hub API: {exc} ({self.where})") from None
        if not isinstance(info.sha, str) or not _COMMIT.fullmatch(info.sha):
            raise SourceError(f"the Hub API gave no commit for this revision ({self.where})")
        self.commit = info.sha
        files = {}
        for sibling in info.siblings or []:
            if "/" in sibling.rfilename:
                continue  # normscope reads top-level checkpoints, like a local folder
            etag = sibling.lfs.sha256 if sibling.lfs is not None else (sibling.blob_id or "")
            size = sibling.lfs.size if sibling.lfs is not None else sibling.size
            if size is not None:
                files[sibling.rfilename] = _File(sibling.rfilename, size, etag)
        return files

    def hf_cached(self, name: str) -> Path | None:
        """The file in the Hugging Face cache at our commit, if it was downloaded."""
        from huggingface_hub import constants

        if self._hf_snapshot is None:
            self._hf_snapshot = (
                Path(constants.HF_HUB_CACHE) / _folder(self.repo_id) / "snapshots" / self.commit
            )
        path = self._hf_snapshot / name
        return path if path.is_file() else None

    def _build(self, listing: dict[str, _File]) -> HubCheckpoint:
        names = sorted(listing, key=lambda n: _natural_key(Path(n)))
        config = self._config(listing.get("config.json"))
        indexes = [n for n in names if n.endswith(INDEX_SUFFIX)]
        weight_map: dict[str, str] | None = None
        if indexes:
            index = listing[indexes[0]]
            if len(indexes) > 1:
                self.warnings.append(f"several shard indexes; using {index.name} ({self.where})")
            weight_map = self._index(index)
            shard_names = sorted(set(weight_map.values()), key=lambda n: _natural_key(Path(n)))
            for name in shard_names:
                if name not in listing:
                    raise SourceError(
                        f"the index names shard '{name}' but the repo has no such file "
                        f"({self.where}/{index.name})",
                        hint="the repo is incomplete at this revision: try another revision",
                    )
            extra = [n for n in names if n.endswith(".safetensors") and n not in shard_names]
            if extra:
                self.warnings.append(
                    f"ignored {len(extra)} .safetensors file(s) not named in the index: "
                    f"{', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''} ({self.where})"
                )
        else:
            shard_names = [n for n in names if n.endswith(".safetensors")]
        if not shard_names:
            raise SourceError(
                f"no .safetensors files in Hub repo ({self.where})",
                hint=f"normscope reads safetensors checkpoints; the repo has {len(listing)} "
                f"top-level file(s), e.g. {', '.join(names[:3]) or 'none'}",
            )
        sizer = _HeaderSizer(weight_map)
        shards = self._headers([listing[n] for n in shard_names], sizer)
        tensors = merge_shards(shards)
        if weight_map is not None:
            _check_index(
                weight_map,
                tensors,
                Path(self.where),
                Path(self.where) / indexes[0],
                self.warnings,
            )
        reader = _Reader(
            self,
            {self.shard_id(n): listing[n] for n in shard_names},
            sum(s.header_bytes for s in shards),
            sizer.over,
        )
        return HubCheckpoint(
            source=f"{HF_PREFIX}{self.repo_id}@{self.commit}",
            config=config,
            shards=shards,
            tensors=tensors,
            counter=self.counter,
            warnings=self.warnings,
            repo_id=self.repo_id,
            revision=self.revision,
            commit=self.commit,
            reader=reader,
        )

    def shard_id(self, name: str) -> str:
        """How a shard is named in TensorRef.shard and in messages: `org/name@rev/file`."""
        return str(Path(self.where) / name)

    def _small_file(self, file: _File) -> bytes:
        """config.json or the index: HF cache, normscope cache, else one GET."""
        local = self.hf_cached(file.name)
        if local is not None:
            data = local.read_bytes()
        else:
            cached = self.store.blob("files", file.etag)
            if cached is not None and len(cached) == file.size:
                data = cached
            else:
                if self.offline:
                    raise self.not_cached(file.name)
                if file.size > MAX_SMALL_FILE:
                    raise SourceError(
                        f"{file.name} is {file.size} bytes: too large to be a config or an index "
                        f"({self.where})"
                    )
                data = self.remote.get(file, 0, None)
                self.store.set_blob("files", file.etag, data)
        self.counter.metadata_bytes += len(data)
        return data

    def _config(self, file: _File | None) -> dict[str, Any] | None:
        if file is None:
            return None
        where = f"{self.where}/{file.name}"
        try:
            config = json.loads(self._small_file(file))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self.warnings.append(
                f"config.json is malformed ({exc}); the architecture is inferred from tensor "
                f"names ({where})"
            )
            return None
        if not isinstance(config, dict):
            self.warnings.append(f"config.json is not a JSON object; ignored ({where})")
            return None
        return config

    def _index(self, file: _File) -> dict[str, str]:
        try:
            weight_map = json.loads(self._small_file(file))["weight_map"]
            if not isinstance(weight_map, dict) or not all(
                isinstance(v, str) for v in weight_map.values()
            ):
                raise TypeError("weight_map is not an object of file names")
            if not weight_map:
                raise ValueError("weight_map is empty")
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise SourceError(f"invalid shard index: {exc} ({self.where}/{file.name})") from None
        return weight_map

    def _headers(self, files: list[_File], sizer: _HeaderSizer) -> list[ShardHeader]:
        remote = [f for f in files if self.hf_cached(f.name) is None]
        progress = _progress("Reading shard headers", len(remote))
        try:
            return _parallel([functools.partial(self._header, f, sizer, progress) for f in files])
        finally:
            progress.close()

    def _header(self, file: _File, sizer: _HeaderSizer, progress: ProgressTask) -> ShardHeader:
        shard = self.shard_id(file.name)
        local = self.hf_cached(file.name)
        fetched = 0
        if local is not None:
            raw = _read_local_header(local, shard, file.size)
        else:
            raw = self.store.blob("headers", file.etag) or b""
            if not _whole_header(raw, file.size):
                if self.offline:
                    raise self.not_cached(f"the header of {file.name}")
                if file.size < 8:
                    _header_length(b"", shard, file.size)  # raises: too short for safetensors
                # The 8-byte length and a guess of the JSON in one GET, the rest (if the guess
                # was short) in a second one (see the module doc).
                first = self.remote.get(file, 0, sizer.first_read(file))
                n = _header_length(first[:8], shard, file.size)
                rest = self.remote.get(file, len(first), 8 + n) if 8 + n > len(first) else b""
                fetched = len(first) + len(rest)
                raw = (first + rest)[: 8 + n]
                self.store.set_blob("headers", file.etag, raw)
                progress.advance(1)
        sizer.learn(file, len(raw) - 8, fetched)
        with self.remote.lock:
            self.counter.bytes_read += len(raw)
            self.counter.reads += 2
        return parse_header(raw[8:], shard, file.size)


class _HeaderSizer:
    """How many bytes to read for a shard's header in one request (see the module doc).

    A header holds, for each tensor the index maps to the shard, its name and ~50-80 bytes of
    dtype, shape and data offsets: the guess is the names' length plus bytes per entry, 2 per
    digit of the shard's size (the offsets) plus `HEADER_ENTRY` until headers of this checkpoint
    are known, then plus the most seen in them (its shards agree within a byte or two).
    Counts the bytes read past headers (`over`), and reads exactly (8 bytes first) without an
    index, or once the over-reads exceed `GAP_SHARE` of the header bytes seen.
    """

    def __init__(self, weight_map: dict[str, str] | None) -> None:
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

    def first_read(self, file: _File) -> int:
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

    def learn(self, file: _File, length: int, fetched: int) -> None:
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


def _read_local_header(path: Path, shard: str, size: int) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise SourceError(f"cannot open shard: {exc.strerror} ({path})") from None
    try:
        prefix = os.pread(fd, 8, 0)
        n = _header_length(prefix, shard, size)
        raw = prefix + os.pread(fd, n, 8)
    finally:
        os.close(fd)
    if len(raw) != 8 + n:
        raise SourceError(f"truncated safetensors header ({shard})")
    return raw


def _parallel(tasks: Sequence[Callable[[], _T]]) -> list[_T]:
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


# --- reading tensors ------------------------------------------------------------------------------


def _coalesce(
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


class _Reader:
    """Tensor bytes of one opened repo: HF cache, normscope cache, then coalesced ranged GETs."""

    def __init__(
        self, opener: _Opener, files: dict[str, _File], header_bytes: int, over_read: int = 0
    ) -> None:
        self.opener = opener
        self.files = files
        self.header_bytes = header_bytes
        """Header bytes of all shards: the coalescing budget is a share of headers + norms."""
        self.over_read = over_read
        """Bytes read past the headers, not yet charged to a coalescing budget."""

    def read(self, refs: Sequence[TensorRef]) -> dict[str, bytes]:
        opener, counter, lock = self.opener, self.opener.counter, self.opener.remote.lock
        out: dict[str, bytes] = {}
        missing: dict[str, list[TensorRef]] = {}
        for shard, shard_refs in _by_shard(refs).items():
            file = self.files[shard]
            local = opener.hf_cached(file.name)
            if local is not None:
                out.update(pread_tensors(local, shard, shard_refs))
                continue
            cached = opener.store.ranges(file.etag)
            for ref in shard_refs:
                data = _from_ranges(cached, ref)
                if data is None:
                    missing.setdefault(shard, []).append(ref)
                else:
                    out[ref.name] = data
        for ref in refs:
            if ref.name in out:
                counter.bytes_read += ref.nbytes
                counter.reads += 1
        if not missing:
            return out
        if opener.offline:
            count = sum(len(v) for v in missing.values())
            raise opener.not_cached(f"the bytes of {count} norm tensor(s)")
        wanted = sum(r.nbytes for rs in missing.values() for r in rs)
        budget = int(GAP_SHARE * (self.header_bytes + wanted))
        charged = min(budget, self.over_read)  # the header over-reads come out of the same share
        budget, self.over_read = budget - charged, self.over_read - charged
        plan = _coalesce({s: [(r.start, r.end) for r in rs] for s, rs in missing.items()}, budget)
        progress = _progress("Reading norm tensors", sum(len(v) for v in plan.values()))

        def fetch(shard: str, start: int, end: int) -> dict[str, bytes]:
            file = self.files[shard]
            data = opener.remote.get(file, start, end)
            opener.store.set_range(file.etag, start, data)
            progress.advance(1)
            got = {}
            for ref in missing[shard]:
                if start <= ref.start and ref.end <= end:
                    got[ref.name] = data[ref.start - start : ref.end - start]
            with lock:
                counter.bytes_read += sum(len(v) for v in got.values())
                counter.reads += len(got)
            return got

        tasks = [
            functools.partial(fetch, shard, a, b)
            for shard, ranges in plan.items()
            for a, b in ranges
        ]
        try:
            for got in _parallel(tasks):
                out.update(got)
        finally:
            progress.close()
        return out


def _by_shard(refs: Sequence[TensorRef]) -> dict[str, list[TensorRef]]:
    out: dict[str, list[TensorRef]] = {}
    for ref in refs:
        out.setdefault(ref.shard, []).append(ref)
    return out


def _from_ranges(cached: list[tuple[int, int, Path]], ref: TensorRef) -> bytes | None:
    for start, end, path in cached:
        if start <= ref.start and ref.end <= end:
            try:
                with open(path, "rb") as handle:
                    handle.seek(ref.start - start)
                    data = handle.read(ref.nbytes)
            except OSError:
                return None
            return data if len(data) == ref.nbytes else None
    return None


# --- the Hub, through huggingface_hub -------------------------------------------------------------


class _Unreachable(SourceError):
    """The Hub could not be reached at all (the caches may still answer)."""

    unreachable = True


class _Remote:
    """Requests to the Hub: huggingface_hub's session, headers, backoff and error mapping.

    Counts every request (redirect hops included) and every body byte received.
    """

    def __init__(self, opener: _Opener) -> None:
        self.opener = opener
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
            self.opener.counter.requests += 1 + len(response.history)
            self.opener.counter.bytes_transferred += response.num_bytes_downloaded + sum(
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

    def get(self, file: _File, start: int, end: int | None) -> bytes:
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
            url = location or hf_hub_url(
                self.opener.repo_id, file.name, revision=self.opener.commit
            )
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
                                f"file ({self.opener.where})",
                                hint="if HF_ENDPOINT points at a mirror, make it honour Range "
                                f"requests, or download the model with `hf download "
                                f"{self.opener.repo_id}` and scan it from the HF cache",
                            )
                        _check_content_range(response, position, expected - len(buf), file)
                        if response.history:
                            self._locations[file.name] = str(response.url)
                        for chunk in response.iter_bytes():
                            buf += chunk
                            if len(buf) > expected:
                                raise SourceError(
                                    f"the server sent more bytes of {file.name} than asked "
                                    f"({self.opener.where})"
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
                        f"and {RETRIES} retries: {exc} ({self.opener.where})",
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

        opener = self.opener
        where, repo = opener.where, opener.repo_id
        page = f"{constants.ENDPOINT}/{repo}"
        login = "log in with `hf auth login` or set HF_TOKEN"
        if isinstance(exc, SourceError):
            return exc
        if isinstance(exc, errors.OfflineModeIsEnabled):
            return opener.not_cached(what)
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
                f"revision '{opener.revision}' not found in Hub repo ({repo})",
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
            return _Unreachable(
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


def _check_content_range(response: Any, start: int, length: int, file: _File) -> None:
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


# --- revisions of a repo (for `series`) -----------------------------------------------------------


def _step_key(name: str) -> tuple[int, int, int, list[Any]]:
    """Order refs by training progress: stage number, then step number, then name."""
    stage = re.search(r"stage[-_]?(\d+)", name, re.IGNORECASE)
    step = re.search(r"step[-_]?(\d+)", name, re.IGNORECASE)
    return (
        0 if step else 1,
        int(stage.group(1)) if stage else 0,
        int(step.group(1)) if step else 0,
        _natural_key(Path(name)),
    )


def list_hub_revisions(repo: str, pattern: str) -> list[str]:
    """Expand `pattern` over the branches and tags of a Hub model repo, ordered by step.

    `pattern` is a comma-separated list of names and globs (`'step1000,step2000'`,
    `'stage1-step*'`); a plain name is kept even when it is no ref (a commit hash). Refs are
    ordered by the stage and step numbers in their names (`stage1-step1907359-tokens4001B`,
    Pythia's `step143000`), the rest after them by name. Offline, the cached revisions answer.
    """
    spec = parse_hub_spec(repo)
    if spec is None:
        raise SourceError(f"not a Hub model repo id (org/name) ({repo})")
    _require_huggingface_hub(repo)
    items = [p.strip() for p in pattern.split(",") if p.strip()]
    if not items:
        raise SourceError(f"no revisions given ({repo})")
    refs: list[str] | None = None
    out: list[str] = []
    for item in items:
        if not any(c in item for c in "*?["):
            out.append(item)
            continue
        if refs is None:
            refs = _ref_names(spec.repo_id)
        hits = [r for r in refs if fnmatch.fnmatchcase(r, item)]
        if not hits:
            raise SourceError(
                f"no branch or tag of the Hub repo matches '{item}' ({spec.repo_id})",
                hint=f"the repo has {len(refs)} branches and tags"
                + (f", e.g. {', '.join(sorted(refs, key=_step_key)[:3])}" if refs else ""),
            )
        out.extend(hits)
    unique = list(dict.fromkeys(out))
    return sorted(unique, key=_step_key)


def _ref_names(repo_id: str) -> list[str]:
    from huggingface_hub import HfApi, constants

    opener = _Opener(HubSpec(repo_id))
    if opener.offline:
        names = {unquote(p.name) for p in (opener.store.dir / "refs").glob("*")}
        hf_refs = Path(constants.HF_HUB_CACHE) / _folder(repo_id) / "refs"
        names |= {str(p.relative_to(hf_refs)) for p in hf_refs.rglob("*") if p.is_file()}
        if not names:
            raise opener.not_cached("the list of branches and tags")
        return sorted(names)
    try:
        refs = HfApi().list_repo_refs(repo_id)
    except Exception as exc:
        raise opener.remote.translate(exc, "the list of branches and tags") from None
    return [r.name for r in [*refs.branches, *refs.tags]]
