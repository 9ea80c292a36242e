"""`shelfcast alerts tail|forward`: read the alerts topic, or deliver it to a webhook.

`tail` prints alerts as they arrive (colour on a terminal, `--json` for scripts), filtered by
kind and SKU. `forward URL` POSTs each alert's JSON to a webhook, at least once:

- offsets are committed only after every alert of a batch was delivered (2xx) or rejected
  for good (4xx other than 408/429), so a crash or restart re-sends, never skips;
- transient failures (connection errors, timeouts, 5xx, 408, 429) are retried with capped
  exponential backoff and jitter, honouring `Retry-After`;
- each outcome is appended to a ledger file (one JSON line per alert id, fsynced); an alert
  already in the ledger is not sent again, so a restart does not re-deliver what was recorded;
- every request is signed: `X-Shelfcast-Signature: sha256=<hex>` is the HMAC-SHA256 of
  `<X-Shelfcast-Timestamp>.<body>` under the shared secret (the receiver recomputes it and
  rejects stale timestamps), and `X-Shelfcast-Alert-Id` lets it drop the rare duplicate.

The lead wires it with `alerts_cli.add_commands(sub)` in the parser and
`if (code := alerts_cli.run(args)) is not None: return code` in the dispatcher.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TextIO

import aiohttp
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from runtime.errors import ConfigError, ServiceUnavailable
from runtime.kafka_config import client_kwargs
from runtime.settings import Settings
from schemas import AlertEvent, InvalidEvent, decode

__all__ = [
    "ALERT_KINDS",
    "AlertFilter",
    "DeliveryFailed",
    "DeliveryLedger",
    "ForwardStats",
    "RetryBackoff",
    "add_commands",
    "format_alert",
    "forward_alerts",
    "run",
    "sign",
    "tail_alerts",
    "verify",
]

log = logging.getLogger(__name__)

ALERT_KINDS = ("stockout_risk", "demand_anomaly", "stale_stock", "model_drift")
SECRET_ENV = "SHELFCAST_ALERTS_WEBHOOK_SECRET"
SIGNATURE_HEADER = "X-Shelfcast-Signature"
TIMESTAMP_HEADER = "X-Shelfcast-Timestamp"
ALERT_ID_HEADER = "X-Shelfcast-Alert-Id"
_RETRYABLE_STATUS = frozenset({408, 425, 429})

EPILOG = """examples:
  shelfcast alerts tail                                  # follow new alerts, coloured
  shelfcast alerts tail --from-beginning --kind stockout_risk --sku MUG --no-follow
  SHELFCAST_ALERTS_WEBHOOK_SECRET=s3cret shelfcast alerts forward https://ops.example/hooks/shelfcast
"""


# --------------------------------------------------------------------------- signatures


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature header value: `sha256=` + hex HMAC-SHA256 of `timestamp.body`."""
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(secret: bytes, timestamp: str, body: bytes, signature: str, *,
           max_age_s: float = 300.0, now: float | None = None) -> bool:
    """What a receiver does: constant-time compare, and refuse timestamps older than max_age_s."""
    try:
        age = (time.time() if now is None else now) - float(timestamp)
    except ValueError:
        return False
    if abs(age) > max_age_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


# --------------------------------------------------------------------------- filtering / tail


@dataclass(frozen=True)
class AlertFilter:
    """Which alerts a subscriber wants: any of `kinds` (all if empty), SKU exact match."""

    kinds: frozenset[str] = frozenset()
    sku: str | None = None
    location: str | None = None

    def __call__(self, alert: AlertEvent) -> bool:
        if self.kinds and alert.kind not in self.kinds:
            return False
        if self.sku is not None and alert.sku != self.sku:
            return False
        return self.location is None or alert.location == self.location


_SEVERITY_STYLE = {"critical": "\x1b[1;31m", "warning": "\x1b[33m", "info": "\x1b[36m"}
_RESET, _DIM = "\x1b[0m", "\x1b[2m"


def format_alert(alert: AlertEvent, *, colour: bool = False) -> str:
    """One readable line: time, severity, kind, sku@location (bucket), message."""
    when = alert.raised_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    severity = alert.severity.upper().ljust(8)
    where = f"{alert.sku}@{alert.location}"
    if alert.bucket is not None:  # the day (or hour) the alert is about, not when it was sent
        bucket = alert.bucket.astimezone(UTC)
        where += f" ({bucket:%Y-%m-%d}{'' if bucket.hour == 0 else f' {bucket:%H}:00Z'})"
    if colour:
        style = _SEVERITY_STYLE.get(alert.severity, "")
        return (f"{_DIM}{when}{_RESET} {style}{severity}{_RESET} {alert.kind:<15} "
                f"\x1b[1m{where}{_RESET}  {alert.message}")
    return f"{when} {severity} {alert.kind:<15} {where}  {alert.message}"


def _consumer(settings: Settings, *, group_id: str | None, from_beginning: bool
              ) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        settings.topics.alerts, **client_kwargs(settings), group_id=group_id,
        enable_auto_commit=False, auto_offset_reset="earliest" if from_beginning else "latest",
        session_timeout_ms=int(settings.kafka_session_timeout_s * 1000),
        heartbeat_interval_ms=max(100, int(settings.kafka_session_timeout_s * 250)))


