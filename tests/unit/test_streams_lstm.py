"""The stream on the LSTM: batched through the inferencer, stamped with the model version,
and a new version written to the model directory is rolled in without a restart."""

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runtime.errors import ConfigError
from runtime.settings import Settings
from streams.forecaster_setup import served_forecaster
from streams.processor import BatchProcessor, ProcessorConfig, RawRecord
from tests.support.lstm import daily_orders, save_tiny_lstm

torch = pytest.importorskip("torch")

T0 = datetime(2011, 3, 7, 10, tzinfo=UTC)


def save_model(directory: Path, seed: int) -> str:
    return save_tiny_lstm(directory, seed=seed, hidden=8, fingerprint=f"test-{seed}")


def orders(settings: Settings, day0: int, days: int) -> list[RawRecord]:
    return daily_orders(settings, day0, days)


async def test_lstm_forecasts_are_stamped_and_new_versions_roll_in(tmp_path: Path):
    first = save_model(tmp_path, seed=1)
    settings = Settings(kafka_bootstrap="unused:9092", model="lstm", model_path=tmp_path,
                        model_poll_s=0.05, max_wait_ms=1)
    table: dict = {}

    def rolled_in(version: str) -> None:
        processor.model_version = version

    async with served_forecaster(settings, rolled_in) as (forecaster, predict):
        processor = BatchProcessor(ProcessorConfig.from_settings(settings), predict,
                                   forecaster.model_version)
        out = await processor.process(orders(settings, 0, 5), table)
        assert out.forecasts and {f.model_version for f in out.forecasts} == {first}
        assert all(len(f.quantiles) == 14 for f in out.forecasts)

        second = save_model(tmp_path, seed=2)
        assert second != first
        for _ in range(100):
            if processor.model_version == second:
                break
            await asyncio.sleep(0.05)
        out = await processor.process(orders(settings, 5, 2), table)
        assert out.forecasts and {f.model_version for f in out.forecasts} == {second}


async def test_lstm_without_a_model_directory_is_a_clear_error():
    with pytest.raises(ConfigError, match="SHELFCAST_MODEL_PATH"):
        async with served_forecaster(Settings(kafka_bootstrap="x:1", model="lstm")):
            pass
