"""StateStore and changelog codec: state per source partition, dirty keys, partition drops,
state bytes."""

import base64

import msgspec
import pytest
from aiokafka.partitioner import DefaultPartitioner

from schemas import sku_key
from streams.changelog import FORMAT_ARRAY, decode_sku_state, decode_state, encode_state
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
    assert raw is not None and raw[0] == FORMAT_ARRAY
    fields = msgspec.msgpack.decode(raw[1:])  # the fields in declaration order, no names
    assert fields[:2] == ["A", "L"] and len(fields) == len(SkuState.__struct_fields__)
    assert fields[SkuState.__struct_fields__.index("model_state")] == state.model_state
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
    assert decode_sku_state(legacy) == msgspec.structs.replace(state, model_state=None)


# A record as main's worker wrote it before array records (FORMAT_MSGPACK: a map of the
# dataclass's fields by name), every field set: it must still recover.
_MAP_RECORD = bytes.fromhex(
    "01de0018a3736b75a5534b552d31a86c6f636174696f6ea477682f31ac66697273745f6275636b6574cd3a98"
    "a977617465726d61726bcd3a9ba664656d616e6482cd3a99cb4000000000000000cd3a9bcbbff00000000000"
    "00a87365656e5f69647381cd3a9b92a26539a2c3a9a76f6c645f69647381cd3a99a8594b6f5a73773d3da76f"
    "6e5f68616e6407aa6261636b6f726465727301ab73746f636b5f6b6e6f776ec3b16c6173745f73746f636b5f"
    "6275636b6574cd3a9aab73746f636b5f61735f6f66cb41d35f1b40000000a86f6e5f6f7264657281a2723105"
    "ae6f6e5f6f726465725f7465726d7381a2723192cd3a9a03a76f76657264756591a27230a6706f6c69637982"
    "a3736b75a5534b552d31ad736572766963655f6c6576656ccb3fee666666666666ab6f70656e5f616c657274"
    "7381ab7374616c655f73746f636bcd3a9ab06e6578745f6275636b65745f68696768cb401a000000000000b0"
    "666f7265636173745f70656e64696e67c3ab6d6f64656c5f7374617465c4060102626c6f62ac61637475616c"
    "735f66726f6dcd3a9bad6e6578745f666f72656361737492cb3ff0000000000000cb4004000000000000b56e"
    "6578745f666f7265636173745f76657273696f6eaa6c73746d2d312b616263aa70726f6d6f74696f6e7381a2"
    "703195cb40d28e0000000000cb40d28ec000000000cb3ff0000000000000cb3fe999999999999acb40000000"
    "00000000")


def test_map_records_of_before_still_decode():
    expected = SkuState(
        "SKU-1", "wh/1", first_bucket=15000, watermark=15003, demand={15001: 2.0, 15003: -1.0},
        seen_ids={15003: ["e9", "é"]}, old_ids={15001: base64.b64decode("YKoZsw==")},
        on_hand=7, backorders=1,
        stock_known=True, last_stock_bucket=15002, stock_as_of=1.3e9, on_order={"r1": 5},
        on_order_terms={"r1": [15002, 3]}, overdue=["r0"],
        policy={"sku": "SKU-1", "service_level": 0.95}, open_alerts={"stale_stock": 15002},
        next_bucket_high=6.5, forecast_pending=True, model_state=b"\x01\x02blob",
        actuals_from=15003, next_forecast=[1.0, 2.5], next_forecast_version="lstm-1+abc",
        promotions={"p1": [19000.0, 19003.0, 1.0, 0.8, 2.0]})
    decoded = decode_sku_state(_MAP_RECORD)
    assert type(decoded) is SkuState and decoded == expected
    assert encode_state(decoded) == encode_state(expected)  # rewritten as an array record
    # a map record from before a field existed: the field takes its default
    named = msgspec.msgpack.decode(_MAP_RECORD[1:])
    del named["promotions"], named["on_order_terms"]
    older = decode_sku_state(_MAP_RECORD[:1] + msgspec.msgpack.encode(named))
    assert older == msgspec.structs.replace(expected, promotions={}, on_order_terms={})


def test_array_records_without_the_newest_fields_decode_with_their_defaults():
    """A field added at the end (as the struct's docstring asks) reads old records."""
    state = SkuState("A", "L", watermark=3, promotions={"p": [1.0, 2.0, 0.0, 1.0, 1.0]},
                     order_up_to_levels=[80.0, 96.5], order_up_to_buckets=[2, 3])
    raw = encode_state(state)
    assert raw is not None
    fields = msgspec.msgpack.decode(raw[1:])
    shorter = raw[:1] + msgspec.msgpack.encode(fields[:-1])  # before `order_up_to_buckets`
    assert decode_sku_state(shorter) == msgspec.structs.replace(state, order_up_to_buckets=[])
    before_levels = raw[:1] + msgspec.msgpack.encode(fields[:-2])  # before the levels
    assert decode_sku_state(before_levels) == msgspec.structs.replace(
        state, order_up_to_levels=[], order_up_to_buckets=[])
    shortest = raw[:1] + msgspec.msgpack.encode(fields[:-3])  # and before `promotions`
    assert decode_sku_state(shortest) == msgspec.structs.replace(
        state, promotions={}, order_up_to_levels=[], order_up_to_buckets=[])


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
