"""The batch step of the stream: raw records in, state updated, events out (no Kafka here).

The Faust agent hands a batch of raw records and the table; this module validates, dedupes,
buckets demand, forecasts every SKU whose bucket closed in one batched call, decides
restocks and raises alerts. Keeping it free of Faust makes it testable as plain code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from forecasting import QuantileForecast
from optimizer.policy import decide_restock
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
)
from shelfcast.settings import Settings
from streams.state import SkuState

__all__ = ["BatchOutputs", "BatchProcessor", "PredictFn", "RawRecord"]

PredictFn = Callable[[np.ndarray, int], Awaitable[QuantileForecast]]

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

    # --- ingest ----------------------------------------------------------------------------
    def _state(self, cache: dict[str, SkuState], table: MutableMapping[str, Any], sku: str,
               location: str) -> SkuState:
        key = sku_key(sku, location)
        state = cache.get(key)
        if state is None:
            raw = table.get(key)
            state = SkuState.from_json(raw) if raw else SkuState(sku=sku, location=location)
            cache[key] = state
        return state

    def _apply(self, record: RawRecord, cache: dict[str, SkuState],
               table: MutableMapping[str, Any]) -> str:
        max_bytes = self.settings.max_payload_bytes
        if record.topic == self.topics.orders:
            order = decode(OrderEvent, record.value, max_bytes=max_bytes)
            state = self._state(cache, table, order.sku, order.location)
            return state.apply_order(order.event_id, order.occurred_at.timestamp(),
                                     order.signed_quantity(), bucket_seconds=self.bucket_seconds,
                                     window=self.window, lateness=self.lateness)
        if record.topic == self.topics.stock:
            stock = decode(StockEvent, record.value, max_bytes=max_bytes)
            state = self._state(cache, table, stock.sku, stock.location)
            return state.apply_stock(stock.event_id, stock.occurred_at.timestamp(), stock.type,
                                     on_hand=stock.on_hand, delta=stock.delta,
                                     restock_id=stock.restock_id,
                                     bucket_seconds=self.bucket_seconds, lateness=self.lateness)
        if record.topic == self.topics.catalog:
            policy = decode(SkuPolicy, record.value, max_bytes=max_bytes)
            state = self._state(cache, table, policy.sku, policy.location)
            state.policy = policy.model_dump(mode="json")
            return "ok"
        raise InvalidEvent(f"unexpected topic {record.topic!r}", kind="unknown_topic")

    async def process(
        self, records: list[RawRecord], table: MutableMapping[str, Any]
    ) -> BatchOutputs:
        """Apply a batch; each touched table key is written once at the end."""
        out = BatchOutputs()
        cache: dict[str, SkuState] = {}
        for record in records:
            try:
                verdict = self._apply(record, cache, table)
            except InvalidEvent as exc:
                out.dead_letters.append(dead_letter(
                    topic=record.topic, partition=record.partition, offset=record.offset,
                    key=record.key, raw=record.value, error=exc))
                continue
            if verdict == "duplicate":
                out.duplicates += 1
            elif verdict == "late":
                out.dead_letters.append(dead_letter(
                    topic=record.topic, partition=record.partition, offset=record.offset,
                    key=record.key, raw=record.value,
                    error=InvalidEvent(
                        f"event is more than {self.lateness} bucket(s) behind its SKU's clock",
                        kind="late")))
            else:
                out.accepted += 1
        due = [s for s in cache.values() if s.forecast_pending]
        if due:
            await self._forecast_and_decide(due, out)
        for key, state in cache.items():
            table[key] = state.to_json()
        return out

    # --- forecast, restock, alerts ---------------------------------------------------------
    async def _forecast_and_decide(self, states: list[SkuState], out: BatchOutputs) -> None:
        horizon = self.settings.horizon_buckets
        windows = np.stack([s.closed_window(self.window) for s in states])
        forecast = await self.predict(windows, horizon)
        issued_at = self.now()
        levels = np.asarray(forecast.levels, dtype=float)
        for i, state in enumerate(states):
            state.forecast_pending = False
            last_closed = state.last_closed_bucket()
            assert last_closed is not None
            bucket_start = datetime.fromtimestamp(last_closed * self.bucket_seconds, UTC)
            self._check_anomaly(state, windows[i, -1], bucket_start, issued_at, out)
            out.forecasts.append(ForecastEvent(
                sku=state.sku, location=state.location, issued_at=issued_at, bucket=bucket_start,
                bucket_seconds=self.bucket_seconds, horizon=horizon,
                quantile_levels=levels.tolist(),
                quantiles=np.round(forecast.daily[i], 4).tolist(),
                cumulative=np.round(forecast.cumulative[i], 4).tolist(),
                mean=np.round(forecast.mean[i], 4).tolist(),
                model_version=self.model_version))
            state.next_bucket_high = float(np.interp(HIGH_LEVEL, levels, forecast.daily[i, 0]))
            self._decide(state, forecast, i, last_closed, bucket_start, issued_at, out)

    def _policy(self, state: SkuState) -> SkuPolicy:
        if state.policy is not None:
            return SkuPolicy.model_validate(state.policy, strict=False)
        s = self.settings
        return SkuPolicy(
            sku=state.sku, location=state.location, lead_time_days=s.default_lead_time_days,
            review_days=s.default_review_days, service_level=s.default_service_level,
            case_pack=s.default_case_pack, moq=s.default_moq, supplier=s.default_supplier)

    def _steps(self, days: int) -> int:
        return max(1, round(days * 86_400 / self.bucket_seconds))

    def _decide(self, state: SkuState, forecast: QuantileForecast, i: int, last_closed: int,
                bucket_start: datetime, issued_at: datetime, out: BatchOutputs) -> None:
        policy = self._policy(state)
        lead_steps = self._steps(policy.lead_time_days)
        cover_steps = lead_steps + self._steps(policy.review_days)
        reorder_point = float(forecast.lead_time_quantile(i, lead_steps, policy.service_level))
        order_up_to = max(reorder_point,
                          float(forecast.lead_time_quantile(i, cover_steps, policy.service_level)))
        on_order = sum(state.on_order.values())
        decision = decide_restock(
            reorder_point=reorder_point, order_up_to=order_up_to, on_hand=state.on_hand,
            on_order=on_order, backorders=state.backorders, case_pack=policy.case_pack,
            moq=policy.moq)
        self._check_stockout(state, forecast, i, lead_steps, decision.inventory_position,
                             bucket_start, issued_at, out)
        if decision.quantity <= 0 or not state.stock_known:
            return
        # One restock per SKU per closed bucket: the id ignores the quantity on purpose, so a
        # reprocessed batch (whatever state it saw) can never become a second order.
        restock_id = deterministic_id("restock", state.sku, state.location, last_closed)
        state.on_order[restock_id] = decision.quantity
        out.restocks.append(RestockEvent(
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
        return AlertEvent(
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
