"""SkuState: buckets, dedupe, lateness, stock accounting — plain code, no Kafka."""

import json

from streams.state import SkuState, bucket_index

DAY = 86_400


def order(state: SkuState, event_id: str, day: float, qty: int) -> str:
    return state.apply_order(event_id, day * DAY, qty, bucket_seconds=DAY, window=7, lateness=1)


def stock(state: SkuState, event_id: str, day: float, kind: str = "snapshot", *,
          on_hand: int | None = None, delta: int | None = None, restock_id: str | None = None):
    return state.apply_stock(event_id, day * DAY, kind, on_hand=on_hand, delta=delta,
                             restock_id=restock_id, bucket_seconds=DAY, lateness=1)


def test_bucket_index_is_utc_aligned():
    assert bucket_index(0, DAY) == 0
    assert bucket_index(DAY - 1, DAY) == 0
    assert bucket_index(DAY, DAY) == 1


def test_demand_is_bucketed_and_a_new_bucket_closes_the_previous():
    s = SkuState("A", "L")
    assert order(s, "1", 10.1, 3) == "ok"
    assert order(s, "2", 10.9, 2) == "ok"
    assert not s.forecast_pending
    assert order(s, "3", 12.5, 4) == "ok"
    assert s.forecast_pending
    window = s.closed_window(4)
    assert window[-2:].tolist() == [5.0, 0.0]  # day 10 sold 5, day 11 nothing
    assert str(window[0]) == "nan"  # before the SKU was first seen


def test_duplicate_event_id_counts_once():
    s = SkuState("A", "L")
    assert order(s, "x", 5.2, 3) == "ok"
    assert order(s, "x", 5.2, 3) == "duplicate"
    assert s.demand == {5: 3.0}


def test_late_event_is_refused_but_allowed_lateness_is_accepted():
    s = SkuState("A", "L")
    order(s, "1", 10.5, 1)
    assert order(s, "2", 9.5, 2) == "ok"  # one bucket late: allowed
    assert order(s, "3", 8.5, 2) == "late"
    assert s.demand[9] == 2.0 and 8 not in s.demand


def test_stock_does_not_move_the_demand_clock():
    s = SkuState("A", "L")
    order(s, "1", 10.5, 1)
    stock(s, "s", 15.0, on_hand=50)
    assert order(s, "2", 10.8, 1) == "ok"
    assert s.watermark == 10


def test_orders_after_a_snapshot_reduce_on_hand_and_overflow_to_backorders():
    s = SkuState("A", "L")
    stock(s, "s", 10.0, on_hand=5)
    order(s, "1", 10.5, 3)
    order(s, "2", 10.6, 4)
    assert (s.on_hand, s.backorders) == (0, 2)
    order(s, "3", 10.7, -3)  # a cancellation clears backorders first
    assert (s.on_hand, s.backorders) == (1, 0)


def test_snapshot_already_reflects_earlier_orders():
    s = SkuState("A", "L")
    stock(s, "s", 10.99, on_hand=7)
    order(s, "1", 10.5, 3)  # read after the snapshot but happened before it
    assert s.on_hand == 7
    stock(s, "old", 10.2, on_hand=100)  # an older snapshot never wins
    assert s.on_hand == 7


def test_receipt_closes_its_open_order():
    s = SkuState("A", "L")
    stock(s, "s", 1.0, on_hand=0)
    s.on_order["r1"] = 10
    assert s.inventory_position() == 10
    stock(s, "rc", 3.0, "receipt", delta=10, restock_id="r1")
    assert s.on_order == {} and s.on_hand == 10 and s.inventory_position() == 10


def test_json_round_trip_keeps_everything():
    s = SkuState("A", "L")
    stock(s, "s", 1.0, on_hand=4)
    order(s, "1", 1.5, 2)
    order(s, "2", 2.5, 1)
    s.on_order["r"] = 3
    back = SkuState.from_json(json.loads(json.dumps(s.to_json())))
    assert back == s


def test_ids_of_closed_buckets_are_remembered_as_fingerprints_and_pruned():
    from streams.state import SkuState as State

    s = State(sku="A", location="L")
    day = 86_400
    for d in range(10):
        for i in range(50):
            assert s.apply_order(f"o{d}-{i}", d * day + i, 1, bucket_seconds=day, window=7,
                                 lateness=1, memory=5) == "ok"
    assert set(s.seen_ids) == {8, 9} and set(s.old_ids) == {4, 5, 6, 7}
    for d in (4, 7):
        assert s.apply_order(f"o{d}-3", d * day, 1, bucket_seconds=day, window=7, lateness=1,
                             memory=5) == "duplicate"
        assert s.apply_order(f"new-{d}", d * day, 1, bucket_seconds=day, window=7, lateness=1,
                             memory=5) == "late"
    assert s.apply_order("o2-1", 2 * day, 1, bucket_seconds=day, window=7, lateness=1,
                         memory=5) == "late", "older than the memory"
    # a redelivered stock adjustment in a remembered bucket is not applied twice
    assert s.apply_stock("o5-9", 5 * day, "adjustment", on_hand=None, delta=3, restock_id=None,
                         bucket_seconds=day, lateness=1) == "duplicate"


