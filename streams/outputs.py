"""What one stream batch produced: events out, forecasts kept as arrays until someone asks.

A forecast carries horizon x levels quantiles twice (per bucket and cumulative), ~270 floats;
building a pydantic model per forecast and serialising it was a tenth of a worker's time. So
the processor keeps each forecaster call's rows as arrays (`ForecastRows`): the engine writes
their JSON straight from the arrays with orjson (`ForecastRows.payloads`), and models are built
only for readers that want them (`BatchOutputs.forecasts`: tests, the Faust engine). Both give
the same bytes (tests/unit/test_streams_outputs.py checks this against `ForecastEvent`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np
import orjson

from schemas import (
    SCHEMA_VERSION,
    AlertEvent,
    DeadLetter,
    DemandEvent,
    ForecastEvent,
    RestockEvent,
    sku_key,
)

__all__ = ["AlertRow", "BatchOutputs", "DemandRow", "ForecastRows", "demand_payloads",
           "event_json"]

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_UTC_Z


def event_json(event: Any) -> bytes:
    """An output model's JSON, as the model itself writes it."""
    return bytes(event.__pydantic_serializer__.to_json(event))


@dataclass
class ForecastRows:
    """The forecasts of one forecaster call, one row per SKU, as the event contract's values.

    `daily` / `cumulative` are (n, horizon, levels) and `mean` (n, horizon), already rounded
    to what the events carry; `last_closed` is each row's bucket index (its start is
    `last_closed * bucket_seconds`).
    """

    skus: list[str]
    locations: list[str]
    last_closed: list[int]
    bucket_seconds: int
    issued_at: datetime
    levels: list[float]
    daily: np.ndarray
    cumulative: np.ndarray
    mean: np.ndarray
    model_version: str

    def __post_init__(self) -> None:
        # orjson writes C-contiguous arrays only (a forecaster may hand out broadcast views)
        self.daily = np.ascontiguousarray(self.daily, dtype=np.float64)
        self.cumulative = np.ascontiguousarray(self.cumulative, dtype=np.float64)
        self.mean = np.ascontiguousarray(self.mean, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.skus)

    @property
    def horizon(self) -> int:
        return int(self.mean.shape[1])

    def bucket(self, i: int) -> datetime:
        return datetime.fromtimestamp(self.last_closed[i] * self.bucket_seconds, UTC)

    def models(self) -> list[ForecastEvent]:
        """The rows as `ForecastEvent`s (constructed from checked numbers, not re-validated)."""
        daily, cumulative, mean = self.daily.tolist(), self.cumulative.tolist(), self.mean.tolist()
        return [ForecastEvent.model_construct(
            sku=self.skus[i], location=self.locations[i], issued_at=self.issued_at,
            bucket=self.bucket(i), bucket_seconds=self.bucket_seconds, horizon=self.horizon,
            quantile_levels=list(self.levels), quantiles=daily[i], cumulative=cumulative[i],
            mean=mean[i], model_version=self.model_version) for i in range(len(self))]

    def payloads(self) -> Iterator[tuple[str, bytes]]:
        """(`sku@location`, the ForecastEvent's JSON) per row, straight from the arrays."""
        dumps = orjson.dumps
        buckets: dict[int, datetime] = {}
        common = {"bucket_seconds": self.bucket_seconds, "horizon": self.horizon,
                  "quantile_levels": self.levels}
        daily, cumulative, mean = self.daily, self.cumulative, self.mean
        for i, sku in enumerate(self.skus):
            location = self.locations[i]
            closed = self.last_closed[i]
            bucket = buckets.get(closed)
            if bucket is None:
                bucket = buckets[closed] = self.bucket(i)
            # key order = ForecastEvent's field order (schema_version comes from the base)
            yield sku_key(sku, location), dumps({
                "schema_version": SCHEMA_VERSION, "sku": sku, "location": location,
                "issued_at": self.issued_at, "bucket": bucket, **common,
                "quantiles": daily[i], "cumulative": cumulative[i], "mean": mean[i],
                "model_version": self.model_version}, option=_JSON_OPTIONS)


class AlertRow(NamedTuple):
    """One alert as `AlertEvent`'s fields, in its field order; the JSON is written from them
    (`payload`), the model built only for readers that want it (`model`). Both give the same
    bytes (tests/unit/test_streams_outputs.py)."""

    alert_id: str
    sku: str
    location: str
    kind: str
    severity: str
    message: str
    details: dict[str, Any]
    raised_at: datetime
    bucket: datetime | None = None

    def model(self) -> AlertEvent:
        return AlertEvent.model_construct(**self._asdict())

    def payload(self) -> bytes:
        return orjson.dumps({"schema_version": SCHEMA_VERSION, **self._asdict()},
                            option=_JSON_OPTIONS)


class DemandRow(NamedTuple):
    """One closed bucket's actual as `DemandEvent`'s fields, in its field order (the JSON is
    written from them, the model built only for readers that want it, as `AlertRow`)."""

    sku: str
    location: str
    bucket: datetime
    bucket_seconds: int
    quantity: float
    model_version: str | None = None
    forecast_levels: list[float] | None = None
    forecast_quantiles: list[float] | None = None

    def model(self) -> DemandEvent:
        return DemandEvent.model_construct(**self._asdict())

    def payload(self) -> bytes:
        return orjson.dumps({"schema_version": SCHEMA_VERSION, **self._asdict()},
                            option=_JSON_OPTIONS)


