"""`shelfcast demo`: the whole pipeline on embedded (or configured) services, with a summary.

Serves the default model, lstm_lgbm (the LSTM + LightGBM): the small pre-trained one
committed with the demo (shelfcast.demo.served; its LSTM part served in numpy: no torch, no
training) when the history before the replayed days is the one it was trained on; else, with
torch installed, one trained on the spot (tens of CPU-seconds) or reused from the cache
(shelfcast.quick_model). SHELFCAST_MODEL=lstm serves the committed model's LSTM part the
same way. Starts what is
not configured (Apache Kafka from the cached jars where Java is installed, else the embedded
tansu broker; a local PostgreSQL), a stream worker process and the optimizer; replays the
file's last order lines at an accelerated clock with a simulated warehouse (snapshots,
restocks landing after their lead time) and prints a summary: what flowed, and how the
served forecasts scored against what the replay then sold, beside the moving average's score
on the same windows (shelfcast.demo.scoring).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from optimizer.service import OptimizerService
from runtime.errors import ConfigError
from runtime.kafka_config import client_kwargs
from runtime.settings import Settings
from schemas import RestockEvent, sku_key, split_key
from shelfcast.demo.replay import ShopEvent, Warehouse, read_order_lines
from shelfcast.demo.scoring import (
    Forecasts,
    HistorySplit,
    offline_baseline,
    score_forecasts,
    split_history,
)
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
    train_series: int = 400  # SKUs (most sold) the demo's LSTM trains on
    train_max_s: float = 120.0  # wall-clock cap on training (epochs end early past it)
    model_cache: Path | None = None  # default ~/.cache/shelfcast/models


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
    model: str = ""
    model_version: str = ""
    model_source: str = ""  # trained now / cached / SHELFCAST_MODEL_PATH
    # pinball / 80% coverage of the served forecasts and of the moving average on the same
    # (SKU, bucket) windows, over the replayed days (see shelfcast.demo.scoring)
    score: dict[str, Any] | None = None


class _Outputs:
    """Counts what the pipeline emitted and feeds restocks to the warehouse."""

    def __init__(self, settings: Settings, warehouse: Warehouse) -> None:
        self.settings = settings
        self.warehouse = warehouse
        self.counts: Counter[str] = Counter()
        self.dlq_kinds: Counter[str] = Counter()
        self.restock_ids: set[str] = set()
        self.forecasts: Forecasts = {}  # the last forecast per (SKU, bucket)
        self.model_versions: Counter[str] = Counter()
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
                    elif tp.topic == t.forecasts:
                        for r in records:
                            self._forecast(json.loads(r.value))
        finally:
            await consumer.stop()

    def _forecast(self, event: dict[str, Any]) -> None:
        bucket = datetime.fromisoformat(event["bucket"])
        closed = int(bucket.timestamp()) // int(event["bucket_seconds"])
        key = sku_key(event["sku"], event["location"])
        self.forecasts[(key, closed)] = (tuple(event["quantile_levels"]),
                                         np.asarray(event["quantiles"], dtype=float))
        self.model_versions[event["model_version"]] += 1

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
                    summary: DemoSummary, workdir: Path, split: HistorySplit) -> None:
    await ensure_topics(settings)
    worker = WorkerProcess(settings, workdir / "worker.log").start()
    try:
        with console.status("starting the stream worker (joining its consumer group)..."):
            ready_s = await asyncio.to_thread(worker.wait_ready, 120.0)
        console.print(f"stream worker ready in {ready_s:.1f} s")
        orders = list(read_order_lines(opts.data, limit=opts.events,
                                       start=split.replay_from_line))
        warehouse = Warehouse(daily_demand=_daily_demand(orders))
        outputs = _Outputs(settings, warehouse)
        stop = asyncio.Event()
        optimizer = OptimizerService(settings, dsn)
        tasks = [asyncio.create_task(outputs.run(stop)),
                 asyncio.create_task(optimizer.run(stop))]
        published: list[tuple[str, bytes, bytes]] = []
        try:
            async with LagProbe(settings) as probe:
                await _produce(settings, opts, orders, warehouse, summary, console, probe,
                               published)
                await _settle(probe, outputs, optimizer, opts, console)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        with console.status("scoring the served forecasts and the moving average's..."):
            await _score(settings, summary, outputs, published)
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


async def _score(settings: Settings, summary: DemoSummary, outputs: _Outputs,
                 published: list[tuple[str, bytes, bytes]]) -> None:
    """The served forecasts and the moving average's on the same (SKU, bucket) windows,
    against what the replay sold, over the replayed days up to the last complete one."""
    baseline, demand = await offline_baseline(settings, published)
    days = {b for sold in demand.values() for b in sold}
    if not days:
        return
    last_bucket = max(days) - 1  # the replay may stop in the middle of its last day
    served = {k: v for k, v in outputs.forecasts.items() if k in baseline}
    same = {k: baseline[k] for k in served}
    first_day = datetime.fromtimestamp(min(days) * 86_400, UTC).date().isoformat()
    last_day = datetime.fromtimestamp(last_bucket * 86_400, UTC).date().isoformat()
    summary.score = {
        "days": [first_day, last_day],
        "served": score_forecasts(served, demand, last_bucket).as_dict(),
        "baseline": {"model": "moving_average",
                     **score_forecasts(same, demand, last_bucket).as_dict()},
        "served_forecasts_without_baseline_window": len(outputs.forecasts) - len(served),
    }
    if outputs.model_versions:
        summary.model_version = ",".join(sorted(outputs.model_versions))


async def _produce(settings: Settings, opts: DemoOptions, orders: list[ShopEvent],
                   warehouse: Warehouse, summary: DemoSummary, console: Console,
                   probe: LagProbe, published: list[tuple[str, bytes, bytes]]) -> None:
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
                raw_key, raw_value = key.encode(), json.dumps(value).encode()
                await producer.send(topics[kind], key=raw_key, value=raw_value)
                published.append((topics[kind], raw_key, raw_value))
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
    console.print(f"model served: {summary.model} {summary.model_version} "
                  f"({summary.model_source})")
    if summary.score:
        scores = Table(title=f"forecasts vs what the replay sold, "
                             f"{summary.score['days'][0]} .. {summary.score['days'][1]}")
        for column in ("model", "pinball", "80% coverage", "SKU-days", "forecasts"):
            scores.add_column(column, justify="left" if column == "model" else "right")
        for name, row in (("served: " + summary.model, summary.score["served"]),
                          ("baseline: moving_average", summary.score["baseline"])):
            scores.add_row(name, f"{row['pinball']:.3f}", f"{row['coverage_80']:.3f}",
                           f"{row['points']:,}", f"{row['forecasts']:,}")
        console.print(scores)


def _served_model(settings: Settings, opts: DemoOptions, split: HistorySplit,
                  console: Console, summary: DemoSummary) -> Settings:
    """`settings` with the model the worker serves: the configured one; a trained model
    (lstm_lgbm, lstm) without a directory is the committed one when it was trained on this
    history (or when torch is missing, saying it was not), else one trained on the history
    before the replay (or reused from the cache)."""
    from streams.forecaster_setup import check_servable, model_info

    if model_info(settings).loads_artifact and settings.model_path is None:
        import importlib.util

        from shelfcast.demo.served import committed_model

        panel = split.panel
        # The committed model (an lstm_lgbm, the default) serves as its own kind, and as
        # `lstm` through its LSTM part (an LSTM model directory of its own).
        found = committed_model()
        committed = found.serving(settings.model) if found is not None else None
        if committed is None and importlib.util.find_spec("torch") is None:
            raise ConfigError(f"SHELFCAST_MODEL={settings.model} has no committed model and "
                              "training one needs torch: pip install 'shelfcast[train]'")
        if committed is not None and committed.data_fingerprint == panel.fingerprint():
            summary.model_source = (f"pre-trained, committed at {committed.path} (trained on "
                                    f"this history: {panel.n_series} SKUs x {panel.n_days} "
                                    f"days before {split.replay_first_day})")
            summary.model_version = committed.model_version
            path = committed.path
        elif committed is not None and importlib.util.find_spec("torch") is None:
            console.print(
                f"[yellow]this history (data fingerprint {panel.fingerprint()}) is not the one "
                f"the committed model was trained on ({committed.data_fingerprint}); serving "
                "it anyway. To train one on this history: pip install 'shelfcast\\[train]'")
            summary.model_source = (f"pre-trained at {committed.path} on other data (its "
                                    f"fingerprint {committed.data_fingerprint}, this history "
                                    f"{panel.fingerprint()})")
            summary.model_version = committed.model_version
            path = committed.path
        else:
            from shelfcast.quick_model import quick_config, train_or_reuse

            if committed is not None:
                console.print("this history is not the one the committed model was trained "
                              f"on (data fingerprint {panel.fingerprint()}, the model's "
                              f"{committed.data_fingerprint}): training one on it")
            console.print(f"training {settings.model} on {panel.n_series} SKUs x "
                          f"{panel.n_days} days before {split.replay_first_day} "
                          "(or reusing the cached one)...")
            model = train_or_reuse(panel, quick_config(), cache=opts.model_cache,
                                   progress=True, max_seconds=opts.train_max_s,
                                   data={"path": str(opts.data),
                                         "before": split.replay_first_day},
                                   model=settings.model)
            summary.model_source = (
                f"cached at {model.path}" if model.reused else
                f"trained now in {model.train_cpu_s:.1f} CPU-s on {panel.n_series} SKUs x "
                f"{panel.n_days} days, saved at {model.path}")
            summary.model_version = model.model_version
            path = model.path
        settings = settings.model_copy(update={"model_path": path})
    else:
        summary.model_source = (f"SHELFCAST_MODEL_PATH={settings.model_path}"
                                if settings.model_path else "a baseline, asked for by name")
    summary.model = settings.model
    check_servable(settings)
    return settings


def _start_broker(stack: contextlib.ExitStack, workdir: Path, console: Console
                  ) -> tuple[str, str]:
    """(bootstrap, what it is): Apache Kafka from the cached jars where Java is installed
    (the broker the tests use), else -- or when it cannot start -- the embedded tansu."""
    from runtime.errors import ServiceUnavailable
    from shelfcast.services.kafka_broker import KAFKA_VERSION, LocalKafka
    from shelfcast.services.tansu_broker import EmbeddedTansu

    if shutil.which("java"):
        try:
            with console.status(f"starting Apache Kafka {KAFKA_VERSION} (local, KRaft; jars "
                                "fetched once and cached)..."):
                kafka = stack.enter_context(LocalKafka(workdir / "kafka"))
            return kafka.bootstrap, f"Apache Kafka {KAFKA_VERSION} (local, KRaft)"
        except (OSError, ServiceUnavailable) as exc:
            console.print(f"[yellow]Apache Kafka did not start ({exc}); using the embedded "
                          "tansu broker")
    with console.status("starting the embedded Kafka-protocol broker (tansu)..."):
        tansu = stack.enter_context(EmbeddedTansu())
    return tansu.bootstrap, "embedded tansu (no Java for Apache Kafka)"


def run_demo(settings: Settings, opts: DemoOptions) -> DemoSummary:
    """Run the demo end to end; prints progress and a summary, writes JSON when asked."""
    from shelfcast.services.postgres_server import LocalPostgres

    console = Console(stderr=True)
    run_id = uuid.uuid4().hex[:8]
    summary = DemoSummary()
    t0 = time.monotonic()
    with console.status(f"reading {opts.data}..."):
        split = split_history(opts.data, opts.events, max_series=opts.train_series)
    settings = _served_model(settings, opts, split, console, summary)
    # the directory outlives the services whose data is in it (exits run last-entered first)
    with tempfile.TemporaryDirectory(prefix="shelfcast-demo-") as tmp, \
            contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        updates: dict[str, Any] = {
            # A run of its own: never touches a real shop's topics or another demo's state.
            "shop_topic_prefix": f"demo-{run_id}.shop.", "topic_prefix": f"demo-{run_id}.",
            "app_id": f"shelfcast-demo-{run_id}"}
        if settings.kafka_bootstrap:
            summary.broker = "configured"
        else:
            updates["kafka_bootstrap"], summary.broker = _start_broker(stack, workdir, console)
        if settings.database_url:
            dsn = settings.database_url.get_secret_value()
            summary.database = "configured"
        else:
            with console.status("starting the embedded PostgreSQL..."):
                pg = stack.enter_context(LocalPostgres(workdir / "pg"))
            dsn = pg.dsn
            summary.database = "embedded PostgreSQL"
        settings = settings.model_copy(update=updates)
        asyncio.run(_pipeline(settings, dsn, opts, console, summary, workdir, split))
    summary.seconds = round(time.monotonic() - t0, 2)
    _print_summary(console, summary)
    if opts.json_path:
        opts.json_path.write_text(json.dumps(asdict(summary), indent=2) + "\n")
        console.print(f"summary written to {opts.json_path}")
    return summary
