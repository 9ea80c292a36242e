"""`shelfcast bench pipeline`: stream-worker throughput and order->restock latency on a real broker.

One run measures, on the same broker: the raw aiokafka consume rate of the input events, the
rate at which K worker processes drain the same backlog (so `ratio` is meaningful on a noisy
machine), end-to-end latency from an order to the restock it triggers at full and at half
load, and each worker's peak RSS.

The workers serve the configured model, by default the trained LSTM: `--model-path DIR`, else
SHELFCAST_MODEL_PATH, else a small LSTM trained first on a synthetic panel shaped like the
bench's demand (cached by its fingerprint, see shelfcast.quick_model). `--compare-baseline`
runs the moving average on the same broker in the same invocation, under `baseline`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from rich.console import Console

from runtime.kafka_config import client_kwargs
from runtime.settings import Settings
from schemas import sku_key
from shelfcast.worker_process import WorkerProcess
from streams.changelog import decode_state, engine_changelog_topic
from streams.lag import LagProbe
from streams.topics import ensure_topics, topic_partitions

__all__ = ["PipelineBenchOptions", "run_pipeline_bench"]

T0 = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class PipelineBenchOptions:
    events: int = 200_000
    workers: int = 1
    skus: int = 5_000
    days: int = 7
    partitions: int = 4
    latency_probes: int = 200
    json_path: Path | None = None
    model_path: Path | None = None  # a trained model dir (else settings', else trained here)
    compare_baseline: bool = False  # also run the moving average, same broker, same backlog


def _order(i: int, sku: int, day: float, qty: int = 1) -> tuple[bytes, bytes]:
    key = sku_key(f"S{sku}", "wh")
    value = {
        "event_id": f"e{i}",
        "type": "placed",
        "sku": f"S{sku}",
        "location": "wh",
        "quantity": qty,
        "occurred_at": (T0 + timedelta(days=day)).isoformat(),
    }
    return key.encode(), json.dumps(value).encode()


def _snapshot(sku: int, on_hand: int, day: float) -> tuple[bytes, bytes]:
    value = {
        "event_id": f"snap-{sku}-{day}",
        "type": "snapshot",
        "sku": f"S{sku}",
        "location": "wh",
        "on_hand": on_hand,
        "occurred_at": (T0 + timedelta(days=day)).isoformat(),
    }
    return sku_key(f"S{sku}", "wh").encode(), json.dumps(value).encode()


Records = list[tuple[bytes, bytes]]


def backlog(opts: PipelineBenchOptions) -> tuple[Records, Records]:
    """(stock, orders): a snapshot per SKU, then orders in time order over `days`."""
    rng = np.random.default_rng(7)
    stock = [_snapshot(s, 1_000_000, -0.5) for s in range(opts.skus)]
    n = opts.events - len(stock)
    skus = rng.integers(0, opts.skus, size=n)
    days = np.sort(rng.uniform(0, opts.days, size=n))
    orders = [_order(i, int(s), float(d)) for i, (s, d) in enumerate(zip(skus, days, strict=True))]
    return stock, orders


async def _produce(settings: Settings, topic: str, records: list[tuple[bytes, bytes]]) -> float:
    producer = AIOKafkaProducer(
        **client_kwargs(settings), linger_ms=20, max_batch_size=262_144, acks=1
    )
    await producer.start()
    t0 = time.perf_counter()
    try:
        futures = [await producer.send(topic, key=k, value=v) for k, v in records]
        await producer.flush()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(records) / (time.perf_counter() - t0)


async def _raw_consume_rate(settings: Settings, total: int) -> float:
    consumer = AIOKafkaConsumer(
        *settings.topics.inputs(),
        **client_kwargs(settings),
        group_id=None,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 << 20,
        fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    try:
        # The clock starts when the first batch is in hand, so that batch is not counted
        # (it arrived before the clock ran).
        seen, first, t0 = 0, 0, None
        while seen < total:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            got = sum(len(v) for v in batch.values())
            if t0 is None and batch:
                t0, first = time.perf_counter(), got
            for records in batch.values():
                for r in records:
                    _ = r.value  # touch it, as a consumer would
            seen += got
        assert t0 is not None
        return (seen - first) / (time.perf_counter() - t0)
    finally:
        await consumer.stop()


async def _plain_consume_rate(settings: Settings, total: int) -> float:
    """The same events through aiokafka with its default fetch sizes, one message per
    `async for` step: the "plain consumer" the issue and FACTS quote (116-139k msg/s),
    reported next to the tuned batch consumer that `ratio` is computed against."""
    consumer = AIOKafkaConsumer(
        *settings.topics.inputs(),
        **client_kwargs(settings),
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        seen, t0 = 0, time.perf_counter()
        async for msg in consumer:
            _ = msg.value
            seen += 1
            if seen == 1:
                t0 = time.perf_counter()
            if seen >= total:
                break
        return (seen - 1) / (time.perf_counter() - t0)
    finally:
        await consumer.stop()


async def _check_state(settings: Settings, orders: Records) -> dict[str, int]:
    """Every backlog order counted exactly once: each SKU's demand in the state the workers
    wrote to the changelog of the engine that ran (the last record per key) equals its
    number of orders (each is one unit). Read once the group has committed everything, so
    the changelog is complete."""
    expected = Counter(k.decode() for k, _ in orders)
    topic = engine_changelog_topic(settings)
    consumer = AIOKafkaConsumer(**client_kwargs(settings), group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
    await consumer.start()
    state: dict[str, Any] = {}
    ends: dict[TopicPartition, int] = {}
    try:
        # the changelog has as many partitions as the input topics
        partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        todo = {tp for tp, end in ends.items() if end > 0}
        while todo:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for r in records:
                    state[r.key.decode()] = decode_state(r.value)
            todo = {tp for tp in todo if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()
    counted = {k: round(sum((v or {}).get("demand", {}).values())) for k, v in state.items()}
    mismatches = sum(counted.get(k, 0) != n for k, n in expected.items())
    return {"skus": len(expected), "orders": sum(expected.values()),
            "orders_counted": sum(counted.get(k, 0) for k in expected), "mismatches": mismatches,
            "changelog_records": sum(ends.values())}


async def _drain(probe: LagProbe, total: int, console: Console, t_start: float) -> float:
    """Seconds from `t_start` (the first worker ready) until the group has committed everything.

    Counting from the first committed progress instead would leave the first batch (up to
    `take_max` events) out of the time but in the count.
    """
    last_print = 0.0
    while True:
        lag = await probe.lag()
        now = time.perf_counter()
        if lag <= 0:
            return now - t_start
        if now - last_print > 2:
            console.print(f"  lag {lag:,}")
            last_print = now
        await asyncio.sleep(0.05)


def _rate_all_ready(lag: int, seconds: float) -> float | None:
    """Events per second over the part of the backlog left when every worker was ready; None
    when under a tenth of a second or a thousand events remained (nothing to time)."""
    if lag < 1_000 or seconds < 0.1:
        return None
    return lag / seconds


async def _latency(
    settings: Settings,
    probes: int,
    rate_per_s: float,
    day0: float,
    background: list[tuple[bytes, bytes]] | None,
    probe_base: int = 10_000_000,
) -> dict[str, float]:
    """Order -> restock latency: each probe SKU has no stock, so its next bucket triggers a
    restock. `background` traffic is produced alongside at `rate_per_s` (0 = none). Each
    phase needs its own probe SKUs (`probe_base`): a SKU that already has a restock on order
    does not order again."""
    t = settings.topics
    kwargs = client_kwargs(settings)
    producer = AIOKafkaProducer(**kwargs, linger_ms=0, acks=1)
    consumer = AIOKafkaConsumer(t.restock, **kwargs, group_id=None, auto_offset_reset="latest")
    await producer.start()
    await consumer.start()
    await consumer.seek_to_end()
    sent: dict[str, float] = {}
    got: dict[str, float] = {}
    stop = asyncio.Event()

    async def receive() -> None:
        while not stop.is_set():
            for records in (await consumer.getmany(timeout_ms=100)).values():
                for r in records:
                    sku = json.loads(r.value)["sku"]
                    if sku in sent and sku not in got:
                        got[sku] = time.perf_counter()

    async def load() -> None:
        if not background or rate_per_s <= 0:
            return
        tick_s = 0.01
        per_tick = max(1, int(rate_per_s * tick_s))
        i = 0
        while not stop.is_set() and i < len(background):
            chunk = background[i : i + per_tick]
            for k, v in chunk:
                await producer.send(t.orders, key=k, value=v)
            i += per_tick
            await asyncio.sleep(tick_s)

    receiver = asyncio.create_task(receive())
    loader = asyncio.create_task(load())
    try:
        # setup: each probe SKU gets an empty snapshot and a first order in bucket day0
        base = probe_base
        for p in range(probes):
            k, v = _snapshot(base + p, 0, day0)
            await producer.send(t.stock, key=k, value=v)
            k, v = _order(base * 2 + p, base + p, day0 + 0.1)
            await producer.send(t.orders, key=k, value=v)
        await producer.flush()
        await asyncio.sleep(2.0)
        for p in range(probes):  # the next bucket's order closes day0 -> forecast -> restock
            k, v = _order(base * 3 + p, base + p, day0 + 1.1)
            sent[f"S{base + p}"] = time.perf_counter()
            await producer.send_and_wait(t.orders, key=k, value=v)
            await asyncio.sleep(0.02)
        deadline = time.perf_counter() + 30
        while len(got) < len(sent) and time.perf_counter() < deadline:
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.gather(receiver, loader, return_exceptions=True)
        await producer.stop()
        await consumer.stop()
    lat = np.array([(got[s] - sent[s]) * 1000 for s in got])
    if lat.size == 0:
        return {"p50": float("nan"), "p99": float("nan"), "n": 0}
    return {
        "p50": round(float(np.percentile(lat, 50)), 1),
        "p99": round(float(np.percentile(lat, 99)), 1),
        "n": int(lat.size),
        "missing": len(sent) - len(got),
    }


def _cpu_s(pid: int | None) -> float:
    """User + system CPU seconds a process has used so far (0 if it is gone)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_cpu_s() -> float:
    """Busy (non-idle) CPU seconds of the whole machine so far, from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    ticks = [int(f) for f in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


async def _bench(
    settings: Settings, opts: PipelineBenchOptions, console: Console, workdir: Path,
    broker_pid: int | None = None,
) -> dict[str, Any]:
    load_at_start = round(os.getloadavg()[0], 2)
    await ensure_topics(settings)
    stock, orders = backlog(opts)
    total = len(stock) + len(orders)
    console.print(f"producing {total:,} events ({opts.skus:,} SKUs, {opts.days} days)...")
    broker_before_produce = _cpu_s(broker_pid)
    produce_rate = await _produce(settings, settings.topics.stock, stock)
    produce_rate = await _produce(settings, settings.topics.orders, orders)
    broker_produce = _cpu_s(broker_pid) - broker_before_produce
    raw_rate = await _raw_consume_rate(settings, total)
    console.print(f"raw aiokafka consume: {raw_rate:,.0f} events/s")
    plain_rate = await _plain_consume_rate(settings, total)
    console.print(f"plain aiokafka consumer (default fetch, async for): {plain_rate:,.0f} "
                  "events/s")
    workers = [
        WorkerProcess(settings, workdir / f"worker-{i}.log", name=f"worker-{i}")
        for i in range(opts.workers)
    ]
    try:
        async with LagProbe(settings) as probe:
            for w in workers:
                w.start()

            async def ready(w: WorkerProcess) -> tuple[float, float, float, float]:
                await asyncio.to_thread(w.wait_ready, 180)
                return time.perf_counter(), _cpu_s(w.pid), _cpu_s(broker_pid), _machine_cpu_s()

            # The clock starts when the FIRST worker is ready: it starts on the backlog at
            # once, and the others join (a rebalance) while it runs. Worker CPU counts from
            # each worker's own ready moment (start-up and imports are not the stream's work).
            marks = await asyncio.gather(*(ready(w) for w in workers))
            t_ready, _, broker0, machine0 = min(marks)
            cpu0 = sum(m[1] for m in marks)
            last = max(m[0] for m in marks) - t_ready
            console.print(f"{opts.workers} worker(s) ready (the last {last:.1f} s after the "
                          "first); draining the backlog...")
            # What was left when every worker was ready: the group's own rate from then on
            # (with several workers the first one drains alone until the others are up, so
            # `events_per_s` understates what the group does together).
            lag_all_ready, t_all_ready = await probe.lag(), time.perf_counter()
            seconds = await _drain(probe, total, console, t_ready)
            cpu = sum(_cpu_s(w.pid) for w in workers) - cpu0
            broker_cpu = _cpu_s(broker_pid) - broker0 if broker_pid else None
            machine_cpu = _machine_cpu_s() - machine0
        state_check = await _check_state(settings, orders)
        console.print(f"state check: {state_check}")
        rate = total / seconds if seconds > 0 else float("nan")
        console.print(f"workers: {rate:,.0f} events/s ({seconds:.1f} s)")
        rate_all = _rate_all_ready(lag_all_ready, t_ready + seconds - t_all_ready)
        if rate_all is not None and opts.workers > 1:
            console.print(f"  with every worker ready: {rate_all:,.0f} events/s "
                          f"({lag_all_ready:,} events left then)")
        day0 = opts.days + 2
        live0 = (await _records_in(settings, settings.topics.orders),
                 await _records_in(settings, engine_changelog_topic(settings)),
                 sum(_cpu_s(w.pid) for w in workers))
        half = await _latency(
            settings,
            opts.latency_probes,
            rate / 2,
            day0,
            background=_later_orders(opts, rate, day0),
        )
        full = await _latency(
            settings,
            opts.latency_probes,
            rate,
            day0 + 3,
            background=_later_orders(opts, rate * 2, day0 + 3),
            probe_base=20_000_000,
        )
        live = await _live_cost(settings, workers, live0)
        rss = [_rss_mb(w.pid) for w in workers]
    finally:
        for w in workers:
            w.stop()
    return {
        "events": total,
        "workers": opts.workers,
        "partitions": opts.partitions,
        "skus": opts.skus,
        "days": opts.days,
        "events_per_s": round(rate, 1),
        "raw_consume_per_s": round(raw_rate, 1),
        "ratio": round(rate / raw_rate, 4),
        # reference only: a default-settings consumer iterating one message at a time
        "raw_consume_plain_per_s": round(plain_rate, 1),
        "ratio_plain": round(rate / plain_rate, 4),
        # the machine is shared: CPU seconds the workers used while draining, and events per
        # worker-CPU-second (what one worker would do with a core to itself)
        "worker_cpu_s": round(cpu, 2),
        "events_per_cpu_s": round(total / cpu, 1) if cpu > 0 else None,
        # while draining: the local broker's CPU seconds (None for an external broker), and
        # the whole machine's busy CPU seconds (every process, this bench's and others')
        "broker_cpu_s": round(broker_cpu, 2) if broker_cpu is not None else None,
        "broker_cpu_produce_s": round(broker_produce, 2) if broker_pid else None,
        "machine_busy_cpu_s": round(machine_cpu, 2),
        "drain_s": round(seconds, 2),
        "last_worker_ready_after_s": round(last, 2),
        # the events left when the last worker was ready, and the group's rate on them
        # (None when the backlog was nearly gone by then: too few events to time)
        "lag_when_all_ready": lag_all_ready,
        "events_per_s_all_ready": round(rate_all, 1) if rate_all is not None else None,
        "engine": settings.engine,
        "model": settings.model,
        "model_version": _model_version(settings),
        "state_check": state_check,
        "produce_per_s": round(produce_rate, 1),
        "latency_ms": full,
        "latency_half_load_ms": half,
        "live": live,
        "rss_mb": rss,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_1m_at_start": load_at_start,
            "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
        },
    }


async def _records_in(settings: Settings, topic: str) -> int:
    """How many records `topic` has taken so far (its partitions' end offsets summed)."""
    consumer = AIOKafkaConsumer(**client_kwargs(settings), group_id=None)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p)
                      for p in await topic_partitions(settings, topic)]
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


