"""The batch engine on a real broker: a worker SIGKILLed mid-stream and restarted recovers its
state from the changelog (planned promotions included). The final state equals a
recomputation of the same events, and no restock id ever carries two different decisions (a
replay may resend the same one). A poison pill just under the broker's limit is
dead-lettered (cut) without stalling its partition."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from forecasting import make_forecaster
from runtime.kafka_config import client_kwargs
from runtime.settings import Settings
from schemas import DeadLetter, RestockEvent, sku_key
from shelfcast.worker_process import WorkerProcess
from streams.changelog import changelog_topic, decode_state
from streams.dead_letters import REDUCED_PAYLOAD_BYTES, topic_max_message_bytes
from streams.engine import BatchEngine
from streams.lag import LagProbe
from streams.processor import BatchProcessor, ProcessorConfig, RawRecord
from streams.topics import ensure_topics
from streams.worker import local_predict
from tests.support.kafka import produce, read_all, wait_lag

T0 = datetime(2011, 3, 7, tzinfo=UTC)
SKUS, ORDERS, DAYS = 40, 6000, 20


def promotions() -> list[tuple[bytes, bytes]]:
    """Planned promotions of some SKUs (shop.promotions): durable state like the rest."""
    return [(sku_key(f"S{s}", "wh").encode(), json.dumps({
        "event_id": f"promo-{s}", "sku": f"S{s}", "location": "wh", "version": 1 + s % 2,
        "start_day": (T0 + timedelta(days=5 + s % 7)).date().isoformat(),
        "end_day": (T0 + timedelta(days=8 + s % 7)).date().isoformat(),
        "price_ratio": 0.8}).encode()) for s in range(0, SKUS, 3)]


def shop(settings: Settings) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    snapshots = [(sku_key(f"S{s}", "wh").encode(), json.dumps({
        "event_id": f"snap-{s}", "type": "snapshot", "sku": f"S{s}", "location": "wh",
        "on_hand": 30, "occurred_at": (T0 - timedelta(hours=1)).isoformat()}).encode())
        for s in range(SKUS)]
    orders = []
    for i in range(ORDERS):
        s = (i * 7919) % SKUS
        when = T0 + timedelta(days=DAYS * i / ORDERS)
        orders.append((sku_key(f"S{s}", "wh").encode(), json.dumps({
            "event_id": f"o{i}", "type": "placed", "sku": f"S{s}", "location": "wh",
            "quantity": 1 + i % 3, "occurred_at": when.isoformat()}).encode()))
    return snapshots, orders


async def recompute(settings: Settings, snapshots, orders) -> tuple[dict, dict[str, int]]:
    model = make_forecaster(settings.model)
    p = BatchProcessor(ProcessorConfig.from_settings(settings), local_predict(model),
                       model.model_version)
    t = settings.topics
    records = [RawRecord(t.stock, 0, i, k, v) for i, (k, v) in enumerate(snapshots)]
    records += [RawRecord(t.promotions, 0, i, k, v) for i, (k, v) in enumerate(promotions())]
    records += [RawRecord(t.orders, 0, i, k, v) for i, (k, v) in enumerate(orders)]
    table: dict = {}
    restocks: dict[str, int] = {}

    for i in range(0, len(records), 500):
        out = await p.process(records[i:i + 500], table)
        restocks.update({r.restock_id: r.quantity for r in out.restocks})
    return table, restocks


@pytest.mark.timeout(240)
async def test_killed_worker_recovers_state_from_the_changelog(
    kafka_bootstrap: str, fresh_topic_prefix: str, tmp_path: Path
):
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"{fresh_topic_prefix}.",
                        shop_topic_prefix=f"{fresh_topic_prefix}.shop.",
                        app_id=f"{fresh_topic_prefix}-app", topic_partitions=4,
                        engine="batch", take_max=150, kafka_session_timeout_s=6,
                        model="moving_average")  # about recovery, not the model
    await ensure_topics(settings)
    snapshots, orders = shop(settings)
    log = tmp_path / "worker.log"
    first = WorkerProcess(settings, log, name="worker-1").start()
    second = WorkerProcess(settings, log, name="worker-2")
    try:
        await asyncio.to_thread(first.wait_ready, 120)
        async with LagProbe(settings) as probe:
            # stock first, processed before any order: the recomputation sees the same order
            await produce(settings, settings.topics.stock, snapshots)
            await produce(settings, settings.topics.promotions, promotions())
            await wait_lag(probe, 0, 60)
            await produce(settings, settings.topics.orders, orders)
            await wait_lag(probe, int(ORDERS * 0.6), 90)
            first.kill()  # mid-stream: state in memory, some batches uncommitted
            killed_at_lag = await probe.lag()
            second.start()
            await asyncio.to_thread(second.wait_ready, 120)
            await wait_lag(probe, 0, 120)
    finally:
        first.kill()
        second.stop()
    assert 0 < killed_at_lag < ORDERS, "the kill should land mid-stream"
    assert "recovered" in log.read_text()

    expected_table, expected_restocks = await recompute(settings, snapshots, orders)
    state: dict = {}
    for r in await read_all(settings, changelog_topic(settings)):
        state[r.key.decode()] = decode_state(r.value)
    assert state.keys() == expected_table.keys()
    for key, value in expected_table.items():
        assert state[key] == value, key
    assert sum(bool(v["promotions"]) for v in state.values()) == len(promotions())

    decisions: dict[str, set[int]] = defaultdict(set)
    for r in await read_all(settings, settings.topics.restock):
        event = RestockEvent.model_validate_json(r.value)
        decisions[event.restock_id].add(event.quantity)
    assert expected_restocks, "the stream should cause restocks"
    assert decisions.keys() == expected_restocks.keys()
    assert {k: min(v) for k, v in decisions.items()} == expected_restocks
    assert all(len(v) == 1 for v in decisions.values()), "one decision per restock id"


def order(event_id: str, when: datetime) -> bytes:
    return json.dumps({"event_id": event_id, "type": "placed", "sku": "P", "location": "wh",
                       "quantity": 1, "occurred_at": when.isoformat()}).encode()


async def produce_at(settings: Settings, topic: str, partition: int,
                     records: list[tuple[bytes, bytes]]) -> list[int]:
    """Send to one partition (max_request_size: room for a record at the broker's limit)."""
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all",
                                max_request_size=4 << 20)
    await producer.start()
    try:
        return [(await producer.send_and_wait(topic, key=k, value=v, partition=partition)).offset
                for k, v in records]
    finally:
        await producer.stop()


