"""Planned promotions (shop.promotions) in the stream: validated (bad ones dead-lettered), kept
in the SKU's state (versioned, bounded, durable), handed to the forecaster as covariates for
the days they cover — and a stream without any forecasts exactly as before."""

import asyncio
import json
from datetime import UTC, date, datetime, timedelta

import msgspec
import numpy as np
import pytest

from forecasting import make_forecaster
from forecasting.covariates import Covariates
from forecasting.inferencer import ServedForecast
from runtime.settings import Settings
from schemas import PromotionEvent, decode
from schemas.errors import InvalidEvent
from streams.changelog import decode_sku_state, encode_state
from streams.planned_promotions import MAX_PER_SKU, MEMORY_DAYS, apply_promotion, prune
from streams.processor import BatchProcessor, ProcessorConfig, RawRecord
from streams.state import SkuState
from streams.worker import local_predict

T0 = datetime(2011, 3, 7, 9, 0, tzinfo=UTC)
SETTINGS = Settings(kafka_bootstrap="unused:9092", default_lead_time_days=3)
TOPICS = SETTINGS.topics


def rec(topic: str, offset: int, value: dict | bytes, key: bytes = b"A@L") -> RawRecord:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return RawRecord(topic, 0, offset, key, raw)


def orders(days: int, qty: int = 4) -> list[RawRecord]:
    return [rec(TOPICS.orders, d, {
        "event_id": f"o{d}", "type": "placed", "sku": "A", "location": "L", "quantity": qty,
        "occurred_at": (T0 + timedelta(days=d)).isoformat()}) for d in range(days)]


def promotion(offset: int, start: date, end: date, **extra: object) -> RawRecord:
    return rec(TOPICS.promotions, offset, {
        "event_id": extra.pop("event_id", "p1"), "sku": "A", "location": "L",
        "start_day": start.isoformat(), "end_day": end.isoformat(), **extra})


class Recording:
    """A PredictFn that forecasts with a model and records what each call was given."""

    def __init__(self) -> None:
        self.model = make_forecaster("moving_average")
        self.calls: list[dict[str, object]] = []

    async def __call__(self, windows, horizon, *, keys=None, end_days=None, states=None,
                       **extra):
        self.calls.append({"end_days": end_days, **extra})
        return ServedForecast(self.model.predict(windows, horizon, end_days=end_days),
                              self.model.model_version)


def processor(predict) -> BatchProcessor:
    fixed = datetime(2011, 4, 1, tzinfo=UTC)
    return BatchProcessor(ProcessorConfig.from_settings(SETTINGS), predict, "v", now=lambda: fixed)


def run(p: BatchProcessor, records: list[RawRecord], table: dict):
    return asyncio.run(p.process(records, table))


def test_promotions_reach_the_forecaster_for_the_days_they_cover() -> None:
    predict = Recording()
    table: dict = {}
    planned = promotion(0, date(2011, 3, 14), date(2011, 3, 15), price_ratio=0.8)
    out = run(processor(predict), [planned, *orders(6)], table)
    assert out.accepted == 7 and not out.dead_letters
    assert table["A@L"]["promotions"]["p1"][2:] == [1.0, 0.8, 1.0]
    call = predict.calls[-1]
    cov = call["covariates"]
    assert isinstance(cov, Covariates)
    last_closed = np.datetime64(call["end_days"][0], "D")  # type: ignore[index]
    horizon = SETTINGS.horizon_buckets
    promo, price = cov.span(last_closed + 1, horizon)
    days = last_closed + 1 + np.arange(horizon)
    on = (days >= np.datetime64("2011-03-14")) & (days <= np.datetime64("2011-03-15"))
    np.testing.assert_array_equal(promo[0], on.astype(float))
    np.testing.assert_array_equal(price[0], np.where(on, 0.8, 1.0))


def test_without_promotions_the_forecaster_call_is_the_plain_one() -> None:
    predict = Recording()
    run(processor(predict), orders(6), {})
    assert predict.calls and all("covariates" not in c for c in predict.calls)


