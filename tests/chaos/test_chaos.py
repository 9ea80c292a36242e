"""Chaos scenarios on the real broker and PostgreSQL: faults injected while a known shop
stream flows, then a verifier checks nothing was lost or doubled (see harness.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import asyncpg
import numpy as np
import pytest

from optimizer.service import OptimizerService
from optimizer.store import PlanStore
from runtime.settings import Settings
from schemas import AlertEvent, ForecastEvent, sku_key
from schemas.ids import deterministic_id
from shelfcast.services import LocalKafka, LocalPostgres
from shelfcast.worker_process import WorkerProcess
from streams.lag import LagProbe
from streams.store import key_partition
from streams.topics import ensure_topics
from tests.chaos.harness import (
    T0,
    FaultyWorker,
    OptimizerProcess,
    ShopStream,
    alert_buckets,
    alert_episode_violations,
    chaos_settings,
    check_alive,
    forecast_mismatches,
    make_stream,
    non_java_shop_partition,
    produce_paced,
    record,
    report_path,
    verify,
    wait_caught_up,
)
from tests.support.kafka import produce, read_all, wait_lag

pytestmark = pytest.mark.timeout(180)

CATCH_UP_S = 120.0


@pytest.fixture(scope="module")
def stream() -> ShopStream:
    return make_stream()


@contextlib.asynccontextmanager
async def in_process_optimizer(settings: Settings, dsn: str) -> AsyncIterator[asyncio.Task]:
    """OptimizerService in this event loop; the task carries `.service` (its counters)."""
    stop = asyncio.Event()
    service = OptimizerService(settings, dsn)
    task = asyncio.create_task(service.run(stop))
    task.service = service  # type: ignore[attr-defined]
    try:
        yield task
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)


def task_alive(task: asyncio.Task) -> Callable[[], None]:
    def probe() -> None:
        if task.done():
            exc = task.exception()
            trace = "".join(traceback.format_exception(exc)) if exc is not None else ""
            raise AssertionError(f"the optimizer task ended: {exc!r}\n{trace}")

    return probe


def all_alive(*probes: Callable[[], None]) -> Callable[[], None]:
    def probe() -> None:
        for p in probes:
            p()

    return probe


async def ready(worker: WorkerProcess) -> float:
    return await asyncio.to_thread(worker.wait_ready, 120)


async def seed_stock(settings: Settings, stream: ShopStream) -> None:
    """Snapshots first, processed before any order (the recomputation sees the same order)."""
    await produce(settings, settings.topics.stock, stream.snapshots)
    async with LagProbe(settings) as probe:
        await wait_lag(probe, 0, 60)


async def finish(
    name: str,
    settings: Settings,
    dsn: str,
    stream: ShopStream,
    recovery_from: float,
    alive: Callable[[], None],
    extra: dict[str, float] | None = None,
    *,
    log_dir: Path,
) -> None:
    """Wait for catch-up, verify, record the scenario in the report, assert it passed."""
    recovery: dict[str, float] = dict(extra or {})
    try:
        await wait_caught_up(settings, CATCH_UP_S, alive=alive)
        recovery["fault_to_caught_up"] = time.monotonic() - recovery_from
        verdict = await verify(settings, dsn, stream)
    except BaseException as exc:
        record(name, None, passed=False, recovery_s=recovery, note=f"{type(exc).__name__}: {exc}")
        keep_logs(name, log_dir)
        raise
    record(name, verdict, passed=verdict.ok, recovery_s=recovery)
    if not verdict.ok:
        keep_logs(name, log_dir)
    assert verdict.ok, verdict.problems


def keep_logs(name: str, log_dir: Path) -> None:
    """Copy a failed scenario's process logs next to the report, as evidence."""
    dest = report_path().parent / "chaos-logs" / name
    dest.mkdir(parents=True, exist_ok=True)
    for log in log_dir.glob("*.log"):
        shutil.copy(log, dest / log.name)


