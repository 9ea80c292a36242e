"""PostgreSQL store of the optimizer (asyncpg): migrations, idempotent plan writes, offsets, outbox.

Every batch is written in ONE transaction — restock events, new plan lines, the plans that got a
new line, the demand actuals with their forecast scores (optimizer/actuals.py), and the
consumer's next offsets (with cycle constraints also the cuts and the cycle's
usage, decided in that transaction; the shop's planned promotions and holiday calendar,
recorded for retraining, in it too) — so the database alone says what has been consumed and
planned, and a redelivered restock can never become a second plan line.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.resources
import logging
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib.resources.abc import Traversable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import asyncpg

from optimizer.actuals import (
    AccuracyRow,
    ActualsBatch,
    accuracy_rows,
    unpublished_drift_alerts,
    write_actuals,
)
from optimizer.consolidate import plan_from_lines
from optimizer.constraints import (
    CycleConstraints,
    LineCut,
    UsageKey,
    allocate_cycle,
    usage_keys,
)
from optimizer.errors import MigrationError, OffsetsBehind, StoreError
from optimizer.holidays import write_holidays
from optimizer.promotions import write_promotions
from schemas.events import (
    AlertEvent,
    HolidayEvent,
    PlanEvent,
    PlanLine,
    PromotionEvent,
    RestockEvent,
)

log = logging.getLogger(__name__)

__all__ = [
    "TRANSIENT_DB_ERRORS",
    "BatchStart",
    "Migration",
    "PlanStore",
    "TopicPartitionOffsets",
    "load_migrations",
    "wait_for_server",
]

# (topic, partition) -> next offset to consume.
TopicPartitionOffsets = Mapping[tuple[str, int], int]


@dataclass(frozen=True)
class BatchStart:
    """Where a consumed batch begins, checked against the stored offsets before it is written.

    `first`: each partition's first offset in the batch; `written`: the partitions whose
    position this consumer has stored before. A stored offset below `first`, or no row for a
    partition in `written`, means PostgreSQL lost commits it had acknowledged (or another
    consumer wrote an older position): the batch is refused with OffsetsBehind, so the
    consumer can go back to what PostgreSQL holds instead of skipping the lost records.
    """

    first: TopicPartitionOffsets
    written: frozenset[tuple[str, int]] = frozenset()

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

_ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

# restock_events has a column per RestockEvent field (migration 0002); the staging table holds
# exactly those fields, so a batch is one binary COPY and one INSERT ... SELECT.
_EVENT_FIELDS = list(RestockEvent.model_fields)
_EVENT_COLUMN_TYPES = {
    "schema_version": "int2", "restock_id": "text", "sku": "text", "location": "text",
    "supplier": "text", "quantity": "int4", "reorder_point": "float8", "order_up_to": "float8",
    "inventory_position": "float8", "on_hand": "int4", "on_order": "int4",
    "backorders": "int4", "service_level": "float8", "lead_time_days": "int4",
    "review_days": "int4", "unit_cost": "float8", "reason": "text", "model_version": "text",
    "bucket": "timestamptz", "issued_at": "timestamptz", "case_pack": "int4", "moq": "int4",
    "demand_levels": "float8[]", "demand_quantiles": "float8[]",
}  # fmt: skip
if list(_EVENT_COLUMN_TYPES) != _EVENT_FIELDS:  # a schema change needs a migration and this
    raise ImportError(f"RestockEvent fields {_EVENT_FIELDS} != restock_events columns")
_event_record = operator.attrgetter(*_EVENT_FIELDS)
_LINE_COLUMNS = ["plan_id", "restock_id", "sku", "quantity", "unit_cost"]
_PLAN_COLUMNS = ["plan_id", "supplier", "location", "decided_at", "line_count", "total_units",
                 "total_cost"]  # fmt: skip

# Per-connection temporary staging tables (emptied at every commit) and the transaction's
# setting, in one round trip. `synchronous_commit = off`: the consumer offsets commit in the
# same transaction and the service seeks to them on start, so a commit lost in a crash is simply
# consumed and written again (no loss, no double either way).
_BEGIN_BATCH = f"""
SET LOCAL synchronous_commit = off;
CREATE TEMP TABLE IF NOT EXISTS stage_restocks (
    {", ".join(f"{name} {kind}" for name, kind in _EVENT_COLUMN_TYPES.items())}
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_lines (
    plan_id text, restock_id text, sku text, quantity int4, unit_cost float8
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_plans (
    plan_id text, supplier text, location text, decided_at timestamptz, line_count int4,
    total_units int8, total_cost float8
) ON COMMIT DELETE ROWS;
"""

_INSERT_STAGED_RESTOCKS = f"""
INSERT INTO restock_events ({", ".join(_EVENT_FIELDS)})
SELECT {", ".join(_EVENT_FIELDS)} FROM stage_restocks
ORDER BY restock_id  -- one lock order for every writer: concurrent batches cannot deadlock
ON CONFLICT (restock_id) DO NOTHING
"""

# A redelivered restock id with another quantity than the one stored: the stored decision
# stands (ids are deterministic: one restock per SKU per closed bucket), but it is logged.
_SELECT_CONFLICTING_RESTOCKS = """
SELECT s.restock_id, s.quantity AS offered, r.quantity AS stored
FROM stage_restocks s JOIN restock_events r USING (restock_id)
WHERE s.quantity <> r.quantity
ORDER BY s.restock_id
"""

# Lines first (ON CONFLICT says which restocks had none yet), then, in the same statement, the
# plans all of whose lines are new, with the totals computed in Python. Only plans that got a
# new line come back; a plan that got only SOME of its lines new (a restock planned before) also
# returns those lines' ids, and its row is written from Python with the new lines' totals.
_INSERT_STAGED_LINES_AND_PLANS = """
WITH new_lines AS (
    INSERT INTO plan_lines (plan_id, restock_id, sku, quantity, unit_cost)
    SELECT plan_id, restock_id, sku, quantity, unit_cost FROM stage_lines
    ORDER BY restock_id
    ON CONFLICT (restock_id) DO NOTHING
    RETURNING plan_id, restock_id
), counts AS (
    SELECT plan_id, count(*) AS n FROM new_lines GROUP BY plan_id
), whole AS (
    INSERT INTO purchase_plans (plan_id, supplier, location, total_units, total_cost, decided_at)
    SELECT p.plan_id, p.supplier, p.location, p.total_units, p.total_cost, p.decided_at
    FROM stage_plans p JOIN counts c ON c.plan_id = p.plan_id AND c.n = p.line_count
    ORDER BY p.plan_id
    RETURNING plan_id
)
SELECT plan_id, NULL::text AS restock_id FROM whole
UNION ALL
SELECT l.plan_id, l.restock_id
FROM new_lines l JOIN counts c USING (plan_id) JOIN stage_plans p USING (plan_id)
WHERE c.n < p.line_count
"""

# Constrained batches (migration 0004): the batch's usage rows exist, then are locked in one
# order (concurrent optimizers of a cycle take turns) and read.
_ENSURE_USAGE = """
INSERT INTO cycle_usage (cycle, kind, key)
SELECT * FROM unnest($1::date[], $2::text[], $3::text[]) ORDER BY 1, 2, 3
ON CONFLICT DO NOTHING
"""
_LOCK_USAGE = """
SELECT u.cycle, u.kind, u.key, u.used FROM cycle_usage u
JOIN unnest($1::date[], $2::text[], $3::text[]) AS k (cycle, kind, key) USING (cycle, kind, key)
ORDER BY u.cycle, u.kind, u.key
FOR UPDATE OF u
"""
_ADD_USAGE = """
UPDATE cycle_usage u SET used = u.used + round(a.amount::numeric, 4)
FROM unnest($1::date[], $2::text[], $3::text[], $4::float8[]) AS a (cycle, kind, key, amount)
WHERE u.cycle = a.cycle AND u.kind = a.kind AND u.key = a.key
"""
_INSERT_CUTS = """
INSERT INTO allocation_cuts
    (restock_id, sku, supplier, location, cycle, requested, allocated, reason, decided_at)
SELECT *, $9::timestamptz FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                                      $5::date[], $6::int4[], $7::int4[], $8::text[])
ON CONFLICT (restock_id) DO NOTHING
"""

_SELECT_STORED_IDS = "SELECT restock_id FROM restock_events WHERE restock_id = ANY($1::text[])"

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

# The rows of a batch's partitions, locked until the batch commits.
_LOCK_OFFSETS = """
SELECT o.topic, o.partition, o.next_offset
FROM consumer_offsets o
JOIN unnest($2::text[], $3::int4[]) AS b(topic, partition)
  ON o.topic = b.topic AND o.partition = b.partition
WHERE o.group_id = $1
ORDER BY o.topic, o.partition
FOR UPDATE OF o
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
        actuals: ActualsBatch | None = None,
        promotions: Sequence[PromotionEvent] = (),
        holidays: Sequence[HolidayEvent] = (),
        *,
        start: BatchStart | None = None,
    ) -> list[PlanEvent]:
        """Persist one consumed batch atomically; return the plans actually created.

        `actuals`: the batch's demand events, written with their scores and drift decisions
        in the same transaction (optimizer/actuals.py); `promotions`: the batch's planned
        promotions, recorded for retraining (optimizer/promotions.py), in it too, and
        `holidays`: its holiday calendar entries (optimizer/holidays.py); `start`:
        where the batch begins, checked first (BatchStart: OffsetsBehind, nothing written).

        Restock events are stored once (by restock_id). A plan line is written only for a
        restock id that has none yet, and a plan row only when it received at least one new
        line; its totals are recomputed from those lines. The returned plans carry only their
        new lines. The consumer's next offsets commit in the same transaction. Restocks that
        plan lines refer to must be in `restocks` or already stored, else StoreError and
        nothing is written.

        Set-based: the batch is COPY'd (binary) into temporary staging tables, restocks go in
        with one INSERT ... SELECT ... ON CONFLICT DO NOTHING, and lines plus the plans whose
        lines are all new with one more statement that returns only the plans that got a line.
        """
        unique = list({r.restock_id: r for r in reversed(restocks)}.values())[::-1]
        async with self._pool.acquire() as conn, conn.transaction():
            await _check_start(conn, group_id, start)
            if actuals is not None:
                await write_actuals(conn, actuals)
            await write_promotions(conn, promotions)
            await write_holidays(conn, holidays)
            return await self._write(conn, unique, plans, offsets, group_id)

    async def write_constrained_batch(
        self,
        restocks: Sequence[RestockEvent],
        offsets: TopicPartitionOffsets,
        group_id: str,
        constraints: CycleConstraints,
        decided_at: datetime,
        actuals: ActualsBatch | None = None,
        promotions: Sequence[PromotionEvent] = (),
        holidays: Sequence[HolidayEvent] = (),
        *,
        start: BatchStart | None = None,
    ) -> tuple[list[PlanEvent], list[LineCut]]:
        """Like `write_batch`, with the plans decided under per-cycle `constraints` inside the
        same transaction; returns (plans created, restocks cut).

        The batch's cycle usage rows (spend per supplier, units per location) are created if
        missing and locked in one order, so concurrent optimizers of one cycle take turns and
        each sees what the other spent. Restocks already stored were decided before (a
        redelivery) and are left out of the allocation: they can neither spend twice nor take
        budget from the new ones. Then the new restocks are allocated against what is left,
        and their plan lines, their cuts and the usage they add are written with the offsets.
        """
        unique = list({r.restock_id: r for r in reversed(restocks)}.values())[::-1]
        keys = usage_keys(unique, constraints)
        async with self._pool.acquire() as conn, conn.transaction():
            await _check_start(conn, group_id, start)
            if actuals is not None:
                await write_actuals(conn, actuals)
            await write_promotions(conn, promotions)
            await write_holidays(conn, holidays)
            used: dict[UsageKey, float] = {}
            if keys:
                cycles, kinds, names = (list(col) for col in zip(*keys, strict=True))
                await conn.execute(_ENSURE_USAGE, cycles, kinds, names)
                used = {(r["cycle"], r["kind"], r["key"]): float(r["used"])
                        for r in await conn.fetch(_LOCK_USAGE, cycles, kinds, names)}
            stored = {row["restock_id"] for row in await conn.fetch(
                _SELECT_STORED_IDS, [r.restock_id for r in unique])} if unique else set()
            decision = allocate_cycle([r for r in unique if r.restock_id not in stored],
                                      constraints, used, decided_at)  # fmt: skip
            created = await self._write(conn, unique, decision.plans, offsets, group_id)
            if decision.cuts:
                c = decision.cuts
                await conn.execute(
                    _INSERT_CUTS, [x.restock_id for x in c], [x.sku for x in c],
                    [x.supplier for x in c], [x.location for x in c], [x.cycle for x in c],
                    [x.requested for x in c], [x.allocated for x in c], [x.reason for x in c],
                    decided_at)  # fmt: skip
            if decision.usage_added:
                added = sorted(decision.usage_added.items())
                await conn.execute(
                    _ADD_USAGE, [k[0] for k, _ in added], [k[1] for k, _ in added],
                    [k[2] for k, _ in added], [v for _, v in added])  # fmt: skip
        return created, decision.cuts

    async def _write(
        self,
        conn: asyncpg.Connection,
        unique: Sequence[RestockEvent],
        plans: Sequence[PlanEvent],
        offsets: TopicPartitionOffsets,
        group_id: str,
    ) -> list[PlanEvent]:
        """The body of a batch write on `conn`, inside the caller's transaction."""
        # Each restock id gets a line in the first plan that lists it; a plan's staged totals
        # are over the lines it owns.
        owned: dict[str, list[PlanLine]] = {}
        seen: set[str] = set()
        for plan in plans:
            mine = owned.setdefault(plan.plan_id, [])
            for line in plan.lines:
                if line.restock_id not in seen:
                    seen.add(line.restock_id)
                    mine.append(line)
        staged_plans = [
            plan if len(owned[plan.plan_id]) == len(plan.lines) else plan_from_lines(
                plan_id=plan.plan_id, supplier=plan.supplier, location=plan.location,
                lines=owned[plan.plan_id], decided_at=plan.decided_at)
            for plan in plans if owned[plan.plan_id]
        ]  # fmt: skip

        in_batch = {r.restock_id for r in unique}
        elsewhere = sorted(seen - in_batch)

        created: list[PlanEvent] = []
        if elsewhere:  # plan_lines.restock_id has no foreign key (migration 0003)
            stored = await conn.fetch(_SELECT_STORED_IDS, elsewhere)
            if missing := set(elsewhere) - {row["restock_id"] for row in stored}:
                raise StoreError(f"plan lines refer to unknown restocks: {sorted(missing)[:5]}")
        await conn.execute(_BEGIN_BATCH)
        if unique:
            await conn.copy_records_to_table(
                "stage_restocks", columns=_EVENT_FIELDS,
                records=[_event_record(r) for r in unique])
            await conn.execute(_INSERT_STAGED_RESTOCKS)
            conflicts = await conn.fetch(_SELECT_CONFLICTING_RESTOCKS)
            for row in conflicts[:5]:
                log.warning("restock %s redelivered with quantity %d, stored with %d: the "
                            "stored decision stands", row["restock_id"], row["offered"],
                            row["stored"])
            if len(conflicts) > 5:
                log.warning("%d more conflicting restock redeliveries in this batch",
                            len(conflicts) - 5)
        if staged_plans:
            await conn.copy_records_to_table(
                "stage_lines", columns=_LINE_COLUMNS,
                records=[(plan.plan_id, line.restock_id, line.sku, line.quantity,
                          line.unit_cost)
                         for plan in staged_plans for line in plan.lines])
            await conn.copy_records_to_table(
                "stage_plans", columns=_PLAN_COLUMNS,
                records=[(p.plan_id, p.supplier, p.location, p.decided_at, len(p.lines),
                          p.total_units, p.total_cost) for p in staged_plans])
            whole: set[str] = set()
            partly_new: dict[str, set[str]] = {}
            for row in await conn.fetch(_INSERT_STAGED_LINES_AND_PLANS):
                if row["restock_id"] is None:
                    whole.add(row["plan_id"])
                else:
                    partly_new.setdefault(row["plan_id"], set()).add(row["restock_id"])
            partial: list[PlanEvent] = []
            for plan in staged_plans:
                if plan.plan_id in whole:
                    created.append(plan)
                elif (new_ids := partly_new.get(plan.plan_id)) is not None:
                    partial.append(plan_from_lines(
                        plan_id=plan.plan_id, supplier=plan.supplier,
                        location=plan.location, decided_at=plan.decided_at,
                        lines=[ln for ln in plan.lines if ln.restock_id in new_ids]))
                    created.append(partial[-1])
            if partial:
                await conn.execute(
                    _INSERT_PLANS,
                    [p.plan_id for p in partial],
                    [p.supplier for p in partial],
                    [p.location for p in partial],
                    [p.total_units for p in partial],
                    [p.total_cost for p in partial],
                    [p.decided_at for p in partial],
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

    async def unpublished_drift_alerts(self, limit: int = 1000) -> list[AlertEvent]:
        """`model_drift` alerts written but not yet marked published (oldest first)."""
        return await unpublished_drift_alerts(self._pool, limit)

    async def mark_alerts_published(self, alert_ids: Sequence[str]) -> int:
        """Record that these drift alerts are on the alerts topic; return how many were new."""
        if not alert_ids:
            return 0
        status = await self._pool.execute(
            "UPDATE drift_episodes SET published_at = now() "
            "WHERE alert_id = ANY($1::text[]) AND published_at IS NULL", list(alert_ids))
        return int(status.split()[-1])

    async def accuracy(self) -> list[AccuracyRow]:
        """Every drift monitor's rolling scores (segment x model version)."""
        return await accuracy_rows(self._pool)

    async def restock_events(self, restock_ids: Sequence[str]) -> list[RestockEvent]:
        """The stored restock events among `restock_ids`, ordered by id, rebuilt from their rows."""
        rows = await self._pool.fetch(
            f"SELECT {', '.join(_EVENT_FIELDS)} FROM restock_events "
            "WHERE restock_id = ANY($1::text[]) ORDER BY restock_id",
            list(restock_ids),
        )
        return [RestockEvent.model_validate(dict(row)) for row in rows]

    # ------------------------------------------------------------------ summaries

    async def count_plans(self) -> int:
        return int(await self._pool.fetchval("SELECT count(*) FROM purchase_plans"))

    async def count_plan_lines(self) -> int:
        return int(await self._pool.fetchval("SELECT count(*) FROM plan_lines"))

    async def count_restock_events(self) -> int:
        return int(await self._pool.fetchval("SELECT count(*) FROM restock_events"))


async def _check_start(conn: asyncpg.Connection, group_id: str,
                       start: BatchStart | None) -> None:
    """Lock the batch's offset rows; OffsetsBehind when PostgreSQL is behind `start`."""
    if start is None or not start.first:
        return
    items = sorted(start.first.items())
    rows = await conn.fetch(_LOCK_OFFSETS, group_id, [t for (t, _), _ in items],
                            [p for (_, p), _ in items])
    stored: dict[tuple[str, int], int] = {(r["topic"], r["partition"]): r["next_offset"]
                                          for r in rows}
    behind: dict[tuple[str, int], int | None] = {}
    for tp, first in items:
        at = stored.get(tp)
        if (at is None and tp in start.written) or (at is not None and at < first):
            behind[tp] = at
    if behind:
        shown = ", ".join(f"{t}[{p}] stored {at if at is not None else 'nothing'}, batch from "
                          f"{start.first[(t, p)]}" for (t, p), at in sorted(behind.items()))
        raise OffsetsBehind(f"PostgreSQL is behind the batch: {shown}", stored=behind)


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
