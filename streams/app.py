"""The Faust engine (the alternative to the default batch engine, streams/engine.py): the Faust
app, its input topics, the SKU state table and the batched ingest agent.

The table holds live `SkuState` objects, changelogged and recovered through the batch
engine's record codec (`streams.changelog`: msgpack behind a format byte, the forecaster's
durable state as raw bytes), so both engines keep the same state, resumed the same way.
A batch goes out in the batch engine's order: its outputs acknowledged, then its states
changelogged (acknowledged), then its input offsets committed (`_BatchCommitter`; Faust's
periodic commit runs as well), so a worker killed anywhere resumes to the forecasts of one that
never stopped (tests/integration/test_faust_lstm_recovery.py). A restarted worker's recovery
hands no input record over before the input partitions are back at their committed offsets
(`_SeekFirstRecovery`).

Faust internals this module leans on, which is why faust-streaming is pinned to 0.15.x (each
is exercised by tests/integration/test_faust_lstm_recovery.py and
tests/unit/test_streams_faust_serving.py, so an upgrade that changes one fails there, not in
production):
- `Producer._ensure_producer()`: the started aiokafka producer, for record-batch sends of
  outputs and changelog records (Faust's public send path is per record);
- `Consumer._commit_offsets(offsets)`: the explicit-offsets commit (`_BatchCommitter`);
- `TableManager.recovery` / `Recovery.on_recovery_completed`: where the flow is stopped before
  the seek to the committed offsets (`_SeekFirstRecovery`);
- `Table.send_changelog` and the table's changelog serializers (`_SourcePartitionTable`)."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import faust
from faust.serializers import codecs
from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.types import EventT

from runtime.faults import fault_point
from runtime.kafka_config import bootstrap_servers, faust_credentials
from runtime.settings import Settings
from schemas import sku_key
from streams.changelog import FAUST_TABLE, decode_sku_state, encode_state
from streams.counters import StreamCounters
from streams.holiday_calendar import HolidayCalendar
from streams.metrics import WorkerMetrics
from streams.outputs import BatchOutputs, event_json
from streams.processor import BatchProcessor, InputRecord, PredictFn, ProcessorConfig
from streams.store import key_partition
from streams.web import install_web

__all__ = ["StreamCounters", "create_app"]

log = logging.getLogger(__name__)


class StateCodec(codecs.Codec):
    """Faust codec of the SKU state table: the changelog record codec of streams.changelog."""

    def _dumps(self, obj: Any) -> bytes:
        raw = encode_state(obj)
        assert raw is not None, "a None value is a Faust delete, never encoded"
        return raw

    def _loads(self, s: bytes) -> Any:
        return decode_sku_state(s)


STATE_CODEC = "shelfcast_state"
codecs.register(STATE_CODEC, StateCodec())


class _SourcePartitionTable(faust.Table):  # type: ignore[misc]
    """A Faust table whose changelog records go to the partition of the input records being
    applied (`source_partition`, set per partition of a batch), and whose changelog sends can
    be awaited (`changelog_acked`).

    Faust's own partition choices do not fit: the default takes "the current event", wrong for
    a batch that spans partitions; `use_partitioner=True` hashes the key (murmur2), which for a
    shop whose producer used another partitioner (librdkafka's CRC32, a partition picked by
    hand) puts the state where the input partition's next owner never reads it.
    """

    source_partition: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The serializers the table hands its changelog topic, which `app.tables.add` builds
        # at once (and the recovery reads through): set here, before anything can ask for the
        # topic. Faust takes them from key_type/value_type (json without), and the topic
        # writes them into its schema over the table's, so a table given only a schema
        # changelogs its records fine but reads them back as JSON, and the restarted worker
        # hangs in recovery ("No event received for active tp").
        self.key_serializer = "raw"
        self.value_serializer = STATE_CODEC
        self._unacked: list[asyncio.Future[Any]] = []

    def partition_for_key(self, key: Any) -> int | None:
        return self.source_partition

    async def write_batch(self, partition: int, states: Mapping[bytes, Any],
                          deleted: Iterable[bytes]) -> None:
        """Set `states` and delete `deleted` in the table, their changelog records (the codec's
        bytes, a tombstone for a delete) sent as one record batch to `partition` of the
        changelog; `changelog_acked` waits for them.

        Faust's own `table[key] = value` sends each changelog record through the topic's
        per-record path (`send_soon`: a FutureMessage, the serializer registry, the producer
        buffer, one `producer.send` each): ~11% of the worker's time at one write per key per
        batch. The records are the same bytes either way (recovery reads them back through
        `StateCodec`); the memory store keeps no persisted offsets, so the per-record
        `_on_changelog_sent` has nothing to do."""
        data = self.data
        records: list[tuple[bytes, bytes | None]] = []
        for key, value in states.items():
            data[key] = value
            records.append((key, encode_state(value)))
        for key in deleted:
            data.pop(key, None)
            records.append((key, None))
        if not records:
            return
        producer = self.app.producer._ensure_producer()  # type: ignore[attr-defined]
        topic = self.changelog_topic.get_topic_name()
        now_ms = int(time.time() * 1000)
        builder = producer.create_batch()
        for key, raw in records:
            if builder.append(key=key, value=raw, timestamp=now_ms) is None:
                self._unacked.append(await producer.send_batch(builder, topic,
                                                               partition=partition))
                builder = producer.create_batch()
                if builder.append(key=key, value=raw, timestamp=now_ms) is None:
                    raise ValueError(f"a state of {len(raw or b'')} bytes does not fit a "
                                     f"record batch of {topic}")
        if builder.record_count():
            self._unacked.append(await producer.send_batch(builder, topic, partition=partition))

    def send_changelog(self, *args: Any, **kwargs: Any) -> Any:
        fut = super().send_changelog(*args, **kwargs)
        self._unacked.append(fut)
        return fut

    async def changelog_acked(self) -> None:
        """Wait until the broker acknowledged every changelog record sent so far."""
        unacked, self._unacked = self._unacked, []
        if unacked:
            await asyncio.gather(*unacked)


class _StagedStates(MutableMapping[str, Any]):
    """The processor's view of the Faust table for one batch: str keys over the table's raw
    bytes keys (as recovery gives them back), reads through to the table, writes held until
    `write_back` (after the batch's outputs are acknowledged).

    Its values are live `SkuState` objects (`holds_state_objects`): the processor updates
    them in place and writes each touched key once per batch (one changelog record).
    Holding the writes keeps the batch engine's order (outputs acknowledged, then changelog,
    then input offsets): a state changelogged before its forecast was out would, after a
    crash, take the replayed events for duplicates and the forecast would never be published.
    """

    holds_state_objects = True

    def __init__(self, table: _SourcePartitionTable) -> None:
        self._table = table
        self.partition = 0  # the input partition of the records being applied
        self._staged: dict[int, dict[str, Any]] = {}
        self._deleted: dict[int, set[str]] = {}

    def _find(self, key: str) -> Any:
        for staged in self._staged.values():
            if key in staged:
                return staged[key]
        return self._table.get(key.encode())

    def __getitem__(self, key: str) -> Any:
        value = self._find(key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        value = self._find(key)
        return default if value is None else value

    def __setitem__(self, key: str, value: Any) -> None:
        self._staged.setdefault(self.partition, {})[key] = value
        self._deleted.get(self.partition, set()).discard(key)

    def __delitem__(self, key: str) -> None:
        if self._find(key) is None:
            raise KeyError(key)
        for staged in self._staged.values():
            staged.pop(key, None)
        self._deleted.setdefault(self.partition, set()).add(key)

    def __iter__(self) -> Iterator[str]:
        staged = {k for part in self._staged.values() for k in part}
        yield from staged
        yield from (k for raw in self._table if (k := raw.decode()) not in staged)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    async def write_back(self) -> None:
        """Write the held states into the table (each to the changelog partition of its input
        partition, one record batch per partition) and wait until the broker has them."""
        table = self._table
        for partition in sorted(self._staged.keys() | self._deleted.keys()):
            await table.write_batch(
                partition, {key.encode(): v for key, v in self._staged.get(partition, {}).items()},
                [key.encode() for key in self._deleted.get(partition, ())])
        self._staged.clear()
        self._deleted.clear()
        await table.changelog_acked()


class _SeekFirstRecovery(Recovery):
    """Faust's table recovery, with no input record handed over before the input partitions
    are back at their committed offsets.

    At the end of a recovery Faust resumes the input partitions, seeks them to their
    committed offsets, and only then resumes the flow, clearing the streams' queues. Its
    fetcher keeps handing records over during the seek, and the fetcher loop, still going
    through a fetch made before it, sets its read offsets past them afterwards: those
    records are cleared from the agent's queue, and dropped as already read when they are
    fetched again from the committed offset. A restarted worker so skipped a run of every
    partition (seen: 170-300 records each, the records after its first batch) and its
    forecasts missed or differed from an uninterrupted run's by ~4
    (tests/integration/test_faust_lstm_recovery.py). Stopping the flow first holds the
    fetcher back until the seek is done; Faust resumes it at the end."""

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        self.app.consumer.stop_flow()
        await super().on_recovery_completed(generation_id)


class _TableManager(TableManager):
    """Faust's table manager with `_SeekFirstRecovery` as its recovery service."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = _SeekFirstRecovery(self.app, self, beacon=self.beacon,
                                                loop=self.loop)
        return self._recovery


