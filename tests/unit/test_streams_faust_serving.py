"""The Faust engine serves through the batch engine's path: `served_forecaster` (inferencer,
incremental durable state, roll-in) entered by an app task on the worker's loop, and its
table changelogs live `SkuState` objects through the same record codec."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from runtime.settings import Settings
from streams.changelog import FORMAT_ARRAY
from streams.state import SkuState
from streams.worker import build_app
from tests.support.lstm import daily_orders, save_tiny_lstm

pytest.importorskip("torch")


async def test_the_faust_app_forecasts_through_the_inferencer_with_durable_states(
    tmp_path: Path,
) -> None:
    version = save_tiny_lstm(tmp_path, seed=3, hidden=8, fingerprint="test-3")
    settings = Settings(kafka_bootstrap="unused:9092", model="lstm", model_path=tmp_path,
                        engine="faust", max_wait_ms=1)
    # builds, connects nothing (the calendar feed's broker: test_calendar_feed.py)
    app = build_app(settings, calendar_feed=lambda calendar: contextlib.nullcontext())
    processor = app.shelfcast_processor  # type: ignore[attr-defined]
    serve = [task for task in app._app_tasks if "serve" in getattr(task, "__qualname__", "")]
    assert len(serve) == 1, "the serving path is entered by one app task"
    table: dict[str, object] = {}
    pending = asyncio.ensure_future(processor.process(daily_orders(settings, 0, 4), table))
    await asyncio.sleep(0.05)
    assert not pending.done(), "forecasts wait until the serving path is up"
    running = asyncio.ensure_future(serve[0]())
    try:
        out = await asyncio.wait_for(pending, 30)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert out.forecasts and {f.model_version for f in out.forecasts} == {version}
    # the inferencer's keyed path: every forecast SKU carries its durable LSTM state
    states = [SkuState.from_json(v) for v in table.values()]  # type: ignore[arg-type]
    assert states and all(s.model_state for s in states if s.watermark != s.first_bucket)


def test_the_faust_table_uses_the_changelog_record_codec(tmp_path: Path) -> None:
    save_tiny_lstm(tmp_path, seed=3, hidden=8, fingerprint="test-3")
    settings = Settings(kafka_bootstrap="unused:9092", model="lstm", model_path=tmp_path,
                        engine="faust")
    app = build_app(settings)
    table = app.tables["sku_state"]
    state = SkuState("A", "L", demand={3: 2.0}, model_state=b"\x01state")
    codec = table.value_serializer
    from faust.serializers import codecs

    raw = codecs.dumps(codec, state)
    assert raw[0] == FORMAT_ARRAY
    assert codecs.loads(codec, raw) == state


async def test_the_faust_changelog_reads_back_what_the_table_writes(tmp_path: Path) -> None:
    """The recovery decodes changelog records through the topic's schema (the channel the
    table manager clones onto its queue), not the table's serializer: both must be the
    changelog codec, raw keys included, or a restarted worker never finishes recovering."""
    from faust.types import Message

    save_tiny_lstm(tmp_path, seed=3, hidden=8, fingerprint="test-3")
    settings = Settings(kafka_bootstrap="unused:9092", model="lstm", model_path=tmp_path,
                        engine="faust")
    app = build_app(settings)
    table = app.tables["sku_state"]
    state = SkuState("A", "L", demand={3: 2.0}, model_state=b"\x01state")
    topic = table.changelog_topic
    # what the table sends for a write (Table.send_changelog: its own serializers)
    key, _ = topic.prepare_key(b"A@L", table.key_serializer)
    value, _ = topic.prepare_value(state, table.value_serializer)
    assert key == b"A@L" and value[0] == FORMAT_ARRAY
    recovery_channel = topic.clone_using_queue(asyncio.Queue())  # as TableManager does
    message = Message(topic.get_topic_name(), 2, 7, 0.0, 0, None, key, value, None)
    event = await recovery_channel.decode(message, propagate=True)
    assert event.key == b"A@L"
    assert event.value == state


def test_the_state_changelog_of_each_engine_is_the_topic_that_engine_writes(
    tmp_path: Path,
) -> None:
    """What `shelfcast bench pipeline` reads back for its state check: the Faust table's
    changelog for a Faust run (it read the batch engine's, empty then, and reported every
    SKU as a mismatch), the batch engine's otherwise."""
    from streams.changelog import changelog_topic, engine_changelog_topic

    save_tiny_lstm(tmp_path, seed=3, hidden=8, fingerprint="test-3")
    faust_settings = Settings(kafka_bootstrap="unused:9092", model="lstm",
                              model_path=tmp_path, engine="faust")
    table = build_app(faust_settings).tables["sku_state"]
    assert engine_changelog_topic(faust_settings) == table.changelog_topic.get_topic_name()
    batch_settings = faust_settings.model_copy(update={"engine": "batch"})
    assert engine_changelog_topic(batch_settings) == changelog_topic(batch_settings)
    assert engine_changelog_topic(batch_settings) != engine_changelog_topic(faust_settings)


async def test_a_recovered_faust_worker_takes_no_input_record_until_its_partitions_are_sought(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The end of a table recovery resumes the input partitions and seeks them back to their
    committed offsets: the consumer's flow is stopped during that seek (records the fetcher
    handed over meanwhile were lost: streams/app.py `_SeekFirstRecovery`) and runs again
    after it."""
    from faust.types import TP

    save_tiny_lstm(tmp_path, seed=3, hidden=8, fingerprint="test-3")
    settings = Settings(kafka_bootstrap="unused:9092", model="lstm", model_path=tmp_path,
                        engine="faust")
    app = build_app(settings)
    consumer = app.consumer  # built, not connected
    flow_during_seek: list[bool] = []

    async def perform_seek() -> None:
        flow_during_seek.append(consumer.flow_active)

    async def nothing() -> None:
        return None

    # all on_recovery_completed asks of the broker: the assignment, the seek, the fetcher
    monkeypatch.setattr(consumer, "assignment", lambda: {TP(settings.topics.orders, 0)})
    monkeypatch.setattr(consumer, "perform_seek", perform_seek)
    monkeypatch.setattr(app._fetcher, "maybe_start", nothing)
    consumer.resume_flow()  # as the changelog reading leaves it
    await app.tables.recovery.on_recovery_completed(app.consumer_generation_id)
    assert flow_during_seek == [False]
    assert consumer.flow_active
