"""Alert subscriber pieces without Kafka: signatures, ledger, filtering, formatting, CLI parsing."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runtime.errors import ConfigError
from schemas import AlertEvent
from shelfcast import alerts_cli
from streams.alert_feed import ALERT_KINDS, AlertFilter
from streams.alert_forwarder import DeliveryLedger, sign, verify
from streams.alert_tail import format_alert

ALERT = AlertEvent(alert_id="a1", sku="MUG", location="wh1", kind="stockout_risk",
                   severity="critical", message="MUG@wh1: 60% chance of running out",
                   raised_at=datetime(2011, 3, 7, 10, 0, tzinfo=UTC))


def test_signature_is_hmac_sha256_of_timestamp_and_body():
    import hashlib
    import hmac

    sig = sign(b"k", "1700000000", b'{"a":1}')
    assert sig == "sha256=" + hmac.new(b"k", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
    assert verify(b"k", "1700000000", b'{"a":1}', sig, now_epoch_s=1700000010)
    assert not verify(b"k", "1700000000", b'{"a":2}', sig, now_epoch_s=1700000010)  # body changed
    assert not verify(b"other", "1700000000", b'{"a":1}', sig, now_epoch_s=1700000010)
    assert not verify(b"k", "1700000000", b'{"a":1}', sig, now_epoch_s=1700009999)  # replayed late
    assert not verify(b"k", "soon", b'{"a":1}', sig)


def test_alert_kinds_are_the_schemas():
    assert ALERT_KINDS == ("stockout_risk", "demand_anomaly", "stale_stock", "model_drift")


def test_ledger_survives_reopen_and_ignores_torn_lines(tmp_path: Path):
    path = tmp_path / "ledger.jsonl"
    ledger = DeliveryLedger(path)
    ledger.record("a1", "delivered", status=204, attempts=3)
    ledger.close()
    with path.open("a") as f:
        f.write('{"alert_id": "a2", "outc')  # a crash mid-write
    again = DeliveryLedger(path)
    assert "a1" in again and "a2" not in again
    again.close()


def test_filter_and_format():
    assert AlertFilter()(ALERT)
    assert AlertFilter(kinds=frozenset({"stockout_risk"}), sku="MUG")(ALERT)
    assert not AlertFilter(kinds=frozenset({"demand_anomaly"}))(ALERT)
    assert not AlertFilter(sku="CUP")(ALERT)
    assert not AlertFilter(location="wh2")(ALERT)
    line = format_alert(ALERT)
    assert line.startswith("2011-03-07 10:00:00Z CRITICAL") and "MUG@wh1" in line
    assert "\x1b[" not in line and "\x1b[1;31m" in format_alert(ALERT, colour=True)



def test_an_alert_line_names_the_bucket_it_is_about():
    about = ALERT.model_copy(update={"bucket": datetime(2011, 3, 6, tzinfo=UTC)})
    assert "MUG@wh1 (2011-03-06)" in format_alert(about)
    hourly = ALERT.model_copy(update={"bucket": datetime(2011, 3, 6, 14, tzinfo=UTC)})
    assert "MUG@wh1 (2011-03-06 14:00Z)" in format_alert(hourly)
    assert "MUG@wh1  " in format_alert(ALERT)  # older alerts, without a bucket: none shown


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shelfcast")
    sub = p.add_subparsers(dest="command", required=True)
    alerts_cli.add_commands(sub)
    sub.add_parser("worker")
    return p


def test_cli_parsing_and_dispatch():
    args = parser().parse_args(["alerts", "tail", "--kind", "stockout_risk", "--kind",
                                "stale_stock", "--sku", "MUG"])
    assert args.kind == ["stockout_risk", "stale_stock"] and args.sku == "MUG"
    assert alerts_cli.run(parser().parse_args(["worker"])) is None
    with pytest.raises(SystemExit):
        parser().parse_args(["alerts", "tail", "--kind", "nonsense"])
    bad = parser().parse_args(["alerts", "forward", "ftp://x"])
    with pytest.raises(ConfigError, match="http"):
        alerts_cli.run(bad)
    negative = parser().parse_args(["alerts", "forward", "http://x", "--max-attempts", "-1"])
    with pytest.raises(ConfigError, match="max-attempts"):
        alerts_cli.run(negative)
