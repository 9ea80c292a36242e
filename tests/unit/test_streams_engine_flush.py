"""The batch engine's state flush, through its Kafka edge (`clients=`): the changelog goes only
after the outputs it covers are acknowledged, offsets only after the changelog; flushes stay in
order; a stop commits what was processed before the worker leaves its group."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from aiokafka import ConsumerRebalanceListener, TopicPartition

from runtime.settings import Settings
from streams.engine import BatchEngine
from streams.outputs import AlertRow, BatchOutputs
from streams.store import StateStore

SETTINGS = Settings(kafka_bootstrap="unused:9092", app_id="app", take_within_ms=5)
ORDERS = TopicPartition(SETTINGS.topics.orders, 0)
ALERTS = SETTINGS.topics.alerts
CHANGELOG = "app-sku-state-changelog"


class Record(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class Batch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes | None]] = []

    def append(self, *, key: bytes | None, value: bytes | None, timestamp: int | None) -> Any:
        self.records.append((key, value))
        return object()

    def record_count(self) -> int:
        return len(self.records)


class Producer:
    """Acknowledges a batch once its topic's gate (if any) is open; logs sends and acks."""

    def __init__(self, log: list, gates: dict[str, asyncio.Event]) -> None:
        self.log, self.gates = log, gates
        self.changelog_values: list[bytes | None] = []

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}

    def create_batch(self) -> Batch:
        return Batch()

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> Any:
        self.log.append(("send", topic))
        if topic == CHANGELOG:
            self.changelog_values += [value for _, value in batch.records]
        return asyncio.ensure_future(self._ack(topic))

    async def _ack(self, topic: str) -> None:
        if topic in self.gates:
            await self.gates[topic].wait()
        self.log.append(("acked", topic))


class Consumer:
    """Hands out the fetches a test queues; owns partition 0 of the orders topic."""

    def __init__(self, log: list) -> None:
        self.log = log
        self.fetches: asyncio.Queue[dict[TopicPartition, list[Record]]] = asyncio.Queue()
        self.listener: ConsumerRebalanceListener | None = None

    def subscribe(self, *, topics: Iterable[str], listener: ConsumerRebalanceListener) -> None:
        self.listener = listener

    async def start(self) -> None:
        assert self.listener is not None
        await self.listener.on_partitions_assigned([ORDERS])

    async def stop(self) -> None:
        self.log.append(("left group",))

    async def getmany(self, *, timeout_ms: int, max_records: int
                      ) -> dict[TopicPartition, list[Record]]:
        try:
            return await asyncio.wait_for(self.fetches.get(), timeout_ms / 1000)
        except TimeoutError:
            return {}

    def assignment(self) -> set[TopicPartition]:
        return {ORDERS}

    def seek(self, partition: TopicPartition, offset: int) -> None:
        raise AssertionError("partition 0 is recovered before any fetch")

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.log.append(("commit", dict(offsets)))


class Clients:
    def __init__(self, gates: dict[str, asyncio.Event]) -> None:
        self.log: list = []
        self.the_producer = Producer(self.log, gates)
        self.the_consumer = Consumer(self.log)

    def producer(self) -> Producer:
        return self.the_producer

    def consumer(self) -> Consumer:
        return self.the_consumer

    async def ensure_changelog(self, partitions: int) -> None: ...

    async def recover(self, partitions: set[int], store: StateStore) -> int:
        return 0

    async def topic_max_message_bytes(self, topic: str) -> int | None:
        return None


class Processor:
    """Writes each record's offset to its key's state and raises one alert per record."""

    async def process(self, records: list[Record], store: StateStore) -> BatchOutputs:
        rows = []
        for r in records:
            assert r.key is not None
            store[r.key.decode()] = {"offset": r.offset}
            rows.append(AlertRow(f"a{r.offset}", "A", "L", "stale_stock", "info", "m", {},
                                 datetime(2011, 3, 7, tzinfo=UTC)))
        return BatchOutputs(alert_rows=rows)


class Worker:
    """An engine running on fake clients, in a task."""

    def __init__(self, gates: dict[str, asyncio.Event]) -> None:
        self.clients = Clients(gates)
        self.log = self.clients.log
        self.engine = BatchEngine(SETTINGS, Processor(), clients=self.clients)  # type: ignore[arg-type]
        self.stopping = asyncio.Event()
        self.task: asyncio.Future[None] | None = None

    async def __aenter__(self) -> Worker:
        self.task = asyncio.ensure_future(self.engine.run(self.stopping))
        await asyncio.wait_for(self.engine.ready.wait(), 5)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stopping.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)

    def fetch(self, *offsets: int) -> None:
        self.clients.the_consumer.fetches.put_nowait(
            {ORDERS: [Record(ORDERS.topic, 0, o, b"A@L", b"{}") for o in offsets]})

    async def until(self, done: Callable[[], bool]) -> None:
        for _ in range(500):
            if done():
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"timed out; log: {self.log}")

    def commits(self) -> list[dict[TopicPartition, int]]:
        return [entry[1] for entry in self.log if entry[0] == "commit"]


async def test_changelog_waits_for_outputs_and_offsets_wait_for_changelog() -> None:
    alerts_acked = asyncio.Event()
    async with Worker({ALERTS: alerts_acked}) as w:
        w.fetch(8, 9)
        await w.until(lambda: ("send", ALERTS) in w.log)
        await asyncio.sleep(0.1)  # the engine keeps fetching meanwhile
        assert w.log == [("send", ALERTS)], "nothing may follow unacknowledged outputs"
        alerts_acked.set()
        await w.until(lambda: bool(w.commits()))
    assert w.log == [("send", ALERTS), ("acked", ALERTS), ("send", CHANGELOG),
                     ("acked", CHANGELOG), ("commit", {ORDERS: 10}), ("left group",)]
    assert w.engine.monitor.tp_committed_offsets == {ORDERS: 10}


async def test_flushes_commit_in_order_and_a_batch_waits_for_the_previous_flush() -> None:
    changelog_acked = asyncio.Event()
    async with Worker({CHANGELOG: changelog_acked}) as w:
        w.fetch(4)
        await w.until(lambda: ("send", CHANGELOG) in w.log)
        w.fetch(8)  # writes the same key again while the first flush is on its way
        await w.until(lambda: w.log.count(("send", ALERTS)) == 2)
        await asyncio.sleep(0.1)
        assert w.log.count(("send", CHANGELOG)) == 1 and not w.commits(), \
            "the second flush starts only once the first is acknowledged"
        changelog_acked.set()  # the second flush's changelog passes the same gate
        await w.until(lambda: len(w.commits()) == 2)
    assert w.commits() == [{ORDERS: 5}, {ORDERS: 9}]
    assert w.clients.the_producer.changelog_values == [b'{"offset":4}', b'{"offset":8}']
    assert w.log[-1] == ("left group",)
    assert w.engine.store is not None and not w.engine.store.has_dirty()


async def test_a_stop_commits_the_batch_in_flight_before_leaving_the_group() -> None:
    outputs_acked = asyncio.Event()
    async with Worker({ALERTS: outputs_acked}) as w:
        w.fetch(0, 1, 2)
        await w.until(lambda: ("send", ALERTS) in w.log)
        w.stopping.set()  # asked to stop while the batch's outputs are unacknowledged
        await asyncio.sleep(0.1)
        assert not w.commits() and ("left group",) not in w.log
        outputs_acked.set()
    assert w.commits() == [{ORDERS: 3}] and w.log[-1] == ("left group",)
