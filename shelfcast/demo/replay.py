"""Turn the UCI Online Retail order lines into shop events, and simulate the shop's warehouse.

Rows are converted faithfully, not cleaned: a negative quantity outside a cancellation or a
negative price stays as it is, so the ingest path refuses it into the dead-letter topic.
"""

from __future__ import annotations

import csv
import gzip
import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from schemas import sku_key, split_key

__all__ = ["ShopEvent", "Warehouse", "read_order_lines", "row_to_order"]

SHOP_TZ = ZoneInfo("Europe/London")
LOCATION = "uk"  # the shop ships from one warehouse


@dataclass(frozen=True)
class ShopEvent:
    """One event to publish: topic kind ("orders"/"stock"), key, JSON-able value, event time."""

    kind: str
    key: str
    value: dict[str, Any]
    occurred_at: datetime


def _number(text: str) -> float | int | str:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text  # left as text: validation will say it is not a number


def row_to_order(row: dict[str, str], line_no: int) -> ShopEvent:
    """A CSV row as the shop would publish it (cancellation invoices start with 'C')."""
    invoice = row.get("InvoiceNo", "")
    quantity = _number(row.get("Quantity", ""))
    cancelled = invoice.startswith("C")
    if cancelled and isinstance(quantity, int):
        quantity = abs(quantity)
    try:
        when = datetime.strptime(row.get("InvoiceDate", ""), "%Y-%m-%d %H:%M:%S")
        occurred = when.replace(tzinfo=SHOP_TZ)
        occurred_text = occurred.isoformat()
    except ValueError:
        occurred, occurred_text = datetime.now(SHOP_TZ), row.get("InvoiceDate", "")
    sku = row.get("StockCode", "").strip()
    value: dict[str, Any] = {
        "event_id": f"uci-{line_no}",
        "type": "cancelled" if cancelled else "placed",
        "sku": sku,
        "location": LOCATION,
        "quantity": quantity,
        "occurred_at": occurred_text,
        "unit_price": _number(row.get("UnitPrice", "")),
        "order_id": invoice,
    }
    return ShopEvent("orders", sku_key(sku, LOCATION), value, occurred)


def read_order_lines(path: Path, limit: int | None = None, *,
                     start: int = 0) -> Iterator[ShopEvent]:
    """Order events from the raw transactions CSV (gz ok), in file order, from data row
    `start` (0-based; event ids stay the file's line numbers) for at most `limit` rows."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as fh:
        for line_no, row in enumerate(csv.DictReader(fh), start=2):
            index = line_no - 2
            if index < start:
                continue
            if limit is not None and index - start >= limit:
                return
            yield row_to_order(row, line_no)


@dataclass
class Warehouse:
    """The shop's simulated stock: starts at `cover_days` of demand, loses sales at zero,
    receives restocks after their lead time, and publishes an end-of-day snapshot of every SKU
    that moved that day."""

    daily_demand: dict[str, float]
    cover_days: float = 5.0
    on_hand: dict[str, int] = field(default_factory=dict)
    moved: set[str] = field(default_factory=set)
    pending: list[tuple[datetime, str, str, int]] = field(default_factory=list)
    receipts_due: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seq: int = 0

    def _event_id(self, prefix: str) -> str:
        self.seq += 1
        return f"{prefix}-{self.seq}"

    def first_sight(self, key: str, when: datetime) -> ShopEvent | None:
        """An opening snapshot the first time a SKU appears."""
        if key in self.on_hand:
            return None
        start = math.ceil(self.daily_demand.get(key, 1.0) * self.cover_days)
        self.on_hand[key] = start
        return self._snapshot(key, when - timedelta(minutes=1))

    def _snapshot(self, key: str, when: datetime) -> ShopEvent:
        sku, location = split_key(key)
        return ShopEvent("stock", key, {
            "event_id": self._event_id("snap"), "type": "snapshot", "sku": sku,
            "location": location, "on_hand": self.on_hand[key],
            "occurred_at": when.isoformat()}, when)

    def sell(self, key: str, signed_qty: int) -> None:
        if key in self.on_hand:
            self.on_hand[key] = max(0, self.on_hand[key] - signed_qty)
            self.moved.add(key)

    def end_of_day(self, day_end: datetime) -> list[ShopEvent]:
        events = [self._snapshot(k, day_end) for k in sorted(self.moved)]
        self.moved.clear()
        return events

    def schedule_receipt(self, due: datetime, key: str, restock_id: str, quantity: int) -> None:
        self.pending.append((due, key, restock_id, quantity))

    def receipts_until(self, now: datetime) -> list[ShopEvent]:
        """Deliveries whose lead time has passed by `now` (event time)."""
        ready = [p for p in self.pending if p[0] <= now]
        self.pending = [p for p in self.pending if p[0] > now]
        events = []
        for due, key, restock_id, qty in sorted(ready):
            sku, location = split_key(key)
            self.on_hand[key] = self.on_hand.get(key, 0) + qty
            events.append(ShopEvent("stock", key, {
                "event_id": f"receipt-{restock_id}", "type": "receipt", "sku": sku,
                "location": location, "delta": qty, "restock_id": restock_id,
                "occurred_at": due.isoformat()}, due))
        return events
