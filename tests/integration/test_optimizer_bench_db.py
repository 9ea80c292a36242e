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


async def test_constrained_bench_cuts_and_redelivery_adds_nothing(pg_database):
    doc = await bench_plan_writes(pg_database, restocks=600, batch=200, skus_per_plan=40,
                                  budget_share=0.5)  # fmt: skip
    cut = doc["constraints"]["restocks_cut"]
    assert cut > 0
    again = doc["redelivery"]
    assert again["idempotent"] and again["plans_created"] == 0
    assert again["counts_after"]["restock_events"] == 600
    # Lines for the restocks not cut to 0; each cut to 0 has none.
    assert again["counts_after"]["plan_lines"] <= 600