def test_malformed_promotions_go_to_the_dlq_with_a_reason() -> None:
    backwards = promotion(1, date(2011, 3, 15), date(2011, 3, 14))
    bad_day = promotion(2, date(2011, 3, 15), date(2011, 3, 16))
    bad_day = rec(TOPICS.promotions, 2, bad_day.value.replace(b"2011-03-16", b"2011-02-30"))
    other_key = promotion(3, date(2011, 3, 15), date(2011, 3, 16))
    other_key = rec(TOPICS.promotions, 3, other_key.value, key=b"B@L")
    free = promotion(4, date(2011, 3, 15), date(2011, 3, 16), price_ratio=0)
    not_json = rec(TOPICS.promotions, 5, b'{"event_id": "p9", "sku": ')
    table: dict = {}
    out = run(processor(Recording()), [backwards, bad_day, other_key, free, not_json,
                                       *orders(3)], table)
    dead = {d.offset: d for d in out.dead_letters}
    assert set(dead) == {1, 2, 3, 4, 5}
    assert "end_day is before start_day" in dead[1].error
    assert "start_day" not in dead[2].error and "end_day" in dead[2].error
    assert dead[3].error_kind == "key_mismatch"
    assert "price_ratio" in dead[4].error
    assert dead[5].error_kind == "invalid_json"
    assert all(d.source_topic == TOPICS.promotions for d in dead.values())
    assert not table["A@L"]["promotions"]


def test_versions_replace_cancel_and_stale_redeliveries_are_duplicates() -> None:
    state = SkuState(sku="A", location="L")

    def event(version: int, **extra: object) -> PromotionEvent:
        return PromotionEvent(event_id="p1", sku="A", location="L", version=version,
                              start_day=date(2011, 3, 14), end_day=date(2011, 3, 20),
                              **extra)  # type: ignore[arg-type]

    assert apply_promotion(state, event(1, price_ratio=0.9)) == "ok"
    assert apply_promotion(state, event(2, price_ratio=0.7)) == "ok"
    assert state.promotions["p1"][3] == 0.7
    assert apply_promotion(state, event(1, price_ratio=0.9)) == "duplicate"
    assert apply_promotion(state, event(2, price_ratio=0.5)) == "duplicate"
    assert apply_promotion(state, event(3, cancelled=True)) == "ok"
    assert state.promotions["p1"][2:] == [0.0, 1.0, 3.0]  # neutral, version remembered
    assert apply_promotion(state, event(2, price_ratio=0.7)) == "duplicate"


def test_planned_promotions_are_bounded_and_forgotten_after_their_memory() -> None:
    state = SkuState(sku="A", location="L")
    first = date(2011, 1, 1)
    for i in range(MAX_PER_SKU + 5):
        day = first + timedelta(days=i)
        apply_promotion(state, PromotionEvent(event_id=f"p{i}", sku="A", location="L",
                                              start_day=day, end_day=day))
    assert len(state.promotions) == MAX_PER_SKU
    assert "p0" not in state.promotions and f"p{MAX_PER_SKU + 4}" in state.promotions
    last_end = (first + timedelta(days=MAX_PER_SKU + 4) - date(1970, 1, 1)).days
    prune(state, last_end + MEMORY_DAYS)
    assert list(state.promotions) == [f"p{MAX_PER_SKU + 4}"]
    prune(state, last_end + MEMORY_DAYS + 1)
    assert not state.promotions


def test_promotions_survive_the_changelog_and_old_states_load_without_them() -> None:
    state = SkuState(sku="A", location="L")
    apply_promotion(state, decode(PromotionEvent, json.dumps({
        "event_id": "p1", "sku": "A", "location": "L", "start_day": "2011-03-14",
        "end_day": "2011-03-15", "price_ratio": 0.8, "version": 2}).encode()))
    back = decode_sku_state(encode_state(state))
    assert back is not None and back.promotions == state.promotions
    assert SkuState.from_json(json.loads(json.dumps(state.to_json()))).promotions == \
        state.promotions
    old_msgpack = bytes([1]) + msgspec.msgpack.encode({"sku": "A", "location": "L"})
    old = decode_sku_state(old_msgpack)
    assert old is not None and old.promotions == {}
    assert SkuState.from_json({"sku": "A", "location": "L"}).promotions == {}


