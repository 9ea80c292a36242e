"""Forecast-time year-ago inputs: the matrix-product features equal the definition, and
the day ring steps in place with one write per series or copies, as asked."""

from __future__ import annotations

import numpy as np
import pytest

from forecasting.lstm.features import (
    RING_DAYS,
    YEAR_BASE_DAYS,
    DayRing,
    year_ago_features,
    year_ago_span,
)
from forecasting.lstm.year_ago import year_ago_rows


@pytest.mark.parametrize("weeks", [1, 2, 3])
def test_year_ago_rows_equal_the_feature_definition_at_any_origin(weeks: int) -> None:
    rng = np.random.default_rng(0)
    horizon, n = 14, 400
    span = rng.poisson(4.0, (n, year_ago_span(horizon, weeks))).astype(float)
    span[rng.random(span.shape) < 0.2] = np.nan  # missing days
    span[:20, :YEAR_BASE_DAYS] = np.nan  # no year-ago level
    span[20:30] = np.nan  # nothing at all
    span[30:40] *= 1000.0  # spikes: clipped
    scale = rng.gamma(2.0, 1.0, n) + 0.01
    # every day of a year and a bit: month ends, 28- and 29-day Februaries
    origins = np.datetime64("2011-12-20") + np.arange(n).astype("timedelta64[D]")
    np.testing.assert_array_equal(year_ago_rows(span, scale, origins, horizon, weeks),
                                  year_ago_features(span, scale, origins, horizon, weeks))
    one_day = np.full(n, np.datetime64("2012-02-27"))  # one origin: one product
    np.testing.assert_array_equal(year_ago_rows(span, scale, one_day, horizon, weeks),
                                  year_ago_features(span, scale, one_day, horizon, weeks))


def test_the_ring_steps_in_place_with_one_write_per_series_or_copies() -> None:
    rng = np.random.default_rng(1)
    windows = rng.poisson(3.0, (4, 500)).astype(float)
    ring = DayRing.from_windows(windows[:, :450])
    before = ring.values.copy()
    copied = ring.push(windows[:, 450])
    np.testing.assert_array_equal(ring.values, before)  # push leaves the old ring
    values = ring.values
    same = ring.push_(windows[:, 450])
    assert same is ring and ring.values is values  # push_ writes into the same array
    assert int((ring.values != before).sum()) <= 4  # ... one slot per series
    for t in range(451, 500):
        ring.push_(windows[:, t])
        copied = copied.push(windows[:, t])
    expected = DayRing.from_windows(windows).span(RING_DAYS)
    np.testing.assert_array_equal(ring.span(RING_DAYS), expected)
    np.testing.assert_array_equal(copied.span(RING_DAYS), expected)
    np.testing.assert_array_equal(ring.span(RING_DAYS)[:, -1], windows[:, -1])


def test_a_ring_view_of_shared_rows_steps_those_rows_only() -> None:
    rng = np.random.default_rng(2)
    store = DayRing.from_windows(rng.poisson(3.0, (6, 400)).astype(float))
    rows = np.array([4, 1], dtype=np.intp)
    view = DayRing(store.values, store.pos[rows], rows)
    np.testing.assert_array_equal(view.span(50), store.span(50)[rows])
    untouched = store.values[[0, 2, 3, 5]].copy()
    stepped = view.push(np.array([7.0, 8.0]))  # a copy: the store is left as it was
    np.testing.assert_array_equal(view.span(RING_DAYS), store.span(RING_DAYS)[rows])
    view.push_(np.array([7.0, 8.0]))  # in place: rows 4 and 1 of the store
    np.testing.assert_array_equal(stepped.span(RING_DAYS), view.span(RING_DAYS))
    np.testing.assert_array_equal(store.values[[0, 2, 3, 5]], untouched)
    assert view.span(RING_DAYS)[:, -1].tolist() == [7.0, 8.0]
    np.testing.assert_array_equal(view.take(np.array([1])).span(10), view.span(10)[1:])
    both = DayRing.concat([view, store])
    np.testing.assert_array_equal(both.span(RING_DAYS)[2:], store.span(RING_DAYS))


def test_should_the_fast_rows_part_from_the_definition_the_forecaster_uses_the_definition(
        monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    from forecasting.lstm import LSTMConfig, LSTMForecaster, LSTMNet, year_ago
    from forecasting.lstm.features import INPUT_DIM

    end = np.datetime64("2011-12-20")
    torch.manual_seed(0)
    model = LSTMForecaster(LSTMNet(INPUT_DIM, LSTMConfig(horizon=7, hidden=8, head_hidden=8)),
                           device="cpu", end_day=lambda: end)
    windows = np.random.default_rng(3).poisson(4.0, (5, 420)).astype(float)
    state = model.encode(windows, end)
    year_ago.agrees.cache_clear()
    assert year_ago.agrees(7)
    before = model.forecast(state, 7).mean
    changed = year_ago.year_ago_features  # a definition that moved on (here: doubled shape)

    def doubled(*args: object) -> np.ndarray:
        out = changed(*args)  # type: ignore[arg-type]
        out[..., 8:15] *= 2.0
        return out

    monkeypatch.setattr(year_ago, "year_ago_features", doubled)
    monkeypatch.setattr("forecasting.lstm.serving.year_ago_features", doubled)
    year_ago.agrees.cache_clear()
    try:
        assert not year_ago.agrees(7)
        after = model.forecast(state, 7).mean  # through `doubled`, not the stale fast rows
        assert not np.allclose(after, before)
    finally:
        year_ago.agrees.cache_clear()
