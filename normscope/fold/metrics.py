"""The numbers of a fold, in torch, on whatever device the tensors are on.

Two levels:
- `Reducer` turns the row blocks of one stored matrix into its squared column norms (or row
  norms, for producers and GPT-2 Conv1D consumers), dequantising on the device: BF16/F16/F32,
  FP8 E4M3/E5M2 with DeepSeek's 128x128 block `weight_scale_inv` (or a per-tensor / per-row
  scale). A block is converted to float32 a chunk of ~2M elements at a time, so the float copy
  stays in cache and the working memory is a few MB whatever the block size.
- `norm_metrics` turns one norm's effective gain γ and its pooled c² into the folded ratio,
  compensation and concentration (float64, on the CPU: d numbers).

Imported only by `normscope.fold` (torch is optional).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from normscope.fold.tasks import DECODABLE

CHUNK_ELEMENTS = 1 << 21
"""Elements converted to float32 at once (8 MB): small enough to stay in a CPU's cache."""
FP8_BLOCK = 128
"""DeepSeek-V3's FP8 block size (inference/kernel.py `block_size = 128`)."""

TORCH_DTYPES: dict[str, torch.dtype] = {k: getattr(torch, v) for k, v in DECODABLE.items()}
"""safetensors dtypes that fold decodes (`tasks.DECODABLE`), as torch dtypes."""


def itemsize(dtype: str) -> int:
    """Bytes per element of a decodable dtype."""
    return TORCH_DTYPES[dtype].itemsize


class Workspace:
    """Float32 scratch reused by every block: a chunk's values and its expanded scales.

    NOTE: fresh 8 MB temporaries per chunk, interleaved with the small long-lived accumulators,
    fragmented glibc's heap: RSS grew to 7-9 GB folding the DeepSeek-V3 replica (1378 FP8
    matrices, 25 GB) under a 256 MB budget. With the scratch allocated once it stays flat.
    """

    def __init__(self, elements: int, device: torch.device) -> None:
        self.values = torch.empty(elements, dtype=torch.float32, device=device)
        self.scales = torch.empty(elements, dtype=torch.float32, device=device)


