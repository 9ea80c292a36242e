"""Per-(sku, location) state: event-time demand buckets, dedupe ids, stock and open orders.

Pure data and functions, no Kafka: the batch processor applies a batch of events to each
`SkuState` in the worker's state store (the batch engine, the default: aiokafka, whole fetches)
or in the Faust table (the Faust engine, the alternative), and the engine changelogs it once.

Event ids are remembered for `memory` buckets (SHELFCAST_DEDUPE_BUCKETS, by default the
state window), so a redelivery of yesterday's orders is a duplicate, not a late event:
exactly (the ids themselves) for the open buckets, as 32-bit fingerprints once a bucket is
past the allowed lateness (`old_ids`: 4 bytes an id, raw bytes in the changelog's msgpack,
base64 in the state's JSON; pruned with their bucket). A fingerprint can collide: a
genuinely new order for a closed bucket holding n ids is taken for a duplicate with
probability n / 2**32 (2.3e-7 for 1,000 orders of one SKU in one bucket), and such an order
would have been refused as late anyway.
"""

from __future__ import annotations

import base64
import hashlib
import sys
from array import array
from collections.abc import Iterable
from typing import Any, Literal

import msgspec
import numpy as np

from optimizer.policy import inventory_position

__all__ = ["ApplyResult", "SkuState", "bucket_index", "id_fingerprint"]

ApplyResult = Literal["ok", "duplicate", "late"]


