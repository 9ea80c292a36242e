"""`serving_features` (LightGBM's features of a forecast from the end of each window, built per
series and day-major) equals `lag_features` on the same grid bit for bit: integer and
real-valued demand, missing days, short and long windows, with and without covariates, on
both of its prefix-sum paths (few series: np.cumsum; many: a loop over days) and across its
blocks of series."""

from __future__ import annotations

import numpy as np
import pytest

import forecasting.lag_features as lf
from forecasting.lag_features import LagTable, lag_features, serving_features, serving_grid

END = np.datetime64("2024-06-01", "D")


def _dates(length: int, horizon: int) -> np.ndarray:
    days = END - np.arange(length - 1, -1, -1).astype("timedelta64[D]")
    after = days[-1] + np.arange(1, horizon + 1).astype("timedelta64[D]")
    return np.concatenate([days, after])


def _windows(n: int, length: int, kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "counts":
        w = rng.poisson(rng.gamma(1.0, 3.0, (n, 1)), (n, length)).astype(np.float64)
    else:  # real-valued, over many magnitudes: sums that round differently in another order
        w = rng.gamma(0.4, 1.0, (n, length)) * 10.0 ** rng.integers(-6, 7, (n, length))
        w = w.astype(np.float32).astype(np.float64)  # as the LSTM's day ring keeps them
    w[rng.random(w.shape) < 0.2] = np.nan
    w[0] = np.nan  # a series never seen
    if n > 1:
        w[1, : length // 2] = np.nan  # one seen for half the window
    return w


def _reference(w: np.ndarray, horizon: int, covariates: tuple[np.ndarray, np.ndarray] | None,
               price: bool) -> tuple[np.ndarray, np.ndarray]:
    n, length = w.shape
    steps, kinds, rows = serving_grid(n, horizon)
    return lag_features(LagTable.of(w), rows, np.full(rows.size, length - 1),
                        np.tile(steps, n), np.tile(kinds, n), _dates(length, horizon), "uk",
                        covariates, price)


@pytest.mark.parametrize("n,length,kind", [(1, 392, "real"), (3, 20, "real"),
                                           (40, 392, "counts"), (70, 56, "real"),
                                           (300, 392, "real"), (600, 400, "counts")])
@pytest.mark.parametrize("with_covariates", [False, True])
def test_serving_features_equal_lag_features_bit_for_bit(n: int, length: int, kind: str,
                                                         with_covariates: bool) -> None:
    horizon = 14
    w = _windows(n, length, kind, seed=n + length)
    covariates = None
    if with_covariates:
        rng = np.random.default_rng(1)
        size = length + horizon
        covariates = ((rng.random((n, size)) < 0.2).astype(np.float64),
                      rng.uniform(0.5, 1.0, (n, size)))
    for price in (False, True) if with_covariates else (False,):
        want, want_scale = _reference(w, horizon, covariates, price)
        got, scale = serving_features(w, horizon, _dates(length, horizon), "uk", covariates,
                                      price)
        assert got.shape == want.shape
        # the same bits (NaN included), not just close
        np.testing.assert_array_equal(got.view(np.int64), want.view(np.int64))
        np.testing.assert_array_equal(np.repeat(scale, 2 * horizon), want_scale)


def test_both_prefix_paths_and_any_block_size_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    w = _windows(130, 392, "real", seed=3)
    dates = _dates(392, 7)
    want, _ = _reference(w, 7, None, False)
    for loop_from, block in ((1, 256), (10**6, 256), (64, 50), (64, 1)):
        monkeypatch.setattr(lf, "PREFIX_LOOP_SERIES", loop_from)
        monkeypatch.setattr(lf, "SERVING_CHUNK", block)
        got, _ = serving_features(w, 7, dates)
        np.testing.assert_array_equal(got.view(np.int64), want.view(np.int64))


@pytest.mark.parametrize("n", [5, 100])  # both prefix paths
def test_young_series_and_signed_zeros_keep_every_bit(n: int) -> None:
    """Rings mostly empty (a young SKU: the running sums start at the first observed day of
    the block) and demand of -0.0 (which a sum started elsewhere would turn into +0.0)."""
    for first in (0, 1, 300, 391):
        w = _windows(n, 392, "real", seed=first)
        w[:, :first] = np.nan
        w[:, first] = np.nan if first else w[:, first]
        w[n // 2, first:] = -0.0
        w[-1, -3:] = -0.0
        want, _ = _reference(w, 14, None, False)
        got, _ = serving_features(w, 14, _dates(392, 14))
        np.testing.assert_array_equal(got.view(np.int64), want.view(np.int64))
    empty = np.full((n, 392), np.nan)
    want, _ = _reference(empty, 14, None, False)
    got, _ = serving_features(empty, 14, _dates(392, 14))
    np.testing.assert_array_equal(got.view(np.int64), want.view(np.int64))


def test_forecast_from_equals_predict_per_end_day(monkeypatch: pytest.MonkeyPatch) -> None:
    """LightGBM's serving path (every end day of a batch in one run of the boosters, the
    series sorted by scale) gives each row what `predict` gives the rows of its day."""
    pytest.importorskip("lightgbm")
    import forecasting.lightgbm_peer as peer
    from tests.support.demand import weekly_panel

    panel = weekly_panel(40, 200, 0)
    model = peer.LightGBMForecaster(7, n_estimators=15, num_leaves=7,
                                    min_child_samples=10).fit(panel.head(180))
    windows = panel.values[:, :180].copy()
    windows[3] = np.nan  # never seen: zeros
    ends = np.where(np.arange(40) % 3 == 0, panel.dates[179], panel.dates[178])
    want = {}
    for day in np.unique(ends):
        rows = np.flatnonzero(ends == day)
        want[day] = (rows, model.predict(windows[rows], 7, end_days=day))
    for sorted_from in (1, 10**9):  # the boosters over sorted rows, and in the given order
        monkeypatch.setattr(peer, "SORTED_ROWS", sorted_from)
        got = model.forecast_from(windows, 7, ends)
        for rows, fc in want.values():
            for field in ("daily", "cumulative", "mean"):
                np.testing.assert_array_equal(getattr(got, field)[rows], getattr(fc, field))
