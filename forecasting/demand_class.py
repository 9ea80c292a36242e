"""Demand classes of series (Syntetos, Boylan & Croston 2005), read from a window of days.

A series' class is set by two numbers over its last `CLASS_DAYS` known days:
- ADI, the average inter-demand interval: known days / days with a sale;
- CV², the squared coefficient of variation of its non-zero days' sizes.

The cut-offs are the paper's (ADI 1.32, CV² 0.49), not tuned here:

| class | ADI | CV² |
|---|---|---|
| smooth (0) | < 1.32 | < 0.49 |
| erratic (1) | < 1.32 | >= 0.49 |
| intermittent (2) | >= 1.32 | < 0.49 |
| lumpy (3) | >= 1.32 | >= 0.49 |

A window without a sale (or without a known day) is intermittent: no size to vary, no
demand to space. Missing days (NaN) are neither sales nor zeros. Pure numpy: the stream reads
the class from the day ring each state carries, a backtest from the panel's history; the
same window gives the same class.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["ADI_CUT", "CLASSES", "CLASS_DAYS", "CV2_CUT", "demand_classes"]

CLASSES = ("smooth", "erratic", "intermittent", "lumpy")
ADI_CUT = 1.32
CV2_CUT = 0.49
CLASS_DAYS = 91  # a quarter: as long as the shortest shared history's warm-up allows


def demand_classes(windows: ArrayLike, days: int = CLASS_DAYS) -> NDArray[np.int8]:
    """(n,) each row's class (an index into `CLASSES`) from its last `days` columns of
    `windows` (n, T), oldest first (NaN: unknown)."""
    w = np.asarray(windows, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"windows must be (series, days), got shape {w.shape}")
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    w = w[:, -days:]
    known = np.isfinite(w)
    sold = known & (w > 0)
    n_known = known.sum(axis=1)
    n_sold = sold.sum(axis=1)
    sizes = np.where(sold, w, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sizes.sum(axis=1) / n_sold
        var = np.where(sold, (sizes - mean[:, None]) ** 2, 0.0).sum(axis=1) / n_sold
        cv2 = var / mean**2
        adi = n_known / n_sold
    spaced = (n_sold == 0) | (adi >= ADI_CUT)
    varied = (n_sold > 0) & (cv2 >= CV2_CUT)
    out: NDArray[np.int8] = (2 * spaced + varied).astype(np.int8)
    return out
