"""The batch (columnar) path of the processor against the one-by-one path, as a property.

Hypothesis draws random interleavings of orders, stock events and catalog policies for a few
SKUs (redeliveries, events late beyond the allowed lateness, receipts of restocks the stream
itself placed, malformed and mis-keyed records mixed in) and cuts them into random batches.
Whatever the cut, the processor must leave the same states and emit, per SKU and in order, the
same forecasts, restocks, alerts and actuals, and the same dead letters (offset, kind, reason)
as when it is handed the records one at a time."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecasting import make_forecaster
from runtime.settings import Settings
from schemas import deterministic_id, sku_key
from streams.processor import BatchOutputs, BatchProcessor, ProcessorConfig, RawRecord
from streams.state import SkuState
from streams.store import StateStore
from streams.worker import local_predict
from tests.support.batches import run_in_batches

T0 = datetime(2011, 3, 7, tzinfo=UTC)
DAY = 86_400
SETTINGS = Settings(kafka_bootstrap="unused:9092", default_lead_time_days=2,
                    allowed_lateness_buckets=1, window_buckets=7, dedupe_buckets=8)
FIXED_NOW = datetime(2011, 6, 1, tzinfo=UTC)
SKUS = ("S0", "S1", "S2")
TOPICS = SETTINGS.topics


def processor() -> BatchProcessor:
    model = make_forecaster("moving_average")
    return BatchProcessor(ProcessorConfig.from_settings(SETTINGS), local_predict(model),
                          model.model_version, now=lambda: FIXED_NOW)


def when(hours: float) -> str:
    return (T0 + timedelta(hours=hours)).isoformat()


# --- the events ------------------------------------------------------------------------------
sku_index = st.integers(0, len(SKUS) - 1)
hours_jitter = st.floats(-30, 30, allow_nan=False)

order = st.fixed_dictionaries({
    "kind": st.just("order"), "sku": sku_index, "jitter": hours_jitter,
    "type": st.sampled_from(["placed", "placed", "placed", "cancelled", "returned"]),
    "quantity": st.integers(1, 9)})
late_order = st.fixed_dictionaries({
    "kind": st.just("late"), "sku": sku_index, "back_days": st.integers(2, 5),
    "quantity": st.integers(1, 9)})
stock = st.fixed_dictionaries({
    "kind": st.just("stock"), "sku": sku_index, "jitter": hours_jitter,
    "type": st.sampled_from(["snapshot", "adjustment", "receipt"]),
    "units": st.integers(1, 60), "restock_day": st.none() | st.integers(0, 12)})
catalog = st.fixed_dictionaries({
    "kind": st.just("catalog"), "sku": sku_index, "lead": st.integers(1, 3),
    "case_pack": st.sampled_from([1, 6]), "moq": st.sampled_from([0, 12])})
redelivery = st.fixed_dictionaries({"kind": st.just("again"), "back": st.integers(1, 30)})
broken = st.fixed_dictionaries({
    "kind": st.just("broken"), "sku": sku_index,
    "how": st.sampled_from(["json", "quantity", "float_quantity", "type", "time", "key",
                            "unknown_field", "bad_sku"])})
step = st.one_of(order, order, order, order, late_order, stock, catalog, redelivery, broken)
steps = st.lists(step, min_size=1, max_size=70)


def records_of(drawn: list[dict[str, Any]], days: float) -> list[RawRecord]:
    """The records of the drawn steps: time moves on by `days` over the whole list."""
    out: list[RawRecord] = []

    def add(topic: str, value: dict[str, Any] | bytes, key: str | None) -> None:
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        out.append(RawRecord(topic, 0, len(out), None if key is None else key.encode(), raw))

    for i, s in enumerate(drawn):
        hours = 24 * days * i / max(1, len(drawn))
        if s["kind"] == "again":
            if out:
                previous = out[max(0, len(out) - s["back"])]
                add(previous.topic, previous.value or b"",
                    None if previous.key is None else previous.key.decode())
            continue
        sku = SKUS[s["sku"]]
        key = sku_key(sku, "wh")
        if s["kind"] == "order":
            add(TOPICS.orders, {"event_id": f"o{i}", "type": s["type"], "sku": sku,
                                "location": "wh", "quantity": s["quantity"],
                                "occurred_at": when(hours + s["jitter"])}, key)
        elif s["kind"] == "late":
            add(TOPICS.orders, {"event_id": f"late{i}", "type": "placed", "sku": sku,
                                "location": "wh", "quantity": s["quantity"],
                                "occurred_at": when(hours - 24 * s["back_days"])}, key)
        elif s["kind"] == "stock":
            event: dict[str, Any] = {"event_id": f"st{i}", "type": s["type"], "sku": sku,
                                     "location": "wh", "occurred_at": when(hours + s["jitter"])}
            if s["type"] == "snapshot":
                event["on_hand"] = s["units"]
            else:
                event["delta"] = s["units"] if s["type"] == "receipt" else s["units"] - 30
                if s["type"] == "receipt" and s["restock_day"] is not None:
                    closed = (T0.timestamp() // DAY) + s["restock_day"]
                    event["restock_id"] = deterministic_id("restock", sku, "wh", int(closed))
            add(TOPICS.stock, event, key)
        elif s["kind"] == "catalog":
            add(TOPICS.catalog, {"sku": sku, "location": "wh", "lead_time_days": s["lead"],
                                 "review_days": 1, "service_level": 0.9,
                                 "case_pack": s["case_pack"], "moq": s["moq"],
                                 "unit_cost": 2.0, "supplier": "acme"}, key)
        else:  # a malformed record, each kind its own way
            good = {"event_id": f"b{i}", "type": "placed", "sku": sku, "location": "wh",
                    "quantity": 2, "occurred_at": when(hours)}
            how = s["how"]
            if how == "json":
                add(TOPICS.orders, b'{"event_id": "broken", "quantity": ', key)
            elif how == "quantity":
                add(TOPICS.orders, {**good, "quantity": 0}, key)
            elif how == "float_quantity":
                add(TOPICS.orders, {**good, "quantity": 2.0}, key)
            elif how == "type":
                add(TOPICS.stock, {**good, "type": "teleported", "delta": 3}, key)
            elif how == "time":
                add(TOPICS.orders, {**good, "occurred_at": "yesterday"}, key)
            elif how == "key":
                add(TOPICS.orders, good, sku_key(SKUS[(s["sku"] + 1) % len(SKUS)], "wh"))
            elif how == "unknown_field":
                add(TOPICS.orders, {**good, "colour": "red"}, key)
            else:
                add(TOPICS.orders, {**good, "sku": "has space"}, None)
    return out


# --- running and comparing -------------------------------------------------------------------
def run(records: list[RawRecord], cuts: list[int], table: Any) -> BatchOutputs:
    return run_in_batches(processor(), records, cuts, table)


def per_sku(out: BatchOutputs) -> dict[str, Any]:
    """Outputs grouped by SKU in emission order (Kafka orders per key, not across keys)."""
    grouped: dict[tuple[str, str], list[Any]] = {}
    for name in ("forecasts", "restocks", "alerts", "demand"):
        for event in getattr(out, name):
            grouped.setdefault((name, event.sku), []).append(event.model_dump(mode="json"))
    dead = sorted((d.offset, d.error_kind, d.error) for d in out.dead_letters)
    return {"events": grouped, "dead": dead, "accepted": out.accepted,
            "duplicates": out.duplicates}


def plain(table: Any) -> dict[str, Any]:
    return {k: (v.to_json() if isinstance(v, SkuState) else v) for k, v in table.items()}


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(drawn=steps, days=st.floats(0.5, 12), cuts=st.lists(st.integers(0, 80), max_size=6),
       live_store=st.booleans())
def test_batches_give_what_one_at_a_time_gives(drawn: list[dict[str, Any]], days: float,
                                               cuts: list[int], live_store: bool) -> None:
    records = records_of(drawn, days)
    one_table: dict[str, Any] = {}
    expected = per_sku(run(records, list(range(len(records))), one_table))
    table: Any = StateStore(1).partition(0) if live_store else {}
    got = per_sku(run(records, cuts, table))
    assert got == expected
    assert plain(table) == plain(one_table)


def test_the_drawn_streams_reach_every_path() -> None:
    """A fixed mix of the steps above exercises forecasts, restocks, alerts, actuals,
    duplicates and every kind of dead letter the property test compares (so it compares
    something)."""
    drawn: list[dict[str, Any]] = []
    for i in range(120):
        sku = i % 3
        drawn.append({"kind": "order", "sku": sku, "jitter": 0.0, "type": "placed",
                      "quantity": 3 + i % 5})
        if i % 10 == 0:
            drawn.append({"kind": "stock", "sku": sku, "jitter": 0.0, "type": "snapshot",
                          "units": 5, "restock_day": None})
        if i % 17 == 0:
            drawn.append({"kind": "again", "back": 3})
        if i % 19 == 0:
            drawn.append({"kind": "late", "sku": sku, "back_days": 4, "quantity": 1})
        if i % 23 == 0:
            drawn.append({"kind": "broken", "sku": sku, "how": ["json", "key", "time"][i % 3]})
    records = records_of(drawn, 12)
    out = per_sku(run(records, [], {}))
    kinds = {name for name, _ in out["events"]}
    assert kinds == {"forecasts", "restocks", "alerts", "demand"}
    assert {kind for _, kind, _ in out["dead"]} >= {"late", "invalid_json", "key_mismatch"}
    assert out["duplicates"] > 0
