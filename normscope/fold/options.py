"""What a fold can be told (`FoldOptions`), `--experts` and `--max-memory` read, the torch check.

torch is an optional extra: `require_torch` turns its absence into `TorchMissing` (exit 2 with
the install hint) when a fold starts, so importing this package never needs it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from normscope.arch import RuleSet
from normscope.errors import NormscopeError, UsageError
from normscope.executors import ClusterSpec
from normscope.schema import Parametrization, Thresholds
from normscope.scope import DEFAULT, Selector, parse_scope

TORCH_HINT = 'pip install "normscope[torch]"'
DEFAULT_MAX_MEMORY = 2 * 1000**3


class TorchMissing(NormscopeError):
    """`fold` needs torch, which is an optional extra."""

    def __init__(self) -> None:
        super().__init__("normscope fold needs torch, which is not installed", hint=TORCH_HINT)


@dataclass(frozen=True, slots=True)
class FoldOptions:
    """Everything a fold can be told."""

    device: str = "auto"
    """auto (CUDA when torch sees one), cpu, cuda or cuda:N. A dry run imports no torch: its
    plan names the device as given (`auto` unresolved)."""
    max_memory: int = DEFAULT_MAX_MEMORY
    """Bytes of row blocks alive at once (read, queued, reducing, staged)."""
    experts: str = "8"
    """shared, all, or N routed experts per MoE layer (spread over the range)."""
    dry_run: bool = False
    """Plan only: list consumers and the bytes a fold would read; read no matrix."""
    thresholds: Thresholds = field(default_factory=Thresholds)
    parametrization: Parametrization | None = None
    scope: Selector = DEFAULT
    """Which folded norms `fold_summary.gated_out_of_band` counts (a text is parsed)."""
    rules: RuleSet = field(default_factory=RuleSet)
    """User architecture rules (`normscope.arch.load_rules`), as for a scan."""
    cluster: ClusterSpec | None = None
    """Reduce the matrices on a Dask cluster (`normscope.executors`), in tensor sets; None: here."""
    cache: bool = True
    """Reuse a local checkpoint's cached layout (`--no-cache`: False)."""
    verbose: bool = False
    """Let huggingface_hub's own log lines reach stderr (`-v`)."""
    token: str | None = field(default=None, repr=False)
    """A Hugging Face token for a Hub source (`--token`), as `ScanOptions.token`."""

    def __post_init__(self) -> None:
        if isinstance(self.scope, str):  # the library's edge: parse a scope given as text
            object.__setattr__(self, "scope", parse_scope(self.scope))


@dataclass(frozen=True, slots=True)
class ExpertChoice:
    """`shared` (router + shared experts only), `all`, or N routed experts spread evenly."""

    mode: str = "sample"
    count: int = 8

    @classmethod
    def parse(cls, text: str | int) -> ExpertChoice:
        """'shared', 'all' or a positive integer."""
        if isinstance(text, int) or str(text).isdigit():
            n = int(text)
            if n < 1:
                raise ValueError("--experts takes shared, all or a positive integer")
            return cls("sample", n)
        if text in ("shared", "all"):
            return cls(str(text), 0)
        raise ValueError(f"--experts takes shared, all or a positive integer, not '{text}'")

    def pick(self, total: int) -> list[int]:
        """Expert indices to read out of `total`: evenly spread over the whole range."""
        if self.mode == "all":
            return list(range(total))
        if self.mode == "shared" or total == 0:
            return []
        n = min(self.count, total)
        if n == 1:
            return [0]
        return sorted({round(k * (total - 1) / (n - 1)) for k in range(n)})


_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)


def parse_memory(text: str) -> int:
    """'256MB', '2GB', '1.5GiB', '4096' (bytes) -> bytes."""
    m = _MEMORY.match(text)
    if m is None:
        raise UsageError(f"cannot read '{text}' as a size (e.g. 256MB, 2GB)", "--max-memory")
    unit = (m.group(2) or "").lower().rstrip("b")
    base = 1024 if unit.endswith("i") else 1000
    power = " kmgt".index(unit[:1]) if unit else 0
    return int(float(m.group(1)) * base**power)


def require_torch(load: bool = True) -> None:
    """Raise TorchMissing unless torch can be imported; with `load` False only look for it
    (`importlib.util.find_spec`: a fold checks before its scan and imports torch once the plan
    is known)."""
    if not load:
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            raise TorchMissing()
        return
    try:
        import torch  # noqa: F401
    except ImportError:
        raise TorchMissing() from None