async def _start(consumer: AIOKafkaConsumer, settings: Settings) -> None:
    try:
        await consumer.start()
    except KafkaError as exc:
        await consumer.stop()
        raise ServiceUnavailable(
            f"cannot reach Kafka at {settings.kafka_bootstrap} ({type(exc).__name__}); check "
            "SHELFCAST_KAFKA_BOOTSTRAP and that the broker is up") from exc


def _decode(record: ConsumerRecord, settings: Settings) -> AlertEvent | None:
    try:
        return decode(AlertEvent, record.value, max_bytes=settings.max_payload_bytes)
    except InvalidEvent as exc:
        log.warning("skipping %s[%d]@%d: not an AlertEvent (%s)", record.topic,
                    record.partition, record.offset, exc)
        return None


async def _caught_up(consumer: AIOKafkaConsumer) -> bool:
    parts = consumer.assignment()
    if not parts:
        return False
    ends = await consumer.end_offsets(list(parts))
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


async def tail_alerts(settings: Settings, *, wanted: AlertFilter = AlertFilter(),
                      follow: bool = True, from_beginning: bool = False, as_json: bool = False,
                      colour: bool = False, out: TextIO | None = None,
                      stop: asyncio.Event | None = None) -> int:
    """Print matching alerts; with `follow=False` stop at the topic's end. Returns how many."""
    stream = out or sys.stdout
    consumer = _consumer(settings, group_id=None, from_beginning=from_beginning)
    await _start(consumer, settings)
    printed = 0
    try:
        while stop is None or not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    alert = _decode(record, settings)
                    if alert is None or not wanted(alert):
                        continue
                    line = (alert.model_dump_json() if as_json
                            else format_alert(alert, colour=colour))
                    print(line, file=stream, flush=True)
                    printed += 1
            if not follow and not batch and await _caught_up(consumer):
                break
    finally:
        await consumer.stop()
    return printed


# --------------------------------------------------------------------------- forward


@dataclass(frozen=True)
class RetryBackoff:
    """Delays base * 2**n capped at max_delay_s, with jitter; `max_attempts` 0 = forever."""

    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_attempts: int = 0

    def delay_s(self, failed_attempts: int, retry_after_s: float | None = None) -> float:
        capped = min(self.max_delay_s, self.base_delay_s * 2.0 ** (failed_attempts - 1))
        delay = capped * random.uniform(0.5, 1.0)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.max_delay_s))
        return delay


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


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


