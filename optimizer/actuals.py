"""The actuals in PostgreSQL: demand history, forecast scores and the drift monitors (asyncpg).

`write_actuals` runs inside the optimizer's batch transaction (optimizer/store.py), beside
the restock and plan writes and the consumer offsets, so a redelivered demand event changes
nothing twice:
1. each (sku, location, bucket) keeps the last quantity published for it (a late event may
   have revised it) in `demand_history`, and the first forecast for it;
2. a forecast is scored once (`forecast_scores`, ON CONFLICT DO NOTHING), and only the scores
   inserted now are added to their segment's bucket totals (`accuracy_buckets`: the location,
   and '*' for the fleet);
3. each partition's progress (`demand_partition_heads`) says which buckets are complete:
   every score of them is in, whatever the pace of the replay (forecasting/accuracy.py,
   Completeness); scores that arrive after their partition moved on are `on_time` false
   and stay out of the monitors' totals (`drift_buckets`);
4. each drift monitor (segment and model version) with a complete bucket it has not read
   has its row locked, reads those buckets in order and writes its new state; an episode
   that opens becomes a `model_drift` alert in `drift_episodes`, published after the
   commit (outbox).
The math is forecasting/accuracy.py's; this module only moves rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import numpy as np

from forecasting.accuracy import (
    BucketTotals,
    DriftChange,
    DriftConfig,
    DriftMonitor,
    PartitionProgress,
    RollingScores,
    score,
)
from schemas.events import AlertEvent, DemandEvent
from schemas.ids import deterministic_id

__all__ = [
    "DRIFT_KIND",
    "FLEET",
    "AccuracyRow",
    "ActualsBatch",
    "ScoredBucket",
    "accuracy_rows",
    "demand_history",
    "demand_skus",
    "scored_buckets",
    "unpublished_drift_alerts",
    "write_actuals",
]

FLEET = "*"  # the segment of every location together
DRIFT_KIND = "model_drift"  # the AlertEvent kind of an episode that opened

ExpectedCoverage = Callable[[str], float | None]  # model version -> its validation coverage

_UPSERT_DEMAND = """
INSERT INTO demand_history (sku, location, bucket_start, bucket_seconds, quantity, model_version)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::int4[], $5::float8[],
                     $6::text[])
ORDER BY 1, 2, 4, 3  -- one lock order for every writer
ON CONFLICT (sku, location, bucket_seconds, bucket_start) DO UPDATE
SET quantity = EXCLUDED.quantity,
    model_version = COALESCE(demand_history.model_version, EXCLUDED.model_version),
    recorded_at = now()
WHERE demand_history.quantity IS DISTINCT FROM EXCLUDED.quantity
   OR (demand_history.model_version IS NULL AND EXCLUDED.model_version IS NOT NULL)
"""

# Scores first (ON CONFLICT says which are new), then only the new ones pooled per segment:
# every one into accuracy_buckets (the dashboard), the on-time ones into drift_buckets (what
# the monitors read).
_INSERT_SCORES = """
WITH new AS (
    INSERT INTO forecast_scores (sku, location, bucket_start, bucket_seconds, model_version,
                                 actual, median, low_80, high_80, pinball, covered, on_time)
    SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::int4[], $5::text[],
                         $6::float8[], $7::float8[], $8::float8[], $9::float8[], $10::float8[],
                         $11::int2[], $12::bool[])
    ORDER BY 1, 2, 4, 3
    ON CONFLICT DO NOTHING
    RETURNING location, model_version, bucket_seconds, bucket_start, actual, median, pinball,
              covered, on_time
), pooled AS (
    SELECT s.segment, model_version, bucket_seconds, bucket_start, on_time,
           count(*)::int4 AS scored, sum(pinball) AS pinball, sum(actual) AS actual,
           sum(covered)::float8 AS covered, sum(median - actual) AS error
    FROM new CROSS JOIN LATERAL (VALUES (new.location), ('*')) AS s (segment)
    GROUP BY 1, 2, 3, 4, 5
), every_score AS (
    INSERT INTO accuracy_buckets AS a
    SELECT segment, model_version, bucket_seconds, bucket_start, sum(scored)::int4,
           sum(pinball), sum(actual), sum(covered), sum(error)
    FROM pooled GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (segment, model_version, bucket_seconds, bucket_start) DO UPDATE
    SET scored = a.scored + EXCLUDED.scored, pinball = a.pinball + EXCLUDED.pinball,
        actual = a.actual + EXCLUDED.actual, covered = a.covered + EXCLUDED.covered,
        error = a.error + EXCLUDED.error
)
INSERT INTO drift_buckets AS d
SELECT segment, model_version, bucket_seconds, bucket_start, scored, pinball, actual, covered,
       error
