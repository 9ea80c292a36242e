"""The fast decoder never accepts what the event models refuse, and agrees on what both accept."""

import json
import random

import pytest

from schemas import InvalidEvent, OrderEvent, StockEvent, decode
from streams.codec import (
    fast_order,
    fast_stock,
    order_columns,
    order_columns_from,
    stock_columns,
    stock_columns_from,
)

ORDER = {"event_id": "e1", "type": "placed", "sku": "MUG-1", "location": "wh1", "quantity": 3,
         "occurred_at": "2011-03-07T10:00:00+00:00", "unit_price": 2.5, "order_id": "o9"}
STOCK = {"event_id": "s1", "type": "snapshot", "sku": "MUG-1", "location": "wh1",
         "on_hand": 40, "occurred_at": "2011-03-07T10:00:00.250Z"}

ODD_VALUES = [None, True, False, 0, -1, 1, 1.0, 1.5, 10**7, 10**10, "", "x" * 65, "x" * 129,
              "a@b", "a b", "é", "\x1c", [], {}, "2011-03-07", "2011-03-07T10:00:00",
              "2011-03-07 10:00:00Z", "2011-02-30T10:00:00Z", "1989-12-31T23:00:00Z",
              "2101-01-01T00:00:00Z", "2011-03-07T10:00:00+24:00", "2011-03-07T10:00:00.1234567Z",
              "placed", "cancelled", "returned", "snapshot", "adjustment", "receipt", "2011"]


def mutations(base: dict, rng: random.Random, n: int):
    keys = [*base, "schema_version", "on_hand", "delta", "restock_id", "extra"]
    for _ in range(n):
        record = dict(base)
        for _ in range(rng.randint(1, 3)):
            key = rng.choice(keys)
            if rng.random() < 0.15:
                record.pop(key, None)
            else:
                record[key] = rng.choice(ODD_VALUES)
        yield json.dumps(record).encode()


def model_view(model, raw: bytes):
    try:
        return decode(model, raw)
    except InvalidEvent:
        return None


@pytest.mark.parametrize(("model", "fast", "base"), [
    (OrderEvent, fast_order, ORDER),
    (StockEvent, fast_stock, STOCK),
    (StockEvent, fast_stock, {**STOCK, "type": "receipt", "on_hand": None, "delta": 5,
                              "restock_id": "r1"}),
])
def test_fast_path_accepts_only_what_the_model_accepts(model, fast, base):
    rng = random.Random(5)
    accepted = refused_by_both = 0
    for raw in [json.dumps(base).encode(), *mutations(base, rng, 3000)]:
        got = fast(raw, 1 << 20)
        full = model_view(model, raw)
        if got is None:
            refused_by_both += full is None
            continue
        assert full is not None, f"fast path accepted what the model refuses: {raw!r}"
        accepted += 1
        assert got.event_id == full.event_id and got.sku == full.sku
        assert got.location == full.location
        assert got.occurred_at == full.occurred_at.timestamp()
        if model is OrderEvent:
            assert got.signed_quantity == full.signed_quantity()
        else:
            assert (got.type, got.on_hand, got.delta, got.restock_id) == (
                full.type, full.on_hand, full.delta, full.restock_id)
    assert accepted > 50 and refused_by_both > 500  # both sides were exercised


def test_malformed_and_oversized_take_the_slow_path():
    assert fast_order(b'{"event_id": "x", "quantity": ', 1 << 20) is None
    assert fast_order(b"\xff\xfe", 1 << 20) is None
    assert fast_order(None, 1 << 20) is None
    assert fast_order(json.dumps(ORDER).encode(), 10) is None
    assert fast_order(json.dumps([ORDER]).encode(), 1 << 20) is None
    order = fast_order(json.dumps({**ORDER, "type": "returned"}).encode(), 1 << 20)
    assert order is not None and order.signed_quantity == -3


def valid_orders(rng: random.Random, n: int) -> list[bytes]:
    out = []
    for i in range(n):
        record = {**ORDER, "event_id": f"e{i}", "quantity": rng.randint(1, 50),
                  "type": rng.choice(["placed", "cancelled", "returned"]),
                  "sku": rng.choice(["MUG-1", "TEA_2", "x"]),
                  "occurred_at": rng.choice(["2011-03-07T10:00:00+00:00", "2011-03-07T23:59:59Z",
                                             "2011-03-08T01:02:03.5-05:00",
                                             "2099-12-31T00:00:00.123456+01:30"])}
        for optional in ("unit_price", "order_id", "schema_version"):
            if rng.random() < 0.3:
                record.pop(optional, None)
        if rng.random() < 0.2:
            record["unit_price"] = rng.choice([0, 3, 0.5, None])
        out.append(json.dumps(record).encode())
    return out


def test_a_run_decoded_by_columns_equals_record_by_record():
    rng = random.Random(11)
    broken = list(mutations(ORDER, rng, 400))
    runs_accepted = 0
    for _ in range(300):
        batch = valid_orders(rng, rng.randint(1, 40))
        if rng.random() < 0.5:  # one odd record in the run
            batch.insert(rng.randrange(len(batch) + 1), rng.choice(broken))
        singles = [fast_order(raw, 1 << 20) for raw in batch]
        columns = order_columns(batch, 1 << 20)
        if any(s is None for s in singles):
            assert columns is None, "columns accepted a run with a record fast_order refuses"
            continue
        assert columns is not None, "a plainly valid run should take the column path"
        runs_accepted += 1
        assert [tuple(row) for row in zip(*columns, strict=True)] == [tuple(s) for s in singles]
    assert runs_accepted > 100


