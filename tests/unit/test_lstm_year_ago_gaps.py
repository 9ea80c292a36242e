"""A gap in a series' history a year ago (LSTMConfig.year_ago_gaps): "zero" reads the missing
days as no sales (the year-ago prior then cuts the forecast), "unknown" gives that origin no
year-ago information, "weekday" reads a missing step's weekday over the year-ago level's
days; histories without such a gap get the same inputs in every mode."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from forecasting.lstm.config import LSTMConfig, config_input_dim
from forecasting.lstm.features import (
    YEAR_BASE_DAYS,
    head_inputs,
    year_ago_dim,
    year_ago_features,
    year_ago_span,
)
from forecasting.lstm.year_ago import agrees, year_ago_rows

H, WEEKS = 7, 1


def _span(n: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.poisson(20.0, (n, year_ago_span(H, WEEKS))).astype(float) + 1.0


def test_a_gap_after_the_year_ago_level_reads_as_no_sales_or_as_unknown() -> None:
    span = _span()
    # the level a year ago (its first 21 days), then no row (Rossmann's 2014-07 ..): a
    # step reads its weekday 1 week before, on and after its day a year ago
    span[1, YEAR_BASE_DAYS - 7 :] = np.nan
    span[2, :YEAR_BASE_DAYS] = np.nan  # no level: no year-ago information in either mode
    scale = np.full(3, 20.0)
    origin = np.datetime64("2015-07-04")
    zero = year_ago_features(span, scale, origin, H, WEEKS, "zero")
    unknown = year_ago_features(span, scale, origin, H, WEEKS, "unknown")
    assert zero.shape == unknown.shape == (3, year_ago_dim(H))
    # "zero": the level is known (flag 1) and every step's shape is 0, a week of closures
    assert zero[1, -1] == 1.0
    np.testing.assert_array_equal(zero[1, H + 1 : 2 * H + 1], 0.0)
    assert zero[1, H] > 0.0
    # "unknown": that origin reads as a series without a year of history
    np.testing.assert_array_equal(unknown[1], 0.0)
    # the others are untouched
    np.testing.assert_array_equal(zero[[0, 2]], unknown[[0, 2]])
    assert zero[0, -1] == 1.0 and zero[2, -1] == 0.0
    # one step without a day is enough; the head's inputs carry the same block
    part = _span(1, seed=1)
    # steps 1 and 2 (July 5, 6) read days 28, 35 / 29, 36 (their week before is June);
    # step 3 reads 23 too
    part[0, YEAR_BASE_DAYS :] = np.nan
    one = year_ago_features(part, scale[:1], origin, H, WEEKS, "unknown")
    np.testing.assert_array_equal(one, 0.0)
    kept = year_ago_features(part, scale[:1], origin, H, WEEKS, "zero")
    assert kept[0, -1] == 1.0 and kept[0, H + 1] == 0.0 and kept[0, H + 3] > 0.0
    heads = head_inputs(origin, scale[:1], part, horizon=H, calendar="uk",
                        head_calendar=True, annual=False, weeks=WEEKS, gaps="unknown")
    np.testing.assert_array_equal(heads[0, -year_ago_dim(H):], 0.0)
    with pytest.raises(ValueError, match="year_ago_gaps"):
        year_ago_features(span, scale, origin, H, WEEKS, "mean")
    with pytest.raises(ValueError, match="year_ago_gaps"):
        year_ago_rows(span, scale, np.full(3, origin), H, WEEKS, "mean")


def test_weekday_fills_a_missing_step_with_its_weekday_over_the_level() -> None:
    """A store closed on Sundays, with no row after the first 21 days of the year-ago
    level: "weekday" keeps the Sunday a closure (shape 0) and the other days its level's
    weekday means; "zero" read every step as a closure."""
    origin = np.datetime64("2015-07-04")  # a Saturday: step 1 is a Sunday
    days = origin - 391 + np.arange(year_ago_span(H, WEEKS)).astype("timedelta64[D]")
    weekday = (days.astype(np.int64) - 4) % 7  # 0: Monday (1970-01-05 was one)
    span = np.where(weekday == 6, 0.0, 12.0)[None, :]
    span[0, :YEAR_BASE_DAYS][weekday[:YEAR_BASE_DAYS] == 2] = 18.0  # Wednesdays sold more
    span[0, YEAR_BASE_DAYS - 7 :] = np.nan
    scale = np.array([12.0])
    got = year_ago_features(span, scale, origin, H, WEEKS, "weekday")
    zero = year_ago_features(span, scale, origin, H, WEEKS, "zero")
    step_days = origin + np.arange(1, H + 1).astype("timedelta64[D]")
    want = np.where((step_days.astype(np.int64) - 4) % 7 == 6, 0.0,
                    np.where((step_days.astype(np.int64) - 4) % 7 == 2, 18.0, 12.0))
    np.testing.assert_allclose(got[0, :H], want / 12.0)
    level = got[0, H] * 12.0
    np.testing.assert_allclose(got[0, H + 1 : 2 * H + 1], want / level)
    assert got[0, -1] == 1.0 and got[0, 0] == 0.0  # Sunday: still a closure
    np.testing.assert_array_equal(zero[0, :H], 0.0)
    # a step that has its days keeps them
    full = np.where(weekday == 6, 0.0, 12.0)[None, :]
    np.testing.assert_array_equal(year_ago_features(full, scale, origin, H, WEEKS, "weekday"),
                                  year_ago_features(full, scale, origin, H, WEEKS, "zero"))


@pytest.mark.parametrize("weeks", [1, 2])
@pytest.mark.parametrize("gaps", ["unknown", "weekday"])
def test_the_fast_rows_equal_the_definition_with_gaps(weeks: int, gaps: str) -> None:
    rng = np.random.default_rng(0)
    horizon, n = 14, 300
    span = rng.poisson(4.0, (n, year_ago_span(horizon, weeks))).astype(float)
    span[rng.random(span.shape) < 0.2] = np.nan
    span[:20, :YEAR_BASE_DAYS] = np.nan
    span[20:60, YEAR_BASE_DAYS - 14 :] = np.nan  # a gap a year ago, after the level
    scale = rng.gamma(2.0, 1.0, n) + 0.01
    origins = np.datetime64("2015-06-01") + np.arange(n).astype("timedelta64[D]")
    fast = year_ago_rows(span, scale, origins, horizon, weeks, gaps)
    np.testing.assert_allclose(fast, year_ago_features(span, scale, origins, horizon,
                                                       weeks, gaps), rtol=1e-12, atol=1e-12)
    zero = year_ago_features(span, scale, origins, horizon, weeks, "zero")
    changed = np.any(fast != zero, axis=1)
    # the gap rows, and rows whose random missing days left a step without a day; rows
    # without a year-ago level and every other row untouched
    assert changed[20:60].all() and not changed[:20].any()
    if gaps == "unknown":
        np.testing.assert_array_equal(fast[changed], 0.0)
    else:
        assert np.all(fast[changed, -1] == 1.0)  # the year-ago level stays known
    assert not changed[60:].all()
    assert agrees(horizon, weeks, gaps)


def test_off_keeps_the_config_json_and_the_durable_fingerprint_of_before() -> None:
    from forecasting.lstm.durable import weights_fingerprint

    off = LSTMConfig(year_ago_gaps="zero", data_holidays=False)  # (the inputs of before both)
    assert "year_ago_gaps" not in off.to_json()
    # an artifact written before the field (no key) reads gaps as zeros, as it was trained
    assert LSTMConfig.from_json(off.to_json()).year_ago_gaps == "zero"
    on = dataclasses.replace(off, year_ago_gaps="unknown")
    assert LSTMConfig.from_json(on.to_json()) == on
    weights = {"w": np.arange(6, dtype=np.float32)}
    # the value main computed before the field existed (tests/unit/test_lstm_promo.py)
    assert weights_fingerprint(off, weights, 0.25, 1.5) == 11083735363336708754
    assert weights_fingerprint(on, weights, 0.25, 1.5) != 11083735363336708754


def test_both_backends_read_the_gap_alike_and_only_unknown_moves_the_forecast() -> None:
    """The torch forecaster and the numpy one (the stream's) give the same forecast for a
    state with a gap a year ago; the gap moves the forecast only with "unknown"."""
    torch = pytest.importorskip("torch")
    from forecasting.lstm.forecaster import LSTMForecaster
    from forecasting.lstm.model import LSTMNet
    from forecasting.lstm.numpy_forecaster import NumpyLSTMForecaster

    end = np.datetime64("2015-07-04")
    windows = np.random.default_rng(3).poisson(30.0, (4, 420)).astype(float) + 1.0
    # series 0, 1: no rows for the days a year before the forecast days (and a month on)
    first_gap = windows.shape[1] - 364
    windows[:2, first_gap : first_gap + 40] = np.nan
    means = {}
    for gaps in ("zero", "unknown", "weekday"):
        torch.manual_seed(0)
        cfg = LSTMConfig(horizon=H, hidden=8, head_hidden=8, year_ago_weeks=WEEKS,
                         head_month="none", year_ago_gaps=gaps)
        net = LSTMNet(config_input_dim(cfg), cfg).eval()
        weights = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
        served = LSTMForecaster(net, device="cpu", end_day=lambda: end)
        plain = NumpyLSTMForecaster(cfg, weights, end_day=lambda: end)
        fc = served.forecast(served.encode(windows, end), H)
        other = plain.forecast(plain.encode(windows, end), H)
        np.testing.assert_allclose(other.mean, fc.mean, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(other.daily, fc.daily, rtol=1e-4, atol=1e-3)
        means[gaps] = fc.mean
    for gaps in ("unknown", "weekday"):
        np.testing.assert_array_equal(means["zero"][2:], means[gaps][2:])
        assert not np.allclose(means["zero"][:2], means[gaps][:2])