def test_a_state_written_before_the_id_memory_still_decodes():
    from streams.state import SkuState as State

    old = {"sku": "A", "location": "L", "first_bucket": 1, "watermark": 3,
           "demand": {"2": 4.0}, "seen_ids": {"2": ["a"], "3": ["b"]}, "on_hand": 0,
           "backorders": 0, "stock_known": False, "last_stock_bucket": None,
           "stock_as_of": None, "on_order": {}, "policy": None, "open_alerts": {},
           "next_bucket_high": None, "forecast_pending": False}
    state = State.from_json(old)
    assert state.old_ids == {} and state.remembers("a", 2)
    assert State.from_json(state.to_json()) == state


def test_a_placed_order_keeps_when_it_is_due_until_received_in_full():
    s = SkuState("A", "L")
    stock(s, "s", 1.0, on_hand=0)
    s.place_order("r1", 10, issued_bucket=1, lead_buckets=3)
    s.place_order("r2", 5, issued_bucket=2, lead_buckets=3)
    s.overdue.append("r1")  # the processor alerted it
    assert s.on_order_terms == {"r1": [1, 3], "r2": [2, 3]}
    stock(s, "rc1", 5.0, "receipt", delta=4, restock_id="r1")  # part of it: still due
    assert s.on_order == {"r1": 6, "r2": 5} and s.on_order_terms["r1"] == [1, 3]
    stock(s, "rc2", 5.5, "receipt", delta=6, restock_id="r1")
    assert s.on_order == {"r2": 5} and s.on_order_terms == {"r2": [2, 3]} and s.overdue == []
    back = SkuState.from_json(json.loads(json.dumps(s.to_json())))
    assert back == s


def test_a_state_written_before_restock_terms_decodes_and_is_timed_from_now():
    old = {"sku": "A", "location": "L", "first_bucket": 1, "watermark": 3,
           "demand": {"1": 2.0}, "seen_ids": {"3": ["e"]}, "on_hand": 0, "backorders": 4,
           "stock_known": True, "last_stock_bucket": 1, "stock_as_of": 86_400.0,
           "on_order": {"r-old": 7}, "policy": None, "open_alerts": {"stockout_risk": 2},
           "next_bucket_high": 3.5, "forecast_pending": False}  # as main wrote it
    s = SkuState.from_json(old)
    assert s.on_order == {"r-old": 7} and s.on_order_terms == {} and s.overdue == []
    s.time_orders(9, 2)  # its first review after the upgrade: bucket 9, lead 2
    s.place_order("r-new", 3, issued_bucket=9, lead_buckets=2)
    s.time_orders(10, 2)  # timed once: a later review does not move it
    assert s.on_order_terms == {"r-old": [9, 2], "r-new": [9, 2]}


def test_packed_fingerprints_are_sorted_distinct_little_endian_uint32():
    """The format of `old_ids` (raw in the changelog's records, base64 in the JSON and the
    map records of before)."""
    import base64

    import numpy as np

    from streams.state import SkuState, _pack, _unpack

    fps = [7, 3, 2**32 - 1, 3, 0, 65_536]
    expected = np.unique(np.array(fps, dtype=np.uint32)).astype("<u4").tobytes()
    assert _pack(fps) == expected
    assert _unpack(_pack(fps)).tolist() == [0, 3, 7, 65_536, 2**32 - 1]
    assert _pack([]) == b""
    state = SkuState("A", "L", old_ids={4: expected})
    assert state.to_json()["old_ids"] == {"4": base64.b64encode(expected).decode("ascii")}
    assert SkuState.from_json(state.to_json()) == state


def test_a_hot_buckets_ids_are_deduped_through_a_set_that_is_never_serialised():
    from streams.changelog import decode_sku_state, encode_state
    from streams.state import SkuState

    state = SkuState(sku="A", location="L")
    t = 86_400 * 15_000 + 10.0
    for i in range(100):
        assert state.order(f"o{i}", t, 1, 86_400, 7, 1) == "ok"
    assert state.apply_stock("s1", t, "adjustment", on_hand=None, delta=5, restock_id=None,
                             bucket_seconds=86_400, lateness=1) == "ok"  # grows the list alone
    assert state.order("s1", t, 1, 86_400, 7, 1) == "duplicate"
    assert state.order("o42", t, 1, 86_400, 7, 1) == "duplicate"
    assert state.order("o100", t, 1, 86_400, 7, 1) == "ok"
    assert state.order("o100", t, 1, 86_400, 7, 1) == "duplicate"
    assert state.demand[15_000] == 101.0 and len(state.seen_ids[15_000]) == 102
    assert "_id_sets" not in state.to_json()
    again = decode_sku_state(encode_state(state))
    assert again == state and again is not None and not hasattr(again, "_id_sets")
    assert again.order("o7", t, 1, 86_400, 7, 1) == "duplicate"  # the set is rebuilt
    # a bucket past the lateness is fingerprinted and its set dropped with its list
    assert state.order("later", t + 3 * 86_400, 1, 86_400, 7, 1) == "ok"
    assert 15_000 not in state.seen_ids and 15_000 not in state.__dict__["_id_sets"]
    assert state.order("o5", t, 1, 86_400, 7, 1) == "duplicate"  # remembered by fingerprint
