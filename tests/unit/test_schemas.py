"""Event contracts: strict validation with readable reasons, and JSON Schema export."""

import json
from pathlib import Path

import pytest

from schemas import (
    CONTRACT_MODELS,
    InvalidEvent,
    OrderEvent,
    StockEvent,
    decode,
    deterministic_id,
    encode,
    export_json_schemas,
    sku_key,
    split_key,
)

ORDER = {"event_id": "e1", "type": "placed", "sku": "85123A", "location": "uk", "quantity": 6,
         "occurred_at": "2010-12-01T08:26:00+00:00"}


def raw(**changes) -> bytes:
    return json.dumps({**ORDER, **changes}).encode()


def test_a_valid_order_round_trips():
    event = decode(OrderEvent, raw())
    assert event.quantity == 6 and event.schema_version == 1
    assert decode(OrderEvent, encode(event)) == event
    assert decode(OrderEvent, raw(type="returned")).signed_quantity() == -6


@pytest.mark.parametrize(
    ("payload", "kind", "needle"),
    [
        (b"{not json", "invalid_json", "JSON"),
        (b"\xff\xfe\x00", "not_utf8", "UTF-8"),
        (None, "empty", "empty"),
        (raw(quantity=-3), "validation", "quantity"),
        (raw(quantity="6"), "validation", "quantity"),  # strict: no string coercion
        (raw(occurred_at="2010-12-01T08:26:00"), "validation", "timezone"),
        (raw(occurred_at="2999-01-01T00:00:00+00:00"), "validation", "1990..2100"),
        (raw(colour="red"), "validation", "colour"),  # unknown fields are errors
        (raw(sku="a@b"), "validation", "sku"),
        (raw(schema_version=2), "validation", "schema_version"),
        (raw(type="stolen"), "validation", "type"),
    ],
)
def test_bad_records_are_refused_with_a_reason(payload, kind, needle):
    with pytest.raises(InvalidEvent) as info:
        decode(OrderEvent, payload)
    assert info.value.kind == kind
    assert needle.lower() in info.value.reason.lower()


def test_oversized_payload_is_refused_before_parsing():
    with pytest.raises(InvalidEvent) as info:
        decode(OrderEvent, b" " * 2048, max_bytes=1024)
    assert info.value.kind == "oversized"


def test_stock_event_needs_the_field_its_type_implies():
    base = {"event_id": "s", "sku": "A", "location": "L", "occurred_at": ORDER["occurred_at"]}
    assert decode(StockEvent, json.dumps({**base, "type": "snapshot", "on_hand": 3}).encode())
    for bad in ({"type": "snapshot", "delta": 3}, {"type": "receipt", "delta": -1},
                {"type": "adjustment", "on_hand": 3}):
        with pytest.raises(InvalidEvent):
            decode(StockEvent, json.dumps({**base, **bad}).encode())


def test_keys_and_ids():
    assert sku_key("85123A", "uk") == "85123A@uk"  # the wire format every keyed topic uses
    assert split_key(sku_key("85123A", "uk")) == ("85123A", "uk")
    assert split_key("a@b@uk") == ("a@b", "uk")  # a location never holds the separator
    assert deterministic_id("restock", "A", "L", 7) == deterministic_id("restock", "A", "L", 7)
    assert deterministic_id("restock", "A", "L", 7) != deterministic_id("restock", "A", "L", 8)


def test_json_schema_export_writes_one_file_per_contract(tmp_path: Path):
    paths = export_json_schemas(tmp_path)
    assert len(paths) == len(CONTRACT_MODELS)
    order = json.loads((tmp_path / "OrderEvent.v1.schema.json").read_text())
    assert order["additionalProperties"] is False
    assert set(order["required"]) >= {"event_id", "type", "sku", "location", "quantity",
                                      "occurred_at"}


def test_restock_demand_fields_are_optional_and_checked():
    from schemas import RestockEvent
    from tests.factories import make_restock

    old = json.loads(encode(make_restock("r1")))
    for name in ("case_pack", "moq", "demand_levels", "demand_quantiles"):
        old.pop(name)  # an event from before these fields existed
    assert decode(RestockEvent, json.dumps(old).encode()).demand_quantiles is None
    good = {**old, "case_pack": 6, "demand_levels": [0.1, 0.5, 0.9],
            "demand_quantiles": [3.0, 8.0, 15.5]}
    assert decode(RestockEvent, json.dumps(good).encode()).case_pack == 6
    for bad in ({"demand_quantiles": [3.0, 8.0]}, {"demand_levels": [0.5, 0.1, 0.9]},
                {"demand_quantiles": [3.0, 2.0, 15.5]}, {"demand_levels": None},
                {"case_pack": 0}):
        with pytest.raises(InvalidEvent):
            decode(RestockEvent, json.dumps({**good, **bad}).encode())
