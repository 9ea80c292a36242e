"""Demand classes (Syntetos-Boylan-Croston) and the mix's weights per class: each class
learns the weights its own series would learn alone, a rare class serves the weights of
every series, and a forecast mixes each series with its class's weights."""

from __future__ import annotations

import json

import numpy as np
import pytest

import forecasting.combination as combination_module
from forecasting.base import QuantileForecast
from forecasting.combination import (
    CombinationError,
    CombinationWeights,
    combine,
    learn_calibration,
    learn_weights,
)
from forecasting.demand_class import ADI_CUT, CLASSES, CV2_CUT, demand_classes

LEVELS = (0.1, 0.5, 0.9, 0.95)


def test_each_class_from_spacing_and_size_variation() -> None:
    days = 91
    smooth = np.full(days, 5.0)
    erratic = np.where(np.arange(days) % 2 == 0, 1.0, 20.0)  # sold every day, sizes vary
    intermittent = np.where(np.arange(days) % 3 == 0, 4.0, 0.0)  # every 3rd day, same size
    lumpy = np.zeros(days)
    lumpy[::4] = 1.0
    lumpy[::8] = 30.0
    never = np.zeros(days)
    unknown = np.full(days, np.nan)
    got = demand_classes(np.stack([smooth, erratic, intermittent, lumpy, never, unknown]))
    assert [CLASSES[c] for c in got] == ["smooth", "erratic", "intermittent", "lumpy",
                                         "intermittent", "intermittent"]
    assert got.dtype == np.int8


def test_only_the_last_days_count_and_missing_days_are_neither_sales_nor_zeros() -> None:
    old = np.zeros((1, 200))
    old[0, -91:] = 3.0  # intermittent long ago, smooth over the last 91 days
    assert CLASSES[demand_classes(old)[0]] == "smooth"
    assert CLASSES[demand_classes(old, days=200)[0]] == "intermittent"
    gaps = np.full((1, 91), np.nan)
    gaps[0, ::2] = 3.0  # every known day a sale: ADI 1, not 2
    assert CLASSES[demand_classes(gaps)[0]] == "smooth"
    with pytest.raises(ValueError, match="series, days"):
        demand_classes(np.ones(5))


def test_the_cut_offs_are_the_papers() -> None:
    assert (ADI_CUT, CV2_CUT) == (1.32, 0.49)
    w = np.zeros((2, 100))
    w[0, :76] = 2.0  # ADI 100 / 76 = 1.316: frequent
    w[1, :75] = 2.0  # ADI 100 / 75 = 1.333: spaced
    assert [CLASSES[c] for c in demand_classes(w, days=100)] == ["smooth", "intermittent"]


def _fc(level: np.ndarray) -> QuantileForecast:
    """Quantiles around `level` (n, H): the median path, the others scaled."""
    d = level[..., None] * np.array([0.5, 1.0, 1.5, 1.8])
    return QuantileForecast(LEVELS, d, np.cumsum(d, axis=1), level)


def _two_kinds(origins: int = 6, n: int = 60, h: int = 7, seed: int = 3,
               ) -> tuple[list[QuantileForecast], list[QuantileForecast], list[np.ndarray],
                          np.ndarray]:
    """Series 0..n/2 (class smooth) where the LSTM tracks demand and LightGBM is off, the
    rest (class lumpy) the other way round."""
    rng = np.random.default_rng(seed)
    half = n // 2
    means = rng.uniform(3.0, 15.0, (n, 1))
    actual = [rng.poisson(np.broadcast_to(means, (n, h))).astype(float) for _ in range(origins)]
    right = np.broadcast_to(means, (n, h)).copy()
    wrong = right * 3.0 + 5.0
    lstm = [_fc(np.where(np.arange(n)[:, None] < half, right, wrong)) for _ in actual]
    lgbm = [_fc(np.where(np.arange(n)[:, None] < half, wrong, right)) for _ in actual]
    kinds = np.where(np.arange(n) < half, 0, 3).astype(np.int8)
    return lstm, lgbm, actual, kinds


def _subset(forecasts: list[QuantileForecast], rows: np.ndarray) -> list[QuantileForecast]:
    return [QuantileForecast(f.levels, f.daily[rows], f.cumulative[rows], f.mean[rows])
            for f in forecasts]


