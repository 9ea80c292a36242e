"""The micro-batcher: batches close on size and on time, rows go back to the right caller,
errors reach the callers they belong to, keyed requests take the incremental path."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from forecasting import Forecaster, InvalidWindowError, MovingAverage, QuantileForecast
from forecasting.inferencer import Inferencer
from schemas import sku_key


class Recording(MovingAverage):
    """MovingAverage that records the batch sizes it was called with."""

    def __init__(self) -> None:
        super().__init__(window=7)
        self.calls: list[int] = []
        self.threads: list[int] = []

    def _predict(self, windows: np.ndarray, horizon: int,
                 end_days: object) -> QuantileForecast:
        self.calls.append(windows.shape[0])
        self.threads.append(threading.get_ident())
        return super()._predict(windows, horizon, end_days)


class Broken(Forecaster):
    name = "broken"

    def _predict(self, windows: np.ndarray, horizon: int,
                 end_days: object) -> QuantileForecast:
        raise RuntimeError("device lost")


def _rows(n: int, length: int = 21, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).poisson(3.0, (n, length)).astype(float)


async def test_a_batch_closes_when_it_is_full() -> None:
    model = Recording()
    async with Inferencer(model, max_batch=4, max_wait_ms=10_000) as inf:
        t0 = time.monotonic()
        results = await asyncio.gather(*(inf.predict(_rows(1, seed=i), 7) for i in range(4)))
        assert time.monotonic() - t0 < 5.0  # far below max_wait_ms: closed on size
    assert model.calls == [4]
    for i, fc in enumerate(results):
        expected = MovingAverage(window=7).predict(_rows(1, seed=i), 7)
        np.testing.assert_allclose(fc.daily, expected.daily)


async def test_a_batch_closes_after_max_wait() -> None:
    model = Recording()
    async with Inferencer(model, max_batch=1000, max_wait_ms=80) as inf:
        t0 = time.monotonic()
        a, b = await asyncio.gather(inf.predict(_rows(2), 7), inf.predict(_rows(3, 10), 3))
        waited = time.monotonic() - t0
    assert 0.07 <= waited < 5.0
    assert model.calls == [5]
    assert a.daily.shape == (2, 7, 9) and b.daily.shape == (3, 3, 9)
    # The shorter window was left-padded with NaN ("no history"): same answer as alone.
    np.testing.assert_allclose(b.daily, MovingAverage(window=7).predict(_rows(3, 10), 3).daily)


async def test_a_large_request_at_an_idle_batcher_runs_at_once_on_the_callers_thread() -> None:
    model = Recording()
    async with Inferencer(model, max_batch=1000, max_wait_ms=10_000, inline_rows=8) as inf:
        t0 = time.monotonic()
        fc = await inf.predict(_rows(8), 7)
        assert time.monotonic() - t0 < 5.0  # no max_wait
        assert model.threads == [threading.get_ident()]  # no hop to the worker thread
        # below inline_rows, concurrent requests still share a batch (in the worker thread)
        await asyncio.gather(*(inf.predict(_rows(1, seed=i), 7) for i in range(3)),
                             inf.predict(_rows(8), 7))
    assert model.calls == [8, 11]
    assert model.threads[1] != threading.get_ident()
    np.testing.assert_allclose(fc.daily, MovingAverage(window=7).predict(_rows(8), 7).daily)


class Gated(Recording):
    """Recording whose forward passes wait until `gate` is set (a batch held in flight)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def _predict(self, windows: np.ndarray, horizon: int,
                 end_days: object) -> QuantileForecast:
        self.entered.set()
        assert self.gate.wait(10.0)
        return super()._predict(windows, horizon, end_days)