async def test_worker_sigkilled_mid_stream_and_restarted(
    kafka_bootstrap: str,
    pg_database: str,
    fresh_topic_prefix: str,
    tmp_path: Path,
    stream: ShopStream,
    lstm_model_dir: Path,
):
    """(1) SIGKILL the only worker (serving the LSTM) twice while orders flow; a new one takes
    over each time."""
    settings = chaos_settings(kafka_bootstrap, fresh_topic_prefix, pg_database,
                              model_path=lstm_model_dir)  # the LSTM serves
    await ensure_topics(settings)
    log = tmp_path / "worker.log"
    workers = [WorkerProcess(settings, log, name=f"worker-{i}") for i in range(3)]
    recovery: dict[str, float] = {}
    marks: dict[str, float] = {}

    def kill_and_replace(i: int) -> Callable[[], Awaitable[None]]:
        async def inject() -> None:
            workers[i].kill()
            marks["restart"] = time.monotonic()
            workers[i + 1].start()

        return inject

    try:
        workers[0].start()
        await ready(workers[0])
        await seed_stock(settings, stream)
        async with in_process_optimizer(settings, pg_database) as opt:
            await produce_paced(
                settings,
                settings.topics.orders,
                stream.orders,
                at_chunk={7: kill_and_replace(0), 15: kill_and_replace(1)},
            )
            await ready(workers[2])  # the replacement after the 2nd kill
            recovery["restart_to_ready"] = time.monotonic() - marks["restart"]
            await finish(
                "worker_sigkill_restart",
                settings,
                pg_database,
                stream,
                marks["restart"],
                all_alive(check_alive(workers[2]), task_alive(opt)),
                recovery,
                log_dir=tmp_path,
            )
    finally:
        for w in workers:
            w.kill()
    assert "recovered" in log.read_text()


async def test_scale_one_two_one_while_flowing(
    kafka_bootstrap: str,
    pg_database: str,
    fresh_topic_prefix: str,
    tmp_path: Path,
    stream: ShopStream,
    lstm_model_dir: Path,
):
    """(2) 1 -> 2 workers (rebalance: partitions and their state move) -> 1 (graceful leave),
    the LSTM serving."""
    settings = chaos_settings(kafka_bootstrap, fresh_topic_prefix, pg_database,
                              model_path=lstm_model_dir)  # the LSTM serves
    await ensure_topics(settings)
    log = tmp_path / "worker.log"
    first = WorkerProcess(settings, log, name="worker-1")
    second = WorkerProcess(settings, tmp_path / "worker-2.log", name="worker-2")
    marks: dict[str, float] = {}

    async def scale_up() -> None:
        second.start()
        marks["scaled_up"] = time.monotonic()

    async def scale_down() -> None:
        await ready(second)  # it joined: partitions (and their state) moved to it
        marks["second_ready_s"] = time.monotonic() - marks["scaled_up"]
        await asyncio.to_thread(second.stop)  # SIGTERM: commit, leave the group
        marks["scaled_down"] = time.monotonic()

    try:
        first.start()
        await ready(first)
        await seed_stock(settings, stream)
        async with in_process_optimizer(settings, pg_database) as opt:
            await produce_paced(
                settings,
                settings.topics.orders,
                stream.orders,
                at_chunk={6: scale_up, 16: scale_down},
            )
            await finish(
                "scale_1_2_1",
                settings,
                pg_database,
                stream,
                marks["scaled_down"],
                all_alive(check_alive(first), task_alive(opt)),
                {"scale_up_to_ready": marks["second_ready_s"]},
                log_dir=tmp_path,
            )
    finally:
        first.kill()
        second.kill()
    assert "recovered" in second.log_tail(400), "worker 2 should have taken over partitions"
    await verifier_has_teeth(settings, pg_database, stream)


