"""`shelfcast bench db`: plan-write throughput of PlanStore.write_batch against a real PostgreSQL.

Writes N synthetic restock events in batches exactly as the optimizer service does (restocks +
new plan lines + plans + consumer offsets, one transaction per batch), then delivers the same
batches again and checks that nothing doubled. Runs in a scratch database that it drops. With
`budget_share` the batches go through the per-cycle constraints path instead
(`write_constrained_batch`: usage rows locked and read, allocation, cuts and usage written).
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from optimizer.consolidate import consolidate
from optimizer.constraints import CycleConstraints
from optimizer.store import PlanStore
from schemas.events import RestockEvent

__all__ = ["bench_plan_writes", "synthetic_restocks"]

GROUP = "bench-optimizer"
TOPIC = "bench.restock"
_COUNTED = ("restock_events", "plan_lines", "plans")


def synthetic_restocks(n: int, *, skus_per_plan: int, seed_time: datetime | None = None
                       ) -> list[RestockEvent]:  # fmt: skip
    """`n` distinct restock events, `skus_per_plan` per (supplier, location)."""
    base = seed_time or datetime(2025, 1, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        group = i // skus_per_plan
        out.append(RestockEvent(
            restock_id=f"r-{i:09d}", sku=f"sku-{i:07d}", location=f"loc-{group % 7}",
            supplier=f"sup-{group}", quantity=12 + i % 37, reorder_point=30.5, order_up_to=55.0,
            inventory_position=12.0, on_hand=12, on_order=0, backorders=0, service_level=0.95,
            lead_time_days=7, review_days=1, unit_cost=2.5 + (i % 11) * 0.25,
            reason="bench", model_version="bench-1", bucket=base + timedelta(days=i % 30),
            issued_at=base + timedelta(days=i % 30, hours=1),
        ))  # fmt: skip
    return out


def _backend_cpu_s(pids: list[int]) -> float | None:
    """CPU seconds (user + system) the server processes `pids` used so far; None when the
    server is not on this machine (or not readable)."""
    total = 0
    try:
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    except (OSError, IndexError, ValueError):
        return None
    return total / os.sysconf("SC_CLK_TCK")


async def _scratch_database(dsn: str) -> tuple[str, str]:
    name = f"bench_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    head, _, _ = dsn.rpartition("/")
    query = ""
    if "?" in dsn.rpartition("/")[2]:
        query = "?" + dsn.rpartition("/")[2].split("?", 1)[1]
    return name, f"{head}/{name}{query}"


async def _drop_database(dsn: str, name: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _with_demand(events: list[RestockEvent]) -> list[RestockEvent]:
    """The events with what the constraints path values packs by (as the stream sends it)."""
    levels = [0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975]
    z = [-1.96, -1.645, -1.2816, -0.6745, 0.0, 0.6745, 1.2816, 1.645, 1.96]
    return [e.model_copy(update={
        "case_pack": 1, "moq": 1, "demand_levels": levels,
        "demand_quantiles": [round(max(0.0, e.quantity * (0.9 + 0.25 * q)), 4) for q in z]})
        for e in events]  # fmt: skip


def _budgets(events: list[RestockEvent], share: float) -> CycleConstraints:
    """Each supplier's budget: `share` of its largest cycle's wanted spend."""
    per_cycle: dict[tuple[str, Any], float] = {}
    for e in events:
        key = (e.supplier, e.bucket.date())
        per_cycle[key] = per_cycle.get(key, 0.0) + e.quantity * e.unit_cost
    budgets: dict[str, float] = {}
    for (supplier, _), spend in per_cycle.items():
        budgets[supplier] = max(budgets.get(supplier, 0.0), round(share * spend, 2))
    return CycleConstraints(supplier_budgets=budgets)


async def bench_plan_writes(dsn: str, *, restocks: int = 100_000, batch: int = 5_000,
                            skus_per_plan: int = 50,
                            budget_share: float | None = None) -> dict[str, Any]:  # fmt: skip
    """Write `restocks` events in batches of `batch`; return rows/s and the idempotency check.

    rows = restock events + plan lines + plans + offset rows written per batch (+ cuts with
    `budget_share`).
    """
    events = synthetic_restocks(restocks, skus_per_plan=skus_per_plan)
    limits = None
    if budget_share is not None:
        events = _with_demand(events)
        limits = _budgets(events, budget_share)
    decided = datetime(2025, 2, 1, tzinfo=UTC)

    async def write(store: PlanStore, chunk: list[RestockEvent], plans: list[Any],
                    offsets: dict[tuple[str, int], int]) -> tuple[list[Any], int]:  # fmt: skip
        if limits is None:
            return await store.write_batch(chunk, plans, offsets, GROUP), 0
        created, cuts = await store.write_constrained_batch(chunk, offsets, GROUP, limits,
                                                            decided)  # fmt: skip
        return created, len(cuts)

    batches = []
    for b, start in enumerate(range(0, restocks, batch)):
        chunk = events[start:start + batch]
        plans = consolidate(chunk, decided) if limits is None else []
        batches.append((chunk, plans, {(TOPIC, 0): (b + 1) * batch}))
    name, bench_dsn = await _scratch_database(dsn)
    try:
        async with await PlanStore.connect(bench_dsn) as store:
            await store.migrate()
            server_version = await store._pool.fetchval("SHOW server_version")
            fsync = await store._pool.fetchval("SHOW fsync")
            pids = [r["pid"] for r in await store._pool.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()")]
            server_cpu0, client_cpu0 = _backend_cpu_s(pids), time.process_time()
            started = time.perf_counter()
            rows = cut = 0
            for chunk, plans, offsets in batches:
                created, cuts = await write(store, chunk, plans, offsets)
                rows += len(chunk) + sum(len(p.lines) for p in created) + len(created) + 1 + cuts
                cut += cuts
            first_s = time.perf_counter() - started
            client_cpu_s = time.process_time() - client_cpu0
            server_cpu1 = _backend_cpu_s(pids)
            server_cpu_s = (None if server_cpu0 is None or server_cpu1 is None
                            else server_cpu1 - server_cpu0)  # fmt: skip
            counts = (await store.count_restock_events(), await store.count_plan_lines(),
                      await store.count_plans())  # fmt: skip
            started = time.perf_counter()
            redelivered_created = 0
            for chunk, plans, offsets in batches:
                again_created, again_cuts = await write(store, chunk, plans, offsets)
                redelivered_created += len(again_created) + again_cuts
            again_s = time.perf_counter() - started
            counts_after = (await store.count_restock_events(), await store.count_plan_lines(),
                            await store.count_plans())  # fmt: skip
    finally:
        await _drop_database(dsn, name)
    constrained = {} if limits is None else {"constraints": {
        "budget_share": budget_share, "suppliers": len(limits.supplier_budgets),
        "restocks_cut": cut, "method": "PlanStore.write_constrained_batch: per batch the cycle "
        "usage rows are locked and read, restocks already stored skipped, the rest allocated "
        "(optimizer.constraints), then written as below with their cuts and usage"}}
    return {
        **constrained,
        "method": "PlanStore.write_batch: restocks, plan lines and plans binary-COPY'd into "
                  "temporary staging tables; restocks by INSERT ... SELECT ... ON CONFLICT DO "
                  "NOTHING, lines and whole plans by one INSERT ... SELECT ... ON CONFLICT DO "
                  "NOTHING statement returning only the plans that got a line; one transaction "
                  "per batch with the consumer offsets",
        "postgres": {"version": server_version, "fsync": fsync},
        "restocks": restocks,
        "batch_restocks": batch,
        "skus_per_plan": skus_per_plan,
        "rows_written": rows,
        "seconds": round(first_s, 3),
        "rows_per_s": round(rows / first_s),
        "restocks_per_s": round(restocks / first_s),
        "cpu_s": {"client": round(client_cpu_s, 3),
                  "server_backends": None if server_cpu_s is None else round(server_cpu_s, 3)},
        "redelivery": {
            "seconds": round(again_s, 3),
            "restocks_per_s": round(restocks / again_s),
            "plans_created": redelivered_created,
            "counts_before": dict(zip(_COUNTED, counts, strict=True)),
            "counts_after": dict(zip(_COUNTED, counts_after, strict=True)),
            "idempotent": counts == counts_after and redelivered_created == 0,
        },
    }
