"""BatchProcessor: a batch of raw records in, events out — with a dict standing in for the table."""

import asyncio
import base64
import copy
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from forecasting import make_forecaster
from runtime.settings import Settings
from schemas import DeadLetter, DemandEvent, RestockEvent, deterministic_id
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


def test_an_unreceived_restock_becomes_overdue_once_and_the_risk_stops_counting_it():
    table: dict = {}
    out = run(processor(), [snapshot(10), *orders(14)], table)
    overdue = [a for a in out.alerts if a.kind == "overdue_restock"]
    first = out.restocks[0]  # reviewed when day 0 closed, lead 3 days, grace 2 buckets
    assert overdue[0].details["restock_ids"] == [first.restock_id]
    # raised at the review of the bucket lead time + grace after the restock's
    assert overdue[0].alert_id == deterministic_id(
        "alert", "A", "L", "overdue_restock", (first.bucket + timedelta(days=3 + 2)).isoformat())
    alerted = [r for a in overdue for r in a.details["restock_ids"]]
    assert len(alerted) == len(set(alerted))  # one alert per restock
    assert set(alerted) == set(table["A@L"]["overdue"]) <= set(table["A@L"]["on_order"])
    # the stock-out risk after it leaves the overdue units out: a new episode opens that the
    # same stream without overdue restocks does not have
    late = [a for a in out.alerts if a.kind == "stockout_risk" and a.details["overdue_units"]]
    assert late and late[0].details["overdue_units"] == first.quantity
    patient = BatchProcessor(
        replace(ProcessorConfig.from_settings(SETTINGS), restock_grace_buckets=1000),
        local_predict(make_forecaster("moving_average")), "m")
    calm = run(patient, [snapshot(10), *orders(14)], {})
    assert not [a for a in calm.alerts if a.kind == "overdue_restock"]
    assert len([a for a in calm.alerts if a.kind == "stockout_risk"]) == 1 < len(
        [a for a in out.alerts if a.kind == "stockout_risk"])
    # and stock data older than SHELFCAST_STALE_STOCK_BUCKETS (7) is stale, once
    stale = [a for a in out.alerts if a.kind == "stale_stock"]
    assert len(stale) == 1 and stale[0].details["age_buckets"] == 8


def test_every_closed_bucket_publishes_its_actual_with_the_forecast_made_for_it():
    p, table = processor(), {}
    def order(event_id: str, at: datetime, qty: int) -> RawRecord:
        return rec(SETTINGS.topics.orders, 99, {
            "event_id": event_id, "type": "placed", "sku": "A", "location": "L",
            "quantity": qty, "occurred_at": at.isoformat()})

    # days 0..7 with 4 a day, then silence until day 10 (days 8 and 9 close with 0)
    first = run(p, orders(8), table)
    late = order("late", T0 + timedelta(days=6, hours=5), 3)  # day 7 is open: day 6 takes it
    second = run(p, [late, order("d10", T0 + timedelta(days=10), 2)], table)
    demand = [*first.demand, *second.demand]
    by_day = {}
    for event in demand:
        by_day.setdefault((event.bucket - T0.replace(hour=0)).days, []).append(event)
    # days 0..6 close in the first batch, each once with the forecast for it (day 0 had none:
    # no forecast was made before it), and each again as a revision one bucket later
    assert [e.model_version is not None for e in by_day[0]] == [False, False]
    for day in range(1, 7):
        published, *revisions = by_day[day]
        assert published.quantity == 4.0 and published.forecast_quantiles is not None
        assert published.model_version == p.model_version
        assert published.forecast_levels == list(first.forecasts[0].quantile_levels)
        assert [r.forecast_quantiles for r in revisions] == [None]
    # the forecast issued when day d-1 closed is the one scored on day d
    assert by_day[3][0].forecast_quantiles == first.forecasts[2].quantiles[0]
    # day 7 closed in the second batch (the clock jumped to day 10), days 8 and 9 with it;
    # day 6 got a late order after it closed: its revision carries it
    assert [e.quantity for e in by_day[7]] == [4.0] and by_day[7][0].model_version
    assert [e.quantity for e in by_day[8]] == [0.0] and by_day[8][0].model_version is None
    assert [e.quantity for e in by_day[9]] == [0.0]
    assert by_day[6][-1].quantity == 7.0 and by_day[6][-1].forecast_quantiles is None
    for event in demand:  # every row is a valid contract event
        DemandEvent.model_validate_json(event.model_dump_json())


def test_odd_records_in_a_long_run_alone_take_the_exact_path(monkeypatch):
    """A run with a few malformed or mis-keyed records is halved until its halves decode as
    columns: only a handful of records around each odd one are decoded one by one, and the
    dead letters name each odd record's reason."""
    p = processor()
    good = orders(1000)
    bad_at = {137: b'{"event_id": "x", "quantity": ', 612: json.dumps({
        "event_id": "k", "type": "placed", "sku": "B", "location": "L", "quantity": 1,
        "occurred_at": T0.isoformat()}).encode()}
    records = [rec(SETTINGS.topics.orders, i, bad_at.get(i, r.value or b""))
               for i, r in enumerate(good)]
    exact = 0
    decode_one = p._decode

    def counted(record):
        nonlocal exact
        exact += 1
        return decode_one(record)

    monkeypatch.setattr(p, "_decode", counted)
    out = run(p, records, {})
    assert sorted((d.offset, d.error_kind) for d in out.dead_letters) == [
        (137, "invalid_json"), (612, "key_mismatch")]
    assert exact <= 2 * 4  # _EXACT_BELOW records around each odd one
    assert out.accepted == 998