class Reducer:
    """Accumulate one matrix's squared norms along an axis, block by block, on `device`.

    `rows_axis` False: c²[j] = Σ_r W[r, j]² (length cols). True: Σ_j W[r, j]² (length rows).
    `scale` (float32, on the device) dequantises: 2-D block scales [ceil(R/128), ceil(C/128)],
    one number, or one per row.
    """

    def __init__(
        self,
        dtype: str,
        shape: tuple[int, int],
        rows_axis: bool,
        workspace: Workspace,
        scale: torch.Tensor | None = None,
    ) -> None:
        self.dtype = TORCH_DTYPES[dtype]
        self.rows, self.cols = shape
        self.rows_axis = rows_axis
        self.scale = scale
        self.work = workspace
        self.next_row = 0
        """The first row of the next block (blocks come in row order)."""
        device = workspace.values.device
        self.acc = torch.zeros(
            self.rows if rows_axis else self.cols, dtype=torch.float64, device=device
        )
        if scale is not None and scale.dim() == 2:
            # Which scale column each weight column uses: c // 128 (clamped for ragged edges).
            self._col_block = torch.clamp(
                torch.arange(self.cols, device=device) // FP8_BLOCK, max=scale.shape[1] - 1
            )

    def add(self, raw: torch.Tensor, row0: int) -> None:
        """Fold in rows [row0, row0 + n) given as raw little-endian bytes (uint8, on the device).

        Blocks come in row order. The float32 chunks are fixed windows of the matrix's rows
        ([k·step, (k+1)·step)), assembled across blocks in the workspace, so the sums are the
        same to the bit whatever the block size (`--max-memory`, the CPU's small blocks)."""
        block = raw.view(self.dtype).view(-1, self.cols)
        # NOTE: a window is filled across calls: a block out of order would mix windows.
        if row0 != self.next_row:
            raise AssertionError(f"rows from {row0} reduced, {self.next_row} expected")
        self.next_row = row0 + block.shape[0]
        cols = self.cols
        step = max(1, self.work.values.numel() // max(1, cols))
        done, rows = 0, block.shape[0]
        while done < rows:
            first = row0 + done
            offset = first % step  # rows of this window already in the workspace
            n = min(step - offset, rows - done)
            chunk = self.work.values[offset * cols : (offset + n) * cols].view(n, cols)
            chunk.copy_(block[done : done + n])  # decode to float32 in place, no allocation
            if self.scale is not None:
                chunk.mul_(self._scale_for(first, n))
            chunk.square_()
            done += n
            if self.rows_axis:
                self.acc[first : first + n] += chunk.sum(1, dtype=torch.float64)
            elif (first + n) % step == 0 or first + n == self.rows:
                # float32 partial sums over a window (≤ 2M elements), float64 across windows.
                window = self.work.values[: (offset + n) * cols].view(offset + n, cols)
                self.acc += window.sum(0)

    def _scale_for(self, first: int, n: int) -> torch.Tensor:
        scale = self.scale
        assert scale is not None
        if scale.numel() == 1:
            return scale.reshape(1, 1)
        if scale.dim() == 2:
            groups = torch.arange(first, first + n, device=scale.device) // FP8_BLOCK
            groups = torch.clamp(groups, max=scale.shape[0] - 1)
            out = self.work.scales[: n * self.cols].view(n, self.cols)
            torch.index_select(scale.index_select(0, groups), 1, self._col_block, out=out)
            return out
        return scale.reshape(-1)[first : first + n].reshape(-1, 1)


@dataclass(frozen=True, slots=True)
class NormMetrics:
    """What one norm's gain does once folded into the matrices it feeds (see the README)."""

    folded_ratio: float
    """‖γ ⊙ c‖ / ‖c‖: the gain as the consumer weighs channels (the scan's ratio if c is flat)."""
    compensation: float | None
    """Spearman rank correlation of |γ| and c; None when either is constant."""
    top_share: float
    """Share of ‖γ ⊙ c‖² held by the top 1% of channels (at least one)."""
    max_over_median: float
    """max |γ_i c_i| / median |γ_i c_i|."""
    folded_sq: float
    """‖W·diag(γ)‖_F² = Σ γ_i² c_i² (the MTP input balance uses it)."""


def top_count(dim: int) -> int:
    """Channels in the top 1%: ⌊d/100⌋, at least one."""
    return max(1, dim // 100)


def norm_metrics(gain: torch.Tensor, csq: torch.Tensor) -> NormMetrics:
    """Metrics of one norm from its effective gain γ and pooled c² (both length d, any device)."""
    g = gain.detach().to("cpu", torch.float64).reshape(-1)
    c2 = csq.detach().to("cpu", torch.float64).reshape(-1)
    weighted = g.square() * c2  # (γ_i c_i)²
    total = float(weighted.sum())
    base = float(c2.sum())
    folded_ratio = math.sqrt(total / base) if base > 0 else math.nan
    k = top_count(int(g.numel()))
    top = float(torch.topk(weighted, k).values.sum()) if g.numel() else math.nan
    scaled = weighted.sqrt()
    median = _median(scaled)
    return NormMetrics(
        folded_ratio=folded_ratio,
        compensation=spearman(g.abs(), c2.sqrt()),
        top_share=top / total if total > 0 else math.nan,
        max_over_median=float(scaled.max()) / median if median > 0 else math.inf,
        folded_sq=total,
    )


def _median(x: torch.Tensor) -> float:
    """The median as numpy defines it (mean of the two middle values for an even count)."""
    s = torch.sort(x).values
    n = s.numel()
    if n == 0:
        return math.nan
    return float(s[n // 2]) if n % 2 else float((s[n // 2 - 1] + s[n // 2]) / 2)


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks, ties given their average rank (as scipy.stats.rankdata 'average')."""
    values, order = torch.sort(x, stable=True)
    _, inverse, counts = torch.unique_consecutive(values, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).to(torch.float64)
    average = ends - (counts.to(torch.float64) - 1) / 2
    ranks = torch.empty_like(x, dtype=torch.float64)
    ranks[order] = average[inverse]
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Spearman's rank correlation; None when either side is constant (or not finite)."""
    if a.numel() < 2 or not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return None
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float(ra.square().sum()) * float(rb.square().sum()))
    if den == 0:
        return None
    return float((ra * rb).sum()) / den