@pytest.mark.timeout(300)
async def test_non_java_partitioner_scale_one_three_one_with_a_sigkill(
    kafka_bootstrap: str,
    pg_database: str,
    fresh_topic_prefix: str,
    tmp_path: Path,
    stream: ShopStream,
):
    """(2b) A shop whose producer is not Java's: librdkafka's CRC32 for most keys, a partition
    it picks itself for every third SKU. 1 -> 3 workers (partitions and their state move) ->
    one of them SIGKILLed (its partitions move after the session timeout) -> the other leaves
    (SIGTERM) -> 1. No SKU's state may be lost or begun again: the changelog must hold, on
    each key's input partition, the state a recomputation of the input log gives."""
    settings = chaos_settings(kafka_bootstrap, fresh_topic_prefix, pg_database)
    parts = settings.topic_partitions
    await ensure_topics(settings)

    def partition_of(key: bytes) -> int:
        return non_java_shop_partition(key, parts)

    moved = sum(1 for k, _ in stream.snapshots if partition_of(k) != key_partition(k, parts))
    assert moved > len(stream.snapshots) // 2, "most keys must sit off their murmur2 partition"
    first = WorkerProcess(settings, tmp_path / "worker-1.log", name="worker-1")
    second = WorkerProcess(settings, tmp_path / "worker-2.log", name="worker-2")
    third = WorkerProcess(settings, tmp_path / "worker-3.log", name="worker-3")
    marks: dict[str, float] = {}

    async def scale_up() -> None:
        second.start()
        third.start()
        marks["scaled_up"] = time.monotonic()

    async def kill_third() -> None:
        await ready(second)
        await ready(third)  # three members: each holds partitions (and their state)
        marks["three_ready_s"] = time.monotonic() - marks["scaled_up"]
        third.kill()

    async def scale_down() -> None:
        await asyncio.to_thread(second.stop)  # SIGTERM: commit, leave the group
        marks["scaled_down"] = time.monotonic()

    try:
        first.start()
        await ready(first)
        await produce_paced(settings, settings.topics.stock, stream.snapshots, chunks=1,
                            pause_s=0, partition_of=partition_of)
        async with LagProbe(settings) as probe:
            await wait_lag(probe, 0, 60)
        async with in_process_optimizer(settings, pg_database) as opt:
            await produce_paced(
                settings,
                settings.topics.orders,
                stream.orders,
                at_chunk={5: scale_up, 11: kill_third, 17: scale_down},
                partition_of=partition_of,
            )
            recovery: dict[str, float] = {"scale_up_to_three_ready": marks["three_ready_s"]}
            try:
                await wait_caught_up(settings, CATCH_UP_S,
                                     alive=all_alive(check_alive(first), task_alive(opt)))
                recovery["fault_to_caught_up"] = time.monotonic() - marks["scaled_down"]
                verdict = await verify(settings, pg_database, stream, partition_of=partition_of)
            except BaseException as exc:
                record("non_java_partitioner_scale_1_3_1_sigkill", None, passed=False,
                       recovery_s=recovery, note=f"{type(exc).__name__}: {exc}")
                keep_logs("non_java_partitioner_scale_1_3_1_sigkill", tmp_path)
                raise
            record("non_java_partitioner_scale_1_3_1_sigkill", verdict, passed=verdict.ok,
                   recovery_s=recovery)
            if not verdict.ok:
                keep_logs("non_java_partitioner_scale_1_3_1_sigkill", tmp_path)
            assert verdict.ok, verdict.problems
            assert verdict.skus_lost_or_reset == 0 and verdict.state_mismatches == 0
    finally:
        for w in (first, second, third):
            w.kill()
    for w in (second, third):
        assert "recovered" in w.log_tail(400), f"{w.name} should have taken over partitions"


