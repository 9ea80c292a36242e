"""OptimizerService end to end on a real Kafka broker and a real PostgreSQL."""

import base64
from datetime import UTC, datetime
from functools import partial

import asyncpg
import pytest

from optimizer.service import OptimizerService
from optimizer.store import PlanStore
from runtime.backoff import Backoff
from schemas import DeadLetter, PlanEvent, encode, sku_key
from tests.factories import make_restock
from tests.support.kafka import (
    create_optimizer_topics,
    isolated_settings,
    produce,
    read_expected,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


restock = partial(make_restock, unit_cost=1.5)


async def test_service_end_to_end_plans_each_restock_once(kafka_bootstrap, pg_database):
    settings = isolated_settings(kafka_bootstrap)
    await create_optimizer_topics(settings)
    restocks = [
        restock(
            f"r{i:02d}",
            sku=f"sku-{i}",
            location=f"loc{i % 3}",
            supplier=f"sup{i % 2}",
            quantity=i + 1,
        )
        for i in range(24)
    ]
    records = [(sku_key(r.sku, r.location), encode(r)) for r in restocks]
    records.insert(10, records[3])  # a redelivered restock
    records.insert(5, (sku_key("bad", "loc0"), b'{"restock_id": "broken'))  # a malformed record
    await produce(settings, settings.topics.restock, records)

    service = OptimizerService(settings, pg_database, max_records=7)
    counters = await service.run_until_idle(2.0)
    assert counters.restocks_in == 25  # 24 + the duplicate; the malformed one is not a restock
    assert counters.dlq == 1
    assert counters.plan_lines_written == 24

    conn = await asyncpg.connect(pg_database)
    try:
        rows = await conn.fetch("SELECT restock_id, count(*) AS n FROM plan_lines GROUP BY 1")
        assert {r["restock_id"]: r["n"] for r in rows} == {r.restock_id: 1 for r in restocks}
        assert await conn.fetchval("SELECT count(*) FROM restock_events") == 24
        assert (
            await conn.fetchval("SELECT count(*) FROM purchase_plans WHERE published_at IS NULL")
            == 0
        )
        offsets = await conn.fetch(
            "SELECT partition, next_offset FROM consumer_offsets"
            " WHERE group_id = $1 AND topic = $2",
            service.group_id,
            settings.topics.restock,
        )
        assert sum(r["next_offset"] for r in offsets) == len(records)
        db_plans = await conn.fetchval("SELECT count(*) FROM purchase_plans")
    finally:
        await conn.close()
    assert counters.plans_out == db_plans

    published = await read_expected(settings, settings.topics.plans, db_plans)
    plans = [PlanEvent.model_validate_json(rec.value) for rec in published]
    assert len(plans) == db_plans
    assert all(
        rec.key.decode() == plan.supplier for rec, plan in zip(published, plans, strict=True)
    )
    lines = [line.restock_id for plan in plans for line in plan.lines]
    assert sorted(lines) == sorted(r.restock_id for r in restocks)  # each exactly once
    assert all(p.total_units == sum(line.quantity for line in p.lines) for p in plans)

    dead = await read_expected(settings, settings.topics.dlq, 1)
    assert len(dead) == 1
    letter = DeadLetter.model_validate_json(dead[0].value)
    assert letter.source_topic == settings.topics.restock
    assert letter.key == "bad@loc0" and letter.error_kind == "invalid_json" and letter.error
    assert base64.b64decode(letter.raw_payload_b64) == b'{"restock_id": "broken'

    # A restart resumes from the offsets in PostgreSQL; a late redelivery plans nothing.
    await produce(settings, settings.topics.restock, [records[0]])
    again = await OptimizerService(settings, pg_database).run_until_idle(2.0)
    assert again.restocks_in == 1 and again.plans_out == 0 and again.plan_lines_written == 0
    async with await PlanStore.connect(pg_database) as store:
        assert await store.count_plan_lines() == 24


async def test_service_seeks_to_offsets_stored_in_postgres(kafka_bootstrap, pg_database):
    settings = isolated_settings(kafka_bootstrap)
    await create_optimizer_topics(settings)
    old = restock("old", sku="sku-old", location="loc0", supplier="s", quantity=1)
    new = restock("new", sku="sku-new", location="loc0", supplier="s", quantity=2)
    # Same key: same partition, "old" at offset 0 and "new" at offset 1.
    same_key = [(sku_key("k", "loc0"), encode(old)), (sku_key("k", "loc0"), encode(new))]
    await produce(settings, settings.topics.restock, same_key)
    service = OptimizerService(settings, pg_database)
    async with await PlanStore.connect(pg_database) as store:
        await store.migrate()
        partition = (await read_expected(settings, settings.topics.restock, 2))[0].partition
        # PostgreSQL says offset 0 was consumed; Kafka has no commit for this group.
        stored = {(settings.topics.restock, partition): 1}
        await store.write_batch([], [], stored, service.group_id)
        counters = await service.run_until_idle(2.0)
        assert counters.restocks_in == 1
        assert await store.count_plan_lines() == 1
        assert await store.count_restock_events() == 1  # "old" was never read


async def test_publishes_plans_left_in_the_outbox_on_start(kafka_bootstrap, pg_database):
    settings = isolated_settings(kafka_bootstrap)
    await create_optimizer_topics(settings)
    from optimizer import consolidate

    batch = [restock("x1", sku="a", location="l", supplier="s", quantity=3)]
    async with await PlanStore.connect(pg_database) as store:
        await store.migrate()
        # As if the worker died after the commit and before publishing.
        (plan,) = await store.write_batch(batch, consolidate(batch, datetime.now(UTC)), {}, "g")
        await OptimizerService(settings, pg_database).run_until_idle(1.0)
        assert await store.unpublished_plans() == []
    (record,) = await read_expected(settings, settings.topics.plans, 1)
    assert PlanEvent.model_validate_json(record.value) == plan


async def test_db_write_retries_then_gives_up(kafka_bootstrap, restartable_postgres):
    from optimizer import StoreUnavailable

    settings = isolated_settings(kafka_bootstrap)
    await create_optimizer_topics(settings)
    item = restock("y1", sku="a", location="l", supplier="s", quantity=3)
    await produce(settings, settings.topics.restock, [(sku_key("a", "l"), encode(item))])
    service = OptimizerService(
        settings, restartable_postgres.dsn,
        retry=Backoff(base_delay_s=0.05, max_delay_s=10.0, max_attempts=3),
    )
    await service.start()
    try:
        restartable_postgres.stop()
        with pytest.raises(StoreUnavailable) as info:
            for _ in range(100):
                await service.process_once()
        assert info.value.attempts == 3
        assert service.counters.db_retries == 2
    finally:
        await service.stop()
        restartable_postgres.start()
    # Back up: a new worker picks the batch up again and plans it once.
    counters = await OptimizerService(settings, restartable_postgres.dsn).run_until_idle(1.5)
    assert counters.plan_lines_written == 1


async def _plan_until(service: OptimizerService, store: PlanStore, lines: int) -> None:
    """Poll batches until `lines` plan lines are stored (at most 30 s)."""
    for _ in range(150):  # (an idle optimizer checks its stored positions every 5 s)
        await service.process_once()
        if await store.count_plan_lines() >= lines:
            return
    raise AssertionError(f"{await store.count_plan_lines()} plan lines stored, not {lines}")


@pytest.mark.parametrize("lost", ["last_batch", "offsets_row", "last_batch_then_idle"])
async def test_commits_lost_by_a_database_crash_are_planned_again(
    kafka_bootstrap, pg_database, lost
):
    """Plan writes commit with synchronous_commit=off: a PostgreSQL crash may lose commits it
    acknowledged, their offsets with them, while the running optimizer has moved on. Its next
    write finds the stored offsets behind its batch, writes nothing, and goes back to them;
    with no next batch, its idle check of the stored positions does."""
    batches_after = lost != "last_batch_then_idle"
    lost = "last_batch" if lost == "last_batch_then_idle" else lost
    settings = isolated_settings(kafka_bootstrap)
    await create_optimizer_topics(settings)

    def records(start: int) -> list[tuple[str, bytes]]:  # one key: one partition, in order
        return [(sku_key("k", "l"), encode(restock(f"r{i:02d}", sku=f"s{i}", location="l",
                                                   supplier="sup", quantity=i + 1)))
                for i in range(start, start + 5)]  # fmt: skip

    service = OptimizerService(settings, pg_database, poll_timeout_ms=100)
    await service.start()
    try:
        async with await PlanStore.connect(pg_database) as store:
            await produce(settings, settings.topics.restock, records(0))
            await _plan_until(service, store, 5)
            if lost == "last_batch":
                await produce(settings, settings.topics.restock, records(5))
                await _plan_until(service, store, 10)
            # The crash: the last commit is gone (its rows and its offsets), as if it never was.
            gone = [f"r{i:02d}" for i in (range(5, 10) if lost == "last_batch" else range(5))]
            conn = await asyncpg.connect(pg_database)
            try:
                async with conn.transaction():
                    plans = [r["plan_id"] for r in await conn.fetch(
                        "DELETE FROM plan_lines WHERE restock_id = ANY($1) RETURNING plan_id",
                        gone)]  # fmt: skip
                    await conn.execute("DELETE FROM purchase_plans WHERE plan_id = ANY($1)",
                                       plans)
                    await conn.execute("DELETE FROM restock_events WHERE restock_id = ANY($1)",
                                       gone)
                    if lost == "last_batch":
                        await conn.execute("UPDATE consumer_offsets SET next_offset = 5")
                    else:
                        await conn.execute("DELETE FROM consumer_offsets")
            finally:
                await conn.close()
            if batches_after:
                await produce(settings, settings.topics.restock, records(10))
            total = (15 if batches_after else 10) if lost == "last_batch" else 10
            await _plan_until(service, store, total)

            assert service.counters.rewinds == 1
            conn = await asyncpg.connect(pg_database)
            try:
                rows = await conn.fetch("SELECT restock_id, count(*) AS n FROM plan_lines "
                                        "GROUP BY 1")
                offsets = await conn.fetch("SELECT next_offset FROM consumer_offsets")
            finally:
                await conn.close()
            expected = [f"r{i:02d}" for i in range(15) if lost == "last_batch" or i not in
                        range(5, 10)]  # fmt: skip
            assert {r["restock_id"]: r["n"] for r in rows} == dict.fromkeys(expected[:total], 1)
            assert [r["next_offset"] for r in offsets] == [total]
    finally:
        await service.stop()
