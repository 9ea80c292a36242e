"""The optimizer service: consume restock events, consolidate, persist to PostgreSQL, publish plans;
and consume the demand actuals, scoring the forecasts and watching them for drift.

Per batch: decode (refused records go to the DLQ), consolidate (under the per-cycle supplier
budgets, warehouse capacity and supplier minimum order values when any is set:
optimizer.constraints), write restocks + new plan lines + plans (+ cuts and cycle usage) + the
batch's next offsets in ONE PostgreSQL transaction, publish the plans created, mark
them published (outbox), then commit the Kafka offsets. PostgreSQL is the source of truth for
consumer positions: on assignment the consumer seeks to the offsets stored there (to the start of
a partition it has none for), so the database and Kafka cannot disagree about what was planned.
Plan writes commit with `synchronous_commit = off`, so a PostgreSQL crash can lose the last
commits it acknowledged, offsets with them: every batch write first checks that the stored
offsets are not behind the batch (`BatchStart`); when they are, nothing is written and the
consumer goes back to the stored offsets and plans the lost records again. An idle optimizer
(and one whose write had to be retried) checks the stored positions of all its partitions.
Plans written but not yet published (a crash between commit and publish) are published on the
next start.

Demand events (`shelfcast.demand`) ride in the same batches: their actuals, forecast scores and
drift decisions commit in the same transaction as the plans and offsets
(optimizer/actuals.py); a `model_drift` alert waits in the same kind of outbox as a plan.
Planned promotions (`shop.promotions`) and the holiday calendar (`shop.calendar`) too: recorded
in the same transaction for retraining (optimizer/promotions.py, optimizer/holidays.py); a
malformed one is skipped and counted, as the stream worker, which reads the shop's topics,
dead-letters it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Self, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from forecasting.accuracy import DriftConfig, expected_coverage
from optimizer.actuals import AccuracyRow, ActualsBatch
from optimizer.consolidate import consolidate
from optimizer.constraints import CycleConstraints, LineCut
from optimizer.errors import OffsetsBehind, OptimizerError, StoreUnavailable
from optimizer.store import TRANSIENT_DB_ERRORS, BatchStart, PlanStore
from runtime.backoff import Backoff
from runtime.faults import fault_point
from runtime.kafka_config import client_kwargs
from runtime.settings import Settings
from schemas.codec import dead_letter, decode, encode
from schemas.errors import InvalidEvent
from schemas.events import (
    AlertEvent,
    DeadLetter,
    DemandEvent,
    HolidayEvent,
    PlanEvent,
    PromotionEvent,
    RestockEvent,
)
from schemas.keys import sku_key

__all__ = ["DB_RETRY", "OptimizerService", "ServiceCounters", "retry_transient", "run_service"]

_log = logging.getLogger(__name__)
T = TypeVar("T")


# The database retry schedule: 8 tries, 0.2 s doubling to at most 10 s, jittered so that
# restarted workers do not stampede a recovering PostgreSQL.
DB_RETRY = Backoff(base_delay_s=0.2, max_delay_s=10.0, max_attempts=8)

# How often an idle optimizer checks that PostgreSQL still holds the offsets it wrote (a crash
# can lose the last acknowledged commits while no batch is being written).
POSITION_CHECK_S = 5.0


async def retry_transient(
    operation: Callable[[], Awaitable[T]],
    policy: Backoff,
    *,
    what: str,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> T:
    """Run `operation`, retrying on TRANSIENT_DB_ERRORS; raise StoreUnavailable when spent."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return await operation()
        except TRANSIENT_DB_ERRORS as exc:
            if policy.exhausted(attempt):
                raise StoreUnavailable(
                    f"{what} failed {attempt} times, last error: {type(exc).__name__}: {exc}",
                    attempts=attempt,
                ) from exc
            delay = policy.delay_s(attempt)
            of = f"/{policy.max_attempts - 1}" if policy.max_attempts else ""
            _log.warning("%s failed (%s: %s); retry %d%s in %.2fs", what,
                         type(exc).__name__, exc, attempt, of, delay)  # fmt: skip
            if on_retry is not None:
                on_retry(attempt, exc)
            await asyncio.sleep(delay)