async def verifier_has_teeth(settings: Settings, dsn: str, stream: ShopStream) -> None:
    """Negative control on the same topics: against an input log with one order the pipeline
    never saw, the verifier reports it lost; with one order hidden, it reports a double count."""
    phantom = (
        b"S000@wh",
        json.dumps(
            {
                "event_id": "phantom",
                "type": "placed",
                "sku": "S000",
                "location": "wh",
                "quantity": 1,
                "occurred_at": (T0 + timedelta(days=5, hours=23)).isoformat(),
            }
        ).encode(),
    )
    units = dict(stream.units)
    units["S000@wh"] += 1
    lost = await verify(
        settings,
        dsn,
        replace(
            stream,
            orders=[*stream.orders, phantom],
            unique_orders=stream.unique_orders + 1,
            units=units,
        ),
    )
    assert lost.lost == 1 and lost.state_mismatches >= 1 and not lost.ok, lost.problems
    first_key = stream.orders[0][0]  # o0, never redelivered
    units = dict(stream.units)
    units[first_key.decode()] -= 1
    doubled = await verify(
        settings,
        dsn,
        replace(
            stream, orders=stream.orders[1:], unique_orders=stream.unique_orders - 1, units=units
        ),
    )
    assert doubled.state_mismatches >= 1 and not doubled.ok, doubled.problems
    assert any("double count" in p for p in doubled.problems), doubled.problems
    # a second stock-out alert inside an episode that already has one, as a replay that lost
    # the episode's "open" flag would raise it, is caught from the topic
    alerts = [AlertEvent.model_validate_json(r.value)
              for r in await read_all(settings, settings.topics.alerts)]
    stockouts = [a for a in alerts if a.kind == "stockout_risk"]
    per_sku = Counter((a.sku, a.location) for a in stockouts)
    single = next(a for a in stockouts if per_sku[(a.sku, a.location)] == 1)
    opened = alert_buckets([single])[single.alert_id]
    again = opened + timedelta(days=1)
    forged = single.model_copy(update={"alert_id": deterministic_id(
        "alert", single.sku, single.location, "stockout_risk", again.isoformat())})
    await produce(settings, settings.topics.alerts,
                  [(sku_key(single.sku, single.location).encode(),
                    forged.model_dump_json().encode())])
    twice = await verify(settings, dsn, stream)
    assert twice.alert_episode_violations == 1 and not twice.ok, twice.problems


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_broker_restart_while_workers_run(
    how: str,
    restartable_kafka: LocalKafka,
    pg_database: str,
    fresh_topic_prefix: str,
    tmp_path: Path,
    stream: ShopStream,
):
    """(3) The broker goes down -- SIGTERM (graceful) or SIGKILL (crash: unflushed log
    segments, the controller waits out the dead broker's session) -- stays down a few seconds
    and restarts, while two workers and the optimizer keep running; the producer resumes after
    it is back."""
    kafka = restartable_kafka
    # the outage outlasts the producer's request timeout, so a batch in flight when the broker
    # goes away fails its sends and is held and retried (whether one is in flight is timing)
    settings = chaos_settings(kafka.bootstrap, fresh_topic_prefix, pg_database,
                              kafka_request_timeout_ms=2000)
    await ensure_topics(settings)
    log = tmp_path / "worker.log"
    workers = [WorkerProcess(settings, log, name=f"worker-{i}") for i in (1, 2)]
    marks: dict[str, float] = {}

    async def bounce() -> None:
        await asyncio.to_thread(kafka.stop if how == "stop" else kafka.kill)
        await asyncio.sleep(float(os.environ.get("SHELFCAST_CHAOS_BROKER_DOWN_S", "8")))
        await asyncio.to_thread(kafka.start)
        marks["broker_back"] = time.monotonic()

    try:
        for w in workers:
            w.start()
        for w in workers:
            await ready(w)
        await seed_stock(settings, stream)
        async with in_process_optimizer(settings, pg_database) as opt:
            await produce_paced(
                settings, settings.topics.orders, stream.orders, at_chunk={10: bounce}
            )
            await finish(
                "broker_restart" if how == "stop" else "broker_sigkill_restart",
                settings,
                pg_database,
                stream,
                marks["broker_back"],
                all_alive(check_alive(*workers), task_alive(opt)),
                log_dir=tmp_path,
            )
    finally:
        for w in workers:
            w.kill()


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_postgres_outage_while_optimizer_runs(
    how: str,
    kafka_bootstrap: str,
    restartable_postgres: LocalPostgres,
    fresh_topic_prefix: str,
    tmp_path: Path,
    stream: ShopStream,
    caplog: pytest.LogCaptureFixture,
):
    """(4) PostgreSQL goes down for a few seconds while restocks flow -- fast shutdown, or
    SIGKILL of the postmaster and its backends (crash recovery from the WAL; plan writes use
    synchronous_commit=off, so the last commits may be lost together with their offsets) --
    the optimizer retries with backoff and catches up once it is back."""
    pg = restartable_postgres
    dsn = pg.dsn
    settings = chaos_settings(kafka_bootstrap, fresh_topic_prefix, dsn)
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    marks: dict[str, float] = {}
    outage: list[asyncio.Task] = []

    async def down_for_a_while() -> None:
        await asyncio.to_thread(pg.stop if how == "stop" else pg.kill)
        down = time.monotonic()
        await asyncio.sleep(4)
        # down at least 4 s, longer (up to 8 s, inside the optimizer's ~11 s retry budget)
        # until one of its database calls has failed and is being retried: whether one is due
        # within 4 s is timing (a loaded machine delays the restocks)
        while not db_retried() and time.monotonic() - down < 8:
            await asyncio.sleep(0.1)
        await asyncio.to_thread(pg.start)
        marks["db_back"] = time.monotonic()
        marks["down_s"] = marks["db_back"] - down

    def db_retried() -> bool:
        return any(r.name == "optimizer.service" and "; retry " in r.getMessage()
                   for r in caplog.records)

    async def start_outage() -> None:
        outage.append(asyncio.create_task(down_for_a_while()))  # the stream keeps flowing

    try:
        worker.start()
        await ready(worker)
        await seed_stock(settings, stream)
        async with in_process_optimizer(settings, dsn) as opt:
            await produce_paced(
                settings, settings.topics.orders, stream.orders, at_chunk={8: start_outage}
            )
            await outage[0]
            await finish(
                "postgres_outage" if how == "stop" else "postgres_sigkill_restart",
                settings,
                dsn,
                stream,
                marks["db_back"],
                all_alive(check_alive(worker), task_alive(opt)),
                {"database_down": marks["down_s"]},
                log_dir=tmp_path,
            )
    finally:
        worker.kill()
    assert db_retried(), "the outage should have hit the optimizer's database calls"