async def test_a_large_request_waits_for_the_batch_in_flight() -> None:
    model = Gated()
    async with Inferencer(model, max_batch=1000, max_wait_ms=0, inline_rows=8) as inf:
        small = asyncio.ensure_future(inf.predict(_rows(1), 7))
        assert await asyncio.to_thread(model.entered.wait, 10.0)  # in the worker thread
        # that batch owns the keyed states meanwhile: the large request queues behind it
        large = asyncio.ensure_future(inf.predict(_rows(8), 7))
        await asyncio.sleep(0.05)
        assert not large.done()
        model.gate.set()
        await asyncio.gather(small, large)
    assert model.calls == [1, 8]
    assert threading.get_ident() not in model.threads


async def test_requests_beyond_max_batch_go_to_the_next_batch() -> None:
    model = Recording()
    async with Inferencer(model, max_batch=3, max_wait_ms=20) as inf:
        await asyncio.gather(*(inf.predict(_rows(2, seed=i), 7) for i in range(3)))
    assert sum(model.calls) == 6 and max(model.calls) <= 3


async def test_a_model_error_reaches_every_caller_of_the_batch() -> None:
    async with Inferencer(Broken(), max_batch=2, max_wait_ms=1000) as inf:
        results = await asyncio.gather(inf.predict(_rows(1), 7), inf.predict(_rows(1), 7),
                                       return_exceptions=True)
    assert all(isinstance(r, RuntimeError) and "device lost" in str(r) for r in results)


async def test_an_invalid_request_fails_only_its_caller() -> None:
    bad = _rows(1)
    bad[0, 3] = -1.0
    async with Inferencer(Recording(), max_batch=2, max_wait_ms=30) as inf:
        good, err = await asyncio.gather(inf.predict(_rows(2), 7), inf.predict(bad, 7),
                                         return_exceptions=True)
    assert isinstance(good, QuantileForecast) and good.n_series == 2
    assert isinstance(err, InvalidWindowError)


async def test_swap_rolls_in_a_new_model_version() -> None:
    async with Inferencer(MovingAverage(), max_wait_ms=1) as inf:
        assert inf.model_version == "moving_average-1"
        inf.swap(Recording())
        await inf.predict(_rows(1), 2)
        assert inf.model_version == "moving_average-1"
        assert isinstance(inf.forecaster, Recording)


async def test_keyed_requests_step_the_carried_state_once_per_new_bucket() -> None:
    torch = pytest.importorskip("torch")
    from forecasting.lstm import LSTMConfig, LSTMForecaster, LSTMNet
    from forecasting.lstm.features import INPUT_DIM

    torch.manual_seed(0)
    cfg = LSTMConfig(horizon=7, hidden=16, head_hidden=16)
    model = LSTMForecaster(LSTMNet(INPUT_DIM, cfg), device="cpu")
    series = _rows(6, length=30)
    series[:2, :10] = np.nan
    keys = [sku_key(f"sku{i}", "dc") for i in range(6)]
    day = np.datetime64("2011-05-01")
    async with Inferencer(model, max_batch=64, max_wait_ms=1) as inf:
        await inf.predict_keyed(keys, series[:, :25], 7, day)
        assert inf.stats.full == 6 and inf.stats.incremental == 0
        for t in range(25, 30):
            fc = await inf.predict_keyed(keys, series[:, : t + 1], 7, day + (t - 24))
        assert inf.stats.incremental == 30
    full = model.predict(series, 7, end_days=day + 5)
    np.testing.assert_allclose(fc.daily, full.daily, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fc.cumulative, full.cumulative, rtol=1e-5, atol=1e-5)


def _lstm(seed: int):  # type: ignore[no-untyped-def]
    torch = pytest.importorskip("torch")
    from forecasting.lstm import LSTMConfig, LSTMForecaster, LSTMNet
    from forecasting.lstm.features import INPUT_DIM

    torch.manual_seed(seed)
    cfg = LSTMConfig(horizon=7, hidden=16, head_hidden=16)
    return LSTMForecaster(LSTMNet(INPUT_DIM, cfg), device="cpu")