async def committed_past(engine: BatchEngine, tp: TopicPartition, offset: int,
                         timeout_s: float) -> float:
    """Seconds until the engine committed `tp` past `offset` (the record was processed)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if engine.monitor.tp_committed_offsets.get(tp, -1) > offset:
            return time.monotonic() - t0
        await asyncio.sleep(0.05)
    raise AssertionError(f"{tp} not committed past {offset} within {timeout_s} s")


@pytest.mark.timeout(180)
async def test_a_poison_pill_at_the_broker_limit_is_dead_lettered_and_its_partition_moves_on(
    kafka_bootstrap: str, fresh_topic_prefix: str, caplog: pytest.LogCaptureFixture
):
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"{fresh_topic_prefix}.",
                        shop_topic_prefix=f"{fresh_topic_prefix}.shop.",
                        app_id=f"{fresh_topic_prefix}-app", topic_partitions=2,
                        engine="batch", take_max=100, model="moving_average")
    await ensure_topics(settings)
    t = settings.topics
    limit = await topic_max_message_bytes(settings, t.orders)
    assert limit is not None and limit > 500_000, "the broker's own topic limit"
    # a record batch with one record: value + key + ~70 bytes of headers; invalid JSON, under
    # the broker's limit and SHELFCAST_MAX_PAYLOAD_BYTES, ~4/3 of it over the DLQ topic's
    pill = b"{" + b"x" * (limit - 100)
    model = make_forecaster("moving_average")
    processor = BatchProcessor(ProcessorConfig.from_settings(settings), local_predict(model),
                               model.model_version)
    engine = BatchEngine(settings, processor)
    caplog.set_level(logging.INFO, logger="streams")
    stop = asyncio.Event()
    running = asyncio.create_task(engine.run(stop))
    orders = TopicPartition(t.orders, 0)
    try:
        await asyncio.wait_for(engine.ready.wait(), 60)
        bad_at, good_at = await produce_at(settings, t.orders, 0, [
            (b"P@wh", pill), (b"P@wh", order("good-1", T0))])
        took_s = await committed_past(engine, orders, good_at, 30)
        assert took_s < 10, f"the good order behind the pill took {took_s:.1f} s"
        assert "good-1" in engine.store["P@wh"].seen_ids[int(T0.timestamp()) // 86_400]

        # the DLQ topic's limit lowered under the worker (it sized its cut at start): the
        # dead letter is refused, sent again reduced, and the partition still moves on
        admin = AIOKafkaAdminClient(**client_kwargs(settings))
        await admin.start()
        try:
            await admin.alter_configs([ConfigResource(
                ConfigResourceType.TOPIC, t.dlq, configs={"max.message.bytes": "30000"})])
        finally:
            await admin.close()
        for _ in range(50):
            if await topic_max_message_bytes(settings, t.dlq) == 30_000:
                break
            await asyncio.sleep(0.1)
        pill2 = b"[" + b"y" * 40_000
        bad2_at, good2_at = await produce_at(settings, t.orders, 0, [
            (b"P@wh", pill2), (b"P@wh", order("good-2", T0))])
        took_s = await committed_past(engine, orders, good2_at, 30)
        assert took_s < 10, f"the good order behind the refused dead letter took {took_s:.1f} s"
    finally:
        stop.set()
        await asyncio.wait_for(running, 60)

    letters = [DeadLetter.model_validate_json(r.value) for r in await read_all(settings, t.dlq)]
    by_offset = {d.offset: d for d in letters if d.source_topic == t.orders}
    assert sorted(by_offset) == [bad_at, bad2_at]
    first, second = by_offset[bad_at], by_offset[bad2_at]
    assert first.error_kind == "invalid_json" and first.cut
    assert first.payload_bytes == len(pill)
    assert first.payload_sha256 == hashlib.sha256(pill).hexdigest()
    kept = base64.b64decode(first.raw_payload_b64)
    assert kept == pill[:len(kept)] and len(kept) > 100_000, "cut to fit at start, not reduced"
    assert second.payload_bytes == len(pill2)
    assert len(base64.b64decode(second.raw_payload_b64)) == REDUCED_PAYLOAD_BYTES
    refused = [r.getMessage() for r in caplog.records if "refused by the broker" in r.getMessage()]
    assert len(refused) == 1
    assert f"{t.orders} partition 0 offset {bad2_at}" in refused[0]
    assert "MessageSizeTooLargeError" in refused[0] and t.dlq in refused[0]
    assert "batch held" not in caplog.text and "reachable again" not in caplog.text
