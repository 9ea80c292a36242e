"""PlanStore against a real PostgreSQL: migrations, idempotent batch writes, offsets, outbox."""

import logging
from datetime import UTC, datetime

import asyncpg
import pytest

from optimizer import MigrationError, consolidate
from optimizer.errors import StoreError
from optimizer.store import Migration, PlanStore, load_migrations
from tests.factories import make_restock

pytestmark = pytest.mark.asyncio(loop_scope="session")

DECIDED = datetime(2025, 3, 1, 12, tzinfo=UTC)
GROUP = "shelfcast-optimizer"


restock = make_restock


async def assert_lines_have_their_restock_and_plan(store: PlanStore) -> None:
    """The invariants the dropped foreign keys held (migration 0003), checked set-based."""
    orphans = await store._pool.fetchval(
        "SELECT count(*) FROM plan_lines l "
        "LEFT JOIN restock_events r USING (restock_id) "
        "LEFT JOIN purchase_plans p USING (plan_id) "
        "WHERE r.restock_id IS NULL OR p.plan_id IS NULL")
    assert orphans == 0
    unit_totals = await store._pool.fetchval(
        "SELECT count(*) FROM purchase_plans p "
        "WHERE total_units <> (SELECT sum(quantity) FROM plan_lines l WHERE l.plan_id = p.plan_id)")
    assert unit_totals == 0


async def test_migrations_apply_in_order_and_are_idempotent(pg_database):
    async with await PlanStore.connect(pg_database) as store:
        versions = [m.version for m in load_migrations()]
        assert await store.migrate() == versions
        assert await store.migrate() == []  # second run does nothing
        assert [v for v, _ in await store.applied_migrations()] == versions
    conn = await asyncpg.connect(pg_database)
    try:
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        }
        assert {"schema_migrations", "restock_events", "purchase_plans", "plan_lines",
                "consumer_offsets"} <= tables  # fmt: skip
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(versions)
    finally:
        await conn.close()


async def test_concurrent_migrate_calls_serialise_on_the_advisory_lock(pg_database):
    import asyncio

    stores = [await PlanStore.connect(pg_database) for _ in range(3)]
    try:
        results = await asyncio.gather(*(s.migrate() for s in stores))
        assert sorted(len(r) for r in results) == [0, 0, len(load_migrations())]
    finally:
        for s in stores:
            await s.close()


