"""The batch engine: a consumer-group worker that runs the BatchProcessor on whole fetches.

Faust hands records to an agent one event at a time and writes its table's changelog one
record per key write; this engine keeps the same contract with batch-sized steps:

1. `getmany()` up to `take_max` records from the co-partitioned inputs (orders, stock,
   catalog; a range assignor gives a member the same partition numbers on every topic);
2. the pure `BatchProcessor` applies each input partition's records to that partition's
   table in the in-memory `StateStore` (state follows the source partition, whatever
   partitioner the shop's producer used: a key seen on two partitions is two states);
   the partitions run as concurrent tasks whose forecasts of a round share one forward pass;
3. outputs (DLQ, forecasts, restocks, alerts) are sent as per-partition record batches; their
   acknowledgements are awaited while the next batch is processed (before its outputs go);
4. after each batch the state is flushed: one changelog record per key the batch wrote, to
   the changelog partition of its input partition, sent once its outputs are acknowledged,
   then its input offsets are committed; this runs behind the next batch's processing
   (awaited before that batch's own flush).
At-least-once: a crash before the commit replays the batches since the last flush; event ids
are deduped in the state and restock ids are deterministic, so a replay cannot double an
order, and since outputs are acknowledged before the state that records them, none is lost.

On assignment the state of the new partitions is read back from the changelog before any of
their records is processed; on revocation the batch in flight finishes and commits first,
then their state is dropped.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from pydantic import BaseModel

from runtime.backoff import Backoff
from runtime.faults import fault_point
from runtime.settings import Settings
from schemas import sku_key
from streams.changelog import changelog_topic, encode_state
from streams.dead_letters import (
    RECORD_REFUSED,
    describe,
    fitting_payload_bytes,
    reduced_dead_letter,
)
from streams.engine_clients import EngineClients, EngineConsumer, EngineProducer, KafkaClients
from streams.outputs import BatchOutputs, event_json
from streams.processor import BatchProcessor, InputRecord
from streams.store import StateStore, key_partition

__all__ = ["READY_LINE", "SEND_RETRY", "BatchEngine", "EngineMonitor"]

log = logging.getLogger(__name__)

READY_LINE = "shelfcast batch engine: ready"  # `WorkerProcess.wait_ready` waits for this

_Groups = dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]]  # (topic, partition)

# While the broker is unreachable: 0.5 s doubling to 10 s, no jitter (one worker's own batch
# is held; nothing to spread out), forever (the batch must not be dropped).
SEND_RETRY = Backoff(base_delay_s=0.5, max_delay_s=10.0, max_attempts=0, jitter=0.0)


@dataclass
class EngineMonitor:
    """Counts kept per batch (never per event): what a metrics page reads at scrape time.

    Attribute names follow Faust's `Monitor`, so a collector written for one reads the other.
    """

    messages_received_by_topic: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    messages_sent_by_topic: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    tp_end_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    tp_committed_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    tp_read_offsets: dict[TopicPartition, int] = field(default_factory=dict)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, engine: BatchEngine) -> None:
        self._engine = engine

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._engine.revoke(list(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self._engine.assign(list(assigned))


class BatchEngine:
    """One worker of the consumer group `settings.app_id`, running `processor` on batches.

    `clients` is its Kafka edge (default: the real aiokafka clients, `KafkaClients`).
    `served`: set once the processor's forecaster serves (the worker loads its model while
    the engine joins and recovers); `ready` waits for it as well as for the first recovery.
    """

    def __init__(self, settings: Settings, processor: BatchProcessor,
                 counters: Any | None = None, *, clients: EngineClients | None = None,
                 served: asyncio.Event | None = None) -> None:
        self.settings = settings
        self._served = served
        self._saying_ready: asyncio.Task[None] | None = None
        self.processor = processor
        self._clients = clients or KafkaClients(settings)
        self.counters = counters
        self.monitor = EngineMonitor()
        self.ready = asyncio.Event()
        self.store: StateStore | None = None
        self._lock = asyncio.Lock()  # a batch, a revocation and a recovery never interleave
        self._recovered: set[int] = set()  # partition numbers whose state is loaded
        self._consumer: EngineConsumer | None = None
        self._producer: EngineProducer | None = None
        self._topics = settings.topics
        self._changelog = changelog_topic(settings)
        self._out_partitions: dict[str, int] = {}
        self._out_partition_of: dict[tuple[str, int], int] = {}  # (key, partitions) -> one
        self._commit_task: asyncio.Future[None] | None = None  # the last state flush
        self._acks: asyncio.Future[None] | None = None  # the last batch's outputs, acknowledged
        self._pending_offsets: dict[TopicPartition, int] = {}  # processed, not yet committed
        self.degraded = False  # True while sends fail (broker unreachable); for /readyz, logs

    # --- lifecycle -------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then finish the batch in flight, commit, leave the group."""
        clients = self._clients
        self._producer = producer = clients.producer()
        await producer.start()
        try:
            parts = len(await producer.partitions_for(self._topics.orders))
            for topic in self._topics.outputs():
                self._out_partitions[topic] = len(await producer.partitions_for(topic))
            await clients.ensure_changelog(parts)
            await self._size_dead_letters()
            self.store = StateStore(parts)
            self._consumer = consumer = clients.consumer()
            consumer.subscribe(topics=self._topics.inputs(), listener=_Rebalance(self))
            await consumer.start()
            try:
                await self._loop(stop)
                async with self._lock:
                    await self.flush_commits()
            finally:
                await consumer.stop()  # leaves the group: the partitions move at once
        finally:
            await producer.stop()

    async def _loop(self, stop: asyncio.Event) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        within_ms = max(1, int(self.settings.take_within_ms))
        take_max = self.settings.take_max
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                fetch = asyncio.ensure_future(
                    consumer.getmany(timeout_ms=within_ms, max_records=take_max))
                await asyncio.wait({fetch, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not fetch.done():
                    fetch.cancel()
                    break
                batch = fetch.result()
                if batch:
                    async with self._lock:
                        await self._process(batch)
                elif self._pending_offsets:  # quiet: commit what was processed, now
                    async with self._lock:
                        self._flush_if_idle()
        finally:
            stopping.cancel()

    # --- rebalance -------------------------------------------------------------------------
    async def revoke(self, revoked: list[TopicPartition]) -> None:
        """Wait for the batch in flight (it commits), then forget the revoked partitions' state.

        Dropped even when the next generation hands the partition back: the group may have
        moved on without this member meanwhile (a missed session), so only the changelog
        knows the state for sure.
        """
        async with self._lock:
            await self.flush_commits()
            gone = {tp.partition for tp in revoked}
            dropped = self.store.drop_partitions(gone) if self.store else 0
            self._recovered -= gone
            log.info("revoked partitions %s (dropped %d keys)", sorted(gone), dropped)

    async def assign(self, assigned: list[TopicPartition]) -> None:
        async with self._lock:
            assert self.store is not None
            parts = {tp.partition for tp in assigned} - self._recovered
            if parts:
                await self._clients.recover(parts, self.store)
                self._recovered |= parts
            log.info("assigned partitions %s", sorted({tp.partition for tp in assigned}))
        if self.ready.is_set() or self._saying_ready is not None:
            return
        if self._served is None or self._served.is_set():
            self._say_ready()
        else:  # not inside the rebalance callback: the model may take seconds more
            self._saying_ready = asyncio.create_task(self._ready_when_served())

    async def _ready_when_served(self) -> None:
        assert self._served is not None
        await self._served.wait()
        self._say_ready()

    def _say_ready(self) -> None:
        self.ready.set()
        log.info("%s (group %s)", READY_LINE, self.settings.app_id)

    # --- one batch -------------------------------------------------------------------------
    async def _process(self, batch: dict[TopicPartition, list[Any]]) -> None:
        assert self._consumer is not None and self.store is not None
        consumer = self._consumer
        assigned = consumer.assignment()
        # per input partition (orders, stock and catalog are co-partitioned): its records go
        # to its own table, whose changelog partition is that input partition
        records: dict[int, list[InputRecord]] = {}
        offsets: dict[TopicPartition, int] = {}
        mon = self.monitor
        for tp, msgs in batch.items():
            if not msgs:
                continue
            if tp not in assigned:
                continue  # revoked while this fetch waited for the lock
            if tp.partition not in self._recovered:
                consumer.seek(tp, msgs[0].offset)  # not ours to process yet: read it again
                continue
            # aiokafka's records carry topic/partition/offset/key/value
            records.setdefault(tp.partition, []).extend(msgs)
            offsets[tp] = msgs[-1].offset + 1
            mon.messages_received_by_topic[tp.topic] += len(msgs)
            mon.tp_read_offsets[tp] = msgs[-1].offset
        if not records:
            return
        out = BatchOutputs()
        await self._process_partitions(records, out)
        fault_point("worker.mid_forecast", when=out.forecast_count)
        groups = self._output_groups(out)
        # The previous batch's outputs must be acknowledged before this batch's go out (per
        # key order, and a batch held by a broker outage holds the next), but its acks were
        # awaited while this batch was being processed.
        if self._acks is not None:
            await self._acks
        self._acks = asyncio.ensure_future(self._send_outputs(groups)) if groups else None
        self._pending_offsets.update(offsets)
        # One flush per batch, behind the next batch's processing: the previous flush (its
        # acks, changelog, commit) ran while this batch was processed and is awaited only now.
        # So the state is never more than one batch ahead of the committed offsets, and a
        # crash before a commit replays one batch against a state that has seen it (its
        # events are duplicates; one more than the allowed lateness behind its SKU's clock by
        # then is dead-lettered as late, since its id is no longer kept: the window must stay
        # small).
        if self._commit_task is not None and not self._commit_task.done():
            await self._commit_task
        self._flush_state()
        if self.counters is not None:
            self.counters.add(sum(map(len, records.values())), out)

    async def _process_partitions(self, records: dict[int, list[InputRecord]],
                                  out: BatchOutputs) -> None:
        """Each input partition's records through the processor, the partitions as
        concurrent tasks: their forecaster calls of a round meet in the inferencer (on the
        loop: one forward pass for all of them). Each partition's table is its own and its
        rounds run in order; the shared `out` is only written between awaits."""
        assert self.store is not None
        if len(records) == 1:
            [(partition, part_records)] = records.items()
            await self.processor.process(part_records, self.store.partition(partition), out=out)
            return
        tasks = [asyncio.ensure_future(self.processor.process(
            part_records, self.store.partition(partition), out=out))
            for partition, part_records in records.items()]
        try:
            await asyncio.gather(*tasks)
        except BaseException:  # one failed (or we were cancelled): stop the others, then
            for task in tasks:  # raise the error itself, as a sequential loop would
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def _flush_if_idle(self) -> None:
        """Flush unless the previous flush is still on its way (a slow or unreachable broker):
        then its keys and offsets wait for the next one, and flushes never pile up."""
        if self._commit_task is None or self._commit_task.done():
            self._flush_state()

    def _flush_state(self) -> None:
        """Changelog every key written since the last flush, then commit the offsets covered.

        The state is encoded now (as of the last processed batch); sending it waits for the
        outputs of that batch to be acknowledged (outputs first, then the state that remembers
        them, then the input offsets), and runs behind the next batches, chained so flushes
        stay in order. A key written by several batches since the last flush is written once.
        """
        changelog = self._changelog_groups()
        offsets, self._pending_offsets = self._pending_offsets, {}
        self._commit_task = asyncio.ensure_future(
            self._commit(changelog, offsets, self._acks, self._commit_task))

    async def _commit(self, changelog: _Groups, offsets: dict[TopicPartition, int],
                      acks: asyncio.Future[None] | None,
                      previous: asyncio.Future[None] | None) -> None:
        assert self._consumer is not None
        if previous is not None:
            await previous
        if acks is not None:
            await acks
        if changelog:
            await self._send_grouped(changelog)
        if not offsets:
            return
        fault_point("worker.before_commit")  # outputs and changelog acknowledged
        try:
            await self._consumer.commit(offsets)
            self.monitor.tp_committed_offsets.update(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # the group moved on (rebalance): the new owner replays from its committed offset
            log.warning("offset commit failed, batch will be replayed: %s", exc)

    async def flush_commits(self) -> None:
        """Flush the state and commit the offsets of every batch processed so far; wait."""
        if self._pending_offsets or (self.store is not None and self.store.has_dirty()):
            self._flush_state()
        if self._commit_task is not None:
            await self._commit_task

    async def _send_grouped(self, groups: _Groups) -> None:
        """Send, retrying with capped exponential backoff while the broker is unreachable.

        The batch is held meanwhile and nothing new is fetched (back-pressure: memory stays
        bounded); its offsets are not committed, so a crash during the outage replays it.
        A retry resends the record batches not yet acknowledged: restock and alert ids are
        deterministic and the changelog keeps the last value per key, so a resend of a
        record whose acknowledgement was lost is harmless. A record the broker refuses for
        what it is (`RECORD_REFUSED`: too large, bad topic) is never retried as it was: it
        is dead-lettered in reduced form and the batch moves on.
        """
        failures = 0
        pending = list(groups.items())
        held = False
        while True:
            try:
                await self._send_grouped_once(pending)
            except KafkaError as exc:
                failures += 1
                delay_s = SEND_RETRY.delay_s(failures)
                held = self.degraded = True
                log.warning("send failed (%s: %s); batch held, retrying in %.1f s",
                            type(exc).__name__, exc, delay_s)
                await asyncio.sleep(delay_s)
                continue
            if held:  # only a sender that saw the outage says it is over
                self.degraded = False
                log.info("broker reachable again; sends resumed")
            return

    async def _send_grouped_once(
            self, pending: list[tuple[tuple[str, int], list[tuple[bytes | None, bytes | None]]]]
    ) -> None:
        """Send (key, value) lists as record batches per topic partition; await every ack.

        `pending` is left holding what is still to send: the record batches that failed
        with a retriable error (then that error is raised), or none.
        """
        assert self._producer is not None
        producer = self._producer
        sent: list[tuple[tuple[str, int], list[tuple[bytes | None, bytes | None]],
                         asyncio.Future[Any]]] = []
        now_ms = int(time.time() * 1000)
        for (topic, partition), items in pending:
            builder = producer.create_batch()
            start = 0
            for i, (key, value) in enumerate(items):
                if builder.append(key=key, value=value, timestamp=now_ms) is None:
                    sent.append(((topic, partition), items[start:i],
                                 await producer.send_batch(builder, topic, partition=partition)))
                    start = i
                    builder = producer.create_batch()
                    builder.append(key=key, value=value, timestamp=now_ms)  # a first one fits
            if builder.record_count():
                sent.append(((topic, partition), items[start:],
                             await producer.send_batch(builder, topic, partition=partition)))
        results = await asyncio.gather(*(f for _, _, f in sent), return_exceptions=True)
        retry: list[tuple[tuple[str, int], list[tuple[bytes | None, bytes | None]]]] = []
        refused: list[tuple[tuple[str, int], list[tuple[bytes | None, bytes | None]]]] = []
        failure: BaseException | None = None
        for (tp, items, _), result in zip(sent, results, strict=True):
            if isinstance(result, RECORD_REFUSED):
                refused.append((tp, items))
            elif isinstance(result, BaseException):
                retry.append((tp, items))
                failure = result
            else:
                self.monitor.messages_sent_by_topic[tp[0]] += len(items)
        pending[:] = retry + refused
        while refused:  # record by record: which of the batch the broker refuses
            tp, items = refused[0]
            await self._send_singly(tp, items)
            refused.pop(0)
            pending.pop(len(retry))
        if failure is not None:
            raise failure

    async def _send_singly(self, tp: tuple[str, int],
                           items: list[tuple[bytes | None, bytes | None]]) -> None:
        """Send each record of a refused record batch alone; dead-letter in reduced form each
        one the broker refuses again (a retriable error propagates: the caller retries)."""
        topic, partition = tp
        for key, value in items:
            try:
                await self._send_one(topic, partition, key, value)
                self.monitor.messages_sent_by_topic[topic] += 1
                continue
            except RECORD_REFUSED as exc:
                error = exc
            where = describe(topic, partition, value, self._topics.dlq)
            dead = reduced_dead_letter(topic, partition, key, value, error, self._topics.dlq)
            dead_key = dead.key.encode() if dead.key is not None else None
            dead_partition = self._dlq_partition(dead.key)
            dead_value = event_json(dead)
            try:
                await self._send_one(self._topics.dlq, dead_partition, dead_key, dead_value)
            except RECORD_REFUSED as again:
                log.error("record refused by the broker (%s: %s): %s, %d bytes, on %s "
                          "partition %d; its reduced dead letter was refused too (%s): dropped",
                          type(error).__name__, error, where, len(value or b""), topic,
                          partition, type(again).__name__)
                continue
            self.monitor.messages_sent_by_topic[self._topics.dlq] += 1
            log.error("record refused by the broker (%s: %s): %s, %d bytes, on %s partition "
                      "%d; dead-lettered in reduced form (payload cut to %d of %d bytes, "
                      "sha256 %s) and the batch moved on", type(error).__name__, error, where,
                      len(value or b""), topic, partition,
                      len(base64.b64decode(dead.raw_payload_b64)),
                      dead.payload_bytes if dead.payload_bytes is not None
                      else len(value or b""), dead.payload_sha256 or "-")

    async def _send_one(self, topic: str, partition: int, key: bytes | None,
                        value: bytes | None) -> None:
        assert self._producer is not None
        builder = self._producer.create_batch()
        builder.append(key=key, value=value, timestamp=int(time.time() * 1000))
        await (await self._producer.send_batch(builder, topic, partition=partition))

    def _dlq_partition(self, key: str | None) -> int:
        """The DLQ partition of a dead letter keyed `key` (as `_output_groups` picks it)."""
        assert self.store is not None
        n = self._out_partitions.get(self._topics.dlq, self.store.partitions)
        return 0 if key is None else self._out_partition(key, n)

    def _out_partition(self, key: str, partitions: int) -> int:
        """The partition of an output keyed `key` among `partitions`: murmur2, as a Java
        producer would place it (pure Python, so hashed once per key)."""
        partition = self._out_partition_of.get((key, partitions), -1)
        if partition < 0:
            partition = self._out_partition_of[(key, partitions)] = key_partition(
                key.encode(), partitions)
        return partition

    async def _size_dead_letters(self) -> None:
        """Cut dead letters' payloads to what the DLQ topic really has room for."""
        wanted = self.settings.dlq_payload_bytes
        limit = await self._clients.topic_max_message_bytes(self._topics.dlq)
        fit = wanted if limit is None else fitting_payload_bytes(limit, wanted)
        self.processor.dlq_payload_bytes = fit
        if fit < wanted:
            log.warning("DLQ topic %s takes records of at most %d bytes: dead letters keep "
                        "the first %d bytes of a payload (SHELFCAST_DLQ_PAYLOAD_BYTES=%d), "
                        "with its length and SHA-256", self._topics.dlq, limit, fit, wanted)
        else:
            log.info("dead letters keep up to %d bytes of a payload (DLQ max.message.bytes %s)",
                     fit, limit if limit is not None else "unknown")

    def _output_groups(self, out: BatchOutputs) -> _Groups:
        """A batch's outputs as (key, JSON) lists per (topic, partition)."""
        assert self.store is not None
        t = self._topics
        groups: _Groups = defaultdict(list)
        default_n = self.store.partitions
        out_partition = self._out_partition

        def add(topic: str, key: str | None, value: bytes) -> None:
            n = self._out_partitions.get(topic, default_n)
            partition = 0 if key is None else out_partition(key, n)
            groups[(topic, partition)].append(
                (key.encode() if key is not None else None, value))

        for dead in out.dead_letters:
            add(t.dlq, _event_key(dead), event_json(dead))
        for key, value in out.forecast_payloads():
            add(t.forecasts, key, value)
        for event in out.restocks:
            add(t.restock, _event_key(event), event_json(event))
        for key, value in out.alert_payloads():
            add(t.alerts, key, value)
        for key, value in out.demand_payloads():
            add(t.demand, key, value)
        return groups

    async def _send_outputs(self, groups: _Groups) -> None:
        await self._send_grouped(groups)
        fault_point("worker.mid_batch")  # outputs acknowledged, their state not yet written

    def _changelog_groups(self) -> _Groups:
        assert self.store is not None
        groups: _Groups = defaultdict(list)
        for key, partition, value in self.store.take_dirty():
            groups[(self._changelog, partition)].append((key.encode(), encode_state(value)))
        return groups


def _event_key(event: BaseModel) -> str | None:
    """`sku@location` for per-SKU events, the source key for dead letters."""
    sku = getattr(event, "sku", None)
    if sku is not None:
        return sku_key(sku, getattr(event, "location", ""))
    key = getattr(event, "key", None)
    return key if isinstance(key, str) else None
