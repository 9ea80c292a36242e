"""The batch step of the stream: raw records in, state updated, events out (no Kafka here).

The Faust agent hands a batch of raw records and the table; this module validates, dedupes,
buckets demand, forecasts every SKU whose bucket closed in one batched call, decides
restocks and raises alerts. Keeping it free of Faust makes it testable as plain code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

import numpy as np

from forecasting import QuantileForecast
from optimizer.policy import decide_restock, order_quantity
from schemas import (
    AlertEvent,
    DeadLetter,
    ForecastEvent,
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
from shelfcast.settings import Settings
from streams.codec import FastOrder, FastStock, fast_order, fast_stock
from streams.state import ApplyResult, SkuState

__all__ = ["BatchOutputs", "BatchProcessor", "PredictFn", "RawRecord"]

class PredictFn(Protocol):
    """The forecaster call the processor makes, once per batch for every due SKU.

    `keys` (sku@location) and `end_days` (the date of each window's last closed daily bucket)
    let a stateful model step its carried state instead of re-reading the window; a plain
    forecaster ignores them."""

    def __call__(self, windows: np.ndarray, horizon: int, *, keys: Sequence[str] | None = None,
                 end_days: np.ndarray | None = None) -> Awaitable[QuantileForecast]: ...

HIGH_LEVEL = 0.975  # forecast quantile above which observed demand is an anomaly
RISK_OPEN, RISK_CLOSE = 0.2, 0.1  # stock-out probability hysteresis: one alert per episode


@dataclass(frozen=True)
class RawRecord:
    """One consumed record as the broker gave it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class _Item(NamedTuple):
    """A decoded input record and the state key it applies to."""

    record: RawRecord
    key: str
    event: FastOrder | FastStock | SkuPolicy


@dataclass
class BatchOutputs:
    """What one batch produced, plus counters for metrics and the demo summary."""

    forecasts: list[ForecastEvent] = field(default_factory=list)
    restocks: list[RestockEvent] = field(default_factory=list)
    alerts: list[AlertEvent] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    accepted: int = 0
    duplicates: int = 0


def _prob_exceeds(values: np.ndarray, levels: np.ndarray, x: float) -> float:
    """P(demand > x) read off quantiles `values` at `levels` (linear between levels)."""
    if x < values[0]:
        return float(1.0 - levels[0]) if x >= 0 else 1.0
    if x >= values[-1]:
        return float(1.0 - levels[-1])
    return float(1.0 - np.interp(x, values, levels))


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

    def _decode(self, record: RawRecord) -> _Item:
        """The record as the few fields the state needs; raises InvalidEvent for the DLQ."""
        max_bytes = self.settings.max_payload_bytes
        if record.topic == self.topics.orders:
            order = fast_order(record.value, max_bytes)
            if order is None:  # not plainly valid: the model decides, and says why
                full = decode(OrderEvent, record.value, max_bytes=max_bytes)
                order = FastOrder(full.event_id, full.sku, full.location,
                                  full.occurred_at.timestamp(), full.signed_quantity())
            return _Item(record, sku_key(order.sku, order.location), order)
        if record.topic == self.topics.stock:
            stock = fast_stock(record.value, max_bytes)
            if stock is None:
                e = decode(StockEvent, record.value, max_bytes=max_bytes)
                stock = FastStock(e.event_id, e.type, e.sku, e.location,
                                  e.occurred_at.timestamp(), e.on_hand, e.delta, e.restock_id)
            return _Item(record, sku_key(stock.sku, stock.location), stock)
        if record.topic == self.topics.catalog:
            policy = decode(SkuPolicy, record.value, max_bytes=max_bytes)
            return _Item(record, sku_key(policy.sku, policy.location), policy)
        raise InvalidEvent(f"unexpected topic {record.topic!r}", kind="unknown_topic")

    def _apply(self, item: _Item, state: SkuState) -> ApplyResult:
        event = item.event
        if isinstance(event, FastOrder):
            return state.apply_order(event.event_id, event.occurred_at, event.signed_quantity,
                                     bucket_seconds=self.bucket_seconds, window=self.window,
                                     lateness=self.lateness)
        if isinstance(event, FastStock):
            return state.apply_stock(event.event_id, event.occurred_at, event.type,
                                     on_hand=event.on_hand, delta=event.delta,
                                     restock_id=event.restock_id,
                                     bucket_seconds=self.bucket_seconds, lateness=self.lateness)
        state.policy = event.model_dump(mode="json")
        return "ok"

    async def process(
        self, records: list[RawRecord], table: MutableMapping[str, Any]
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
        for record in records:
            try:
                pending.append(self._decode(record))
            except InvalidEvent as exc:
                out.dead_letters.append(dead_letter(
                    topic=record.topic, partition=record.partition, offset=record.offset,
                    key=record.key, raw=record.value, error=exc))
        while pending:
            held: list[_Item] = []
            due: dict[str, SkuState] = {}
            for item in pending:
                if item.key in due:
                    held.append(item)
                    continue
                state = cache.get(item.key)
                if state is None:
                    state = self._state(cache, table, item.key)
                verdict = self._apply(item, state)
                if verdict == "ok":
                    out.accepted += 1
                elif verdict == "duplicate":
                    out.duplicates += 1
                else:
                    record = item.record
                    out.dead_letters.append(dead_letter(
                        topic=record.topic, partition=record.partition, offset=record.offset,
                        key=record.key, raw=record.value,
                        error=InvalidEvent(
                            f"event is more than {self.lateness} bucket(s) behind its SKU's "
                            "clock", kind="late")))
                if state.forecast_pending:
                    due[item.key] = state
            if due:
                await self._forecast_and_decide(list(due.values()), out)
            pending = held
        live = getattr(table, "holds_state_objects", False)
        for key, state in cache.items():
            table[key] = state if live else state.to_json()
        return out

    # --- forecast, restock, alerts ---------------------------------------------------------
    async def _forecast_and_decide(self, states: list[SkuState], out: BatchOutputs) -> None:
        """One forecaster call for every due SKU; policy levels and quantities as arrays."""
        horizon = self.settings.horizon_buckets
        windows = np.stack([s.closed_window(self.window) for s in states])
        keys = [sku_key(st.sku, st.location) for st in states]
        end_days = None
        if self.bucket_seconds == 86_400:  # daily buckets: bucket index == days since epoch
            end_days = np.array([st.last_closed_bucket() for st in states], dtype="datetime64[D]")
        forecast = await self.predict(windows, horizon, keys=keys, end_days=end_days)
        issued_at = self.now()
        levels = np.asarray(forecast.levels, dtype=float)
        level_list = levels.tolist()
        # round and convert once per batch, not once per SKU
        daily = np.round(forecast.daily, 4).tolist()
        cumulative = np.round(forecast.cumulative, 4).tolist()
        mean = np.round(forecast.mean, 4).tolist()
        policies = [self._policy(s) for s in states]
        lead = [self._steps(p.lead_time_days) for p in policies]
        cover = [lead[i] + self._steps(p.review_days) for i, p in enumerate(policies)]
        service = [p.service_level for p in policies]
        # Periodic review: an order placed now must last until the NEXT review's order lands,
        # so the reorder point protects lead time + review period (a point over the lead time
        # alone leaves the review period unprotected — the simulation showed stock-outs on
        # perfectly known demand). Reorder point = order-up-to: the (R, S) policy.
        order_up_to = self._lead_time_quantiles(forecast, cover, service)
        reorder_point = order_up_to
        on_order = [sum(s.on_order.values()) for s in states]
        position = [s.on_hand + on_order[i] - s.backorders for i, s in enumerate(states)]
        quantity = order_quantity(np.asarray(position, dtype=float), reorder_point, order_up_to,
                                  np.asarray([p.case_pack for p in policies], dtype=float),
                                  np.asarray([p.moq for p in policies], dtype=float))
        for i, state in enumerate(states):
            state.forecast_pending = False
            last_closed = state.last_closed_bucket()
            assert last_closed is not None
            bucket_start = datetime.fromtimestamp(last_closed * self.bucket_seconds, UTC)
            self._check_anomaly(state, windows[i, -1], bucket_start, issued_at, out)
            # our own output from checked numbers: construct, do not re-validate
            out.forecasts.append(ForecastEvent.model_construct(
                sku=state.sku, location=state.location, issued_at=issued_at, bucket=bucket_start,
                bucket_seconds=self.bucket_seconds, horizon=horizon,
                quantile_levels=list(level_list), quantiles=daily[i],
                cumulative=cumulative[i], mean=mean[i], model_version=self.model_version))
            state.next_bucket_high = float(np.interp(HIGH_LEVEL, levels, forecast.daily[i, 0]))
            self._check_stockout(state, forecast, i, lead[i], float(position[i]), bucket_start,
                                 issued_at, out)
            if quantity[i] <= 0 or not state.stock_known:
                continue
            self._restock(state, policies[i], float(reorder_point[i]), float(order_up_to[i]),
                          on_order[i], last_closed, bucket_start, issued_at, out)

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
                 issued_at: datetime, out: BatchOutputs) -> None:
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
            bucket=bucket_start, issued_at=issued_at))

    def _alert(self, state: SkuState, kind: str, severity: str, message: str,
               details: dict[str, Any], bucket_start: datetime, issued_at: datetime) -> AlertEvent:
        return AlertEvent.model_construct(
            alert_id=deterministic_id("alert", state.sku, state.location, kind,
                                      bucket_start.isoformat()),
            sku=state.sku, location=state.location, kind=kind,  # type: ignore[arg-type]
            severity=severity, message=message, details=details,  # type: ignore[arg-type]
            raised_at=issued_at)

    def _check_stockout(self, state: SkuState, forecast: QuantileForecast, i: int,
                        lead_steps: int, position: float, bucket_start: datetime,
                        issued_at: datetime, out: BatchOutputs) -> None:
        if not state.stock_known:
            return
        steps = min(lead_steps, forecast.cumulative.shape[1])
        risk = _prob_exceeds(forecast.cumulative[i, steps - 1], np.asarray(forecast.levels),
                             float(position))
        is_open = "stockout_risk" in state.open_alerts
        if not is_open and risk >= RISK_OPEN:
            assert state.watermark is not None
            state.open_alerts["stockout_risk"] = state.watermark
            severity = "critical" if risk >= 0.5 else "warning"
            out.alerts.append(self._alert(
                state, "stockout_risk", severity,
                f"{state.sku}@{state.location}: {risk:.0%} chance of running out within "
                f"{steps} bucket(s) (inventory position {position:g})",
                {"probability": round(risk, 4), "inventory_position": position,
                 "lead_time_buckets": steps}, bucket_start, issued_at))
        elif is_open and risk < RISK_CLOSE:
            del state.open_alerts["stockout_risk"]

    def _check_anomaly(self, state: SkuState, observed: float, bucket_start: datetime,
                       issued_at: datetime, out: BatchOutputs) -> None:
        high = state.next_bucket_high
        if high is None or np.isnan(observed) or observed <= max(high, 1.0):
            return
        out.alerts.append(self._alert(
            state, "demand_anomaly", "warning",
            f"{state.sku}@{state.location}: demand {observed:g} above the forecast's "
            f"{HIGH_LEVEL:.1%} quantile {high:.1f}",
            {"observed": observed, "high_quantile": round(high, 4), "level": HIGH_LEVEL},
            bucket_start, issued_at))