def create_app(settings: Settings, predict: PredictFn, model_version: str,
               metrics: WorkerMetrics | None = None, *,
               calendar: HolidayCalendar | None = None) -> faust.App:
    """Build the worker app around `predict` (`streams.worker.build_app`: the serving path
    of `streams.forecaster_setup.served_forecaster`, as the batch engine's; `calendar`: the
    holidays it reads, kept by a `streams.calendar_feed.CalendarFeed`). Topics must exist
    (see `streams.topics.ensure_topics`)."""
    hosts = bootstrap_servers(settings).split(",")
    # the memory store keeps nothing on disk, but Faust still creates its app directory (without
    # parents): put it under the temp dir, not the caller's working directory
    faust_dir = Path(tempfile.gettempdir()) / "shelfcast-faust"
    faust_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{h.strip()}" for h in hosts],
        broker_credentials=faust_credentials(settings),  # SASL/TLS as for every other client
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.kafka_session_timeout_s / 3),
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=settings.commit_interval_s,
        store="memory://",
        datadir=str(faust_dir / "{conf.name}-data"),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        topic_allow_declare=True,
        web_enabled=settings.web_port is not None,
        web_port=settings.web_port or 6066,
        producer_acks=-1,
        # changelog and output sends are many small records: let the producer batch them
        producer_linger=0.02,
        producer_max_batch_size=1 << 20,
        stream_buffer_maxsize=max(4096, settings.take_max * 2),
        key_serializer="raw",
        value_serializer="raw",
        TableManager=_TableManager,  # see _SeekFirstRecovery
    )
    topics = settings.topics
    source = app.topic(
        *topics.inputs(), key_serializer="raw", value_serializer="raw")
    # the changelog partition is the input partition of the records applied (Kafka Streams'
    # rule), whatever partitioner the shop's producer used: see _SourcePartitionTable
    table = _SourcePartitionTable(
        app,
        name=FAUST_TABLE,
        default=None,
        beacon=app.tables.beacon,
        partitions=settings.topic_partitions,
        schema=faust.Schema(key_serializer="raw", value_serializer=STATE_CODEC),
    )
    app.tables.add(table)
    metrics = metrics or WorkerMetrics(model_version, model=settings.model)
    processor = BatchProcessor(ProcessorConfig.from_settings(settings),
                               metrics.instrument_predict(predict), model_version,
                               calendar=calendar)
    counters = StreamCounters()
    app.shelfcast_counters = counters  # type: ignore[attr-defined]
    app.shelfcast_processor = processor  # type: ignore[attr-defined]
    metrics.install(app, counters)
    install_web(app, table, settings, counters)

    sender = _OutputSender(app, topics)

    committer = _BatchCommitter(app)

    @app.agent(source, name="ingest")
    async def ingest(stream: faust.StreamT[bytes]) -> None:
        within = settings.take_within_ms / 1000
        async for events in stream.take_events(settings.take_max, within=within):
            # Faust's messages are the processor's input records as they are (raw key, value)
            by_partition: dict[int, list[InputRecord]] = {}
            for e in events:
                message = e.message
                records = by_partition.get(message.partition)
                if records is None:
                    records = by_partition[message.partition] = []
                records.append(message)
            out = BatchOutputs()
            view = _StagedStates(table)
            for partition, records in by_partition.items():
                view.partition = partition  # the changelog partition of its writes
                await processor.process(records, view, out=out)
            fault_point("worker.mid_forecast", when=out.forecast_count)
            # the batch engine's order: outputs acknowledged, then the changelog (acknowledged
            # too), and only then does take_events ack the events (their offsets commit later)
            await sender.send(out)
            fault_point("worker.mid_batch")  # outputs acknowledged, their state not yet written
            await view.write_back()
            fault_point("worker.before_commit")  # outputs and changelog acknowledged
            await committer.commit(events)
            counters.add(len(events), out)

    @app.timer(interval=5.0)
    async def report() -> None:
        log.info("shelfcast: %s", counters.summary())

    return app