def test_the_promotion_schema_refuses_what_the_worker_refuses() -> None:
    base = {"event_id": "p", "sku": "A", "location": "L", "start_day": "2011-03-14",
            "end_day": "2011-03-14"}
    assert decode(PromotionEvent, json.dumps(base).encode()).promo is True
    for change in ({"end_day": "2012-03-15"}, {"start_day": "2011-03-14T00:00:00Z"},
                   {"version": 0}, {"price_ratio": -1}, {"extra": 1}):
        with pytest.raises(InvalidEvent):
            decode(PromotionEvent, json.dumps({**base, **change}).encode())


# --- the served model reads them ------------------------------------------------------------
lgb = pytest.importorskip("lightgbm")


def _promo_panel(start: np.datetime64, n: int = 40, days: int = 200):
    from forecasting.data import Panel

    rng = np.random.default_rng(0)
    level = rng.gamma(3.0, 3.0, (n, 1))
    promo = (rng.random((n, days + 14)) < 0.16).astype(np.float64)
    values = rng.poisson(level * (1.0 + 2.0 * promo[:, :days])).astype(np.float64)
    cov = Covariates(start, promo, np.ones_like(promo))
    return Panel(tuple(str(i) for i in range(n)), start, values, cov)


def test_a_promotion_in_the_state_moves_the_lightgbm_forecast_of_its_day_only() -> None:
    from forecasting.lightgbm_peer import LightGBMForecaster

    start = np.datetime64("2010-08-01")
    model = LightGBMForecaster(14, n_estimators=60, num_leaves=15, min_child_samples=20)
    model.fit(_promo_panel(start))
    predict = local_predict(model)
    history = orders(20, qty=6)
    plain = run(processor(predict), history, {})
    last_closed = date(2011, 3, 7) + timedelta(days=18)
    promo_day = last_closed + timedelta(days=3)  # forecast step 3
    planned = promotion(99, promo_day, promo_day)
    lifted = run(processor(predict), [planned, *history], {})
    a, b = plain.forecast_rows[-1], lifted.forecast_rows[-1]
    assert a.last_closed == b.last_closed
    assert (datetime.fromtimestamp(a.last_closed[0] * 86_400, UTC).date() == last_closed)
    median = a.levels.index(0.5)
    assert b.mean[0, 2] > 1.5 * a.mean[0, 2]
    assert b.daily[0, 2, median] > a.daily[0, 2, median]
    others = np.r_[0:2, 3:14]
    np.testing.assert_array_equal(b.daily[0, others], a.daily[0, others])
    np.testing.assert_array_equal(b.mean[0, others], a.mean[0, others])


def test_the_exported_schema_agrees_with_the_worker_on_days(tmp_path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from schemas import export_json_schemas

    export_json_schemas(tmp_path)
    schema = json.loads((tmp_path / "PromotionEvent.v1.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["x-kafka-key"] == "sku@location"
    check = jsonschema.Draft202012Validator(schema)
    base = {"event_id": "p", "sku": "A", "location": "L", "start_day": "2024-02-29",
            "end_day": "2024-03-01", "price_ratio": 0.8}
    cases = [base, {**base, "start_day": "2023-02-29"}, {**base, "end_day": "2024-3-01"},
             {**base, "price_ratio": 0}, {**base, "version": 0}, {**base, "other": 1}]
    for value in cases:
        raw = json.dumps(value).encode()
        try:
            decode(PromotionEvent, raw)
            worker = True
        except InvalidEvent:
            worker = False
        assert check.is_valid(value) == worker, value
    assert check.is_valid(base)