class BatchOutputs:
    """What one batch produced, plus counters for metrics and the demo summary.

    Forecasts are held as `forecast_rows` and alerts as `alert_rows`; `forecasts` and
    `alerts` build their models on first read (after any models given to the constructor).
    """

    def __init__(self, *, forecasts: Iterable[ForecastEvent] = (),
                 restocks: Iterable[RestockEvent] = (), alerts: Iterable[AlertEvent] = (),
                 dead_letters: Iterable[DeadLetter] = (),
                 forecast_rows: Iterable[ForecastRows] = (),
                 alert_rows: Iterable[AlertRow] = (), accepted: int = 0,
                 duplicates: int = 0, demand_rows: Iterable[DemandRow] = ()) -> None:
        self.restocks = list(restocks)
        self.demand_rows = list(demand_rows)
        self.alert_rows = list(alert_rows)
        self._alerts = list(alerts)
        self._alerts_built_from = 0  # alert_rows[:_alerts_built_from] are in _alerts
        self.dead_letters = list(dead_letters)
        self.forecast_rows = list(forecast_rows)
        self.accepted = accepted
        self.duplicates = duplicates
        self._forecasts = list(forecasts)
        self._built_from = 0  # forecast_rows[:_built_from] are in _forecasts

    @property
    def forecast_count(self) -> int:
        unbuilt = self.forecast_rows[self._built_from:]
        return len(self._forecasts) + sum(len(rows) for rows in unbuilt)

    @property
    def forecasts_only_as_rows(self) -> bool:
        """True while every forecast is in `forecast_rows` (no models given or built): a
        reader may then take them from the rows alone."""
        return not self._forecasts

    @property
    def alerts_only_as_rows(self) -> bool:
        """True while every alert is in `alert_rows` (no models given or built)."""
        return not self._alerts

    @property
    def forecasts(self) -> list[ForecastEvent]:
        """Every forecast as a model, in emission order (a list the caller may extend)."""
        for rows in self.forecast_rows[self._built_from:]:
            self._forecasts.extend(rows.models())
        self._built_from = len(self.forecast_rows)
        return self._forecasts

    def forecast_payloads(self) -> Iterator[tuple[str, bytes]]:
        """(`sku@location`, JSON) of every forecast, without building models."""
        if self._forecasts:  # someone built (or added) models: they are the truth
            for event in self.forecasts:
                yield sku_key(event.sku, event.location), event_json(event)
            return
        for rows in self.forecast_rows:
            yield from rows.payloads()

    @property
    def alert_count(self) -> int:
        return len(self._alerts) + len(self.alert_rows) - self._alerts_built_from

    @property
    def alerts(self) -> list[AlertEvent]:
        """Every alert as a model, in emission order (a list the caller may extend)."""
        self._alerts.extend(row.model() for row in self.alert_rows[self._alerts_built_from:])
        self._alerts_built_from = len(self.alert_rows)
        return self._alerts

    def alert_payloads(self) -> Iterator[tuple[str, bytes]]:
        """(`sku@location`, JSON) of every alert, without building models."""
        if self._alerts:  # someone built (or added) models: they are the truth
            for event in self.alerts:
                yield sku_key(event.sku, event.location), event_json(event)
            return
        for row in self.alert_rows:
            yield sku_key(row.sku, row.location), row.payload()

    @property
    def demand(self) -> list[DemandEvent]:
        """Every closed bucket's actual as a model, in emission order."""
        return [row.model() for row in self.demand_rows]

    def demand_payloads(self) -> Iterator[tuple[str, bytes]]:
        """(`sku@location`, JSON) of every actual (`demand_payloads`)."""
        return demand_payloads(self.demand_rows)


def demand_payloads(rows: list[DemandRow]) -> Iterator[tuple[str, bytes]]:
    """(`sku@location`, `row.payload()`) of each row, the batch written at once: the
    quantities by one orjson call, cut at the commas; the bucket, levels and version parts
    once per distinct value; a row is then one join of bytes."""
    if not rows:
        return
    dumps = orjson.dumps
    quantities = dumps([row.quantity for row in rows], option=_JSON_OPTIONS)[1:-1].split(b",")
    if len(quantities) != len(rows):  # a quantity that is not a plain number
        for row in rows:
            yield sku_key(row.sku, row.location), row.payload()
        return
    head = b'{"schema_version":' + dumps(SCHEMA_VERSION) + b',"sku":'
    buckets: dict[tuple[datetime, int], bytes] = {}
    locations: dict[str, bytes] = {}
    forecasts: dict[tuple[str | None, int], bytes] = {}  # (version, id(levels)) -> its part
    levels_alive: list[object] = []  # the level lists whose id() keys `forecasts` (alive)
    unscored = b',"model_version":null,"forecast_levels":null,"forecast_quantiles":null}'
    for row, quantity in zip(rows, quantities, strict=True):
        sku, location, bucket, bucket_seconds, _, version, levels, held = row
        where = locations.get(location)
        if where is None:
            where = locations[location] = b',"location":' + dumps(location) + b',"bucket":'
        when = buckets.get((bucket, bucket_seconds))
        if when is None:
            when = buckets[(bucket, bucket_seconds)] = (
                dumps(bucket, option=_JSON_OPTIONS) + b',"bucket_seconds":'
                + dumps(bucket_seconds) + b',"quantity":')
        if version is None and levels is None and held is None:
            scored = unscored
        else:
            scored_head = forecasts.get((version, id(levels)))
            if scored_head is None:
                levels_alive.append(levels)
                scored_head = forecasts[(version, id(levels))] = (
                    b',"model_version":' + dumps(version) + b',"forecast_levels":'
                    + dumps(levels, option=_JSON_OPTIONS) + b',"forecast_quantiles":')
            scored = scored_head + dumps(held, option=_JSON_OPTIONS) + b"}"
        yield sku_key(sku, location), b"".join(
            (head, dumps(sku), where, when, quantity, scored))
