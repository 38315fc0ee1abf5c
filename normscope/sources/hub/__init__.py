"""Hugging Face Hub sources: scan a model repo reading only its headers and its norm bytes.

`open_hub_checkpoint("org/name@rev")` returns the `Checkpoint` a local folder would give, so
`scan`, `diff` and `check` work unchanged; `sources.open_checkpoint` sends here any source that
is not an existing local path and reads as `org/name`, `hf://org/name` or `hf://models/org/name`,
each with an optional `@revision`.

Rooms: `spec.py` (what the user named), `cache.py` (normscope's cache), `remote.py` (requests
through huggingface_hub), `retry.py` (timeouts, retries, logging), `reader.py` (the repo as a
`Store`: HF cache, normscope cache, ranged GETs), `repo.py` (the revision resolved to a commit
and its file list — one `model_info` call, or the caches when the commit is pinned or the Hub is
offline — the store handed to the shared layout check; branches and tags by step). This module
only hands their names on. The transfer stays within header + norm +
config/index bytes, plus at most `ranged.GAP_SHARE` of header over-reads and coalesced gaps, and
the `model_info` answer.

huggingface_hub is imported only when a Hub source is opened: `normscope --help` and local scans
never pay for it.
"""

from __future__ import annotations

from normscope.sources.hub.cache import (
    CacheEntry,
    CacheSummary,
    cache_root,
    cache_summary,
    clear_cache,
)
from normscope.sources.hub.remote import HubMismatch
from normscope.sources.hub.repo import list_hub_revisions, open_hub_checkpoint
from normscope.sources.hub.retry import DEFAULT_TIMEOUT, TIMEOUT_ENV, hub_timeout, quiet_hub_logging
from normscope.sources.hub.spec import (
    HF_PREFIX,
    HubSpec,
    looks_like_hub,
    parse_hub_spec,
    parse_hub_url,
    with_revision,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "HF_PREFIX",
    "TIMEOUT_ENV",
    "CacheEntry",
    "CacheSummary",
    "HubMismatch",
    "HubSpec",
    "cache_root",
    "cache_summary",
    "clear_cache",
    "hub_timeout",
    "list_hub_revisions",
    "looks_like_hub",
    "open_hub_checkpoint",
    "parse_hub_spec",
    "parse_hub_url",
    "quiet_hub_logging",
    "with_revision",
]
