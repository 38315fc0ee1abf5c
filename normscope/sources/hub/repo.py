"""A Hub model repo: its revision resolved to a commit and its files, its branches and tags.

One `model_info` call lists the files with sizes and etags, or the caches answer when the commit
is pinned or the Hub is offline; the repo as a `HubStore` then goes to the shared layout check.
`list_hub_revisions` expands a `--revisions` pattern over the refs, ordered by step.
huggingface_hub is imported only here, when a Hub source is really opened.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
from pathlib import Path
from urllib.parse import quote, unquote

from normscope.errors import SourceError
from normscope.naming import natural_key
from normscope.sources.hub.cache import HubCache, cache_root, folder_name
from normscope.sources.hub.reader import HubStore
from normscope.sources.hub.remote import HubUnreachable, Remote, RepoContext, staged_writes
from normscope.sources.hub.spec import COMMIT, HF_PREFIX, HubFile, HubSpec, parse_hub_spec
from normscope.sources.jsonload import load_json
from normscope.sources.layout import open_layout
from normscope.sources.local import read_small_file
from normscope.sources.safetensors import INDEX_SUFFIX
from normscope.sources.store import Checkpoint, ProgressFactory


def open_hub_checkpoint(
    spec: str | HubSpec,
    progress: ProgressFactory | None = None,
    verbose: bool = False,
    token: str | None = None,
) -> Checkpoint:
    """Open a Hub model repo: resolve the revision, read config, index and every shard header.

    Tensor bytes are read later with `Checkpoint.read`. Raises SourceError, with a hint, for
    every Hub failure: repo or revision not found, gated or private, offline with nothing cached,
    rate limits, broken transfers. `progress` reports long transfers; `verbose` lets
    huggingface_hub's own log lines through; `token` replaces huggingface_hub's own (HF_TOKEN).
    """
    hub = spec if isinstance(spec, HubSpec) else parse_hub_spec(spec)
    if hub is None:
        raise SourceError(f"not a Hub model repo id (org/name[@revision]) ({spec})")
    _require_huggingface_hub(str(hub))
    return _Opener(hub, progress, verbose, token).open()


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

    def __init__(
        self,
        spec: HubSpec,
        progress: ProgressFactory | None = None,
        verbose: bool = False,
        token: str | None = None,
    ) -> None:
        from huggingface_hub import constants

        warnings: list[str] = []
        self.ctx = RepoContext(
            repo_id=spec.repo_id,
            revision=spec.revision or constants.DEFAULT_REVISION,
            offline=bool(constants.HF_HUB_OFFLINE),
            cache=HubCache(cache_root(), spec.repo_id, warnings),
            hf_cache=Path(constants.HF_HUB_CACHE),
            warnings=warnings,
            verbose=verbose,
            token=token,
            local_also="" if spec.explicit else f"; no local path '{spec.repo_id}' exists either",
        )
        self.remote = Remote(self.ctx)
        self.progress = progress

    def open(self) -> Checkpoint:
        listing: dict[str, HubFile] | None = None
        fetched = False
        if COMMIT.fullmatch(self.ctx.revision):
            # A pinned commit never moves: the caches can answer without any request.
            self.ctx.commit = self.ctx.revision
            listing = self._cached_listing(self.ctx.commit, snapshots=self.ctx.offline)
        if listing is None and self.ctx.offline:
            listing = self._cached_revision()
            if listing is None:
                raise self.ctx.not_cached("this revision", also=self.ctx.local_also)
        if listing is None:
            try:
                listing = self._model_info()
                fetched = True
            except HubUnreachable as exc:
                listing = self._cached_revision()
                if listing is None:
                    raise HubUnreachable(exc.message + self.ctx.local_also, exc.hint) from None
                self.ctx.warnings.append(
                    f"{exc.message}; using the cached commit {self.ctx.commit[:12]} instead"
                )
        store = HubStore(self.ctx, self.remote, listing, self.progress)
        cache = self.ctx.cache
        with staged_writes(cache):  # nothing is written unless the whole open succeeds
            checkpoint = open_layout(store, f"{HF_PREFIX}{self.ctx.repo_id}@{self.ctx.commit}")
            if fetched:
                cache.set_manifest(self.ctx.commit, listing)
                if self.ctx.revision != self.ctx.commit:
                    cache.set_ref(self.ctx.revision, self.ctx.commit)
        return checkpoint

    def _cached_revision(self) -> dict[str, HubFile] | None:
        """The newest cached commit of a branch or tag, from either cache, with its file list."""
        candidates: list[tuple[float, str]] = []
        mine = self.ctx.cache.ref(self.ctx.revision)
        if mine is not None:
            candidates.append((mine[1], mine[0]))
        theirs = self.ctx.hf_cache / folder_name(self.ctx.repo_id) / "refs" / self.ctx.revision
        with contextlib.suppress(OSError):
            commit = theirs.read_text().strip()
            if COMMIT.fullmatch(commit):
                candidates.append((theirs.stat().st_mtime, commit))
        for _, commit in sorted(candidates, reverse=True):
            listing = self._cached_listing(commit, snapshots=True)
            if listing is not None:
                self.ctx.commit = commit
                return listing
        return None

    def _cached_listing(self, commit: str, snapshots: bool) -> dict[str, HubFile] | None:
        """The top-level files at `commit`: normscope's manifest (what model_info listed), else
        with `snapshots` what an HF cache snapshot holds (when the Hub cannot be asked: a
        snapshot may lack files the repo has, e.g. config.json after `hf download --include`)."""
        listing = self.ctx.cache.manifest(commit)
        if listing is not None or not snapshots:
            return listing
        snapshot = self.ctx.hf_cache / folder_name(self.ctx.repo_id) / "snapshots" / commit
        files = {}
        with contextlib.suppress(OSError):
            for path in snapshot.iterdir():
                if path.is_file():
                    # The snapshot entry links to blobs/<etag>; a copy (no symlinks) has none.
                    etag = Path(os.readlink(path)).name if path.is_symlink() else ""
                    files[path.name] = HubFile(path.name, path.stat().st_size, etag)
        indexes = sorted(n for n in files if n.endswith(INDEX_SUFFIX))
        if indexes:
            # Partly downloaded (`hf download --include`)? Use it only when every shard is there.
            try:
                index = read_small_file(snapshot / indexes[0], None) or b""
                shards = set(load_json(index)["weight_map"].values())
            except (OSError, ValueError, KeyError, TypeError, AttributeError, SourceError):
                return None
            if not shards or not shards <= set(files):
                return None
        elif not any(n.endswith(".safetensors") for n in files):
            return None
        return files

    def _model_info(self) -> dict[str, HubFile]:
        """Resolve the revision and list the files with sizes and etags: one API request."""
        from huggingface_hub.hf_api import ModelInfo

        path = f"api/models/{self.ctx.repo_id}/revision/{quote(self.ctx.revision, safe='')}"
        data = self.remote.api(path, {"blobs": True})
        try:
            info = ModelInfo(**data)
        except (TypeError, KeyError, ValueError) as exc:
            raise SourceError(
                f"unexpected answer from the Hub API: {exc} ({self.ctx.where})"
            ) from None
        if not isinstance(info.sha, str) or not COMMIT.fullmatch(info.sha):
            raise SourceError(f"the Hub API gave no commit for this revision ({self.ctx.where})")
        self.ctx.commit = info.sha
        files = {}
        for sibling in info.siblings or []:
            if "/" in sibling.rfilename:
                continue  # normscope reads top-level checkpoints, like a local folder
            etag = sibling.lfs.sha256 if sibling.lfs is not None else (sibling.blob_id or "")
            size = sibling.lfs.size if sibling.lfs is not None else sibling.size
            if size is not None:
                files[sibling.rfilename] = HubFile(sibling.rfilename, size, etag)
        return files


def _step_key(name: str) -> tuple[int, int, int, tuple[tuple[int, int, str], ...]]:
    """Order refs by training progress: stage number, then step number, then name."""
    stage = re.search(r"stage[-_]?(\d+)", name, re.IGNORECASE)
    step = re.search(r"step[-_]?(\d+)", name, re.IGNORECASE)
    return (
        0 if step else 1,
        int(stage.group(1)) if stage else 0,
        int(step.group(1)) if step else 0,
        natural_key(name),
    )


def list_hub_revisions(repo: str, pattern: str, token: str | None = None) -> list[str]:
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
            refs = _ref_names(spec.repo_id, token)
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


def _ref_names(repo_id: str, token: str | None) -> list[str]:
    from huggingface_hub import HfApi, constants

    opener = _Opener(HubSpec(repo_id), token=token)
    if opener.ctx.offline:
        names = {unquote(p.name) for p in (opener.ctx.cache.dir / "refs").glob("*")}
        hf_refs = Path(constants.HF_HUB_CACHE) / folder_name(repo_id) / "refs"
        names |= {str(p.relative_to(hf_refs)) for p in hf_refs.rglob("*") if p.is_file()}
        if not names:
            raise opener.ctx.not_cached("the list of branches and tags")
        return sorted(names)
    try:
        refs = HfApi(token=token).list_repo_refs(repo_id)
    except Exception as exc:
        raise opener.remote.translate(exc, "the list of branches and tags") from None
    return [r.name for r in [*refs.branches, *refs.tags]]
