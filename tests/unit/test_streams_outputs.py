"""Forecasts written from arrays are byte for byte the JSON of the `ForecastEvent` models."""

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from schemas import AlertEvent, DemandEvent, ForecastEvent, sku_key
from streams.outputs import AlertRow, BatchOutputs, DemandRow, ForecastRows, event_json


def rows(n: int = 5, issued_at: datetime = datetime(2011, 6, 1, 8, 30, 0, 250, tzinfo=UTC),
         seed: int = 1) -> ForecastRows:
    rng = np.random.default_rng(seed)
    levels = [0.05, 0.1, 0.5, 0.9, 0.975]
    daily = np.sort(rng.gamma(2.0, 3.0, size=(n, 14, len(levels))), axis=2)
    daily[0, 0] = [0.0, 1e-5, 0.0001, 3.0, 1e17]  # edge formats: exponent, integral floats
    cumulative = np.maximum.accumulate(np.cumsum(daily, axis=1), axis=1)
    return ForecastRows(
        skus=[f"SKU-{i}" for i in range(n)], locations=["wh1"] * (n - 1) + ["shop/2"],
        last_closed=[15_040 + i for i in range(n)], bucket_seconds=86_400, issued_at=issued_at,
        levels=levels, daily=np.round(daily, 4), cumulative=np.round(cumulative, 4),
        mean=np.round(daily[:, :, 2], 4), model_version="moving_average-v1")


@pytest.mark.parametrize("issued_at", [
    datetime(2011, 6, 1, 8, 30, 0, 250, tzinfo=UTC),
    datetime(2011, 6, 1, tzinfo=UTC),
    datetime(2011, 6, 1, 9, tzinfo=timezone(timedelta(hours=1))),
])
def test_payloads_equal_the_models_json(issued_at: datetime):
    block = rows(issued_at=issued_at)
    models = block.models()
    payloads = list(block.payloads())
    assert len(payloads) == len(models) == 5
    for (key, raw), model in zip(payloads, models, strict=True):
        assert key == sku_key(model.sku, model.location)
        assert raw == event_json(model)
        # and the model, validated from that JSON, is a valid event equal to the one built
        assert ForecastEvent.model_validate_json(raw) == model


def test_broadcast_and_strided_arrays_are_written_too():
    block = rows(3)
    block = ForecastRows(**{**block.__dict__,
                            "daily": np.broadcast_to(block.daily[:1], block.daily.shape),
                            "mean": np.asfortranarray(block.mean)})
    for (_, raw), model in zip(block.payloads(), block.models(), strict=True):
        assert raw == event_json(model)


def test_outputs_build_models_on_demand_and_count_without_them():
    out = BatchOutputs(forecast_rows=[rows(3), rows(2, seed=2)])
    assert out.forecast_count == 5
    first = out.forecasts
    assert [f.sku for f in first] == ["SKU-0", "SKU-1", "SKU-2", "SKU-0", "SKU-1"]
    assert out.forecasts is first  # built once
    out.forecast_rows.append(rows(1, seed=3))
    assert out.forecast_count == 6 and len(out.forecasts) == 6
    assert [k for k, _ in out.forecast_payloads()] == [sku_key(f.sku, f.location) for f in first]


def test_an_empty_outputs_list_can_be_extended_like_a_list():
    total = BatchOutputs()
    total.forecasts.extend(rows(2).models())
    assert total.forecast_count == 2 and len(total.forecasts) == 2


def test_models_given_to_the_constructor_come_first():
    given = rows(1, seed=4).models()
    out = BatchOutputs(forecasts=given, forecast_rows=[rows(2)])
    assert out.forecast_count == 3
    assert [f.sku for f in out.forecasts] == ["SKU-0", "SKU-0", "SKU-1"]
    assert out.forecasts[0] is given[0]
    assert len(list(out.forecast_payloads())) == 3


