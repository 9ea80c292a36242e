"""StateStore and changelog codec: state per source partition, dirty keys, partition drops,
state bytes."""

import msgspec
import pytest
from aiokafka.partitioner import DefaultPartitioner

from schemas import sku_key
from streams.changelog import FORMAT_MSGPACK, decode_sku_state, decode_state, encode_state
from streams.state import SkuState
from streams.store import StateStore, key_partition


def test_key_partition_is_kafkas_default_partitioner():
    for i in range(200):
        key = sku_key(f"SKU{i}", f"wh{i % 3}").encode()
        assert key_partition(key, 4) == DefaultPartitioner()(key, [0, 1, 2, 3], [])


def test_each_written_key_is_dirty_once_until_taken_with_its_source_partition():
    store = StateStore(4)
    # keys a murmur2 producer would put elsewhere: the table is the input partition's
    store.partition(3)["a@x"] = {"v": 1}
    store.partition(3)["a@x"] = {"v": 2}
    store.partition(1)["b@x"] = {"v": 3}
    store.load(0, "c@x", {"v": 4})  # recovery does not dirty
    dirty = store.take_dirty()
    assert sorted(dirty) == [("a@x", 3, {"v": 2}), ("b@x", 1, {"v": 3})]
    assert store.take_dirty() == []
    assert dict(store) == {"a@x": {"v": 2}, "b@x": {"v": 3}, "c@x": {"v": 4}}


def test_a_key_on_two_partitions_is_two_states_each_moving_with_its_partition():
    store = StateStore(4)
    store.partition(0)["k@L"] = {"watermark": 5, "from": 0}
    store.partition(2)["k@L"] = {"watermark": 9, "from": 2}
    assert sorted(store.take_dirty()) == [("k@L", 0, {"watermark": 5, "from": 0}),
                                          ("k@L", 2, {"watermark": 9, "from": 2})]
    assert store.states_of("k@L") == {0: {"watermark": 5, "from": 0},
                                      2: {"watermark": 9, "from": 2}}
    assert store["k@L"]["from"] == 2 and len(store) == 1 and list(store) == ["k@L"]
    assert store.drop_partitions({2}) == 1
    assert store["k@L"] == {"watermark": 5, "from": 0}  # the other partition's is kept
    store.drop_partitions({0})
    assert "k@L" not in store and store.get("k@L") is None


def test_dropping_partitions_forgets_only_their_keys():
    store = StateStore(4)
    keys = [sku_key(f"S{i}", "wh") for i in range(40)]
    for i, k in enumerate(keys):
        store.partition(i % 4)[k] = {}
    assert store.drop_partitions({1, 3}) == 20
    assert sorted(store) == sorted(k for i, k in enumerate(keys) if i % 4 in (0, 2))
    assert store.held() == [0, 2]


def test_a_partition_outside_the_topic_is_refused():
    with pytest.raises(ValueError, match=r"outside 0\.\.3"):
        StateStore(4).partition(4)


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
    table = store.partition(1)
    table.update({"a@L": 1, "b@L": 2})
    table.update([("c@L", 3)], d=4)  # the MutableMapping forms still work
    assert dict(store) == dict(table) == {"a@L": 1, "b@L": 2, "c@L": 3, "d": 4}
    dirty = store.take_dirty()
    assert dirty == [("a@L", 1, 1), ("b@L", 1, 2), ("c@L", 1, 3), ("d", 1, 4)]
    assert not store.has_dirty()
