"""Async micro-batcher shared by a worker's agents: many small requests, one forward pass.

Requests queue; a batch closes when it holds `max_batch` series or `max_wait_ms` after its
first request, whichever comes first; the model runs once on the whole batch (in one
worker thread, so the event loop keeps consuming) and each caller's future gets its rows.
`Inferencer.predict` is a `streams.processor.PredictFn`. `predict_keyed` adds incremental
inference for an `IncrementalForecaster` (the LSTM), which the inferencer recognises once,
when it is given the model: an SKU whose state is one bucket behind costs one recurrent step
(the states of all keys live in one store from the model's `keyed_states`); an unknown or
stale SKU (a new worker, a rebalance, a new model version) is encoded from its window, over
the model's `cold_start_warmup_days` (the LSTM's bounded warm-up; None: the whole window).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import numpy as np
from numpy.typing import ArrayLike

from forecasting._numeric import FloatArray
from forecasting.base import Forecaster, IncrementalForecaster, KeyedStates, QuantileForecast
from forecasting.errors import InvalidWindowError

__all__ = ["Inferencer", "InferencerStats"]

ONE_DAY = np.timedelta64(1, "D")


@dataclass
class _Request:
    windows: FloatArray
    horizon: int
    future: asyncio.Future[QuantileForecast]
    keys: Sequence[str] | None = None
    end_days: np.ndarray | None = None
    arrived: float = 0.0  # time.monotonic() when queued


@dataclass
class InferencerStats:
    """Counters: batches run, series forecast, and how many took the incremental path."""

    batches: int = 0
    series: int = 0
    incremental: int = 0
    full: int = 0
    batch_sizes: list[int] = field(default_factory=list)


def _validate(windows: ArrayLike, horizon: int) -> FloatArray:
    arr = np.array(windows, dtype=np.float64)
    if arr.ndim != 2:
        raise InvalidWindowError(f"windows must be 2-D (n_series, window_len), got {arr.shape}")
    if isinstance(horizon, bool) or int(horizon) != horizon or horizon < 1:
        raise InvalidWindowError(f"horizon must be a positive integer, got {horizon!r}")
    # fmin/fmax skip NaN (= no data): two reductions instead of isinf/any/any per request.
    flat = arr.ravel()
    if flat.size and (np.fmin.reduce(flat) < 0.0 or np.fmax.reduce(flat) == np.inf):
        raise InvalidWindowError("windows hold negative or infinite demand")
    return arr


def _left_pad(blocks: Sequence[FloatArray]) -> FloatArray:
    """Stack windows of different lengths; shorter ones get leading NaN (= no history)."""
    lengths = [b.shape[1] for b in blocks]
    length = max(lengths)
    if min(lengths) == length:
        return np.concatenate(blocks)
    out = np.full((sum(b.shape[0] for b in blocks), length), np.nan)
    row = 0
    for b in blocks:
        out[row : row + b.shape[0], length - b.shape[1] :] = b
        row += b.shape[0]
    return out


def _slice(fc: QuantileForecast, rows: slice, horizon: int) -> QuantileForecast:
    # A slice of a validated forecast is valid: no copy, no re-check per request.
    return QuantileForecast.trusted(fc.levels, fc.daily[rows, :horizon],
                                    fc.cumulative[rows, :horizon], fc.mean[rows, :horizon])


class Inferencer:
    """Micro-batching front of a Forecaster (any registered model; incremental for an
    IncrementalForecaster such as the LSTM).

    Use as `async with Inferencer(model) as inf: fc = await inf.predict(windows, 14)`.
    `swap(model)` rolls in a new model version between batches without a restart (keyed
    states are dropped, as they belong to the old weights). `torch_threads` caps the model's
    intra-op threads (`Forecaster.cap_threads`; 1 is fastest per worker under load on a
    small CPU).
    """

    def __init__(
        self,
        forecaster: Forecaster,
        *,
        max_batch: int = 1024,
        max_wait_ms: float = 5.0,
        max_states: int = 1_000_000,
        torch_threads: int | None = 1,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self._use(forecaster)
        self.max_batch = int(max_batch)
        self.max_wait_ms = float(max_wait_ms)
        self.max_states = int(max_states)
        self.stats = InferencerStats()
        self._pending: list[_Request] = []
        self._pending_rows = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inferencer")
        # (model, its keyed-state store) once keyed requests come: the carried states
        # belong to that model's weights.
        self._slots: tuple[Any, KeyedStates[Any]] | None = None
        if torch_threads is not None:
            forecaster.cap_threads(torch_threads)

    @property
    def model_version(self) -> str:
        """The version every ForecastEvent produced from this inferencer must carry."""
        return self.forecaster.model_version

    def swap(self, forecaster: Forecaster) -> None:
        """Serve `forecaster` from the next batch on; carried states are dropped (the next
        keyed request of each key re-encodes its window with the new weights)."""
        self._use(forecaster)
        self._slots = None

    def _use(self, forecaster: Forecaster) -> None:
        """Serve `forecaster`; whether it carries state is checked here, once per model."""
        self.forecaster = forecaster
        self._incremental: IncrementalForecaster[Any] | None = (
            forecaster if isinstance(forecaster, IncrementalForecaster) else None)

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the batching loop (done lazily by the first request too)."""
        if self._task is None or self._task.done():
            self._wakeup = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="inferencer")

    async def aclose(self) -> None:
        """Flush what is queued, stop the loop, release the worker thread."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._pending:
            await self._flush()
        self._executor.shutdown(wait=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    # --- requests --------------------------------------------------------------------------
    async def predict(self, windows: np.ndarray, horizon: int) -> QuantileForecast:
        """Forecast `windows` (n, T) in the next batch (a PredictFn). Invalid input fails
        here, for this caller only."""
        arr = _validate(windows, horizon)
        return await self._submit(_Request(arr, int(horizon), self._future()))

    async def predict_keyed(self, keys: Sequence[str], windows: np.ndarray, horizon: int,
                            end_days: ArrayLike | None = None) -> QuantileForecast:
        """Like `predict`, for named series whose windows end on `end_days` (default: the
        model's clock). A key whose carried state ends the bucket before costs one recurrent
        step on the window's last value; an unknown or stale key is encoded from its window.
        Models without incremental state just predict (dated)."""
        arr = _validate(windows, horizon)
        if len(keys) != arr.shape[0]:
            raise InvalidWindowError(f"{len(keys)} keys for {arr.shape[0]} windows")
        if end_days is None:
            end_days = self.forecaster.end_day()
        given = np.asarray(end_days, dtype="datetime64[D]")
        ends = np.empty(arr.shape[0], dtype="datetime64[D]")
        ends[:] = given  # broadcasts a single day; a wrong length fails here
        return await self._submit(_Request(arr, int(horizon), self._future(), list(keys), ends))

    def _future(self) -> asyncio.Future[QuantileForecast]:
        return asyncio.get_running_loop().create_future()

    async def _submit(self, request: _Request) -> QuantileForecast:
        if self._task is None or self._task.done():
            await self.start()
        request.arrived = time.monotonic()
        self._pending.append(request)
        self._pending_rows += request.windows.shape[0]
        # Wake the loop when a batch opens or fills, not on every request in between.
        if len(self._pending) == 1 or self._pending_rows >= self.max_batch:
            assert self._wakeup is not None
            self._wakeup.set()
        return await request.future

    # --- the loop --------------------------------------------------------------------------
    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._pending:
                continue
            # max_wait_ms counts from the oldest queued request: requests that queued while
            # the previous batch ran have waited already.
            deadline = self._pending[0].arrived + self.max_wait_ms / 1000.0
            while self._pending_rows < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), left)
                self._wakeup.clear()
            await self._flush()
            if self._pending:
                self._wakeup.set()

    def _take_batch(self) -> list[_Request]:
        rows = taken = 0
        for req in self._pending:
            n = req.windows.shape[0]
            if taken and rows + n > self.max_batch:
                break
            rows += n
            taken += 1
        batch = self._pending[:taken]
        del self._pending[:taken]
        self._pending_rows -= rows
        return batch

    async def _flush(self) -> None:
        batch = self._take_batch()
        live = [r for r in batch if not r.future.cancelled()]
        if not live:
            return
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, self._forward, live)
        except Exception as exc:  # the model failed: every caller of this batch hears it
            for req in live:
                if not req.future.done():
                    req.future.set_exception(exc)
            return
        for req, fc in zip(live, results, strict=True):
            if not req.future.done():
                req.future.set_result(fc)

    def _forward(self, batch: list[_Request]) -> list[QuantileForecast]:
        """One forward pass per kind of request (plain / keyed); runs in the worker thread."""
        horizon = max(r.horizon for r in batch)
        out: dict[int, QuantileForecast] = {}
        plain = [i for i, r in enumerate(batch) if r.keys is None]
        keyed = [i for i, r in enumerate(batch) if r.keys is not None]
        if plain:
            fc = self.forecaster.predict(_left_pad([batch[i].windows for i in plain]), horizon)
            self._split(fc, [batch[i] for i in plain], plain, out)
        if keyed:
            reqs = [batch[i] for i in keyed]
            windows = _left_pad([r.windows for r in reqs])
            keys = [k for r in reqs for k in (r.keys or [])]
            ends = np.concatenate([r.end_days for r in reqs if r.end_days is not None])
            fc = self._keyed_forward(keys, windows, ends, horizon)
            self._split(fc, reqs, keyed, out)
        self.stats.batches += 1
        rows = sum(r.windows.shape[0] for r in batch)
        self.stats.series += rows
        self.stats.batch_sizes.append(rows)
        return [out[i] for i in range(len(batch))]

    @staticmethod
    def _split(fc: QuantileForecast, reqs: list[_Request], idx: list[int],
               out: dict[int, QuantileForecast]) -> None:
        start = 0
        for i, req in zip(idx, reqs, strict=True):
            n = req.windows.shape[0]
            out[i] = _slice(fc, slice(start, start + n), req.horizon)
            start += n

    def _keyed_forward(self, keys: list[str], windows: FloatArray, ends: np.ndarray,
                       horizon: int) -> QuantileForecast:
        model = self._incremental
        if model is None or len(set(keys)) != len(keys):
            return self.forecaster.predict(windows, horizon, end_days=ends)
        store = self._slots_for(model)
        slots, new = store.slots(keys)
        last = store.last_day[slots]
        step = ~new & (last == ends - ONE_DAY)  # one bucket behind: one recurrent step
        same = ~new & (last == ends)  # already at this bucket: the state as it is
        fresh = ~(step | same)  # unknown or stale: encode the window
        if step.all():
            # consume: the store keeps only the new state (a day ring steps in place)
            state = model.update(store.gather(slots), windows[:, -1], ends, consume=True)
            store.scatter(slots, state)
        else:
            if step.any():
                rows = slots[step]
                store.scatter(rows, model.update(store.gather(rows), windows[step, -1],
                                                 ends[step], consume=True))
            if fresh.any():  # a cold start: bounded by the model's warm-up (if it has one)
                encoded = model.encode(windows[fresh], ends[fresh],
                                       warmup_days=model.cold_start_warmup_days)
                store.scatter(slots[fresh], encoded)
            state = store.gather(slots)
        n_fresh = int(fresh.sum())
        self.stats.incremental += len(keys) - n_fresh
        self.stats.full += n_fresh
        fc: QuantileForecast = model.forecast(state, horizon)
        return fc

    def _slots_for(self, model: IncrementalForecaster[Any]) -> KeyedStates[Any]:
        """The keyed-state store of `model` (made on first use; `swap` drops it)."""
        if self._slots is None or self._slots[0] is not model:
            self._slots = (model, model.keyed_states(self.max_states))
        return self._slots[1]
