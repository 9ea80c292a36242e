"""lstm_lgbm's promotion-aware weights (forecasting/combination.py): promotion days learn
their own mix, the plain weights serve everything else, and a model without them is as
before. Pure numpy: no model is trained here (the served path: test_forecasting_combination)."""

from __future__ import annotations

import json

import numpy as np

from forecasting.base import QuantileForecast
from forecasting.combination import (
    MIN_PROMO_DAYS,
    CombinationWeights,
    combine,
    learn_calibration,
    learn_weights,
    promotion_days,
)
from forecasting.covariates import Covariates

LEVELS = (0.1, 0.5, 0.9)


def _forecast(daily: np.ndarray) -> QuantileForecast:
    """A forecast whose every level is `daily` (n, H) (cumulative: its running sum)."""
    d = np.repeat(daily[..., None], len(LEVELS), axis=2)
    return QuantileForecast(LEVELS, d, np.cumsum(d, axis=1), daily)


def _origins(share: float, seed: int = 0) -> tuple[list[QuantileForecast],
                                                     list[QuantileForecast],
                                                     list[np.ndarray], list[np.ndarray]]:
    """Three origins of 60 series x 7 days where the "LSTM" misses every promotion day by
    +30 (it cannot see them) and "LightGBM" misses every other day by +30."""
    rng = np.random.default_rng(seed)
    actual, promo = [], []
    for _ in range(3):
        actual.append(rng.poisson(5.0, (60, 7)).astype(float))
        promo.append(rng.random((60, 7)) < share)
    lstm = [_forecast(a + 30.0 * p) for a, p in zip(actual, promo, strict=True)]
    lgbm = [_forecast(a + 30.0 * ~p) for a, p in zip(actual, promo, strict=True)]
    return lstm, lgbm, actual, promo


def test_promotion_days_learn_their_own_weights() -> None:
    lstm, lgbm, actual, promo = _origins(0.3)
    w = learn_weights(lstm, lgbm, actual, integer=True, promo=promo)
    assert w.promo is not None
    assert w.daily == (1.0, 1.0, 1.0) and w.mean == 1.0  # days without: the LSTM
    assert w.promo.daily == (0.0, 0.0, 0.0) and w.promo.mean == 0.0  # with: LightGBM
    assert w.report["val_promo_days"] == sum(int(p.sum()) for p in promo)
    plain = learn_weights(lstm, lgbm, actual, integer=True)
    assert plain.promo is None
    # the split mix is no worse than the plain one on every validation day
    flags = np.concatenate(promo)
    split_out = combine(_cat(lstm), _cat(lgbm), w, integer=True, promo=flags)
    plain_out = combine(_cat(lstm), _cat(lgbm), plain, integer=True)
    y = np.concatenate(actual)
    assert (np.abs(split_out.daily[..., 1] - y).mean()
            < np.abs(plain_out.daily[..., 1] - y).mean())


def _cat(forecasts: list[QuantileForecast]) -> QuantileForecast:
    return QuantileForecast(LEVELS, np.concatenate([f.daily for f in forecasts]),
                            np.concatenate([f.cumulative for f in forecasts]),
                            np.concatenate([f.mean for f in forecasts]))


def test_too_few_promotion_days_or_none_known_keep_one_set_of_weights() -> None:
    lstm, lgbm, actual, promo = _origins(0.3)
    plain = learn_weights(lstm, lgbm, actual, integer=True)
    rare = [np.zeros_like(p) for p in promo]
    rare[0][:2, :] = True  # 14 promotion days < MIN_PROMO_DAYS
    assert 14 < MIN_PROMO_DAYS
    few = learn_weights(lstm, lgbm, actual, integer=True, promo=rare)
    assert few.promo is None
    assert (few.daily, few.cumulative, few.mean) == (plain.daily, plain.cumulative, plain.mean)
    assert few.report["val_promo_days"] == 14.0
    # no promotion known: bit for bit the plain weights, calibration included
    none = learn_weights(lstm, lgbm, actual, integer=True, promo=None)
    assert none == plain
    a = learn_calibration(lstm, lgbm, actual, plain, integer=True)
    b = learn_calibration(lstm, lgbm, actual, none, integer=True, promo=None)
    assert a == b