FROM pooled WHERE on_time ORDER BY 1, 2, 3, 4
ON CONFLICT (segment, model_version, bucket_seconds, bucket_start) DO UPDATE
SET scored = d.scored + EXCLUDED.scored, pinball = d.pinball + EXCLUDED.pinball,
    actual = d.actual + EXCLUDED.actual, covered = d.covered + EXCLUDED.covered,
    error = d.error + EXCLUDED.error
RETURNING segment, model_version, bucket_seconds
"""

_HEADS = """
SELECT partition, bucket_seconds, first_bucket, head_bucket, moved_at, seen_at
FROM demand_partition_heads WHERE topic = $1
"""
_UPSERT_HEADS = """
INSERT INTO demand_partition_heads AS h (topic, partition, bucket_seconds, first_bucket,
                                         head_bucket, moved_at, seen_at)
SELECT $1, * FROM unnest($2::int4[], $3::int4[], $4::timestamptz[], $5::timestamptz[],
                         $6::timestamptz[], $7::timestamptz[])
ORDER BY 2, 3
ON CONFLICT (topic, bucket_seconds, partition) DO UPDATE
SET first_bucket = least(h.first_bucket, EXCLUDED.first_bucket),
    head_bucket = greatest(h.head_bucket, EXCLUDED.head_bucket),
    moved_at = CASE WHEN EXCLUDED.head_bucket > h.head_bucket THEN EXCLUDED.moved_at
                    ELSE h.moved_at END
WHERE EXCLUDED.first_bucket < h.first_bucket OR EXCLUDED.head_bucket > h.head_bucket
"""

_ENSURE_MONITORS = """
INSERT INTO drift_monitors (segment, model_version, bucket_seconds)
SELECT * FROM unnest($1::text[], $2::text[], $3::int4[]) ORDER BY 1, 2, 3
ON CONFLICT DO NOTHING
"""
# the monitors with a complete bucket they have not read yet
_LOCK_MONITORS = """
SELECT m.segment, m.model_version, m.bucket_seconds, m.evaluated_through, m.state
FROM drift_monitors m
WHERE m.bucket_seconds = $1 AND EXISTS (
    SELECT 1 FROM drift_buckets d
    WHERE d.segment = m.segment AND d.model_version = m.model_version
      AND d.bucket_seconds = m.bucket_seconds
      AND d.bucket_start > COALESCE(m.evaluated_through, '-infinity'::timestamptz)
      AND d.bucket_start <= $2)
ORDER BY 1, 2, 3
FOR UPDATE OF m
"""
_READY_BUCKETS = """
SELECT bucket_start, scored, pinball, actual, covered, error FROM drift_buckets
WHERE segment = $1 AND model_version = $2 AND bucket_seconds = $3
  AND bucket_start > COALESCE($4, '-infinity'::timestamptz) AND bucket_start <= $5
ORDER BY bucket_start
"""
_UPDATE_MONITOR = """
UPDATE drift_monitors SET evaluated_through = $4, state = $5::jsonb, open_since = $6,
    scored = $7, pinball_relative = $8, coverage_80 = $9, bias_relative = $10, updated_at = now()
WHERE segment = $1 AND model_version = $2 AND bucket_seconds = $3
"""
_OPEN_EPISODE = """
INSERT INTO drift_episodes (alert_id, segment, model_version, bucket_seconds, opened_bucket,
                            alert)
