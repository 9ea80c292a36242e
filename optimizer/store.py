"""PostgreSQL store of the optimizer (asyncpg): migrations, idempotent plan writes, offsets, outbox.

Every batch is written in ONE transaction — restock events, new plan lines, the plans that got a
new line, and the consumer's next offsets — so the database alone says what has been consumed
and planned, and a redelivered restock can never become a second plan line.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.resources
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import asyncpg

from optimizer.consolidate import plan_from_lines
from optimizer.errors import MigrationError, StoreError
from schemas.events import PlanEvent, PlanLine, RestockEvent

__all__ = [
    "TRANSIENT_DB_ERRORS",
    "Migration",
    "PlanStore",
    "TopicPartitionOffsets",
    "load_migrations",
    "wait_for_server",
]

# (topic, partition) -> next offset to consume.
TopicPartitionOffsets = Mapping[tuple[str, int], int]

# Errors after which the same call may succeed later (server down, restarting, failing over).
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes ConnectionRefusedError and TimeoutError
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.TransactionRollbackError,  # deadlock, serialization failure
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,  # e.g. the pool's connection was closed under us
    # a pooled connection left mid-protocol by a server crash ("cannot switch to state 12;
    # another operation (2) is in progress", MagicStack/asyncpg#784); the pool drops it
    asyncpg.exceptions.InternalClientError,
)

_MIGRATION_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
# pg_advisory_xact_lock key: int64 of "shelfcast.optimizer.migrations", fixed forever.
_MIGRATION_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"shelfcast.optimizer.migrations").digest()[:8], "big", signed=True
)

_CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""

_UPSERT_RESTOCKS = """
INSERT INTO restock_events (
    restock_id, sku, location, supplier, quantity, reorder_point, order_up_to,
    inventory_position, service_level, lead_time_days, model_version, bucket, issued_at, payload
)
SELECT * FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::text[], $5::int4[], $6::float8[], $7::float8[],
    $8::float8[], $9::float8[], $10::int4[], $11::text[], $12::timestamptz[], $13::timestamptz[],
    $14::jsonb[]
)
ORDER BY 1  -- one lock order for every writer: concurrent batches cannot deadlock
ON CONFLICT (restock_id) DO NOTHING
"""

_ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

_RESTOCK_COLUMNS = [
    "restock_id", "sku", "location", "supplier", "quantity", "reorder_point", "order_up_to",
    "inventory_position", "service_level", "lead_time_days", "model_version", "bucket",
    "issued_at", "payload",
]

_STAGE_RESTOCKS = """
CREATE TEMP TABLE IF NOT EXISTS restock_stage
    (LIKE restock_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS
"""

_UPSERT_STAGED_RESTOCKS = f"""
INSERT INTO restock_events ({", ".join(_RESTOCK_COLUMNS)})
SELECT {", ".join(_RESTOCK_COLUMNS)} FROM restock_stage
ORDER BY restock_id  -- one lock order for every writer: concurrent batches cannot deadlock
ON CONFLICT (restock_id) DO NOTHING
"""

_INSERT_LINES = """
INSERT INTO plan_lines (plan_id, restock_id, sku, quantity, unit_cost)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int4[], $5::numeric[])
ORDER BY 2
ON CONFLICT (restock_id) DO NOTHING
RETURNING plan_id, restock_id
"""

_INSERT_PLANS = """
INSERT INTO purchase_plans (plan_id, supplier, location, total_units, total_cost, decided_at)
SELECT * FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::int8[], $5::numeric[], $6::timestamptz[]
)
"""

_UPSERT_OFFSETS = """
INSERT INTO consumer_offsets (group_id, topic, partition, next_offset)
SELECT $1, * FROM unnest($2::text[], $3::int4[], $4::int8[])
ON CONFLICT (group_id, topic, partition)
DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()
"""

_SELECT_UNPUBLISHED = """
SELECT p.plan_id, p.supplier, p.location, p.decided_at,
       array_agg(l.restock_id ORDER BY l.sku, l.restock_id) AS restock_ids,
       array_agg(l.sku ORDER BY l.sku, l.restock_id) AS skus,
       array_agg(l.quantity ORDER BY l.sku, l.restock_id) AS quantities,
       array_agg(l.unit_cost ORDER BY l.sku, l.restock_id) AS unit_costs
