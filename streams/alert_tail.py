"""Print alerts as they arrive: one readable line each (colour by severity) or JSON."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC
from typing import TextIO

from runtime.settings import Settings
from schemas import AlertEvent, sku_key
from streams.alert_feed import (
    EVERY_ALERT,
    AlertFilter,
    alerts_consumer,
    caught_up,
    decode_alert,
    start_consumer,
)

__all__ = ["format_alert", "tail_alerts"]

_SEVERITY_STYLE = {"critical": "\x1b[1;31m", "warning": "\x1b[33m", "info": "\x1b[36m"}
_RESET, _DIM = "\x1b[0m", "\x1b[2m"


def format_alert(alert: AlertEvent, *, colour: bool = False) -> str:
    """One readable line: time, severity, kind, sku@location (bucket), message."""
    when = alert.raised_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    severity = alert.severity.upper().ljust(8)
    where = sku_key(alert.sku, alert.location)
    if alert.bucket is not None:  # the day (or hour) the alert is about, not when it was sent
        bucket = alert.bucket.astimezone(UTC)
        where += f" ({bucket:%Y-%m-%d}{'' if bucket.hour == 0 else f' {bucket:%H}:00Z'})"
    if colour:
        style = _SEVERITY_STYLE.get(alert.severity, "")
        return (f"{_DIM}{when}{_RESET} {style}{severity}{_RESET} {alert.kind:<15} "
                f"\x1b[1m{where}{_RESET}  {alert.message}")
    return f"{when} {severity} {alert.kind:<15} {where}  {alert.message}"


async def tail_alerts(settings: Settings, *, wanted: AlertFilter = EVERY_ALERT,
                      follow: bool = True, from_beginning: bool = False, as_json: bool = False,
                      colour: bool = False, out: TextIO | None = None,
                      stop: asyncio.Event | None = None) -> int:
    """Print matching alerts; with `follow=False` stop at the topic's end. Returns how many."""
    stream = out or sys.stdout
    consumer = alerts_consumer(settings, group_id=None, from_beginning=from_beginning)
    await start_consumer(consumer, settings)
    printed = 0
    try:
        while stop is None or not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    alert = decode_alert(record, settings)
                    if alert is None or not wanted(alert):
                        continue
                    line = (alert.model_dump_json() if as_json
                            else format_alert(alert, colour=colour))
                    print(line, file=stream, flush=True)
                    printed += 1
            if not follow and not batch and await caught_up(consumer):
                break
    finally:
        await consumer.stop()
    return printed