def test_columns_refuse_oversized_missing_and_odd_values():
    good = valid_orders(random.Random(2), 3)
    assert order_columns([], 1 << 20) == ([], [], [], [], [])
    assert order_columns(good, 10) is None
    assert order_columns([*good, None], 1 << 20) is None
    assert order_columns([*good, b"[1]"], 1 << 20) is None
    assert order_columns([*good, b'{"event_id": "x"'], 1 << 20) is None
    assert order_columns([*good, json.dumps({**ORDER, "sku": ["a"]}).encode()], 1 << 20) is None
    two_times = f'{ORDER["occurred_at"]}\n{ORDER["occurred_at"]}'
    assert order_columns([json.dumps({**ORDER, "occurred_at": two_times}).encode()],
                         1 << 20) is None
    assert order_columns([json.dumps({**ORDER, "schema_version": True}).encode()], 1 << 20) is None


def test_columns_agree_with_fast_order_on_every_mutated_record():
    """The typed column decoder (msgspec) and `fast_order` (orjson + checks) are two
    implementations of one contract: on each odd record alone they accept and refuse alike."""
    rng = random.Random(23)
    accepted = 0
    for raw in mutations(ORDER, rng, 3000):
        single = fast_order(raw, 1 << 20)
        columns = order_columns([raw], 1 << 20)
        if single is None:
            assert columns is None, f"columns accepted what fast_order refuses: {raw!r}"
            continue
        assert columns is not None, f"columns refused a plainly valid record: {raw!r}"
        accepted += 1
        assert [tuple(row) for row in zip(*columns, strict=True)] == [tuple(single)]
    assert accepted > 50


RECEIPT = {**STOCK, "type": "receipt", "on_hand": None, "delta": 5, "restock_id": "r1"}


@pytest.mark.parametrize("base", [STOCK, RECEIPT, {**RECEIPT, "type": "adjustment",
                                                   "delta": -4, "restock_id": None}])
def test_stock_columns_agree_with_fast_stock_on_every_mutated_record(base):
    """`stock_columns` (msgspec) and `fast_stock` (orjson + checks): one contract, so on each
    odd record alone they accept and refuse alike, with the same values."""
    rng = random.Random(29)
    accepted = 0
    for raw in [json.dumps(base).encode(), *mutations(base, rng, 3000)]:
        single = fast_stock(raw, 1 << 20)
        columns = stock_columns([raw], 1 << 20)
        if single is None:
            assert columns is None, f"columns accepted what fast_stock refuses: {raw!r}"
            continue
        assert columns == [single], f"columns disagree on {raw!r}"
        accepted += 1
    assert accepted > 50


def test_a_stock_run_decoded_by_columns_equals_record_by_record():
    rng = random.Random(13)
    bases = [STOCK, RECEIPT, {**RECEIPT, "type": "adjustment", "delta": -2}]
    broken = [raw for base in bases for raw in mutations(base, rng, 100)]
    runs_accepted = 0
    for _ in range(200):
        batch = [json.dumps({**rng.choice(bases), "event_id": f"s{i}",
                             "occurred_at": rng.choice(["2011-03-07T10:00:00Z",
                                                        "2011-03-08 01:02:03.5-05:00"])}).encode()
                 for i in range(rng.randint(1, 30))]
        if rng.random() < 0.5:
            batch.insert(rng.randrange(len(batch) + 1), rng.choice(broken))
        singles = [fast_stock(raw, 1 << 20) for raw in batch]
        columns = stock_columns(batch, 1 << 20)
        if any(s is None for s in singles):
            assert columns is None
            continue
        assert columns == singles
        runs_accepted += 1
    assert runs_accepted > 80
    assert stock_columns([], 1 << 20) == []
    assert stock_columns([json.dumps(STOCK).encode(), None], 1 << 20) is None
    assert stock_columns([json.dumps(STOCK).encode()], 10) is None


def test_columns_from_stop_at_the_first_record_that_does_not_parse():
    good = valid_orders(random.Random(4), 10)
    run = [*good[:3], b'{"event_id": "x"', *good[3:7], None, *good[7:]]
    columns, n = order_columns_from(run, 0, 1 << 20)
    assert n == 3 and columns is not None and columns.event_id == ["e0", "e1", "e2"]
    columns, n = order_columns_from(run, 4, 1 << 20)
    assert n == 4 and columns is not None and columns.event_id == ["e3", "e4", "e5", "e6"]
    columns, n = order_columns_from(run, 9, 1 << 20)
    assert n == 3 and columns is not None and len(columns.event_id) == 3
    odd_name = json.dumps({**ORDER, "sku": "a b"}).encode()  # parses, fails a column check
    assert order_columns_from([*good, odd_name], 0, 1 << 20) == (None, 11)
    stock = [json.dumps(STOCK).encode(), json.dumps({**STOCK, "on_hand": -1}).encode()]
    rows, n = stock_columns_from(stock, 0, 1 << 20)
    assert n == 1 and rows == [fast_stock(stock[0], 1 << 20)]
