"""BatchProcessor: a batch of raw records in, events out — with a dict standing in for the table."""

import asyncio
import base64
import copy
import json
from datetime import UTC, datetime, timedelta

import pytest

from forecasting import make_forecaster
from runtime.settings import Settings
from schemas import DeadLetter, RestockEvent
from streams.processor import BatchProcessor, ProcessorConfig, RawRecord
from streams.worker import local_predict

T0 = datetime(2011, 3, 7, 9, 0, tzinfo=UTC)
SETTINGS = Settings(kafka_bootstrap="unused:9092", default_lead_time_days=3)


def processor() -> BatchProcessor:
    model = make_forecaster("moving_average")
    fixed = datetime(2011, 4, 1, tzinfo=UTC)
    return BatchProcessor(ProcessorConfig.from_settings(SETTINGS), local_predict(model),
                          model.model_version, now=lambda: fixed)


def rec(topic: str, offset: int, value: dict | bytes) -> RawRecord:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return RawRecord(topic, 0, offset, b"A@L", raw)


def orders(days: int, qty: int = 4, start: int = 0) -> list[RawRecord]:
    return [rec(SETTINGS.topics.orders, start + d, {
        "event_id": f"o{d}", "type": "placed", "sku": "A", "location": "L", "quantity": qty,
        "occurred_at": (T0 + timedelta(days=d)).isoformat()}) for d in range(days)]


def snapshot(on_hand: int) -> RawRecord:
    return rec(SETTINGS.topics.stock, 0, {
        "event_id": "s1", "type": "snapshot", "sku": "A", "location": "L", "on_hand": on_hand,
        "occurred_at": (T0 - timedelta(hours=1)).isoformat()})


def run(p: BatchProcessor, records: list[RawRecord], table: dict):
    return asyncio.run(p.process(records, table))


def test_low_stock_leads_to_forecast_and_a_restock():
    table: dict = {}
    out = run(processor(), [snapshot(10), *orders(8)], table)
    # one forecast per closed bucket, as if the events came one at a time
    assert len(out.forecasts) == 7
    assert [f.bucket for f in out.forecasts] == sorted({f.bucket for f in out.forecasts})
    forecast = out.forecasts[0]
    assert forecast.horizon == SETTINGS.horizon_buckets
    assert forecast.mean[0] == pytest.approx(4.0)
    first = out.restocks[0]
    assert isinstance(first, RestockEvent)
    # reviewed when day 0 closed: 10 on hand - 8 sold (day 0 and the day-1 order that closed
    # it); order up to ~ (3+1) days x 4 units of demand
    assert first.inventory_position == 2
    assert first.quantity >= 16 - 2
    assert first.reorder_point >= 12  # 3 days of 4 units at a 95% service level
    assert len({r.bucket for r in out.restocks}) == len(out.restocks)  # one per bucket at most
    assert table["A@L"]["on_order"] == {r.restock_id: r.quantity for r in out.restocks}


def test_restock_id_is_deterministic_when_a_batch_is_processed_again():
    first: dict = {}
    again: dict = {}
    a = run(processor(), [snapshot(0), *orders(5)], first)
    b = run(processor(), [snapshot(0), *orders(5)], again)
    assert [r.restock_id for r in a.restocks] == [r.restock_id for r in b.restocks]
    assert a.restocks  # there was something to compare


def test_no_restock_without_known_stock():
    out = run(processor(), orders(8), {})
    assert out.forecasts and not out.restocks


