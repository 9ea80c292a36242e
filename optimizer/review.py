"""The periodic review as arrays: forecasts, positions and policy terms in; orders, levels,
stock-out risk and anomaly flags out.

One call reviews every SKU whose bucket just closed. Row i of every array is one SKU:

    terms = PolicyTerms.of(policies, bucket_seconds=86_400)
    result = review(forecast, inventory_position=position, terms=terms,
                    previous_high=previous_high, observed=observed, stock_known=known,
                    stockout_alert_open=open_,
                    level_memory=LevelMemory(levels, made_at, bucket=reviewed_bucket))
    result.order_quantity[i], result.restock_reason(i), result.raise_stockout[i], ...
    levels, made_at = result.level_memory  # each SKU's raw levels for its next review

The policy is periodic review (R, S): an order placed now must last until the NEXT review's
order lands, so the level protects lead time + review period (a reorder point over the lead
time alone leaves the review period unprotected — the simulation showed stock-outs on
perfectly known demand); reorder point = order-up-to level. With `level_memory` (the level
rule `cover_mean`, `optimizer.level_rule`) that level is the mean of this review's raw level
and those of the SKU's earlier reviews within one protection interval (its last cover-steps
buckets), as the simulation's forecast policies run it. Pure numpy: the stream turns the
arrays into events and keeps its state (open alerts, orders on order, remembered levels)
itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from forecasting.base import QuantileForecast
from forecasting.quantiles import exceedance_probability, quantile_at
from optimizer.level_rule import smooth_sku_levels
from optimizer.policy import order_quantity, restock_reason

__all__ = [
    "HIGH_LEVEL",
    "RISK_CLOSE",
    "RISK_OPEN",
    "LevelMemory",
    "PolicyTerms",
    "Review",
    "TermsSource",
    "overdue_restocks",
    "review",
    "stale_stock",
    "steps_of_days",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

HIGH_LEVEL = 0.975
"""Forecast quantile of the next bucket above which its observed demand is an anomaly."""
RISK_OPEN, RISK_CLOSE = 0.2, 0.1
"""Stock-out probability hysteresis: an alert opens at >= RISK_OPEN and closes below
RISK_CLOSE, so a risk hovering around one threshold raises one alert per episode."""


def steps_of_days(days: int, bucket_seconds: int) -> int:
    """A policy's days as whole buckets, at least one (an order never lands within its bucket)."""
    return max(1, round(days * 86_400 / bucket_seconds))


class TermsSource(Protocol):
    """What the review reads of a restock policy (`schemas.SkuPolicy` has these)."""

    @property
    def lead_time_days(self) -> int: ...
    @property
    def review_days(self) -> int: ...
    @property
    def service_level(self) -> float: ...
    @property
    def case_pack(self) -> int: ...
    @property
    def moq(self) -> int: ...


@dataclass(frozen=True)
class PolicyTerms:
    """The policy terms of n SKUs as (n,) arrays, in buckets where they are durations.

    `lead_steps`: buckets from order to receipt; `cover_steps`: lead + review period, the
    buckets an order must cover; `service_level` (0-1): the chance of covering them;
    `case_pack` and `moq` in units.
    """

    lead_steps: IntArray
    cover_steps: IntArray
    service_level: FloatArray
    case_pack: IntArray
    moq: IntArray

    @classmethod
    def of(cls, policies: Sequence[TermsSource], bucket_seconds: int) -> PolicyTerms:
        """The terms of each SKU's policy; policies shared by many SKUs are converted once."""
        # a shop has few distinct policies (most SKUs share the default): their terms once each
        seen: dict[int, tuple[int, int, float, int, int]] = {}
        rows = []
        for p in policies:
            row = seen.get(id(p))
            if row is None:
                lead = steps_of_days(p.lead_time_days, bucket_seconds)
                row = seen[id(p)] = (lead, lead + steps_of_days(p.review_days, bucket_seconds),
                                     p.service_level, p.case_pack, p.moq)
            rows.append(row)
        lead_steps, cover_steps, service, case_pack, moq = (
            list(column) for column in zip(*rows, strict=True)) if rows else ([], [], [], [], [])
        return cls(np.array(lead_steps, dtype=np.int64), np.array(cover_steps, dtype=np.int64),
                   np.array(service, dtype=np.float64), np.array(case_pack, dtype=np.int64),
                   np.array(moq, dtype=np.int64))


@dataclass(frozen=True)
class LevelMemory:
    """Rule `cover_mean`'s input for n SKUs: per SKU the raw order-up-to levels of its
    earlier reviews and the buckets they were made at, oldest first (empty for a new SKU),
    and the bucket of this review (n,)."""

    levels: Sequence[Sequence[float]]
    made_at: Sequence[Sequence[int]]
    bucket: npt.ArrayLike