async def _live_cost(settings: Settings, workers: list[WorkerProcess],
                     before: tuple[int, float | int, float]) -> dict[str, float]:
    """The latency phases as a live stream (small batches at a steady rate, not a backlog):
    the orders they published, the state changelog records the workers wrote for them, and
    the workers' CPU, per order."""
    orders = await _records_in(settings, settings.topics.orders) - before[0]
    changelog = await _records_in(settings, engine_changelog_topic(settings)) - before[1]
    cpu = sum(_cpu_s(w.pid) for w in workers) - before[2]
    per = max(orders, 1)
    return {"orders": orders, "changelog_records": int(changelog),
            "changelog_records_per_order": round(changelog / per, 3),
            "worker_cpu_s": round(cpu, 2), "worker_cpu_us_per_order": round(cpu / per * 1e6, 1)}


def _later_orders(opts: PipelineBenchOptions, rate: float, day0: float) -> Records:
    """Background orders for the latency phase: ~20 s of traffic at `rate`, same SKUs."""
    n = int(min(rate * 20, 400_000))
    rng = np.random.default_rng(11)
    skus = rng.integers(0, opts.skus, size=n)
    return [_order(50_000_000 + i, int(s), day0 + 0.5) for i, s in enumerate(skus)]


def _model_version(settings: Settings) -> str | None:
    """The version of the model the workers were started with (None for a local model)."""
    if settings.model_path is None:
        return None
    from forecasting.lstm.artifact_files import read_metadata

    return str(read_metadata(settings.model_path)["model_version"])


