"""Planned promotions per SKU (the `shop.promotions` topic): kept in the SKU's state, handed
to the forecaster as known-in-advance covariates (`forecasting.covariates`), with the
holidays of the SKUs' locations (`streams.holiday_calendar`).

A `PromotionEvent` says what the shop has planned for some days (promotion flag, price
ratio). The state keeps each SKU's promotions by event id — a higher version replaces one, a
withdrawn one stays as a neutral entry that remembers its version, so a stale redelivery
cannot bring it back — for as long as a forecast may read them: until `MEMORY_DAYS` after
their last day (LightGBM reads the promotion share of the 28 days up to the forecast's
origin), at most `MAX_PER_SKU` of them (the ones that ended first go first). Daily buckets
only: a promotion covers days.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import date

import numpy as np

from forecasting.covariates import COVARIATE_DEFAULTS, Covariates, from_spans
from schemas.events import PromotionEvent
from streams.holiday_calendar import HolidayCalendar
from streams.state import ApplyResult, SkuState

__all__ = ["MAX_PER_SKU", "MEMORY_DAYS", "apply_promotion", "covariates_of", "prune"]

MAX_PER_SKU = 32
MEMORY_DAYS = 28
_EPOCH = date(1970, 1, 1)
_START, _END, _PROMO, _PRICE, _VERSION = range(5)


def _day(d: date) -> int:
    return (d - _EPOCH).days


def apply_promotion(state: SkuState, event: PromotionEvent) -> ApplyResult:
    """Keep `event` in the state's planned promotions ("duplicate": its version is not newer
    than the one held)."""
    held = state.promotions.get(event.event_id)
    if held is not None and held[_VERSION] >= event.version:
        return "duplicate"
    neutral = event.cancelled
    state.promotions[event.event_id] = [
        float(_day(event.start_day)), float(_day(event.end_day)),
        0.0 if neutral or not event.promo else 1.0,
        COVARIATE_DEFAULTS["price_ratio"] if neutral else float(event.price_ratio),
        float(event.version)]
    if len(state.promotions) > MAX_PER_SKU:
        by_end = sorted(state.promotions, key=lambda k: state.promotions[k][_END])
        for key in by_end[: len(state.promotions) - MAX_PER_SKU]:
            del state.promotions[key]
    return "ok"


def prune(state: SkuState, last_closed_day: int) -> None:
    """Forget promotions that ended more than MEMORY_DAYS before `last_closed_day`."""
    if not state.promotions:
        return
    oldest = last_closed_day - MEMORY_DAYS
    for key in [k for k, v in state.promotions.items() if v[_END] < oldest]:
        del state.promotions[key]


def covariates_of(states: Sequence[SkuState], last_closed_days: Sequence[int],
                  horizon: int, calendar: HolidayCalendar | None = None,
                  window_days: int = 0) -> Covariates | None:
    """The covariates of the SKUs about to be forecast (rows in order), on a grid from
    MEMORY_DAYS before the earliest last closed day to `horizon` days after the latest;
    None when none of them has a promotion or a holiday (the forecast is then exactly a
    plain one). Overlapping promotions: promoted if any is, the lowest price ratio.

    With a `calendar` that holds holidays of their locations, `Covariates.holiday` carries
    them and the grid starts `window_days` back at least (the window a cold start encodes)."""
    locations = [s.location for s in states]
    holidays = calendar is not None and calendar.knows(locations)
    if not holidays and not any(s.promotions for s in states):
        return None
    first = min(last_closed_days) - (max(MEMORY_DAYS, window_days) if holidays
                                     else MEMORY_DAYS)
    n_days = max(last_closed_days) + horizon + 1 - first
    cov = from_spans(len(states), np.datetime64(int(first), "D"), n_days,
                     ((row, int(start_day), int(end_day), bool(flag), ratio)
                      for row, state in enumerate(states)
                      for start_day, end_day, flag, ratio, _ in state.promotions.values()))
    if not holidays:
        return cov
    assert calendar is not None
    return dataclasses.replace(cov, holiday=calendar.flags(locations, first, n_days))