async def test_a_keyed_batch_mixing_steps_repeats_new_and_stale_keys_matches_recompute() -> None:
    model = _lstm(1)
    series = _rows(8, length=30, seed=3)
    keys = [f"k{i}" for i in range(8)]
    day = np.datetime64("2011-05-01")
    async with Inferencer(model, max_batch=64, max_wait_ms=1, max_states=7) as inf:
        await inf.predict_keyed(keys[:6], series[:6, :25], 7, day)
        # k0, k1: one bucket on (step); k2, k3: same day again; k4: two buckets on (two
        # steps, from the window); k6, k7: new, one more than max_states: k5, used least
        # recently, is dropped.
        rows = [0, 1, 2, 3, 4, 6, 7]
        lengths = [26, 26, 25, 25, 27, 26, 26]
        ends = [day + (n - 25) for n in lengths]
        windows = np.full((7, 27), np.nan)
        for r, (i, n) in enumerate(zip(rows, lengths, strict=True)):
            windows[r, 27 - n :] = series[i, :n]
        fc = await inf.predict_keyed([keys[i] for i in rows], windows, 7, np.array(ends))
        assert inf.stats.incremental == 5 and inf.stats.full == 6 + 2
        assert inf._slots is not None and len(inf._slots[1]) == 7
        assert "k5" not in inf._slots[1]
    expected = model.predict(windows, 7, end_days=np.array(ends))
    np.testing.assert_allclose(fc.daily, expected.daily, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fc.cumulative, expected.cumulative, rtol=1e-5, atol=1e-5)