def id_fingerprint(event_id: str) -> int:
    """An event id's 32-bit fingerprint (BLAKE2b: well spread whatever the ids look like)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=4).digest(), "little")


def _pack(fingerprints: Iterable[int]) -> bytes:
    """Sorted distinct fingerprints as little-endian uint32 (a stdlib array: a bucket holds a
    handful of ids, for which numpy's per-call overhead was most of the cost)."""
    packed = array("I", sorted(set(fingerprints)))
    if _BIG_ENDIAN:
        packed.byteswap()
    return packed.tobytes()


_BIG_ENDIAN = sys.byteorder == "big"
assert array("I").itemsize == 4, "array('I') must hold 32-bit fingerprints"


def _unpack(packed: bytes) -> np.ndarray:
    return np.frombuffer(packed, dtype="<u4")


def bucket_index(epoch_seconds: float, bucket_seconds: int) -> int:
    """The event-time bucket an instant falls in (UTC-aligned)."""
    return int(epoch_seconds // bucket_seconds)


# a bucket with this many ids looks them up in a set (`SkuState._id_set`), not the list
_SCAN_BELOW = 16
_ID_SETS = "_id_sets"  # the attribute holding those sets (undeclared: never serialised)
_OK: list[ApplyResult] = ["ok"]


class SkuState(msgspec.Struct, array_like=True, dict=True):
    """Everything a worker remembers about one SKU at one location (JSON-serialisable).

    A msgspec struct written as an array (`array_like`): the changelog's record is the field
    values in this order, without their names (streams/changelog.py, FORMAT_ARRAY). So a new
    field goes at the END, with a default: records written before it then decode with the
    default. `dict=True` lets the state keep undeclared attributes (`_id_sets`) that no
    record carries.
    """

    sku: str
    location: str
    first_bucket: int | None = None
    watermark: int | None = None  # newest bucket seen in event time (the open bucket)
    demand: dict[int, float] = {}  # bucket -> net units (an empty default: fresh per state)
    seen_ids: dict[int, list[str]] = {}  # bucket -> event ids
    # bucket -> sorted fingerprints of its event ids (little-endian uint32; base64 in the
    # JSON and in the map records of before), for buckets past the allowed lateness and
    # within the id memory (a state without it: none)
    old_ids: dict[int, bytes] = {}
    on_hand: int = 0
    backorders: int = 0
    stock_known: bool = False
    last_stock_bucket: int | None = None
    stock_as_of: float | None = None  # epoch seconds of the last snapshot
    on_order: dict[str, int] = {}  # restock_id -> units outstanding
    # restock_id -> [bucket it was issued for (the last closed bucket at its review), lead
    # time in buckets]: when it is due. States written before this field decode without it;
    # `time_orders` dates their open restocks from the first review after.
    on_order_terms: dict[str, list[int]] = {}
    overdue: list[str] = []  # restock ids already alerted as overdue
    policy: dict[str, Any] | None = None
    open_alerts: dict[str, int] = {}  # kind -> bucket it opened
    next_bucket_high: float | None = None  # last forecast's high quantile for the next bucket
    forecast_pending: bool = False  # a bucket closed since the last forecast
    # The forecaster's carried state after the last forecast (a stateful model's durable
    # record, e.g. forecasting/lstm/durable.py; None: none): a recovered worker resumes it.
    model_state: bytes | None = None
    # the actuals (streams.outputs.DemandRow): the first closed bucket not yet published, and
    # the last forecast's quantiles for it with the model version that made them (scored
    # against the actual when it is published)
    actuals_from: int | None = None
    next_forecast: list[float] | None = None
    next_forecast_version: str | None = None
    # planned promotions (shop.promotions, streams.planned_promotions): event_id -> [first
    # day, last day (days since the epoch, UTC), promo 0/1, price ratio, version]; a
    # withdrawn one stays as a neutral entry (no promotion, full price) that remembers its
    # version. Bounded; states written before this field decode without it.
    promotions: dict[str, list[float]] = {}
    # The raw order-up-to levels of the SKU's last reviews, oldest first, and the bucket of
    # each (rule `cover_mean`, `optimizer.level_rule`): the next review orders up to the mean
    # of its own level and those made within its last cover-steps buckets (its protection
    # interval), so at most that many are kept. Exact floats (msgpack float64): a recovered
    # worker averages the same numbers. A policy whose lead time changed averages over its
    # new interval; a new model version keeps them (levels are units, whichever model
    # computed them); rule `none` empties both. States written before these fields decode
    # without them (their next review starts afresh), as does one with levels but no buckets
    # (written in the hour the levels were counted in reviews, not buckets).
    order_up_to_levels: list[float] = []
    order_up_to_buckets: list[int] = []

    # --- serialisation -------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """A shallow JSON-able copy (the state object is discarded after the batch)."""
        data = msgspec.structs.asdict(self)
        data["demand"] = {str(k): v for k, v in self.demand.items()}
        data["seen_ids"] = {str(k): v for k, v in self.seen_ids.items()}
        data["old_ids"] = {str(k): base64.b64encode(v).decode("ascii")
                           for k, v in self.old_ids.items()}
        if self.model_state is not None:
            data["model_state"] = base64.b64encode(self.model_state).decode("ascii")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SkuState:
        data = dict(data)
        data["demand"] = {int(k): float(v) for k, v in data.get("demand", {}).items()}
        data["seen_ids"] = {int(k): list(v) for k, v in data.get("seen_ids", {}).items()}
        data["old_ids"] = {int(k): base64.b64decode(v) if isinstance(v, str) else bytes(v)
                           for k, v in data.get("old_ids", {}).items()}
        data["on_order"] = dict(data.get("on_order", {}))
        data["on_order_terms"] = {k: list(v) for k, v in data.get("on_order_terms", {}).items()}
        data["overdue"] = list(data.get("overdue", ()))
        data["open_alerts"] = dict(data.get("open_alerts", {}))
        data["promotions"] = {str(k): [float(x) for x in v]
                              for k, v in data.get("promotions", {}).items()}
        data["order_up_to_levels"] = [float(x) for x in data.get("order_up_to_levels", ())]
        data["order_up_to_buckets"] = [int(x) for x in data.get("order_up_to_buckets", ())]
        if isinstance(data.get("model_state"), str):
            data["model_state"] = base64.b64decode(data["model_state"])
        return cls(**data)

    # --- event time ----------------------------------------------------------------------
    def remembers(self, event_id: str, bucket: int) -> bool:
        """Whether `event_id` was applied in `bucket` (within the id memory; see the module
        docstring for the fingerprints' collision rate)."""
        if event_id in self.seen_ids.get(bucket, ()):
            return True
        packed = self.old_ids.get(bucket)
        if packed is None:
            return False
        fingerprints = _unpack(packed)
        fp = id_fingerprint(event_id)
        i = int(np.searchsorted(fingerprints, fp))
        return i < fingerprints.size and int(fingerprints[i]) == fp

    def _admit(self, event_id: str, bucket: int, lateness: int, *, check_late: bool = True
               ) -> ApplyResult:
        if self.watermark is not None and bucket < self.watermark - lateness:
            if self.remembers(event_id, bucket):
                return "duplicate"
            if check_late:
                return "late"
        if event_id in self.seen_ids.get(bucket, ()):
            return "duplicate"
        self.seen_ids.setdefault(bucket, []).append(event_id)
        return "ok"

    def advance(self, bucket: int, *, window: int, lateness: int,
                memory: int | None = None) -> int:
        """Move the SKU's clock to `bucket`; returns how many buckets closed (0 if none)."""
        if self.first_bucket is None:
            self.first_bucket = bucket
        if self.watermark is None:
            self.watermark = bucket
            return 0
        closed = max(0, bucket - self.watermark)
        if closed:
            self.watermark = bucket
            self.forecast_pending = True
            self._evict(window=window, lateness=lateness,
                        memory=window if memory is None else memory)
        return closed

    def _evict(self, *, window: int, lateness: int, memory: int) -> None:
        """Drop demand older than the window; fingerprint the ids of buckets past the
        lateness, and drop those older than the id memory (`memory` buckets)."""
        assert self.watermark is not None
        # delete in place: most advances evict a bucket of ids and no demand at all
        demand, seen_ids, old_ids = self.demand, self.seen_ids, self.old_ids
        keep_demand_from = self.watermark - window - lateness
        if demand and min(demand) < keep_demand_from:
            for b in [b for b in demand if b < keep_demand_from]:
                del demand[b]
        keep_ids_from = self.watermark - lateness
        remember_from = self.watermark - max(memory, lateness)
        sets = self.__dict__.get(_ID_SETS)
        for b in [b for b in seen_ids if b < keep_ids_from]:
            ids = seen_ids.pop(b)
            if sets:
                sets.pop(b, None)
            if b >= remember_from:
                fingerprints = list(map(id_fingerprint, ids))
                if b in old_ids:
                    fingerprints.extend(_unpack(old_ids[b]).tolist())
                old_ids[b] = _pack(fingerprints)
        if old_ids and min(old_ids) < remember_from:
            for b in [b for b in old_ids if b < remember_from]:
                del old_ids[b]

    # --- events --------------------------------------------------------------------------
    def apply_order(
        self, event_id: str, occurred_at: float, signed_qty: int, *, bucket_seconds: int,
        window: int, lateness: int, memory: int | None = None
    ) -> ApplyResult:
        """Count an order line's demand in its bucket and take it out of stock.

        Only orders move the SKU's demand clock: stock comes on another topic, which the
        consumer may read ahead of the orders, and must not make those orders late. An order
        more than `lateness` buckets behind the clock is late, unless its id is remembered
        (`memory` buckets, default `window`): then it is a duplicate.
        """
        return self.order(event_id, occurred_at, signed_qty, bucket_seconds, window, lateness,
                          memory)

    def order(self, event_id: str, occurred_at: float, signed_qty: int, bucket_seconds: int,
              window: int, lateness: int, memory: int | None = None) -> ApplyResult:
        """`apply_order` with positional arguments and its steps inlined (the hot path: one
        call per order line)."""
        bucket = int(occurred_at // bucket_seconds)
        watermark = self.watermark
        if watermark is not None and bucket < watermark - lateness:
            return "duplicate" if self.remembers(event_id, bucket) else "late"
        ids = self.seen_ids.get(bucket)
        if ids is None:
            self.seen_ids[bucket] = [event_id]
        elif len(ids) < _SCAN_BELOW:  # a handful of ids: scanning the list is cheapest
            if event_id in ids:
                return "duplicate"
            ids.append(event_id)
        else:  # a hot SKU's bucket: look ids up in a set, not a scan per order
            known = self._id_set(bucket, ids)
            if event_id in known:
                return "duplicate"
            ids.append(event_id)
            known.add(event_id)
        if watermark is None or bucket > watermark:
            self.advance(bucket, window=window, lateness=lateness, memory=memory)
        demand = self.demand
        demand[bucket] = demand.get(bucket, 0.0) + signed_qty
        if self.stock_as_of is None or occurred_at > self.stock_as_of:
            # _take_from_stock: served from stock first, the rest back-ordered; units coming
            # back (cancellations, returns) clear back-orders first
            if signed_qty >= 0:
                served = signed_qty if signed_qty < self.on_hand else self.on_hand
                self.on_hand -= served
                self.backorders += signed_qty - served
            else:
                back = -signed_qty
                cleared = back if back < self.backorders else self.backorders
                self.backorders -= cleared
                self.on_hand += back - cleared
        return "ok"

    def orders(self, event_ids: list[str], occurred_at: list[float], quantities: list[int],
               bucket_seconds: int, window: int, lateness: int, memory: int | None = None
               ) -> list[ApplyResult]:
        """A run of this SKU's order lines in offset order, applied as `order` one at a time
        would: the verdict of each line applied. It stops right after a line that leaves a
        forecast due (a bucket closed, or one was due already): then fewer verdicts than
        lines come back, and the caller holds the rest until the SKU is forecast.

        While the clock stands still the lines inside the open buckets are one stretch
        (`_stretch`): the dedupe is set operations on the stretch's ids (repeats within it,
        ids already in its buckets), demand is summed per bucket, and stock is taken out in
        one step. A stretch holding a repeated id goes `order` line by line; so does each
        line outside the open buckets (late, a duplicate of a closed bucket, or one that
        moves the clock) and any line while the state has no clock yet or a forecast due.
        """
        n = len(event_ids)
        verdicts: list[ApplyResult] = []
        order = self.order
        buckets: list[int] | None = None
        i = 0
        while i < n:
            watermark = self.watermark
            if watermark is None or self.forecast_pending:
                verdicts.append(order(event_ids[i], occurred_at[i], quantities[i],
                                      bucket_seconds, window, lateness, memory))
                i += 1
                if self.forecast_pending:
                    return verdicts
                continue
            floor = watermark - lateness
            times = occurred_at[i:] if i else occurred_at
            lo, hi = int(min(times) // bucket_seconds), int(max(times) // bucket_seconds)
            if floor <= lo and hi <= watermark:  # the rest is in the open buckets
                j = n
                stretch = None if lo < hi else lo
            else:  # the stretch ends at the first line outside the open buckets
                if buckets is None:
                    buckets = [int(t // bucket_seconds) for t in occurred_at]
                j = i
                while j < n and floor <= buckets[j] <= watermark:
                    j += 1
                stretch = None
            if j - i == 1:
                verdicts.append(order(event_ids[i], occurred_at[i], quantities[i],
                                      bucket_seconds, window, lateness, memory))
            elif j > i:
                if stretch is None and buckets is None:
                    buckets = [int(t // bucket_seconds) for t in occurred_at]
                if self._stretch(event_ids[i:j], occurred_at[i:j], quantities[i:j],
                                 stretch, None if buckets is None else buckets[i:j]):
                    verdicts.extend(_OK * (j - i))
                else:  # a repeated id: line by line (the clock cannot move in here)
                    for k in range(i, j):
                        verdicts.append(order(event_ids[k], occurred_at[k], quantities[k],
                                              bucket_seconds, window, lateness, memory))
            if j < n:  # a line outside the open buckets: late, duplicate, or it moves the clock
                verdicts.append(order(event_ids[j], occurred_at[j], quantities[j],
                                      bucket_seconds, window, lateness, memory))
                if self.forecast_pending:
                    return verdicts
            i = j + 1
        return verdicts

    def _stretch(self, event_ids: list[str], occurred_at: list[float], quantities: list[int],
                 bucket: int | None, buckets: list[int] | None) -> bool:
        """Lines of open buckets while the clock stands still (the lists are the stretch's
        own: kept): applied at once when none is a duplicate (True), else nothing is changed
        (False). `bucket`: the one bucket of every line, else `buckets` has each line's."""
        ids = set(event_ids)
        if len(ids) != len(event_ids):
            return False  # a repeat within the stretch (or an id in two of its buckets)
        seen_ids = self.seen_ids
        if bucket is not None:  # one bucket: the common case
            per_bucket: dict[int, list[str]] = {bucket: event_ids}
            demand_of: dict[int, int] = {bucket: sum(quantities)}
        else:
            assert buckets is not None
            per_bucket = {}
            demand_of = {}
            for b, event_id, q in zip(buckets, event_ids, quantities, strict=True):
                known = per_bucket.get(b)
                if known is None:
                    per_bucket[b] = [event_id]
                    demand_of[b] = q
                else:
                    known.append(event_id)
                    demand_of[b] += q
        for b, new in per_bucket.items():
            known = seen_ids.get(b)
            if known is None:
                continue
            if len(known) < _SCAN_BELOW:
                if not ids.isdisjoint(known):
                    return False
            elif not self._id_set(b, known).isdisjoint(new):
                return False
        # no duplicate: ids, demand and stock as the lines one by one would leave them
        sets = self.__dict__.get(_ID_SETS)
        for b, new in per_bucket.items():
            known = seen_ids.get(b)
            if known is None:
                seen_ids[b] = new
                continue
            if sets:
                bucket_set = sets.get(b)
                if bucket_set is not None and len(bucket_set) == len(known):
                    bucket_set.update(new)
            known.extend(new)
        demand = self.demand
        for b, q in demand_of.items():
            demand[b] = demand.get(b, 0.0) + q
        as_of = self.stock_as_of
        taken = quantities
        if as_of is not None and min(occurred_at) <= as_of:  # some at or before the snapshot
            taken = [q for q, t in zip(quantities, occurred_at, strict=True) if t > as_of]
            if not taken:
                return True
        if min(taken) >= 0:  # orders only: served from stock up to what is on hand
            units = sum(taken)
            served = units if units < self.on_hand else self.on_hand
            self.on_hand -= served
            self.backorders += units - served
        else:  # cancellations or returns among them: line by line
            for q in taken:
                self._take_from_stock(q)
        return True

    def _id_set(self, bucket: int, ids: list[str]) -> set[str]:
        """The ids of `bucket` as a set, kept beside the list while the state lives (not a
        struct field: neither the changelog nor `to_json` carries it); rebuilt when the
        list grew without it (a stock event's id, a state decoded afresh)."""
        sets: dict[int, set[str]] | None = self.__dict__.get(_ID_SETS)
        if sets is None:
            sets = self.__dict__[_ID_SETS] = {}
        known = sets.get(bucket)
        if known is None or len(known) != len(ids):
            known = sets[bucket] = set(ids)
        return known

    def _take_from_stock(self, units: int) -> None:
        if units >= 0:
            served = min(units, self.on_hand)
            self.on_hand -= served
            self.backorders += units - served
        else:  # a cancellation or return puts units back
            back = -units
            cleared = min(back, self.backorders)
            self.backorders -= cleared
            self.on_hand += back - cleared

    def apply_stock(
        self,
        event_id: str,
        occurred_at: float,
        kind: str,
        *,
        on_hand: int | None,
        delta: int | None,
        restock_id: str | None,
        bucket_seconds: int,
        lateness: int,
    ) -> ApplyResult:
        """A snapshot resets on hand; an adjustment or receipt moves it (receipts close orders)."""
        bucket = bucket_index(occurred_at, bucket_seconds)
        verdict = self._admit(event_id, bucket, lateness, check_late=False)
        if verdict != "ok":
            return verdict
        if kind == "snapshot":
            assert on_hand is not None
            if self.stock_as_of is not None and occurred_at < self.stock_as_of:
                return "ok"  # an older snapshot than the one we hold: superseded
            self.on_hand, self.backorders = on_hand, 0
            self.stock_as_of = occurred_at
        else:
            assert delta is not None
            if kind == "receipt" and restock_id is not None and restock_id in self.on_order:
                left = self.on_order.pop(restock_id) - delta
                if left > 0:
                    self.on_order[restock_id] = left
                else:  # received in full: nothing left to be due or overdue
                    self.on_order_terms.pop(restock_id, None)
                    if restock_id in self.overdue:
                        self.overdue.remove(restock_id)
            self._take_from_stock(-delta)
        self.stock_known = True
        self.last_stock_bucket = bucket if self.last_stock_bucket is None else max(
            bucket, self.last_stock_bucket
        )
        return "ok"

    # --- views for forecasting and restock -----------------------------------------------
    def closed_window(self, window: int) -> np.ndarray:
        """Demand of the last `window` closed buckets, oldest first; NaN before first seen."""
        out = np.full(window, np.nan)
        if self.watermark is None or self.first_bucket is None:
            return out
        last_closed = self.watermark - 1
        for i in range(window):
            b = last_closed - (window - 1 - i)
            if b >= self.first_bucket:
                out[i] = max(0.0, self.demand.get(b, 0.0))
        return out

    def last_closed_bucket(self) -> int | None:
        return None if self.watermark is None else self.watermark - 1

    # --- restock lifecycle ---------------------------------------------------------------
    def place_order(self, restock_id: str, units: int, *, issued_bucket: int,
                    lead_buckets: int) -> None:
        """A restock issued at the review of `issued_bucket`, due `lead_buckets` later."""
        self.on_order[restock_id] = units
        self.on_order_terms[restock_id] = [issued_bucket, lead_buckets]

    def time_orders(self, bucket: int, lead_buckets: int) -> None:
        """Give open restocks without terms (from a state written before they were kept)
        the terms of an order issued at `bucket` with `lead_buckets`: never overdue sooner
        than a restock placed now."""
        terms = self.on_order_terms
        if len(terms) != len(self.on_order):
            for restock_id in self.on_order:
                if restock_id not in terms:
                    terms[restock_id] = [bucket, lead_buckets]

    def inventory_position(self) -> int:
        return inventory_position(self.on_hand, sum(self.on_order.values()), self.backorders)
