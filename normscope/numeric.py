"""Numbers on finite arrays, shared by `analysis` (a norm's statistics) and `peers` (its peers).

Imports no normscope module (floor 0).
"""

from __future__ import annotations

import numpy as np


def median(values: np.ndarray) -> float:
    """The median of a 1-D array without NaN, as `np.median` gives it, by one `np.partition`.

    NOTE: `np.median` imports `numpy.ma` on first use (12-30 ms of a scan's start-up) and checks
    for NaN; both are wasted here. The same value as `np.median` on finite input: the middle
    value, or for an even length the mean of the two middle ones (one partition places both).
    """
    n = values.size
    half = n // 2
    if n % 2:
        return float(np.partition(values, half)[half])
    part = np.partition(values, (half - 1, half))
    return float((part[half - 1] + part[half]) / 2)


def row_medians(values: np.ndarray) -> np.ndarray:
    """The median of each row of a 2-D array without NaN, each as `median` gives it for that
    row: one `np.partition` along the rows places every row's middle value(s) at once."""
    n = values.shape[1]
    half = n // 2
    if n % 2:
        return np.partition(values, half, axis=1)[:, half]
    part = np.partition(values, (half - 1, half), axis=1)
    return (part[:, half - 1] + part[:, half]) / 2
