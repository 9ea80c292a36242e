"""One contract: the exported JSON Schemas, checked by an independent validator (`jsonschema`,
formats on), and the worker's decoders give the same verdict on every record of a corpus.

The corpus holds what shops in other languages write: timestamps in every RFC 3339 spelling,
the unambiguous spellings other languages write by default (a space separator, `+0000`,
`+00`) and the near misses (no offset, a date alone, RFC 1123, days the calendar lacks), stock
events with on_hand and/or delta, unknown fields, wrong JSON types, and Kafka keys that agree
or disagree with the payload. The worker's verdict is taken from each of its decoders: the
pydantic models (`schemas.decode`), the fast paths (`fast_order`/`fast_stock`/`order_columns`,
which may only defer, never disagree) and the whole ingest step (`BatchProcessor.process`),
which also dead-letters a key/payload mismatch.

One case is left out on purpose: a timestamp with a trailing newline. Python's `re` lets `$`
match before it, so `jsonschema` (Python regexes) would pass it; ECMA 262, RE2 and the worker
refuse it. No calendar case is left out: the timestamp pattern spells the calendar itself.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from forecasting import make_forecaster
from runtime.settings import Settings
from schemas import InvalidEvent, OrderEvent, SkuPolicy, StockEvent, decode, export_json_schemas
from schemas.events import TIMESTAMP_PATTERN
from streams.codec import fast_order, fast_stock, order_columns
from streams.processor import BatchProcessor, ProcessorConfig, RawRecord
from streams.worker import local_predict

SETTINGS = Settings(kafka_bootstrap="unused:9092")
T = SETTINGS.topics
MODELS = {T.orders: OrderEvent, T.stock: StockEvent, T.catalog: SkuPolicy}
SCHEMA_NAMES = {T.orders: "OrderEvent", T.stock: "StockEvent", T.catalog: "SkuPolicy"}

VALID_TIMES = [
    "2026-12-02T11:00:00Z", "2026-12-02t11:00:00z", "2026-12-02T11:00:00+00:00",
    "2026-12-02T11:00:00-00:00", "2026-12-02T11:00:00+05:30", "2026-12-02T11:00:00-08:00",
    *(f"2026-12-02T11:00:00.{'1234567890'[:n]}Z" for n in range(1, 10)),
    "2026-12-02T11:00:00.123456789Z", "2026-12-02T11:00:00.5+01:00",  # Go time.RFC3339Nano
    "2026-12-02T11:00:00.123Z", "2026-12-02T11:00:00.123456Z",  # Java Instant.toString
    "2026-12-02T11:00:00.000Z",  # JS Date.toISOString
    "2026-12-02T11:00:00.1234567Z", "2026-12-02T11:00:00.0000000+05:30",  # .NET "o"
    "2026-12-02T11:00:00.123456+00:00",  # Python isoformat
    "2026-12-02 11:00:00+00:00", "2026-12-02 11:00:00.123456-03:00",  # Python str(datetime)
    "2026-12-02 11:00:00+00", "2026-12-02 11:00:00.5+05:30",  # PostgreSQL timestamptz text
    "2026-12-02 11:00:00Z", "2026-12-02 11:00:00z",  # RFC 3339 5.6 NOTE: a space for T
    "2026-12-02T11:00:00+0000", "2026-12-02T11:00:00+0530",  # C strftime "...%H:%M:%S%z"
    "2026-12-02T11:00:00.123-0800",  # Java SimpleDateFormat "...ss.SSSZ"
    "2026-12-02T11:00:00+0100", "2026-12-02T11:00:00-0000",  # PHP DATE_ISO8601 ("O")
    "2026-12-02T11:00:00+05", "2026-12-02T11:00:00-00", "2026-12-02t11:00:00-0330",
    "2028-02-29T00:00:00Z", "2000-02-29 00:00:00+0000", "1992-02-29T12:00:00+01",
    "2096-02-29T00:00:00Z", "2026-01-31T00:00:00Z", "2026-04-30T00:00:00Z",
    "1990-01-01T00:00:00Z", "2100-12-31T23:59:59+14:00", "2100-12-31 23:59:59+1400",
]
INVALID_TIMES = [
    "2026-12-02T11:00:00", "2026-12-02 11:00:00",  # no offset (naive Python, SQL timestamp)
    "2026-12-02",  # a date alone
    "2026-12-02T11:00Z", "2026-12-02 11:00+0000",  # no seconds
    "2026-12-02T11:00:00.1234567890Z",  # 10 fraction digits
    "2026-12-02T11:00:00,5Z", "2026-12-02T11:00:00.Z", "20261202T110000Z",
    "2026-12-02T11:00:00 Z", "2026-12-02T11:00:00UTC", "2026-12-02  11:00:00Z",
    "2026-12-02\t11:00:00Z", "2026-12-02_11:00:00Z", "2026-12-02 11:00:00 +0000",  # Ruby to_s
    "2026-12-02T11:00:00+5", "2026-12-02T11:00:00+053", "2026-12-02T11:00:00+05:3",
    "2026-12-02T11:00:00+05:30:00", "2026-12-02T11:00:00+053000",  # seconds in the offset
    "2026-12-02T11:00:00+05:60", "2026-12-02T11:00:00+0560", "2026-12-02T11:00:00+24:00",
    "2026-12-02T11:00:00+2400", "2026-12-02T11:00:00+24", "2026-12-02T11:00:00-99",
    "2026-12-02T24:00:00Z", "2026-12-02T11:00:60Z", "2026-12-02 11:60:00+00",
    "2026-02-30T11:00:00Z", "2027-02-29T11:00:00Z", "2100-02-29T00:00:00Z",
    "1900-02-29T00:00:00Z", "2026-04-31 11:00:00+0000", "2026-13-01T11:00:00Z",
    "2026-00-10T11:00:00Z", "2026-12-00T11:00:00Z", "2026-12-32T11:00:00Z",
    "1989-12-31T23:59:59Z", "2101-01-01T00:00:00Z", "2101-01-01 00:00:00+00",
    "Wed, 02 Dec 2026 11:00:00 GMT",  # RFC 1123: JS toUTCString, HTTP dates
    "2026-12-02 11:00:00 +0000 UTC",  # Go time.Time.String
    "1764673200",  # epoch seconds as a string
    "\u0662\u0660\u0662\u0666-12-02T11:00:00Z",  # Arabic-Indic digits
    "2026-12-02T11:00:00+\u0660\u0660:00",
]
# what the bulk of a stream carries: these must take the fast and the column path
FAST_TIMES = [t for t in VALID_TIMES if t.upper() == t]

def order(**changes: Any) -> dict[str, Any]:
    base = {"event_id": "e1", "type": "placed", "sku": "MUG-RED", "location": "berlin",
            "quantity": 3, "occurred_at": "2026-12-02T11:00:00Z"}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not _DROP}


def stock(**changes: Any) -> dict[str, Any]:
    base = {"event_id": "s1", "type": "snapshot", "sku": "MUG-RED", "location": "berlin",
            "occurred_at": "2026-12-02T11:00:00Z"}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()
KEY = b"MUG-RED@berlin"  # as the shop's producer keys it: the payload's sku@location


def _payload_key(key: bytes | None, value: Any) -> bytes | None:
    """KEY stands for "the payload's own key" (where the payload has one)."""
    if key is KEY and isinstance(value, dict) and isinstance(value.get("sku"), str) \
            and isinstance(value.get("location"), str):
        return f"{value['sku']}@{value['location']}".encode()
    return key


def corpus() -> list[tuple[str, str, bytes | None, bytes | None]]:
    """(name, topic, Kafka key, value)."""
    cases: list[tuple[str, str, bytes | None, Any]] = []
    for ts in VALID_TIMES + INVALID_TIMES:
        cases.append((f"order at {ts!r}", T.orders, KEY, order(occurred_at=ts)))
        cases.append((f"stock at {ts!r}", T.stock, KEY, stock(on_hand=5, occurred_at=ts)))
    for name, changes in {
        "quantity 3.0": {"quantity": 3.0}, "quantity 3.5": {"quantity": 3.5},
        "quantity '3'": {"quantity": "3"}, "quantity true": {"quantity": True},
        "quantity 0": {"quantity": 0}, "quantity -1": {"quantity": -1},
        "quantity over max": {"quantity": 1_000_001}, "quantity 1e3": {"quantity": 1e3},
        "unknown field": {"note": "gift"}, "no sku": {"sku": _DROP},
        "sku with a space": {"sku": "MUG RED"}, "sku with @": {"sku": "MUG@RED"},
        "unicode sku": {"sku": "MÜG-ROT"}, "sku with U+001C": {"sku": "MUG\x1c"},
        "sku with U+FEFF": {"sku": "MUG\ufeff"}, "sku with U+0085": {"sku": "MUG\x85"},
        "sku 65 chars": {"sku": "M" * 65}, "empty event_id": {"event_id": ""},
        "event_id 129 chars": {"event_id": "e" * 129}, "schema_version 2": {"schema_version": 2},
        "schema_version 1.0": {"schema_version": 1.0},
        "schema_version '1'": {"schema_version": "1"}, "unit_price null": {"unit_price": None},
        "unit_price -1": {"unit_price": -1}, "unit_price 9.99": {"unit_price": 9.99},
        "unit_price 5": {"unit_price": 5}, "order_id null": {"order_id": None},
        "order_id 5": {"order_id": 5}, "type sold": {"type": "sold"},
        "type returned": {"type": "returned"}, "occurred_at null": {"occurred_at": None},
        "occurred_at epoch number": {"occurred_at": 1764673200},
    }.items():
        cases.append((f"order, {name}", T.orders, KEY, order(**changes)))
    for kind in ("snapshot", "adjustment", "receipt"):
        for fields, changes in {
            "on_hand only": {"on_hand": 5}, "delta only": {"delta": 5},
            "both": {"on_hand": 5, "delta": 5}, "neither": {},
            "on_hand, delta null": {"on_hand": 5, "delta": None},
            "delta, on_hand null": {"delta": 5, "on_hand": None},
            "negative delta": {"delta": -5}, "zero delta": {"delta": 0},
            "on_hand 5.0": {"on_hand": 5.0}, "delta 5.0": {"delta": 5.0},
            "on_hand '5'": {"on_hand": "5"}, "negative on_hand": {"on_hand": -1},
            "with restock_id": {"delta": 5, "restock_id": "r-1"},
        }.items():
            cases.append((f"{kind}, {fields}", T.stock, KEY, stock(type=kind, **changes)))
    cases.append(("stock, unknown field", T.stock, KEY, stock(on_hand=5, bin="A3")))
    policy = {"sku": "MUG-RED", "location": "berlin", "lead_time_days": 5}
    cases += [("policy", T.catalog, KEY, policy),
              ("policy, lead time 5.0", T.catalog, KEY, {**policy, "lead_time_days": 5.0}),
              ("policy, unknown field", T.catalog, KEY, {**policy, "colour": "red"}),
              ("policy, service level 1", T.catalog, KEY, {**policy, "service_level": 1})]
    # keys: none is fine; one that names another SKU is refused whatever the payload says
    cases += [("order, no key", T.orders, None, order()),
              ("order, key of another SKU", T.orders, b"CAP-GRN@berlin", order()),
              ("order, key of another location", T.orders, b"MUG-RED@paris", order()),
              ("stock, key of another SKU", T.stock, b"CAP-GRN@berlin", stock(on_hand=1)),
              ("policy, key of another SKU", T.catalog, b"CAP-GRN@berlin", policy)]
    out = [(name, topic, _payload_key(key, value), json.dumps(value).encode())
           for name, topic, key, value in cases]
    out += [("order, not JSON", T.orders, KEY, b"{not json"),
            ("order, a JSON array", T.orders, KEY, b"[1, 2]"),
            ("order, not UTF-8", T.orders, KEY, b'{"sku": "\xff"}'),
            ("order, no value", T.orders, KEY, None),
            ("order, raw UTF-8 sku", T.orders, "TASSE-\u00e9@b".encode(),
             '{"event_id": "u", "type": "placed", "sku": "TASSE-\u00e9", "location": "b", '
             '"quantity": 1, "occurred_at": "2026-12-02T11:00:00Z"}'.encode())]
    return out


CORPUS = corpus()


@pytest.fixture(scope="module")
def validators(tmp_path_factory: pytest.TempPathFactory) -> dict[str, jsonschema.Validator]:
    """The schemas as a shop receives them (`shelfcast schemas export`), read from disk."""
    out = tmp_path_factory.mktemp("schemas")
    export_json_schemas(out)
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    # the date-time format is only checked when rfc3339-validator is installed: make sure
    assert not checker.conforms("2026-12-02T11:00:00+0000", "date-time")
    found = {}
    for topic, name in SCHEMA_NAMES.items():
        schema = json.loads((out / f"{name}.v1.schema.json").read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        found[topic] = jsonschema.Draft202012Validator(schema, format_checker=checker)
    return found


def schema_valid(validator: jsonschema.Validator, value: bytes | None) -> bool:
    if value is None:
        return False
    try:
        doc = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return validator.is_valid(doc)


def model_valid(topic: str, value: bytes | None) -> bool:
    try:
        decode(MODELS[topic], value)
    except InvalidEvent:
        return False
    return True


def worker_accepts(topic: str, key: bytes | None, value: bytes | None) -> tuple[bool, str]:
    model = make_forecaster("seasonal_naive")
    processor = BatchProcessor(ProcessorConfig.from_settings(SETTINGS), local_predict(model),
                               model.model_version)
    out = asyncio.run(processor.process([RawRecord(topic, 0, 0, key, value)], {}))
    kinds = [d.error_kind for d in out.dead_letters]
    return not kinds and out.accepted == 1, ",".join(kinds)


@pytest.mark.parametrize(("name", "topic", "key", "value"), CORPUS, ids=[c[0] for c in CORPUS])
def test_schema_and_worker_agree(validators, name, topic, key, value):
    by_schema = schema_valid(validators[topic], value)
    assert model_valid(topic, value) == by_schema, "the model and the exported schema differ"
    if topic == T.orders:
        fast = fast_order(value, SETTINGS.max_payload_bytes)
        columns = order_columns([value], SETTINGS.max_payload_bytes) if value else None
        assert fast is None or by_schema, "the fast path took what the contract refuses"
        assert columns is None or by_schema, "the column path took what the contract refuses"
        if fast is not None:
            model = decode(OrderEvent, value)
            assert fast.occurred_at == model.occurred_at.timestamp()
            assert fast.signed_quantity == model.signed_quantity()
            assert columns is None or columns.occurred_at == [fast.occurred_at]
    if topic == T.stock:
        fast_s = fast_stock(value, SETTINGS.max_payload_bytes)
        assert fast_s is None or by_schema, "the fast path took what the contract refuses"
        if fast_s is not None:
            model_s = decode(StockEvent, value)
            assert (fast_s.on_hand, fast_s.delta) == (model_s.on_hand, model_s.delta)
            assert fast_s.occurred_at == model_s.occurred_at.timestamp()
    key_ok = key is None or (by_schema and key == "{sku}@{location}".format(
        **json.loads(value or b"")).encode())
    accepted, kinds = worker_accepts(topic, key, value)
    assert accepted == (by_schema and key_ok), kinds
    if by_schema and not key_ok:
        assert kinds == "key_mismatch"


def test_the_corpus_says_what_the_contract_is():
    """The verdicts a shop reads in the README, spot-checked (the rest is agreement)."""
    names = {name: (topic, key, value) for name, topic, key, value in CORPUS}

    def verdict(name: str) -> bool:
        return worker_accepts(*names[name])[0]

    assert all(verdict(f"order at {ts!r}") for ts in VALID_TIMES)
    assert verdict("order at '2026-12-02 11:00:00+00'")  # PostgreSQL
    assert verdict("order at '2026-12-02T11:00:00+0530'")  # strftime %z
    assert not any(verdict(f"order at {ts!r}") for ts in INVALID_TIMES)
    assert verdict("snapshot, on_hand only") and verdict("adjustment, delta only")
    assert not verdict("snapshot, both") and not verdict("receipt, neither")
    assert not verdict("receipt, negative delta") and verdict("adjustment, negative delta")
    assert verdict("order, no key") and not verdict("order, key of another SKU")
    assert verdict("order, quantity 3.0") and not verdict("order, quantity '3'")


def test_a_run_of_valid_orders_decoded_as_columns_is_all_accepted():
    valid = [(k, v) for name, topic, k, v in CORPUS if topic == T.orders
             and any(name == f"order at {ts!r}" for ts in VALID_TIMES)]
    model = make_forecaster("seasonal_naive")
    processor = BatchProcessor(ProcessorConfig.from_settings(SETTINGS), local_predict(model),
                               model.model_version)
    # one SKU each: their times span 1990-2100, and one SKU's clock would make the rest late
    records = [RawRecord(T.orders, 0, i, f"S{i}@berlin".encode(), json.dumps(
        {**json.loads(v or b"{}"), "event_id": f"e{i}", "sku": f"S{i}"}).encode())
        for i, (_, v) in enumerate(valid)]
    out = asyncio.run(processor.process(records, {}))
    assert not out.dead_letters and out.accepted == len(records)


def test_exported_schemas_state_the_key_rule_and_the_stock_rules(tmp_path: Path):
    export_json_schemas(tmp_path)
    stock_schema = json.loads((tmp_path / "StockEvent.v1.schema.json").read_text())
    assert "allOf" in stock_schema
    order_schema = json.loads((tmp_path / "OrderEvent.v1.schema.json").read_text())
    assert "pattern" in order_schema["properties"]["occurred_at"]
    assert "sku@location" in order_schema["description"]


def test_the_spellings_of_one_instant_are_one_instant():
    spellings = ["2026-12-02T11:00:00Z", "2026-12-02t11:00:00z", "2026-12-02 11:00:00Z",
                 "2026-12-02T11:00:00+00:00", "2026-12-02 11:00:00+0000", "2026-12-02 11:00:00+00",
                 "2026-12-02T11:00:00-00", "2026-12-02T16:30:00+0530", "2026-12-02 16:30:00+05:30",
                 "2026-12-02T06:00:00-05", "2026-12-02T11:00:00.000000000Z"]
    instants = {decode(OrderEvent, json.dumps(order(occurred_at=ts)).encode())
                .occurred_at.timestamp() for ts in spellings}
    assert instants == {datetime(2026, 12, 2, 11, tzinfo=UTC).timestamp()}


def test_the_common_spellings_take_the_fast_and_the_column_path():
    """Accepting more must not send a stream's usual timestamps to the slow path (lowercase
    t/z does take it: fromisoformat in 3.11 reads neither)."""
    assert len(FAST_TIMES) > 40
    raws = [json.dumps(order(event_id=f"e{i}", occurred_at=ts)).encode()
            for i, ts in enumerate(FAST_TIMES)]
    singles = [fast_order(raw, SETTINGS.max_payload_bytes) for raw in raws]
    assert all(singles), [ts for ts, got in zip(FAST_TIMES, singles, strict=True) if not got]
    columns = order_columns(raws, SETTINGS.max_payload_bytes)
    assert columns is not None
    assert columns.occurred_at == [s.occurred_at for s in singles if s is not None]
    assert all(fast_stock(json.dumps(stock(on_hand=1, occurred_at=ts)).encode(),
                          SETTINGS.max_payload_bytes) for ts in FAST_TIMES)


def _timestamp_properties(schema: Any) -> list[dict[str, Any]]:
    """Every subschema carrying the timestamp pattern, anywhere in an exported schema."""
    found = []
    if isinstance(schema, dict):
        if schema.get("pattern") == TIMESTAMP_PATTERN:
            found.append(schema)
        for value in schema.values():
            found += _timestamp_properties(value)
    elif isinstance(schema, list):
        for value in schema:
            found += _timestamp_properties(value)
    return found


def test_every_exported_timestamp_states_the_pattern_and_no_format(tmp_path: Path):
    """A `format: date-time` beside the pattern would make strict validators refuse the space
    and `+0000` the worker takes; the pattern is the whole rule."""
    export_json_schemas(tmp_path)
    texts = {p.name: p.read_text() for p in tmp_path.glob("*.json")}
    assert all('"date-time"' not in text for text in texts.values())
    for name, text in texts.items():
        stamps = _timestamp_properties(json.loads(text))
        # the catalog has no time; planned promotions and holidays have days (their own
        # pattern: test_streams_planned_promotions.py, test_streams_holiday_calendar.py)
        assert stamps or name in ("SkuPolicy.v1.schema.json", "PromotionEvent.v1.schema.json",
                                  "HolidayEvent.v1.schema.json"), f"{name} has no timestamp"
        assert all(s["type"] == "string" and "format" not in s for s in stamps)
    order_time = json.loads(texts["OrderEvent.v1.schema.json"])["properties"]["occurred_at"]
    assert "+HHMM" in order_time["description"] and "space" in order_time["description"]
    # portable: plain groups and ASCII classes only (no \\d, \\s, lookaround, named groups)
    assert "\\" not in TIMESTAMP_PATTERN and "(?" not in TIMESTAMP_PATTERN


@pytest.mark.skipif(shutil.which("node") is None, reason="no node (ECMA 262 regexes) here")
def test_the_pattern_reads_the_same_in_ecma_262():
    """What a JavaScript validator (ajv) does with the exported pattern: same verdicts."""
    times = VALID_TIMES + INVALID_TIMES + ["2026-12-02T11:00:00Z\n"]
    script = ("const re = new RegExp(process.argv[1], 'u'); const times = JSON.parse("
              "require('fs').readFileSync(0, 'utf8')); "
              "console.log(JSON.stringify(times.map(t => re.test(t))))")
    out = subprocess.run(["node", "-e", script, TIMESTAMP_PATTERN], input=json.dumps(times),
                         capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(out.stdout) == [t in VALID_TIMES for t in times]
