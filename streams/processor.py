"""The batch step of the stream: raw records in, state updated, events out (no Kafka here).

The Faust agent hands a batch of raw records and the table; this module validates, dedupes,
buckets demand, forecasts every SKU whose bucket closed in one batched call, decides
restocks and raises alerts. Keeping it free of Faust makes it testable as plain code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby
from operator import attrgetter
from typing import Any, Protocol

import numpy as np

from forecasting import QuantileForecast
from optimizer.policy import decide_restock, order_quantity
from runtime.settings import Settings
from schemas import (
    InvalidEvent,
    OrderEvent,
    RestockEvent,
    SkuPolicy,
    StockEvent,
    dead_letter,
    decode,
    deterministic_id,
    sku_key,
    split_key,
)
from streams.codec import FastOrder, FastStock, fast_order, fast_stock, order_columns
from streams.outputs import AlertRow, BatchOutputs, ForecastRows
from streams.state import ApplyResult, SkuState

__all__ = ["BatchOutputs", "BatchProcessor", "InputRecord", "PredictFn", "RawRecord"]

class PredictFn(Protocol):
    """The forecaster call the processor makes, once per batch for every due SKU.

    `keys` (sku@location) and `end_days` (the date of each window's last closed daily bucket)
    let a stateful model step its carried state instead of re-reading the window; a plain
    forecaster ignores them."""

    def __call__(self, windows: np.ndarray, horizon: int, *, keys: Sequence[str] | None = None,
                 end_days: np.ndarray | None = None) -> Awaitable[QuantileForecast]: ...

_TOPIC, _VALUE, _RECORD_KEY = attrgetter("topic"), attrgetter("value"), attrgetter("key")
_KEY_FORMAT = "{}@{}".format  # sku_key, as a C-level callable for map()

HIGH_LEVEL = 0.975  # forecast quantile above which observed demand is an anomaly
RISK_OPEN, RISK_CLOSE = 0.2, 0.1  # stock-out probability hysteresis: one alert per episode


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
    """Applies batches of shop events to SKU state and emits forecasts, restocks and alerts."""

    def __init__(
        self,
        settings: Settings,
        predict: PredictFn,
        model_version: str,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.predict = predict
        self.model_version = model_version
        self.now = now
        self.topics = settings.topics
        self.bucket_seconds = settings.bucket_seconds()
        self.window = settings.window_buckets
        self.lateness = settings.allowed_lateness_buckets
        self.id_memory = settings.dedupe_buckets or settings.window_buckets  # buckets
        # the engine lowers it to what its DLQ topic has room for (streams.dead_letters)
        self.dlq_payload_bytes = settings.dlq_payload_bytes
        self._default_policy: SkuPolicy | None = None
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
        max_bytes = self.settings.max_payload_bytes
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
        raise InvalidEvent(f"unexpected topic {record.topic!r}", kind="unknown_topic")

    def _apply(self, event: FastStock | SkuPolicy, state: SkuState) -> ApplyResult:
        if isinstance(event, FastStock):
            return state.apply_stock(event.event_id, event.occurred_at, event.type,
                                     on_hand=event.on_hand, delta=event.delta,
                                     restock_id=event.restock_id,
                                     bucket_seconds=self.bucket_seconds, lateness=self.lateness)
        state.policy = event.model_dump(mode="json")
        return "ok"

    async def process(
        self, records: Sequence[InputRecord], table: MutableMapping[str, Any]
    ) -> BatchOutputs:
        """Apply a batch; each touched table key is written once at the end.

        The outputs and the final state are those of processing the records one at a time
        (up to the order of outputs across SKUs): an SKU whose bucket closed is forecast and
        reviewed before its next event is applied. The batch runs in rounds: each round
        applies events until an SKU has a forecast due, holds that SKU's later events back
        for the next round, and ends with one forecaster call for every SKU due.

        Table values are `SkuState.to_json()` dicts, or the `SkuState` objects themselves when
        the table says `holds_state_objects` (then they are updated in place, and written
        back once so the table knows they changed).
        """
        out = BatchOutputs()
        cache: dict[str, SkuState] = {}
        pending: list[_Item] = []
        orders_topic, max_bytes = self.topics.orders, self.settings.max_payload_bytes
        for topic, group in groupby(records, key=_TOPIC):
            run = list(group)
            if topic == orders_topic:  # the bulk: decode the run a column at a time
                columns = order_columns(list(map(_VALUE, run)), max_bytes)
                if columns is not None:
                    keys = list(map(_KEY_FORMAT, columns.sku, columns.location))
                    if _keys_agree(list(map(_RECORD_KEY, run)), keys):
                        pending.extend(zip(run, keys, columns.event_id, columns.occurred_at,
                                           columns.signed_quantity, strict=True))
                        continue
            for record in run:
                try:
                    pending.append(self._decode(record))
                except InvalidEvent as exc:
                    out.dead_letters.append(dead_letter(
                        topic=record.topic, partition=record.partition, offset=record.offset,
                        key=record.key, raw=record.value, error=exc,
                        max_payload_bytes=self.dlq_payload_bytes))
        apply_order = SkuState.order
        bucket_seconds, window, lateness = self.bucket_seconds, self.window, self.lateness
        memory = self.id_memory
        while pending:
            held: list[_Item] = []
            due: dict[str, SkuState] = {}
            accepted = duplicates = 0
            for item in pending:
                record, key, event, occurred_at, quantity = item
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
                    out.dead_letters.append(dead_letter(
                        topic=record.topic, partition=record.partition, offset=record.offset,
                        key=record.key, raw=record.value,
                        error=InvalidEvent(
                            f"event is more than {self.lateness} bucket(s) behind its SKU's "
                            "clock", kind="late"),
                        max_payload_bytes=self.dlq_payload_bytes))
                if state.forecast_pending:
                    due[key] = state
            out.accepted += accepted
            out.duplicates += duplicates
            if due:
                await self._forecast_and_decide(list(due), list(due.values()), out)
            pending = held
        if getattr(table, "holds_state_objects", False):
            table.update(cache)
        else:
            table.update({key: state.to_json() for key, state in cache.items()})
        return out

    # --- forecast, restock, alerts ---------------------------------------------------------
    async def _forecast_and_decide(self, keys: list[str], states: list[SkuState],
                                   out: BatchOutputs) -> None:
        """One forecaster call for every due SKU; levels, alerts' tests and quantities as arrays.

        Python touches each SKU only for what is per SKU by nature: its state's fields, and
        the alerts and restocks it raises (a minority); the forecasts stay arrays
        (`ForecastRows`) whose JSON the engine writes without building models.
        """
        horizon = self.settings.horizon_buckets
        last_closed = [s.watermark - 1 for s in states]  # type: ignore[operator]
        windows = _closed_windows(states, last_closed, self.window)
        skus = [s.sku for s in states]
        locations = [s.location for s in states]
        end_days = None
        if self.bucket_seconds == 86_400:  # daily buckets: bucket index == days since epoch
            end_days = np.array(last_closed, dtype="datetime64[D]")
        forecast = await self.predict(windows, horizon, keys=keys, end_days=end_days)
        issued_at = self.now()
        levels = np.asarray(forecast.levels, dtype=float)
        out.forecast_rows.append(ForecastRows(
            skus=skus, locations=locations, last_closed=last_closed,
            bucket_seconds=self.bucket_seconds, issued_at=issued_at, levels=levels.tolist(),
            daily=np.round(forecast.daily, 4), cumulative=np.round(forecast.cumulative, 4),
            mean=np.round(forecast.mean, 4), model_version=self.model_version))
        policies = list(map(self._policy, states))
        # a shop has few distinct policies (most SKUs share the default): their terms once each
        terms = {id(p): self._policy_terms(p) for p in policies}
        lead, cover, service, case_pack, moq = (
            list(column) for column in zip(*map(terms.__getitem__, map(id, policies)), strict=True))
        # Periodic review: an order placed now must last until the NEXT review's order lands,
        # so the reorder point protects lead time + review period (a point over the lead time
        # alone leaves the review period unprotected — the simulation showed stock-outs on
        # perfectly known demand). Reorder point = order-up-to: the (R, S) policy.
        order_up_to = self._lead_time_quantiles(forecast, cover, service)
        reorder_point = order_up_to
        on_order = [sum(s.on_order.values()) if s.on_order else 0 for s in states]
        position = np.array([s.on_hand + on_order[i] - s.backorders
                             for i, s in enumerate(states)], dtype=float)
        quantity = order_quantity(position, reorder_point, order_up_to,
                                  np.array(case_pack, dtype=float), np.array(moq, dtype=float))
        # anomaly: the closed bucket's demand above the previous forecast's high quantile
        observed = windows[:, -1]
        previous_high = np.array([np.nan if s.next_bucket_high is None else s.next_bucket_high
                                  for s in states], dtype=float)
        with np.errstate(invalid="ignore"):
            anomalous = observed > np.fmax(previous_high, 1.0)
        anomalous &= ~np.isnan(previous_high)
        high = _interp_rows(HIGH_LEVEL, levels, forecast.daily[:, 0, :]).tolist()
        known = [i for i, s in enumerate(states) if s.stock_known]
        risk: list[float] = []
        if known:
            rows = np.asarray(known, dtype=np.intp)
            steps = np.minimum(np.asarray(lead, dtype=np.intp)[rows], forecast.cumulative.shape[1])
            risk = _prob_exceeds_rows(forecast.cumulative[rows, steps - 1, :], levels,
                                      position[rows]).tolist()
        for state, h in zip(states, high, strict=True):
            state.forecast_pending = False
            state.next_bucket_high = h
        flagged = set(np.flatnonzero(anomalous).tolist())
        for j, i in enumerate(known):
            state = states[i]
            is_open = "stockout_risk" in state.open_alerts
            stockout = not is_open and risk[j] >= RISK_OPEN
            if is_open and risk[j] < RISK_CLOSE:
                del state.open_alerts["stockout_risk"]
            restock = quantity[i] > 0
            if not (stockout or restock or i in flagged):
                continue
            flagged.discard(i)
            bucket_start = datetime.fromtimestamp(last_closed[i] * self.bucket_seconds, UTC)
            if anomalous[i]:
                self._anomaly(state, float(observed[i]), float(previous_high[i]), bucket_start,
                              issued_at, out)
            if stockout:
                self._stockout(state, risk[j], min(lead[i], forecast.cumulative.shape[1]),
                               float(position[i]), bucket_start, issued_at, out)
            if restock:
                self._restock(state, policies[i], float(reorder_point[i]),
                              float(order_up_to[i]), on_order[i], last_closed[i], bucket_start,
                              issued_at, out, _cover_quantiles(forecast, i, cover[i]))
        for i in sorted(flagged):  # anomalies of SKUs without known stock
            bucket_start = datetime.fromtimestamp(last_closed[i] * self.bucket_seconds, UTC)
            self._anomaly(states[i], float(observed[i]), float(previous_high[i]), bucket_start,
                          issued_at, out)

    @staticmethod
    def _lead_time_quantiles(forecast: QuantileForecast, steps: list[int],
                             service: list[float]) -> np.ndarray:
        """Lead-time demand quantile per series, one vectorised call per (steps, level)."""
        values = np.empty(len(steps))
        groups: dict[tuple[int, float], list[int]] = {}
        for i, key in enumerate(zip(steps, service, strict=True)):
            groups.setdefault(key, []).append(i)
        for (n_steps, level), rows in groups.items():
            idx = np.asarray(rows, dtype=np.intp)
            values[idx] = forecast.lead_time_quantile(idx, n_steps, level)
        return values

    def _policy(self, state: SkuState) -> SkuPolicy:
        if state.policy is None:
            if self._default_policy is None:
                s = self.settings
                self._default_policy = SkuPolicy(
                    sku="default", location="default", lead_time_days=s.default_lead_time_days,
                    review_days=s.default_review_days, service_level=s.default_service_level,
                    case_pack=s.default_case_pack, moq=s.default_moq,
                    supplier=s.default_supplier)
            return self._default_policy
        key = tuple(state.policy.items())
        policy = self._policies.get(key)
        if policy is None:
            if len(self._policies) > 50_000:
                self._policies.clear()
            policy = self._policies[key] = SkuPolicy.model_validate(state.policy, strict=False)
        return policy

    def _steps(self, days: int) -> int:
        return max(1, round(days * 86_400 / self.bucket_seconds))

    def _restock(self, state: SkuState, policy: SkuPolicy, reorder_point: float,
                 order_up_to: float, on_order: int, last_closed: int, bucket_start: datetime,
                 issued_at: datetime, out: BatchOutputs,
                 cover: tuple[list[float], list[float]] | None = None) -> None:
        decision = decide_restock(  # the scalar review, for its reason text
            reorder_point=reorder_point, order_up_to=order_up_to, on_hand=state.on_hand,
            on_order=on_order, backorders=state.backorders, case_pack=policy.case_pack,
            moq=policy.moq)
        # One restock per SKU per closed bucket: the id ignores the quantity on purpose, so a
        # reprocessed batch (whatever state it saw) can never become a second order.
        restock_id = deterministic_id("restock", state.sku, state.location, last_closed)
        state.on_order[restock_id] = decision.quantity
        out.restocks.append(RestockEvent.model_construct(
            restock_id=restock_id, sku=state.sku, location=state.location,
            supplier=policy.supplier, quantity=decision.quantity,
            reorder_point=round(reorder_point, 4), order_up_to=round(order_up_to, 4),
            inventory_position=float(decision.inventory_position), on_hand=state.on_hand,
            on_order=on_order, backorders=state.backorders, service_level=policy.service_level,
            lead_time_days=policy.lead_time_days, review_days=policy.review_days,
            unit_cost=policy.unit_cost, reason=decision.reason, model_version=self.model_version,
            bucket=bucket_start, issued_at=issued_at, case_pack=policy.case_pack, moq=policy.moq,
            demand_levels=None if cover is None else cover[0],
            demand_quantiles=None if cover is None else cover[1]))

    def _policy_terms(self, policy: SkuPolicy) -> tuple[int, int, float, int, int]:
        """(lead steps, lead + review steps, service level, case pack, MOQ) of a policy."""
        lead = self._steps(policy.lead_time_days)
        return (lead, lead + self._steps(policy.review_days), policy.service_level,
                policy.case_pack, policy.moq)

    def _alert(self, state: SkuState, kind: str, severity: str, message: str,
               details: dict[str, Any], bucket_start: datetime, issued_at: datetime) -> AlertRow:
        return AlertRow(deterministic_id("alert", state.sku, state.location, kind,
                                         bucket_start.isoformat()),
                        state.sku, state.location, kind, severity, message, details, issued_at,
                        bucket_start)

    def _stockout(self, state: SkuState, risk: float, steps: int, position: float,
                  bucket_start: datetime, issued_at: datetime, out: BatchOutputs) -> None:
        assert state.watermark is not None
        state.open_alerts["stockout_risk"] = state.watermark
        severity = "critical" if risk >= 0.5 else "warning"
        out.alert_rows.append(self._alert(
            state, "stockout_risk", severity,
            f"{state.sku}@{state.location}: {risk:.0%} chance of running out within "
            f"{steps} bucket(s) (inventory position {position:g})",
            {"probability": round(risk, 4), "inventory_position": position,
             "lead_time_buckets": steps}, bucket_start, issued_at))

    def _anomaly(self, state: SkuState, observed: float, high: float, bucket_start: datetime,
                 issued_at: datetime, out: BatchOutputs) -> None:
        out.alert_rows.append(self._alert(
            state, "demand_anomaly", "warning",
            f"{state.sku}@{state.location}: demand {observed:g} above the forecast's "
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


def _cover_quantiles(forecast: QuantileForecast, row: int,
                     steps: int) -> tuple[list[float], list[float]] | None:
    """(levels, quantiles) of one series' demand over `steps` buckets (the restock's lead time
    + review period), for the optimizer to value its case packs; None with under 2 levels.
    Made non-negative and non-decreasing, as the RestockEvent contract requires."""
    levels = forecast.levels.tolist()
    if len(levels) < 2:
        return None
    if steps <= forecast.horizon:  # `cumulative` holds exactly these quantiles
        values = forecast.cumulative[row, steps - 1]
    else:
        values = np.array([forecast.lead_time_quantile(row, steps, q) for q in levels])
    values = np.maximum.accumulate(np.maximum(values, 0.0))
    return levels, np.round(values, 4).tolist()


def _interp_rows(x: float, levels: np.ndarray, values: np.ndarray) -> np.ndarray:
    """`np.interp(x, levels, row)` for every row of `values` (one level, shared abscissae)."""
    j = int(np.searchsorted(levels, x, side="right")) - 1
    if j < 0:
        return values[:, 0].astype(float)
    if j >= levels.size - 1:
        return values[:, -1].astype(float)
    slope = (values[:, j + 1] - values[:, j]) / (levels[j + 1] - levels[j])
    return np.asarray(slope * (x - levels[j]) + values[:, j], dtype=float)


def _prob_exceeds_rows(values: np.ndarray, levels: np.ndarray, x: np.ndarray) -> np.ndarray:
    """P(demand > x[i]) read off the quantiles `values[i]` at `levels` (`_prob_exceeds` per
    row: linear between levels, the tail mass beyond the extreme levels)."""
    below_first = x < values[:, 0]
    from_last = x >= values[:, -1]
    # j: the last level whose quantile is <= x (quantiles are non-decreasing along a row)
    j = np.clip((values <= x[:, None]).sum(axis=1) - 1, 0, levels.size - 2)
    r = np.arange(values.shape[0])
    lo, hi = values[r, j], values[r, j + 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        inside = levels[j] + (levels[j + 1] - levels[j]) / (hi - lo) * (x - lo)
    p = 1.0 - inside
    p = np.where(from_last, 1.0 - levels[-1], p)
    return np.where(below_first, np.where(x >= 0, 1.0 - levels[0], 1.0), p)
