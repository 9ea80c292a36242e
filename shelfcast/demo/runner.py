"""`shelfcast demo`: the whole pipeline on embedded (or configured) services, with a summary.

Starts what is not configured (a tansu Kafka-protocol broker, a local PostgreSQL), a stream
worker process and the optimizer; replays real order lines at an accelerated clock with a
simulated warehouse (snapshots, restocks landing after their lead time) and prints a summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from optimizer.service import OptimizerService
from runtime.kafka_config import client_kwargs
from runtime.settings import Settings
from schemas import RestockEvent, sku_key, split_key
from shelfcast.demo.replay import ShopEvent, Warehouse, read_order_lines
from shelfcast.worker_process import WorkerProcess
from streams.lag import LagProbe
from streams.topics import ensure_topics

__all__ = ["DemoOptions", "DemoSummary", "run_demo"]

SUPPLIERS = ("acme-gifts", "brightware", "homestyle")


@dataclass(frozen=True)
class DemoOptions:
    data: Path
    events: int
    json_path: Path | None = None
    day_seconds: float = 0.5
    redeliver_every: int = 200
    idle_seconds: float = 4.0
    lead_time_days: int = 2
    settle_timeout_s: float = 120.0
    day_timeout_s: float = 30.0


@dataclass
class DemoSummary:
    events_in: int = 0
    orders: int = 0
    stock_events: int = 0
    catalog_events: int = 0
    redelivered: int = 0
    dlq: int = 0
    forecasts: int = 0
    restocks: int = 0
    alerts: int = 0
    plans: int = 0
    plan_lines: int = 0
    receipts: int = 0
    days_replayed: int = 0
    seconds: float = 0.0
    broker: str = ""
    database: str = ""
    dlq_reasons: dict[str, int] | None = None


class _Outputs:
    """Counts what the pipeline emitted and feeds restocks to the warehouse."""

    def __init__(self, settings: Settings, warehouse: Warehouse) -> None:
        self.settings = settings
        self.warehouse = warehouse
        self.counts: Counter[str] = Counter()
        self.dlq_kinds: Counter[str] = Counter()
        self.restock_ids: set[str] = set()
        self.last_change = time.monotonic()

    async def run(self, stop: asyncio.Event) -> None:
        t = self.settings.topics
        consumer = AIOKafkaConsumer(
            t.forecasts, t.restock, t.alerts, t.dlq, t.plans, **client_kwargs(self.settings),
            group_id=None, auto_offset_reset="earliest")
        await consumer.start()
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=5000)
                for tp, records in batches.items():
                    if not records:
                        continue
                    self.last_change = time.monotonic()
                    self.counts[tp.topic] += len(records)
                    if tp.topic == t.restock:
                        for r in records:
                            self._schedule(RestockEvent.model_validate_json(r.value))
                    elif tp.topic == t.dlq:
                        for r in records:
                            self.dlq_kinds[json.loads(r.value)["error_kind"]] += 1
        finally:
            await consumer.stop()

    def _schedule(self, event: RestockEvent) -> None:
        if event.restock_id in self.restock_ids:  # downstream dedupe by id
            return
        self.restock_ids.add(event.restock_id)
        due = event.bucket + timedelta(days=event.lead_time_days + 1)
        self.warehouse.schedule_receipt(due, sku_key(event.sku, event.location), event.restock_id,
                                        event.quantity)


def _daily_demand(orders: list[ShopEvent]) -> dict[str, float]:
    per_key: dict[str, float] = defaultdict(float)
    days = {o.occurred_at.date() for o in orders} or {None}
    for o in orders:
        q = o.value["quantity"]
        if isinstance(q, int) and q > 0 and o.value["type"] == "placed":
            per_key[o.key] += q
    return {k: v / len(days) for k, v in per_key.items()}


def _policy(key: str, unit_price: Any, lead_time_days: int) -> dict[str, Any]:
    sku, location = split_key(key)
    cost = float(unit_price) if isinstance(unit_price, int | float) and unit_price >= 0 else 0.0
    return {"sku": sku, "location": location, "lead_time_days": lead_time_days,
            "review_days": 1, "service_level": 0.95, "case_pack": 1, "moq": 1,
            "unit_cost": round(cost * 0.6, 4),
            "supplier": SUPPLIERS[sum(map(ord, sku)) % len(SUPPLIERS)]}


class _Replay:
    """Orders in file order, with catalog entries, snapshots and receipts woven in."""

    def __init__(self, orders: list[ShopEvent], warehouse: Warehouse, opts: DemoOptions) -> None:
        self.orders = orders
        self.warehouse = warehouse
        self.opts = opts
        self.days = 0

    def events(self) -> Iterator[tuple[str, str, dict[str, Any], bool]]:
        """(kind, key, value, is_redelivery); kind is orders/stock/catalog."""
        day: datetime | None = None
        for i, order in enumerate(self.orders):
            when = order.occurred_at
            if day is None or when.date() != day.date():
                if day is not None:
                    day_end = day.replace(hour=23, minute=59, second=0)
                    for e in self.warehouse.end_of_day(day_end):
                        yield "stock", e.key, e.value, False
                day = when
                self.days += 1
                for e in self.warehouse.receipts_until(when):
                    yield "stock", e.key, e.value, False
            opening = self.warehouse.first_sight(order.key, when)
            if opening is not None:
                policy = _policy(order.key, order.value.get("unit_price"),
                                 self.opts.lead_time_days)
                yield "catalog", order.key, policy, False
                yield "stock", opening.key, opening.value, False
            yield "orders", order.key, order.value, False
            q = order.value["quantity"]
            if isinstance(q, int) and q > 0:
                sign = 1 if order.value["type"] == "placed" else -1
                self.warehouse.sell(order.key, sign * q)
            every = self.opts.redeliver_every
            if every and i % every == every - 1:
                yield "orders", order.key, order.value, True


async def _pipeline(settings: Settings, dsn: str, opts: DemoOptions, console: Console,
                    summary: DemoSummary, workdir: Path) -> None:
    await ensure_topics(settings)
    worker = WorkerProcess(settings, workdir / "worker.log").start()
    try:
        with console.status("starting the stream worker (joining its consumer group)..."):
            ready_s = await asyncio.to_thread(worker.wait_ready, 120.0)
        console.print(f"stream worker ready in {ready_s:.1f} s")
        orders = list(read_order_lines(opts.data, limit=opts.events))
        warehouse = Warehouse(daily_demand=_daily_demand(orders))
        outputs = _Outputs(settings, warehouse)
        stop = asyncio.Event()
        optimizer = OptimizerService(settings, dsn)
        tasks = [asyncio.create_task(outputs.run(stop)),
                 asyncio.create_task(optimizer.run(stop))]
        try:
            async with LagProbe(settings) as probe:
                await _produce(settings, opts, orders, warehouse, summary, console, probe)
                await _settle(probe, outputs, optimizer, opts, console)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        t = settings.topics
        summary.dlq = outputs.counts[t.dlq]
        summary.dlq_reasons = dict(outputs.dlq_kinds)
        summary.forecasts = outputs.counts[t.forecasts]
        summary.restocks = len(outputs.restock_ids)
        summary.alerts = outputs.counts[t.alerts]
        from optimizer.store import PlanStore

        async with await PlanStore.connect(dsn) as store:
            summary.plans = await store.count_plans()
            summary.plan_lines = await store.count_plan_lines()
    finally:
        worker.stop()


async def _produce(settings: Settings, opts: DemoOptions, orders: list[ShopEvent],
                   warehouse: Warehouse, summary: DemoSummary, console: Console,
                   probe: LagProbe) -> None:
    topics = {"orders": settings.topics.orders, "stock": settings.topics.stock,
              "catalog": settings.topics.catalog}
    replay = _Replay(orders, warehouse, opts)
    producer = AIOKafkaProducer(**client_kwargs(settings), linger_ms=5, acks="all")
    await producer.start()
    progress = Progress(TextColumn("replaying orders"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("day {task.fields[day]}"), TimeElapsedColumn(),
                        console=console, transient=False)
    try:
        with progress:
            task = progress.add_task("replay", total=opts.events, day=0)
            day_started, last_day = time.monotonic(), 0
            for kind, key, value, again in replay.events():
                if summary.events_in >= opts.events:
                    break
                if replay.days != last_day:  # accelerated clock: pace per replayed day
                    last_day = replay.days
                    await producer.flush()
                    # closed loop: let the worker finish the day, so its restocks can be
                    # scheduled and land after their lead time in the replayed future
                    await _wait_caught_up(probe, opts.day_timeout_s)
                    wait = opts.day_seconds - (time.monotonic() - day_started)
                    if wait > 0:
                        await asyncio.sleep(wait)
                    day_started = time.monotonic()
                    progress.update(task, day=replay.days)
                await producer.send(topics[kind], key=key.encode(),
                                    value=json.dumps(value).encode())
                summary.events_in += 1
                summary.redelivered += again
                summary.orders += kind == "orders"
                summary.stock_events += kind == "stock"
                summary.catalog_events += kind == "catalog"
                summary.receipts += kind == "stock" and value.get("type") == "receipt"
                if summary.events_in % 500 == 0:
                    progress.update(task, completed=summary.events_in)
            await producer.flush()
            progress.update(task, completed=summary.events_in)
    finally:
        await producer.stop()
    summary.days_replayed = replay.days


async def _wait_caught_up(probe: LagProbe, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and await probe.lag() > 0:
        await asyncio.sleep(0.1)


async def _settle(probe: LagProbe, outputs: _Outputs, optimizer: OptimizerService,
                  opts: DemoOptions, console: Console) -> None:
    """Wait until the worker has committed every input and the optimizer has caught up."""
    t0 = time.monotonic()
    with console.status("waiting for the pipeline to catch up...") as status:
        while time.monotonic() - t0 < opts.settle_timeout_s:
            await asyncio.sleep(0.5)
            lag = await probe.lag()
            status.update(f"waiting for the pipeline to catch up: {lag:,} input events to go")
            idle = time.monotonic() - outputs.last_change
            caught_up = optimizer.counters.restocks_in >= len(outputs.restock_ids)
            if lag <= 0 and idle >= opts.idle_seconds and caught_up:
                return
    console.print("[yellow]pipeline still busy after the settle timeout; summarising anyway")


def _print_summary(console: Console, summary: DemoSummary) -> None:
    table = Table(title="shelfcast demo summary")
    table.add_column("what")
    table.add_column("count", justify="right")
    rows = [("events in", summary.events_in), ("  orders", summary.orders),
            ("  stock events", summary.stock_events), ("  catalog", summary.catalog_events),
            ("  redelivered (dedupe)", summary.redelivered), ("  receipts", summary.receipts),
            ("dead-lettered", summary.dlq), ("forecasts", summary.forecasts),
            ("restocks", summary.restocks), ("alerts", summary.alerts),
            ("plans in PostgreSQL", summary.plans), ("plan lines", summary.plan_lines)]
    for what, n in rows:
        table.add_row(what, f"{n:,}")
    console.print(table)
    if summary.dlq_reasons:
        console.print("dead-letter reasons: " + ", ".join(
            f"{k} {v}" for k, v in sorted(summary.dlq_reasons.items())))
    console.print(f"{summary.days_replayed} days replayed in {summary.seconds:.1f} s "
                  f"(broker {summary.broker}, database {summary.database})")


def run_demo(settings: Settings, opts: DemoOptions) -> DemoSummary:
    """Run the demo end to end; prints progress and a summary, writes JSON when asked."""
    from shelfcast.services.postgres_server import LocalPostgres
    from shelfcast.services.tansu_broker import EmbeddedTansu

    console = Console(stderr=True)
    run_id = uuid.uuid4().hex[:8]
    summary = DemoSummary()
    t0 = time.monotonic()
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(
            prefix="shelfcast-demo-") as tmp:
        workdir = Path(tmp)
        updates: dict[str, Any] = {
            # A run of its own: never touches a real shop's topics or another demo's state.
            "shop_topic_prefix": f"demo-{run_id}.shop.", "topic_prefix": f"demo-{run_id}.",
            "app_id": f"shelfcast-demo-{run_id}"}
        if settings.kafka_bootstrap:
            summary.broker = "configured"
        else:
            with console.status("starting the embedded Kafka-protocol broker (tansu)..."):
                broker = stack.enter_context(EmbeddedTansu())
            updates["kafka_bootstrap"] = broker.bootstrap
            summary.broker = "embedded tansu"
        if settings.database_url:
            dsn = settings.database_url.get_secret_value()
            summary.database = "configured"
        else:
            with console.status("starting the embedded PostgreSQL..."):
                pg = stack.enter_context(LocalPostgres(workdir / "pg"))
            dsn = pg.dsn
            summary.database = "embedded PostgreSQL"
        settings = settings.model_copy(update=updates)
        asyncio.run(_pipeline(settings, dsn, opts, console, summary, workdir))
    summary.seconds = round(time.monotonic() - t0, 2)
    _print_summary(console, summary)
    if opts.json_path:
        opts.json_path.write_text(json.dumps(asdict(summary), indent=2) + "\n")
        console.print(f"summary written to {opts.json_path}")
    return summary
