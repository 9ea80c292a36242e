"""Chaos harness: a known shop stream, fault-injection helpers and the verifier.

Modelled on Kafka Streams' EOS system tests: a producer writes a known stream (a few hundred
SKUs over several days, with redelivered event ids and malformed records); a scenario injects
faults while it flows; the verifier then checks the outcome against the input log alone:

- state: the final per-SKU state, read from the changelog topic (last value per key), equals a
  recomputation of the input log by the same BatchProcessor, and every SKU's demand equals the
  number of distinct valid orders produced for it (orders have quantity 1) -- each input event
  accounted for exactly once (redeliveries collapsed, malformed records in the DLQ);
- restocks: a downstream consumer that dedupes by restock id sees exactly the restocks the
  recomputation decides, none with two different quantities;
- forecasts: every forecast on the topic (each copy, a replayed batch's too) equals, to the
  4 decimals events carry, the one the recomputation made for the same SKU and bucket through
  the worker's serving path (for the LSTM: the inferencer and its incremental states), so a
  recovery that re-encodes a SKU from a cold state instead of continuing shows up here;
- plans: every restock on the topic has exactly one plan line in PostgreSQL;
- alerts: deduped by id, the alerts on the topic are the recomputation's, and each stock-out
  episode (opened when the stock-out risk crosses 20 %, closed below 10 %) holds at most one
  stock-out alert -- a replay that lost the "open" flag would raise a second one;
- caught up: worker and optimizer consumer groups have no lag.

Results are merged into `chaos-report.json` (env SHELFCAST_CHAOS_REPORT, else
artifacts/chaos-report.json) after each scenario.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from runtime.errors import ServiceUnavailable
from runtime.faults import FAULT_ENV
from runtime.kafka_config import client_kwargs
from runtime.settings import Settings
from schemas import AlertEvent, DeadLetter, ForecastEvent, RestockEvent, sku_key
from schemas.ids import deterministic_id
from shelfcast.worker_process import WorkerProcess
from streams.changelog import changelog_topic, decode_state
from streams.forecaster_setup import served_forecaster
from streams.lag import LagProbe
from streams.processor import BatchProcessor, ProcessorConfig, RawRecord
from streams.store import key_partition
from tests.support.kafka import read_all

T0 = datetime(2011, 3, 7, tzinfo=UTC)
REPORT_ENV = "SHELFCAST_CHAOS_REPORT"
ROOT = Path(__file__).resolve().parents[2]

Records = list[tuple[bytes, bytes]]


# --------------------------------------------------------------------------- the known stream


@dataclass
class ShopStream:
    """What the producer writes, and what the verifier expects of it."""

    snapshots: Records
    orders: Records  # in produce order: valid orders, redeliveries and malformed records
    unique_orders: int
    duplicates: int
    malformed: int
    units: dict[str, int]  # sku@location -> distinct valid orders (quantity 1 each)

    @property
    def produced(self) -> int:
        return len(self.snapshots) + len(self.orders)


MALFORMED = (
    lambda key, i: b'{"event_id": "broken-%d", "quantity": ' % i,  # truncated JSON
    lambda key, i: b"\xff\xfe not utf-8 \x80" + str(i).encode(),  # non-UTF-8 bytes
    lambda key, i: json.dumps(
        {
            "event_id": f"neg-{i}",
            "type": "placed",
            "sku": key[0],
            "location": key[1],
            "quantity": -5,
            "occurred_at": T0.isoformat(),
        }
    ).encode(),  # negative quantity
    lambda key, i: json.dumps(
        {
            "event_id": f"nots-{i}",
            "type": "placed",
            "sku": key[0],
            "location": key[1],
            "quantity": "many",
            "occurred_at": "yesterday",
        }
    ).encode(),  # wrong types
    lambda key, i: json.dumps({"type": "placed", "sku": key[0]}).encode(),  # missing fields
)


def make_stream(
    skus: int = 240,
    days: int = 6,
    orders: int = 3600,
    *,
    dup_every: int = 40,
    bad_every: int = 90,
    on_hand: int = 25,
    seed: int = 6,
) -> ShopStream:
    """`orders` distinct orders (quantity 1) over `days` days, a redelivery every `dup_every`
    orders (a few records after the original, same event id) and a malformed record every
    `bad_every`. Each SKU starts with an `on_hand` snapshot taken before the first order."""
    rng = random.Random(seed)
    snapshots = [
        (
            sku_key(f"S{s:03d}", "wh").encode(),
            json.dumps(
                {
                    "event_id": f"snap-{s}",
                    "type": "snapshot",
                    "sku": f"S{s:03d}",
                    "location": "wh",
                    "on_hand": on_hand,
                    "occurred_at": (T0 - timedelta(hours=1)).isoformat(),
                }
            ).encode(),
        )
        for s in range(skus)
    ]
    out: Records = []
    units: Counter[str] = Counter()
    redeliver: list[tuple[int, tuple[bytes, bytes]]] = []
    dups = bad = 0
    for i in range(orders):
        s = rng.randrange(skus)
        sku = f"S{s:03d}"
        when = T0 + timedelta(days=days * i / orders, minutes=rng.randrange(-30, 1))
        rec = (
            sku_key(sku, "wh").encode(),
            json.dumps(
                {
                    "event_id": f"o{i}",
                    "type": "placed",
                    "sku": sku,
                    "location": "wh",
                    "quantity": 1,
                    "occurred_at": when.isoformat(),
                }
            ).encode(),
        )
        out.append(rec)
        units[sku_key(sku, "wh")] += 1
        if i % dup_every == dup_every - 1:
            redeliver.append((i + rng.randrange(1, 6), rec))
        while redeliver and redeliver[0][0] <= i:
            out.append(redeliver.pop(0)[1])
            dups += 1
        if i % bad_every == bad_every // 2:
            make = MALFORMED[bad % len(MALFORMED)]
            out.append((sku_key(sku, "wh").encode(), make((sku, "wh"), bad)))
            bad += 1
    for _, rec in redeliver:
        out.append(rec)
        dups += 1
    return ShopStream(snapshots, out, orders, dups, bad, dict(units))


# --------------------------------------------------------------------------- settings, produce


def chaos_settings(
    bootstrap: str, prefix: str, dsn: str | None = None, *, model_path: Path | None = None,
    **overrides: Any
) -> Settings:
    """Settings of one scenario: the trained LSTM in `model_path` serves (the default model),
    or the moving average, asked for by name, where a scenario is about something else."""
    values: dict[str, Any] = dict(
        kafka_bootstrap=bootstrap,
        model="lstm" if model_path is not None else "moving_average",
        model_path=model_path,
        topic_prefix=f"{prefix}.",
        shop_topic_prefix=f"{prefix}.shop.",
        app_id=f"{prefix}-app",
        topic_partitions=4,
        engine="batch",
        take_max=100,
        kafka_session_timeout_s=6,
        commit_interval_s=0.5,
    )
    if dsn is not None:
        values["database_url"] = dsn
    values.update(overrides)
    return Settings(**values)


def librdkafka_partition(key: bytes | None, partitions: int) -> int:
    """The partition librdkafka's default partitioner (`consistent_random`: kcat,
    confluent-kafka for Python, Go, .NET, Node) picks: CRC32 of the key modulo the partition
    count (zlib's CRC-32 is librdkafka's `rd_crc32`); a null key goes to a random partition."""
    if key is None:
        return random.randrange(partitions)
    return zlib.crc32(key) % partitions


def non_java_shop_partition(key: bytes, partitions: int) -> int:
    """A shop whose producer is not Java's murmur2: every third SKU (S000, S003, ...) on a
    partition the producer picks itself (its SKU number // 3, round robin), the rest by
    librdkafka's CRC32. Each key always lands on the same partition, as a real shop's do."""
    sku = key.decode().partition("@")[0]
    number = int(sku[1:]) if sku[1:].isdigit() else 1
    if number % 3 == 0:
        return (number // 3) % partitions
    return librdkafka_partition(key, partitions)


async def produce_paced(
    settings: Settings,
    topic: str,
    records: Records,
    *,
    chunks: int = 24,
    pause_s: float = 0.15,
    at_chunk: dict[int, Callable[[], Awaitable[None]]] | None = None,
    partition_of: Callable[[bytes], int] | None = None,
) -> None:
    """Write `records` in `chunks` slices with a pause between them, so the stream is still
    flowing when a fault is injected; `at_chunk[i]` runs before slice i is written.
    `partition_of(key)`: the partition the producer picks itself (else aiokafka's murmur2)."""
    producer = AIOKafkaProducer(
        **client_kwargs(settings),
        acks="all",
        linger_ms=5,
        enable_idempotence=True,
        request_timeout_ms=60_000,
        retry_backoff_ms=200,
    )
    await producer.start()
    try:
        size = -(-len(records) // chunks)
        for i in range(chunks):
            if at_chunk and i in at_chunk:
                await producer.flush()  # what came before the fault is on the broker
                await at_chunk[i]()
            for key, value in records[i * size : (i + 1) * size]:
                await producer.send(topic, key=key, value=value,
                                    partition=None if partition_of is None else partition_of(key))
            await asyncio.sleep(pause_s)
        await producer.flush()
    finally:
        await producer.stop()


# --------------------------------------------------------------------------- processes


class OptimizerProcess(WorkerProcess):
    """`shelfcast optimizer` as a subprocess (SIGKILL-able), logging to `log_path`; `fault`
    arms a crash point in it (`SHELFCAST_FAULT_POINT`, see runtime/faults.py)."""

    def __init__(self, settings: Settings, log_path: Path, *, fault: str | None = None) -> None:
        super().__init__(settings, log_path, name="optimizer", command="optimizer",
                         env={FAULT_ENV: fault} if fault else None)
        self.fault = fault


class FaultyWorker(WorkerProcess):
    """`shelfcast worker` with a crash point armed (`SHELFCAST_FAULT_POINT`): it SIGKILLs
    itself at that exact step."""

    def __init__(self, settings: Settings, log_path: Path, *, name: str, fault: str) -> None:
        super().__init__(settings, log_path, name=name, env={FAULT_ENV: fault})
        self.fault = fault


# --------------------------------------------------------------------------- catch-up


async def optimizer_lag(settings: Settings) -> int:
    """Records on the restock topic not yet committed by the optimizer's group."""
    consumer = AIOKafkaConsumer(
        **client_kwargs(settings), group_id=f"{settings.app_id}-optimizer", enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(settings.topics.restock, p) for p in range(settings.topic_partitions)]
        ends = await consumer.end_offsets(tps)
        lag = 0
        for tp, end in ends.items():
            lag += max(0, end - (await consumer.committed(tp) or 0))
        return lag
    finally:
        await consumer.stop()


async def wait_caught_up(
    settings: Settings,
    timeout_s: float,
    *,
    optimizer: bool = True,
    alive: Callable[[], None] | None = None,
) -> float:
    """Wait until the worker group (and the optimizer's) has no lag; returns the seconds taken.
    `alive()` may raise to fail fast when a process under test died."""
    t0 = time.monotonic()
    last: tuple[int, int] = (-1, -1)
    while time.monotonic() - t0 < timeout_s:
        if alive is not None:
            alive()
        try:
            async with LagProbe(settings) as probe:
                worker_lag = await probe.lag()
            opt_lag = await optimizer_lag(settings) if optimizer and worker_lag == 0 else 0
            last = (worker_lag, opt_lag)
            if worker_lag == 0 and opt_lag == 0:
                return time.monotonic() - t0
        except Exception as exc:  # the broker may still be coming back
            last = (-1, -1)
            _ = exc
        await asyncio.sleep(0.25)
    raise AssertionError(
        f"not caught up after {timeout_s:.0f} s (worker lag, optimizer lag) = {last}"
    )


# --------------------------------------------------------------------------- the verifier


ForecastKey = tuple[str, str, str]  # (sku, location, bucket start ISO)


@dataclass
class Recomputed:
    """What one BatchProcessor makes of the input log, replayed in order without faults."""

    table: dict[str, Any]
    restocks: dict[str, int]  # restock id -> quantity
    alerts: dict[str, AlertEvent]  # alert id -> alert
    # (sku, location, bucket) -> the daily quantiles (horizon x levels) forecast for it
    forecasts: dict[ForecastKey, np.ndarray] = field(default_factory=dict)


async def recompute(settings: Settings, snapshots: Records, orders: Records) -> Recomputed:
    """The uninterrupted run: the input log through a fresh processor and the worker's own
    serving path (`served_forecaster`: for the LSTM the micro-batching inferencer and its
    incremental per-SKU states, started empty as a fresh worker's are)."""
    t = settings.topics
    records = [RawRecord(t.stock, 0, i, k, v) for i, (k, v) in enumerate(snapshots)]
    records += [RawRecord(t.orders, 0, i, k, v) for i, (k, v) in enumerate(orders)]
    done = Recomputed({}, {}, {})
    async with served_forecaster(settings) as (model, predict):
        processor = BatchProcessor(ProcessorConfig.from_settings(settings), predict,
                                   model.model_version)
        for i in range(0, len(records), 500):
            out = await processor.process(records[i : i + 500], done.table)
            done.restocks.update({r.restock_id: r.quantity for r in out.restocks})
            done.alerts.update({a.alert_id: a for a in out.alerts})
            for rows in out.forecast_rows:
                for j in range(len(rows)):
                    key = (rows.skus[j], rows.locations[j], rows.bucket(j).isoformat())
                    done.forecasts[key] = rows.daily[j]
    return done


def forecast_mismatches(
    expected: dict[ForecastKey, np.ndarray], seen: list[ForecastEvent], *, atol: float = 1e-3
) -> tuple[int, int, int]:
    """(forecasts on the topic that differ from the uninterrupted run's for the same SKU and
    bucket, (sku, bucket)s the run forecast that the topic lacks, topic forecasts for a
    (sku, bucket) the run never forecast). Every copy counts: a batch replayed after a crash
    must forecast what the first attempt did. `atol`: events carry 4 decimals."""
    differ = unexpected = 0
    keys: set[ForecastKey] = set()
    for f in seen:
        key = (f.sku, f.location, f.bucket.isoformat())
        keys.add(key)
        want = expected.get(key)
        if want is None:
            unexpected += 1
        elif not np.allclose(np.asarray(f.quantiles), want, atol=atol, rtol=1e-4):
            differ += 1
    return differ, len(expected.keys() - keys), unexpected


def alert_buckets(alerts: list[AlertEvent], days: range = range(-3, 12)) -> dict[str, datetime]:
    """Alert id -> the bucket it was raised for. Ids are deterministic over (sku, location,
    kind, bucket start), so the bucket is found by hashing each candidate day of the stream."""
    known: dict[str, datetime] = {}
    for key in {(a.sku, a.location, a.kind) for a in alerts}:
        for d in days:
            bucket = T0 + timedelta(days=d)
            known[deterministic_id("alert", *key, bucket.isoformat())] = bucket
    return known


def alert_episode_violations(
    expected: dict[str, AlertEvent], seen: dict[str, AlertEvent]
) -> tuple[int, int]:
    """(stock-out alerts beyond the first in their episode, episodes that got no alert).

    The recomputation's stock-out alerts mark where each episode opens, per SKU; an episode
    runs until the next one opens. Every distinct stock-out alert id on the topic is placed in
    the episode its bucket falls in; one raised before a SKU's first episode, or for a bucket
    outside the stream, counts as a violation too."""
    stockouts = [a for a in [*expected.values(), *seen.values()] if a.kind == "stockout_risk"]
    bucket = alert_buckets(stockouts)
    opened: dict[tuple[str, str], list[datetime]] = defaultdict(list)
    for a in expected.values():
        if a.kind == "stockout_risk":
            opened[(a.sku, a.location)].append(bucket[a.alert_id])
    per_episode: Counter[tuple[str, str, int]] = Counter()
    extra = 0
    for a in seen.values():
        if a.kind != "stockout_risk":
            continue
        at = bucket.get(a.alert_id)
        episode = -1 if at is None else sum(1 for s in opened[(a.sku, a.location)] if s <= at) - 1
        if episode < 0:
            extra += 1
        else:
            per_episode[(a.sku, a.location, episode)] += 1
    extra += sum(n - 1 for n in per_episode.values() if n > 1)
    episodes = sum(len(v) for v in opened.values())
    return extra, episodes - len(per_episode)


@dataclass
class Verdict:
    events_produced: int
    events_accounted: int
    lost: int
    duplicate_plans: int
    duplicate_restock_ids: int
    state_mismatches: int
    skus_lost_or_reset: int = 0  # expected state, but none or one with less demand/history
    alert_episode_violations: int = 0  # stock-out alerts beyond one per episode
    alerts: int = 0
    stockout_episodes: int = 0
    missing_alerts: int = 0
    unexpected_alerts: int = 0
    restocks: int = 0
    restock_redeliveries: int = 0
    missing_restocks: int = 0
    unexpected_restocks: int = 0
    unplanned_restocks: int = 0
    forecasts: int = 0
    forecast_mismatches: int = 0  # vs the uninterrupted run (same SKU and bucket)
    missing_forecasts: int = 0
    unexpected_forecasts: int = 0
    model_version: str = ""
    dead_letters: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}



async def verify(settings: Settings, dsn: str | None, stream: ShopStream, *,
                 partition_of: Callable[[bytes], int] | None = None) -> Verdict:
    """`partition_of(key)`: the input partition the producer put each key on (default
    murmur2); every key's state must be on the changelog partition of that input partition
    (where the partition's next owner reads it)."""
    t = settings.topics
    problems: list[str] = []

    # state: last changelog value per key vs the recomputation of the input log
    expected = await recompute(settings, stream.snapshots, stream.orders)
    expected_table, expected_restocks = expected.table, expected.restocks
    state: dict[str, Any] = {}
    misplaced: set[str] = set()
    where = partition_of or (lambda key: key_partition(key, settings.topic_partitions))
    for r in await read_all(settings, changelog_topic(settings)):
        state[r.key.decode()] = decode_state(r.value)
        if r.partition != where(r.key):
            misplaced.add(r.key.decode())
    state = {k: v for k, v in state.items() if v is not None}
    if misplaced:
        problems.append(f"{len(misplaced)} key(s) with state on another changelog partition "
                        f"than their input partition, e.g. {sorted(misplaced)[:3]}")
    mismatched = sorted(k for k in expected_table.keys() | state.keys()
                        if state_difference(state.get(k), expected_table.get(k)) is not None)
    reset = [k for k in expected_table
             if k not in state or _history(state[k]) < _history(expected_table[k])]
    if mismatched:
        first = mismatched[0]
        problems.append(
            f"{len(mismatched)} state key(s) differ from the recomputation, e.g. {mismatched[:3]}"
            f" ({first}: {state_difference(state.get(first), expected_table.get(first))})"
        )

    # accounting, from the input log alone: demand == distinct valid orders (quantity 1)
    reflected_orders = 0
    lost = 0
    for key, units in stream.units.items():
        got = round(sum((state.get(key) or {}).get("demand", {}).values()))
        reflected_orders += min(got, units)
        lost += max(0, units - got)
        if got > units:
            problems.append(f"{key}: demand {got} > {units} distinct orders (double count)")
    snapshots = sum(
        1 for k, _ in stream.snapshots if (state.get(k.decode()) or {}).get("stock_known")
    )
    lost += len(stream.snapshots) - snapshots
    dead = {}
    for r in await read_all(settings, t.dlq):
        dl = DeadLetter.model_validate_json(r.value)
        if dl.source_topic == t.orders:
            dead[(dl.partition, dl.offset)] = base64.b64decode(dl.raw_payload_b64)
    malformed = {v for _, v in stream.orders if not v.startswith(b'{"event_id": "o')}
    dlq_ok = sum(1 for raw in dead.values() if raw in malformed)
    if dlq_ok != stream.malformed or len(dead) != stream.malformed:
        problems.append(
            f"DLQ holds {len(dead)} distinct record(s) ({dlq_ok} of ours), "
            f"expected {stream.malformed}"
        )
    lost += max(0, stream.malformed - dlq_ok)
    # a redelivery is accounted for when its SKU's demand is not inflated by it
    accounted = (
        reflected_orders
        + snapshots
        + dlq_ok
        + (stream.duplicates if not any("double count" in p for p in problems) else 0)
    )
    if lost:
        problems.append(f"{lost} input event(s) lost")

    # restocks, as a downstream consumer deduping by id sees them
    decisions: dict[str, set[int]] = defaultdict(set)
    raw_restocks = 0
    for r in await read_all(settings, t.restock):
        event = RestockEvent.model_validate_json(r.value)
        decisions[event.restock_id].add(event.quantity)
        raw_restocks += 1
    conflicting = sum(1 for q in decisions.values() if len(q) > 1)
    if conflicting:
        problems.append(f"{conflicting} restock id(s) carry two different quantities")
    missing = expected_restocks.keys() - decisions.keys()
    unexpected = decisions.keys() - expected_restocks.keys()
    wrong_qty = sum(
        1 for k, q in expected_restocks.items() if k in decisions and decisions[k] != {q}
    )
    if missing or unexpected or wrong_qty:
        problems.append(
            f"restocks vs recomputation: {len(missing)} missing, {len(unexpected)} "
            f"unexpected, {wrong_qty} with another quantity"
        )
    if not expected_restocks:
        problems.append("the stream caused no restock: the scenario checks nothing downstream")

    # alerts, deduped by id: the recomputation's, and at most one per stock-out episode
    on_topic = [AlertEvent.model_validate_json(r.value) for r in await read_all(settings, t.alerts)]
    seen_alerts = {a.alert_id: a for a in on_topic}
    episode_violations, silent_episodes = alert_episode_violations(expected.alerts, seen_alerts)
    missing_alerts = len(expected.alerts.keys() - seen_alerts.keys())
    unexpected_alerts = len(seen_alerts.keys() - expected.alerts.keys())
    if episode_violations or silent_episodes or missing_alerts or unexpected_alerts:
        problems.append(
            f"alerts: {episode_violations} stock-out alert(s) beyond one per episode, "
            f"{silent_episodes} episode(s) without one; vs recomputation {missing_alerts} "
            f"missing, {unexpected_alerts} unexpected"
        )
    if not any(a.kind == "stockout_risk" for a in expected.alerts.values()):
        problems.append("the stream opened no stock-out episode: the alert check checks nothing")

    # forecasts: after recovery, the same numbers an uninterrupted run forecast
    forecasts = [ForecastEvent.model_validate_json(r.value)
                 for r in await read_all(settings, t.forecasts)]
    differ, missing_fc, unexpected_fc = forecast_mismatches(expected.forecasts, forecasts)
    if differ or missing_fc or unexpected_fc:
        problems.append(
            f"forecasts vs the uninterrupted run: {differ} differ, {missing_fc} missing, "
            f"{unexpected_fc} unexpected (of {len(forecasts)} on the topic)"
        )
    versions = sorted({f.model_version for f in forecasts})

    # plans in PostgreSQL
    duplicate_plans = unplanned = 0
    if dsn is not None:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                "SELECT restock_id, count(*) AS n FROM plan_lines GROUP BY restock_id"
            )
        finally:
            await conn.close()
        planned = {r["restock_id"]: r["n"] for r in rows}
        duplicate_plans = sum(n - 1 for n in planned.values() if n > 1)
        unplanned = len(decisions.keys() - planned.keys())
        stray = len(planned.keys() - decisions.keys())
        if duplicate_plans or unplanned or stray:
            problems.append(
                f"plans: {duplicate_plans} duplicate line(s), {unplanned} restock(s) "
                f"unplanned, {stray} line(s) for unknown restocks"
            )

    return Verdict(
        events_produced=stream.produced,
        events_accounted=accounted,
        lost=lost,
        duplicate_plans=duplicate_plans,
        duplicate_restock_ids=conflicting,
        state_mismatches=len(mismatched),
        skus_lost_or_reset=len(reset),
        alert_episode_violations=episode_violations,
        alerts=len(seen_alerts),
        stockout_episodes=sum(1 for a in expected.alerts.values() if a.kind == "stockout_risk"),
        missing_alerts=missing_alerts,
        unexpected_alerts=unexpected_alerts,
        restocks=len(decisions),
        restock_redeliveries=raw_restocks - len(decisions),
        missing_restocks=len(missing),
        unexpected_restocks=len(unexpected),
        unplanned_restocks=unplanned,
        forecasts=len(forecasts),
        forecast_mismatches=differ,
        missing_forecasts=missing_fc,
        unexpected_forecasts=unexpected_fc,
        model_version=",".join(versions),
        dead_letters=len(dead),
        problems=problems,
    )


# Fields a forecast writes into the state: float results of a batched forward pass, whose
# last bits depend on how many series shared the batch (a recovered worker batches SKUs
# differently from the uninterrupted recomputation). Compared within float32 tolerance; every
# other field exactly.
_MODEL_FLOATS = ("model_state", "next_forecast", "next_bucket_high")


def state_difference(seen: Any, expected: Any, *, tol: float = 1e-4) -> str | None:
    """None when the changelogged state equals the recomputed one (model-made floats within
    `tol`); else the first field that differs."""
    if seen is None or expected is None:
        return None if seen is expected else "missing on one side"
    if seen.keys() != expected.keys():
        return f"fields {sorted(seen.keys() ^ expected.keys())}"
    for name in seen:
        a, b = seen[name], expected[name]
        if name not in _MODEL_FLOATS:
            if a != b:
                return name
        elif (a is None) != (b is None):
            return name
        elif name == "model_state" and a is not None:
            if not _blobs_close(base64.b64decode(a), base64.b64decode(b), tol):
                return name
        elif a is not None and not np.allclose(np.asarray(a, dtype=float),
                                               np.asarray(b, dtype=float), rtol=tol, atol=tol):
            return name
    return None


def _blobs_close(a: bytes, b: bytes, tol: float) -> bool:
    """Two durable LSTM records (forecasting/lstm/durable.py): the same header (format, model
    fingerprint, last day, ring position) and layout, the numbers within `tol`."""
    from forecasting.lstm.durable import HEADER_BYTES, record

    if len(a) != len(b) or a[:HEADER_BYTES] != b[:HEADER_BYTES]:
        return False
    ra, rb = record(a), record(b)
    if ra is None or rb is None:
        return False
    return all(np.allclose(np.asarray(ra[name], dtype=float), np.asarray(rb[name], dtype=float),
                           rtol=tol, atol=tol, equal_nan=True)
               for name in ra.dtype.names or () if name in ("level", "count", "h", "c", "ring"))


def _history(state: Any) -> tuple[int, float]:
    """How much an SKU state remembers: (buckets since first seen, demand counted); a state
    lost on a rebalance and begun again from blank has less of both."""
    first, watermark = state.get("first_bucket"), state.get("watermark")
    span = 0 if first is None or watermark is None else watermark - first + 1
    return span, sum((state.get("demand") or {}).values())


# --------------------------------------------------------------------------- the report


def report_path() -> Path:
    return Path(os.environ.get(REPORT_ENV) or ROOT / "artifacts" / "chaos-report.json")


TOTALS = (
    "events_produced",
    "events_accounted",
    "lost",
    "duplicate_plans",
    "duplicate_restock_ids",
    "state_mismatches",
    "skus_lost_or_reset",
    "alert_episode_violations",
    "forecast_mismatches",
)


def record(
    name: str,
    verdict: Verdict | None,
    *,
    passed: bool,
    recovery_s: dict[str, float] | None = None,
    note: str | None = None,
) -> None:
    """Merge one scenario's outcome into the report file (rewritten after each scenario)."""
    path = report_path()
    try:
        report = json.loads(path.read_text())
        if report.get("run_pid") != os.getpid():
            raise ValueError("a previous run's report")
    except (OSError, ValueError):
        report = {"run_pid": os.getpid(), "scenarios": {}, "details": {}}
    report["scenarios"][name] = passed
    detail: dict[str, Any] = {
        "passed": passed,
        "recovery_s": {k: round(v, 2) for k, v in (recovery_s or {}).items()},
    }
    if verdict is not None:
        detail.update(verdict.as_dict())
    if note:
        detail["note"] = note
    report["details"][name] = detail
    report["recovery_s"] = {
        k: d["recovery_s"].get("fault_to_caught_up") for k, d in report["details"].items()
    }
    for key in TOTALS:
        report[key] = sum(d.get(key, 0) for d in report["details"].values())
    report["generated_at"] = datetime.now(UTC).isoformat()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


def check_alive(*procs: Any) -> Callable[[], None]:
    """A probe for wait_caught_up: raises when a process that must be running has exited."""

    def probe() -> None:
        for p in procs:
            proc = getattr(p, "_proc", None)
            if proc is not None and proc.poll() is not None:
                tail = p.log_tail(12) if hasattr(p, "log_tail") else ""
                raise ServiceUnavailable(
                    f"{getattr(p, 'name', p)} exited with {proc.returncode}:\n{tail}"
                )

    return probe
