"""The batch engine's state flush: changelog only after the outputs it covers are acknowledged,
offsets only after the changelog; flushes stay in order; nothing is left behind on a stop."""

import asyncio

from aiokafka import TopicPartition

from runtime.settings import Settings
from streams.engine import BatchEngine
from streams.store import StateStore

SETTINGS = Settings(kafka_bootstrap="unused:9092", app_id="app")
ORDERS = TopicPartition("shop.orders", 0)


class Consumer:
    def __init__(self, log: list) -> None:
        self.log = log

    async def commit(self, offsets: dict) -> None:
        self.log.append(("commit", dict(offsets)))


def engine_with(log: list, gates: dict[str, asyncio.Event]) -> BatchEngine:
    engine = BatchEngine(SETTINGS, processor=None)  # type: ignore[arg-type]
    engine.store = StateStore(4)
    engine._consumer = Consumer(log)  # type: ignore[assignment]

    async def send(groups: dict) -> None:
        topic = next(iter(groups))[0]
        log.append(("send", topic))
        if topic in gates:
            await gates[topic].wait()
        log.append(("acked", topic))

    engine._send_grouped = send  # type: ignore[method-assign]
    return engine


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_changelog_waits_for_outputs_and_offsets_wait_for_changelog():
    log: list = []
    outputs_acked = asyncio.Event()
    engine = engine_with(log, {"shelfcast.forecasts": outputs_acked})
    engine._acks = asyncio.ensure_future(engine._send_outputs({("shelfcast.forecasts", 1): [
        (b"A@L", b"{}")]}))
    engine.store["A@L"] = {"sku": "A"}
    engine._pending_offsets[ORDERS] = 10
    engine._flush_state()
    await settle()
    assert log == [("send", "shelfcast.forecasts")], "nothing may follow unacknowledged outputs"
    outputs_acked.set()
    await engine.flush_commits()
    changelog = "app-sku-state-changelog"
    assert log == [("send", "shelfcast.forecasts"), ("acked", "shelfcast.forecasts"),
                   ("send", changelog), ("acked", changelog), ("commit", {ORDERS: 10})]
    assert engine.monitor.tp_committed_offsets == {ORDERS: 10}


async def test_flushes_commit_in_order_and_a_stop_flushes_what_is_pending():
    log: list = []
    first_changelog = asyncio.Event()
    engine = engine_with(log, {"app-sku-state-changelog": first_changelog})
    engine.store["A@L"] = {"n": 1}
    engine._pending_offsets[ORDERS] = 5
    engine._flush_state()
    engine.store["A@L"] = {"n": 2}
    engine._pending_offsets[ORDERS] = 9
    await settle()
    first_changelog.set()  # the second flush's changelog passes the same gate
    await engine.flush_commits()  # what a revocation or a stop does: flush, then wait
    commits = [entry for entry in log if entry[0] == "commit"]
    assert commits == [("commit", {ORDERS: 5}), ("commit", {ORDERS: 9})]
    assert not engine._pending_offsets and not engine.store.has_dirty()


async def test_a_due_flush_waits_while_the_previous_one_is_on_its_way():
    log: list = []
    changelog_acked = asyncio.Event()
    engine = engine_with(log, {"app-sku-state-changelog": changelog_acked})
    engine.store["A@L"] = {"n": 1}
    engine._pending_offsets[ORDERS] = 5
    engine._flush_if_idle()
    await settle()
    engine.store["B@L"] = {"n": 1}
    engine._pending_offsets[ORDERS] = 9
    engine._flush_if_idle()  # the first is still waiting for its changelog: no second flush
    assert engine._pending_offsets == {ORDERS: 9} and engine.store.has_dirty()
    changelog_acked.set()
    await engine.flush_commits()
    commits = [entry for entry in log if entry[0] == "commit"]
    assert commits == [("commit", {ORDERS: 5}), ("commit", {ORDERS: 9})]
