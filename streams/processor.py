"""The batch step of the stream: raw records in, state updated, events out (no Kafka here).

An engine hands a batch of raw records and the state table: the batch engine
(`streams.engine`, the default) or the Faust agent (`streams.app`, the alternative). This
module validates, dedupes, buckets demand, forecasts every SKU whose bucket closed in one
batched call, has the periodic review (`optimizer.review`) decide restocks, stock-out risk
and anomalies, and turns its arrays into events and alerts. Keeping it free of any Kafka
client makes it testable as plain code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby, repeat
from operator import attrgetter, itemgetter
from typing import Any, Protocol

import numpy as np

from forecasting.covariates import Covariates
from forecasting.inferencer import ServedForecast
from optimizer.level_rule import DEFAULT_LEVEL_RULE, LevelRule
from optimizer.policy import inventory_position
from optimizer.review import (
    HIGH_LEVEL,
    LevelMemory,
    PolicyTerms,
    Review,
    overdue_restocks,
    review,
    stale_stock,
)
from runtime.settings import Settings, TopicNames
from schemas import (
    HolidayEvent,
    InvalidEvent,
    OrderEvent,
    PromotionEvent,
    RestockEvent,
    SkuPolicy,
    StockEvent,
    dead_letter,
    decode,
    deterministic_id,
    sku_key,
    sku_keys,
    split_key,
)
from streams.codec import (
    FastOrder,
    FastStock,
    fast_order,
    fast_stock,
    order_columns_from,
    stock_columns_from,
)
from streams.holiday_calendar import HolidayCalendar
from streams.outputs import AlertRow, BatchOutputs, DemandRow, ForecastRows
from streams.planned_promotions import apply_promotion, covariates_of, prune
from streams.state import ApplyResult, SkuState

__all__ = [
    "BatchOutputs",
    "BatchProcessor",
    "InputRecord",
    "PredictFn",
    "ProcessorConfig",
    "RawRecord",
]

class PredictFn(Protocol):
    """The forecaster call the processor makes, once per batch for every due SKU.

    `keys` (sku@location, prefixed `P:` with the input partition P when the table has one:
    the key of one carried state) and `end_days` (the date of each window's last closed
    daily bucket) let a stateful model step its carried state instead of re-reading the
    window; `states` are each key's durable model state as the last forecast returned it
    (`SkuState.model_state`), from which a recovered worker resumes exactly. A plain forecaster
    ignores them. `covariates`: the SKUs' planned promotions (`streams.planned_promotions`)
    and their locations' holidays (`streams.holiday_calendar`), passed only when one of them
    has any. The answer carries the version of the model that
    computed it (stamped on the outputs) and, from a stateful model, the keys' new durable
    states."""

    def __call__(self, windows: np.ndarray, horizon: int, *, keys: Sequence[str] | None = None,
                 end_days: np.ndarray | None = None,
                 states: Sequence[bytes | None] | None = None,
                 covariates: Covariates | None = None) -> Awaitable[ServedForecast]: ...

_TOPIC, _VALUE, _RECORD_KEY = attrgetter("topic"), attrgetter("value"), attrgetter("key")
# an _Item's key, and an order item's event id, epoch seconds and signed quantity
_KEY, _EVENT, _OCCURRED, _QUANTITY = itemgetter(1), itemgetter(2), itemgetter(3), itemgetter(4)
# a run of at most this many records that does not decode as columns goes record by record
_EXACT_BELOW = 4
# A round goes key by key (`_apply_runs`) when its items average at least _RUNS_FROM per key,
# else item by item (`_apply_items`: grouping costs more than it saves when a key has a line
# or two); key by key, a run of at least _RUN_FROM orders is one `SkuState.orders` call
# (`SkuState.order` line by line costs less for shorter runs). Measured: benchmarks/README.md.
_RUNS_FROM = 12
_RUN_FROM = 8


@dataclass(frozen=True)
class ProcessorConfig:
    """What the processor needs of the settings: topic names, the bucket and its counts.

    `window_buckets`: closed buckets a forecast reads; `lateness_buckets`: how far behind its
    SKU's clock an event may be and still count; `horizon_buckets`: buckets forecast;
    `default_policy`: the restock policy of SKUs without a catalog entry;
    `restock_grace_buckets`: buckets past its lead time before an unreceived restock is
    overdue; `stale_stock_buckets`: buckets without stock data before it is stale;
    `level_rule`: how a review sets the order-up-to level (`optimizer.level_rule`):
    "cover_mean", the mean of the SKU's raw levels of its last k reviews (kept in its state),
    or "none", this review's alone.
    """

    topics: TopicNames
    bucket_seconds: int
    window_buckets: int
    lateness_buckets: int
    horizon_buckets: int
    max_payload_bytes: int
    default_policy: SkuPolicy
    dedupe_buckets: int = 56  # buckets an event id is remembered (at least the window)
    dlq_payload_bytes: int = 256 * 1024  # payload bytes a dead letter keeps at most
    restock_grace_buckets: int = 2
    stale_stock_buckets: int = 7
    level_rule: LevelRule = DEFAULT_LEVEL_RULE

    @classmethod
    def from_settings(cls, settings: Settings) -> ProcessorConfig:
        s = settings
        return cls(
            topics=s.topics, bucket_seconds=s.bucket_seconds(),
            window_buckets=s.window_buckets, lateness_buckets=s.allowed_lateness_buckets,
            horizon_buckets=s.horizon_buckets, max_payload_bytes=s.max_payload_bytes,
            dedupe_buckets=s.dedupe_buckets or s.window_buckets,
            dlq_payload_bytes=s.dlq_payload_bytes,
            default_policy=SkuPolicy(
                sku="default", location="default", lead_time_days=s.default_lead_time_days,
                review_days=s.default_review_days, service_level=s.default_service_level,
                case_pack=s.default_case_pack, moq=s.default_moq, supplier=s.default_supplier),
            restock_grace_buckets=s.restock_grace_buckets,
            stale_stock_buckets=s.stale_stock_buckets, level_rule=s.restock_level_rule)


class InputRecord(Protocol):
    """What the processor reads of a consumed record (aiokafka's records have these)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True)
class RawRecord:
    """One consumed record as the broker gave it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


# A decoded input record: (the record, the state key it applies to, then for an order its
# event id, epoch seconds and signed quantity; for stock and catalog records the decoded
# event, None, None). Plain tuples: a run of orders becomes items with one zip().
_Item = tuple[InputRecord, str, Any, float | None, int | None]


class BatchProcessor:
    """Applies batches of shop events to SKU state and emits forecasts, restocks and alerts.

    `model_version` is the version served when the processor was built (for reports); each
    output carries the version of the forecast that produced it (`ServedForecast`), so a
    model rolled in mid-stream can never mislabel one."""

    def __init__(
        self,
        config: ProcessorConfig,
        predict: PredictFn,
        model_version: str,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        calendar: HolidayCalendar | None = None,
    ) -> None:
        self.config = config
        # the shop's holidays (`shop.calendar`, read whole by `streams.calendar_feed`)
        self.calendar = calendar
        self.predict = predict
        self.model_version = model_version
        self.now = now
        self.topics = config.topics
        self.bucket_seconds = config.bucket_seconds
        self.window_buckets = config.window_buckets
        self.lateness_buckets = config.lateness_buckets
        self.id_memory_buckets = config.dedupe_buckets
        # the engine lowers it to what its DLQ topic has room for (streams.dead_letters)
        self.dlq_payload_bytes = config.dlq_payload_bytes
        self._policies: dict[tuple[Any, ...], SkuPolicy] = {}

    # --- ingest ----------------------------------------------------------------------------
    def _state(self, cache: dict[str, SkuState], table: MutableMapping[str, Any],
               key: str) -> SkuState:
        raw = table.get(key)
        if isinstance(raw, SkuState):  # a store of live objects (the batch engine's)
            state = raw
        elif raw:
            state = SkuState.from_json(raw)
        else:
            sku, location = split_key(key)
            state = SkuState(sku=sku, location=location)
        cache[key] = state
        return state

    def _decode(self, record: InputRecord) -> _Item:
        """The record as the few fields the state needs; raises InvalidEvent for the DLQ."""
        max_bytes = self.config.max_payload_bytes
        if record.topic == self.topics.orders:
            order = fast_order(record.value, max_bytes)
            if order is None:  # not plainly valid: the model decides, and says why
                full = decode(OrderEvent, record.value, max_bytes=max_bytes)
                order = FastOrder(full.event_id, full.sku, full.location,
                                  full.occurred_at.timestamp(), full.signed_quantity())
            return (record, _keyed(record, sku_key(order.sku, order.location)), order.event_id,
                    order.occurred_at, order.signed_quantity)
        if record.topic == self.topics.stock:
            stock = fast_stock(record.value, max_bytes)
            if stock is None:
                e = decode(StockEvent, record.value, max_bytes=max_bytes)
                stock = FastStock(e.event_id, e.type, e.sku, e.location,
                                  e.occurred_at.timestamp(), e.on_hand, e.delta, e.restock_id)
            return record, _keyed(record, sku_key(stock.sku, stock.location)), stock, None, None
        if record.topic == self.topics.catalog:
            policy = decode(SkuPolicy, record.value, max_bytes=max_bytes)
            return record, _keyed(record, sku_key(policy.sku, policy.location)), policy, None, None
        if record.topic == self.topics.promotions:
            promo = decode(PromotionEvent, record.value, max_bytes=max_bytes)
            return record, _keyed(record, sku_key(promo.sku, promo.location)), promo, None, None
        raise InvalidEvent(f"unexpected topic {record.topic!r}", kind="unknown_topic")

    def _decode_each(self, run: Sequence[InputRecord], pending: list[_Item],
                     out: BatchOutputs) -> None:
        """Record by record (`_decode`): the exact path, which names a dead letter's reason."""
        calendar_topic = self.topics.calendar
        for record in run:
            try:
                if record.topic == calendar_topic:  # checked here, kept by the calendar feed
                    decode(HolidayEvent, record.value, max_bytes=self.config.max_payload_bytes)
                    out.accepted += 1
                else:
                    pending.append(self._decode(record))
            except InvalidEvent as exc:
                out.dead_letters.append(dead_letter(
                    topic=record.topic, partition=record.partition, offset=record.offset,
                    key=record.key, raw=record.value, error=exc,
                    max_payload_bytes=self.dlq_payload_bytes))

    def _decode_run(self, topic: str, run: Sequence[InputRecord], pending: list[_Item],
                    out: BatchOutputs) -> None:
        """A run of orders or stock events of one topic decoded into columns
        (`order_columns_from` / `stock_columns_from`: a typed parse in C, then checks a column
        at a time). A record that does not parse is decoded alone by the exact path (which
        names its dead letter's reason) and the run goes on after it; a stretch that parses
        but fails a column check (or whose Kafka keys are not its payloads') is halved until
        the halves pass, so only the few odd records take the exact path."""
        max_bytes = self.config.max_payload_bytes
        values = list(map(_VALUE, run))
        start = 0
        while start < len(run):
            if topic == self.topics.orders:
                columns, n = order_columns_from(values, start, max_bytes)
                stretch = run[start:start + n]
                if columns is not None:
                    keys = sku_keys(columns.sku, columns.location)
                    if _keys_agree(list(map(_RECORD_KEY, stretch)), keys):
                        pending.extend(zip(stretch, keys, columns.event_id,
                                           columns.occurred_at, columns.signed_quantity,
                                           strict=True))
                        stretch = []
            else:
                stocks, n = stock_columns_from(values, start, max_bytes)
                stretch = run[start:start + n]
                if stocks is not None:
                    keys = sku_keys([e.sku for e in stocks], [e.location for e in stocks])
                    if _keys_agree(list(map(_RECORD_KEY, stretch)), keys):
                        pending.extend(zip(stretch, keys, stocks, repeat(None), repeat(None)))
                        stretch = []
            if len(stretch) <= _EXACT_BELOW:
                self._decode_each(stretch, pending, out)
            else:  # parsed, but some record failed a column check: halve
                half = len(stretch) // 2
                self._decode_run(topic, stretch[:half], pending, out)
                self._decode_run(topic, stretch[half:], pending, out)
            if start + n < len(run):  # the record that did not parse
                self._decode_each(run[start + n:start + n + 1], pending, out)
            start += n + 1

    def _apply(self, event: FastStock | SkuPolicy | PromotionEvent,
               state: SkuState) -> ApplyResult:
        if isinstance(event, PromotionEvent):
            return apply_promotion(state, event)
        if isinstance(event, FastStock):
            return state.apply_stock(event.event_id, event.occurred_at, event.type,
                                     on_hand=event.on_hand, delta=event.delta,
                                     restock_id=event.restock_id,
                                     bucket_seconds=self.bucket_seconds,
                                     lateness=self.lateness_buckets)
        state.policy = event.model_dump(mode="json")
        return "ok"

    async def process(
        self, records: Sequence[InputRecord], table: MutableMapping[str, Any], *,
        out: BatchOutputs | None = None,
    ) -> BatchOutputs:
        """Apply a batch; each touched table key is written once at the end.

        `out`: outputs to add to (an engine that runs one call per input partition collects
        a fetch's outputs in one), else new ones.

        The outputs and the final state are those of processing the records one at a time
        (up to the order of outputs across SKUs): an SKU whose bucket closed is forecast and
        reviewed before its next event is applied. The batch runs in rounds: each round
        applies events until an SKU has a forecast due, holds that SKU's later events back
        for the next round, and ends with one forecaster call for every SKU due.

        Table values are `SkuState.to_json()` dicts, or the `SkuState` objects themselves when
        the table says `holds_state_objects` (then they are updated in place, and written
        back once so the table knows they changed).
        """
        if out is None:
            out = BatchOutputs()
        cache: dict[str, SkuState] = {}
        pending: list[_Item] = []
        for topic, group in groupby(records, key=_TOPIC):
            run = list(group)
            if topic == self.topics.orders or topic == self.topics.stock:
                self._decode_run(topic, run, pending, out)
            else:
                self._decode_each(run, pending, out)
        lateness = self.lateness_buckets
        # the model's carried state of a key is the state of the key ON THIS PARTITION: a key
        # seen on two input partitions is two states (streams/store.py), each stepped by its
        # own demand only
        partition = getattr(table, "partition", None)
        scope = "" if partition is None else f"{partition}:"
        while pending:
            # a round: apply items until keys are due, hold those keys' later items back
            keys = list(map(_KEY, pending))
            if len(keys) >= _RUNS_FROM * len(set(keys)):  # keys with runs of orders
                due, held, late, accepted, duplicates = self._apply_runs(pending, keys, cache,
                                                                         table)
            else:
                due, held, late, accepted, duplicates = self._apply_items(pending, cache, table)
            for item in late:
                record = item[0]
                out.dead_letters.append(dead_letter(
                    topic=record.topic, partition=record.partition, offset=record.offset,
                    key=record.key, raw=record.value,
                    error=InvalidEvent(
                        f"event is more than {lateness} bucket(s) behind its SKU's "
                        "clock", kind="late"),
                    max_payload_bytes=self.dlq_payload_bytes))
            out.accepted += accepted
            out.duplicates += duplicates
            if due:
                await self._forecast_and_decide([scope + key for key in due],
                                                [cache[key] for key in due], out)
            pending = held
        if getattr(table, "holds_state_objects", False):
            table.update(cache)
        else:
            table.update({key: state.to_json() for key, state in cache.items()})
        return out

    def _apply_items(self, pending: list[_Item], cache: dict[str, SkuState],
                     table: MutableMapping[str, Any]
                     ) -> tuple[list[str], list[_Item], list[_Item], int, int]:
        """A round item by item, in offset order: the keys due (in the order they became
        due), the items held back (a due key's later ones), the late orders, and the counts
        of accepted and duplicate events."""
        apply_order = SkuState.order
        bucket_seconds, window, lateness = (self.bucket_seconds, self.window_buckets,
                                            self.lateness_buckets)
        memory = self.id_memory_buckets
        held: list[_Item] = []
        late: list[_Item] = []
        due: dict[str, SkuState] = {}
        accepted = duplicates = 0
        for item in pending:
            _, key, event, occurred_at, quantity = item
            if key in due:
                held.append(item)
                continue
            state = cache.get(key)
            if state is None:
                state = self._state(cache, table, key)
            if occurred_at is not None:  # an order: it has a quantity too
                verdict = apply_order(state, event, occurred_at, quantity,  # type: ignore[arg-type]
                                      bucket_seconds, window, lateness, memory)
            else:
                verdict = self._apply(event, state)
            if verdict == "ok":
                accepted += 1
            elif verdict == "duplicate":
                duplicates += 1
            else:
                late.append(item)
            if state.forecast_pending:
                due[key] = state
        return list(due), held, late, accepted, duplicates

    def _apply_runs(self, pending: list[_Item], keys: list[str], cache: dict[str, SkuState],
                    table: MutableMapping[str, Any]
                    ) -> tuple[list[str], list[_Item], list[_Item], int, int]:
        """The same round key by key: a key's items in offset order, each run of at least
        `_RUN_FROM` orders (up to the key's next other event) in one `SkuState.orders` call,
        which stops right after the line that leaves the key due; the key's later items are
        held back. Same answer as `_apply_items`, in the same orders (due keys, held and
        late items by their position in `pending`)."""
        apply_order = SkuState.order
        bucket_seconds, window, lateness = (self.bucket_seconds, self.window_buckets,
                                            self.lateness_buckets)
        memory = self.id_memory_buckets
        by_key: dict[str, list[int]] = {}  # key -> its items' positions in pending
        for i, key in enumerate(keys):
            at = by_key.get(key)
            if at is None:
                by_key[key] = [i]
            else:
                at.append(i)
        due_at: dict[str, int] = {}  # key -> position of the item that left it due
        held: list[int] = []
        late: list[int] = []
        accepted = duplicates = 0
        for key, at in by_key.items():
            state = cache.get(key)
            if state is None:
                state = self._state(cache, table, key)
            items = [pending[i] for i in at]
            j, m = 0, len(items)
            while j < m:
                _, _, event, occurred_at, quantity = items[j]
                if occurred_at is None:
                    verdicts: list[ApplyResult] = [self._apply(event, state)]
                else:
                    k = j + 1  # the run of orders up to the key's next other event
                    while k < m and items[k][3] is not None:
                        k += 1
                    if k - j < _RUN_FROM:  # a short run: `order` per line costs less
                        verdicts = [apply_order(state, event, occurred_at, quantity,  # type: ignore[arg-type]
                                                bucket_seconds, window, lateness, memory)]
                    else:
                        run = items[j:k]
                        verdicts = state.orders(
                            list(map(_EVENT, run)), list(map(_OCCURRED, run)),
                            list(map(_QUANTITY, run)), bucket_seconds, window, lateness,
                            memory)
                ok = verdicts.count("ok")
                accepted += ok
                if ok < len(verdicts):
                    for verdict, i in zip(verdicts, at[j:j + len(verdicts)], strict=True):
                        if verdict == "duplicate":
                            duplicates += 1
                        elif verdict == "late":
                            late.append(i)
                j += len(verdicts)
                if state.forecast_pending:
                    due_at[key] = at[j - 1]
                    held.extend(at[j:])
                    break
        held.sort()
        late.sort()
        return (sorted(due_at, key=due_at.__getitem__), [pending[i] for i in held],
                [pending[i] for i in late], accepted, duplicates)

    # --- forecast, restock, alerts ---------------------------------------------------------
    async def _forecast_and_decide(self, keys: list[str], states: list[SkuState],
                                   out: BatchOutputs) -> None:
        """One forecaster call and one review for every due SKU; events from their arrays.

        Python touches each SKU only for what is per SKU by nature: its state's fields, and
        the alerts and restocks it raises (a minority); the forecasts stay arrays
        (`ForecastRows`) whose JSON the engine writes without building models.
        """
        horizon = self.config.horizon_buckets
        last_closed = [s.watermark - 1 for s in states]  # type: ignore[operator]
        windows = _closed_windows(states, last_closed, self.window_buckets)
        skus = [s.sku for s in states]
        locations = [s.location for s in states]
        end_days = None
        if self.bucket_seconds == 86_400:  # daily buckets: bucket index == days since epoch
            end_days = np.array(last_closed, dtype="datetime64[D]")
        states_in = [s.model_state for s in states]
        covariates = None
        if end_days is not None:  # planned promotions cover days: daily buckets only
            for state, closed in zip(states, last_closed, strict=True):
                prune(state, closed)
            covariates = covariates_of(states, last_closed, horizon, self.calendar,
                                       self.window_buckets)
        if covariates is None:  # no SKU has a promotion: the plain call of before
            served = await self.predict(windows, horizon, keys=keys, end_days=end_days,
                                        states=states_in)
        else:
            served = await self.predict(windows, horizon, keys=keys, end_days=end_days,
                                        states=states_in, covariates=covariates)
        forecast, version = served.forecast, served.model_version
        if served.states is not None:
            for state, blob in zip(states, served.states, strict=True):
                state.model_state = blob
        issued_at = self.now()
        levels = np.asarray(forecast.levels, dtype=float)
        rows = ForecastRows(
            skus=skus, locations=locations, last_closed=last_closed,
            bucket_seconds=self.bucket_seconds, issued_at=issued_at, levels=levels.tolist(),
            daily=np.round(forecast.daily, 4), cumulative=np.round(forecast.cumulative, 4),
            mean=np.round(forecast.mean, 4), model_version=version)
        out.forecast_rows.append(rows)
        # the buckets closed since each SKU's last forecast, scored on that forecast's first
        # step; then this forecast's first step is held for the next bucket
        out.demand_rows.extend(_closed_demand(states, last_closed, rows.levels,
                                              self.bucket_seconds, self.lateness_buckets,
                                              self.window_buckets))
        for state, held, closed in zip(states, rows.daily[:, 0, :].tolist(), last_closed,
                                       strict=True):
            state.actuals_from = closed + 1
            state.next_forecast, state.next_forecast_version = held, version
        policies = list(map(self._policy, states))
        terms = PolicyTerms.of(policies, self.bucket_seconds)
        on_order = [sum(s.on_order.values()) if s.on_order else 0 for s in states]
        overdue_units, newly_overdue = self._overdue(states, last_closed, terms)
        on_hand, backorders = [s.on_hand for s in states], [s.backorders for s in states]
        observed = windows[:, -1]
        previous_high = np.array([np.nan if s.next_bucket_high is None else s.next_bucket_high
                                  for s in states], dtype=float)
        known = np.array([s.stock_known for s in states], dtype=bool)
        # rule cover_mean: each SKU's remembered raw levels and their buckets (None: rule none)
        remembered = None
        if self.config.level_rule == "cover_mean":
            remembered = LevelMemory(
                [s.order_up_to_levels if len(s.order_up_to_levels) == len(s.order_up_to_buckets)
                 else [] for s in states],
                [s.order_up_to_buckets if len(s.order_up_to_levels) == len(s.order_up_to_buckets)
                 else [] for s in states],
                bucket=last_closed)
        decided = review(
            forecast,
            inventory_position=inventory_position(on_hand, on_order, backorders),
            arriving_position=inventory_position(
                on_hand, np.asarray(on_order) - overdue_units, backorders),
            terms=terms, previous_high=previous_high, observed=observed, stock_known=known,
            stockout_alert_open=["stockout_risk" in s.open_alerts for s in states],
            level_memory=remembered)
        stock_age, stale, fresh = stale_stock(
            [np.nan if s.last_stock_bucket is None else s.last_stock_bucket for s in states],
            last_closed, self.config.stale_stock_buckets,
            ["stale_stock" in s.open_alerts for s in states])
        for state, high in zip(states, decided.next_bucket_high.tolist(), strict=True):
            state.forecast_pending = False
            state.next_bucket_high = high
        if decided.level_memory is not None:
            for state, kept, made_at in zip(states, *decided.level_memory, strict=True):
                state.order_up_to_levels, state.order_up_to_buckets = kept, made_at
        else:  # rule none: nothing to remember (a switch back to cover_mean starts afresh)
            for state in states:
                if state.order_up_to_levels or state.order_up_to_buckets:
                    state.order_up_to_levels, state.order_up_to_buckets = [], []
        for i in np.flatnonzero(decided.clear_stockout).tolist():
            del states[i].open_alerts["stockout_risk"]
        for i in np.flatnonzero(fresh).tolist():
            del states[i].open_alerts["stale_stock"]
        # per SKU in order: its anomaly, overdue restocks, stale stock, stock-out alert and
        # restock; then the anomalies of SKUs whose stock is unknown
        anomalous, stockout = decided.anomalous, decided.raise_stockout
        restock = decided.order_quantity > 0
        overdue = np.zeros(len(states), dtype=bool)
        overdue[list(newly_overdue)] = True
        acting = known & (anomalous | overdue | stale | stockout | restock)
        for i in [*np.flatnonzero(acting).tolist(), *np.flatnonzero(~known & anomalous).tolist()]:
            state = states[i]
            bucket_start = datetime.fromtimestamp(last_closed[i] * self.bucket_seconds, UTC)
            if anomalous[i]:
                self._anomaly(state, float(observed[i]), float(previous_high[i]), bucket_start,
                              issued_at, out)
            if overdue[i]:
                self._overdue_alert(state, newly_overdue[i], last_closed[i],
                                    float(decided.arriving_position[i]), bucket_start,
                                    issued_at, out)
            if stale[i]:
                self._stale(state, int(stock_age[i]), bucket_start, issued_at, out)
            if stockout[i]:
                self._stockout(state, float(decided.stockout_risk[i]),
                               int(decided.risk_steps[i]),
                               float(decided.arriving_position[i]), int(overdue_units[i]),
                               bucket_start, issued_at, out)
            if restock[i]:
                self._restock(state, policies[i], decided, i, on_order[i], last_closed[i],
                              bucket_start, issued_at, version, out)

    def _overdue(self, states: list[SkuState], last_closed: list[int], terms: PolicyTerms
                 ) -> tuple[np.ndarray, dict[int, list[str]]]:
        """Units of each SKU's overdue restocks, and per SKU (index) the restock ids that
        became overdue at this review (recorded in the state: one alert per restock)."""
        owners: list[int] = []
        ids: list[str] = []
        issued: list[int] = []
        leads: list[int] = []
        units: list[int] = []
        lead_steps = terms.lead_steps
        for i, state in enumerate(states):
            if not state.on_order:
                continue
            state.time_orders(last_closed[i], int(lead_steps[i]))
            for restock_id, left in state.on_order.items():
                issued_bucket, lead = state.on_order_terms[restock_id]
                owners.append(i)
                ids.append(restock_id)
                issued.append(issued_bucket)
                leads.append(lead)
                units.append(left)
        overdue_units = np.zeros(len(states))
        newly: dict[int, list[str]] = {}
        if not owners:
            return overdue_units, newly
        late = overdue_restocks(issued, leads, np.asarray(last_closed)[owners],
                                self.config.restock_grace_buckets)
        np.add.at(overdue_units, np.asarray(owners)[late], np.asarray(units)[late])
        for j in np.flatnonzero(late).tolist():
            state = states[owners[j]]
            if ids[j] not in state.overdue:
                state.overdue.append(ids[j])
                newly.setdefault(owners[j], []).append(ids[j])
        return overdue_units, newly

    def _policy(self, state: SkuState) -> SkuPolicy:
        if state.policy is None:
            return self.config.default_policy
        key = tuple(state.policy.items())
        policy = self._policies.get(key)
        if policy is None:
            if len(self._policies) > 50_000:
                self._policies.clear()
            policy = self._policies[key] = SkuPolicy.model_validate(state.policy, strict=False)
        return policy

    def _restock(self, state: SkuState, policy: SkuPolicy, decided: Review, i: int,
                 on_order: int, last_closed: int, bucket_start: datetime, issued_at: datetime,
                 model_version: str, out: BatchOutputs) -> None:
        quantity = int(decided.order_quantity[i])
        cover = decided.cover_quantiles
        # One restock per SKU per closed bucket: the id ignores the quantity on purpose, so a
        # reprocessed batch (whatever state it saw) can never become a second order.
        restock_id = deterministic_id("restock", state.sku, state.location, last_closed)
        state.place_order(restock_id, quantity, issued_bucket=last_closed,
                          lead_buckets=int(decided.terms.lead_steps[i]))
        out.restocks.append(RestockEvent.model_construct(
            restock_id=restock_id, sku=state.sku, location=state.location,
            supplier=policy.supplier, quantity=quantity,
            reorder_point=round(float(decided.reorder_point[i]), 4),
            order_up_to=round(float(decided.order_up_to[i]), 4),
            inventory_position=float(decided.inventory_position[i]), on_hand=state.on_hand,
            on_order=on_order, backorders=state.backorders, service_level=policy.service_level,
            lead_time_days=policy.lead_time_days, review_days=policy.review_days,
            unit_cost=policy.unit_cost, reason=decided.restock_reason(i),
            model_version=model_version, bucket=bucket_start, issued_at=issued_at,
            case_pack=policy.case_pack, moq=policy.moq,
            demand_levels=None if cover is None else decided.demand_levels.tolist(),
            demand_quantiles=None if cover is None else np.round(cover[i], 4).tolist()))

    def _alert(self, state: SkuState, kind: str, severity: str, message: str,
               details: dict[str, Any], bucket_start: datetime, issued_at: datetime) -> AlertRow:
        return AlertRow(deterministic_id("alert", state.sku, state.location, kind,
                                         bucket_start.isoformat()),
                        state.sku, state.location, kind, severity, message, details, issued_at,
                        bucket_start)

    def _stockout(self, state: SkuState, risk: float, steps: int, position: float,
                  overdue_units: int, bucket_start: datetime, issued_at: datetime,
                  out: BatchOutputs) -> None:
        """`position`: what can still arrive (overdue restocks' `overdue_units` left out)."""
        assert state.watermark is not None
        state.open_alerts["stockout_risk"] = state.watermark
        severity = "critical" if risk >= 0.5 else "warning"
        overdue = f", {overdue_units} overdue unit(s) not counted" if overdue_units else ""
        out.alert_rows.append(self._alert(
            state, "stockout_risk", severity,
            f"{sku_key(state.sku, state.location)}: {risk:.0%} chance of running out within "
            f"{steps} bucket(s) (inventory position {position:g}{overdue})",
            {"probability": round(risk, 4), "inventory_position": position,
             "lead_time_buckets": steps, "overdue_units": overdue_units},
            bucket_start, issued_at))

    def _overdue_alert(self, state: SkuState, restock_ids: list[str], last_closed: int,
                       position: float, bucket_start: datetime, issued_at: datetime,
                       out: BatchOutputs) -> None:
        units = sum(state.on_order[r] for r in restock_ids)
        due = [(r, sum(state.on_order_terms[r])) for r in restock_ids]
        out.alert_rows.append(self._alert(
            state, "overdue_restock", "warning",
            f"{sku_key(state.sku, state.location)}: {len(restock_ids)} restock(s) of {units} "
            f"unit(s) not received {last_closed - min(d for _, d in due)} bucket(s) after due "
            f"(inventory position without them {position:g})",
            {"restock_ids": restock_ids, "units": units,
             "due": [datetime.fromtimestamp(d * self.bucket_seconds, UTC).isoformat()
                     for _, d in due],
             "grace_buckets": self.config.restock_grace_buckets,
             "inventory_position_arriving": position},
            bucket_start, issued_at))

    def _stale(self, state: SkuState, age: int, bucket_start: datetime, issued_at: datetime,
               out: BatchOutputs) -> None:
        assert state.watermark is not None
        state.open_alerts["stale_stock"] = state.watermark
        out.alert_rows.append(self._alert(
            state, "stale_stock", "info",
            f"{sku_key(state.sku, state.location)}: no stock snapshot or movement for {age} "
            f"bucket(s) (on hand {state.on_hand} is derived from orders since)",
            {"age_buckets": age, "stale_after_buckets": self.config.stale_stock_buckets,
             "stock_as_of": state.stock_as_of}, bucket_start, issued_at))

    def _anomaly(self, state: SkuState, observed: float, high: float, bucket_start: datetime,
                 issued_at: datetime, out: BatchOutputs) -> None:
        out.alert_rows.append(self._alert(
            state, "demand_anomaly", "warning",
            f"{sku_key(state.sku, state.location)}: demand {observed:g} above the forecast's "
            f"{HIGH_LEVEL:.1%} quantile {high:.1f}",
            {"observed": observed, "high_quantile": round(high, 4), "level": HIGH_LEVEL},
            bucket_start, issued_at))


def _keyed(record: InputRecord, key: str) -> str:
    """`key` (the payload's sku@location), unless the record's Kafka key says otherwise: such
    a record would be counted to one SKU on the partition of another (no key is fine)."""
    if record.key is not None and record.key != key.encode():
        shown = record.key.decode("utf-8", errors="replace")[:200]
        raise InvalidEvent(f"record key {shown!r} is not the payload's sku@location {key!r}",
                           kind="key_mismatch")
    return key


def _keys_agree(record_keys: list[bytes | None], keys: list[str]) -> bool:
    """Whether every record key is None or its payload's key (a run of orders, at C speed
    when all are keyed)."""
    if None not in record_keys:
        return record_keys == list(map(str.encode, keys))
    return all(k is None or k == key.encode() for k, key in zip(record_keys, keys, strict=True))


def _closed_demand(states: list[SkuState], last_closed: list[int], levels: list[float],
                   bucket_seconds: int, lateness: int, window: int) -> list[DemandRow]:
    """The actual of each bucket closed since a state's last forecast (its first with that
    forecast's first step, when the state holds one of as many levels), and again those of
    the `lateness` buckets before them, which late events may have changed since they were
    published (without a forecast: it was scored when the bucket closed). At most the last
    `window` closed buckets: an SKU silent for longer has only zeros before them."""
    rows: list[DemandRow] = []
    starts: dict[int, datetime] = {}  # bucket -> its start (most SKUs close the same buckets)
    for state, closed in zip(states, last_closed, strict=True):
        assert state.first_bucket is not None
        new_from = state.first_bucket if state.actuals_from is None else state.actuals_from
        start = max(state.first_bucket, new_from - lateness)
        held = state.next_forecast
        if held is not None and len(held) != len(levels):
            held = None  # a model with other levels came in: nothing to score it at
        demand = state.demand
        for b in range(max(start, closed + 1 - window), closed + 1):
            quantity = max(0.0, demand.get(b, 0.0))
            bucket = starts.get(b)
            if bucket is None:
                bucket = starts[b] = datetime.fromtimestamp(b * bucket_seconds, UTC)
            if b == new_from and held is not None:
                rows.append(DemandRow(state.sku, state.location, bucket, bucket_seconds,
                                      quantity, state.next_forecast_version, levels, held))
            else:
                rows.append(DemandRow(state.sku, state.location, bucket, bucket_seconds,
                                      quantity))
    return rows


def _closed_windows(states: list[SkuState], last_closed: list[int], window: int) -> np.ndarray:
    """(n, window) demand of each state's last `window` closed buckets, oldest first; NaN
    before the SKU was first seen, 0 for a seen bucket without demand (`closed_window`)."""
    first = np.array([s.first_bucket for s in states], dtype=np.int64)
    start = np.asarray(last_closed, dtype=np.int64) - (window - 1)  # bucket of column 0
    cols = np.arange(window)
    out = np.where(start[:, None] + cols[None, :] >= first[:, None], 0.0, np.nan)
    rows: list[int] = []
    at: list[int] = []
    values: list[float] = []
    for i, state in enumerate(states):
        lo, hi = max(int(start[i]), int(first[i])), last_closed[i]
        for b, q in state.demand.items():
            if lo <= b <= hi:
                rows.append(i)
                at.append(b - int(start[i]))
                values.append(q)
    if rows:
        out[rows, at] = np.maximum(np.asarray(values, dtype=float), 0.0)
    return out