def test_each_class_learns_the_weights_its_series_learn_alone() -> None:
    lstm, lgbm, actual, kinds = _two_kinds()
    classes = [kinds] * len(actual)
    w = learn_weights(lstm, lgbm, actual, integer=True, classes=classes)
    assert w.classes is not None and len(w.classes) == len(CLASSES)
    plain = learn_weights(lstm, lgbm, actual, integer=True)
    assert (w.daily, w.cumulative, w.mean) == (plain.daily, plain.cumulative, plain.mean)
    for code in (0, 3):
        rows = np.flatnonzero(kinds == code)
        alone = learn_weights(_subset(lstm, rows), _subset(lgbm, rows),
                              [a[rows] for a in actual], integer=True)
        own = w.classes[code]
        assert own is not None
        assert (own.daily, own.cumulative, own.mean) == (alone.daily, alone.cumulative,
                                                         alone.mean)
    smooth, lumpy = w.classes[0], w.classes[3]
    assert smooth is not None and lumpy is not None
    assert min(smooth.daily) > 0.8 and max(lumpy.daily) < 0.2  # each its right part
    assert w.classes[1] is None and w.classes[2] is None  # no series: every series' weights
    assert w.report["val_class_smooth_series"] == 30.0
    assert w.report["val_class_erratic_series"] == 0.0


def test_a_class_on_too_few_series_serves_the_weights_of_every_series() -> None:
    lstm, lgbm, actual, kinds = _two_kinds(n=2 * combination_module.MIN_CLASS_SERIES - 2)
    w = learn_weights(lstm, lgbm, actual, integer=True, classes=[kinds] * len(actual))
    assert w.classes == (None, None, None, None)


def test_a_forecast_mixes_each_series_with_its_classs_weights() -> None:
    lstm, lgbm, actual, kinds = _two_kinds()
    w = learn_weights(lstm, lgbm, actual, integer=True, classes=[kinds] * len(actual))
    assert w.classes is not None and w.classes[0] is not None and w.classes[3] is not None
    mixed = combine(lstm[0], lgbm[0], w, integer=True, classes=kinds)
    for code in (0, 3):
        rows = np.flatnonzero(kinds == code)
        alone = combine(_subset(lstm, rows)[0], _subset(lgbm, rows)[0], w.classes[code],
                        integer=True)
        np.testing.assert_array_equal(mixed.daily[rows], alone.daily)
        np.testing.assert_array_equal(mixed.cumulative[rows], alone.cumulative)
        np.testing.assert_array_equal(mixed.mean[rows], alone.mean)
    # without classes (a caller that does not know them): the weights of every series
    np.testing.assert_array_equal(combine(lstm[0], lgbm[0], w, integer=True).daily,
                                  combine(lstm[0], lgbm[0], w.__class__(
                                      w.levels, w.daily, w.cumulative, w.mean),
                                      integer=True).daily)
    # the mix's calibration learns from the mix each series is served
    cal = learn_calibration(lstm, lgbm, actual, w, integer=True,
                            classes=[kinds] * len(actual))
    plain_cal = learn_calibration(lstm, lgbm, actual, w, integer=True)
    assert cal is not None and plain_cal is not None and cal.daily != plain_cal.daily


def test_class_weights_survive_json_and_are_exclusive_with_promotion_weights() -> None:
    lstm, lgbm, actual, kinds = _two_kinds()
    w = learn_weights(lstm, lgbm, actual, integer=True, classes=[kinds] * len(actual))
    back = CombinationWeights.from_json(json.loads(json.dumps(w.to_json())))
    assert back == w
    assert "classes" not in learn_weights(lstm, lgbm, actual, integer=True).to_json()
    with pytest.raises(CombinationError, match="exclusive"):
        learn_weights(lstm, lgbm, actual, integer=True, classes=[kinds] * len(actual),
                      promo=[np.zeros(a.shape, dtype=bool) for a in actual])
    with pytest.raises(CombinationError, match="each origin"):
        learn_weights(lstm, lgbm, actual, integer=True, classes=[kinds])
