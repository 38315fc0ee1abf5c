"""Hub sources named by the user: `org/name`, `hf://org/name`, `hf://models/org/name`, `@revision`.

Standard library only: deciding whether a source is a Hub repo never imports huggingface_hub.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from normscope.errors import SourceError, UsageError

HF_PREFIX = "hf://"
COMMIT = re.compile(r"[0-9a-f]{40}")
"""A full commit id: a revision that never moves."""
_PART = r"[\w](?:[\w.-]{0,94}[\w])?"
_REPO_ID = re.compile(rf"{_PART}/{_PART}")
# A name ending like a file is a local path that does not exist, never a repo.
_FILE_SUFFIXES = (".safetensors", ".json", ".bin", ".pt", ".pth", ".gguf", ".index")


@dataclass(frozen=True, slots=True)
class HubFile:
    """One file of the repo at the commit: name, size and etag (sha256 for LFS, else git oid)."""

    name: str
    size: int
    etag: str


@dataclass(frozen=True, slots=True)
class HubSpec:
    """A Hub model repo and the revision asked for (None: the default branch)."""

    repo_id: str
    revision: str | None = None
    explicit: bool = field(default=False, compare=False)
    """Named as a Hub repo (`hf://`, a pasted Hub page URL), not a bare `org/name` that could
    have been a mistyped local path: its errors never speak of a local path."""

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
    return HubSpec(repo_id, revision.strip() or None, explicit)


def looks_like_hub(spec: str) -> bool:
    """True when `spec` reads as a Hub model repo (the caller has checked it is no local path).

    `hf://...` always does; a source that looks like a local path (`./x`, `../x`, `/x`, `~/x`,
    a Windows drive) never does, even when it does not exist.
    """
    if spec.startswith(HF_PREFIX):
        return True
    if spec.startswith((".", "/", "~", "\\")) or (len(spec) > 1 and spec[1] == ":"):
        return False
    try:
        return spec.startswith(HF_PREFIX) or parse_hub_spec(spec) is not None
    except SourceError:
        return True


def with_revision(spec: str, revision: str) -> str:
    """Fold a `--revision` into a Hub source: `org/name` -> `org/name@revision`.

    Raises UsageError naming `--revision` when `spec` is a local path or no repo id, or already
    names another revision.
    """
    if not revision.strip():
        raise UsageError("--revision is empty", param="--revision")
    if Path(spec).exists():
        raise UsageError(
            f"--revision applies to Hub repos, but '{spec}' is a local path", param="--revision"
        )
    try:
        hub = parse_hub_spec(spec)
    except SourceError as exc:
        raise UsageError(exc.message, param="--revision") from None
    if hub is None:
        raise UsageError(
            f"--revision applies to Hub repos (org/name), and '{spec}' is not one",
            param="--revision",
        )
    if hub.revision is not None and hub.revision != revision:
        raise UsageError(
            f"'{spec}' names revision '{hub.revision}' but --revision is '{revision}': give one",
            param="--revision",
        )
    prefix = HF_PREFIX if spec.strip().startswith(HF_PREFIX) else ""
    return f"{prefix}{hub.repo_id}@{revision}"


_HUB_HOSTS = ("huggingface.co", "www.huggingface.co", "hf.co")


def parse_hub_url(url: str) -> HubSpec | None:
    """A Hub page pasted from the browser: `https://huggingface.co/org/name`, or
    `.../tree/REV` (a branch, tag or commit; `refs%2Fpr%2F1` is `refs/pr/1`).

    Returns None when `url` is no huggingface.co URL; raises SourceError for a Hub URL that names
    no model repo (a dataset, a space, a file, a subfolder).
    """
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or parts.hostname not in _HUB_HOSTS:
        return None
    segments = [s for s in parts.path.split("/") if s]
    if segments and segments[0] in ("datasets", "spaces"):
        raise SourceError(f"normscope reads model repos, not {segments[0]} ({url})")
    if len(segments) == 2 or (len(segments) == 3 and segments[2] == "tree"):
        revision = None
    elif len(segments) == 4 and segments[2] == "tree":
        revision = unquote(segments[3])
    else:
        raise SourceError(
            f"not a Hub model repo page: expected https://huggingface.co/org/name[/tree/REV] "
            f"({url})",
            hint="name the repo (org/name[@revision]); normscope reads a repo's top-level files",
        )
    repo_id = "/".join(segments[:2])
    hub = parse_hub_spec(repo_id)
    if hub is None or not (revision is None or revision.strip()):
        raise SourceError(f"not a Hub model repo: {repo_id} ({url})")
    return HubSpec(hub.repo_id, revision, explicit=True)