@dataclass(frozen=True)
class Review:
    """What the review decided for n SKUs; every array is (n,) unless said otherwise.

    reorder_point, order_up_to: the (R, S) level per SKU (equal: the demand quantile over
        lead time + review period at the service level; under `cover_mean` the mean of that
        and the SKU's remembered raw levels).
    raw_order_up_to: this review's level from its forecast alone.
    levels_averaged: how many reviews' raw levels order_up_to is the mean of (1: this one).
    level_memory: per SKU the raw levels to remember for its next review and their buckets
        (those of its protection interval, this one's last); None without `cover_mean`.
    inventory_position: the positions reviewed (orders are decided on these).
    arriving_position: the positions counting only restocks that can still arrive (the
        stock-out risk is computed on these).
    order_quantity: units to order now (whole case packs, at least the MOQ); 0 where the
        stock is unknown (nothing is ordered on a guess).
    stockout_risk: P(demand over the lead time > arriving position); NaN where stock is
        unknown. risk_steps: the buckets that risk looks ahead (lead time, capped at the
        forecast's horizon).
    raise_stockout, clear_stockout: the risk crossed RISK_OPEN with no alert open / fell
        below RISK_CLOSE with one open.
    anomalous: the bucket that just closed sold more than the previous forecast's HIGH_LEVEL
        quantile for it (and more than one unit).
    next_bucket_high: this forecast's HIGH_LEVEL quantile of the next bucket, for the next
        review's anomaly test.
    demand_levels (Q,), cover_quantiles (n, Q): quantiles of each ordering SKU's demand over
        its cover steps, non-negative and non-decreasing, for the optimizer to value case
        packs; NaN rows where nothing is ordered; None when the forecast has under 2 levels.
    """

    terms: PolicyTerms
    reorder_point: FloatArray
    order_up_to: FloatArray
    inventory_position: FloatArray
    arriving_position: FloatArray
    order_quantity: IntArray
    stockout_risk: FloatArray
    risk_steps: IntArray
    raise_stockout: BoolArray
    clear_stockout: BoolArray
    anomalous: BoolArray
    next_bucket_high: FloatArray
    demand_levels: FloatArray
    cover_quantiles: FloatArray | None
    raw_order_up_to: FloatArray
    levels_averaged: IntArray
    level_memory: tuple[list[list[float]], list[list[int]]] | None

    def restock_reason(self, i: int) -> str:
        """Why SKU i orders what it orders, in words (the restock event's `reason`)."""
        position = float(self.inventory_position[i])
        return restock_reason(
            position=int(position) if position.is_integer() else position,
            reorder_point=float(self.reorder_point[i]),
            order_up_to=float(self.order_up_to[i]),
            case_pack=int(self.terms.case_pack[i]), moq=int(self.terms.moq[i]),
            quantity=int(self.order_quantity[i]),
            averaged_over=int(self.levels_averaged[i]))


