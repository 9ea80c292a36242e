"""Least privilege: migrations run as the owner, the services as a role that can only read and
write rows — no DDL, no DELETE."""

import asyncio
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from optimizer.consolidate import consolidate
from optimizer.store import PlanStore
from schemas import RestockEvent
from shelfcast.cli import main
from tests.factories import make_restock


def as_user(dsn: str, user: str) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


def restock(i: int) -> RestockEvent:
    return make_restock(f"r{i}", sku=f"S{i}", location="wh", quantity=6, unit_cost=1.5)


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
