"""StateStore and changelog codec: key partitions, dirty keys, partition drops, state bytes."""

import msgspec
from aiokafka.partitioner import DefaultPartitioner

from schemas import sku_key
from streams.changelog import FORMAT_MSGPACK, decode_sku_state, decode_state, encode_state
from streams.state import SkuState
from streams.store import StateStore


def test_key_partition_is_kafkas_default_partitioner():
    store = StateStore(4)
    for i in range(200):
        key = sku_key(f"SKU{i}", f"wh{i % 3}")
        assert store.partition_for(key) == DefaultPartitioner()(key.encode(), [0, 1, 2, 3], [])


def test_each_written_key_is_dirty_once_until_taken():
    store = StateStore(4)
    store["a@x"] = {"v": 1}
    store["a@x"] = {"v": 2}
    store["b@x"] = {"v": 3}
    store.load("c@x", {"v": 4})  # recovery does not dirty
    dirty = store.take_dirty()
    assert [(k, v) for k, _, v in dirty] == [("a@x", {"v": 2}), ("b@x", {"v": 3})]
    assert all(p == store.partition_for(k) for k, p, _ in dirty)
    assert store.take_dirty() == []
    assert dict(store) == {"a@x": {"v": 2}, "b@x": {"v": 3}, "c@x": {"v": 4}}


def test_dropping_partitions_forgets_only_their_keys():
    store = StateStore(4)
    keys = [sku_key(f"S{i}", "wh") for i in range(40)]
    for k in keys:
        store[k] = {}
    store.drop_partitions({1, 3})
    assert sorted(store) == sorted(k for k in keys if store.partition_for(k) in (0, 2))


def test_state_records_are_msgpack_behind_a_format_byte_and_read_back_equal():
    state = SkuState("A", "L", model_state=bytes(range(256)) * 8)
    state.apply_order("e1", 1e9, 3, bucket_seconds=86_400, window=56, lateness=1)
    state.on_order["r1"] = 5
    raw = encode_state(state)
    assert raw is not None and raw[0] == FORMAT_MSGPACK
    assert msgspec.msgpack.decode(raw[1:])["model_state"] == state.model_state  # raw bytes
    assert decode_sku_state(raw) == state
    assert decode_state(raw) == state.to_json()
    assert decode_sku_state(encode_state(state.to_json())) == state  # a JSON dict encodes too
    assert encode_state(None) is None and decode_state(None) is None
    assert decode_sku_state(None) is None


def test_json_records_of_before_still_decode():
    state = SkuState("A", "L", model_state=b"\x01\x00blob")
    state.apply_order("e1", 1e9, 3, bucket_seconds=86_400, window=56, lateness=1)
    old = msgspec.json.encode(state.to_json())  # what the JSON codec wrote
    assert old[:1] == b"{"
    assert decode_sku_state(old) == state
    legacy = msgspec.json.encode({k: v for k, v in state.to_json().items()
                                  if k != "model_state"})  # before the field existed
    assert decode_sku_state(legacy) == SkuState(**{**state.__dict__, "model_state": None})


def test_state_with_awkward_floats_reads_back_equal():
    state = SkuState("A", "L", first_bucket=1, watermark=3, demand={1: 1e17, 2: -0.0, 3: 1 / 3},
                     seen_ids={3: ["é", "x\u2028y"]}, stock_as_of=1_704_024_000.123456,
                     next_bucket_high=2.5e-7, policy={"sku": "A", "service_level": 0.95})
    raw = encode_state(state)
    assert decode_sku_state(raw) == state
    assert SkuState.from_json(decode_state(raw)) == state


def test_update_writes_and_marks_every_key_dirty():
    store = StateStore(4)
    store.update({"a@L": 1, "b@L": 2})
    store.update([("c@L", 3)], d=4)  # the MutableMapping forms still work
    assert dict(store) == {"a@L": 1, "b@L": 2, "c@L": 3, "d": 4}
    dirty = store.take_dirty()
    assert [(k, v) for k, _, v in dirty] == [("a@L", 1), ("b@L", 2), ("c@L", 3), ("d", 4)]
    assert all(p == store.partition_for(k) for k, p, _ in dirty)
    assert not store.has_dirty()