_Groups = dict[tuple[str, int], list[tuple[bytes | None, bytes]]]


class _OutputSender:
    """Sends a batch's outputs as the batch engine does: JSON written straight from the
    processor's rows (`BatchOutputs.forecast_payloads` etc.; no model object per output),
    grouped per topic partition, one record batch each on Faust's own producer, every ack
    awaited together (`send`).

    One awaited `Topic.send` per record, with a model built for each, was ~29% of the Faust
    worker's time (benchmarks/README.md, Faust section). The partition is the key's murmur2
    hash, where Faust's producer (aiokafka's default partitioner) and a Java one put it.
    """

    def __init__(self, app: faust.App, topics: Any) -> None:
        self._app = app
        self._topics = topics
        self._partitions: dict[str, int] = {}
        self._partition_of: dict[tuple[str, int], int] = {}

    def _producer(self) -> Any:
        """Faust's aiokafka producer (`Producer._ensure_producer`: raises until it started)."""
        return self._app.producer._ensure_producer()  # type: ignore[attr-defined]

    async def _partition_count(self, topic: str) -> int:
        n = self._partitions.get(topic)
        if n is None:
            producer = self._producer()
            n = self._partitions[topic] = len(await producer.partitions_for(topic))
        return n

    async def groups(self, out: BatchOutputs) -> _Groups:
        """A batch's outputs as (key, JSON) lists per (topic, partition), in emission order."""
        t = self._topics
        groups: _Groups = defaultdict(list)
        partition_of = self._partition_of

        async def add_all(topic: str, items: Iterable[tuple[str | None, bytes]]) -> None:
            n = 0
            for key, value in items:
                if key is None:
                    groups[(topic, 0)].append((None, value))
                    continue
                if not n:
                    n = await self._partition_count(topic)
                partition = partition_of.get((key, n), -1)
                if partition < 0:
                    partition = partition_of[(key, n)] = key_partition(key.encode(), n)
                groups[(topic, partition)].append((key.encode(), value))

        await add_all(t.dlq, ((_dead_letter_key(d), event_json(d)) for d in out.dead_letters))
        await add_all(t.forecasts, out.forecast_payloads())
        await add_all(t.restock, ((sku_key(r.sku, r.location), event_json(r))
                                  for r in out.restocks))
        await add_all(t.alerts, out.alert_payloads())
        await add_all(t.demand, out.demand_payloads())
        return groups

    async def send(self, out: BatchOutputs) -> None:
        """Send a batch's outputs and wait until the broker acknowledged every one."""
        groups = await self.groups(out)
        if not groups:
            return
        producer = self._producer()
        now_ms = int(time.time() * 1000)
        acks: list[asyncio.Future[Any]] = []
        for (topic, partition), items in groups.items():
            builder = producer.create_batch()
            for key, value in items:
                if builder.append(key=key, value=value, timestamp=now_ms) is None:
                    acks.append(await producer.send_batch(builder, topic, partition=partition))
                    builder = producer.create_batch()
                    if builder.append(key=key, value=value, timestamp=now_ms) is None:
                        raise ValueError(f"an output of {len(value)} bytes does not fit a "
                                         f"record batch of {topic}")
            if builder.record_count():
                acks.append(await producer.send_batch(builder, topic, partition=partition))
        await asyncio.gather(*acks)