@dataclass
class ServiceCounters:
    """What the service has done since it was created."""

    restocks_in: int = 0
    plans_out: int = 0
    plan_lines_written: int = 0
    dlq: int = 0
    batches: int = 0
    db_retries: int = 0
    lines_cut: int = 0
    units_cut: int = 0
    demand_in: int = 0
    drift_alerts: int = 0
    promotions_in: int = 0
    promotions_refused: int = 0  # malformed: skipped (the stream worker dead-letters them)
    holidays_in: int = 0
    holidays_refused: int = 0  # malformed: skipped (the stream worker dead-letters them)
    rewinds: int = 0  # batches refused because PostgreSQL had lost acknowledged commits

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class _SeekToStoredOffsets(ConsumerRebalanceListener):  # type: ignore[misc]
    """On assignment, position each partition at the offset PostgreSQL says comes next.

    aiokafka logs and swallows a listener's exception; the consumer then starts from Kafka's
    committed offset, which is never ahead of PostgreSQL's (it is committed after it), so the
    worst case is reprocessing, which the store makes idempotent.
    """

    def __init__(self, service: OptimizerService, consumer: AIOKafkaConsumer) -> None:
        self._service = service
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        # Nothing to flush: every batch is committed to PostgreSQL before the next poll.
        return None

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        await self._service._seek_to_stored_offsets(self._consumer, assigned)


