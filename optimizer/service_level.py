"""Service-level math: stock levels that meet cycle-service or fill-rate targets, vectorised.

Two families, both pure functions over numbers and numpy arrays (broadcast over SKUs):

- closed form for textbook demand models — normal and Poisson lead-time demand — with the
  standard loss functions (these are what the stockpyl oracle tests compare against);
- distribution-free, for forecasts: `DemandDistribution` holds each SKU's demand over one
  interval as weighted atoms built from the forecast's quantiles (or a normal), mixes them
  over an uncertain lead time, and answers quantiles and expected shortages.

Targets (`ServiceTarget`):
- "cycle": cycle service level a: P(demand over the protection interval <= level) >= a;
  the level is the a-quantile.
- "fill_rate": fill rate β, the share of demand met from stock. The classic approximation
  (Silver, Pyke & Peterson): the expected shortage per replenishment cycle E[(D - x)^+] over
  the protection interval must not exceed (1 - β) times the demand of one cycle. It ignores
  the shortage already present at the cycle start, so it errs on the safe side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Self

import numpy as np
import numpy.typing as npt
from scipy import special, stats

from optimizer.errors import PolicyInputError

__all__ = [
    "DEFAULT_TAIL",
    "TAIL_RULES",
    "DemandDistribution",
    "ServiceTarget",
    "TailRule",
    "lead_time_demand_normal",
    "lead_time_pmf",
    "normal_cycle_level",
    "normal_fill_rate_level",
    "normal_loss",
    "poisson_cycle_level",
    "poisson_fill_rate_level",
    "poisson_loss",
    "restock_levels",
    "standard_normal_loss",
    "tail_scale",
]

FloatArray = npt.NDArray[np.float64]
ServiceTarget = Literal["cycle", "fill_rate"]
SERVICE_TARGETS: tuple[ServiceTarget, ...] = ("cycle", "fill_rate")
TailRule = Literal["last_gap", "median_chord", "upper_fit"]
TAIL_RULES: tuple[TailRule, ...] = ("last_gap", "median_chord", "upper_fit")
DEFAULT_TAIL: TailRule = "median_chord"
"""The scale b of the exponential tail above a forecast's top quantile (`from_quantiles`):
- "median_chord" (the default): the chord from the median, (q_top - q0.5) / ln((1 - 0.5) /
  (1 - u_top)) (q0.5 interpolated between the levels around it; the lowest level when all
  are above 0.5);
- "last_gap": from the last quantile gap, (q_top - q_prev) / ln((1 - u_prev) / (1 - u_top))
  (the default until issue 16: one wide top gap of a lumpy series blew the tail up);
