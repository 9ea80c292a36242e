"""`shelfcast alerts tail|forward`: the arguments of the alert subscribers.

`tail` prints alerts as they arrive (streams/alert_tail.py: colour on a terminal, `--json` for
scripts), filtered by kind and SKU. `forward URL` POSTs each alert's JSON to a webhook at least
once, signed, with retries and a delivery ledger (streams/alert_forwarder.py says how). This
module only parses arguments and calls them.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.errors import ConfigError
from runtime.settings import Settings
from streams.alert_feed import ALERT_KINDS, AlertFilter

__all__ = ["SECRET_ENV", "add_commands", "run"]

log = logging.getLogger(__name__)

SECRET_ENV = "SHELFCAST_ALERTS_WEBHOOK_SECRET"

EPILOG = """examples:
  shelfcast alerts tail                                  # follow new alerts, coloured
  shelfcast alerts tail --from-beginning --kind stockout_risk --sku MUG --no-follow
  SHELFCAST_ALERTS_WEBHOOK_SECRET=s3cret shelfcast alerts forward https://ops.example/hooks/shelfcast
"""


def add_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Add `alerts tail` and `alerts forward` to the `shelfcast` sub-parsers."""
    alerts: argparse.ArgumentParser = subparsers.add_parser(
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
    # imported here: the forwarder brings aiohttp (~0.13 s), which no other command needs
    from streams.alert_forwarder import WEBHOOK_RETRY, forward_alerts
    from streams.alert_tail import tail_alerts

    if args.alerts_command == "tail":
        colour = args.colour == "always" or (args.colour == "auto" and sys.stdout.isatty())
        asyncio.run(tail_alerts(settings, wanted=_filter(args), follow=not args.no_follow,
                                from_beginning=args.from_beginning, as_json=args.json,
                                colour=colour))
        return 0
    if args.alerts_command == "forward":
        if not args.url.startswith(("http://", "https://")):
            raise ConfigError(f"webhook URL must be http(s)://..., got {args.url!r}")
        if args.max_attempts < 0:
            raise ConfigError(f"--max-attempts must be >= 0 (0 = forever), got {args.max_attempts}")
        secret_text = os.environ.get(args.secret_env)
        if not secret_text:
            log.warning("%s is not set: webhook requests go out unsigned", args.secret_env)
        stats = asyncio.run(forward_alerts(
            settings, args.url, ledger_path=args.ledger,
            secret=secret_text.encode() if secret_text else None, wanted=_filter(args),
            group_id=args.group, from_beginning=args.from_beginning,
            backoff=dataclasses.replace(WEBHOOK_RETRY, max_attempts=args.max_attempts),
            timeout_s=args.timeout,
            idle_exit_s=args.exit_when_idle))
        print(f"delivered {stats.delivered}, rejected {stats.rejected}, "
              f"already delivered {stats.skipped_known}, retries {stats.retries}")
        return 0
    raise AssertionError(args.alerts_command)

