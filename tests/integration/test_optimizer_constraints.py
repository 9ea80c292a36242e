"""Supplier budgets, warehouse capacity and supplier MOQ in the optimizer, on a real PostgreSQL
(and Kafka for the service): limits hold over a cycle's batches, cuts are recorded, and a
redelivery decides nothing twice."""

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from optimizer.constraints import CycleConstraints
from optimizer.service import OptimizerService
from optimizer.store import PlanStore
from schemas import encode, sku_key
from tests.factories import restock_with_demand as restock
from tests.support.kafka import create_optimizer_topics, isolated_settings, produce

pytestmark = pytest.mark.asyncio(loop_scope="session")

DECIDED = datetime(2025, 3, 1, 12, tzinfo=UTC)
DAY1 = datetime(2025, 3, 1, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)


def batch(prefix: str, n: int, *, bucket: datetime = DAY1, suppliers=("acme", "globex"),
          locations=("berlin", "paris")) -> list:  # fmt: skip
    return [restock(f"{prefix}{i:03d}", sku=f"{prefix}-sku{i}", mean=15.0 + (7 * i) % 40,
                    sd=4.0 + i % 9, position=float(i % 5), pack=[1, 4, 6][i % 3],
                    unit_cost=1.0 + (i * 37) % 11, supplier=suppliers[i % len(suppliers)],
                    location=locations[(i // 2) % len(locations)]
                    ).model_copy(update={"bucket": bucket})
            for i in range(n)]  # fmt: skip


async def decided(conn: asyncpg.Connection) -> dict[str, tuple[int | None, int | None]]:
    """restock_id -> (plan line quantity, allocated units in allocation_cuts)."""
    rows = await conn.fetch("""
        SELECT r.restock_id, l.quantity, c.allocated, c.requested, r.quantity AS wanted
        FROM restock_events r
        LEFT JOIN plan_lines l USING (restock_id)
        LEFT JOIN allocation_cuts c USING (restock_id)""")
    out = {}
    for row in rows:
        line, cut = row["quantity"], row["allocated"]
        # Each restock is decided once: a full line, or a cut (with a line when not to 0).
        assert (line is not None and cut is None and line == row["wanted"]) or (
            cut is not None and row["requested"] == row["wanted"]
            and (line or 0) == cut), dict(row)  # fmt: skip
        out[row["restock_id"]] = (line, cut)
    return out


async def spend_and_units(conn: asyncpg.Connection) -> tuple[dict, dict]:
    spend = {(r["cycle"], r["supplier"]): float(r["spend"]) for r in await conn.fetch("""
        SELECT (r.bucket AT TIME ZONE 'UTC')::date AS cycle, r.supplier,
               sum(l.quantity * l.unit_cost) AS spend
        FROM plan_lines l JOIN restock_events r USING (restock_id) GROUP BY 1, 2""")}
    units = {(r["cycle"], r["location"]): int(r["units"]) for r in await conn.fetch("""
        SELECT (r.bucket AT TIME ZONE 'UTC')::date AS cycle, r.location, sum(l.quantity) AS units
        FROM plan_lines l JOIN restock_events r USING (restock_id) GROUP BY 1, 2""")}
    return spend, units


async def usage(conn: asyncpg.Connection) -> dict:
    return {(r["cycle"], r["kind"], r["key"]): float(r["used"])
            for r in await conn.fetch("SELECT cycle, kind, key, used FROM cycle_usage")}


async def test_batches_of_a_cycle_share_its_budget_and_redeliveries_change_nothing(store):
    limits = CycleConstraints(supplier_budgets={"acme": 400.0, "*": 300.0},
                              location_capacity_units={"paris": 150})
    first, second = batch("a", 20), batch("b", 20)
    _, cuts1 = await store.write_constrained_batch(first, {("t", 0): 20}, "g", limits,
                                                        DECIDED)  # fmt: skip
    # The second batch overlaps the first (a redelivery) and brings 20 new restocks.
    _, cuts2 = await store.write_constrained_batch(first[10:] + second, {("t", 0): 40}, "g",
                                                        limits, DECIDED)  # fmt: skip
    assert cuts1 and cuts2
    assert not {c.restock_id for c in cuts2} & {r.restock_id for r in first}
    async with store._pool.acquire() as conn:
        once = await decided(conn)
        assert set(once) == {r.restock_id for r in first + second}
        spend, units = await spend_and_units(conn)
        assert spend[(DAY1.date(), "acme")] <= 400.0 + 1e-6
        assert spend[(DAY1.date(), "globex")] <= 300.0 + 1e-6
        assert units.get((DAY1.date(), "paris"), 0) <= 150
        before = await usage(conn)
        assert before[(DAY1.date(), "supplier_spend", "acme")] == pytest.approx(
            spend[(DAY1.date(), "acme")])
        assert before[(DAY1.date(), "location_units", "berlin")] == units[(DAY1.date(),
                                                                             "berlin")]
        # Both batches again: nothing new is planned, cut or spent.
        again = await store.write_constrained_batch(first + second, {("t", 0): 40}, "g", limits,
                                                    DECIDED)  # fmt: skip
        assert again == ([], [])
        assert await decided(conn) == once and await usage(conn) == before
        # The cuts record requested vs allocated and why.
        reasons = {r["reason"] for r in await conn.fetch("SELECT reason FROM allocation_cuts")}
        assert reasons <= {"budget", "capacity", "budget+capacity", "value"} and reasons
    assert await store.committed_offsets("g", ["t"]) == {("t", 0): 40}


async def test_concurrent_optimizers_of_one_cycle_never_overspend(pg_database, store):
    limits = CycleConstraints(supplier_budgets={"acme": 250.0})
    left, right = batch("l", 15, suppliers=("acme",)), batch("r", 15, suppliers=("acme",))
    # The cycle's usage rows exist already (an earlier batch); the next test pins down the
    # row lock that keeps two writers of existing rows apart.
    tiny = [restock(f"x{i}", sku=f"x{i}", pack=1, quantity=1, unit_cost=1.0, supplier="acme",
                    location=loc) for i, loc in enumerate(("berlin", "paris"))]  # fmt: skip
    await store.write_constrained_batch(tiny, {}, "g", limits, DECIDED)
    other = await PlanStore.connect(pg_database)
    try:
        await asyncio.gather(
            store.write_constrained_batch(left, {}, "g", limits, DECIDED),
            other.write_constrained_batch(right, {}, "g", limits, DECIDED))
    finally:
        await other.close()
    async with store._pool.acquire() as conn:
        spend, _ = await spend_and_units(conn)
        assert 0 < spend[(DAY1.date(), "acme")] <= 250.0 + 1e-6
        assert len(await decided(conn)) == 32


async def test_service_keeps_budgets_across_batches_and_redelivery(kafka_bootstrap, pg_database):
    settings = isolated_settings(kafka_bootstrap).model_copy(update={
        "supplier_budgets": {"acme": 350.0, "globex": 200.0},
        "supplier_min_order_values": {"globex": 50.0},
        "location_capacity_units": {"paris": 120.0}})
    await create_optimizer_topics(settings)
    restocks = batch("d", 24) + batch("e", 12, bucket=DAY2)
    records = [(sku_key(r.sku, r.location), encode(r)) for r in restocks]
    await produce(settings, settings.topics.restock, records + records[:6])
    counters = await OptimizerService(settings, pg_database, max_records=7).run_until_idle(2.0)
    assert counters.restocks_in == len(records) + 6
    conn = await asyncpg.connect(pg_database)
    try:
        once = await decided(conn)
        assert set(once) == {r.restock_id for r in restocks}
        cut_rows = await conn.fetchval("SELECT count(*) FROM allocation_cuts")
        assert counters.lines_cut == cut_rows > 0
        spend, units = await spend_and_units(conn)
        for day in (DAY1.date(), DAY2.date()):
            assert spend.get((day, "acme"), 0) <= 350.0 + 1e-6
            globex = spend.get((day, "globex"), 0.0)
            assert globex == 0 or 50.0 <= globex <= 200.0 + 1e-6
            assert units.get((day, "paris"), 0) <= 120
        before = await usage(conn)
        # Everything delivered again, to a restarted service: exactly one decision each.
        await produce(settings, settings.topics.restock, records)
        again = await OptimizerService(settings, pg_database).run_until_idle(2.0)
        assert again.restocks_in == len(records)
        assert again.plan_lines_written == again.lines_cut == again.plans_out == 0
        assert await decided(conn) == once and await usage(conn) == before
        assert await conn.fetchval(
            "SELECT count(*) FROM plan_lines GROUP BY restock_id ORDER BY 1 DESC LIMIT 1") == 1
    finally:
        await conn.close()


async def test_a_batch_waits_for_and_sees_the_spend_of_a_writer_holding_the_cycle(pg_database,
                                                                                  store):
    limits = CycleConstraints(supplier_budgets={"acme": 250.0})
    tiny = [restock(f"x{i}", sku=f"x{i}", pack=1, quantity=1, unit_cost=1.0, supplier="acme",
                    location=loc) for i, loc in enumerate(("berlin", "paris"))]  # fmt: skip
    await store.write_constrained_batch(tiny, {}, "g", limits, DECIDED)  # usage rows exist
    other = await asyncpg.connect(pg_database)
    try:
        # Another optimizer mid-batch: it has locked and read the cycle's rows, and is still
        # allocating when this batch starts; then it spends the whole budget and commits.
        tx = other.transaction()
        await tx.start()
        await other.execute("SELECT * FROM cycle_usage FOR UPDATE")
        task = asyncio.create_task(store.write_constrained_batch(
            batch("w", 10, suppliers=("acme",)), {}, "g", limits, DECIDED))
        await asyncio.sleep(0.5)  # let it run up to the lock (the result does not depend on it)
        await other.execute("UPDATE cycle_usage SET used = 250 WHERE kind = 'supplier_spend'")
        await tx.commit()
        plans, cuts = await task
    finally:
        await other.close()
    # It waited for the other writer and saw the budget gone: everything cut, nothing spent.
    assert plans == [] and len(cuts) == 10
    assert {c.reason for c in cuts} == {"budget"} and all(c.allocated == 0 for c in cuts)