def served_model(settings: Settings, opts: PipelineBenchOptions, console: Console) -> Settings:
    """`settings` with a model the workers can serve: the configured one; for a trained model
    without a directory, a small LSTM trained on a synthetic panel shaped like the backlog
    (each SKU's orders per day), or reused from the cache when trained before."""
    from streams.forecaster_setup import check_servable, model_info

    if opts.model_path is not None:
        settings = settings.model_copy(update={"model_path": opts.model_path})
    if model_info(settings).loads_artifact and settings.model_path is None:
        from shelfcast.quick_model import quick_config, synthetic_panel, train_or_reuse

        per_sku_day = max(opts.events - opts.skus, 1) / (opts.skus * opts.days)
        panel = synthetic_panel(200, 180, per_sku_day, seed=7)
        with console.status("training a small LSTM for the bench (or reusing the cached "
                            "one)..."):
            model = train_or_reuse(panel, quick_config(), data={"source": "bench synthetic"},
                                   model=settings.model)
        console.print(f"serving {model.model_version} from {model.path} ("
                      + ("cached" if model.reused else f"trained in {model.train_cpu_s:.0f} "
                         "CPU-s") + ")")
        settings = settings.model_copy(update={"model_path": model.path})
    check_servable(settings)
    return settings


def run_pipeline_bench(settings: Settings, opts: PipelineBenchOptions) -> dict[str, Any]:
    """Run the benchmark on the configured broker, or on a local Apache Kafka it starts; with
    `compare_baseline`, then once more with the moving average on the same broker."""
    from shelfcast.services.kafka_broker import LocalKafka

    console = Console(stderr=True)
    settings = served_model(settings, opts, console)
    # the directory outlives the broker whose data is in it (exits run last-entered first)
    with (
        tempfile.TemporaryDirectory(prefix="shelfcast-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        broker_pid = None
        if not settings.kafka_bootstrap:
            with console.status("starting Apache Kafka (local, KRaft)..."):
                broker = stack.enter_context(LocalKafka(Path(tmp) / "kafka"))
            settings = settings.model_copy(update={"kafka_bootstrap": broker.bootstrap})
            broker_pid = broker.pid

        def one_run(run_settings: Settings, name: str) -> dict[str, Any]:
            run_id = uuid.uuid4().hex[:8]
            run_settings = run_settings.model_copy(update={  # topics and group of its own
                "shop_topic_prefix": f"bench-{run_id}.shop.", "topic_prefix": f"bench-{run_id}.",
                "app_id": f"shelfcast-bench-{run_id}", "topic_partitions": opts.partitions})
            console.rule(f"{name}: SHELFCAST_MODEL={run_settings.model}")
            workdir = Path(tmp) / run_id
            workdir.mkdir()
            return asyncio.run(_bench(run_settings, opts, console, workdir, broker_pid))

        result = one_run(settings, "served model")
        if opts.compare_baseline:
            baseline = settings.model_copy(update={"model": "moving_average", "model_path": None})
            result["baseline"] = one_run(baseline, "baseline")
            result["events_per_s_vs_baseline"] = round(
                result["events_per_s"] / result["baseline"]["events_per_s"], 3)
    console.print_json(json.dumps(result))
    if opts.json_path:
        opts.json_path.parent.mkdir(parents=True, exist_ok=True)
        opts.json_path.write_text(json.dumps(result, indent=2) + "\n")
    return result
