"""Hostile input never crashes the ingest path and every record is accounted for."""

import asyncio
import json
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecasting import make_forecaster
from runtime.settings import Settings
from streams.processor import BatchProcessor, ProcessorConfig, RawRecord
from streams.worker import local_predict

SETTINGS = Settings(kafka_bootstrap="unused:9092", max_payload_bytes=4096)
CONFIG = ProcessorConfig.from_settings(SETTINGS)
TOPICS = [SETTINGS.topics.orders, SETTINGS.topics.stock, SETTINGS.topics.catalog]
MODEL = make_forecaster("moving_average")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
near_valid_orders = st.fixed_dictionaries({
    "event_id": st.text(max_size=12),
    "type": st.sampled_from(["placed", "cancelled", "returned", "stolen", ""]),
    "sku": st.text(max_size=8),
    "location": st.sampled_from(["wh", "", "a@b", "uk"]),
    "quantity": st.integers(min_value=-10, max_value=2_000_000) | st.text(max_size=3),
    "occurred_at": st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1),
                                timezones=st.none() | st.just(UTC)).map(datetime.isoformat),
})
payloads = (
    st.binary(max_size=64)
    | json_values.map(lambda v: json.dumps(v).encode())
    | near_valid_orders.map(lambda v: json.dumps(v).encode())
    | st.just(b"x" * 5000)  # oversized for this test's 4 KiB limit
    | st.just(None)
)
records = st.lists(st.tuples(st.sampled_from([*TOPICS, "unknown.topic"]), payloads),
                   min_size=1, max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records)
def test_every_record_is_accepted_deduplicated_or_dead_lettered(batch):
    processor = BatchProcessor(CONFIG, local_predict(MODEL), MODEL.model_version)
    raws = [RawRecord(topic, 0, i, b"k", value) for i, (topic, value) in enumerate(batch)]
    out = asyncio.run(processor.process(raws, {}))
    assert out.accepted + out.duplicates + len(out.dead_letters) == len(raws)
    for dead in out.dead_letters:
        assert dead.error and dead.error_kind
        assert raws[dead.offset].value in (None, b"") or dead.raw_payload_b64


def test_valid_events_after_poison_pills_still_flow():
    t0 = datetime(2011, 5, 2, tzinfo=UTC)
    good = [json.dumps({"event_id": f"o{d}", "type": "placed", "sku": "A", "location": "L",
                        "quantity": 2, "occurred_at": (t0 + timedelta(days=d)).isoformat()}
                       ).encode() for d in range(3)]
    poison = [b"\x00\xff", b"{}", b"[" * 10_000, None, b'{"event_id": 1}']
    raws = [RawRecord(SETTINGS.topics.orders, 0, i, b"A@L", v)
            for i, v in enumerate(poison + good)]
    out = asyncio.run(BatchProcessor(CONFIG, local_predict(MODEL), MODEL.model_version)
                      .process(raws, table := {}))
    assert len(out.dead_letters) == len(poison) and out.accepted == 3
    assert sum(table["A@L"]["demand"].values()) == 6
