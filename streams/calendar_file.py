"""A holiday calendar from a CSV file, published to `shop.calendar` (`shelfcast calendar
publish`): how an operator loads a region's public holidays or a store's closures.

One holiday per row, with a header: `location` (`*`: every location) and `start_day`
(`YYYY-MM-DD`; `day` is read as both ends), optional `end_day` (default: `start_day`),
`name`, `event_id`, `version`, `cancelled` (true/false). A row without an `event_id` gets one
derived from its location, days and name, so publishing the same file again changes nothing
(the worker keeps it as a duplicate). A file with any bad row publishes nothing: the error
names the row.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Sequence
from pathlib import Path

from aiokafka import AIOKafkaProducer
from pydantic import ValidationError

from runtime.errors import ConfigError
from runtime.kafka_config import client_kwargs
from runtime.settings import Settings
from schemas import HolidayEvent, deterministic_id, encode
from streams.topics import TopicSpec, create_topics

__all__ = ["publish_calendar", "read_calendar_csv"]

_TRUE = frozenset({"1", "true", "yes", "y", "t"})
_FALSE = frozenset({"", "0", "false", "no", "n", "f"})


def _flag(cell: str, where: str) -> bool:
    value = cell.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{where}: cancelled must be true or false, got {cell!r}")


def read_calendar_csv(path: Path) -> list[HolidayEvent]:
    """The holidays of the CSV file at `path` (gzipped when it ends in .gz), checked as the
    worker checks them; a one-line ConfigError naming the first bad row."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        text = raw.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError, gzip.BadGzipFile) as exc:
        raise ConfigError(f"cannot read the calendar {path}: {exc}") from None
    reader = csv.DictReader(io.StringIO(text))
    columns = set(reader.fieldnames or ())
    if "location" not in columns or not columns & {"start_day", "day"}:
        raise ConfigError(f"{path}: the header needs `location` and `start_day` (or `day`), "
                          f"got {sorted(columns)}")
    events = []
    for line, row in enumerate(reader, start=2):
        where = f"{path}:{line}"
        start = (row.get("start_day") or row.get("day") or "").strip()
        end = (row.get("end_day") or "").strip() or (row.get("day") or "").strip() or start
        location = (row.get("location") or "").strip()
        name = (row.get("name") or "").strip() or None
        fields: dict[str, object] = {
            "event_id": (row.get("event_id") or "").strip()
            or deterministic_id("holiday", location, start, end, name or ""),
            "location": location, "start_day": start, "end_day": end, "name": name,
            "cancelled": _flag(row.get("cancelled") or "", where)}
        if (row.get("version") or "").strip():
            fields["version"] = (row.get("version") or "").strip()
        try:
            events.append(HolidayEvent.model_validate_json(_json(fields)))
        except ValidationError as exc:
            first = exc.errors()[0]
            at = ".".join(str(p) for p in first["loc"]) or "row"
            raise ConfigError(f"{where}: {at}: {first['msg']}") from None
    return events


def _json(fields: dict[str, object]) -> str:
    """The row as the JSON a shop would send (numbers where the contract has them)."""
    out = dict(fields)
    if "version" in out:
        text = str(out["version"])
        out["version"] = int(text) if text.isdigit() else text
    return json.dumps(out)


async def publish_calendar(settings: Settings, events: Sequence[HolidayEvent]) -> int:
    """Send `events` to the calendar topic (created compacted when missing), keyed by
    event id, each acknowledged by the broker; returns how many were sent."""
    topic = settings.topics.calendar
    await create_topics(settings, [TopicSpec(topic, settings.topic_partitions, compacted=True)])
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all")
    await producer.start()
    try:
        for event in events:
            await producer.send(topic, key=event.event_id.encode(), value=encode(event))
        await producer.flush()
    finally:
        await producer.stop()
    return len(events)