def test_days_without_a_promotion_take_the_plain_weights_with_or_without_covariates() -> None:
    lstm, lgbm, actual, promo = _origins(0.3)
    w = learn_weights(lstm, lgbm, actual, integer=True, promo=promo)
    assert w.promo is not None
    cal = learn_calibration(lstm, lgbm, actual, w, integer=True, promo=promo)
    a, b = lstm[0], lgbm[0]
    # the stream without promotions passes no covariates; a backtest passes neutral ones
    without = combine(a, b, w, integer=True, calibration=cal)
    neutral = combine(a, b, w, integer=True, calibration=cal,
                      promo=np.zeros(a.daily.shape[:2], dtype=bool))
    for field in ("daily", "cumulative", "mean"):
        np.testing.assert_array_equal(getattr(without, field), getattr(neutral, field))
    # a promotion on day 3 moves day 3 (daily, mean) and the cumulative from day 3 on only
    flags = np.zeros(a.daily.shape[:2], dtype=bool)
    flags[:, 2] = True
    lifted = combine(a, b, w, integer=True, calibration=cal, promo=flags)
    others = np.r_[0:2, 3:7]
    np.testing.assert_array_equal(lifted.daily[:, others], without.daily[:, others])
    np.testing.assert_array_equal(lifted.mean[:, others], without.mean[:, others])
    np.testing.assert_array_equal(lifted.cumulative[:, :2], without.cumulative[:, :2])
    np.testing.assert_array_equal(lifted.mean[:, 2], np.maximum(b.mean[:, 2], 0.0))


def test_promotion_weights_round_trip_and_old_weights_load_without_them() -> None:
    lstm, lgbm, actual, promo = _origins(0.3)
    w = learn_weights(lstm, lgbm, actual, integer=True, promo=promo)
    again = CombinationWeights.from_json(json.loads(json.dumps(w.to_json())))
    assert again == w and again.promo == w.promo
    plain = learn_weights(lstm, lgbm, actual, integer=True)
    assert "promo" not in plain.to_json()  # the model id of a plain mix stays what it was
    old = plain.to_json()  # as saved before promotion weights existed
    assert CombinationWeights.from_json(old).promo is None


def test_promotion_days_read_the_days_after_each_series_last_day() -> None:
    start = np.datetime64("2024-01-01")
    promo = np.zeros((2, 20))
    promo[0, 5] = promo[1, 6] = 1.0
    cov = Covariates(start, promo, np.ones_like(promo))
    last = np.array([start + np.timedelta64(3, "D"), start + np.timedelta64(4, "D")])
    days = promotion_days(cov, last, 3)
    assert days is not None
    np.testing.assert_array_equal(days, [[False, True, False], [False, True, False]])
    assert promotion_days(None, last, 3) is None
    past = promotion_days(cov, last + np.timedelta64(30, "D"), 3)  # beyond the grid: none
    assert past is not None and not past.any()


def test_a_calibration_of_their_own_moves_only_promotion_days() -> None:
    rng = np.random.default_rng(2)
    actual = [rng.poisson(20.0, (200, 7)).astype(float) for _ in range(3)]
    promo = [rng.random((200, 7)) < 0.4 for _ in actual]
    # days without a promotion: far too wide; days with one: about right
    wide, tight = np.array([5.0, 20.0, 40.0]), np.array([14.0, 20.0, 26.0])
    parts = []
    for p in promo:
        d = np.where(p[..., None], tight, wide)
        parts.append(QuantileForecast(LEVELS, d, np.cumsum(d, axis=1), np.full((200, 7), 20.0)))
    w = learn_weights(parts, parts, actual, integer=True, promo=promo)
    assert w.promo is not None
    pooled = learn_calibration(parts, parts, actual, w, integer=True, promo=promo)
    off = learn_calibration(parts, parts, actual, w, integer=True, promo=promo,
                            cells=[~p for p in promo])
    on = learn_calibration(parts, parts, actual, w, integer=True, promo=promo, cells=promo)
    assert pooled is not None and off is not None and on is not None
    assert on.report["val_daily_coverage_80_before"] < 0.9  # learned on promotion days alone
    assert off.report["val_daily_coverage_80_before"] > 0.97  # and on the others alone
    out = combine(parts[0], parts[0], w, integer=True, calibration=off, promo=promo[0],
                  promo_calibration=on)
    alone = combine(parts[0], parts[0], w, integer=True, calibration=off, promo=promo[0])
    np.testing.assert_array_equal(out.daily[~promo[0]], alone.daily[~promo[0]])
    moved = combine(parts[0], parts[0], w, integer=True, calibration=on, promo=promo[0])
    np.testing.assert_array_equal(out.daily[promo[0]], moved.daily[promo[0]])
    # no promotion known: promo_calibration is never read
    none = combine(parts[0], parts[0], w, integer=True, calibration=off, promo_calibration=on)
    plain = combine(parts[0], parts[0], w, integer=True, calibration=off)
    np.testing.assert_array_equal(none.daily, plain.daily)