- "upper_fit": the least-squares slope of q on -ln(1 - u) over the levels >= 0.5.
Each is the exact b of an exponential upper tail; they differ in how many quantiles they
read, so in how much one wide top gap (a lumpy series) moves them. Measured in
benchmarks/README.md, "Policy tail above the top quantile"."""


def _f64(value: npt.ArrayLike) -> FloatArray:
    return np.asarray(value, dtype=np.float64)


def _check_level(level: FloatArray, field: str) -> None:
    bad = ~((level > 0.0) & (level < 1.0))
    if bad.any():
        raise PolicyInputError("must be strictly between 0 and 1", field=field,
                               value=np.broadcast_to(level, bad.shape)[bad].flat[0].item())


def _check_nonneg(value: FloatArray, field: str) -> None:
    bad = ~(value >= 0.0)
    if bad.any():
        raise PolicyInputError("must be >= 0", field=field,
                               value=np.broadcast_to(value, bad.shape)[bad].flat[0].item())


def _check_target(target: str) -> None:
    if target not in SERVICE_TARGETS:
        raise PolicyInputError(f"must be one of {SERVICE_TARGETS}", field="target", value=target)


def _scalar_or_array(out: FloatArray) -> FloatArray:
    return out if out.ndim else out[()]


# ----------------------------------------------------------------------------- demand models


def lead_time_demand_normal(
    mean_daily: npt.ArrayLike,
    sd_daily: npt.ArrayLike,
    lead_time_days: npt.ArrayLike,
    lead_time_sd_days: npt.ArrayLike = 0.0,
) -> tuple[FloatArray, FloatArray]:
    """Mean and sd of demand over a lead time of L days (independent days).

    With a random lead time (mean L, sd s_L) the variance adds the lead-time term:
    Var = L * sd_daily^2 + mean_daily^2 * s_L^2.
    """
    m, s, lt, lt_sd = (_f64(v) for v in (mean_daily, sd_daily, lead_time_days, lead_time_sd_days))
    for name, arr in (("mean_daily", m), ("sd_daily", s), ("lead_time_days", lt),
                      ("lead_time_sd_days", lt_sd)):  # fmt: skip
        _check_nonneg(arr, name)
    mean = lt * m
    sd = np.sqrt(lt * s * s + m * m * lt_sd * lt_sd)
    return mean, sd


def lead_time_pmf(lead_time_days: float, lead_time_sd_days: float = 0.0, *,
                  max_sd: float = 3.0) -> tuple[npt.NDArray[np.int64], FloatArray]:  # fmt: skip
    """A lead time in whole days as (days, probabilities): a normal discretised to integers
    within `max_sd` sds, truncated at 0; sd 0 gives the single point round(lead_time_days)."""
    if not lead_time_days >= 0 or not lead_time_sd_days >= 0:
        raise PolicyInputError("must be >= 0", field="lead_time_days",
                               value=(lead_time_days, lead_time_sd_days))
    if lead_time_sd_days == 0:
        return np.array([round(lead_time_days)], dtype=np.int64), np.ones(1)
    lo = max(0, int(np.floor(lead_time_days - max_sd * lead_time_sd_days)))
    hi = int(np.ceil(lead_time_days + max_sd * lead_time_sd_days))
    days = np.arange(lo, hi + 1, dtype=np.int64)
    edges = (np.append(days, hi + 1) - 0.5 - lead_time_days) / lead_time_sd_days
    probs = np.diff(special.ndtr(edges))
    return days, probs / probs.sum()


# ----------------------------------------------------------------------------- loss functions


def standard_normal_loss(z: npt.ArrayLike) -> FloatArray:
    """G(z) = E[(Z - z)^+] = phi(z) - z (1 - Phi(z)) for a standard normal Z."""
    zz = _f64(z)
    pdf = np.exp(-0.5 * zz * zz) / np.sqrt(2.0 * np.pi)
    return _scalar_or_array(pdf - zz * special.ndtr(-zz))


def normal_loss(x: npt.ArrayLike, mean: npt.ArrayLike, sd: npt.ArrayLike) -> FloatArray:
    """E[(D - x)^+] for D ~ Normal(mean, sd); sd 0 gives max(mean - x, 0)."""
    xx, mu, sigma = np.broadcast_arrays(_f64(x), _f64(mean), _f64(sd))
    _check_nonneg(sigma, "sd")
    safe = np.where(sigma > 0, sigma, 1.0)
    out = np.where(sigma > 0, safe * standard_normal_loss((xx - mu) / safe),
                   np.maximum(mu - xx, 0.0))  # fmt: skip
    return _scalar_or_array(np.asarray(out, dtype=np.float64))


def poisson_loss(x: npt.ArrayLike, mean: npt.ArrayLike) -> FloatArray:
    """E[(D - x)^+] for D ~ Poisson(mean) at integer x: -(x - mean)(1 - F(x)) + mean f(x)."""
    xx, mu = np.broadcast_arrays(_f64(x), _f64(mean))
    _check_nonneg(mu, "mean")
    out = -(xx - mu) * stats.poisson.sf(xx, mu) + mu * stats.poisson.pmf(xx, mu)
    # Below the support the loss is linear: E[D] - x.
    out = np.where(xx < 0, mu - xx, out)
    return _scalar_or_array(np.asarray(out, dtype=np.float64))


# ----------------------------------------------------------------------------- closed-form levels


def normal_cycle_level(mean: npt.ArrayLike, sd: npt.ArrayLike,
                       service_level: npt.ArrayLike) -> FloatArray:  # fmt: skip
    """The service_level-quantile of Normal(mean, sd): mean + z_alpha * sd."""
    mu, sigma, alpha = (_f64(v) for v in (mean, sd, service_level))
    _check_level(alpha, "service_level")
    _check_nonneg(sigma, "sd")
    return _scalar_or_array(np.asarray(mu + special.ndtri(alpha) * sigma, dtype=np.float64))


def poisson_cycle_level(mean: npt.ArrayLike, service_level: npt.ArrayLike) -> FloatArray:
    """The smallest integer S with P(Poisson(mean) <= S) >= service_level."""
    mu, alpha = _f64(mean), _f64(service_level)
    _check_level(alpha, "service_level")
    _check_nonneg(mu, "mean")
    out = stats.poisson.ppf(alpha, mu)
    return _scalar_or_array(np.asarray(np.where(mu > 0, out, 0.0), dtype=np.float64))


def _shortage_budget(cycle_demand: FloatArray, fill_rate: FloatArray) -> FloatArray:
    _check_level(fill_rate, "fill_rate")
    _check_nonneg(cycle_demand, "cycle_demand")
    return np.asarray((1.0 - fill_rate) * cycle_demand, dtype=np.float64)


def normal_fill_rate_level(mean: npt.ArrayLike, sd: npt.ArrayLike, cycle_demand: npt.ArrayLike,
                           fill_rate: npt.ArrayLike) -> FloatArray:  # fmt: skip
    """The level x with E[(D - x)^+] = (1 - fill_rate) * cycle_demand, D ~ Normal(mean, sd).

    Solved for z in sd * G(z) = budget by bisection (G is strictly decreasing), vectorised.
    sd 0 gives mean - budget.
    """
    mu, sigma, q, beta = np.broadcast_arrays(*(_f64(v) for v in (mean, sd, cycle_demand,
                                                                  fill_rate)))  # fmt: skip
    _check_nonneg(sigma, "sd")
    budget = _shortage_budget(q, beta)
    safe = np.where(sigma > 0, sigma, 1.0)
    ratio = budget / safe
    lo = np.full(ratio.shape, -40.0)
    hi = np.full(ratio.shape, 40.0)
    for _ in range(100):  # 80 / 2**100: exact to float precision
        mid = 0.5 * (lo + hi)
        too_low = standard_normal_loss(mid) > ratio
        lo = np.where(too_low, mid, lo)
        hi = np.where(too_low, hi, mid)
    z = 0.5 * (lo + hi)
    out = np.where(sigma > 0, mu + z * sigma, mu - budget)
    return _scalar_or_array(np.asarray(out, dtype=np.float64))


def poisson_fill_rate_level(mean: npt.ArrayLike, cycle_demand: npt.ArrayLike,
                            fill_rate: npt.ArrayLike) -> FloatArray:  # fmt: skip
    """The smallest integer S >= 0 with E[(D - S)^+] <= (1 - fill_rate) * cycle_demand,
    D ~ Poisson(mean). Integer bisection, vectorised."""
    mu, q, beta = np.broadcast_arrays(*(_f64(v) for v in (mean, cycle_demand, fill_rate)))
    _check_nonneg(mu, "mean")
    budget = _shortage_budget(q, beta)
    lo = np.full(mu.shape, -1.0)  # loss(lo) > budget (or lo = -1: below every candidate)
    hi = np.ceil(mu + 12.0 * np.sqrt(mu) + 12.0)  # loss(hi) ~ 0 <= budget
    while np.any(hi - lo > 1):
        mid = np.floor(0.5 * (lo + hi))
        ok = poisson_loss(np.maximum(mid, 0.0), mu) <= budget
        hi = np.where(ok & (hi - lo > 1), mid, hi)
        lo = np.where(~ok & (hi - lo > 1), mid, lo)
    return _scalar_or_array(np.maximum(hi, 0.0))


# ----------------------------------------------------------------------------- distribution-free


def _default_grid() -> FloatArray:
    """Probability-bin edges in (0, 1): even in the body, ever finer into the upper tail,
    where fill-rate levels live."""
    body = np.linspace(0.0, 0.9, 37)
    tail = 1.0 - np.geomspace(0.1, 1e-5, 41)[1:]
    return np.concatenate([body, tail, [1.0]])


_GRID = _default_grid()


def tail_scale(levels: npt.ArrayLike, quantiles: npt.ArrayLike,
               tail: TailRule = DEFAULT_TAIL) -> FloatArray:  # fmt: skip
    """(n,) the scale b >= 0 of the exponential tail above the top level (see TAIL_RULES) of
    quantiles (n, Q) at `levels` (Q,), the quantiles non-negative and non-decreasing."""
    lv, qs = _f64(levels), np.atleast_2d(_f64(quantiles))
    if tail == "last_gap":
        return np.asarray((qs[:, -1] - qs[:, -2]) / np.log((1.0 - lv[-2]) / (1.0 - lv[-1])),
                          dtype=np.float64)  # fmt: skip
    if tail == "median_chord":
        if lv[0] >= 0.5:
            u, q = lv[0], qs[:, 0]
        else:
            j = min(int(np.searchsorted(lv, 0.5, side="right")) - 1, lv.size - 2)
            w = (0.5 - lv[j]) / (lv[j + 1] - lv[j])
            u, q = 0.5, qs[:, j] * (1.0 - w) + qs[:, j + 1] * w
        if u >= lv[-1]:  # the top level is the median or below: nothing to draw a chord to
            return tail_scale(lv, qs, "last_gap")
        return np.asarray((qs[:, -1] - q) / np.log((1.0 - u) / (1.0 - lv[-1])), dtype=np.float64)
    if tail == "upper_fit":
        upper = lv >= 0.5
        if upper.sum() < 2:
            return tail_scale(lv, qs, "last_gap")
        x = -np.log(1.0 - lv[upper])
        y = qs[:, upper]
        dx = x - x.mean()
        # q non-decreasing in x: the covariance (and so b) is >= 0 (Chebyshev's sum inequality)
        return np.asarray(np.maximum((y - y.mean(axis=1, keepdims=True)) @ dx / (dx @ dx), 0.0),
                          dtype=np.float64)  # fmt: skip
    raise PolicyInputError(f"must be one of {TAIL_RULES}", field="tail", value=tail)


@dataclass(frozen=True)
class DemandDistribution:
    """Demand of n SKUs over one interval, each a discrete distribution on M atoms.

    values: (n, M) atom values, non-decreasing along M, >= 0.
    probs:  (n, M) their probabilities, rows summing to 1.

    Build one with `from_quantiles` (a forecast), `normal`, or `mixture` (over lead times).
    """

    values: FloatArray
    probs: FloatArray

    def __post_init__(self) -> None:
        values = np.array(self.values, dtype=np.float64)
        probs = np.array(np.broadcast_to(self.probs, values.shape), dtype=np.float64)
        if values.ndim != 2:
            raise PolicyInputError("must be 2-D (n_skus, atoms)", field="values",
                                   value=values.shape)  # fmt: skip
        if not np.all(np.isfinite(values)):
            raise PolicyInputError("must be finite", field="values", value="NaN/inf")
        order = np.argsort(values, axis=1, kind="stable")
        values = np.take_along_axis(values, order, axis=1)
        probs = np.take_along_axis(probs, order, axis=1)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "probs", probs)

    @property
    def n_skus(self) -> int:
        return int(self.values.shape[0])

    # -- constructors

    @classmethod
    def from_quantiles(cls, levels: npt.ArrayLike, quantiles: npt.ArrayLike, *,
                       grid: npt.ArrayLike | None = None,
                       tail: TailRule = DEFAULT_TAIL) -> Self:  # fmt: skip
        """Atoms of the piecewise-linear quantile function through (levels, quantiles (n, Q)).

        Below the lowest level it continues the first segment's slope (clipped at 0); above
        the highest it has an exponential tail, Q(u) = q_top + b * ln((1 - u_top) / (1 - u)),
        so high fill-rate targets are not capped at the forecast's top quantile; `tail` picks
        b (`TAIL_RULES`; default "median_chord": b = (q_top - q0.5) / ln(0.5 / (1 - u_top)),
        the chord from the median; "last_gap" continues the last segment). `grid`:
        probability-bin edges from 0 to 1 (default: 80 bins, fine in the upper tail); each bin
        becomes one atom at its midpoint's quantile.
        """
        lv = _f64(levels)
        qs = np.atleast_2d(_f64(quantiles))
        if tail not in TAIL_RULES:
            raise PolicyInputError(f"must be one of {TAIL_RULES}", field="tail", value=tail)
        if lv.ndim != 1 or qs.shape[-1] != lv.size or lv.size < 2:
            raise PolicyInputError("need >= 2 levels matching the quantiles' last axis",
                                   field="levels", value=lv.tolist())  # fmt: skip
        qs = np.maximum.accumulate(np.maximum(qs, 0.0), axis=1)
        edges = _GRID if grid is None else _f64(grid)
        mids = 0.5 * (edges[1:] + edges[:-1])
        probs = np.diff(edges)
        n = qs.shape[0]
        out = np.empty((n, mids.size))
        inside = (mids >= lv[0]) & (mids <= lv[-1])
        if inside.any():
            j = np.clip(np.searchsorted(lv, mids[inside], side="right") - 1, 0, lv.size - 2)
            w = (mids[inside] - lv[j]) / (lv[j + 1] - lv[j])
            out[:, inside] = qs[:, j] * (1.0 - w) + qs[:, j + 1] * w
        below = mids < lv[0]
        if below.any():
            slope = (qs[:, 1] - qs[:, 0]) / (lv[1] - lv[0])
            out[:, below] = np.maximum(qs[:, :1] + slope[:, None] * (mids[below] - lv[0]), 0.0)
        above = mids > lv[-1]
        if above.any():
            b = tail_scale(lv, qs, tail)
            out[:, above] = qs[:, -1:] + b[:, None] * np.log((1.0 - lv[-1]) / (1.0 - mids[above]))
        return cls(out, np.broadcast_to(probs, out.shape))

    @classmethod
    def normal(cls, mean: npt.ArrayLike, sd: npt.ArrayLike, *,
               grid: npt.ArrayLike | None = None) -> Self:  # fmt: skip
        """Atoms of Normal(mean, sd) (n,), NOT clipped at 0 (matches the closed forms)."""
        mu, sigma = np.broadcast_arrays(np.atleast_1d(_f64(mean)), np.atleast_1d(_f64(sd)))
        _check_nonneg(sigma, "sd")
        edges = _GRID if grid is None else _f64(grid)
        mids = 0.5 * (edges[1:] + edges[:-1])
        z = special.ndtri(mids)
        values = mu[:, None] + sigma[:, None] * z[None, :]
        return cls(values, np.broadcast_to(np.diff(edges), values.shape))

    @classmethod
    def mixture(cls, components: Sequence[DemandDistribution],
                weights: npt.ArrayLike) -> Self:  # fmt: skip
        """The mixture sum_k weights[k] * components[k] (same SKUs): e.g. demand over a random
        lead time, mixing the demand over each possible number of days."""
        w = _f64(weights)
        if len(components) != w.size or w.size == 0 or np.any(w < 0) or not w.sum() > 0:
            raise PolicyInputError("need one non-negative weight per component",
                                   field="weights", value=w.tolist())  # fmt: skip
        w = w / w.sum()
        values = np.concatenate([c.values for c in components], axis=1)
        probs = np.concatenate([c.probs * wk for c, wk in zip(components, w, strict=True)],
                               axis=1)  # fmt: skip
        return cls(values, probs)

    # -- queries

    def mean(self) -> FloatArray:
        """(n,) expected demand."""
        return np.asarray((self.values * self.probs).sum(axis=1), dtype=np.float64)

    def quantile(self, level: npt.ArrayLike) -> FloatArray:
        """(n,) the `level`-quantile (scalar or (n,) levels), interpolated linearly between
        atoms placed at their mid cumulative probability."""
        alpha = np.broadcast_to(_f64(level), (self.n_skus,))
        _check_level(alpha, "service_level")
        cdf_mid = np.cumsum(self.probs, axis=1) - 0.5 * self.probs
        m = cdf_mid.shape[1]
        k = (cdf_mid < alpha[:, None]).sum(axis=1)  # atoms strictly below the level
        hi = np.minimum(k, m - 1)
        lo = np.maximum(k - 1, 0)
        rows = np.arange(self.n_skus)
        c_lo, c_hi = cdf_mid[rows, lo], cdf_mid[rows, hi]
        v_lo, v_hi = self.values[rows, lo], self.values[rows, hi]
        span = c_hi - c_lo
        w = np.where(span > 0, (alpha - c_lo) / np.where(span > 0, span, 1.0), 0.0)
        return np.asarray(v_lo + np.clip(w, 0.0, 1.0) * (v_hi - v_lo), dtype=np.float64)

    def expected_shortage(self, level: npt.ArrayLike) -> FloatArray:
        """(n,) E[(D - level)^+] for scalar or (n,) levels."""
        x = np.broadcast_to(_f64(level), (self.n_skus,))
        return np.asarray(
            (self.probs * np.maximum(self.values - x[:, None], 0.0)).sum(axis=1), dtype=np.float64
        )

    def level_for_shortage(self, budget: npt.ArrayLike) -> FloatArray:
        """(n,) the smallest level x with E[(D - x)^+] <= budget (scalar or (n,), >= 0).

        E[(D - x)^+] is piecewise linear and decreasing in x with kinks at the atoms, so the
        solution is exact for the atoms: find the first atom whose shortage fits the budget
        and step back along the segment before it.
        """
        b = np.broadcast_to(_f64(budget), (self.n_skus,))
        _check_nonneg(b, "budget")
        v, p = self.values, self.probs
        # Suffix sums over atoms above k: P_k = sum_{j>k} p_j, T_k = sum_{j>k} p_j v_j.
        tail_p = np.cumsum(p[:, ::-1], axis=1)[:, ::-1] - p
        tail_pv = np.cumsum((p * v)[:, ::-1], axis=1)[:, ::-1] - p * v
        short_at = tail_pv - v * tail_p  # E[(D - v_k)^+], non-increasing in k
        fits = short_at <= b[:, None] + 1e-12
        k = np.argmax(fits, axis=1)  # first atom that fits (the last one always does)
        rows = np.arange(self.n_skus)
        # Left of atom k the slope is -(P_{k-1} + p_{k}) = -P_{k-1}; left of atom 0 it is -1.
        prev = np.maximum(k - 1, 0)
        slope = np.where(k > 0, tail_p[rows, prev], 1.0)
        start_short = np.where(k > 0, short_at[rows, prev], short_at[rows, 0])
        start_x = np.where(k > 0, v[rows, prev], v[rows, 0])
        x = np.where(
            k > 0,
            start_x + (start_short - b) / np.where(slope > 0, slope, 1.0),
            start_x - (b - start_short),
        )
        return np.asarray(np.maximum(x, 0.0), dtype=np.float64)


# ----------------------------------------------------------------------------- the policy


def restock_levels(
    cover_demand: DemandDistribution,
    *,
    service_level: npt.ArrayLike,
    target: ServiceTarget = "cycle",
    review_demand: npt.ArrayLike,
) -> tuple[FloatArray, FloatArray]:
    """(reorder_point, order_up_to), each (n,), of a periodic-review order-up-to (R, S) policy.

    `cover_demand`: demand over the protection interval, lead time + review period (an order
    placed now must last until the order of the NEXT review lands). `review_demand`: expected
    demand of one review period (n,) — the demand of one replenishment cycle.
    - target "cycle": S is the `service_level`-quantile of the cover demand.
    - target "fill_rate": S is the smallest level whose expected shortage over the cover
      interval is at most (1 - service_level) * review_demand.
    The reorder point equals S: every review orders what brings the position back to S (no
    fixed order cost here; case pack and MOQ round it). A reorder point over the lead time
    alone would leave the review period unprotected: a position just above it at one review
    cannot be topped up before the next, and that order arrives a lead time later.
    """
    _check_target(target)
    alpha = _f64(service_level)
    _check_level(alpha, "service_level")
    if target == "cycle":
        up = cover_demand.quantile(alpha)
    else:
        q = np.broadcast_to(_f64(review_demand), (cover_demand.n_skus,))
        _check_nonneg(q, "review_demand")
        up = cover_demand.level_for_shortage((1.0 - alpha) * q)
    up = np.maximum(up, 0.0)
    return up, up.copy()
