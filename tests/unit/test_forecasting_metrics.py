"""Metrics against small hand-computed examples, NaN and zero-denominator handling."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from forecasting import coverage, mase, pinball, wape


def test_mase_by_hand() -> None:
    insample = np.array([1.0, 3.0, 2.0, 5.0])  # lag-1 |diffs|: 2, 1, 3 -> scale 2
    assert mase([4.0, 6.0], [5.0, 3.0], insample, season=1) == pytest.approx((1 + 3) / 2 / 2)
    # season 2: |2-1|, |5-3| -> scale 1.5
    assert mase([4.0], [5.0], insample, season=2) == pytest.approx(1 / 1.5)


def test_mase_is_per_series_and_nan_safe() -> None:
    y_true = np.array([[1.0, 2.0], [3.0, 3.0], [1.0, np.nan]])
    y_pred = np.array([[1.0, 1.0], [3.0, 4.0], [2.0, 5.0]])
    insample = np.array([[0.0, 2.0, 0.0], [5.0, 5.0, 5.0], [1.0, np.nan, 3.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = mase(y_true, y_pred, insample, season=1)
    assert isinstance(got, np.ndarray) and got.shape == (3,)
    assert got[0] == pytest.approx(0.5 / 2.0)
    assert math.isnan(got[1])  # constant history: scale 0 -> NaN, not inf or a warning
    assert math.isnan(got[2])  # every lag-1 pair touches the NaN -> no scale
    assert math.isnan(mase([1.0], [1.0], [2.0, 2.0], season=7))  # history too short


def test_wape_by_hand() -> None:
    assert wape([2.0, 0.0, 8.0], [3.0, 1.0, 6.0]) == pytest.approx((1 + 1 + 2) / 10)
    per_row = wape([[2.0, 2.0], [0.0, 0.0]], [[1.0, 2.0], [1.0, 0.0]], axis=1)
    np.testing.assert_allclose(per_row, [0.25, np.nan])
    assert wape([1.0, np.nan], [2.0, 100.0]) == pytest.approx(1.0)  # NaN pair ignored


def test_pinball_by_hand() -> None:
    levels = [0.1, 0.5, 0.9]
    # y = 10, quantiles 8, 10, 15: 0.1*2, 0, 0.1*5 -> mean 0.7 / 3
    assert pinball(10.0, [8.0, 10.0, 15.0], levels) == pytest.approx(0.7 / 3)
    # y = 0 against the same quantiles: 0.9*8, 0.5*10, 0.1*15
    assert pinball(0.0, [8.0, 10.0, 15.0], levels) == pytest.approx((7.2 + 5.0 + 1.5) / 3)
    both = pinball([10.0, 0.0], [[8.0, 10.0, 15.0]] * 2, levels, axis=())
    np.testing.assert_allclose(both, [0.7 / 3, 13.7 / 3])
    assert pinball([10.0, 0.0], [[8.0, 10.0, 15.0]] * 2, levels) == pytest.approx(14.4 / 6)


def test_pinball_at_the_median_is_half_the_absolute_error() -> None:
    rng = np.random.default_rng(0)
    y, q = rng.poisson(5, 100).astype(float), rng.poisson(5, 100).astype(float)
    assert pinball(y, q[:, None], [0.5]) == pytest.approx(0.5 * np.abs(y - q).mean())


def test_pinball_rejects_mismatched_levels() -> None:
    with pytest.raises(ValueError):
        pinball([1.0], [[1.0, 2.0]], [0.5])


def test_coverage_by_hand() -> None:
    y = np.array([1.0, 5.0, 3.0, np.nan, 10.0])
    lo = np.array([0.0, 1.0, 3.0, 0.0, 0.0])
    hi = np.array([2.0, 4.0, 3.0, 1.0, 9.0])
    assert coverage(y, lo, hi) == pytest.approx(2 / 4)  # ends included; NaN ignored
    np.testing.assert_allclose(coverage(y[None, :4], lo[:4], hi[:4], axis=1), [2 / 3])
    assert math.isnan(coverage([np.nan], [0.0], [1.0]))


def test_coverage_counting_ties_half_for_counts() -> None:
    y = np.array([0.0, 0.0, 1.0, 2.0])
    lo = np.array([0.0, 0.0, 0.0, 0.0])
    hi = np.array([2.0, 0.0, 1.0, 3.0])
    assert coverage(y, lo, hi) == pytest.approx(1.0)
    assert coverage(y, lo, hi, ties=0.5) == pytest.approx((0.5 + 0.5 + 0.5 + 1.0) / 4)
