"""`shelfcast calendar publish FILE`: load a holiday calendar (CSV) into `shop.calendar`.

The file format and the rules are `streams/calendar_file.py`'s; this module only parses
arguments and calls it.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from runtime.settings import Settings

__all__ = ["add_bench_commands", "add_commands", "run"]

EPILOG = """file (CSV with a header; .gz read too):
  location,start_day[,end_day][,name][,event_id][,version][,cancelled]
  *,2026-12-25,2026-12-26,Christmas          # every location
  store_17,2026-12-31,,closed for inventory  # one location, one day

examples:
  shelfcast calendar publish holidays.csv --dry-run   # check it, send nothing
  shelfcast calendar publish holidays.csv
"""


def add_commands(subparsers: Any) -> None:
    """Add `calendar publish` to the `shelfcast` sub-parsers."""
    calendar = subparsers.add_parser(
        "calendar", help="load the shop's holiday calendar into shop.calendar",
        description="Holidays per location (or every location), the data's own holidays a "
        "model trained on them reads; every worker keeps the whole calendar.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = calendar.add_subparsers(dest="calendar_command", required=True, metavar="ACTION")
    publish = sub.add_parser("publish", help="check a CSV of holidays and publish it",
                             epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    publish.add_argument("file", type=Path, help="the CSV file (a .gz one too)")
    publish.add_argument("--dry-run", action="store_true", help="check the file, send nothing")


def add_bench_commands(bench_subparsers: Any) -> None:
    """No benchmark of its own."""


def run(args: argparse.Namespace) -> int | None:
    """Run `calendar publish` (None: not this module's command)."""
    if args.command != "calendar":
        return None
    from streams.calendar_file import publish_calendar, read_calendar_csv

    events = read_calendar_csv(args.file)
    locations = {e.location for e in events}
    span = (f", {min(e.start_day for e in events)} .. {max(e.end_day for e in events)}"
            if events else "")
    settings = Settings()
    if args.dry_run:
        print(f"{len(events)} holiday(s) checked, {len(locations)} location(s){span}; "
              "nothing sent (--dry-run)")
        return 0
    sent = asyncio.run(publish_calendar(settings, events))
    print(f"published {sent} holiday(s) to {settings.topics.calendar}: {len(locations)} "
          f"location(s){span}")
    return 0
