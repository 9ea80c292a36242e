"""LSTM cold start with a bounded warm-up: `encode(..., warmup_days=W)` and its keyed callers."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from forecasting.errors import InvalidWindowError  # noqa: E402
from forecasting.inferencer import Inferencer  # noqa: E402
from forecasting.lstm import LSTMConfig, LSTMForecaster, LSTMNet  # noqa: E402
from forecasting.lstm.features import INPUT_DIM, year_ago_span  # noqa: E402
from forecasting.lstm.forecaster import SeriesState  # noqa: E402

torch.set_num_threads(1)
END = np.datetime64("2011-12-20")  # the forecast weeks cross a month end
LENGTH, WARM = 430, 6  # a short warm-up: the untrained net forgets within weeks


def _model(seed: int = 0) -> LSTMForecaster:
    torch.manual_seed(seed)
    cfg = LSTMConfig(horizon=7, hidden=8, head_hidden=8)
    assert cfg.year_ago and cfg.year_ago_prior  # the year-ago head this is about
    return LSTMForecaster(LSTMNet(INPUT_DIM, cfg), device="cpu", end_day=lambda: END)


def _windows(seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    days = np.arange(LENGTH)
    rate = 5.0 + 3.0 * np.sin(2 * np.pi * days / 365.25)[None, :] + rng.gamma(2.0, 1.0, (8, 1))
    w: np.ndarray = rng.poisson(rate).astype(float)
    w[0, :50] = np.nan  # started long before the warm-up
    w[1, : LENGTH - 3] = np.nan  # started inside the warm-up: from its first observation
    w[2, LENGTH - 2] = np.nan  # a missing bucket inside the warm-up
    w[3, 300] = np.nan  # a missing bucket a year before the forecast weeks
    w[4, LENGTH - WARM :] = np.nan  # history, but none in the last W days
    w[5] = np.nan  # no history at all
    return w


def _reset_before_warmup(model: LSTMForecaster, w: np.ndarray, days: int) -> SeriesState:
    """The reference by another path: the exact state `days` days before the end with its
    recurrent part (h, c) reset to zero, then stepped bucket by bucket with `update`."""
    split = w.shape[1] - days
    before = model.encode(w[:, :split], END - np.timedelta64(days, "D"))
    state = SeriesState(torch.zeros_like(before.h), torch.zeros_like(before.c), before.scale,
                        before.last_day, before.ring)
    for t in range(split, w.shape[1]):
        state = model.update(state, w[:, t])
    return state


@pytest.mark.parametrize("loop_min_rows", [1, 10**9])  # the packed loop / torch's LSTM
def test_warmup_equals_the_exact_state_with_h_and_c_reset_w_days_before_the_end(
        monkeypatch: pytest.MonkeyPatch, loop_min_rows: int) -> None:
    from forecasting.lstm import forecaster

    monkeypatch.setattr(forecaster, "_LOOP_MIN_ROWS", loop_min_rows)
    model = _model()
    w = _windows()
    warm = model.encode(w, END, warmup_days=WARM)
    ref = _reset_before_warmup(model, w, WARM)
    whole = model.encode(w, END)  # exact, whole window
    torch.testing.assert_close(warm.h, ref.h, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(warm.c, ref.c, atol=1e-5, rtol=1e-5)
    assert warm.last_day.tolist() == whole.last_day.tolist()
    # The inputs are the exact path's: the running scale and the day ring (year-ago inputs)
    # saw the whole window, not only its last W days.
    np.testing.assert_allclose(warm.scale.level, whole.scale.level)
    np.testing.assert_array_equal(warm.scale.count, whole.scale.count)
    hidden = w.copy()
    hidden[:, : LENGTH - WARM] = np.nan
    assert not np.allclose(model.encode(hidden, END).scale.level[0], warm.scale.level[0])
    assert warm.ring is not None and whole.ring is not None
    span = year_ago_span(7)
    np.testing.assert_array_equal(warm.ring.span(span), whole.ring.span(span))
    got, expected = model.forecast(warm, 7), model.forecast(ref, 7)
    np.testing.assert_allclose(got.daily, expected.daily, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.cumulative, expected.cumulative, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.mean, expected.mean, rtol=1e-5, atol=1e-5)
    # Only the recurrent state's start differs from the exact path: for a series that
    # started inside the warm-up it is the exact forecast, for an old one it is not.
    exact = model.forecast(whole, 7)
    np.testing.assert_allclose(got.mean[1], exact.mean[1], rtol=1e-5, atol=1e-5)
    assert not np.allclose(exact.mean[0], got.mean[0])
    assert torch.all(warm.h[:, 4] != 0) and np.all(got.mean[4] > 0)  # history, none lately
    assert torch.all(warm.h[:, 5] == 0) and np.all(got.mean[5] == 0)  # no history


@pytest.mark.parametrize("days", [LENGTH, LENGTH + 1, 10 * LENGTH])
def test_a_warmup_as_long_as_the_window_is_the_exact_encode(days: int) -> None:
    model = _model()
    w = _windows(6)
    warm, exact = model.encode(w, END, warmup_days=days), model.encode(w, END)
    assert torch.equal(warm.h, exact.h) and torch.equal(warm.c, exact.c)
    np.testing.assert_array_equal(warm.scale.level, exact.scale.level)
    assert warm.ring is not None and exact.ring is not None
    np.testing.assert_array_equal(warm.ring.values, exact.ring.values)


def test_updates_after_a_warmup_go_on_from_it() -> None:
    model = _model()
    w = _windows(7)
    state = model.encode(w[:, :-5], END - np.timedelta64(5, "D"), warmup_days=WARM)
    for t in range(LENGTH - 5, LENGTH):
        state = model.update(state, w[:, t], consume=True)
    # The same as a warm-up of W + 5 days over the whole window.
    ref = model.encode(w, END, warmup_days=WARM + 5)
    torch.testing.assert_close(state.h, ref.h, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(model.forecast(state, 7).daily, model.forecast(ref, 7).daily,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad", [0, -7, 2.5, True, "56"])
def test_a_warmup_that_is_not_a_positive_day_count_is_a_clear_error(bad: object) -> None:
    with pytest.raises(InvalidWindowError, match=r"warmup_days must be .* >= 1.*got"):
        _model().encode(_windows(), END, warmup_days=bad)  # type: ignore[arg-type]


async def test_the_keyed_inferencer_cold_starts_with_the_models_warmup() -> None:
    model = _model(3)
    assert model.cold_start_warmup_days is not None
    model.cold_start_warmup_days = WARM
    w = _windows(8)
    keys = [f"k{i}" for i in range(w.shape[0])]
    async with Inferencer(model, max_batch=64, max_wait_ms=1) as inf:
        cold = await inf.predict_keyed(keys, w[:, :-1], 7, END - np.timedelta64(1, "D"))
        stepped = await inf.predict_keyed(keys, w, 7, END)
        assert inf.stats.full == 8 and inf.stats.incremental == 8
    expected = model.forecast(model.encode(w[:, :-1], END - np.timedelta64(1, "D"),
                                           warmup_days=WARM), 7)
    np.testing.assert_allclose(cold.daily, expected.daily, rtol=1e-5, atol=1e-5)
    then = model.forecast(model.encode(w, END, warmup_days=WARM + 1), 7)
    np.testing.assert_allclose(stepped.daily, then.daily, rtol=1e-5, atol=1e-5)
    exact = model.predict(w, 7, end_days=END)  # the whole window: differs for old series
    assert not np.allclose(stepped.mean[0], exact.mean[0])


def test_the_inference_bench_measures_the_warmup_next_to_the_exact_full_window() -> None:
    from forecasting.lstm.bench import run_inference_bench

    out = run_inference_bench(batch_sizes=(3,), window=40, device="cpu", seconds=0.01,
                              requests=8, warmup_days=14)
    (row,) = out["results"]["cpu"]["by_batch"]
    assert out["warmup_days"] == 14
    for key in ("full_window", "full_window_warmup"):
        assert row[f"{key}_series_per_s"] > 0 and row[f"{key}_series_per_cpu_s"] > 0
    with pytest.raises(InvalidWindowError, match="warmup_days"):
        run_inference_bench(batch_sizes=(3,), window=40, device="cpu", warmup_days=0)


@pytest.mark.parametrize("memory", [1, 3, 56])
def test_the_vectorised_running_scale_is_scale_step_bit_for_bit(memory: int) -> None:
    from forecasting.lstm.features import ScaleState, running_scales, scale_step

    w = _windows(9)[:, :80] * 1.37  # late starts, an empty row; not integers
    w[2, 60:63] = np.nan  # a gap
    state = ScaleState.empty(w.shape[0])
    expected = np.stack([scale_step(state, w[:, t], memory) for t in range(w.shape[1])], 1)
    scales, final = running_scales(w, memory)
    np.testing.assert_array_equal(scales, expected)
    np.testing.assert_array_equal(final.level, state.level)
    np.testing.assert_array_equal(final.count, state.count)
    empty, none = running_scales(np.empty((4, 0)), memory)
    assert empty.shape == (4, 0) and np.all(none.count == 0) and np.all(none.level == 0)