async def test_optimizer_sigkilled_during_plan_writes(
    kafka_bootstrap: str,
    pg_database: str,
    fresh_topic_prefix: str,
    tmp_path: Path,
    stream: ShopStream,
):
    """(5) `shelfcast optimizer` (a subprocess) is SIGKILLed twice while restocks stream in
    and plans are being written, and restarted each time."""
    settings = chaos_settings(kafka_bootstrap, fresh_topic_prefix, pg_database)
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    opt_log = tmp_path / "optimizer.log"
    optimizers = [OptimizerProcess(settings, opt_log) for _ in range(3)]
    marks: dict[str, float] = {}
    planned_at_kill: list[int] = []

    def kill_and_replace(i: int) -> Callable[[], Awaitable[None]]:
        async def inject() -> None:
            optimizers[i].kill()
            marks["restart"] = time.monotonic()
            conn = await asyncpg.connect(pg_database)
            try:
                planned_at_kill.append(await conn.fetchval("SELECT count(*) FROM plan_lines"))
            finally:
                await conn.close()
            optimizers[i + 1].start()

        return inject

    try:
        worker.start()
        optimizers[0].start()
        await ready(worker)
        await seed_stock(settings, stream)
        await produce_paced(
            settings,
            settings.topics.orders,
            stream.orders,
            at_chunk={9: kill_and_replace(0), 17: kill_and_replace(1)},
        )
        await finish(
            "optimizer_sigkill_restart",
            settings,
            pg_database,
            stream,
            marks["restart"],
            check_alive(worker),
            log_dir=tmp_path,
        )
        assert optimizers[2].alive(), opt_log.read_text()[-3000:]
        # the kills landed while plans were being written: some before, more after
        assert planned_at_kill[0] > 0, planned_at_kill
    finally:
        worker.kill()
        for o in optimizers:
            o.kill()


