"""PostgreSQL side of retraining (asyncpg): the recorded demand a training panel is built from
(`demand_history`, migration 0005) and the ledger of champion/challenger decisions
(`model_versions`, migration 0006) that `shelfcast retrain` writes and the dashboard reads."""

from __future__ import annotations

import json
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import numpy as np
from numpy.typing import NDArray

from optimizer.errors import StoreError
from schemas import sku_key

__all__ = [
    "DemandRows",
    "ModelVersionRecord",
    "list_model_versions",
    "read_demand_history",
    "record_model_version",
]

_FETCH_ROWS = 50_000  # rows per round trip while reading demand_history


@dataclass(frozen=True)
class DemandRows:
    """Recorded buckets, columnar: row i is series `keys[series[i]]` (`sku@location`), bucket
    number `buckets[i]` (bucket start in seconds since the epoch / bucket length), quantity."""

    keys: tuple[str, ...]
    series: NDArray[np.intp]
    buckets: NDArray[np.int64]
    quantities: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.series.size)


def _missing_table(exc: asyncpg.UndefinedTableError) -> StoreError:
    return StoreError(f"{exc}: the database lacks the retraining tables; run `shelfcast "
                      "migrate` first")


async def read_demand_history(conn: asyncpg.Connection, *, bucket_seconds: int,
                              max_buckets: int | None = None,
                              on_rows: Callable[[int], None] | None = None) -> DemandRows:
    """Every recorded bucket of length `bucket_seconds`, or only those of the last
    `max_buckets` buckets before the newest one, read in chunks (no row objects kept);
    `on_rows(n)` is told the running count after each chunk."""
    where = "bucket_seconds = $1"
    args: list[Any] = [bucket_seconds]
    if max_buckets is not None:
        where += (" AND bucket_start > (SELECT max(bucket_start) FROM demand_history "
                  "WHERE bucket_seconds = $1) - make_interval(secs => ($1 * $2)::double precision)")
        args.append(max_buckets)
    sql = (f"SELECT sku, location, floor(extract(epoch FROM bucket_start) / $1)::bigint, "
           f"quantity FROM demand_history WHERE {where}")
    index: dict[tuple[str, str], int] = {}
    series, buckets, quantities = array("q"), array("q"), array("d")
    try:
        async with conn.transaction(readonly=True, isolation="repeatable_read"):
            cursor = await conn.cursor(sql, *args)
            while rows := await cursor.fetch(_FETCH_ROWS):
                for sku, location, bucket, quantity in rows:
                    key = (sku, location)
                    i = index.get(key)
                    if i is None:
                        i = index[key] = len(index)
                    series.append(i)
                    buckets.append(bucket)
                    quantities.append(quantity)
                if on_rows is not None:
                    on_rows(len(series))
    except asyncpg.UndefinedTableError as exc:
        raise _missing_table(exc) from None
    keys = tuple(sku_key(sku, location) for sku, location in index)
    return DemandRows(keys, np.frombuffer(series, dtype=np.int64).astype(np.intp),
                      np.frombuffer(buckets, dtype=np.int64).copy(),
                      np.frombuffer(quantities, dtype=np.float64).copy())


@dataclass
class ModelVersionRecord:
    """One champion/challenger decision (a `model_versions` row)."""

    version: str
    trained_at: datetime
    bucket_seconds: int
    data_first_bucket: datetime
    data_last_bucket: datetime
    n_series: int
    champion_version: str | None
    champion_scores: dict[str, Any] | None
    challenger_scores: dict[str, Any]
    protocol: dict[str, Any]
    promoted: bool
    reason: str
    decided_at: datetime | None = None
    id: int | None = None


async def record_model_version(conn: asyncpg.Connection, record: ModelVersionRecord) -> int:
    """Insert `record`; returns its id (and sets `record.id`, `record.decided_at`)."""
    try:
        row = await conn.fetchrow(
            """
            INSERT INTO model_versions (version, trained_at, bucket_seconds, data_first_bucket,
                data_last_bucket, n_series, champion_version, champion_scores,
                challenger_scores, protocol, promoted, reason)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9::jsonb, $10::jsonb, $11, $12)
            RETURNING id, decided_at
            """,
            record.version, record.trained_at, record.bucket_seconds, record.data_first_bucket,
            record.data_last_bucket, record.n_series, record.champion_version,
            None if record.champion_scores is None else json.dumps(record.champion_scores),
            json.dumps(record.challenger_scores), json.dumps(record.protocol),
            record.promoted, record.reason)
    except asyncpg.UndefinedTableError as exc:
        raise _missing_table(exc) from None
    assert row is not None
    record.id, record.decided_at = int(row["id"]), row["decided_at"]
    return record.id


async def list_model_versions(conn: asyncpg.Connection | asyncpg.Pool, *, limit: int = 50
                              ) -> list[ModelVersionRecord]:
    """The latest `limit` decisions, newest first."""
    try:
        rows = await conn.fetch(
            "SELECT * FROM model_versions ORDER BY decided_at DESC, id DESC LIMIT $1", limit)
    except asyncpg.UndefinedTableError as exc:
        raise _missing_table(exc) from None

    def loads(value: str | None) -> Any:
        return None if value is None else json.loads(value)

    return [ModelVersionRecord(
        version=r["version"], trained_at=r["trained_at"], bucket_seconds=r["bucket_seconds"],
        data_first_bucket=r["data_first_bucket"], data_last_bucket=r["data_last_bucket"],
        n_series=r["n_series"], champion_version=r["champion_version"],
        champion_scores=loads(r["champion_scores"]),
        challenger_scores=loads(r["challenger_scores"]), protocol=loads(r["protocol"]),
        promoted=r["promoted"], reason=r["reason"], decided_at=r["decided_at"], id=r["id"])
        for r in rows]
