"""Durable LSTM state: a worker rebuilt from its changelogged states (through the real record
codec) forecasts exactly what an uninterrupted worker does, where re-encoding the window
would not; a state of another model is rebased on its own demand history, deliberately."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from runtime.settings import Settings
from schemas import sku_key
from streams.changelog import decode_sku_state, encode_state
from streams.forecaster_setup import served_forecaster
from streams.processor import BatchProcessor, ProcessorConfig, RawRecord
from streams.state import SkuState
from streams.store import StateStore

torch = pytest.importorskip("torch")

T0 = datetime(2011, 3, 7, 10, tzinfo=UTC)
SKUS, DAYS, CUT = 10, 48, 30  # the worker dies after day CUT - 1
WINDOW = 14  # buckets the stream keeps: a re-encode from it misses most of the history


def save_model(directory: Path, seed: int) -> str:
    from forecasting.lstm import LSTMConfig, LSTMForecaster, LSTMNet
    from forecasting.lstm.artifact import read_metadata, save_artifact
    from forecasting.lstm.features import INPUT_DIM

    torch.manual_seed(seed)
    model = LSTMForecaster(LSTMNet(INPUT_DIM, LSTMConfig(horizon=14, hidden=8, head_hidden=8)),
                           device="cpu")
    assert model.config.year_ago  # the durable state carries the day ring too
    save_artifact(model, directory, data_fingerprint=f"test-{seed}")
    return str(read_metadata(directory)["model_version"])


def day_records(settings: Settings, day: int) -> list[RawRecord]:
    """One day of orders: SKU i sells on most days, some SKUs skip days (their state then
    catches up over several buckets at once)."""
    rng = np.random.default_rng(day)
    out = []
    for i in range(SKUS):
        if i % 3 == 0 and day % (2 + i % 4) == 1:
            continue  # intermittent
        qty = int(rng.poisson(2 + i))
        if qty == 0:
            continue
        value = {"event_id": f"o{i}-{day}", "type": "placed", "sku": f"S{i}", "location": "L",
                 "quantity": qty, "occurred_at": (T0 + timedelta(days=day)).isoformat()}
        out.append(RawRecord(settings.topics.orders, 0, day * SKUS + i,
                             sku_key(f"S{i}", "L").encode(), json.dumps(value).encode()))
    return out


Forecasts = dict[tuple[str, int], np.ndarray]  # (sku, last closed bucket) -> mean (horizon,)


async def run_days(settings: Settings, store: StateStore, days: range) -> Forecasts:
    """A worker's life: serve, process `days` one batch a day, stop."""
    out: Forecasts = {}
    async with served_forecaster(settings) as (forecaster, predict):
        processor = BatchProcessor(ProcessorConfig.from_settings(settings), predict,
                                   forecaster.model_version)
        for day in days:
            batch = await processor.process(day_records(settings, day), store.partition(0))
            for rows in batch.forecast_rows:
                for r, sku in enumerate(rows.skus):
                    out[(sku, rows.last_closed[r])] = rows.mean[r]
    return out


def changelog_round_trip(store: StateStore, *, drop_model_state: bool = False) -> StateStore:
    """What a recovering worker holds: every key through encode_state / decode_sku_state (the
    records of this test all come from input partition 0)."""
    records = {key: encode_state(value) for key, value in store.partition(0).items()}
    recovered = StateStore(store.partitions)
    for key, raw in records.items():
        state = decode_sku_state(raw)
        assert isinstance(state, SkuState)
        if drop_model_state:
            state.model_state = None
        recovered.load(0, key, state)
    return recovered


def settings_for(path: Path) -> Settings:
    return Settings(kafka_bootstrap="unused:9092", model="lstm", model_path=path,
                    max_wait_ms=1, window_buckets=WINDOW)


def after_cut(forecasts: Forecasts) -> Forecasts:
    first_after = int((T0 + timedelta(days=CUT)).timestamp() // 86_400)
    return {k: v for k, v in forecasts.items() if k[1] >= first_after}


def max_diff(a: Forecasts, b: Forecasts) -> float:
    assert a.keys() == b.keys() and a
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


async def uninterrupted(path: Path, seed: int = 7) -> Forecasts:
    save_model(path, seed)
    return await run_days(settings_for(path), StateStore(4), range(DAYS))


async def test_a_recovered_worker_forecasts_what_an_uninterrupted_one_does(
    tmp_path: Path,
) -> None:
    expected = await uninterrupted(tmp_path)
    settings = settings_for(tmp_path)
    store = StateStore(4)
    before = await run_days(settings, store, range(CUT))
    assert all(isinstance(s, SkuState) and s.model_state for s in store.values())
    after = await run_days(settings, changelog_round_trip(store), range(CUT, DAYS))
    got = after_cut({**before, **after})
    assert max_diff(got, after_cut(expected)) < 1e-3  # the outputs' 4-decimal rounding


async def test_re_encoding_the_window_on_recovery_would_change_the_forecasts(
    tmp_path: Path,
) -> None:
    # The control for the test above: without the durable state the recovered worker
    # re-encodes each SKU from its WINDOW-bucket window, and its forecasts move.
    expected = await uninterrupted(tmp_path)
    settings = settings_for(tmp_path)
    store = StateStore(4)
    before = await run_days(settings, store, range(CUT))
    after = await run_days(settings, changelog_round_trip(store, drop_model_state=True),
                           range(CUT, DAYS))
    assert max_diff(after_cut({**before, **after}), after_cut(expected)) > 1e-2


async def test_a_new_model_rebases_states_on_their_own_history_not_the_window(
    tmp_path: Path,
) -> None:
    # A worker restarted on a new model version cannot resume the old h, c (another
    # network's); it re-encodes each SKU from the demand history its durable state carries
    # (the day ring), which reaches back past the stream's window: its forecasts are those
    # of the new model run over the whole stream, not over the window.
    old, new = tmp_path / "old", tmp_path / "new"
    save_model(old, seed=7)
    store = StateStore(4)
    await run_days(settings_for(old), store, range(CUT))
    reference = await uninterrupted(new, seed=8)
    rebased = await run_days(settings_for(new), changelog_round_trip(store), range(CUT, DAYS))
    assert max_diff(after_cut(rebased), after_cut(reference)) < 1e-3
    windowed = await run_days(settings_for(new),
                              changelog_round_trip(store, drop_model_state=True),
                              range(CUT, DAYS))
    assert max_diff(after_cut(windowed), after_cut(reference)) > 1e-2
