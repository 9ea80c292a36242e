"""Known-in-advance covariates per (series, day): planned promotions and the price ratio.

What a shop knows before the day comes — a promotion it has planned, the price it will charge
relative to the full price — is a legitimate input for the day being forecast, unlike that
day's sales or stock-outs. Two covariates, each with a neutral default that means "nothing
planned": `promo` (1 = the item is on promotion that day, default 0) and `price_ratio` (the
price over the full price, default 1). A day with no information takes the default, so a
forecast without any covariate is a forecast "at full price, no promotion".

Data files name them differently: `promo` (Rossmann) or `activity_flag` (FreshRetailNet) for
the promotion, `price_ratio` or `discount` (FreshRetailNet) for the price ratio.

A third, optional: `holiday` (1 = a holiday of the series' own region that day, default 0),
read from the data's own calendar column (`HOLIDAY_COLUMNS`: Rossmann's `state_holiday`,
FreshRetailNet's `holiday_flag`), None when the file has none. It is read only by a model
that asks for it (`LSTMConfig.data_holidays`), and it stays out of `Panel.fingerprint` (the
panels' digests of before it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from forecasting._numeric import FloatArray

__all__ = ["COVARIATE_COLUMNS", "COVARIATE_DEFAULTS", "HOLIDAY_COLUMNS", "Covariates",
           "PlannedSpan", "from_spans", "holiday_value", "stack"]

COVARIATE_DEFAULTS: dict[str, float] = {"promo": 0.0, "price_ratio": 1.0}
"""Each covariate's value on a day nothing is known of (no promotion, full price)."""

COVARIATE_COLUMNS: dict[str, tuple[str, ...]] = {
    "promo": ("promo", "activity_flag"),
    "price_ratio": ("price_ratio", "discount"),
}
"""The CSV columns each covariate is read from, first match wins."""

HOLIDAY_COLUMNS: tuple[str, ...] = ("holiday", "holiday_flag", "state_holiday")
"""The CSV columns the data's own holiday flag is read from, first match wins."""

_NOT_HOLIDAY = frozenset({"", "0", "0.0", "none", "false", "no"})


def holiday_value(cell: str) -> float:
    """A holiday column's cell as a flag: 0.0 for empty, 0, "none" (Rossmann's no state
    holiday), false, no; 1.0 for anything else ("public", "easter", "christmas", "a", 1)."""
    return 0.0 if cell.strip().lower() in _NOT_HOLIDAY else 1.0


@dataclass(frozen=True)
class Covariates:
    """Known-in-advance covariates of many series on one daily grid.

    Attributes:
        start: the date of column 0 (datetime64[D]).
        promo: (n, D) 1.0 on promotion days, 0.0 otherwise.
        price_ratio: (n, D) price over the full price (1.0 = full price).
        holiday: (n, D) 1.0 on the data's own holidays, 0.0 otherwise; None: the data have
            no holiday column (`LSTMConfig.data_holidays` then reads the date calendar).

    The grid may run past the demand's last day: planned promotions are known for days
    not yet sold. Days outside the grid read as the defaults.
    """

    start: np.datetime64
    promo: FloatArray
    price_ratio: FloatArray
    holiday: FloatArray | None = None

    def __post_init__(self) -> None:
        if self.promo.shape != self.price_ratio.shape or self.promo.ndim != 2:
            raise ValueError(f"promo {self.promo.shape} and price_ratio "
                             f"{self.price_ratio.shape} must be the same (n, days) shape")
        if self.holiday is not None and self.holiday.shape != self.promo.shape:
            raise ValueError(f"holiday {self.holiday.shape} must be promo's shape "
                             f"{self.promo.shape}")

    @property
    def n_series(self) -> int:
        """Number of series (rows)."""
        return int(self.promo.shape[0])

    @classmethod
    def neutral(cls, n_series: int, start: np.datetime64, n_days: int) -> Covariates:
        """No promotion, full price, on every day."""
        shape = (n_series, n_days)
        return cls(np.datetime64(start, "D"), np.full(shape, COVARIATE_DEFAULTS["promo"]),
                   np.full(shape, COVARIATE_DEFAULTS["price_ratio"]))

    def subset(self, rows: Sequence[int] | NDArray[np.integer]) -> Covariates:
        """The series at positions `rows`."""
        idx = np.asarray(rows, dtype=np.intp)
        return Covariates(self.start, self.promo[idx], self.price_ratio[idx],
                          None if self.holiday is None else self.holiday[idx])

    def span(self, first_day: np.datetime64, n_days: int) -> tuple[FloatArray, FloatArray]:
        """(promo, price_ratio), each (n, n_days), for the days first_day .. first_day +
        n_days - 1; days outside the grid take the defaults."""
        offset = int((np.datetime64(first_day, "D") - self.start).astype(np.int64))
        return (_window(self.promo, offset, n_days, COVARIATE_DEFAULTS["promo"]),
                _window(self.price_ratio, offset, n_days, COVARIATE_DEFAULTS["price_ratio"]))

    def promo_rows(self, first_days: NDArray[np.datetime64], n_days: int) -> FloatArray:
        """(n, n_days) each series' promotion flags from its own first day `first_days`
        (n,) on (days outside the grid: no promotion); one window per distinct day."""
        return self._rows(self.promo, first_days, n_days)

    def holiday_rows(self, first_days: NDArray[np.datetime64],
                     n_days: int) -> FloatArray | None:
        """`promo_rows` of the data's own holiday flags (days outside the grid: none);
        None when the data have no holiday column."""
        return None if self.holiday is None else self._rows(self.holiday, first_days, n_days)

    def _rows(self, grid: FloatArray, first_days: NDArray[np.datetime64],
              n_days: int) -> FloatArray:
        firsts = np.broadcast_to(np.asarray(first_days, dtype="datetime64[D]"),
                                 (self.n_series,))
        if self.n_series and bool(np.all(firsts == firsts[0])):
            return _window(grid, self._offset(firsts[0]), n_days, 0.0)
        out = np.empty((self.n_series, n_days))
        for day in np.unique(firsts):
            rows = np.flatnonzero(firsts == day)
            out[rows] = _window(grid[rows], self._offset(day), n_days, 0.0)
        return out

    def _offset(self, day: np.datetime64) -> int:
        return int((np.datetime64(day, "D") - self.start).astype(np.int64))


