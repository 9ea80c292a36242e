"""The alert forwarder: deliver the alerts topic to a webhook, signed, at least once.

Each alert's JSON is POSTed to the webhook:

- offsets are committed only after every alert of a batch was delivered (2xx) or rejected
  for good (4xx other than 408/425/429), so a crash or restart re-sends, never skips;
- transient failures (connection errors, timeouts, 5xx, 408, 425, 429) are retried with capped
  exponential backoff and jitter (`runtime.backoff`), honouring `Retry-After`;
- each outcome is appended to a ledger file (one JSON line per alert id, fsynced); an alert
  already in the ledger is not sent again, so a restart does not re-deliver what was recorded;
- every request is signed: `X-Shelfcast-Signature: sha256=<hex>` is the HMAC-SHA256 of
  `<X-Shelfcast-Timestamp>.<body>` under the shared secret (the timestamp is epoch seconds;
  the receiver recomputes the signature and rejects stale timestamps), and
  `X-Shelfcast-Alert-Id` lets it drop the rare duplicate.

`shelfcast alerts forward` (shelfcast/alerts_cli.py) parses its arguments and calls
`forward_alerts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import aiohttp
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from runtime.backoff import Backoff
from runtime.errors import ServiceUnavailable
from runtime.settings import Settings
from schemas import AlertEvent
from streams.alert_feed import (
    EVERY_ALERT,
    AlertFilter,
    alerts_consumer,
    caught_up,
    decode_alert,
    start_consumer,
)

__all__ = [
    "ALERT_ID_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WEBHOOK_RETRY",
    "DeliveryFailed",
    "DeliveryLedger",
    "ForwardStats",
    "forward_alerts",
    "sign",
    "verify",
]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Shelfcast-Signature"
TIMESTAMP_HEADER = "X-Shelfcast-Timestamp"
ALERT_ID_HEADER = "X-Shelfcast-Alert-Id"
_RETRYABLE_STATUS = frozenset({408, 425, 429})

# 0.5 s doubling to 30 s, jittered, forever: an alert is never dropped for a webhook outage
WEBHOOK_RETRY = Backoff(base_delay_s=0.5, max_delay_s=30.0, max_attempts=0)


# --------------------------------------------------------------------------- signatures


def sign(secret: bytes, epoch_s: str, body: bytes) -> str:
    """The signature header value: `sha256=` + hex HMAC-SHA256 of `epoch_s.body`."""
    mac = hmac.new(secret, epoch_s.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(secret: bytes, epoch_s: str, body: bytes, signature: str, *,
           max_age_s: float = 300.0, now_epoch_s: float | None = None) -> bool:
    """What a receiver does: constant-time compare, and refuse timestamps older than max_age_s."""
    try:
        age_s = (time.time() if now_epoch_s is None else now_epoch_s) - float(epoch_s)
    except ValueError:
        return False
    if abs(age_s) > max_age_s:
        return False
    return hmac.compare_digest(sign(secret, epoch_s, body), signature)


# --------------------------------------------------------------------------- ledger, stats


class DeliveryLedger:
    """Append-only JSON-lines record of each alert id's outcome (`delivered` or `rejected`).

    Written (and fsynced) before the Kafka offset moves past the alert: the ledger, not the
    consumer offset, is what says an alert was handled.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.outcomes: dict[str, str] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    entry = json.loads(line)
                    self.outcomes[entry["alert_id"]] = entry["outcome"]
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = path.open("a", encoding="utf-8")

    def __contains__(self, alert_id: object) -> bool:
        return alert_id in self.outcomes

    def record(self, alert_id: str, outcome: str, *, status: int | None, attempts: int) -> None:
        entry = {"alert_id": alert_id, "outcome": outcome, "status": status,
                 "attempts": attempts, "at": datetime.now(UTC).isoformat()}
        self._file.write(json.dumps(entry) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.outcomes[alert_id] = outcome

    def close(self) -> None:
        self._file.close()


@dataclass
class ForwardStats:
    """What a forwarder run did."""

    delivered: int = 0
    rejected: int = 0
    skipped_known: int = 0
    filtered: int = 0
    retries: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


class DeliveryFailed(ServiceUnavailable):
    """The webhook kept failing for `max_attempts` tries: stop without committing."""


# --------------------------------------------------------------------------- delivery


@dataclass(frozen=True)
class _Webhook:
    """Where and how alerts are POSTed."""

    url: str
    secret: bytes | None
    backoff: Backoff
    timeout_s: float


def _retry_after_s(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


async def _deliver(session: aiohttp.ClientSession, hook: _Webhook, alert: AlertEvent,
                   body: bytes, stats: ForwardStats) -> tuple[str, int | None, int]:
    """POST until 2xx (delivered) or a permanent 4xx (rejected); returns outcome, status, tries."""
    attempt = 0
    while True:
        attempt += 1
        sent_at_epoch_s = str(int(time.time()))
        headers = {"Content-Type": "application/json", ALERT_ID_HEADER: alert.alert_id,
                   TIMESTAMP_HEADER: sent_at_epoch_s, "User-Agent": "shelfcast-alerts-forward"}
        if hook.secret is not None:
            headers[SIGNATURE_HEADER] = sign(hook.secret, sent_at_epoch_s, body)
        status: int | None = None
        retry_after_s: float | None = None
        try:
            async with session.post(hook.url, data=body, headers=headers,
                                    timeout=aiohttp.ClientTimeout(total=hook.timeout_s)) as resp:
                status = resp.status
                stats.statuses[status] = stats.statuses.get(status, 0) + 1
                retry_after_s = _retry_after_s(resp.headers)
                await resp.read()
            if 200 <= status < 300:
                return "delivered", status, attempt
            if 400 <= status < 500 and status not in _RETRYABLE_STATUS:
                log.error("webhook rejected alert %s with HTTP %d; not retrying", alert.alert_id,
                          status)
                return "rejected", status, attempt
            why = f"HTTP {status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            why = f"{type(exc).__name__}: {exc}"
        if hook.backoff.exhausted(attempt):
            raise DeliveryFailed(
                f"webhook {hook.url} failed {attempt} times for alert {alert.alert_id} "
                f"(last: {why}); offsets not committed, a restart resumes from it")
        delay_s = hook.backoff.delay_s(attempt, retry_after_s)
        stats.retries += 1
        log.warning("delivering alert %s failed (%s); retry %d in %.2fs", alert.alert_id, why,
                    attempt, delay_s)
        await asyncio.sleep(delay_s)


async def forward_alerts(
    settings: Settings,
    url: str,
    *,
    ledger_path: Path,
    secret: bytes | None,
    wanted: AlertFilter = EVERY_ALERT,
    group_id: str | None = None,
    from_beginning: bool = False,
    backoff: Backoff = WEBHOOK_RETRY,
    timeout_s: float = 10.0,
    idle_exit_s: float | None = None,
    stop: asyncio.Event | None = None,
) -> ForwardStats:
    """Forward alerts to `url` until `stop` is set (or, with `idle_exit_s`, once caught up and
    idle that long). At least once: see the module docstring."""
    hook = _Webhook(url=url, secret=secret, backoff=backoff, timeout_s=timeout_s)
    stats = ForwardStats()
    ledger = DeliveryLedger(ledger_path)
    consumer = alerts_consumer(settings, group_id=group_id or f"{settings.app_id}-alerts-forward",
                               from_beginning=from_beginning)
    await start_consumer(consumer, settings)
    loop = asyncio.get_running_loop()
    last_activity_s = loop.time()
    try:
        async with aiohttp.ClientSession() as session:
            while stop is None or not stop.is_set():
                batch = await consumer.getmany(timeout_ms=500, max_records=100)
                if batch:
                    last_activity_s = loop.time()
                for tp, records in batch.items():
                    for record in records:
                        await _handle(record, session, hook, ledger, wanted, stats, settings)
                    await _commit(consumer, tp, records[-1].offset + 1)
                if (idle_exit_s is not None and not batch
                        and loop.time() - last_activity_s >= idle_exit_s
                        and await caught_up(consumer)):
                    break
    finally:
        ledger.close()
        await consumer.stop()
    return stats


async def _commit(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
    # A refused commit (say, a rebalance while a webhook was down) only means these alerts
    # come again; the ledger then skips them.
    try:
        await consumer.commit({TopicPartition(tp.topic, tp.partition): offset})
    except KafkaError as exc:
        log.warning("offset commit for %s[%d] refused (%s); the ledger dedupes the replay",
                    tp.topic, tp.partition, exc)


async def _handle(record: ConsumerRecord, session: aiohttp.ClientSession, hook: _Webhook,
                  ledger: DeliveryLedger, wanted: AlertFilter, stats: ForwardStats,
                  settings: Settings) -> None:
    alert = decode_alert(record, settings)
    if alert is None:
        return
    if not wanted(alert):
        stats.filtered += 1
        return
    if alert.alert_id in ledger:
        stats.skipped_known += 1
        return
    outcome, status, attempts = await _deliver(session, hook, alert, record.value, stats)
    ledger.record(alert.alert_id, outcome, status=status, attempts=attempts)
    if outcome == "delivered":
        stats.delivered += 1
    else:
        stats.rejected += 1