def test_malformed_and_duplicate_records_do_not_stop_the_batch():
    good = orders(4)
    bad = rec(SETTINGS.topics.orders, 99, b'{"event_id": "x", "quantity": "many"')
    negative = rec(SETTINGS.topics.orders, 100, {**json.loads(good[0].value), "event_id": "n",
                                                 "quantity": -5})
    table: dict = {}
    out = run(processor(), [snapshot(100), good[0], bad, good[0], negative, *good[1:]], table)
    assert out.duplicates == 1
    assert out.accepted == 5  # snapshot + 4 orders
    dead = {d.offset: d for d in out.dead_letters}
    assert set(dead) == {99, 100}
    assert all(isinstance(d, DeadLetter) for d in dead.values())
    assert dead[99].error_kind == "invalid_json"
    assert base64.b64decode(dead[99].raw_payload_b64) == bad.value
    assert "quantity" in dead[100].error and dead[100].source_topic == SETTINGS.topics.orders
    assert sum(table["A@L"]["demand"].values()) == 16


def test_unknown_topic_is_dead_lettered():
    out = run(processor(), [rec("elsewhere", 1, b"{}")], {})
    assert out.dead_letters[0].error_kind == "unknown_topic"


def test_catalog_policy_drives_the_decision():
    policy = rec(SETTINGS.topics.catalog, 0, {
        "sku": "A", "location": "L", "lead_time_days": 1, "review_days": 1,
        "service_level": 0.9, "case_pack": 12, "moq": 24, "unit_cost": 2.5, "supplier": "acme"})
    out = run(processor(), [policy, snapshot(0), *orders(6)], {})
    assert out.restocks
    for restock in out.restocks:
        assert restock.supplier == "acme"
        assert restock.quantity % 12 == 0 and restock.quantity >= 24
        assert restock.lead_time_days == 1 and restock.unit_cost == 2.5


def test_state_survives_between_batches_like_a_table():
    table: dict = {}
    p = processor()
    run(p, [snapshot(1000), *orders(3)], table)
    saved = copy.deepcopy(table)
    out = run(p, orders(3, start=10)[1:], saved)  # o1, o2 again: duplicates of batch one
    assert out.duplicates == 2 and out.accepted == 0


def test_redeliveries_older_than_the_open_buckets_are_duplicates_not_late():
    """Yesterday's (and last week's) orders sent again: remembered for the window, so counted
    once; a new order as old as them is still late."""
    p, table = processor(), {}
    first = run(p, orders(10), table)
    assert first.accepted == 10 and not first.dead_letters
    demand = dict(table["A@L"]["demand"])
    again = run(p, orders(8), table)  # days 0..7: up to 9 buckets behind the clock
    assert again.duplicates == 8 and again.accepted == 0
    assert not again.dead_letters, [d.error_kind for d in again.dead_letters]
    assert table["A@L"]["demand"] == demand
    new_old = rec(SETTINGS.topics.orders, 99, {
        "event_id": "new-but-old", "type": "placed", "sku": "A", "location": "L",
        "quantity": 1, "occurred_at": T0.isoformat()})
    late = run(p, [new_old], table)
    assert [d.error_kind for d in late.dead_letters] == ["late"]


def test_the_id_memory_is_configurable_and_bounded():
    settings = Settings(kafka_bootstrap="unused:9092", window_buckets=7, dedupe_buckets=3)
    model = make_forecaster("moving_average")
    p = BatchProcessor(ProcessorConfig.from_settings(settings), local_predict(model),
                       model.model_version)
    table: dict = {}
    run(p, orders(30), table)
    state = table["A@L"]
    watermark = state["watermark"]
    remembered = {int(b) for b in state["seen_ids"]} | {int(b) for b in state["old_ids"]}
    assert min(remembered) >= watermark - 3, "ids pruned with their bucket"
    out = run(p, orders(30), table)
    # the open bucket and the 3 closed before it remembered; older redeliveries are late
    assert out.duplicates == 4 and len(out.dead_letters) == 26


def test_alerts_carry_the_bucket_they_are_about():
    p, table = processor(), {}
    out = run(p, [snapshot(1), *orders(12)], table)
    assert out.alerts, "low stock should raise a stock-out alert"
    for alert in out.alerts:
        assert alert.bucket is not None and alert.bucket < alert.raised_at
        assert alert.bucket.hour == 0  # daily buckets start at midnight UTC