VALUES ($1, $2, $3, $4, $5, $6::jsonb) ON CONFLICT DO NOTHING
"""
_CLOSE_EPISODE = """
UPDATE drift_episodes SET closed_bucket = $4
WHERE segment = $1 AND model_version = $2 AND bucket_seconds = $3 AND closed_bucket IS NULL
"""


@dataclass(frozen=True)
class ActualsBatch:
    """A consumed batch's demand events and what scoring them needs: when alerts are raised,
    the monitor's windows, and each model version's validation coverage (None: unknown).

    `partitions`: the partition each event came on (in each partition's order), of `topic`,
    which has `topic_partitions` partitions: they say which buckets are complete
    (forecasting/accuracy.py, Completeness). Without them the batch counts as one partition.
    """

    events: Sequence[DemandEvent]
    raised_at: datetime
    config: DriftConfig | None = None
    expected_coverage: ExpectedCoverage | None = None
    partitions: Sequence[int] | None = None
    topic: str = ""
    topic_partitions: int | None = None

    def __post_init__(self) -> None:
        if self.partitions is not None and len(self.partitions) != len(self.events):
            raise ValueError(f"{len(self.partitions)} partitions for {len(self.events)} events")


@dataclass(frozen=True)
class _Actual:
    """The last quantity of one (sku, location, bucket) in a batch, and its first forecast."""

    event: DemandEvent  # the first event with a forecast, else the last
    quantity: float
    on_time: bool  # the event's partition had not carried a later bucket before it


def _latest(events: Sequence[DemandEvent], on_time: Sequence[bool]) -> list[_Actual]:
    """One entry per bucket: the last quantity (a revision supersedes) and the first forecast
    (as the table keeps it)."""
    quantity: dict[tuple[str, str, int, datetime], float] = {}
    forecast: dict[tuple[str, str, int, datetime], tuple[DemandEvent, bool]] = {}
    for e, timely in zip(events, on_time, strict=True):
        key = (e.sku, e.location, e.bucket_seconds, e.bucket)
        quantity[key] = e.quantity
        first = forecast.get(key)
        if first is None or (first[0].forecast_quantiles is None
                             and e.forecast_quantiles is not None):
            forecast[key] = (e, timely)
    return [_Actual(forecast[key][0], q, forecast[key][1]) for key, q in quantity.items()]


async def _carry(conn: asyncpg.Connection, batch: ActualsBatch
                 ) -> tuple[dict[int, PartitionProgress], list[bool]]:
    """Each bucket length's partition progress after the batch (stored), and whether each
    event was on time."""
    events, now_s = batch.events, batch.raised_at.timestamp()
    partitions = batch.partitions if batch.partitions is not None else [0] * len(events)
    progress: dict[int, PartitionProgress] = {}
    for r in await conn.fetch(_HEADS, batch.topic):
        seconds, partition = r["bucket_seconds"], r["partition"]
        p = progress.setdefault(seconds, PartitionProgress())
        p.heads[partition] = _index(r["head_bucket"], seconds)
        p.moved_at_s[partition] = r["moved_at"].timestamp()
        first, seen_s = _index(r["first_bucket"], seconds), r["seen_at"].timestamp()
        p.first_bucket = first if p.first_bucket is None else min(p.first_bucket, first)
        p.started_at_s = seen_s if p.started_at_s is None else min(p.started_at_s, seen_s)
    on_time = [progress.setdefault(e.bucket_seconds, PartitionProgress()).carry(
        partition, _index(e.bucket, e.bucket_seconds), now_s)
        for e, partition in zip(events, partitions, strict=True)]
    rows = [(partition, seconds, _bucket_start(p.first_bucket, seconds),
             _bucket_start(head, seconds), _at(p.moved_at_s[partition]), batch.raised_at)
            for seconds, p in sorted(progress.items()) if p.first_bucket is not None
            for partition, head in sorted(p.heads.items())]
    await conn.execute(_UPSERT_HEADS, batch.topic, *map(list, zip(*rows, strict=True)))
    return progress, on_time


async def write_actuals(conn: asyncpg.Connection, batch: ActualsBatch) -> int:
    """Write a batch's actuals, scores and drift decisions on `conn`, inside the caller's
    transaction; returns how many drift episodes opened (their alerts wait in the outbox)."""
    events, raised_at, expected_coverage = batch.events, batch.raised_at, batch.expected_coverage
    if not events:
        return 0
    progress, on_time = await _carry(conn, batch)
    actuals = _latest(events, on_time)
    await conn.execute(
        _UPSERT_DEMAND, [a.event.sku for a in actuals], [a.event.location for a in actuals],
        [a.event.bucket for a in actuals], [a.event.bucket_seconds for a in actuals],
        [a.quantity for a in actuals], [a.event.model_version for a in actuals])
    scored = [a for a in actuals if a.event.forecast_quantiles is not None]
    if scored:
        columns: list[list[Any]] = [[] for _ in range(12)]
        by_levels: dict[tuple[float, ...], list[_Actual]] = {}
        for a in scored:
            assert a.event.forecast_levels is not None
            by_levels.setdefault(tuple(a.event.forecast_levels), []).append(a)
        for levels, group in by_levels.items():
            actual = np.array([a.event.quantity for a in group])
            s = score(actual, [a.event.forecast_quantiles for a in group], levels)
            for col, values in zip(columns, (
                    [a.event.sku for a in group], [a.event.location for a in group],
                    [a.event.bucket for a in group], [a.event.bucket_seconds for a in group],
                    [a.event.model_version for a in group], actual.tolist(),
                    s.median.tolist(), s.lo.tolist(), s.hi.tolist(), s.pinball.tolist(),
                    s.covered.astype(int).tolist(), [a.on_time for a in group]), strict=True):
                col.extend(values)
        touched = sorted({(r["segment"], r["model_version"], r["bucket_seconds"])
                          for r in await conn.fetch(_INSERT_SCORES, *columns)})
        if touched:
            await conn.execute(_ENSURE_MONITORS,
                               *[list(col) for col in zip(*touched, strict=True)])
    opened = 0
    cfg = batch.config or DriftConfig()
    count = batch.topic_partitions
    for seconds, p in sorted(progress.items()):
        partitions = max(count or 0, max(p.heads, default=0) + 1)
        through = p.complete_through(partitions, raised_at.timestamp(),
                                     cfg.partition_idle_buckets, cfg.partition_idle_s)
        if through is None:
            continue
        complete = _bucket_start(through, seconds)
        for row in await conn.fetch(_LOCK_MONITORS, seconds, complete):
            opened += await _advance(conn, row, cfg, expected_coverage, raised_at, complete)
    return opened


async def _advance(conn: asyncpg.Connection, row: Mapping[str, Any], cfg: DriftConfig,
                   expected_coverage: ExpectedCoverage | None, raised_at: datetime,
                   complete: datetime) -> int:
    """Feed one monitor the buckets that became complete (through `complete`); store it;
    record its episodes."""
    segment, version, seconds = row["segment"], row["model_version"], row["bucket_seconds"]
    state = row["state"]
    state = json.loads(state) if isinstance(state, str) else (state or {})
    if state:
        monitor = DriftMonitor.from_json(state, cfg)
    else:
        monitor = DriftMonitor(cfg, expected_coverage(version) if expected_coverage else None)
    ready = await conn.fetch(_READY_BUCKETS, segment, version, seconds, row["evaluated_through"],
                             complete)
    if not ready:
        return 0
    opened = 0
    for b in ready:
        change = monitor.observe(_index(b["bucket_start"], seconds), BucketTotals(
            int(b["scored"]), float(b["pinball"]), float(b["actual"]), float(b["covered"]),
            float(b["error"])))
        if change is None:
            continue
        if change.kind == "opened":
            alert = drift_alert(segment, version, seconds, change, raised_at)
            await conn.execute(_OPEN_EPISODE, alert.alert_id, segment, version, seconds,
                               alert.bucket, alert.model_dump_json())
            opened += 1
        else:
            await conn.execute(_CLOSE_EPISODE, segment, version, seconds,
                               _bucket_start(change.bucket, seconds))
    rolling = monitor.rolling()
    open_since = (None if monitor.open_since is None
                  else _bucket_start(monitor.open_since, seconds))
    await conn.execute(_UPDATE_MONITOR, segment, version, seconds, ready[-1]["bucket_start"],
                       json.dumps(monitor.to_json()), open_since, rolling.scored,
                       _finite(rolling.pinball_relative), _finite(rolling.coverage),
                       _finite(rolling.bias_relative))
    return opened


def _index(bucket_start: datetime, bucket_seconds: int) -> int:
    return int(bucket_start.timestamp()) // bucket_seconds


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _bucket_start(index: int, bucket_seconds: int) -> datetime:
    return datetime.fromtimestamp(index * bucket_seconds, UTC)


def _finite(x: float) -> float | None:
    return x if np.isfinite(x) else None


def drift_alert(segment: str, model_version: str, bucket_seconds: int, change: DriftChange,
                raised_at: datetime) -> AlertEvent:
    """The `model_drift` alert of an episode that opened (sku `*`; location the segment's,
    `*` for the fleet); its id is deterministic in the segment, version and bucket."""
    bucket = _bucket_start(change.bucket, bucket_seconds)
    where = "the fleet" if segment == FLEET else f"location {segment}"
    s, band = change.scores, change.band
    return AlertEvent(
        alert_id=deterministic_id("alert", FLEET, segment, DRIFT_KIND, model_version,
                                  bucket.isoformat()),
        sku=FLEET, location=segment, kind=DRIFT_KIND, severity="warning",
        message=(f"model {model_version}: forecast accuracy of {where} left the band its "
                 f"{band.source} predicted over the last {s.buckets} buckets: "
                 + "; ".join(change.reasons)),
        details={"model_version": model_version, "segment": segment,
                 "window_buckets": s.buckets, "scored": s.scored,
                 "coverage_80": _round(s.coverage), "pinball_relative": _round(s.pinball_relative),
                 "bias_relative": _round(s.bias_relative),
                 "band": {"coverage_low": _round(band.coverage_low),
                          "coverage_high": _round(band.coverage_high),
                          "pinball_relative_high": _round(band.loss_high),
                          "source": band.source}},
        raised_at=raised_at, bucket=bucket)


def _round(x: float) -> float | None:
    return round(x, 4) if np.isfinite(x) else None


async def unpublished_drift_alerts(conn: asyncpg.Connection | asyncpg.Pool,
                                   limit: int = 1000) -> list[AlertEvent]:
    """Drift alerts written but not yet marked published (oldest first)."""
    rows = await conn.fetch("SELECT alert FROM drift_episodes WHERE published_at IS NULL "
                            "ORDER BY opened_bucket, alert_id LIMIT $1", limit)
    return [AlertEvent.model_validate_json(r["alert"]) for r in rows]


@dataclass(frozen=True)
class AccuracyRow:
    """A drift monitor's rolling scores (report window), for metrics and views."""

    segment: str
    model_version: str
    bucket_seconds: int
    evaluated_through: datetime | None
    drift_open: bool
    scores: RollingScores


async def accuracy_rows(conn: asyncpg.Connection | asyncpg.Pool) -> list[AccuracyRow]:
    """Every drift monitor's latest rolling scores."""
    rows = await conn.fetch(
        "SELECT segment, model_version, bucket_seconds, evaluated_through, open_since, scored,"
        " pinball_relative, coverage_80, bias_relative, state FROM drift_monitors "
        "ORDER BY 1, 2, 3")
    out = []
    for r in rows:
        state = r["state"]
        state = json.loads(state) if isinstance(state, str) else (state or {})
        buckets = len(state.get("history", []))
        nan = float("nan")
        out.append(AccuracyRow(
            r["segment"], r["model_version"], r["bucket_seconds"], r["evaluated_through"],
            r["open_since"] is not None,
            RollingScores(buckets, r["scored"], _or_nan(r["pinball_relative"], nan),
                          _or_nan(r["coverage_80"], nan), _or_nan(r["bias_relative"], nan),
                          nan)))
    return out


def _or_nan(x: float | None, nan: float) -> float:
    return nan if x is None else float(x)


async def demand_history(conn: asyncpg.Connection | asyncpg.Pool, sku: str, location: str,
                         bucket_seconds: int, limit: int = 400) -> list[tuple[datetime, float]]:
    """The last `limit` closed buckets' demand of one SKU, oldest first."""
    rows = await conn.fetch(
        "SELECT bucket_start, quantity FROM (SELECT bucket_start, quantity FROM demand_history"
        " WHERE sku = $1 AND location = $2 AND bucket_seconds = $3"
        " ORDER BY bucket_start DESC LIMIT $4) r ORDER BY bucket_start",
        sku, location, bucket_seconds, limit)
    return [(r["bucket_start"], float(r["quantity"])) for r in rows]


async def demand_skus(conn: asyncpg.Connection | asyncpg.Pool, query: str, bucket_seconds: int,
                      limit: int, recent_buckets: int = 28) -> list[str]:
    """`sku@location` keys whose key contains `query` (any case) among the SKUs with an actual
    in the last `recent_buckets` buckets (read through the bucket index, not the whole table)."""
    rows = await conn.fetch(
        "SELECT DISTINCT sku || '@' || location AS key FROM demand_history"
        " WHERE bucket_seconds = $2 AND bucket_start >= (SELECT max(bucket_start)"
        "   FROM demand_history WHERE bucket_seconds = $2) - make_interval(secs => $2 * $4)"
        " AND strpos(lower(sku || '@' || location), lower($1)) > 0 ORDER BY 1 LIMIT $3",
        query, bucket_seconds, limit, recent_buckets)
    return [r["key"] for r in rows]


@dataclass(frozen=True)
class ScoredBucket:
    """The scores of one bucket and model version: of one SKU (`forecast_scores`, scored 1)
    or pooled over a segment (`accuracy_buckets`)."""

    bucket_start: datetime
    model_version: str
    scored: int
    pinball: float
    actual: float
    covered: float


async def scored_buckets(conn: asyncpg.Connection | asyncpg.Pool, bucket_seconds: int, *,
                         sku: str | None = None, location: str | None = None,
                         segment: str = FLEET, limit: int = 400) -> list[ScoredBucket]:
    """The scores of the last `limit` scored buckets, oldest first: one SKU's when `sku` and
    `location` are given, else the segment's (`*`: the fleet; a location)."""
    if sku is not None and location is not None:
        rows = await conn.fetch(
            "SELECT bucket_start, model_version, 1 AS scored, pinball, actual,"
            " covered::float8 AS covered FROM forecast_scores"
            " WHERE sku = $1 AND location = $2 AND bucket_seconds = $3"
            " AND bucket_start >= (SELECT min(b) FROM (SELECT bucket_start AS b"
            "   FROM forecast_scores WHERE sku = $1 AND location = $2 AND bucket_seconds = $3"
            "   ORDER BY bucket_start DESC LIMIT $4) last)"
            " ORDER BY bucket_start, model_version", sku, location, bucket_seconds, limit)
    else:
        rows = await conn.fetch(
            "SELECT bucket_start, model_version, scored, pinball, actual, covered"
            " FROM accuracy_buckets WHERE segment = $1 AND bucket_seconds = $2"
            " AND bucket_start >= (SELECT min(b) FROM (SELECT DISTINCT bucket_start AS b"
            "   FROM accuracy_buckets WHERE segment = $1 AND bucket_seconds = $2"
            "   ORDER BY b DESC LIMIT $3) last)"
            " ORDER BY bucket_start, model_version", segment, bucket_seconds, limit)
    return [ScoredBucket(r["bucket_start"], r["model_version"], int(r["scored"]),
                         float(r["pinball"]), float(r["actual"]), float(r["covered"]))
            for r in rows]
