"""Dead letters always fit: payloads cut to a stated size (with length and hash), records the
broker refuses dead-lettered in reduced form, never retried as they were."""

import asyncio
import base64
import hashlib
import logging
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
from pydantic import AwareDatetime, BaseModel, ConfigDict

from runtime.settings import Settings
from schemas import DeadLetter, InvalidEvent, dead_letter, dead_letter_bytes
from schemas.codec import MAX_DEAD_LETTER_ERROR_CHARS, MAX_DEAD_LETTER_KEY_CHARS
from streams.dead_letters import REDUCED_PAYLOAD_BYTES, fitting_payload_bytes, reduced_dead_letter
from streams.engine import BatchEngine
from streams.outputs import event_json
from streams.store import StateStore

SETTINGS = Settings(kafka_bootstrap="unused:9092", app_id="app")
DLQ = SETTINGS.topics.dlq


class FirstDeadLetter(BaseModel):
    """The DeadLetter contract as first published: a consumer built against it must still read
    every dead letter that was not cut."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    schema_version: int
    source_topic: str
    partition: int
    offset: int
    key: str | None
    error: str
    error_kind: str
    raw_payload_b64: str
    received_at: AwareDatetime


def letter(raw: bytes, limit: int | None, key: str | None = "A@L",
           reason: str = "bad") -> DeadLetter:
    return dead_letter(topic="shop.orders", partition=3, offset=77, key=key, raw=raw,
                       error=InvalidEvent(reason, kind="invalid_json"), max_payload_bytes=limit)


def test_a_payload_over_the_cut_keeps_its_first_bytes_its_length_and_hash():
    raw = b"x" * 5000 + b"tail"
    dead = letter(raw, 1000)
    assert base64.b64decode(dead.raw_payload_b64) == raw[:1000]
    assert dead.payload_bytes == len(raw)
    assert dead.payload_sha256 == hashlib.sha256(raw).hexdigest()
    assert dead.cut
    again = DeadLetter.model_validate_json(event_json(dead))
    assert again == dead


def test_an_uncut_dead_letter_is_written_in_the_first_contract():
    dead = letter(b'{"not": "an order"}', 1000)
    assert not dead.cut
    FirstDeadLetter.model_validate_json(event_json(dead))  # no new fields appear
    assert b"payload_bytes" not in event_json(dead)


def test_long_keys_and_reasons_are_cut_too():
    dead = letter(b"{}", 10, key="k" * 5000, reason="r" * 10_000)
    assert dead.key is not None and len(dead.key) == MAX_DEAD_LETTER_KEY_CHARS
    assert dead.key_truncated and dead.cut
    assert len(dead.error) == MAX_DEAD_LETTER_ERROR_CHARS


@pytest.mark.parametrize("limit", [100_000, 1_048_588, 8 << 20])
def test_the_fitting_cut_fits_the_topic_even_for_the_worst_key_and_reason(limit):
    cut = fitting_payload_bytes(limit, 1 << 30)
    for worst in ("\x01" * 5000, "\U0001f600" * 5000):  # 6 bytes escaped; 4 bytes of UTF-8
        dead = letter(b"\xff" * (cut + 10), cut, key=worst, reason=worst)
        record_bytes = len(event_json(dead)) + len(dead.key.encode())  # type: ignore[union-attr]
        assert record_bytes <= dead_letter_bytes(cut) <= limit
    assert cut > (limit - 30_000) * 0.74  # and the cut is not needlessly small
    assert fitting_payload_bytes(limit, 500) == 500


def test_a_refused_dead_letter_is_reduced_keeping_the_full_length_and_hash():
    raw = b"y" * 300_000
    dead = letter(raw, 250_000)
    refused = MessageSizeTooLargeError()
    reduced = reduced_dead_letter(DLQ, 1, b"A@L", event_json(dead), refused, DLQ)
    assert (reduced.source_topic, reduced.partition, reduced.offset) == ("shop.orders", 3, 77)
    assert len(base64.b64decode(reduced.raw_payload_b64)) == REDUCED_PAYLOAD_BYTES
    assert reduced.payload_bytes == len(raw)
    assert reduced.payload_sha256 == hashlib.sha256(raw).hexdigest()
    assert reduced.error_kind == "invalid_json"


def test_a_refused_output_becomes_an_unsendable_dead_letter():
    value = b'{"forecast": "' + b"9" * 5000 + b'"}'
    reduced = reduced_dead_letter("shelfcast.forecasts", 2, b"A@L", value,
                                  MessageSizeTooLargeError(), DLQ)
    assert reduced.error_kind == "unsendable" and reduced.offset == -1
    assert reduced.payload_bytes == len(value)
    assert "shelfcast.forecasts partition 2" in reduced.error


# --- the engine's send path, on a producer that refuses what its topics cannot take ----------

class Builder:
    def __init__(self, max_records: int) -> None:
        self.records: list[tuple[Any, Any]] = []
        self.max_records = max_records

    def append(self, *, key: Any, value: Any, timestamp: int) -> object | None:
        if len(self.records) >= self.max_records:
            return None
        self.records.append((key, value))
        return object()

    def record_count(self) -> int:
        return len(self.records)


class Producer:
    """Record batches per topic; a batch holding a value over its topic's limit is refused
    whole (as a broker does); `outages` sends fail with a retriable error first."""

    def __init__(self, limits: dict[str, int], outages: int = 0) -> None:
        self.limits, self.outages = limits, outages
        self.delivered: dict[str, list[tuple[Any, Any]]] = {}

    def create_batch(self) -> Builder:
        return Builder(max_records=3)

    async def send_batch(self, builder: Builder, topic: str, *, partition: int
                         ) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.outages:
            self.outages -= 1
            done.set_exception(KafkaConnectionError("broker down"))
        elif any(len(v or b"") > self.limits.get(topic, 1 << 30) for _, v in builder.records):
            done.set_exception(MessageSizeTooLargeError())
        else:
            self.delivered.setdefault(topic, []).extend(builder.records)
            done.set_result(None)
        return done


def engine_on(producer: Producer) -> BatchEngine:
    engine = BatchEngine(SETTINGS, processor=None)  # type: ignore[arg-type]
    engine.store = StateStore(4)
    engine._producer = producer  # type: ignore[assignment]
    return engine


async def test_a_refused_dead_letter_goes_reduced_and_its_batch_moves_on(caplog):
    big = letter(b"z" * 50_000, 100_000)
    small = [letter(b"q%d" % i, 100_000) for i in range(4)]
    items = [(b"A@L", event_json(d)) for d in [small[0], small[1], big, small[2], small[3]]]
    producer = Producer({DLQ: 20_000})
    engine = engine_on(producer)
    caplog.set_level(logging.INFO, logger="streams.engine")
    await asyncio.wait_for(engine._send_grouped({(DLQ, 0): items}), 5)
    got = [DeadLetter.model_validate_json(v) for _, v in producer.delivered[DLQ]]
    # the refused batch's good records go after the batches that were taken (order across a
    # refused batch is not kept: it is rare, and each dead letter names its own position)
    assert sorted(base64.b64decode(d.raw_payload_b64) for d in got if not d.cut) == [
        b"q0", b"q1", b"q2", b"q3"]
    [reduced] = [d for d in got if d.cut]
    assert reduced.payload_bytes == 50_000 and reduced.offset == 77
    assert not engine.degraded
    assert "reachable again" not in caplog.text, "no outage happened"
    [line] = [r.getMessage() for r in caplog.records if "refused by the broker" in r.getMessage()]
    assert "shop.orders partition 3 offset 77" in line and "MessageSizeTooLargeError" in line
    assert f"on {DLQ} partition 0" in line


async def test_an_outage_holds_the_batch_and_says_when_it_is_over(caplog, monkeypatch):
    monkeypatch.setattr(asyncio, "sleep", _no_sleep)
    producer = Producer({}, outages=2)
    engine = engine_on(producer)
    caplog.set_level(logging.INFO, logger="streams.engine")
    items = [(b"A@L", b"{}"), (b"B@L", b"{}")]
    await engine._send_grouped({("shelfcast.forecasts", 1): items})
    assert producer.delivered["shelfcast.forecasts"] == items
    assert caplog.text.count("batch held") == 2
    assert "reachable again" in caplog.text and not engine.degraded


_real_sleep = asyncio.sleep


async def _no_sleep(delay: float, *args: Any) -> None:
    await _real_sleep(0)
