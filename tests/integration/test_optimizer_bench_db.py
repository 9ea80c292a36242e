"""`shelfcast bench db` against a real PostgreSQL: rows/s reported, redelivery doubles nothing."""

import pytest

from optimizer.bench_db import bench_plan_writes

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_bench_writes_every_restock_once_and_redelivery_adds_nothing(pg_database):
    doc = await bench_plan_writes(pg_database, restocks=1_200, batch=400, skus_per_plan=40)
    # 1200 restocks + 1200 plan lines + 30 plans + 3 offset rows.
    assert doc["rows_written"] == 1_200 + 1_200 + 30 + 3
    assert doc["rows_per_s"] > 0
    again = doc["redelivery"]
    assert again["idempotent"] and again["plans_created"] == 0
    assert again["counts_after"] == {"restock_events": 1_200, "plan_lines": 1_200, "plans": 30}