async def test_swap_drops_carried_states_and_the_new_model_re_encodes() -> None:
    old, new = _lstm(1), _lstm(2)
    series = _rows(4, length=20, seed=4)
    keys = [f"k{i}" for i in range(4)]
    day = np.datetime64("2011-05-01")
    async with Inferencer(old, max_batch=64, max_wait_ms=1) as inf:
        await inf.predict_keyed(keys, series[:, :19], 7, day - 1)
        inf.swap(new)
        fc = await inf.predict_keyed(keys, series, 7, day)
        assert inf.stats.full == 8 and inf.stats.incremental == 0
        again = await inf.predict_keyed(keys, series, 7, day)  # now carried: same bucket
        assert inf.stats.incremental == 4
    expected = new.predict(series, 7, end_days=day)
    np.testing.assert_allclose(fc.daily, expected.daily, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(again.daily, expected.daily, rtol=1e-5, atol=1e-5)


async def test_keyed_steps_with_year_ago_inputs_carry_the_day_ring() -> None:
    model = _lstm(3)
    assert model.config.year_ago and model.config.year_ago_prior
    model.cold_start_warmup_days = None  # exact cold starts (test_lstm_warmup: bounded ones)
    rng = np.random.default_rng(9)
    days = np.arange(430)
    series = rng.poisson(4.0 + 2.0 * np.sin(2 * np.pi * days / 365.25), (5, 430)).astype(float)
    series[0, :100] = np.nan  # less than a year of history at the end
    keys = [f"y{i}" for i in range(5)]
    day = np.datetime64("2011-12-20")  # the forecast weeks cross a month end
    async with Inferencer(model, max_batch=64, max_wait_ms=1) as inf:
        await inf.predict_keyed(keys, series[:, :420], 7, day)
        for t in range(420, 430):
            fc = await inf.predict_keyed(keys, series[:, : t + 1], 7, day + (t - 419))
        assert inf.stats.incremental == 50 and inf.stats.full == 5
    full = model.predict(series, 7, end_days=day + 10)
    np.testing.assert_allclose(fc.daily, full.daily, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fc.mean, full.mean, rtol=1e-5, atol=1e-5)
    short = model.predict(series[:, -300:], 7, end_days=day + 10)  # without the year-ago days
    assert not np.allclose(short.mean[1:], full.mean[1:])


async def test_on_loop_requests_of_one_turn_share_one_pass_on_the_loops_thread() -> None:
    model = Recording()
    async with Inferencer(model, max_batch=2, max_wait_ms=10_000, on_loop=True) as inf:
        t0 = time.monotonic()
        # three tasks' requests in one turn of the loop: one forward pass, not max_batch's
        a, b, c = await asyncio.gather(inf.predict(_rows(2), 7), inf.predict(_rows(3, seed=1), 7),
                                       inf.predict(_rows(1, seed=2), 7))
        assert time.monotonic() - t0 < 5.0  # no max_wait
        later = await inf.predict(_rows(4, seed=3), 7)  # the next turn: the next pass
        assert inf._task is None  # no batching loop, no worker thread
    assert model.calls == [6, 4]
    assert model.threads == [threading.get_ident()] * 2
    for got, rows in ((a, _rows(2)), (b, _rows(3, seed=1)), (c, _rows(1, seed=2)),
                      (later, _rows(4, seed=3))):
        np.testing.assert_allclose(got.daily, MovingAverage(window=7).predict(rows, 7).daily)


async def test_on_loop_a_model_error_reaches_every_caller_of_the_pass() -> None:
    async with Inferencer(Broken(), on_loop=True) as inf:
        results = await asyncio.gather(inf.predict(_rows(1), 7), inf.predict(_rows(2), 7),
                                       return_exceptions=True)
        assert [type(r) for r in results] == [RuntimeError, RuntimeError]
        assert (await asyncio.gather(inf.predict(_rows(1), 7), return_exceptions=True))[0]


@pytest.mark.parametrize("on_loop", [True, False])
async def test_a_key_is_never_twice_in_one_pass_and_its_later_request_sees_the_earlier(
        on_loop: bool) -> None:
    model = _lstm(5)
    # a short warm-up: a state stepped on from the first request is not what encoding the
    # window anew gives, so the forecasts below tell which one "a" got
    model.cold_start_warmup_days = 5
    series = _rows(4, length=30, seed=6)
    day = np.datetime64("2011-05-01")
    first = (["a", "b"], series[:2, :29], day - 1)
    second = (["a", "c"], series[[0, 2], :30], day)  # a: one bucket after `first`
    third = (["d"], series[3:, :30], day)

    async def ask(inf: Inferencer, request: tuple) -> QuantileForecast:
        keys, windows, end = request
        return await inf.predict_keyed(keys, windows, 7, end)

    async with Inferencer(model, max_wait_ms=50, on_loop=on_loop) as inf:
        together = await asyncio.gather(*(ask(inf, r) for r in (first, second, third)))
        # `second` repeats "a": it closes the first pass; `third` goes on with it
        assert inf.stats.batch_sizes == [2, 3]
        assert inf.stats.full == 4 and inf.stats.incremental == 1  # a: stepped, not re-encoded
    async with Inferencer(model, max_wait_ms=1) as inf:  # one request at a time
        alone = [await ask(inf, r) for r in (first, second, third)]
    for got, expected in zip(together, alone, strict=True):  # float noise of batch sizes
        np.testing.assert_allclose(got.daily, expected.daily, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got.mean, expected.mean, rtol=1e-5, atol=1e-5)
    re_encoded = model.predict(np.stack([series[0, 25:30], series[2, 25:30]]), 7, end_days=day)
    assert np.abs(together[1].mean - re_encoded.mean).max() > 1e-3


async def test_a_warm_up_leaves_no_state_behind() -> None:
    model = _lstm(6)
    series = _rows(3, length=20, seed=7)
    keys = ["k0", "k1", "k2"]
    day = np.datetime64("2011-05-01")
    async with Inferencer(model, on_loop=True) as inf:
        inf.warm_up(rows=40)
        assert inf._slots is None and inf.stats.batches == 0
        fc = await inf.predict_keyed(keys, series, 7, day)
        assert inf.stats.full == 3 and inf._slots is not None and len(inf._slots[1]) == 3
    expected = model.predict(series, 7, end_days=day)
    np.testing.assert_allclose(fc.daily, expected.daily, rtol=1e-5, atol=1e-5)
    async with Inferencer(Recording(), on_loop=True) as plain:
        plain.warm_up()  # nothing to warm: no call
        assert plain.forecaster.calls == []  # type: ignore[attr-defined]
