"""The SKU-state changelog of the batch engine: topic, record codec and partition recovery.

One compacted topic with as many partitions as the input topics. A batch writes one record
per dirty key (key `sku@location`, value the state: a format byte, then msgpack; the
formats of before still read) to the partition of the
input record it came from (not the partition the key hashes to: the shop's producer may use
any partitioner), so the state of input partition p lives in changelog partition p and moves
with it on a rebalance: the new owner reads that partition from the beginning to its end
offset into p's table.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import msgspec
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from runtime.kafka_config import client_kwargs
from runtime.kafka_lifecycle import stop_client
from runtime.settings import Settings
from streams.state import SkuState
from streams.store import StateStore
from streams.topics import TopicSpec, create_topics

__all__ = [
    "FAUST_TABLE",
    "changelog_topic",
    "decode_sku_state",
    "decode_state",
    "encode_state",
    "engine_changelog_topic",
    "ensure_changelog",
    "recover_partitions",
]

log = logging.getLogger(__name__)


def changelog_topic(settings: Settings) -> str:
    """`<app_id>-sku-state-changelog`: one per consumer group, like Faust's table changelogs."""
    return f"{settings.app_id}-sku-state-changelog"


FAUST_TABLE = "sku_state"  # the Faust engine's table (streams/app.py)


def engine_changelog_topic(settings: Settings) -> str:
    """The state changelog of the engine `settings.engine` runs: the batch engine's
    (`changelog_topic`), or the Faust table's, which Faust names
    `<app_id>-<table>-changelog`. Both hold the same records (this module's codec), one
    per key, on the partition of the input it came from."""
    if settings.engine == "faust":
        return f"{settings.app_id}-{FAUST_TABLE}-changelog"
    return changelog_topic(settings)


# A record's first byte says its format: FORMAT_ARRAY (written now), FORMAT_MSGPACK or "{"
# for the JSON (both written by older workers, still read: their changelog recovers).
FORMAT_MSGPACK = 0x01  # msgpack map of the state's fields by name (before array records)
FORMAT_ARRAY = 0x02  # msgpack array of the state's fields in declaration order
_MAP_PREFIX = bytes([FORMAT_MSGPACK])
_ARRAY_PREFIX = bytes([FORMAT_ARRAY])


def encode_state(value: SkuState | dict[str, Any] | None) -> bytes | None:
    """A state (`SkuState` or its JSON dict) as a changelog record; None stays a tombstone.

    One format byte, then msgpack of the struct as an array of its fields (msgspec, in C,
    no intermediate dict, no field names: 11% fewer bytes than the map records of before,
    ~1.5x less CPU with them; benchmarks/README.md "Changelog records as arrays"): its int
    bucket keys stay ints and the forecaster's durable state (`model_state`, ~2 kB for the
    LSTM with its day ring) is raw bytes, where JSON would need base64 (+33%) and a copy.
    Written into a buffer that already holds the format byte and keeps its capacity, then
    copied out once (not grown from empty, then copied again behind the prefix).
    """
    if value is None:
        return None
    if not isinstance(value, SkuState):
        value = SkuState.from_json(value)
    buffer = getattr(_per_thread, "buffer", None)
    if buffer is None:
        buffer = _per_thread.buffer = bytearray(_ARRAY_PREFIX)
    _encode_into(value, buffer, 1)
    return bytes(buffer)


_per_thread = threading.local()  # each thread's buffer (the engines encode on their loop)
_encode_into = msgspec.msgpack.Encoder().encode_into
_decode = msgspec.msgpack.Decoder(SkuState).decode


class _NamedFields(SkuState, array_like=False):
    """The map records of before (FORMAT_MSGPACK): the same fields, by name, `old_ids` as
    base64 strings."""

    old_ids: dict[int, str] = {}  # type: ignore[assignment]  # noqa: RUF012


_decode_named = msgspec.msgpack.Decoder(_NamedFields).decode


def decode_sku_state(raw: bytes | None) -> SkuState | None:
    """A changelog record as the `SkuState` it holds (None: a tombstone). Reads every format
    written so far: arrays (FORMAT_ARRAY), the maps (FORMAT_MSGPACK) and JSON of before."""
    if raw is None:
        return None
    head = raw[:1]
    if head == _ARRAY_PREFIX:
        return _decode(memoryview(raw)[1:])
    if head == _MAP_PREFIX:
        fields = msgspec.structs.asdict(_decode_named(memoryview(raw)[1:]))
        fields["old_ids"] = {b: base64.b64decode(v) for b, v in fields["old_ids"].items()}
        return SkuState(**fields)
    return SkuState.from_json(orjson.loads(raw))


def decode_state(raw: bytes | None) -> dict[str, Any] | None:
    """A changelog record as the state's JSON dict (`SkuState.to_json()`), as verifiers
    compare it; None: a tombstone."""
    state = decode_sku_state(raw)
    return None if state is None else state.to_json()


async def ensure_changelog(settings: Settings, partitions: int) -> None:
    """Create the changelog topic (compacted) with `partitions` partitions if it is missing."""
    await create_topics(settings, [TopicSpec(changelog_topic(settings), partitions,
                                             compacted=True)])


async def recover_partitions(settings: Settings, partitions: Iterable[int],
                             store: StateStore, *, settle_ms: int = 200) -> int:
    """Load changelog partitions into `store`, from the beginning to the end; returns records.

    Reads to the end offsets, then on until a fetch comes back empty for `settle_ms`: some
    brokers (tansu) answer a "latest" offset short of the real end, and stopping there would
    lose the newest state.
    """
    tps = [TopicPartition(changelog_topic(settings), p) for p in sorted(set(partitions))]
    if not tps:
        return 0
    consumer = AIOKafkaConsumer(**client_kwargs(settings), group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
    await consumer.start()
    t0 = time.perf_counter()
    n = 0
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        todo = {tp for tp, end in ends.items() if end > 0}
        idle_since = time.monotonic()
        while True:
            batch = await consumer.getmany(*tps, timeout_ms=settle_ms if not todo else 500,
                                           max_records=50_000)
            for records in batch.values():
                for r in records:
                    if r.key is not None:  # a record without key cannot be state
                        store.load(r.partition, r.key.decode(), decode_sku_state(r.value))
                n += len(records)
            if batch:
                idle_since = time.monotonic()
            elif not todo:
                break
            # position, not the last record's offset: compaction leaves gaps
            todo = {tp for tp in todo if await consumer.position(tp) < ends[tp]}
            if todo and time.monotonic() - idle_since > 30:
                raise RuntimeError(f"changelog recovery stalled short of the end on {todo}")
    finally:
        await stop_client(consumer)  # a broker outage must not fail the rebalance callback
    log.info("recovered %d changelog record(s) of partitions %s in %.2f s (%d keys held)",
             n, [tp.partition for tp in tps], time.perf_counter() - t0, len(store))
    await asyncio.sleep(0)
    return n