PlannedSpan = tuple[int, int, int, bool, float]
"""One planned promotion of one series: (row, first day, last day — both days since the
epoch, UTC, both included —, on promotion, price ratio)."""


def from_spans(n_series: int, start: np.datetime64, n_days: int,
               spans: Iterable[PlannedSpan]) -> Covariates:
    """The covariates of `n_series` series on the grid `start` .. `start + n_days - 1` from
    their planned promotions; days no span covers take the defaults. Overlapping spans of a
    series: promoted if any is, the lowest price ratio. The one rule the stream
    (streams/planned_promotions.py) and retraining (optimizer/promotions.py) both apply."""
    start = np.datetime64(start, "D")
    first = int(start.astype(np.int64))
    cov = Covariates.neutral(n_series, start, n_days)
    promo, price = cov.promo, cov.price_ratio
    for row, start_day, end_day, flag, ratio in spans:
        lo = max(start_day - first, 0)
        hi = min(end_day - first + 1, n_days)
        if hi <= lo:
            continue
        if flag:
            promo[row, lo:hi] = 1.0
        price[row, lo:hi] = np.minimum(price[row, lo:hi], ratio)
    return cov


def stack(parts: Sequence[tuple[int, Covariates | None]]) -> Covariates | None:
    """The rows of several batches in order, on one grid spanning all of theirs: `parts` are
    (rows, covariates or None: none known); None when none is known."""
    known = [c for _, c in parts if c is not None]
    if not known:
        return None
    start = min(c.start for c in known)
    end = max(c.start + np.timedelta64(c.promo.shape[1], "D") for c in known)
    n_days = int((end - start).astype(np.int64))
    promos, prices, holidays = [], [], []
    any_holiday = any(c.holiday is not None for c in known)
    for rows, cov in parts:
        if cov is None:
            cov = Covariates.neutral(rows, start, n_days)
        promo, price = cov.span(start, n_days)
        promos.append(promo)
        prices.append(price)
        if any_holiday:
            holidays.append(np.zeros((rows, n_days)) if cov.holiday is None
                            else _window(cov.holiday, cov._offset(start), n_days, 0.0))
    return Covariates(start, np.concatenate(promos), np.concatenate(prices),
                      np.concatenate(holidays) if any_holiday else None)


def _window(values: FloatArray, offset: int, n_days: int, default: float) -> FloatArray:
    out = np.full((values.shape[0], n_days), default)
    lo, hi = max(offset, 0), min(offset + n_days, values.shape[1])
    if hi > lo:
        out[:, lo - offset : hi - offset] = values[:, lo:hi]
    return out