@pytest.mark.parametrize("issued_at", [
    datetime(2011, 6, 1, 8, 30, 0, 250, tzinfo=UTC),
    datetime(2011, 6, 1, 9, tzinfo=timezone(timedelta(hours=1))),
])
def test_alert_payloads_equal_the_models_json(issued_at: datetime):
    alert_rows = [
        AlertRow("id-1", "SKU-1", "wh1", "stockout_risk", "critical", "S@wh: 55% chance é",
                 {"probability": 0.5501, "inventory_position": -3.0, "lead_time_buckets": 2},
                 issued_at),
        AlertRow("id-2", "SKU-2", "shop/2", "demand_anomaly", "warning", "demand 1e+17",
                 {"observed": 1e17, "high_quantile": 1e-05, "level": 0.975}, issued_at),
    ]
    out = BatchOutputs(alert_rows=alert_rows)
    assert out.alert_count == 2
    payloads = list(out.alert_payloads())
    for (key, raw), row in zip(payloads, alert_rows, strict=True):
        model = row.model()
        assert key == sku_key(model.sku, model.location)
        assert raw == event_json(model)
        assert AlertEvent.model_validate_json(raw) == model
    models = out.alerts  # built on demand, then they are what is written
    assert [m.alert_id for m in models] == ["id-1", "id-2"] and out.alerts is models
    assert list(out.alert_payloads()) == payloads


def test_demand_payloads_equal_the_models_json():
    bucket = datetime(2011, 6, 1, tzinfo=UTC)
    demand_rows = [
        DemandRow("SKU-1", "wh1", bucket, 86_400, 4.0, "moving_average-v1", [0.1, 0.5, 0.9],
                  [1.0, 3.5, 1e17]),
        DemandRow("SKU-2", "shop/2", bucket, 86_400, 0.0),  # a revision: no forecast
    ]
    out = BatchOutputs(demand_rows=demand_rows)
    for (key, raw), row in zip(out.demand_payloads(), demand_rows, strict=True):
        model = row.model()
        assert key == sku_key(model.sku, model.location)
        assert raw == event_json(model)
        assert DemandEvent.model_validate_json(raw) == model
    assert [m.sku for m in out.demand] == ["SKU-1", "SKU-2"]


@pytest.mark.parametrize(("n", "horizon", "levels"), [(1, 14, 5), (2, 1, 5), (3, 14, 1), (1, 1, 1),
                                                      (4, 0, 5), (2, 3, 0)])
def test_payloads_of_any_shape_equal_the_models_json(n: int, horizon: int, levels: int):
    """One row, one step, one level, and empty axes (written row by row) alike."""
    rng = np.random.default_rng(n * 100 + horizon * 10 + levels)
    daily = np.round(rng.gamma(2.0, 3.0, size=(n, horizon, levels)), 4)
    block = ForecastRows(
        skus=[f"S{i}" for i in range(n)], locations=["w\u00e9\"1"] * n,
        last_closed=[15_040] * n, bucket_seconds=3_600,
        issued_at=datetime(2011, 6, 1, 8, 30, tzinfo=UTC), levels=[0.5] * levels, daily=daily,
        cumulative=np.cumsum(daily, axis=1), mean=daily.mean(axis=2) if levels else
        np.zeros((n, horizon)), model_version="lstm-1+abc")
    payloads = list(block.payloads())
    assert [raw for _, raw in payloads] == [event_json(m) for m in block.models()]


def test_a_batch_of_demand_rows_equals_the_models_json():
    """Rows written as one batch (shared parts once) equal each model's JSON, whatever mix
    of scored and unscored rows, buckets, versions, level lists and quantities it holds."""
    day = datetime(2011, 6, 1, tzinfo=UTC)
    hour = datetime(2011, 6, 1, 5, tzinfo=UTC)
    levels_a, levels_b = [0.1, 0.5, 0.9], [0.5]
    demand_rows = [
        DemandRow("SKU-1", "wh1", day, 86_400, 4.0, "v1", levels_a, [1.0, 3.5, 1e17]),
        DemandRow("SKU-1", "wh1", day, 86_400, 0.0),
        DemandRow("SKU-2", "shop/2", hour, 3_600, 1e17, "v2", levels_a, [0.0, 0.0, 0.0]),
        DemandRow("SKU-3", "wh1", hour, 3_600, 2.5, "v1", levels_b, [7.25]),
        DemandRow("SKU-\u00e9\"", "wh1", day, 86_400, 12.0, "v1", levels_a, [1.0, 2.0, 3.0]),
        DemandRow("SKU-4", "wh1", day, 86_400, 3, "v1", levels_a, [1.0, 2.0, 3.0]),
    ]
    out = BatchOutputs(demand_rows=demand_rows)
    written = list(out.demand_payloads())
    assert [key for key, _ in written] == [sku_key(r.sku, r.location) for r in demand_rows]
    assert [raw for _, raw in written] == [row.payload() for row in demand_rows]
    for (_, raw), row in zip(written[:-1], demand_rows[:-1], strict=True):
        assert raw == event_json(row.model())
