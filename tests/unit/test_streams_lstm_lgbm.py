"""The stream serving `lstm_lgbm`: loaded from its model directory, batched through the
inferencer with the LSTM's carried state (LightGBM reads the state's day ring), stamped with
the combination's version, and a new version is rolled in without a restart."""

import asyncio
from pathlib import Path

import numpy as np
import pytest

from runtime.settings import Settings
from streams.forecaster_setup import served_forecaster
from streams.processor import BatchProcessor, ProcessorConfig
from tests.support.lstm import daily_orders

pytest.importorskip("torch")
pytest.importorskip("lightgbm")


def save_tiny_combination(directory: Path, seed: int) -> str:
    """An untrained (seeded) LSTM, a small fitted LightGBM and fixed weights, saved."""
    import torch

    from forecasting.combination import (
        CombinationWeights,
        LSTMLightGBMForecaster,
        save_combination,
    )
    from forecasting.data import Panel
    from forecasting.lightgbm_peer import LightGBMForecaster
    from forecasting.lstm import LSTMConfig, LSTMForecaster, LSTMNet
    from forecasting.lstm.features import INPUT_DIM

    torch.manual_seed(seed)
    lstm = LSTMForecaster(LSTMNet(INPUT_DIM, LSTMConfig(horizon=14, hidden=8, head_hidden=8)),
                          device="cpu")
    rng = np.random.default_rng(seed)
    panel = Panel(tuple("abcdefgh"), np.datetime64("2010-06-01"),
                  rng.poisson(3.0, (8, 120)).astype(np.float64))
    lgbm = LightGBMForecaster(14, n_estimators=5, num_leaves=7, min_child_samples=10,
                              seed=seed).fit(panel)
    levels = lstm.config.levels
    weights = CombinationWeights(levels, tuple(0.5 for _ in levels),
                                 tuple(0.25 for _ in levels), 0.5)
    model = LSTMLightGBMForecaster(lstm, lgbm, weights)
    model_id = save_combination(model, directory, data_fingerprint=f"test-{seed}")
    return f"lstm_lgbm-1+{model_id}"


async def test_the_stream_serves_lstm_lgbm_from_its_directory_and_rolls_in_new_ones(
        tmp_path: Path) -> None:
    first = save_tiny_combination(tmp_path, seed=1)
    settings = Settings(kafka_bootstrap="unused:9092", model="lstm_lgbm", model_path=tmp_path,
                        model_poll_s=0.05, max_wait_ms=1)
    table: dict = {}

    def rolled_in(version: str) -> None:
        processor.model_version = version

    async with served_forecaster(settings, rolled_in) as (forecaster, predict):
        assert forecaster.name == "lstm_lgbm" and forecaster.model_version == first
        processor = BatchProcessor(ProcessorConfig.from_settings(settings), predict,
                                   forecaster.model_version)
        out = await processor.process(daily_orders(settings, 0, 5), table)
        assert out.forecasts and {f.model_version for f in out.forecasts} == {first}
        assert all(len(f.quantiles) == 14 for f in out.forecasts)
        # 3 a day every day: both parts forecast some demand, not the empty-series zeros
        assert all(max(q[len(q) // 2] for q in f.quantiles) > 0 for f in out.forecasts)

        second = save_tiny_combination(tmp_path, seed=2)
        assert second != first
        for _ in range(100):
            if processor.model_version == second:
                break
            await asyncio.sleep(0.05)
        out = await processor.process(daily_orders(settings, 5, 2), table)
        assert out.forecasts and {f.model_version for f in out.forecasts} == {second}