async def test_a_changed_applied_migration_is_refused(store):
    first = load_migrations()[0]
    edited = Migration(first.version, first.name, first.sql + "\n-- edited\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await store.migrate([edited])


async def test_a_failing_migration_leaves_nothing_behind(store):
    bad = [
        Migration(9000, "good_part", "CREATE TABLE half_done (x int);"),
        Migration(9001, "broken", "CREATE TABLE nope (x no_such_type);"),
    ]
    with pytest.raises(MigrationError, match="9001_broken"):
        await store.migrate([*load_migrations(), *bad])
    assert 9000 not in [v for v, _ in await store.applied_migrations()]


async def test_write_batch_twice_writes_plan_lines_exactly_once(store):
    restocks = [restock("r1"), restock("r2", sku="sku-2"), restock("r3", supplier="bolt")]
    plans = consolidate(restocks, DECIDED)
    offsets = {("restock", 0): 3}

    created = await store.write_batch(restocks, plans, offsets, GROUP)
    assert sorted(p.plan_id for p in created) == sorted(p.plan_id for p in plans)
    assert await store.count_plans() == 2 and await store.count_plan_lines() == 3

    again = await store.write_batch(restocks, plans, offsets, GROUP)
    assert again == []
    assert await store.count_plans() == 2 and await store.count_plan_lines() == 3
    assert await store.count_restock_events() == 3
    await assert_lines_have_their_restock_and_plan(store)


async def test_redelivered_restock_in_a_new_batch_is_not_planned_twice(store):
    await store.write_batch([restock("r1")], consolidate([restock("r1")], DECIDED), {}, GROUP)
    batch = [restock("r1"), restock("r4", sku="sku-4", quantity=3, unit_cost=10.0)]
    created = await store.write_batch(batch, consolidate(batch, DECIDED), {}, GROUP)
    assert len(created) == 1
    (plan,) = created
    assert [line.restock_id for line in plan.lines] == ["r4"]
    assert plan.total_units == 3 and plan.total_cost == 30.0  # totals of the new line only
    assert await store.count_plan_lines() == 2

    conn = await store._pool.acquire()
    try:
        row = await conn.fetchrow(
            "SELECT total_units, total_cost FROM purchase_plans WHERE plan_id = $1", plan.plan_id
        )
    finally:
        await store._pool.release(conn)
    assert row["total_units"] == 3 and float(row["total_cost"]) == 30.0
    await assert_lines_have_their_restock_and_plan(store)


async def test_offsets_are_stored_with_the_batch_and_roll_back_with_it(store):
    await store.write_batch([], [], {("restock", 0): 5, ("restock", 1): 7}, GROUP)
    assert await store.committed_offsets(GROUP, ["restock"]) == {
        ("restock", 0): 5, ("restock", 1): 7,
    }  # fmt: skip
    await store.write_batch([], [], {("restock", 0): 9}, GROUP)
    assert (await store.committed_offsets(GROUP, ["restock"]))[("restock", 0)] == 9
    assert await store.committed_offsets("other-group", ["restock"]) == {}

    # A batch whose plan line points at an unknown restock is refused: neither its restock
    # events nor its offsets may remain.
    orphan_plan = consolidate([restock("ghost")], DECIDED)
    with pytest.raises(StoreError, match="unknown restocks: \\['ghost'\\]"):
        await store.write_batch([restock("r9")], orphan_plan, {("restock", 0): 99}, GROUP)
    assert (await store.committed_offsets(GROUP, ["restock"]))[("restock", 0)] == 9
    assert await store.count_restock_events() == 0


async def test_unpublished_plans_are_the_outbox(store):
    batch = [restock("r1"), restock("r2", sku="sku-2", quantity=4, unit_cost=1.25)]
    (plan,) = await store.write_batch(batch, consolidate(batch, DECIDED), {}, GROUP)
    assert await store.unpublished_plans() == [plan]
    assert await store.mark_published([plan.plan_id]) == 1
    assert await store.mark_published([plan.plan_id]) == 0
    assert await store.unpublished_plans() == []


async def test_bulk_batch(store):
    batch = [restock(f"r{i}", sku=f"sku-{i}", location=f"loc{i % 7}") for i in range(5000)]
    plans = consolidate(batch, DECIDED)
    created = await store.write_batch(batch, plans, {("restock", 0): 1}, GROUP)
    assert len(created) == 7 and sum(len(p.lines) for p in created) == 5000
    assert await store.count_plan_lines() == 5000
    await assert_lines_have_their_restock_and_plan(store)


async def test_a_stored_restock_row_is_the_whole_event(store):
    events = [restock("r1"), restock("r2", sku="sku-2", quantity=4, unit_cost=1.125)]
    await store.write_batch(events, consolidate(events, DECIDED), {}, GROUP)
    assert await store.restock_events(["r2", "r1", "missing"]) == events


async def test_migration_0002_moves_the_jsonb_payload_into_columns(pg_database):
    event = restock("old-1", quantity=7, unit_cost=3.75)
    first, *rest = load_migrations()
    async with await PlanStore.connect(pg_database) as store:
        assert await store.migrate([first]) == [1]
        await store._pool.execute(
            "INSERT INTO restock_events (restock_id, sku, location, supplier, quantity, "
            "reorder_point, order_up_to, inventory_position, service_level, lead_time_days, "
            "model_version, bucket, issued_at, payload) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::jsonb)",
            event.restock_id, event.sku, event.location, event.supplier, event.quantity,
            event.reorder_point, event.order_up_to, event.inventory_position,
            event.service_level, event.lead_time_days, event.model_version, event.bucket,
            event.issued_at, event.model_dump_json(),
        )  # fmt: skip
        assert await store.migrate() == [m.version for m in rest]
        assert await store.restock_events(["old-1"]) == [event]


async def test_a_plan_line_may_refer_to_a_restock_stored_by_an_earlier_batch(store):
    await store.write_batch([restock("r1")], [], {}, GROUP)
    (plan,) = await store.write_batch([], consolidate([restock("r1")], DECIDED), {}, GROUP)
    assert [line.restock_id for line in plan.lines] == ["r1"]
    await assert_lines_have_their_restock_and_plan(store)


async def test_a_conflicting_redelivery_keeps_the_stored_decision_and_says_so(store, caplog):
    """Issue 14: a known restock id with another quantity is not planned again (the stored
    decision stands) and is no longer dropped silently: the log names both quantities."""
    await store.write_batch([restock("r1")], consolidate([restock("r1")], DECIDED), {}, GROUP)
    other = restock("r1", quantity=99)
    caplog.set_level(logging.WARNING, logger="optimizer.store")
    created = await store.write_batch([other], consolidate([other], DECIDED), {}, GROUP)
    assert created == [] and await store.count_plan_lines() == 1
    [warning] = [r.getMessage() for r in caplog.records if "redelivered" in r.getMessage()]
    assert "r1" in warning and "99" in warning
