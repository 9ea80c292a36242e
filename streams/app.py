"""The Faust engine (the alternative to the default batch engine, streams/engine.py): the Faust
app, its input topics, the SKU state table and the batched ingest agent.

The table holds live `SkuState` objects, changelogged and recovered through the batch
engine's record codec (`streams.changelog`: msgpack behind a format byte, the forecaster's
durable state as raw bytes), so both engines keep the same state, resumed the same way."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import faust
from faust.serializers import codecs
from faust.types import EventT

from runtime.kafka_config import bootstrap_servers, faust_credentials
from runtime.settings import Settings
from schemas import encode, sku_key
from streams.changelog import decode_sku_state, encode_state
from streams.counters import StreamCounters
from streams.metrics import WorkerMetrics
from streams.processor import BatchOutputs, BatchProcessor, PredictFn, ProcessorConfig, RawRecord
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


class _BytesKeyTable(MutableMapping[str, Any]):
    """Str-keyed view of a Faust table whose keys are raw bytes (as they come back on recovery).

    Its values are live `SkuState` objects (`holds_state_objects`): the processor updates
    them in place and writes each touched key back once per batch (one changelog record)."""

    holds_state_objects = True

    def __init__(self, table: faust.Table) -> None:
        self._table = table

    def __getitem__(self, key: str) -> Any:
        return self._table[key.encode()]

    def get(self, key: str, default: Any = None) -> Any:
        return self._table.get(key.encode(), default)

    def __setitem__(self, key: str, value: Any) -> None:
        self._table[key.encode()] = value

    def __delitem__(self, key: str) -> None:
        del self._table[key.encode()]

    def __iter__(self) -> Iterator[str]:
        return (k.decode() for k in self._table)

    def __len__(self) -> int:
        return len(self._table)


class _SourcePartitionTable(faust.Table):  # type: ignore[misc]
    """A Faust table whose changelog records go to the partition of the input records being
    applied (`source_partition`, set by the agent per partition of a batch).

    Faust's own choices do not fit: the default takes "the current event", wrong for a batch
    that spans partitions; `use_partitioner=True` hashes the key (murmur2), which for a shop
    whose producer used another partitioner (librdkafka's CRC32, a partition picked by hand)
    puts the state where the input partition's next owner never reads it.
    """

    source_partition: int | None = None

    def partition_for_key(self, key: Any) -> int | None:
        return self.source_partition


def create_app(settings: Settings, predict: PredictFn, model_version: str,
               metrics: WorkerMetrics | None = None) -> faust.App:
    """Build the worker app around `predict` (`streams.worker.build_app`: the serving path
    of `streams.forecaster_setup.served_forecaster`, as the batch engine's). Topics must
    exist (see `streams.topics.ensure_topics`)."""
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
    )
    topics = settings.topics
    source = app.topic(
        topics.orders, topics.stock, topics.catalog, key_serializer="raw", value_serializer="raw"
    )
    outputs = {
        name: app.topic(name, key_serializer="raw", value_serializer="raw")
        for name in topics.outputs()
    }
    # the changelog partition is the input partition of the records applied (Kafka Streams'
    # rule), whatever partitioner the shop's producer used: see _SourcePartitionTable
    table = app.tables.add(_SourcePartitionTable(
        app,
        name="sku_state",
        default=None,
        beacon=app.tables.beacon,
        partitions=settings.topic_partitions,
        schema=faust.Schema(key_serializer="raw", value_serializer=STATE_CODEC),
    ))
    # faust-streaming 0.15 takes the table's own serializer (its changelog sends, its store)
    # from value_type, not from the schema: name the codec on both (set before first use:
    # the store and the changelog topic are made lazily).
    table.value_serializer = STATE_CODEC
    metrics = metrics or WorkerMetrics(model_version, model=settings.model)
    processor = BatchProcessor(ProcessorConfig.from_settings(settings),
                               metrics.instrument_predict(predict), model_version)
    counters = StreamCounters()
    app.shelfcast_counters = counters  # type: ignore[attr-defined]
    app.shelfcast_processor = processor  # type: ignore[attr-defined]
    metrics.install(app, counters)
    install_web(app, table, settings, counters)

    async def send_all(out: BatchOutputs) -> None:
        for topic_name, events in (
            (topics.dlq, out.dead_letters),
            (topics.forecasts, out.forecasts),
            (topics.restock, out.restocks),
            (topics.alerts, out.alerts),
            (topics.demand, out.demand),
        ):
            channel = outputs[topic_name]
            for event in events:
                key = getattr(event, "key", None)
                if key is None:
                    sku, loc = getattr(event, "sku", None), getattr(event, "location", None)
                    key = sku_key(sku, loc) if sku else None
                await channel.send(
                    key=key.encode() if isinstance(key, str) else key, value=encode(event)
                )

    @app.agent(source, name="ingest")
    async def ingest(stream: faust.StreamT[bytes]) -> None:
        view = _BytesKeyTable(table)
        within = settings.take_within_ms / 1000
        async for events in stream.take_events(settings.take_max, within=within):
            by_partition: dict[int, list[RawRecord]] = {}
            for e in events:
                record = _raw(e)
                by_partition.setdefault(record.partition, []).append(record)
            out = BatchOutputs()
            for partition, records in by_partition.items():
                table.source_partition = partition  # the changelog partition of its writes
                try:
                    await processor.process(records, view, out=out)
                finally:
                    table.source_partition = None
            await send_all(out)
            counters.add(len(events), out)

    @app.timer(interval=5.0)
    async def report() -> None:
        log.info("shelfcast: %s", counters.summary())

    return app


def _raw(event: EventT) -> RawRecord:
    m = event.message
    return RawRecord(
        topic=m.topic, partition=m.partition, offset=m.offset, key=m.key, value=m.value
    )