FROM purchase_plans p JOIN plan_lines l USING (plan_id)
WHERE p.published_at IS NULL
GROUP BY p.plan_id
ORDER BY p.decided_at, p.plan_id
LIMIT $1
"""


@dataclass(frozen=True)
class Migration:
    """One versioned SQL file, `NNNN_name.sql`."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path | Traversable | None = None) -> list[Migration]:
    """The migrations in `directory` (default: the package's own), sorted by version."""
    root = (
        directory
        if directory is not None
        else importlib.resources.files("optimizer").joinpath("migrations")
    )
    found: dict[int, Migration] = {}
    for entry in root.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _MIGRATION_FILE.match(entry.name)
        if match is None:
            raise MigrationError(f"migration file {entry.name!r} is not named NNNN_snake_name.sql")
        version = int(match["version"])
        if version in found:
            raise MigrationError(
                f"two migrations share version {version}: {found[version].name!r} and "
                f"{match['name']!r}"
            )
        found[version] = Migration(version, match["name"], entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def _plan_from_row(row: Mapping[str, Any]) -> PlanEvent:
    lines = [
        PlanLine(restock_id=rid, sku=sku, quantity=int(qty), unit_cost=float(cost))
        for rid, sku, qty, cost in zip(
            row["restock_ids"], row["skus"], row["quantities"], row["unit_costs"], strict=True
        )
    ]
    return plan_from_lines(
        plan_id=row["plan_id"],
        supplier=row["supplier"],
        location=row["location"],
        lines=lines,
        decided_at=row["decided_at"],
    )


class PlanStore:
    """The optimizer's PostgreSQL tables behind one asyncpg pool.

    `store = await PlanStore.connect(dsn)`; `await store.migrate()`; ...; `await store.close()`
    (or `async with await PlanStore.connect(dsn) as store:`).
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(
        cls, dsn: str, *, min_size: int = 1, max_size: int = 4, timeout_s: float = 10.0
    ) -> Self:
        """Open a pool on `dsn`. Raises the asyncpg/OS error when the server is unreachable."""
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout_s,
            server_settings={"application_name": "shelfcast-optimizer"},
        )
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ migrations

    async def migrate(self, migrations: Sequence[Migration] | None = None) -> list[int]:
        """Apply the pending migrations in version order; return the versions applied now.

        One transaction under a transaction-scoped advisory lock, so concurrent starters
        serialise and a failed migration leaves nothing behind. Running it again applies nothing.
        Raises MigrationError when an applied migration's file has changed since.
        """
        todo = list(migrations) if migrations is not None else load_migrations()
        applied_now: list[int] = []
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK_KEY)
            await conn.execute(_CREATE_MIGRATIONS_TABLE)
            applied = {
                r["version"]: r["checksum"]
                for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
            }
            for migration in sorted(todo, key=lambda m: m.version):
                if migration.version in applied:
                    if applied[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version:04d}_{migration.name} was changed "
                            "after it was applied; add a new migration instead"
                        )
                    continue
                try:
                    await conn.execute(migration.sql)
                except asyncpg.PostgresError as exc:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} failed: {exc}"
                    ) from exc
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
                applied_now.append(migration.version)
        return applied_now

    async def grant_runtime_role(self, role: str) -> None:
        """Give `role` what the optimizer needs at run time and nothing more: read and write
        rows of the tables the migrations created (no DDL, no DELETE, no TRUNCATE). Run by the
        migrating (owner) role; the services then connect as `role`."""
        if not _ROLE_NAME.fullmatch(role):
            raise StoreError(f"invalid role name {role!r}")
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
                raise StoreError(f"role {role!r} does not exist: create it first "
                                 f"(CREATE ROLE {role} LOGIN PASSWORD ...)")
            await conn.execute(f'GRANT USAGE ON SCHEMA public TO "{role}"')
            await conn.execute(
                f'GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO "{role}"')
            await conn.execute(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{role}"')
            await conn.execute(f'REVOKE INSERT, UPDATE ON schema_migrations FROM "{role}"')

    async def applied_migrations(self) -> list[tuple[int, str]]:
        rows = await self._pool.fetch("SELECT version, name FROM schema_migrations ORDER BY 1")
        return [(r["version"], r["name"]) for r in rows]

    # ------------------------------------------------------------------ the batch write

    async def write_batch(
        self,
        restocks: Sequence[RestockEvent],
        plans: Sequence[PlanEvent],
        offsets: TopicPartitionOffsets,
        group_id: str,
    ) -> list[PlanEvent]:
        """Persist one consumed batch atomically; return the plans actually created.

        Restock events are stored once (by restock_id). A plan line is written only for a
        restock id that has none yet, and a plan row only when it received at least one new
        line; its totals are recomputed from those lines. The returned plans carry only their
        new lines. The consumer's next offsets commit in the same transaction. Restocks that
        plan lines refer to must be in `restocks` or already stored.
        """
        unique = list({r.restock_id: r for r in reversed(restocks)}.values())[::-1]
        line_owner: dict[str, PlanEvent] = {}
        line_rows: list[tuple[str, PlanLine]] = []
        for plan in plans:
            for line in plan.lines:
                if line.restock_id not in line_owner:
                    line_owner[line.restock_id] = plan
                    line_rows.append((plan.plan_id, line))

        async with self._pool.acquire() as conn, conn.transaction():
            # The consumer offsets commit in this same transaction and the service seeks to
            # them on start, so a commit lost in a crash is simply consumed and written again:
            # waiting for the WAL flush buys nothing here (no loss, no double either way).
            await conn.execute("SET LOCAL synchronous_commit = off")
            if unique:
                # COPY into a per-connection staging table, then one set-based upsert: the
                # binary COPY path beats unnest() of 14 arrays (the jsonb payload above all).
                await conn.execute(_STAGE_RESTOCKS)
                await conn.copy_records_to_table(
                    "restock_stage", columns=_RESTOCK_COLUMNS,
                    records=[(r.restock_id, r.sku, r.location, r.supplier, r.quantity,
                              r.reorder_point, r.order_up_to, r.inventory_position,
                              r.service_level, r.lead_time_days, r.model_version, r.bucket,
                              r.issued_at, r.model_dump_json()) for r in unique])
                await conn.execute(_UPSERT_STAGED_RESTOCKS)
            created: list[PlanEvent] = []
            if line_rows:
                inserted = await conn.fetch(
                    _INSERT_LINES,
                    [plan_id for plan_id, _ in line_rows],
                    [line.restock_id for _, line in line_rows],
                    [line.sku for _, line in line_rows],
                    [line.quantity for _, line in line_rows],
                    [line.unit_cost for _, line in line_rows],
                )
                new_ids = {row["restock_id"] for row in inserted}
                for plan in plans:
                    lines = [
                        line
                        for line in plan.lines
                        if line.restock_id in new_ids and line_owner[line.restock_id] is plan
                    ]
                    if lines:
                        created.append(
                            plan_from_lines(
                                plan_id=plan.plan_id,
                                supplier=plan.supplier,
                                location=plan.location,
                                lines=lines,
                                decided_at=plan.decided_at,
                            )
                        )
                if created:
                    await conn.execute(
                        _INSERT_PLANS,
                        [p.plan_id for p in created],
                        [p.supplier for p in created],
                        [p.location for p in created],
                        [p.total_units for p in created],
                        [p.total_cost for p in created],
                        [p.decided_at for p in created],
                    )
            if offsets:
                items = sorted(offsets.items())
                await conn.execute(
                    _UPSERT_OFFSETS,
                    group_id,
                    [topic for (topic, _), _ in items],
                    [partition for (_, partition), _ in items],
                    [offset for _, offset in items],
                )
        return created

    # ------------------------------------------------------------------ offsets and outbox

    async def committed_offsets(
        self, group_id: str, topics: Iterable[str]
    ) -> dict[tuple[str, int], int]:
        """The next offsets stored for `group_id` on `topics`: {(topic, partition): offset}."""
        rows = await self._pool.fetch(
            "SELECT topic, partition, next_offset FROM consumer_offsets "
            "WHERE group_id = $1 AND topic = ANY($2::text[])",
            group_id,
            list(topics),
        )
        return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}

    async def unpublished_plans(self, limit: int = 1000) -> list[PlanEvent]:
        """Plans written but not yet marked published (oldest first), with all their lines."""
        rows = await self._pool.fetch(_SELECT_UNPUBLISHED, limit)
        return [_plan_from_row(row) for row in rows]

    async def mark_published(self, plan_ids: Sequence[str]) -> int:
        """Record that these plans are on the plans topic; return how many were newly marked."""
        if not plan_ids:
            return 0
        status = await self._pool.execute(
            "UPDATE purchase_plans SET published_at = now() "
            "WHERE plan_id = ANY($1::text[]) AND published_at IS NULL",
            list(plan_ids),
        )
        return int(status.split()[-1])

    # ------------------------------------------------------------------ summaries

    async def count_plans(self) -> int:
        return int(await self._pool.fetchval("SELECT count(*) FROM purchase_plans"))

    async def count_plan_lines(self) -> int:
        return int(await self._pool.fetchval("SELECT count(*) FROM plan_lines"))

    async def count_restock_events(self) -> int:
        return int(await self._pool.fetchval("SELECT count(*) FROM restock_events"))


async def wait_for_server(dsn: str, *, timeout_s: float = 30.0) -> None:
    """Poll until PostgreSQL at `dsn` accepts a connection, or raise StoreError."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=2.0)
        except TRANSIENT_DB_ERRORS as exc:
            if loop.time() >= deadline:
                raise StoreError(f"PostgreSQL not reachable after {timeout_s:.0f}s: {exc}") from exc
            await asyncio.sleep(0.2)
        else:
            await conn.close()
            return
