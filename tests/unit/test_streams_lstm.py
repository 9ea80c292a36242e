"""The stream on the LSTM: batched through the inferencer, stamped with the model version,
and a new version written to the model directory is rolled in without a restart."""

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runtime.errors import ConfigError
from runtime.settings import Settings
from schemas import sku_key
from streams.forecaster_setup import served_forecaster
from streams.processor import BatchProcessor, ProcessorConfig, RawRecord

torch = pytest.importorskip("torch")

T0 = datetime(2011, 3, 7, 10, tzinfo=UTC)


def save_model(directory: Path, seed: int) -> str:
    from forecasting.lstm import LSTMConfig, LSTMForecaster, LSTMNet
    from forecasting.lstm.artifact import read_metadata, save_artifact
    from forecasting.lstm.features import INPUT_DIM

    torch.manual_seed(seed)
    model = LSTMForecaster(LSTMNet(INPUT_DIM, LSTMConfig(horizon=14, hidden=8, head_hidden=8)),
                           device="cpu")
    save_artifact(model, directory, data_fingerprint=f"test-{seed}")
    return str(read_metadata(directory)["model_version"])


def orders(settings: Settings, day0: int, days: int) -> list[RawRecord]:
    out = []
    for d in range(day0, day0 + days):
        for sku in ("A", "B", "C"):
            value = {"event_id": f"{sku}{d}", "type": "placed", "sku": sku, "location": "L",
                     "quantity": 3, "occurred_at": (T0 + timedelta(days=d)).isoformat()}
            out.append(RawRecord(settings.topics.orders, 0, len(out), sku_key(sku, "L").encode(),
                                 json.dumps(value).encode()))
    return out


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
