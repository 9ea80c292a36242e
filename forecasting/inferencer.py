"""Async micro-batcher shared by a worker's agents: many small requests, one forward pass.

Requests queue; a batch closes when it holds `max_batch` series or `max_wait_ms` after its
first request, whichever comes first; the model runs once on the whole batch (in one
worker thread, so the event loop keeps consuming) and each caller's future gets its rows,
with the version of the model that made them (`ServedForecast`: a roll-in between two
batches can never mislabel a forecast). `Inferencer.predict` is a plain forecaster call.

A request of at least `inline_rows` series that finds the batcher idle (nothing queued,
no batch running) is a batch by itself: it runs at once on the caller's thread, with no
wait and no hop to the worker thread. That is the stream processor's case (one engine, one
call per processing round for every due SKU): there the hop, the wait and two threads
contending for the GIL cost more wall time than the forward pass. Many small concurrent
callers still share batches.

`on_loop=True` goes further, for an engine whose callers are all tasks of one event loop
(the batch engine runs its partitions as concurrent tasks): every request queues, and the
batch closes at the next turn of the loop (`loop.call_soon`), so the requests of all the
tasks that ran in that turn share one forward pass, run on the loop's thread: no worker
thread, no `max_wait_ms`, no `max_batch` split (the callers sized their requests).

Whatever the mode, a forward pass never holds the same key twice: a request that repeats a
key of an earlier request of its batch closes the batch and goes, with the requests after
it, into the next one, so each key's requests run in the order they came and a later one
sees the state the earlier one left (the order a sequential caller would have given them).

`serve_keyed` adds incremental inference for an `IncrementalForecaster` (the LSTM), which
the inferencer recognises once, when it is given the model. The states of all keys live in
one store from the model's `keyed_states`, a bounded cache (least recently used keys
dropped). Per key, the first of these that applies:

1. its carried state ends at most a window before the request: step it once per new bucket
   (one bucket behind: one recurrent step; several: one step per bucket of the window);
2. the caller gave its durable state (`states`, the record the last forecast returned, as
   the stream changelogs it): restore it, then as 1. — a recovered or evicted key resumes
   exactly, no warm-up;
3. a durable state of another model (a new version rolled in): re-encode from the demand
   history it carries (the LSTM's day ring: 392 days, far more than the stream's window);
4. else encode its window, over the model's `cold_start_warmup_days`.

A model whose state reads the data's own holidays (`reads_holidays`) gets each folded day's
flag from the request's covariates (`Covariates.holiday`: the stream's holiday calendar),
on every path; days the covariates do not cover read as no holiday.

With `states` given, the new durable state of every key comes back with the forecast.
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
from numpy.typing import ArrayLike, NDArray

from forecasting._numeric import FloatArray
from forecasting.base import Forecaster, IncrementalForecaster, KeyedStates, QuantileForecast
from forecasting.covariates import Covariates, stack
from forecasting.errors import InvalidWindowError

__all__ = ["Inferencer", "InferencerStats", "ServedForecast"]

ONE_DAY = np.timedelta64(1, "D")


@dataclass(frozen=True)
class ServedForecast:
    """A forecast as served: its numbers, the version of the model that computed them, and,
    for keyed requests that asked for them, each key's durable state after the forecast
    (None for a model without carried state)."""

    forecast: QuantileForecast
    model_version: str
    states: list[bytes] | None = None


@dataclass
class _Request:
    windows: FloatArray
    horizon: int
    future: asyncio.Future[ServedForecast]
    keys: Sequence[str] | None = None
    end_days: np.ndarray | None = None
    states: Sequence[bytes | None] | None = None  # durable states given (keyed requests)
    covariates: Covariates | None = None  # known-in-advance covariates of the rows
    arrived: float = 0.0  # time.monotonic() when queued


@dataclass
class InferencerStats:
    """Counters: batches run, series forecast, and how keyed series got their state:
    `incremental` carried or restored and stepped, `restored` from a durable state,
    `rebased` re-encoded from another model's durable history, `full` encoded from the
    window."""

    batches: int = 0
    series: int = 0
    incremental: int = 0
    full: int = 0
    restored: int = 0
    rebased: int = 0
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


def _gap_days(last: np.ndarray, ends: np.ndarray) -> NDArray[np.int64]:
    """Days from each state's last bucket to the request's (-1 where there is no state)."""
    gap: NDArray[np.int64] = (ends - last).astype("timedelta64[D]").astype(np.int64)
    gap[np.isnat(last)] = -1
    return gap


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
    intra-op threads, LightGBM's predict's included (`Forecaster.cap_threads`, of every
    model served, swapped-in ones too; 1 is fastest per worker under load on a
    small CPU). `inline_rows`: from this many series on, a request that finds the batcher
    idle runs at once on the caller's thread (module docstring; None: never). `on_loop`:
    every batch runs on the event loop's thread, closed at the next turn of the loop
    (module docstring).
    """

    def __init__(
        self,
        forecaster: Forecaster,
        *,
        max_batch: int = 1024,
        max_wait_ms: float = 5.0,
        max_states: int = 1_000_000,
        torch_threads: int | None = 1,
        inline_rows: int | None = 64,
        on_loop: bool = False,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.torch_threads = torch_threads
        self._use(forecaster)
        self.max_batch = int(max_batch)
        self.max_wait_ms = float(max_wait_ms)
        self.max_states = int(max_states)
        if inline_rows is not None and inline_rows < 1:
            raise ValueError(f"inline_rows must be >= 1 (or None), got {inline_rows}")
        self.inline_rows = inline_rows
        self.on_loop = bool(on_loop)
        self._flush_soon: asyncio.Handle | None = None  # on_loop: the batch's closing turn
        self._running = False  # a batch is in the worker thread (it owns the keyed states)
        self.stats = InferencerStats()
        self._pending: list[_Request] = []
        self._pending_rows = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inferencer")
        # (model, its keyed-state store) once keyed requests come: the carried states
        # belong to that model's weights.
        self._slots: tuple[Any, KeyedStates[Any]] | None = None

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
        """Serve `forecaster`, its threads capped (a swapped-in model too: LightGBM's cap is
        the model's own, not process-wide as torch's); whether it carries state is checked
        here, once per model."""
        if self.torch_threads is not None:
            forecaster.cap_threads(self.torch_threads)
        self.forecaster = forecaster
        self._incremental: IncrementalForecaster[Any] | None = (
            forecaster if isinstance(forecaster, IncrementalForecaster) else None)

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the batching loop (done lazily by the first request too; none on_loop)."""
        if self.on_loop:
            return
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
        if self._flush_soon is not None:
            self._flush_soon.cancel()
            self._flush_soon = None
        if self.on_loop:
            self._flush_on_loop()
        elif self._pending:
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
        return (await self.serve(windows, horizon)).forecast

    async def serve(self, windows: np.ndarray, horizon: int) -> ServedForecast:
        """`predict`, with the version of the model that made the forecast."""
        arr = _validate(windows, horizon)
        return await self._submit(_Request(arr, int(horizon), self._future()))

    async def predict_keyed(self, keys: Sequence[str], windows: np.ndarray, horizon: int,
                            end_days: ArrayLike | None = None) -> QuantileForecast:
        """`serve_keyed`'s forecast (no durable states in or out)."""
        return (await self.serve_keyed(keys, windows, horizon, end_days)).forecast

    async def serve_keyed(self, keys: Sequence[str], windows: np.ndarray, horizon: int,
                          end_days: ArrayLike | None = None, *,
                          states: Sequence[bytes | None] | None = None,
                          covariates: Covariates | None = None) -> ServedForecast:
        """Like `serve`, for named series whose windows end on `end_days` (default: the
        model's clock), taking the incremental path of an IncrementalForecaster (module
        docstring). `states`: each key's durable state as the last forecast returned it
        (None: none); given, the new ones come back with the forecast. Models without
        incremental state just predict (dated). `covariates`: the rows' known-in-advance
        covariates (planned promotions) for a model that reads them (None: none)."""
        arr = _validate(windows, horizon)
        if covariates is not None and covariates.n_series != arr.shape[0]:
            raise InvalidWindowError(f"covariates of {covariates.n_series} series for "
                                     f"{arr.shape[0]} windows")
        if len(keys) != arr.shape[0]:
            raise InvalidWindowError(f"{len(keys)} keys for {arr.shape[0]} windows")
        if states is not None and len(states) != len(keys):
            raise InvalidWindowError(f"{len(states)} states for {len(keys)} keys")
        if end_days is None:
            end_days = self.forecaster.end_day()
        given = np.asarray(end_days, dtype="datetime64[D]")
        ends = np.empty(arr.shape[0], dtype="datetime64[D]")
        ends[:] = given  # broadcasts a single day; a wrong length fails here
        return await self._submit(_Request(arr, int(horizon), self._future(), list(keys), ends,
                                           states, covariates))

    def warm_up(self, rows: int = 1_100) -> None:
        """Run the keyed path once on `rows` made-up series and forget it (call it on the
        serving loop, before the first request): a cold-start encode, one step, the
        forecast, the durable export and the keyed store's first growth (`rows` is above
        its first capacity). torch's first call of each op costs ~0.1 s of CPU here
        (dispatch set-up), which the first batch of the stream would otherwise pay. A model
        without carried state is left as it is."""
        if self._incremental is None:
            return
        saved, stats = self._slots, self.stats
        self._slots, self.stats = None, InferencerStats()  # a store and counts of its own
        keys = [f"warm-up-{i}" for i in range(rows)]
        day = np.datetime64(self.forecaster.end_day(), "D")
        windows = np.random.default_rng(0).poisson(2.0, (rows, 8)).astype(float)
        windows[: rows // 2, :4] = np.nan  # some seen for fewer days
        try:
            for days in (7, 8):  # a cold start, then one step
                request = _Request(windows[:, :days], 14, self._future(), keys,
                                   np.full(rows, day - (8 - days)), [None] * rows)
                self._forward([request])
        finally:
            self._slots, self.stats = saved, stats

    def _future(self) -> asyncio.Future[ServedForecast]:
        return asyncio.get_running_loop().create_future()

    async def _submit(self, request: _Request) -> ServedForecast:
        if self.on_loop:
            self._pending.append(request)
            self._pending_rows += request.windows.shape[0]
            if self._flush_soon is None:  # the first request of this turn opens the batch
                self._flush_soon = asyncio.get_running_loop().call_soon(self._flush_on_loop)
            return await request.future
        if (self.inline_rows is not None and not self._pending and not self._running
                and request.windows.shape[0] >= self.inline_rows):
            # A batch by itself, and nothing to wait for: run it here (module docstring).
            # Nothing else runs on this loop meanwhile, so no request can queue behind it.
            return self._forward([request])[0]
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

    def _take_batch(self, max_rows: int | None = None) -> list[_Request]:
        """The oldest queued requests up to `max_rows` (default `max_batch`; a larger first
        request alone), stopping before the first that repeats a key of the batch."""
        limit = self.max_batch if max_rows is None else max_rows
        rows = taken = 0
        keys: set[str] = set()
        for req in self._pending:
            n = req.windows.shape[0]
            if taken and rows + n > limit:
                break
            if req.keys is not None:
                if taken and not keys.isdisjoint(req.keys):
                    break  # same key twice: this one sees the state the batch leaves
                keys.update(req.keys)
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
        self._running = True
        try:
            results = await loop.run_in_executor(self._executor, self._forward, live)
        except Exception as exc:  # the model failed: every caller of this batch hears it
            for req in live:
                if not req.future.done():
                    req.future.set_exception(exc)
            return
        finally:
            self._running = False
        for req, fc in zip(live, results, strict=True):
            if not req.future.done():
                req.future.set_result(fc)

    def _flush_on_loop(self) -> None:
        """on_loop: run every queued request, on this thread, in as few forward passes as
        the one-key-once rule allows (in the order they came)."""
        self._flush_soon = None
        while self._pending:
            batch = self._take_batch(max_rows=self._pending_rows)
            live = [r for r in batch if not r.future.cancelled()]
            if not live:
                continue
            try:
                results = self._forward(live)
            except Exception as exc:  # the model failed: every caller of this batch hears it
                for req in live:
                    if not req.future.done():
                        req.future.set_exception(exc)
                continue
            for req, fc in zip(live, results, strict=True):
                if not req.future.done():
                    req.future.set_result(fc)

    def _forward(self, batch: list[_Request]) -> list[ServedForecast]:
        """One forward pass per kind of request (plain / keyed); runs in the worker thread
        (or inline, for a request run at once: `_submit`). The model is read once: a `swap`
        meanwhile serves from the next batch on."""
        forecaster, incremental = self.forecaster, self._incremental
        version = forecaster.model_version
        horizon = max(r.horizon for r in batch)
        out: dict[int, ServedForecast] = {}
        plain = [i for i, r in enumerate(batch) if r.keys is None]
        keyed = [i for i, r in enumerate(batch) if r.keys is not None]
        if plain:
            fc = forecaster.predict(_left_pad([batch[i].windows for i in plain]), horizon)
            self._split(fc, version, None, [batch[i] for i in plain], plain, out)
        if keyed:
            reqs = [batch[i] for i in keyed]
            windows = _left_pad([r.windows for r in reqs])
            keys = [k for r in reqs for k in (r.keys or [])]
            ends = np.concatenate([r.end_days for r in reqs if r.end_days is not None])
            durable = any(r.states is not None for r in reqs)
            given: list[bytes | None] | None = None
            if durable:
                given = []
                for r in reqs:
                    given.extend(r.states if r.states is not None else [None] * len(r.keys or []))
            covariates = stack([(r.windows.shape[0], r.covariates) for r in reqs])
            if incremental is None or len(set(keys)) != len(keys):
                fc = forecaster.predict(windows, horizon, end_days=ends, covariates=covariates)
                states = None
            else:
                fc, states = self._keyed_forward(incremental, keys, windows, ends, horizon,
                                                 given, covariates)
            self._split(fc, version, states, reqs, keyed, out)
        self.stats.batches += 1
        rows = sum(r.windows.shape[0] for r in batch)
        self.stats.series += rows
        self.stats.batch_sizes.append(rows)
        return [out[i] for i in range(len(batch))]

    @staticmethod
    def _split(fc: QuantileForecast, version: str, states: list[bytes] | None,
               reqs: list[_Request], idx: list[int], out: dict[int, ServedForecast]) -> None:
        start = 0
        for i, req in zip(idx, reqs, strict=True):
            n = req.windows.shape[0]
            mine = None if states is None or req.states is None else states[start:start + n]
            out[i] = ServedForecast(_slice(fc, slice(start, start + n), req.horizon), version,
                                    mine)
            start += n

    def _keyed_forward(self, model: IncrementalForecaster[Any], keys: list[str],
                       windows: FloatArray, ends: np.ndarray, horizon: int,
                       given: list[bytes | None] | None, covariates: Covariates | None = None
                       ) -> tuple[QuantileForecast, list[bytes] | None]:
        store = self._slots_for(model)
        slots, _ = store.slots(keys)
        gap = _gap_days(store.last_day[slots], ends)
        # the windows' days' own holiday flags (n, T), for a state that reads them
        holiday = (_holiday_windows(covariates, ends, windows.shape[1])
                   if model.reads_holidays else None)
        if (gap == 1).all():
            # the steady stream: one step each; consume: the store keeps only the new state
            # (a day ring steps in place)
            state = model.update(store.gather(slots), windows[:, -1], ends, consume=True,
                                 holiday=None if holiday is None else holiday[:, -1])
            store.scatter(slots, state)
            self.stats.incremental += len(keys)
        else:
            state = self._catch_up(model, store, slots, gap, windows, ends, given, holiday,
                                   covariates)
        fc = (model.forecast(state, horizon) if covariates is None
              else model.forecast_known(state, horizon, covariates))
        return fc, None if given is None else store.export(slots)

    def _catch_up(self, model: IncrementalForecaster[Any], store: KeyedStates[Any],
                  slots: NDArray[np.intp], gap: NDArray[np.int64], windows: FloatArray,
                  ends: np.ndarray, given: list[bytes | None] | None,
                  holiday: FloatArray | None = None, covariates: Covariates | None = None
                  ) -> Any:
        """Bring every key's state to its request's end day (module docstring, 1-4);
        `holiday` (n, T): the windows' days' own holiday flags for a model that reads them
        (`covariates`' rows, which a re-encode from a longer history reads too)."""
        length = windows.shape[1]
        behind = (gap < 0) | (gap > length)  # no state the window can step to the end
        if given is not None and behind.any():
            rows = np.flatnonzero(behind & np.fromiter((b is not None for b in given),
                                                       dtype=bool, count=len(given)))
            blobs = [given[i] for i in rows.tolist()]
            taken = store.restore(slots[rows], blobs)
            back = rows[taken]
            gap[back] = _gap_days(store.last_day[slots[back]], ends[back])
            self.stats.restored += int(back.size)
            behind = (gap < 0) | (gap > length)
            other = rows[~taken & behind[rows]]  # another model's: its history, re-encoded
            if other.size:
                history, last = store.history([given[i] for i in other.tolist()])
                reach = _gap_days(last, ends[other])
                ok = (reach >= 0) & (reach <= length)
                if ok.any():
                    rebase = other[ok]
                    longer = _extend(history[ok], windows[rebase], reach[ok])
                    flags = None
                    if holiday is not None and covariates is not None:
                        flags = _holiday_windows(covariates.subset(rebase), ends[rebase],
                                                 longer.shape[1])
                    store.scatter(slots[rebase], model.encode(
                        longer, ends[rebase], warmup_days=model.cold_start_warmup_days,
                        holiday=flags))
                    gap[rebase] = 0
                    self.stats.rebased += int(rebase.size)
                    behind[rebase] = False
        fresh = np.flatnonzero(behind)
        if fresh.size:  # a cold start: bounded by the model's warm-up (if it has one)
            store.scatter(slots[fresh], model.encode(
                windows[fresh], ends[fresh], warmup_days=model.cold_start_warmup_days,
                holiday=None if holiday is None else holiday[fresh]))
            gap[fresh] = 0
            self.stats.full += int(fresh.size)
        self.stats.incremental += len(slots) - int(fresh.size)
        # one step per missing bucket, oldest first, each key from its own last day on
        for t in range(int(gap.max(initial=0)), 0, -1):
            rows = np.flatnonzero(gap >= t)
            days = ends[rows] - np.timedelta64(t - 1, "D")
            store.scatter(slots[rows], model.update(
                store.gather(slots[rows]), windows[rows, length - t], days, consume=True,
                holiday=None if holiday is None else holiday[rows, length - t]))
        return store.gather(slots)

    def _slots_for(self, model: IncrementalForecaster[Any]) -> KeyedStates[Any]:
        """The keyed-state store of `model` (made on first use; `swap` drops it)."""
        if self._slots is None or self._slots[0] is not model:
            self._slots = (model, model.keyed_states(self.max_states))
        return self._slots[1]


def _holiday_windows(covariates: Covariates | None, ends: np.ndarray,
                     length: int) -> FloatArray | None:
    """(n, length) each row's own holiday flags over the `length` days up to its end day;
    None when the covariates hold no holiday (the model then knows of none)."""
    if covariates is None or covariates.holiday is None:
        return None
    return covariates.holiday_rows(ends - np.timedelta64(length - 1, "D"), length)


def _extend(history: FloatArray, windows: FloatArray, reach: NDArray[np.int64]) -> FloatArray:
    """Each row's history (n, R) ending `reach[i]` days before its window (n, T) ends, then
    the window's last `reach[i]` days: (n, R + max reach), right-aligned (leading NaN = none
    yet)."""
    n, span = history.shape
    width = span + int(reach.max(initial=0))
    out = np.full((n, width), np.nan)
    length = windows.shape[1]
    for i in range(n):
        r = int(reach[i])
        out[i, width - span - r : width - r] = history[i]
        if r:
            out[i, width - r :] = windows[i, length - r :]
    return out
