"""`dlq replay`: dead letters go back to their source topic, once."""

import json
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from runtime.settings import Settings
from schemas import InvalidEvent, dead_letter, encode
from streams.dlq_replay import replay_dead_letters
from streams.topics import ensure_topics


async def test_replay_sends_raw_payloads_back_once(kafka_bootstrap, fresh_topic_prefix):
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"{fresh_topic_prefix}.",
                        shop_topic_prefix=f"{fresh_topic_prefix}.shop.",
                        app_id=f"{fresh_topic_prefix}-app", topic_partitions=2)
    await ensure_topics(settings)
    t = settings.topics
    raw_late = json.dumps({"event_id": "x", "sku": "A"}).encode()
    letters = [
        dead_letter(topic=t.orders, partition=0, offset=5, key=b"A@L", raw=raw_late,
                    error=InvalidEvent("too late", kind="late")),
        dead_letter(topic=t.stock, partition=1, offset=9, key=b"B@L", raw=b"\xff",
                    error=InvalidEvent("payload is not UTF-8", kind="not_utf8")),
        # kept only its first bytes to fit the DLQ: cannot be replayed, only counted
        dead_letter(topic=t.orders, partition=0, offset=6, key=b"A@L", raw=b"x" * 5000,
                    error=InvalidEvent("too late", kind="late"), max_payload_bytes=100),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    for letter in letters:
        await producer.send_and_wait(t.dlq, key=letter.key.encode(), value=encode(letter))
    await producer.stop()

    dry = await replay_dead_letters(settings, kinds={"late"}, dry_run=True)
    assert (dry.replayed, dry.skipped, dry.cut) == (1, 1, 1)
    assert (await replay_dead_letters(settings, dry_run=True, limit=2)).scanned == 2
    part = await replay_dead_letters(settings, kinds={"late"}, limit=1)
    assert part.scanned == 1, "--limit N scans at most N"
    rest = await replay_dead_letters(settings, kinds={"late"})
    assert part.scanned + rest.scanned == 3, "a limited run is resumed where it stopped"
    assert part.replayed + rest.replayed == 1 and part.cut + rest.cut == 1
    assert {**part.by_topic, **rest.by_topic} == {t.orders: 1}
    again = await replay_dead_letters(settings)
    assert again.scanned == 0  # the first replay's progress is remembered

    consumer = AIOKafkaConsumer(t.orders, bootstrap_servers=kafka_bootstrap, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    got = []
    try:
        for _ in range(20):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                got.extend((r.key, r.value) for r in records)
            if got:
                break
    finally:
        await consumer.stop()
    assert got == [(b"A@L", raw_late)]
    assert datetime.now(UTC) >= letters[0].received_at