async def _deliver(session: aiohttp.ClientSession, url: str, secret: bytes | None,
                   alert: AlertEvent, body: bytes, backoff: RetryBackoff, stats: ForwardStats,
                   timeout_s: float) -> tuple[str, int | None, int]:
    """POST until 2xx (delivered) or a permanent 4xx (rejected); returns outcome, status, tries."""
    attempt = 0
    while True:
        attempt += 1
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", ALERT_ID_HEADER: alert.alert_id,
                   TIMESTAMP_HEADER: timestamp, "User-Agent": "shelfcast-alerts-forward"}
        if secret is not None:
            headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
        status: int | None = None
        retry_after: float | None = None
        try:
            async with session.post(url, data=body, headers=headers,
                                    timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                status = resp.status
                stats.statuses[status] = stats.statuses.get(status, 0) + 1
                retry_after = _retry_after(resp.headers)
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
        if backoff.max_attempts and attempt >= backoff.max_attempts:
            raise DeliveryFailed(
                f"webhook {url} failed {attempt} times for alert {alert.alert_id} (last: {why}); "
                "offsets not committed, a restart resumes from it")
        delay = backoff.delay_s(attempt, retry_after)
        stats.retries += 1
        log.warning("delivering alert %s failed (%s); retry %d in %.2fs", alert.alert_id, why,
                    attempt, delay)
        await asyncio.sleep(delay)


async def forward_alerts(
    settings: Settings,
    url: str,
    *,
    ledger_path: Path,
    secret: bytes | None,
    wanted: AlertFilter = AlertFilter(),
    group_id: str | None = None,
    from_beginning: bool = False,
    backoff: RetryBackoff = RetryBackoff(),
    timeout_s: float = 10.0,
    idle_exit_s: float | None = None,
    stop: asyncio.Event | None = None,
) -> ForwardStats:
    """Forward alerts to `url` until `stop` is set (or, with `idle_exit_s`, once caught up and
    idle that long). At least once: see the module docstring."""
    stats = ForwardStats()
    ledger = DeliveryLedger(ledger_path)
    consumer = _consumer(settings, group_id=group_id or f"{settings.app_id}-alerts-forward",
                         from_beginning=from_beginning)
    await _start(consumer, settings)
    loop = asyncio.get_running_loop()
    last_activity = loop.time()
    try:
        async with aiohttp.ClientSession() as session:
            while stop is None or not stop.is_set():
                batch = await consumer.getmany(timeout_ms=500, max_records=100)
                if batch:
                    last_activity = loop.time()
                for tp, records in batch.items():
                    for record in records:
                        await _handle(record, session, url, secret, ledger, wanted, backoff,
                                      stats, timeout_s, settings)
                    await _commit(consumer, tp, records[-1].offset + 1)
                if (idle_exit_s is not None and not batch
                        and loop.time() - last_activity >= idle_exit_s
                        and await _caught_up(consumer)):
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


async def _handle(record: ConsumerRecord, session: aiohttp.ClientSession, url: str,
                  secret: bytes | None, ledger: DeliveryLedger, wanted: AlertFilter,
                  backoff: RetryBackoff, stats: ForwardStats, timeout_s: float,
                  settings: Settings) -> None:
    alert = _decode(record, settings)
    if alert is None:
        return
    if not wanted(alert):
        stats.filtered += 1
        return
    if alert.alert_id in ledger:
        stats.skipped_known += 1
        return
    outcome, status, attempts = await _deliver(session, url, secret, alert, record.value,
                                               backoff, stats, timeout_s)
    ledger.record(alert.alert_id, outcome, status=status, attempts=attempts)
    if outcome == "delivered":
        stats.delivered += 1
    else:
        stats.rejected += 1


# --------------------------------------------------------------------------- CLI


def add_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Add `alerts tail` and `alerts forward` to the `shelfcast` sub-parsers."""
    alerts = subparsers.add_parser(
        "alerts", help="follow the alerts topic or forward it to a webhook",
        description="Alert subscribers: print alerts as they come, or deliver them to a "
        "webhook at least once with signed requests.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = alerts.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")

    def filters(p: argparse.ArgumentParser) -> None:
        p.add_argument("--kind", action="append", choices=ALERT_KINDS, default=[],
                       help="only this kind (repeatable)")
        p.add_argument("--sku", help="only this SKU")
        p.add_argument("--location", help="only this location")
        p.add_argument("--from-beginning", action="store_true",
                       help="start at the oldest retained alert (default: new alerts only)")

    tail = sub.add_parser("tail", help="print alerts as they arrive",
                          epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    filters(tail)
    tail.add_argument("--no-follow", action="store_true", help="exit at the end of the topic")
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    tail.add_argument("--colour", "--color", choices=("auto", "always", "never"),
                      default="auto", help="colour by severity (auto: on a terminal)")

    fwd = sub.add_parser(
        "forward", help="POST each alert to a webhook (retries, HMAC signature, at least once)",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    fwd.add_argument("url", help="webhook URL (http or https)")
    filters(fwd)
    fwd.add_argument("--ledger", type=Path, default=Path("shelfcast-alerts-forward.jsonl"),
                     help="delivery ledger file, one JSON line per alert id "
                     "(default: %(default)s)")
    fwd.add_argument("--group", help="consumer group (default: <app id>-alerts-forward)")
    fwd.add_argument("--secret-env", default=SECRET_ENV,
                     help="environment variable holding the HMAC secret (default: %(default)s)")
    fwd.add_argument("--max-attempts", type=int, default=0,
                     help="give up (exit 1, offsets not committed) after N tries; 0 = forever")
    fwd.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    fwd.add_argument("--exit-when-idle", type=float, default=None, metavar="SECONDS",
                     help="exit once caught up and idle this long (batch jobs, tests)")
    return alerts


def _filter(args: argparse.Namespace) -> AlertFilter:
    return AlertFilter(kinds=frozenset(args.kind), sku=args.sku, location=args.location)


def run(args: argparse.Namespace, settings_factory: Callable[[], Settings] = Settings
        ) -> int | None:
    """Run an `alerts` command; None when `args` is not one (the caller dispatches on)."""
    if getattr(args, "command", None) != "alerts":
        return None
    settings = settings_factory()
    if args.alerts_command == "tail":
        colour = args.colour == "always" or (args.colour == "auto" and sys.stdout.isatty())
        asyncio.run(tail_alerts(settings, wanted=_filter(args), follow=not args.no_follow,
                                from_beginning=args.from_beginning, as_json=args.json,
                                colour=colour))
        return 0
    if args.alerts_command == "forward":
        if not args.url.startswith(("http://", "https://")):
            raise ConfigError(f"webhook URL must be http(s)://..., got {args.url!r}")
        secret_text = os.environ.get(args.secret_env)
        if not secret_text:
            log.warning("%s is not set: webhook requests go out unsigned", args.secret_env)
        stats = asyncio.run(forward_alerts(
            settings, args.url, ledger_path=args.ledger,
            secret=secret_text.encode() if secret_text else None, wanted=_filter(args),
            group_id=args.group, from_beginning=args.from_beginning,
            backoff=RetryBackoff(max_attempts=args.max_attempts), timeout_s=args.timeout,
            idle_exit_s=args.exit_when_idle))
        print(f"delivered {stats.delivered}, rejected {stats.rejected}, "
              f"already delivered {stats.skipped_known}, retries {stats.retries}")
        return 0
    raise AssertionError(args.alerts_command)

