"""Least privilege: migrations run as the owner, the services as a role that can only read and
write rows — no DDL, no DELETE."""

import asyncio
import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from optimizer.consolidate import consolidate
from optimizer.store import PlanStore
from schemas import RestockEvent
from shelfcast.cli import main


def as_user(dsn: str, user: str) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


def restock(i: int) -> RestockEvent:
    t = datetime(2025, 1, 6, tzinfo=UTC)
    return RestockEvent(
        restock_id=f"r{i}", sku=f"S{i}", location="wh", supplier="acme", quantity=6,
        reorder_point=4.0, order_up_to=10.0, inventory_position=2.0, on_hand=2, on_order=0,
        backorders=0, service_level=0.95, lead_time_days=3, review_days=1, unit_cost=1.5,
        reason="test", model_version="m", bucket=t, issued_at=t)


async def test_runtime_role_writes_rows_but_cannot_change_the_schema(pg_database, monkeypatch,
                                                                     capsys):
    role = f"rt_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg_database)
    await admin.execute(f"CREATE ROLE {role} LOGIN")
    try:
        monkeypatch.setenv("SHELFCAST_DATABASE_URL", pg_database)
        monkeypatch.setenv("SHELFCAST_DATABASE_RUNTIME_ROLE", role)
        assert await asyncio.to_thread(main, ["migrate"]) == 0
        assert f"granted run-time rights to {role}" in capsys.readouterr().out

        runtime = as_user(pg_database, role)
        async with await PlanStore.connect(runtime) as store:
            events = [restock(i) for i in range(3)]
            created = await store.write_batch(events, consolidate(events, events[0].issued_at),
                                              {("t", 0): 3}, "g")
            assert len(created) == 1 and await store.count_plan_lines() == 3
        conn = await asyncpg.connect(runtime)
        try:
            for statement in ("DROP TABLE plan_lines", "DELETE FROM plan_lines",
                              "TRUNCATE restock_events", "CREATE TABLE sneaky (i int)",
                              "INSERT INTO schema_migrations VALUES (99, 'x', 'y')"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(statement)
        finally:
            await conn.close()
    finally:
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()


def test_granting_to_a_missing_role_is_a_one_line_error(pg_database, monkeypatch, capsys):
    monkeypatch.setenv("SHELFCAST_DATABASE_URL", pg_database)
    monkeypatch.setenv("SHELFCAST_DATABASE_RUNTIME_ROLE", "nobody_here")
    assert main(["migrate"]) == 1
    err = capsys.readouterr().err.strip()
    assert "does not exist" in err and "\n" not in err