async def wait_exit(proc: WorkerProcess, timeout_s: float) -> int:
    """Wait until a process with an armed fault point has killed itself; its exit code."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = proc.exit_code()
        if code is not None:
            return code
        await asyncio.sleep(0.05)
    raise AssertionError(f"{proc} did not reach its fault point within {timeout_s:.0f} s")


WORKER_FAULTS = ("worker.mid_forecast@3", "worker.mid_batch@3", "worker.before_commit@3")


async def test_workers_killed_at_exact_points(
    kafka_bootstrap: str,
    pg_database: str,
    fresh_topic_prefix: str,
    tmp_path: Path,
    stream: ShopStream,
    lstm_model_dir: Path,
):
    """(6) Three workers in a row SIGKILL themselves at an exact step of their 3rd batch
    (runtime/faults.py): with forecasts made but nothing sent; with outputs acknowledged but
    not the changelog; with outputs and changelog acknowledged but offsets not committed. Each
    time a fresh worker takes over; a fourth, unarmed one finishes the stream."""
    settings = chaos_settings(kafka_bootstrap, fresh_topic_prefix, pg_database,
                              model_path=lstm_model_dir)  # the LSTM serves
    await ensure_topics(settings)
    log = tmp_path / "worker.log"
    armed = [
        FaultyWorker(settings, log, name=f"worker-{i}", fault=f)
        for i, f in enumerate(WORKER_FAULTS)
    ]
    last = WorkerProcess(settings, log, name="worker-clean")
    recovery: dict[str, float] = {}
    marks: dict[str, float] = {}

    async def chain() -> None:
        for i, worker in enumerate(armed):
            code = await wait_exit(worker, 90)
            assert code == -signal.SIGKILL, f"{worker.fault}: exit {code}\n{worker.log_tail()}"
            marks["restart"] = time.monotonic()
            nxt = armed[i + 1] if i + 1 < len(armed) else last
            nxt.start()
            recovery[f"{worker.fault.partition('@')[0]}_to_ready"] = await ready(nxt)

    try:
        armed[0].start()
        await ready(armed[0])
        await seed_stock(settings, stream)
        async with in_process_optimizer(settings, pg_database) as opt:
            supervisor = asyncio.create_task(chain())
            await produce_paced(settings, settings.topics.orders, stream.orders, pause_s=0.3)
            await asyncio.wait_for(supervisor, 180)
            await finish(
                "worker_exact_fault_points",
                settings,
                pg_database,
                stream,
                marks["restart"],
                all_alive(check_alive(last), task_alive(opt)),
                recovery,
                log_dir=tmp_path,
            )
    finally:
        for w in [*armed, last]:
            w.kill()


async def test_optimizer_killed_at_exact_points(
    kafka_bootstrap: str,
    pg_database: str,
    fresh_topic_prefix: str,
    tmp_path: Path,
    stream: ShopStream,
):
    """(7) The optimizer dies three times at exact points of a plan write. First inside the
    write transaction itself: the drill holds a lock on plan_lines, waits until the
    optimizer's transaction has written its restock rows and is blocked on its plan-line
    insert, then SIGKILLs it. Then right after the plans committed in PostgreSQL (not yet
    published), then after publishing them (Kafka offsets not committed). A fourth, unarmed
    one finishes. Production pauses at chunks 8 and 16 until the step due there happened, so
    each armed optimizer is sure to meet new restocks (they appear from chunk 3 on)."""
    settings = chaos_settings(kafka_bootstrap, fresh_topic_prefix, pg_database)
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    opt_log = tmp_path / "optimizer.log"
    in_tx = OptimizerProcess(settings, opt_log)
    after_write, before_commit = (
        OptimizerProcess(settings, opt_log, fault=f"optimizer.{point}@1")
        for point in ("after_plan_write", "before_kafka_commit")
    )
    last = OptimizerProcess(settings, opt_log)
    marks: dict[str, float] = {}
    store = await PlanStore.connect(pg_database)
    try:
        await store.migrate()  # the tables to lock exist before the first optimizer starts
    finally:
        await store.close()

    async def kill_inside_the_transaction() -> dict:
        lock, probe = await asyncpg.connect(pg_database), await asyncpg.connect(pg_database)
        try:
            async with lock.transaction():
                await lock.execute("LOCK TABLE plan_lines IN SHARE MODE")
                in_tx.start()
                row = await wait_blocked_plan_write(probe, 120)
                in_tx.kill()
            # released: the orphaned backend finds its client gone and rolls back
            await wait_backend_gone(probe, int(row["pid"]), 30)
            return row
        finally:
            await lock.close()
            await probe.close()

    drill = asyncio.create_task(kill_inside_the_transaction())

    async def at_8() -> None:
        marks.update(await asyncio.wait_for(drill, 120))
        after_write.start()  # replays the rolled-back batch: dies once its plans commit
        code = await wait_exit(after_write, 90)
        assert code == -signal.SIGKILL, f"{after_write.fault}: exit {code}"
        before_commit.start()

    async def at_16() -> None:
        code = await wait_exit(before_commit, 90)
        assert code == -signal.SIGKILL, f"{before_commit.fault}: exit {code}"
        marks["restart"] = time.monotonic()
        last.start()

    try:
        worker.start()
        await ready(worker)
        await seed_stock(settings, stream)
        await produce_paced(
            settings, settings.topics.orders, stream.orders, at_chunk={8: at_8, 16: at_16}
        )
        await finish(
            "optimizer_exact_fault_points",
            settings,
            pg_database,
            stream,
            marks["restart"],
            check_alive(worker),
            log_dir=tmp_path,
        )
        assert last.alive(), opt_log.read_text()[-3000:]
        assert marks["wrote"], marks  # the kill landed after the transaction wrote rows
    finally:
        drill.cancel()
        worker.kill()
        for o in (in_tx, after_write, before_commit, last):
            o.kill()


async def wait_blocked_plan_write(conn: asyncpg.Connection, timeout_s: float) -> dict:
    """The optimizer backend blocked on its plan-line insert, mid-transaction. `conn` must not
    be inside a transaction: pg_stat_activity is read once per transaction."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = await conn.fetchrow(
            "SELECT pid, backend_xid IS NOT NULL AS wrote FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND wait_event_type = 'Lock' AND query ILIKE '%plan_lines%'"
        )
        if row is not None:
            return dict(row)
        await asyncio.sleep(0.1)
    raise AssertionError(f"no plan write blocked on the plan_lines lock within {timeout_s:.0f} s")


