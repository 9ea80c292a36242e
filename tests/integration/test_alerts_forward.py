"""The alert forwarder and tail (`shelfcast alerts tail|forward`) against a real Kafka broker
and a local webhook receiver.

The receiver is down (503, then a dropped connection) for the first requests and then
recovers: every alert arrives, signed, at least once; the ledger records each id; a second
run sends nothing again; a permanent 4xx is recorded as rejected, not retried forever.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer

from runtime.backoff import Backoff
from runtime.settings import Settings
from schemas import AlertEvent, encode, sku_key
from shelfcast import alerts_cli
from streams.alert_feed import AlertFilter
from streams.alert_forwarder import DeliveryFailed, forward_alerts, verify
from streams.alert_tail import tail_alerts
from streams.topics import ensure_topics

SECRET = b"test-secret"
T0 = datetime(2011, 3, 7, 10, 0, tzinfo=UTC)


def alerts() -> list[AlertEvent]:
    out = []
    for i, (sku, kind, severity) in enumerate([
        ("MUG", "stockout_risk", "critical"), ("MUG", "demand_anomaly", "warning"),
        ("CUP", "stockout_risk", "warning"), ("PLATE", "stale_stock", "info"),
        ("CUP", "demand_anomaly", "warning"),
    ]):
        out.append(AlertEvent(alert_id=f"a{i}", sku=sku, location="wh1", kind=kind,
                              severity=severity, message=f"{sku}: {kind} #{i}",
                              details={"i": i}, raised_at=T0 + timedelta(hours=i)))
    return out


class Receiver:
    """A webhook endpoint that fails its first `fail_first` requests, then accepts."""

    def __init__(self, fail_first: int, reject_ids: frozenset[str] = frozenset()) -> None:
        self.fail_first = fail_first
        self.reject_ids = reject_ids
        self.requests = 0
        self.accepted: list[dict] = []
        self.bad_signatures = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        body = await request.read()
        if self.requests <= self.fail_first:
            if self.requests % 2:
                return web.Response(status=503, headers={"Retry-After": "0"})
            request.transport.close()  # a dropped connection, as a crashing receiver gives
            return web.Response(status=500)
        ok = verify(SECRET, request.headers["X-Shelfcast-Timestamp"], body,
                    request.headers["X-Shelfcast-Signature"])
        if not ok:
            self.bad_signatures += 1
            return web.Response(status=401)
        alert = json.loads(body)
        assert request.headers["X-Shelfcast-Alert-Id"] == alert["alert_id"]
        if alert["alert_id"] in self.reject_ids:
            return web.Response(status=422)
        self.accepted.append(alert)
        return web.Response(status=204)


async def serve(receiver: Receiver) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/hook"


@pytest.fixture
async def alert_settings(kafka_bootstrap: str, fresh_topic_prefix: str) -> Settings:
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"{fresh_topic_prefix}.",
                        shop_topic_prefix=f"{fresh_topic_prefix}.shop.",
                        app_id=f"{fresh_topic_prefix}-app", topic_partitions=2)
    await ensure_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for a in alerts():
            await producer.send_and_wait(settings.topics.alerts, encode(a),
                                         key=sku_key(a.sku, a.location).encode())
    finally:
        await producer.stop()
    return settings


@pytest.mark.timeout(120)
async def test_forwarder_survives_a_failing_receiver_and_delivers_each_alert(
    alert_settings: Settings, tmp_path: Path
):
    receiver = Receiver(fail_first=4)
    runner, url = await serve(receiver)
    ledger = tmp_path / "ledger.jsonl"
    fast = Backoff(base_delay_s=0.05, max_delay_s=0.2)
    try:
        stats = await forward_alerts(alert_settings, url, ledger_path=ledger, secret=SECRET,
                                     from_beginning=True, backoff=fast, idle_exit_s=1.0,
                                     timeout_s=5)
        assert stats.delivered == 5 and stats.retries >= 4
        assert receiver.bad_signatures == 0
        assert {a["alert_id"] for a in receiver.accepted} == {f"a{i}" for i in range(5)}
        lines = [json.loads(x) for x in ledger.read_text().splitlines()]
        assert sorted(x["alert_id"] for x in lines) == [f"a{i}" for i in range(5)]
        assert all(x["outcome"] == "delivered" for x in lines)

        # A restart from the beginning (new group) re-reads everything but sends nothing.
        again = await forward_alerts(alert_settings, url, ledger_path=ledger, secret=SECRET,
                                     group_id="another-group", from_beginning=True,
                                     backoff=fast, idle_exit_s=0.5)
        assert again.delivered == 0 and again.skipped_known == 5
        assert len(receiver.accepted) == 5
    finally:
        await runner.cleanup()


@pytest.mark.timeout(120)
async def test_forwarder_records_permanent_rejections_and_filters(
    alert_settings: Settings, tmp_path: Path
):
    receiver = Receiver(fail_first=0, reject_ids=frozenset({"a0"}))
    runner, url = await serve(receiver)
    try:
        stats = await forward_alerts(
            alert_settings, url, ledger_path=tmp_path / "l.jsonl", secret=SECRET,
            wanted=AlertFilter(kinds=frozenset({"stockout_risk"})), from_beginning=True,
            backoff=Backoff(base_delay_s=0.05, max_delay_s=0.1), idle_exit_s=0.5)
    finally:
        await runner.cleanup()
    assert (stats.delivered, stats.rejected, stats.filtered) == (1, 1, 3)
    assert [a["alert_id"] for a in receiver.accepted] == ["a2"]


@pytest.mark.timeout(120)
async def test_forwarder_gives_up_without_committing_when_told(
    alert_settings: Settings, tmp_path: Path
):
    receiver = Receiver(fail_first=10_000)
    runner, url = await serve(receiver)
    try:
        with pytest.raises(DeliveryFailed, match="offsets not committed"):
            await forward_alerts(alert_settings, url, ledger_path=tmp_path / "l.jsonl",
                                 secret=SECRET, from_beginning=True, idle_exit_s=0.5,
                                 backoff=Backoff(base_delay_s=0.01, max_delay_s=0.02,
                                                 max_attempts=3))
    finally:
        await runner.cleanup()
    assert not (tmp_path / "l.jsonl").read_text()


@pytest.mark.timeout(120)
async def test_tail_filters_and_formats(alert_settings: Settings):
    out = io.StringIO()
    n = await tail_alerts(alert_settings, wanted=AlertFilter(sku="CUP"), follow=False,
                          from_beginning=True, out=out)
    lines = out.getvalue().splitlines()
    assert n == 2 and len(lines) == 2
    assert "CUP@wh1" in lines[0] and "stockout_risk" in lines[0] and "WARNING" in lines[0]
    assert lines[0].startswith("2011-03-07 12:00:00Z")

    coloured = io.StringIO()
    await tail_alerts(alert_settings, wanted=AlertFilter(kinds=frozenset({"stockout_risk"})),
                      follow=False, from_beginning=True, colour=True, out=coloured)
    assert "\x1b[1;31mCRITICAL" in coloured.getvalue()


@pytest.mark.timeout(120)
async def test_cli_entry_tail_json(alert_settings: Settings, capsys: pytest.CaptureFixture):
    parser = argparse.ArgumentParser(prog="shelfcast")
    sub = parser.add_subparsers(dest="command", required=True)
    alerts_cli.add_commands(sub)
    args = parser.parse_args(["alerts", "tail", "--from-beginning", "--no-follow", "--json",
                              "--kind", "stale_stock"])
    assert alerts_cli.run(argparse.Namespace(command="worker")) is None
    code = await asyncio.to_thread(alerts_cli.run, args, lambda: alert_settings)
    assert code == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["alert_id"] for r in rows] == ["a3"]
