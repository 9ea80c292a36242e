"""Closed-loop restock simulation on real daily demand, vectorised over SKUs and service targets.

Each simulated day t, for every SKU at once:
1. orders due arrive (placed after day t - L - 1's sales: an order placed at the end of day t
   is on the shelf for day t + L + 1, so its order-up-to level covers days t+1 .. t+L+R);
2. the day's real demand is served from stock; what is short is lost (or backordered);
3. on review days the policy sees the history up to and including day t — never later — and
   orders up to its level when the inventory position is at or below its reorder point
   (`optimizer.policy.order_quantity`: case pack, MOQ).

Models that are trained (`Forecaster.fits`: LightGBM, the LSTM) are retrained every
`retrain_days` simulated days on all history up to and including that day, through the same
`fit(panel)` that trained them before the first simulated day (what a shop's nightly or
monthly retrain runs); each policy's result lists when and on what span it was retrained.

Policies compute their levels for a whole sweep of service targets from ONE forecast per day
(one batched `predict` over all SKUs), and the inventory of every (target, SKU) pair evolves
side by side in (targets, SKUs) arrays. The first L + R days are burn-in (the stated starting
stock plays out) and are not scored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from forecasting.base import Forecaster, QuantileForecast
from forecasting.covariates import Covariates
from forecasting.data import Panel
from optimizer.errors import OptimizerError
from optimizer.lead_time_demand import empirical_cover_demand, forecast_error_cover_demand
from optimizer.level_rule import DEFAULT_LEVEL_RULE, LEVEL_RULES, LevelRule, smooth_levels
from optimizer.level_rule import cover_reviews as _cover_reviews
from optimizer.policy import inventory_position, order_quantity
from optimizer.service_level import (
    DEFAULT_TAIL,
    DemandDistribution,
    ServiceTarget,
    TailRule,
    lead_time_demand_normal,
    lead_time_pmf,
    normal_cycle_level,
    normal_fill_rate_level,
    restock_levels,
)

__all__ = [
    "DEFAULT_SWEEP",
    "LEVEL_RULES",
    "EmpiricalPolicy",
    "ForecastPolicy",
    "MinMaxPolicy",
    "PolicyCurvePoint",
    "PolicyResult",
    "RestockPolicy",
    "SimulationConfig",
    "SimulationError",
    "SimulationResult",
    "interpolate_inventory_at_fill",
    "simulate",
]

FloatArray = npt.NDArray[np.float64]
DateArray = npt.NDArray[np.datetime64]

# Up to 1 - 1e-8: on lumpy demand a per-SKU target buys a pooled fill rate far below it (the
# min/max rule on UCI reaches a 95% fill rate only between 1 - 1e-5 and 1 - 1e-6).
DEFAULT_SWEEP: tuple[float, ...] = (
    0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995, 0.999, 0.9995, 0.9999,
    0.99999, 0.999999, 0.99999999,
)  # fmt: skip


class SimulationError(OptimizerError):
    """A simulation asked for something the data or the policies cannot give."""


@dataclass(frozen=True)
class SimulationConfig:
    """How the replay runs. Days and units as named; service levels in (0, 1).

    `days`: simulate the last N days of the data (default: all days after `warmup_days`).
    `window_days`: history handed to the forecaster each review (NaN-padded on the left).
    `initial_stock_days`: every SKU starts with this many days of its mean warm-up demand on
    hand (default L + R), nothing on order — the same for every policy.
    `order_cost`: cost of placing one order (0: ordering is free). When > 0, every policy's
    order-up-to level is raised to reorder point + EOQ - one review's demand, EOQ =
    sqrt(2 K d / h) with d the SKU's mean daily demand over the min/max window and h =
    `holding_rate` x unit cost / 365 per unit-day (unit cost 1 when none is given), and the
    fill-rate budget is (1 - target) x the EOQ (one cycle's demand) instead of one review's:
    orders get fewer and larger, and the results carry order, holding and total cost.
    """

    lead_time_days: int = 7
    review_days: int = 1
    service_level: float = 0.95
    target: ServiceTarget = "fill_rate"
    sweep: tuple[float, ...] = DEFAULT_SWEEP
    days: int | None = None
    warmup_days: int = 91
    window_days: int = 364
    minmax_window_days: int = 28
    case_pack: int = 1
    moq: int = 0
    backorders: bool = False
    unit_cost: float | None = None
    order_cost: float = 0.0
    holding_rate: float = 0.25
    lead_time_sd_days: float = 0.0
    initial_stock_days: float | None = None
    seed: int = 0
    # Trained models are refitted on all history so far every this many simulated days
    # (0: never; the first fit is the caller's, on the days before the simulation).
    retrain_days: int = 28

    def targets(self) -> tuple[float, ...]:
        """The sweep plus the headline service level, sorted, without duplicates."""
        return tuple(sorted({*self.sweep, self.service_level}))

    def validate(self) -> None:
        if self.lead_time_days < 0 or self.review_days < 1:
            raise SimulationError("lead_time_days must be >= 0 and review_days >= 1")
        for level in self.targets():
            if not 0.0 < level < 1.0:
                raise SimulationError(f"service levels must be in (0, 1), got {level}")
        if self.target not in ("cycle", "fill_rate"):
            raise SimulationError(f"target must be 'cycle' or 'fill_rate', got {self.target!r}")
        if self.window_days < 7 or self.warmup_days < 1 or self.minmax_window_days < 2:
            raise SimulationError("window_days >= 7, warmup_days >= 1, minmax_window_days >= 2")
        if self.case_pack < 1 or self.moq < 0:
            raise SimulationError("case_pack must be >= 1 and moq >= 0")
        if self.lead_time_sd_days < 0:
            raise SimulationError("lead_time_sd_days must be >= 0")
        if self.order_cost < 0 or not self.holding_rate > 0:
            raise SimulationError("order_cost must be >= 0 and holding_rate > 0")
        if self.unit_cost is not None and not self.unit_cost > 0:
            raise SimulationError("unit_cost must be > 0")
        if self.retrain_days < 0:
            raise SimulationError("retrain_days must be >= 0 (0: never retrain)")


class RestockPolicy(Protocol):
    """What the simulator asks a policy each review: levels for every target and SKU."""

    name: str

    def levels(self, history: FloatArray, end_day: np.datetime64, targets: FloatArray,
               config: SimulationConfig) -> tuple[FloatArray, FloatArray]:  # fmt: skip
        """(reorder_point, order_up_to), each (targets, SKUs), from `history` (SKUs, W),
        whose last column is the day just closed (`end_day`)."""
        ...


def _lead_mix(config: SimulationConfig) -> tuple[npt.NDArray[np.int64], FloatArray]:
    return lead_time_pmf(config.lead_time_days, config.lead_time_sd_days)


@dataclass
class _SharedForecast:
    """What policies on ONE forecaster object share within a simulation (tail rules A/B on
    the same model): the last retrain's record and the last forecast, so the model is refitted
    and asked once per day however many policies read it."""

    retrain: tuple[str, dict[str, Any]] | None = None
    forecast: tuple[np.datetime64, int, QuantileForecast] | None = None


@dataclass
class ForecastPolicy:
    """An order-up-to (R, S) policy on a forecaster's demand distribution over lead time +
    review period, at each service target (see service_level.restock_levels); `tail`: the
    exponential tail above the forecast's top quantile (`service_level.TAIL_RULES`);
    `level_rule` (`LEVEL_RULES`, `optimizer.level_rule`): "cover_mean" (the default: what the
    stream's review runs) orders up to the mean of the levels of the last ceil((L + R) / R)
    reviews (this one included; benchmarks/README "Served policy vs the LSTM's"), "none" up to
    each review's own level. `quantile_used` is the CDF at the level before the rule."""

    name: str
    forecaster: Forecaster
    tail: TailRule = DEFAULT_TAIL
    predict_seconds: float = 0.0
    retrains: list[dict[str, Any]] = field(default_factory=list)
    # the SKUs' known-in-advance covariates (planned promotions), rows as the demand's; set
    # by `simulate`: a retrain and every forecast read them as production's model would
    covariates: Covariates | None = None
    # set by `simulate` for the policies sharing this one's forecaster object
    shared: _SharedForecast | None = None
    # (targets, SKUs) the cover distribution's CDF at the last review's order-up-to levels
    quantile_used: FloatArray | None = None
    # "cover_mean": the mean of the levels the reviews of the last protection interval
    # computed (`cover_reviews`); "none": each review's level as the forecast gives it
    level_rule: LevelRule = DEFAULT_LEVEL_RULE
    _level_memory: list[FloatArray] = field(default_factory=list, repr=False)

    def retrain(self, values: FloatArray, dates: DateArray) -> None:
        """Refit a trained model (`fits`) on `values` (SKUs, days), the history up to and
        including the day just closed, `dates` its days; record when and on what. A model
        another policy already refitted on the same days is not refitted again."""
        if not self.forecaster.fits:
            return
        if self.shared is not None and self.shared.retrain is not None \
                and self.shared.retrain[0] == str(dates[-1]):  # fmt: skip
            self.retrains.append({**self.shared.retrain[1], "shared": True})
            return
        ids = tuple(str(i) for i in range(values.shape[0]))
        panel = Panel(ids, np.datetime64(dates[0], "D"), values, self.covariates)
        started, cpu = time.perf_counter(), time.process_time()
        self.forecaster.fit(panel)
        self.retrains.append({
            "after_day": str(dates[-1]), "trained_on": f"{dates[0]} .. {dates[-1]}",
            "n_days": int(values.shape[1]),
            "seconds": round(time.perf_counter() - started, 2),
            "cpu_seconds": round(time.process_time() - cpu, 2),
        })  # fmt: skip
        if self.shared is not None:
            self.shared.retrain = (str(dates[-1]), self.retrains[-1])
            self.shared.forecast = None

    def _predict(self, history: FloatArray, horizon: int, end_day: np.datetime64
                 ) -> QuantileForecast:  # fmt: skip
        memo = None if self.shared is None else self.shared.forecast
        if memo is not None and memo[0] == end_day and memo[1] == horizon:
            return memo[2]
        started = time.perf_counter()
        try:  # the dates matter to calendar-aware models (LightGBM, the LSTM)
            forecast = self.forecaster.predict(history, horizon, end_days=end_day,
                                               covariates=self.covariates)
        finally:
            self.predict_seconds += time.perf_counter() - started
        if self.shared is not None:
            self.shared.forecast = (end_day, horizon, forecast)
        return forecast

    def levels(self, history: FloatArray, end_day: np.datetime64, targets: FloatArray,
               config: SimulationConfig) -> tuple[FloatArray, FloatArray]:  # fmt: skip
        days, _ = _lead_mix(config)
        horizon = int(days.max()) + config.review_days
        forecast = self._predict(history, horizon, end_day)
        s, up, self.quantile_used = forecast_levels(
            forecast.levels, lambda steps: forecast.cumulative[:, steps - 1, :], history,
            targets, config, tail=self.tail)
        if self.level_rule == "cover_mean":
            up = smooth_levels(self._level_memory, up, cover_reviews(config))
            return up, up.copy()
        return s, up


def forecast_levels(levels: FloatArray, cumulative: Callable[[int], FloatArray],
                    history: FloatArray, targets: FloatArray, config: SimulationConfig, *,
                    tail: TailRule = DEFAULT_TAIL) -> tuple[FloatArray, FloatArray, FloatArray]:
    """A forecast policy's (reorder_point, order_up_to) and the cover distribution's CDF at
    the order-up-to level (the cycle-service quantile the level stands at), each (targets,
    SKUs). `cumulative(steps)`: (SKUs, Q) quantiles of the demand over the next `steps` days
    at `levels` (a forecast's `cumulative[:, steps - 1, :]`)."""
    days, probs = _lead_mix(config)
    review = config.review_days
    n = history.shape[0]

    def dist(steps: int) -> DemandDistribution:
        if steps == 0:
            return DemandDistribution(np.zeros((n, 1)), np.ones((n, 1)))
        return DemandDistribution.from_quantiles(levels, cumulative(steps), tail=tail)

    cover = DemandDistribution.mixture([dist(int(d) + review) for d in days], probs)
    # One review period's share of the cover distribution's mean: a point forecast of 0
    # (seasonal naive after a quiet week) must not make the shortage budget 0, which
    # would ask for the distribution's far tail.
    review_demand = _cycle_demand(cover.mean() * review / (config.lead_time_days + review),
                                  history, config)  # fmt: skip
    s = np.empty((targets.size, n))
    up = np.empty((targets.size, n))
    for k, level in enumerate(targets):
        s[k], up[k] = restock_levels(cover, service_level=float(level),
                                     target=config.target, review_demand=review_demand)
    return s, up, _cdf_at(cover, up)


def cover_reviews(config: SimulationConfig) -> int:
    """How many reviews fall in one protection interval (lead time + review period):
    ceil((L + R) / R) — the reviews whose orders can still be on the shelf together
    (`optimizer.level_rule.cover_reviews` in days; the stream counts buckets)."""
    return int(_cover_reviews(config.lead_time_days + config.review_days, config.review_days))


def _cdf_at(cover: DemandDistribution, levels: FloatArray) -> FloatArray:
    """(targets, SKUs) P(cover demand <= level), atoms at or below the level counted whole."""
    below = cover.values[None, :, :] <= levels[:, :, None] + 1e-9
    return np.asarray((cover.probs[None, :, :] * below).sum(axis=2), dtype=np.float64)


@dataclass
class EmpiricalPolicy:
    """An order-up-to (R, S) policy on an empirical lead-time demand distribution over lead
    time + review period (optimizer.lead_time_demand), S at each service target as in
    ForecastPolicy (service_level.restock_levels). Built for lumpy demand, where neither a
    normal nor a point forecast's daily quantiles describe what a restock must cover.

    `level_window=None` ("empirical"): the SKU's own (L + R)-day sums over the last
    `history_days` days. `level_window=N` ("forecast-errors"): today's N-day moving-average
    forecast plus the empirical distribution of that forecast's past (L + R)-day errors.
    Both mix in a normal tail of weight `tail_weight` and `tail_sd_factor` x their sd.
    """

    name: str = "empirical"
    level_window: int | None = None
    history_days: int = 364
    tail_weight: float = 0.05
    tail_sd_factor: float = 3.0

    def _cover(self, history: FloatArray, days: int) -> DemandDistribution:
        if self.level_window is None:
            return empirical_cover_demand(history, days, max_history_days=self.history_days,
                                          tail_weight=self.tail_weight,
                                          tail_sd_factor=self.tail_sd_factor)  # fmt: skip
        return forecast_error_cover_demand(history, days, level_window=self.level_window,
                                           max_history_days=self.history_days,
                                           tail_weight=self.tail_weight,
                                           tail_sd_factor=self.tail_sd_factor)  # fmt: skip

    def levels(self, history: FloatArray, end_day: np.datetime64, targets: FloatArray,
               config: SimulationConfig) -> tuple[FloatArray, FloatArray]:  # fmt: skip
        days, probs = _lead_mix(config)
        review = config.review_days
        cover = DemandDistribution.mixture(
            [self._cover(history, int(d) + review) for d in days], probs)
        review_demand = _cycle_demand(cover.mean() * review / (config.lead_time_days + review),
                                      history, config)  # fmt: skip
        s = np.empty((targets.size, cover.n_skus))
        for k, level in enumerate(targets):
            s[k], _ = restock_levels(cover, service_level=float(level), target=config.target,
                                     review_demand=review_demand)  # fmt: skip
        return s, s.copy()


@dataclass
class MinMaxPolicy:
    """The classic ERP min/max rule (Odoo, ERPNext reorder rules) set the textbook way.

    ADU and sd = mean and sd of the last `minmax_window_days` of demand (moving average);
    min = ADU * L + safety stock, the safety stock from a normal lead-time demand
    (sd * sqrt(L), plus ADU * sd_L for a variable lead time) at the service target
    (z * sd for a cycle target; the normal loss function for a fill-rate target, with one
    review period of demand per cycle); max = min + ADU * R.

    `protect_review=True` ("minmax-lr") sizes min over lead time + review period instead of
    the lead time alone — not what planners set, but it separates how much of a forecast
    policy's advantage comes from protecting the review period rather than from the forecast.
    """

    name: str = "minmax"
    protect_review: bool = False

    def levels(self, history: FloatArray, end_day: np.datetime64, targets: FloatArray,
               config: SimulationConfig) -> tuple[FloatArray, FloatArray]:  # fmt: skip
        recent = history[:, -config.minmax_window_days:]
        finite = np.isfinite(recent)
        count = finite.sum(axis=1)
        filled = np.where(finite, recent, 0.0)
        adu = filled.sum(axis=1) / np.maximum(count, 1)
        dev = np.where(finite, recent - adu[:, None], 0.0)
        sd = np.sqrt((dev * dev).sum(axis=1) / np.maximum(count - 1, 1))
        days = config.lead_time_days + (config.review_days if self.protect_review else 0)
        mean_l, sd_l = lead_time_demand_normal(adu, sd, days, config.lead_time_sd_days)
        cycle = adu * config.review_days
        budget_cycle = _cycle_demand(cycle, history, config)
        alpha = targets[:, None]
        if config.target == "cycle":
            low = normal_cycle_level(mean_l[None, :], sd_l[None, :], alpha)
        else:
            low = normal_fill_rate_level(mean_l[None, :], sd_l[None, :], budget_cycle[None, :],
                                         alpha)  # fmt: skip
        low = np.maximum(np.asarray(low, dtype=np.float64), 0.0)
        return low, low + cycle[None, :]


@dataclass(frozen=True)
class PolicyCurvePoint:
    """One service target's outcome."""

    service_level: float
    fill_rate: float
    avg_inventory: float
    cycle_service_level: float
    stockout_days: int
    orders: int


@dataclass
class PolicyResult:
    """Scores at the headline target, the sweep curve and the interpolated inventory."""

    fill_rate: float
    fill_rate_mean_sku: float
    cycle_service_level: float
    stockout_days: int
    stockout_days_per_sku: float
    avg_inventory: float
    avg_inventory_per_sku: float
    avg_inventory_value: float | None
    orders: int
    units_ordered: int
    costs: dict[str, float] | None
    inventory_at_95_fill: float | None
    curve: list[PolicyCurvePoint]
    seconds: float
    retrains: list[dict[str, Any]] = field(default_factory=list)
    # at the headline target, over the scored review days (see `_diagnostics`)
    diagnostics: dict[str, float | None] = field(default_factory=dict)


@dataclass
class SimulationResult:
    """What `shelfcast simulate --json` writes (`as_json`)."""

    config: SimulationConfig
    skus: int
    first_day: str
    last_day: str
    simulated_days: int
    scored_days: int
    policies: dict[str, PolicyResult]
    seconds: float
    meta: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        cfg = asdict(self.config)
        cfg["sweep"] = list(self.config.targets())
        out: dict[str, Any] = {
            **self.meta,
            "config": cfg,
            "skus": self.skus,
            "first_day": self.first_day,
            "last_day": self.last_day,
            "simulated_days": self.simulated_days,
            "scored_days": self.scored_days,
            "seconds": round(self.seconds, 2),
            "policies": {name: asdict(res) for name, res in self.policies.items()},
        }
        base = self.policies.get("minmax")
        if base is not None and base.inventory_at_95_fill:
            out["inventory_at_95_fill_vs_minmax"] = {
                name: round(res.inventory_at_95_fill / base.inventory_at_95_fill - 1.0, 4)
                for name, res in self.policies.items()
                if name != "minmax" and res.inventory_at_95_fill is not None
            }
        return out


def interpolate_inventory_at_fill(fill_rates: Sequence[float], inventories: Sequence[float],
                                  fill: float = 0.95) -> float | None:  # fmt: skip
    """Average inventory at fill rate `fill`, linear between the sweep's points.

    The curve is made monotone first (a higher target never counts as needing less stock
    than the cheapest point already reaching its fill rate). None when no point reaches
    `fill`; when every point is above it, the cheapest point's inventory (an upper bound).
    """
    f = np.asarray(fill_rates, dtype=np.float64)
    inv = np.asarray(inventories, dtype=np.float64)
    if f.size == 0 or f.max() < fill:
        return None
    order = np.argsort(inv)
    f_sorted, inv_sorted = f[order], inv[order]
    hull = np.maximum.accumulate(f_sorted)  # best fill reachable with <= this inventory
    first = int(np.argmax(hull >= fill))
    if first == 0:
        return float(inv_sorted[0])
    f0, f1 = hull[first - 1], hull[first]
    i0, i1 = inv_sorted[first - 1], inv_sorted[first]
    if f1 <= f0:
        return float(i1)
    return float(i0 + (fill - f0) / (f1 - f0) * (i1 - i0))


def _daily_and_eoq(history: FloatArray, config: SimulationConfig) -> tuple[FloatArray, FloatArray]:
    """(SKUs,) mean daily demand over the min/max window and the EOQ it gives (0 when
    ordering is free)."""
    recent = history[:, -config.minmax_window_days:]
    seen = np.isfinite(recent)
    daily = np.where(seen, recent, 0.0).sum(axis=1) / np.maximum(seen.sum(axis=1), 1)
    holding_per_day = config.holding_rate * (config.unit_cost or 1.0) / 365.0
    eoq = np.sqrt(2.0 * config.order_cost * daily / holding_per_day)
    return np.asarray(daily, dtype=np.float64), np.asarray(eoq, dtype=np.float64)


def _eoq_extra(history: FloatArray, config: SimulationConfig) -> FloatArray:
    """(SKUs,) EOQ minus one review period's demand (>= 0)."""
    daily, eoq = _daily_and_eoq(history, config)
    return np.asarray(np.maximum(eoq - daily * config.review_days, 0.0), dtype=np.float64)


def _cycle_demand(review_demand: FloatArray, history: FloatArray,
                  config: SimulationConfig) -> FloatArray:  # fmt: skip
    """Demand of one replenishment cycle, the fill-rate budget's base: one review period's, or
    the EOQ when ordering costs (orders then come every EOQ / d days, not every review)."""
    if config.order_cost <= 0:
        return review_demand
    return np.maximum(review_demand, _daily_and_eoq(history, config)[1])


class _State:
    """Inventory of one policy: (targets, SKUs) arrays plus the score accumulators."""

    def __init__(self, t: int, n: int, initial: FloatArray, ring: int) -> None:
        shape = (t, n)
        self.on_hand = np.broadcast_to(initial, shape).astype(np.float64)
        self.backorders = np.zeros(shape)
        self.on_order = np.zeros(shape)
        self.pipeline = np.zeros((ring, t, n))
        self.cycle_short = np.zeros(shape, dtype=bool)
        self.demand = np.zeros(shape)
        self.served = np.zeros(shape)
        self.stockout_days = np.zeros(shape, dtype=np.int64)
        self.cycles = np.zeros(shape, dtype=np.int64)
        self.cycles_ok = np.zeros(shape, dtype=np.int64)
        self.orders = np.zeros(shape, dtype=np.int64)
        self.units = np.zeros(shape, dtype=np.int64)
        self.inventory_sum = np.zeros(shape)
        self.seconds = 0.0
        # what the policy asked for, per scored review (diagnostics)
        self.reviews = 0
        self.level_sum = np.zeros(shape)
        self.level_prev: FloatArray | None = None
        self.churn_sum = np.zeros(shape)
        self.above = np.zeros(shape, dtype=np.int64)
        self.excess_sum = np.zeros(shape)
        self.quantile_sum: FloatArray | None = None

    def record_review(self, position: FloatArray, reorder: FloatArray, up: FloatArray,
                      quantile_used: FloatArray | None) -> None:
        """Accumulate one scored review's levels against the position before ordering."""
        self.reviews += 1
        self.level_sum += up
        if self.level_prev is not None:
            self.churn_sum += np.abs(up - self.level_prev)
        self.level_prev = up.copy()
        self.above += position > reorder
        self.excess_sum += np.maximum(position - up, 0.0)
        if quantile_used is not None:
            self.quantile_sum = quantile_used.copy() if self.quantile_sum is None \
                else self.quantile_sum + quantile_used  # fmt: skip

    def diagnostics(self, k: int) -> dict[str, float | None]:
        """Target k's order-up-to levels and orders: `mean_order_up_to` (summed over SKUs,
        mean over scored reviews), `level_churn` (sum of |S_t - S_t-1| over sum of S: how
        much the level moves review to review), `share_above_reorder_point` (SKU-reviews
        whose position was above the reorder point: no order), `mean_excess_position` (the
        position above S before ordering, summed over SKUs, mean over reviews: stock a higher
        earlier level left), `mean_order_size`, `mean_quantile_used` (forecast policies: the
        cover distribution's CDF at S, mean over SKU-reviews)."""
        reviews = max(self.reviews, 1)
        n = self.level_sum.shape[1]
        level = float(self.level_sum[k].sum())
        orders = int(self.orders[k].sum())
        return {
            "scored_reviews": self.reviews,
            "mean_order_up_to": round(level / reviews, 2),
            "level_churn": round(float(self.churn_sum[k].sum()) / level, 5) if level > 0 else None,
            "share_above_reorder_point": round(float(self.above[k].sum()) / (reviews * n), 5),
            "mean_excess_position": round(float(self.excess_sum[k].sum()) / reviews, 2),
            "mean_order_size": round(float(self.units[k].sum()) / orders, 3) if orders else None,
            "mean_quantile_used": None if self.quantile_sum is None
            else round(float(self.quantile_sum[k].sum()) / (reviews * n), 5),
        }  # fmt: skip


def simulate(
    demand: npt.ArrayLike,
    dates: DateArray,
    policies: Sequence[RestockPolicy],
    config: SimulationConfig,
    *,
    on_day: Callable[[int], None] | None = None,
    meta: Mapping[str, Any] | None = None,
    covariates: Covariates | None = None,
) -> SimulationResult:
    """Replay `demand` (SKUs, days; NaN = no data, counted as no demand) through `policies`.

    `dates`: (days,) the date of each column. `covariates`: the SKUs' known-in-advance
    covariates (planned promotions, `forecasting.covariates`), handed to forecast policies.
    `on_day(i)` is called after each simulated day (progress bars). Returns the scores per
    policy (see PolicyResult).
    """
    config.validate()
    values = np.asarray(demand, dtype=np.float64)
    if values.ndim != 2:
        raise SimulationError(f"demand must be (SKUs, days), got shape {values.shape}")
    if np.any(values < 0):
        raise SimulationError("demand must be >= 0")
    n, total = values.shape
    if len(dates) != total:
        raise SimulationError(f"{len(dates)} dates for {total} days of demand")
    shared: dict[int, _SharedForecast] = {}
    for policy in policies:
        if isinstance(policy, ForecastPolicy):
            policy.covariates = covariates
            policy.shared = shared.setdefault(id(policy.forecaster), _SharedForecast())
    names = [p.name for p in policies]
    if len(set(names)) != len(names) or not names:
        raise SimulationError(f"policy names must be unique and non-empty, got {names}")
    start = config.warmup_days if config.days is None else total - config.days
    if start < config.warmup_days or start >= total:
        raise SimulationError(
            f"{total} days of data cannot give {config.days or total - config.warmup_days} "
            f"simulated days after a warm-up of {config.warmup_days}"
        )
    lt_days, lt_probs = _lead_mix(config)
    burn_in = config.lead_time_days + config.review_days
    if total - start <= burn_in:
        raise SimulationError(f"need more than {burn_in} simulated days (lead time + review)")
    targets = np.asarray(config.targets(), dtype=np.float64)
    sold = np.nan_to_num(values, nan=0.0)
    warm = values[:, max(0, start - config.window_days):start]
    warm_mean = np.nan_to_num(np.nanmean(np.where(np.isfinite(warm), warm, np.nan), axis=1)) \
        if np.isfinite(warm).any() else np.zeros(n)  # fmt: skip
    stock_days = burn_in if config.initial_stock_days is None else config.initial_stock_days
    initial = np.round(warm_mean * stock_days)
    ring = int(lt_days.max()) + 2
    states = {p.name: _State(targets.size, n, initial, ring) for p in policies}
    rng = np.random.default_rng(config.seed)
    width = config.window_days
    padded = np.concatenate([np.full((n, width), np.nan), values], axis=1)
    started = time.perf_counter()
    last_fit_step = 0  # the caller fitted the models on the days before `start`

    for step, t in enumerate(range(start, total)):
        scored = step >= burn_in
        d = sold[:, t]
        review = step % config.review_days == 0
        history = padded[:, t + 1:t + 1 + width] if review else padded[:, :0]
        # On the first review at least retrain_days after the last fit (any review period).
        # Not on the last day: no review would use it.
        retrain = (review and config.retrain_days > 0 and t < total - 1
                   and step - last_fit_step >= config.retrain_days)
        if retrain:
            last_fit_step = step
        for policy in policies:
            if retrain and isinstance(policy, ForecastPolicy):
                policy.retrain(values[:, :t + 1], dates[:t + 1])
            st = states[policy.name]
            tick = time.perf_counter()
            slot = t % ring
            arriving = st.pipeline[slot]
            received = arriving > 0
            available = st.on_hand + arriving
            st.on_order -= arriving
            st.pipeline[slot] = 0.0
            # A receipt closes a replenishment cycle.
            if scored:
                st.cycles += received
                st.cycles_ok += received & ~st.cycle_short
            st.cycle_short &= ~received
            cleared = np.minimum(available, st.backorders)
            available -= cleared
            st.backorders -= cleared
            served = np.minimum(available, d[None, :])
            short = d[None, :] - served
            if config.backorders:
                st.backorders += short
            st.on_hand = available - served
            st.cycle_short |= short > 0
            if scored:
                st.demand += d[None, :]
                st.served += served
                st.stockout_days += short > 0
                st.inventory_sum += st.on_hand
            if review:
                s, up = policy.levels(history, dates[t], targets, config)
                if config.order_cost > 0:
                    up = np.maximum(up, s + _eoq_extra(history, config)[None, :])
                position = inventory_position(st.on_hand, st.on_order, st.backorders)
                qty = order_quantity(position, s, up, config.case_pack, config.moq)
                if scored:
                    st.record_review(position, s, up, getattr(policy, "quantile_used", None))
                if lt_days.size == 1:
                    due = np.full(qty.shape, t + int(lt_days[0]) + 1)
                else:
                    due = t + rng.choice(lt_days, size=qty.shape, p=lt_probs) + 1
                placed = qty > 0
                ti, si = np.nonzero(placed)
                np.add.at(st.pipeline, (due[ti, si] % ring, ti, si), qty[ti, si])
                st.on_order += qty
                if scored:
                    st.orders += placed
                    st.units += qty
            st.seconds += time.perf_counter() - tick
        if on_day is not None:
            on_day(step)

    scored_days = total - start - burn_in
    headline = int(np.argmin(np.abs(targets - config.service_level)))
    results: dict[str, PolicyResult] = {}
    for policy in policies:
        st = states[policy.name]
        demand_total = st.demand.sum(axis=1)
        fill = np.where(demand_total > 0, st.served.sum(axis=1) / np.maximum(demand_total, 1e-12),
                        1.0)  # fmt: skip
        avg_inv = st.inventory_sum.sum(axis=1) / scored_days
        has_demand = st.demand[headline] > 0
        sku_fill = st.served[headline][has_demand] / st.demand[headline][has_demand]
        cycles = st.cycles.sum(axis=1)
        csl = np.where(cycles > 0, st.cycles_ok.sum(axis=1) / np.maximum(cycles, 1), 1.0)
        curve = [
            PolicyCurvePoint(
                service_level=float(targets[k]), fill_rate=round(float(fill[k]), 5),
                avg_inventory=round(float(avg_inv[k]), 2),
                cycle_service_level=round(float(csl[k]), 5),
                stockout_days=int(st.stockout_days[k].sum()), orders=int(st.orders[k].sum()),
            )
            for k in range(targets.size)
        ]  # fmt: skip
        at95 = interpolate_inventory_at_fill([c.fill_rate for c in curve],
                                             [c.avg_inventory for c in curve])  # fmt: skip
        h = headline
        value = None if config.unit_cost is None else round(float(avg_inv[h]) * config.unit_cost,
                                                              2)  # fmt: skip
        costs = None
        if config.order_cost > 0:
            unit = config.unit_cost or 1.0
            holding = float(avg_inv[h]) * unit * config.holding_rate / 365.0 * scored_days
            ordering = float(st.orders[h].sum()) * config.order_cost
            costs = {"ordering": round(ordering, 2), "holding": round(holding, 2),
                     "total": round(ordering + holding, 2)}  # fmt: skip
        results[policy.name] = PolicyResult(
            fill_rate=round(float(fill[h]), 5),
            fill_rate_mean_sku=round(float(sku_fill.mean()), 5) if sku_fill.size else 1.0,
            cycle_service_level=round(float(csl[h]), 5),
            stockout_days=int(st.stockout_days[h].sum()),
            stockout_days_per_sku=round(float(st.stockout_days[h].sum()) / n, 3),
            avg_inventory=round(float(avg_inv[h]), 2),
            avg_inventory_per_sku=round(float(avg_inv[h]) / n, 3),
            avg_inventory_value=value,
            orders=int(st.orders[h].sum()),
            units_ordered=int(st.units[h].sum()),
            costs=costs,
            inventory_at_95_fill=None if at95 is None else round(at95, 2),
            curve=curve,
            seconds=round(st.seconds, 2),
            retrains=list(policy.retrains) if isinstance(policy, ForecastPolicy) else [],
            diagnostics=st.diagnostics(h),
        )
    return SimulationResult(
        config=config, skus=n, first_day=str(dates[start]), last_day=str(dates[total - 1]),
        simulated_days=total - start, scored_days=scored_days, policies=results,
        seconds=time.perf_counter() - started, meta=dict(meta or {}),
    )  # fmt: skip
