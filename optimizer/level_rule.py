"""The order-up-to level rule: each review's level averaged over one protection interval.

A forecast-driven order-up-to level moves 14-16% of itself from one review to the next, and
under lost sales a level that falls leaves the stock an earlier, higher one ordered: the
"ratchet" (benchmarks/README.md, "Served policy vs the LSTM's"). Rule `cover_mean` orders up
to the mean of the raw levels that this review and the previous ones within one protection
interval computed: k = ceil(cover / review) reviews, cover = lead time + review period, the
reviews whose orders can still be on the shelf together. A steady forecast keeps its level;
a transient peak lifts it by 1/k of itself. Rule `none` orders up to each review's own level.

One formula for both users: the simulation (`optimizer.simulation.ForecastPolicy`, the
levels of every target and SKU as arrays, `smooth_levels`) and the stream's review
(`optimizer.review.review`, per SKU the raw levels its state remembers, `smooth_sku_levels`)
both take the mean through `mean_level`, adding the same levels in the same order, so a SKU
with the same history gets the same level in either. The simulation reviews every SKU every
review period, so its last k reviews are the ones of the protection interval. The stream
reviews a SKU when one of its buckets closes, i.e. when its next event comes: a SKU without
orders for days is reviewed once for them, and a policy's review period may span several
buckets. So the stream keeps each raw level with the bucket of its review
(`streams.state.SkuState.order_up_to_levels`, `order_up_to_buckets`) and averages the
reviews of the last cover-steps buckets, this one's included (`smooth_sku_levels`): the same
reviews as the simulation's k for a SKU reviewed every review period, and never a level of
a review whose order can no longer be on the shelf with this one's (a sparse SKU's stale
levels of weeks ago).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_LEVEL_RULE",
    "LEVEL_RULES",
    "LevelRule",
    "cover_reviews",
    "mean_level",
    "smooth_levels",
    "smooth_sku_levels",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

LevelRule = Literal["cover_mean", "none"]
LEVEL_RULES: tuple[LevelRule, ...] = ("cover_mean", "none")
DEFAULT_LEVEL_RULE: LevelRule = "cover_mean"
"""What the stream runs unless told otherwise (`Settings.restock_level_rule`), and so what the
simulation's forecast policies default to."""


def cover_reviews(cover_steps: npt.ArrayLike, review_steps: npt.ArrayLike) -> IntArray:
    """How many reviews fall in one protection interval: ceil(cover / review), elementwise;
    both in the same unit (days in the simulation, buckets in the stream), the review period
    taken as at least 1. At least 1 review (this one)."""
    cover = np.asarray(cover_steps, dtype=np.int64)
    review = np.maximum(np.asarray(review_steps, dtype=np.int64), 1)
    return np.maximum(-(-cover // review), 1).astype(np.int64)


def mean_level(levels: FloatArray) -> FloatArray:
    """The mean over axis 0 (reviews, oldest first) of `levels`, NaN entries (reviews not
    remembered) left out: the levels are added oldest first, then divided by their count."""
    present = ~np.isnan(levels)
    total = np.where(present, levels, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore"):  # a column with no level at all stays NaN
        return np.asarray(total / present.sum(axis=0), dtype=np.float64)


def smooth_levels(memory: list[FloatArray], up: FloatArray, k: int) -> FloatArray:
    """The mean of this review's order-up-to levels `up` and the last k - 1 reviews' (fewer
    at the start); `memory` (the raw levels, oldest first, each shaped as `up`) is updated
    in place to the last k."""
    memory.append(up)
    del memory[:-k]
    return mean_level(np.stack(memory))


def smooth_sku_levels(raw: npt.ArrayLike, remembered: Sequence[Sequence[float]],
                      made_at: Sequence[Sequence[int]], bucket: npt.ArrayLike,
                      window: npt.ArrayLike
                      ) -> tuple[FloatArray, IntArray, list[list[float]], list[list[int]]]:
    """Rule `cover_mean` for n SKUs reviewed at `bucket` (n,), each over its own protection
    interval of `window` (n,) buckets (cover steps: lead time + review period).

    `raw` (n,): this review's order-up-to levels from its forecast alone; `remembered[i]`,
    `made_at[i]`: SKU i's raw levels of earlier reviews and the buckets they were made at,
    oldest first. A level counts when its bucket is within the last `window` buckets,
    this one's included (bucket > bucket - window), and before this one (a replayed review of
    the same bucket replaces it). Returns the levels to order up to (n,), how many reviews each
    is the mean of (n,), and what each SKU remembers next: the levels that counted, this
    review's last, with their buckets (at most `window` of them).
    """
    now = np.asarray(raw, dtype=np.float64)
    at = np.asarray(bucket, dtype=np.int64).tolist()
    spans = np.maximum(np.asarray(window, dtype=np.int64), 1).tolist()
    n = now.shape[0]
    kept: list[list[float]] = []
    kept_at: list[list[int]] = []
    for level, past, past_at, b, span in zip(now.tolist(), remembered, made_at, at, spans,
                                             strict=True):
        levels = [x for x, t in zip(past, past_at, strict=True) if b - span < t < b]
        buckets = [t for t in past_at if b - span < t < b]
        levels.append(level)
        buckets.append(b)
        kept.append(levels)
        kept_at.append(buckets)
    counts = np.fromiter(map(len, kept), dtype=np.int64, count=n)
    depth = int(counts.max()) if n else 1
    # reviews down the rows, oldest first, each SKU's levels at the bottom of its column
    table = np.full((depth, n), np.nan)
    for i, levels in enumerate(kept):
        table[depth - len(levels):, i] = levels
    return mean_level(table), counts, kept, kept_at