def review(
    forecast: QuantileForecast,
    *,
    inventory_position: npt.ArrayLike,
    terms: PolicyTerms,
    previous_high: npt.ArrayLike,
    observed: npt.ArrayLike,
    stock_known: npt.ArrayLike | None = None,
    stockout_alert_open: npt.ArrayLike | None = None,
    arriving_position: npt.ArrayLike | None = None,
    level_memory: LevelMemory | None = None,
) -> Review:
    """Review n SKUs at once from their forecast (n series) and state.

    inventory_position: units on hand + on order - backordered (`policy.inventory_position`);
    the order decision reads it (a restock that arrives late still arrives: ordering its
    units again would double them). arriving_position: the same counting only restocks that
    can still arrive (not overdue, `overdue_restocks`); the stock-out risk reads it (default:
    inventory_position).
    previous_high: the last review's `next_bucket_high` (NaN before the first forecast).
    observed: demand of the bucket that just closed. stock_known: whether a stock snapshot or
    movement was ever seen (default: all). stockout_alert_open: whether a stock-out alert is
    open (default: none).
    level_memory: the level rule. None: each SKU orders up to this review's own level
    ("none"). Else ("cover_mean") the SKU's earlier raw levels with their buckets: the level
    is the mean of this review's and those made within its last `terms.cover_steps` buckets;
    the result's `level_memory` is what to keep next.
    """
    n = forecast.n_series
    levels = np.asarray(forecast.levels, dtype=np.float64)
    horizon = forecast.cumulative.shape[1]
    position = np.asarray(inventory_position, dtype=np.float64)
    arriving = (position if arriving_position is None
                else np.asarray(arriving_position, dtype=np.float64))
    known = np.ones(n, dtype=bool) if stock_known is None else np.asarray(stock_known, dtype=bool)
    is_open = (np.zeros(n, dtype=bool) if stockout_alert_open is None
               else np.asarray(stockout_alert_open, dtype=bool))

    raw_up = _cover_demand_quantile(forecast, terms.cover_steps, terms.service_level)
    if level_memory is None:
        order_up_to, averaged, memory = raw_up, np.ones(n, dtype=np.int64), None
    else:
        order_up_to, averaged, levels_kept, made_at = smooth_sku_levels(
            raw_up, level_memory.levels, level_memory.made_at, level_memory.bucket,
            terms.cover_steps)
        memory = (levels_kept, made_at)
    reorder_point = order_up_to
    quantity = order_quantity(position, reorder_point, order_up_to,
                              terms.case_pack.astype(np.float64), terms.moq.astype(np.float64))
    quantity = np.where(known, quantity, 0).astype(np.int64)

    risk_steps = np.minimum(terms.lead_steps, horizon).astype(np.int64)
    risk = np.full(n, np.nan)
    rows = np.flatnonzero(known)
    if rows.size:
        risk[rows] = exceedance_probability(
            forecast.cumulative[rows, risk_steps[rows] - 1, :], levels, arriving[rows])
    with np.errstate(invalid="ignore"):  # NaN risk (stock unknown) compares False
        raise_stockout = known & ~is_open & (risk >= RISK_OPEN)
        clear_stockout = known & is_open & (risk < RISK_CLOSE)

    previous = np.asarray(previous_high, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        anomalous = np.asarray(observed, dtype=np.float64) > np.fmax(previous, 1.0)
    anomalous &= ~np.isnan(previous)

    return Review(
        terms=terms, reorder_point=reorder_point, order_up_to=order_up_to,
        inventory_position=position, arriving_position=arriving, order_quantity=quantity,
        stockout_risk=risk,
        risk_steps=risk_steps, raise_stockout=raise_stockout, clear_stockout=clear_stockout,
        anomalous=anomalous,
        next_bucket_high=quantile_at(forecast.daily[:, 0, :], levels, HIGH_LEVEL),
        demand_levels=levels,
        cover_quantiles=_cover_quantiles(forecast, terms.cover_steps, np.flatnonzero(quantity)),
        raw_order_up_to=raw_up, levels_averaged=averaged, level_memory=memory)


def overdue_restocks(issued_bucket: npt.ArrayLike, lead_buckets: npt.ArrayLike,
                     reviewed_bucket: npt.ArrayLike, grace_buckets: int) -> BoolArray:
    """Per open restock: whether it is overdue at the review of `reviewed_bucket`.

    A restock issued at the review of bucket t with a lead time of L buckets should have
    been received by the end of bucket t + L; it is overdue once bucket t + L + grace has
    closed without it being received in full. All (m,) arrays, one row per open restock.
    """
    due = np.asarray(issued_bucket, dtype=np.int64) + np.asarray(lead_buckets, dtype=np.int64)
    return np.asarray(np.asarray(reviewed_bucket, dtype=np.int64) >= due + grace_buckets,
                      dtype=np.bool_)


def stale_stock(last_stock_bucket: npt.ArrayLike, reviewed_bucket: npt.ArrayLike,
                stale_buckets: int, alert_open: npt.ArrayLike
                ) -> tuple[FloatArray, BoolArray, BoolArray]:
    """Stock data age and a stale_stock alert's hysteresis, per SKU ((n,) arrays).

    `last_stock_bucket`: the bucket of the SKU's newest stock snapshot or movement (NaN if
    none was ever seen: unknown stock is not stale stock). Returns (age in buckets, NaN where
    unknown; raise: older than `stale_buckets` with no alert open; clear: fresh again with
    one open): one alert per episode, an episode ending only with new stock data.
    """
    last = np.asarray(last_stock_bucket, dtype=np.float64)
    age = np.asarray(reviewed_bucket, dtype=np.float64) - last
    is_open = np.asarray(alert_open, dtype=bool)
    with np.errstate(invalid="ignore"):  # NaN age (never seen) compares False
        stale = age > stale_buckets
        fresh = age <= stale_buckets
    return age, stale & ~is_open, fresh & is_open


def _cover_demand_quantile(forecast: QuantileForecast, steps: IntArray,
                           service_level: FloatArray) -> FloatArray:
    """Per series, its demand quantile over `steps` buckets at its service level; one
    vectorised call per distinct (steps, level)."""
    values = np.empty(steps.shape[0])
    groups: dict[tuple[int, float], list[int]] = {}
    for i, key in enumerate(zip(steps.tolist(), service_level.tolist(), strict=True)):
        groups.setdefault(key, []).append(i)
    for (n_steps, level), rows in groups.items():
        idx = np.asarray(rows, dtype=np.intp)
        values[idx] = forecast.lead_time_quantile(idx, n_steps, level)
    return values


def _cover_quantiles(forecast: QuantileForecast, steps: IntArray,
                     rows: npt.NDArray[np.intp]) -> FloatArray | None:
    """(n, Q) demand quantiles over each of `rows`' cover steps, NaN in the other rows; made
    non-negative and non-decreasing, as the RestockEvent contract requires. None with under
    2 levels (no distribution to speak of)."""
    levels = forecast.levels.tolist()
    if len(levels) < 2:
        return None
    out = np.full((forecast.n_series, len(levels)), np.nan)
    for row in rows.tolist():
        n_steps = int(steps[row])
        if n_steps <= forecast.horizon:  # `cumulative` holds exactly these quantiles
            values = forecast.cumulative[row, n_steps - 1]
        else:
            values = np.array([forecast.lead_time_quantile(row, n_steps, q) for q in levels])
        out[row] = np.maximum.accumulate(np.maximum(values, 0.0))
    return out

