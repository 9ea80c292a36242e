"""The Faust engine (the alternative to the default batch engine, streams/engine.py): the Faust
app, its input topics, the SKU state table and the batched ingest agent."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import faust
from faust.types import EventT

from runtime.kafka_config import bootstrap_servers, faust_credentials
from runtime.settings import Settings
from schemas import encode, sku_key
from streams.counters import StreamCounters
from streams.metrics import WorkerMetrics
from streams.processor import BatchOutputs, BatchProcessor, PredictFn, ProcessorConfig, RawRecord
from streams.web import install_web

__all__ = ["StreamCounters", "create_app"]

log = logging.getLogger(__name__)


class _BytesKeyTable(MutableMapping[str, Any]):
    """Str-keyed view of a Faust table whose keys are raw bytes (as they come back on recovery)."""

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


def create_app(settings: Settings, predict: PredictFn, model_version: str) -> faust.App:
    """Build the worker app. Topics must exist (see `streams.topics.ensure_topics`)."""
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
    # use_partitioner: a batch spans partitions, so the changelog partition must come from the
    # key (same murmur2 partitioner as the shop's producer), not from "the current event".
    table = app.Table(
        "sku_state",
        default=None,
        partitions=settings.topic_partitions,
        schema=faust.Schema(key_serializer="raw", value_serializer="json"),
        use_partitioner=True,
    )
    metrics = WorkerMetrics(model_version, model=settings.model)
    processor = BatchProcessor(ProcessorConfig.from_settings(settings),
                               metrics.instrument_predict(predict), model_version)
    counters = StreamCounters()
    app.shelfcast_counters = counters  # type: ignore[attr-defined]
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
            records = [_raw(e) for e in events]
            out = await processor.process(records, view)
            await send_all(out)
            counters.add(len(records), out)

    @app.timer(interval=5.0)
    async def report() -> None:
        log.info("shelfcast: %s", counters.summary())

    return app


def _raw(event: EventT) -> RawRecord:
    m = event.message
    return RawRecord(
        topic=m.topic, partition=m.partition, offset=m.offset, key=m.key, value=m.value
    )