async def wait_backend_gone(conn: asyncpg.Connection, pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"backend {pid} of the killed optimizer still there after {timeout_s} s")


def test_alert_episode_check_has_teeth():
    """A second stock-out alert inside an open episode, or one outside any episode, is a
    violation; a silent episode is reported as such; a redelivered id is not a violation."""

    def alert(sku: str, day: int) -> AlertEvent:
        bucket = T0 + timedelta(days=day)
        return AlertEvent(
            alert_id=deterministic_id("alert", sku, "wh", "stockout_risk", bucket.isoformat()),
            sku=sku, location="wh", kind="stockout_risk", severity="warning", message="m",
            raised_at=bucket,
        )  # fmt: skip

    expected = {a.alert_id: a for a in (alert("S1", 1), alert("S1", 4), alert("S2", 2))}
    assert alert_episode_violations(expected, dict(expected)) == (0, 0)
    doubled = {**expected, **{a.alert_id: a for a in (alert("S1", 2),)}}  # inside episode 1
    assert alert_episode_violations(expected, doubled) == (1, 0)
    early = {**expected, **{a.alert_id: a for a in (alert("S2", 1),)}}  # before S2's episode
    assert alert_episode_violations(expected, early) == (1, 0)
    silent = {k: v for k, v in expected.items() if v.sku != "S2"}
    assert alert_episode_violations(expected, silent) == (0, 1)


def test_forecast_check_has_teeth():
    """A forecast on the topic that differs from the uninterrupted run's for its SKU and bucket
    (as a cold re-encode after a crash would make it) is counted, as are a missing and an
    unexpected one; a redelivered copy of the right forecast is not."""
    levels = [0.1, 0.5, 0.9]

    def forecast(sku: str, day: int, scale: float) -> ForecastEvent:
        bucket = T0 + timedelta(days=day)
        daily = [[scale * level for level in levels] for _ in range(3)]
        return ForecastEvent(
            sku=sku, location="wh", issued_at=bucket, bucket=bucket, bucket_seconds=86_400,
            horizon=3, quantile_levels=levels, quantiles=daily, cumulative=daily,
            mean=[scale] * 3, model_version="lstm-1+test",
        )  # fmt: skip

    run = [forecast("S1", 1, 2.0), forecast("S1", 2, 3.0), forecast("S2", 1, 1.0)]
    expected = {(f.sku, f.location, f.bucket.isoformat()): np.asarray(f.quantiles) for f in run}
    assert forecast_mismatches(expected, [*run, run[0]]) == (0, 0, 0)
    assert forecast_mismatches(expected, [*run, forecast("S1", 2, 3.01)]) == (1, 0, 0)
    assert forecast_mismatches(expected, [run[0], run[1], forecast("S9", 1, 1.0)]) == (0, 1, 1)