def _dead_letter_key(dead: Any) -> str | None:
    key = getattr(dead, "key", None)
    return key if isinstance(key, str) else None


class _BatchCommitter:
    """Commits a batch's input offsets once its outputs and states are acknowledged: per
    partition, the offset after the batch's last event (a batch holds each partition's events
    in offset order and every earlier batch is done: the batch engine's rule), at once rather
    than at Faust's next periodic commit. That one stays; it never moves an offset backwards
    (`Consumer._should_commit`).

    It came in against a commit that stalled after a restart (committed 298 while the
    worker read on to 1,536). That stall was Faust's per-message ack bookkeeping refusing,
    rightly, to pass a run of records the restarted worker had never processed: Faust had
    dropped them at the end of its recovery (see `_SeekFirstRecovery`, which stops that).
    This commit cannot tell such a run from the offsets a compacted topic or a transaction
    marker skips, so it would commit past it: no record may go missing before it."""

    def __init__(self, app: faust.App) -> None:
        self._app = app
        self._committed: dict[Any, int] = {}

    async def commit(self, events: Sequence[EventT[Any]]) -> None:
        """Commit, per partition, the offset after the batch's last event, if it moves."""
        offsets: dict[Any, int] = {}
        for e in events:
            tp, offset = e.message.tp, e.message.offset + 1
            if offset > offsets.get(tp, -1):
                offsets[tp] = offset
        forward = {tp: o for tp, o in offsets.items() if o > self._committed.get(tp, -1)}
        if not forward:
            return
        # Consumer._commit_offsets: the explicit-offsets commit under Faust's periodic one
        # (skips partitions revoked meanwhile, flushes the producer, records the offsets)
        if await self._app.consumer._commit_offsets(forward):  # type: ignore[attr-defined]
            self._committed.update(forward)