class OptimizerService:
    """Consumes `settings.topics.restock`, writes plans to PostgreSQL at `dsn`, publishes them.

    `await service.run(stop_event)` runs until the event is set; `run_until_idle(s)` stops once
    no record arrived for `s` seconds. Both start and stop the clients themselves.
    """

    def __init__(
        self,
        settings: Settings,
        dsn: str,
        *,
        max_records: int = 1000,
        poll_timeout_ms: int = 200,
        retry: Backoff = DB_RETRY,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.settings = settings
        self.group_id = f"{settings.app_id}-optimizer"
        self.counters = ServiceCounters()
        self._dsn = dsn
        self._max_records = max_records
        self._poll_timeout_ms = poll_timeout_ms
        self._retry = retry
        self._clock = clock
        self.constraints = CycleConstraints(
            supplier_budgets=settings.supplier_budgets,
            supplier_min_order_values=settings.supplier_min_order_values,
            location_capacity_units=settings.location_capacity_units,
            cycle=settings.constraint_cycle,
        )
        self.drift_config = DriftConfig()
        # the drift monitors' rolling scores after the last batch with actuals (for /metrics)
        self.accuracy: list[AccuracyRow] = []
        self._store: PlanStore | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        # Held while a batch is written: a rebalance reads the stored offsets only after the
        # in-flight batch committed, so the new position is never behind work already done.
        self._batch_lock = asyncio.Lock()
        # the position PostgreSQL holds for each assigned partition, as far as this process
        # knows (read on assignment, then what each batch wrote)
        self._written: dict[tuple[str, int], int] = {}
        self._checked_at = 0.0  # when the stored positions were last checked (loop time)

    # ------------------------------------------------------------------ lifecycle

    @property
    def store(self) -> PlanStore:
        if self._store is None:
            raise OptimizerError("the service is not started")
        return self._store

    async def start(self) -> None:
        """Connect to PostgreSQL (migrating it), start the producer, publish leftover plans,
        then join the consumer group. Idempotent."""
        if self._consumer is not None:
            return
        kafka = client_kwargs(self.settings)
        try:
            if self._store is None:
                self._store = await self._with_retry(
                    lambda: PlanStore.connect(self._dsn), what="connect to PostgreSQL"
                )
                if self.settings.migrate_on_start:
                    await self._with_retry(self._store.migrate, what="migrate PostgreSQL")
            if self._producer is None:
                producer = AIOKafkaProducer(**kafka, acks="all")
                await producer.start()
                self._producer = producer
            await self._publish_pending()
            await self._publish_pending_alerts()
            self.accuracy = await self._with_retry(self._store.accuracy, what="read accuracy")
            consumer = AIOKafkaConsumer(
                **kafka,
                group_id=self.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
                session_timeout_ms=int(self.settings.kafka_session_timeout_s * 1000),
                heartbeat_interval_ms=max(100, int(self.settings.kafka_session_timeout_s * 250)),
            )
            topics = self.settings.topics
            consumer.subscribe([topics.restock, topics.demand, topics.promotions,
                                topics.calendar],
                               listener=_SeekToStoredOffsets(self, consumer))
            await consumer.start()
            self._consumer = consumer
        except BaseException:
            await self.stop()
            raise
        _log.info("optimizer started: group %s on %s, %s, %s and %s", self.group_id,
                  self.settings.topics.restock, self.settings.topics.demand,
                  self.settings.topics.promotions, self.settings.topics.calendar)

    async def stop(self) -> None:
        """Leave the group and close every client. Safe to call twice."""
        consumer, producer, store = self._consumer, self._producer, self._store
        self._consumer = self._producer = self._store = None
        if consumer is not None:
            with contextlib.suppress(KafkaError, OSError):
                await consumer.stop()
        if producer is not None:
            with contextlib.suppress(KafkaError, OSError):
                await producer.stop()
        if store is not None:
            await store.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def run(self, stop: asyncio.Event | None = None) -> ServiceCounters:
        """Process batches until `stop` is set (forever when None); always stops the clients."""
        await self.start()
        try:
            while stop is None or not stop.is_set():
                await self.process_once()
        finally:
            await self.stop()
        return self.counters

    async def run_until_idle(
        self, idle_seconds: float, *, assignment_timeout_s: float = 60.0
    ) -> ServiceCounters:
        """Process batches until no record arrived for `idle_seconds` after partitions were
        assigned. Raises OptimizerError when no partition is assigned within the timeout."""
        await self.start()
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            last_activity: float | None = None
            while True:
                got = await self.process_once()
                now = loop.time()
                if self._consumer is not None and self._consumer.assignment():
                    if last_activity is None or got:
                        last_activity = now
                    elif now - last_activity >= idle_seconds:
                        break
                elif now - started > assignment_timeout_s:
                    raise OptimizerError(
                        f"no partition of {self.settings.topics.restock} assigned to group "
                        f"{self.group_id} within {assignment_timeout_s:.0f}s"
                    )
        finally:
            await self.stop()
        return self.counters

    # ------------------------------------------------------------------ one batch

    async def process_once(self) -> int:
        """Poll one batch and handle it end to end; return how many records it held."""
        consumer = self._started_consumer()
        batch = await consumer.getmany(
            timeout_ms=self._poll_timeout_ms, max_records=self._max_records
        )
        records = sum(len(rs) for rs in batch.values())
        if records:
            await self.handle_batch(batch)
        elif (self._written and asyncio.get_running_loop().time() - self._checked_at
              >= POSITION_CHECK_S):
            await self._check_positions()
        return records

    async def handle_batch(self, batch: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> None:
        """Decode, dead-letter, consolidate, persist (with offsets), publish, commit."""
        restocks: list[RestockEvent] = []
        demand: list[DemandEvent] = []
        demand_partitions: list[int] = []  # of each demand event, in each partition's order
        promotions: list[PromotionEvent] = []
        holidays: list[HolidayEvent] = []
        refused: list[DeadLetter] = []
        next_offsets: dict[tuple[str, int], int] = {}
        first_offsets: dict[tuple[str, int], int] = {}
        demand_topic, max_bytes = self.settings.topics.demand, self.settings.max_payload_bytes
        promotions_topic = self.settings.topics.promotions
        calendar_topic = self.settings.topics.calendar
        for tp, records in batch.items():
            if not records:
                continue
            for record in records:
                try:
                    if record.topic == demand_topic:
                        demand.append(decode(DemandEvent, record.value, max_bytes=max_bytes))
                        demand_partitions.append(record.partition)
                    elif record.topic == promotions_topic:
                        promotions.append(decode(PromotionEvent, record.value,
                                                 max_bytes=max_bytes))
                    elif record.topic == calendar_topic:
                        holidays.append(decode(HolidayEvent, record.value, max_bytes=max_bytes))
                    else:
                        restocks.append(decode(RestockEvent, record.value, max_bytes=max_bytes))
                except InvalidEvent as exc:
                    if record.topic in (promotions_topic, calendar_topic):
                        # the shop's input topics: the stream worker dead-letters it (one
                        # dead letter per bad record); recorded here it would be two
                        if record.topic == promotions_topic:
                            self.counters.promotions_refused += 1
                        else:
                            self.counters.holidays_refused += 1
                        _log.warning("skipped %s[%d]@%d (%s): %s", record.topic,
                                     record.partition, record.offset, exc.kind, exc)
                        continue
                    refused.append(
                        dead_letter(
                            topic=record.topic, partition=record.partition, offset=record.offset,
                            key=record.key, raw=record.value, error=exc,
                        )
                    )  # fmt: skip
            next_offsets[(tp.topic, tp.partition)] = records[-1].offset + 1
            first_offsets[(tp.topic, tp.partition)] = records[0].offset

        # Dead letters go out before the offsets move past them: a crash can repeat them,
        # never lose them.
        await self._send_dead_letters(refused)

        decided_at = self._clock()
        actuals = ActualsBatch(
            demand, decided_at, self.drift_config, self._validation_coverage,
            partitions=demand_partitions, topic=demand_topic,
            topic_partitions=self._partition_count(demand_topic)) if demand else None
        store = self.store
        start = BatchStart(first_offsets, frozenset(self._written))
        retried = False

        def note_retry(_attempt: int, _exc: BaseException) -> None:
            nonlocal retried
            retried = True
            self.counters.db_retries += 1

        async with self._batch_lock:
            try:
                if self.constraints.active:
                    created, cuts = await self._with_retry(
                        lambda: store.write_constrained_batch(
                            restocks, next_offsets, self.group_id, self.constraints,
                            decided_at, actuals, promotions, holidays, start=start),
                        what="write batch to PostgreSQL",
                        on_retry=note_retry,
                    )
                    self._note_cuts(cuts)
                else:
                    plans = consolidate(restocks, decided_at)
                    created = await self._with_retry(
                        lambda: store.write_batch(restocks, plans, next_offsets, self.group_id,
                                                  actuals, promotions, holidays, start=start),
                        what="write batch to PostgreSQL",
                        on_retry=note_retry,
                    )
            except OffsetsBehind as exc:
                await self._rewind(exc, first_offsets)
                return
            self._written.update(next_offsets)
            self.counters.restocks_in += len(restocks)
            self.counters.demand_in += len(demand)
            self.counters.promotions_in += len(promotions)
            self.counters.holidays_in += len(holidays)
            self.counters.plan_lines_written += sum(len(p.lines) for p in created)
            fault_point("optimizer.after_plan_write", when=created)
            await self._publish(created)
            if retried:
                # A failed attempt may have committed before the connection dropped; its plans
                # are then only in the outbox.
                await self._publish_pending()
            if actuals is not None:
                await self._publish_pending_alerts()
                self.accuracy = await self._with_retry(store.accuracy, what="read accuracy")
        fault_point("optimizer.before_kafka_commit", when=created)
        await self._commit_kafka(next_offsets)
        self.counters.batches += 1
        if retried:  # PostgreSQL was away: did it keep what the other partitions wrote?
            await self._check_positions()

    # ------------------------------------------------------------------ internals

    def _partition_count(self, topic: str) -> int | None:
        """How many partitions `topic` has, from the consumer's metadata (None: unknown)."""
        consumer = self._consumer
        partitions = consumer.partitions_for_topic(topic) if consumer is not None else None
        return len(partitions) if partitions else None

    async def _rewind(self, behind: OffsetsBehind,
                      refused: Mapping[tuple[str, int], int] | None = None) -> None:
        """Put the partitions where PostgreSQL is behind back to the offset it holds (to the
        start when it holds none), and those of a `refused` batch back to its first record.
        Records fetched past those are read again."""
        consumer = self._started_consumer()
        self.counters.rewinds += 1
        _log.warning("%s; going back to the stored offsets (lost commits after a PostgreSQL "
                     "crash?): their records are planned again", behind)
        for (topic, partition), first in (refused or {}).items():
            if (topic, partition) not in behind.stored:
                consumer.seek(TopicPartition(topic, partition), first)
        for (topic, partition), at in behind.stored.items():
            tp = TopicPartition(topic, partition)
            if at is not None:
                self._written[(topic, partition)] = at
                consumer.seek(tp, at)
            else:  # from the start again, as if nothing had been stored
                self._written.pop((topic, partition), None)
                await consumer.seek_to_beginning(tp)

    async def _check_positions(self) -> None:
        """Send the assigned partitions whose position PostgreSQL no longer holds back to what
        it holds. One try: a database still away is tried again at the next check."""
        consumer = self._started_consumer()
        self._checked_at = asyncio.get_running_loop().time()
        assigned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
        mine = {tp: at for tp, at in self._written.items() if tp in assigned}
        if not mine:
            return
        store = self.store
        async with self._batch_lock:
            try:
                stored = await store.committed_offsets(self.group_id,
                                                       sorted({t for t, _ in mine}))
            except TRANSIENT_DB_ERRORS as exc:
                _log.debug("position check skipped (%s: %s)", type(exc).__name__, exc)
                return
            behind: dict[tuple[str, int], int | None] = {
                tp: stored.get(tp) for tp, at in mine.items() if stored.get(tp, -1) < at}
            if behind:
                shown = ", ".join(f"{t}[{p}] stored {stored.get((t, p), 'nothing')}, written "
                                  f"{mine[(t, p)]}" for t, p in sorted(behind))
                await self._rewind(OffsetsBehind(f"PostgreSQL lost positions: {shown}",
                                                 stored=behind))

    def _note_cuts(self, cuts: Sequence[LineCut]) -> None:
        self.counters.lines_cut += len(cuts)
        self.counters.units_cut += sum(c.requested - c.allocated for c in cuts)
        if cuts:
            reasons = Counter(c.reason for c in cuts)
            _log.info("cycle constraints cut %d restock(s) (%s); see table allocation_cuts",
                      len(cuts), ", ".join(f"{n} by {r}" for r, n in sorted(reasons.items())))

    def _started_consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise OptimizerError("the service is not started")
        return self._consumer

    def _started_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise OptimizerError("the service is not started")
        return self._producer

    async def _with_retry(
        self,
        operation: Callable[[], Awaitable[T]],
        *,
        what: str,
        on_retry: Callable[[int, BaseException], None] | None = None,
    ) -> T:
        return await retry_transient(operation, self._retry, what=what, on_retry=on_retry)

    async def _seek_to_stored_offsets(
        self, consumer: AIOKafkaConsumer, assigned: Sequence[TopicPartition]
    ) -> None:
        if not assigned:
            return
        # Paused partitions return no records: nothing is handed out from Kafka's committed
        # position while PostgreSQL's is being read.
        consumer.pause(*assigned)
        try:
            store = self.store
            topics = sorted({tp.topic for tp in assigned})
            async with self._batch_lock:
                stored = await self._with_retry(
                    lambda: store.committed_offsets(self.group_id, topics),
                    what="read stored offsets",
                )
            for tp in assigned:
                offset = stored.get((tp.topic, tp.partition))
                if offset is not None:
                    self._written[(tp.topic, tp.partition)] = offset
                    consumer.seek(tp, offset)
                    _log.info("%s[%d]: resuming at stored offset %d", tp.topic, tp.partition,
                              offset)  # fmt: skip
                else:  # nothing stored: nothing planned (Kafka's commit may be ahead of it)
                    self._written.pop((tp.topic, tp.partition), None)
                    await consumer.seek_to_beginning(tp)
        finally:
            consumer.resume(*assigned)

    async def _send_dead_letters(self, refused: Sequence[DeadLetter]) -> None:
        if not refused:
            return
        producer = self._started_producer()
        sends = [
            await producer.send(
                self.settings.topics.dlq,
                key=dl.key.encode() if dl.key is not None else None,
                value=encode(dl),
            )
            for dl in refused
        ]
        await asyncio.gather(*sends)
        self.counters.dlq += len(refused)
        for dl in refused:
            _log.warning("refused %s[%d]@%d (%s): %s", dl.source_topic, dl.partition, dl.offset,
                         dl.error_kind, dl.error)  # fmt: skip

    async def _publish(self, plans: Sequence[PlanEvent]) -> None:
        if not plans:
            return
        producer = self._started_producer()
        sends = [
            await producer.send(
                self.settings.topics.plans, key=plan.supplier.encode(), value=encode(plan)
            )
            for plan in plans
        ]
        await asyncio.gather(*sends)
        store = self.store
        ids = [plan.plan_id for plan in plans]
        await self._with_retry(lambda: store.mark_published(ids), what="mark plans published")
        self.counters.plans_out += len(plans)

    async def _publish_pending(self) -> None:
        store = self.store
        while pending := await self._with_retry(
            store.unpublished_plans, what="read unpublished plans"
        ):
            _log.info("publishing %d plan(s) left unpublished", len(pending))
            await self._publish(pending)

    async def _publish_pending_alerts(self) -> None:
        """Publish the `model_drift` alerts in the outbox, then mark them published."""
        store = self.store
        while pending := await self._with_retry(
            store.unpublished_drift_alerts, what="read unpublished drift alerts"
        ):
            await self._publish_alerts(pending)

    async def _publish_alerts(self, alerts: Sequence[AlertEvent]) -> None:
        producer = self._started_producer()
        sends = [
            await producer.send(self.settings.topics.alerts,
                                key=sku_key(a.sku, a.location).encode(), value=encode(a))
            for a in alerts
        ]
        await asyncio.gather(*sends)
        store = self.store
        ids = [a.alert_id for a in alerts]
        await self._with_retry(lambda: store.mark_alerts_published(ids),
                               what="mark drift alerts published")
        self.counters.drift_alerts += len(alerts)
        for a in alerts:
            _log.warning("model_drift: %s", a.message)

    def _validation_coverage(self, model_version: str) -> float | None:
        """The 80%-interval coverage the served model's validation measured, when the model
        directory (SHELFCAST_MODEL_PATH, if the optimizer sees it) holds that version."""
        path = self.settings.model_path
        if path is None:
            return None
        try:
            meta = json.loads((path / "metadata.json").read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("model_version") != model_version:
            return None
        return expected_coverage(meta)

    async def _commit_kafka(self, next_offsets: Mapping[tuple[str, int], int]) -> None:
        # PostgreSQL already holds these offsets; Kafka's copy serves lag monitoring, so a
        # commit refused during a rebalance is not an error.
        consumer = self._started_consumer()
        try:
            await consumer.commit({TopicPartition(t, p): o for (t, p), o in next_offsets.items()})
        except KafkaError as exc:
            _log.info("Kafka offset commit skipped (%s); PostgreSQL holds the offsets", exc)


async def run_service(settings: Settings, dsn: str) -> ServiceCounters:
    """Run the optimizer until SIGTERM/SIGINT (the `shelfcast optimizer` command); serves
    `/metrics` on `settings.optimizer_web_port` (else `web_port`) when set."""
    import errno
    import signal

    from optimizer.metrics import serve_optimizer_metrics
    from runtime.errors import ConfigError

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    service = OptimizerService(settings, dsn)
    port = settings.optimizer_web_port if settings.optimizer_web_port is not None \
        else settings.web_port
    try:
        stop_metrics = serve_optimizer_metrics(service, port) if port is not None else None
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        raise ConfigError(
            f"port {port} is already in use (a worker on this host?): set "
            "SHELFCAST_OPTIMIZER_WEB_PORT to a free port for the optimizer") from None
    try:
        return await service.run(stop)
    finally:
        if stop_metrics is not None:
            stop_metrics()
