"""Event models for every topic in the contract table (pydantic v2, strict, versioned)."""

from __future__ import annotations

import re
from datetime import date, datetime
from itertools import pairwise
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    WithJsonSchema,
    model_serializer,
    model_validator,
)

__all__ = [
    "ALL_LOCATIONS",
    "SCHEMA_VERSION",
    "AlertEvent",
    "DeadLetter",
    "DemandEvent",
    "Event",
    "ForecastEvent",
    "HolidayEvent",
    "OrderEvent",
    "PlanEvent",
    "PlanLine",
    "PromotionEvent",
    "RestockEvent",
    "SkuPolicy",
    "StockEvent",
]

SCHEMA_VERSION: Final = 1
MAX_QUANTITY = 1_000_000

# A timestamp exactly as the worker accepts it, one regex for every language's validator (ECMA
# 262, RE2, Python re, Rust regex: ASCII classes, plain groups, no `\d`/`\s`, no lookaround).
# RFC 3339 `date-time` plus the unambiguous spellings other languages write by default:
# - separator `T`, `t` or one space (RFC 3339 5.6 NOTE; Python `str(datetime)`, PostgreSQL);
# - offset `Z`/`z`, `+HH:MM`, ISO 8601 basic `+HHMM` (strftime `%z`, Java `Z`, PHP `O`) or
#   hour-only `+HH` (PostgreSQL writes `+00`, `+05:30`): the offset always follows the whole
#   seconds, so none of them can be read two ways;
# - seconds required, 1-9 fraction digits (Go and .NET write up to 9 and 7), no leap second.
# Refused: no offset (local time of an unknown zone), a date alone, no seconds, `,` fractions.
# The calendar is in the regex (31-day months, February 29 only in leap years: 1992, 1996,
# 2000 ... 2096; 2100 is none), possible because years are bounded to 1990-2100, so the
# exported schema needs no `format` (which would refuse the space and `+HHMM`).
_YEAR = "(199[0-9]|20[0-9][0-9]|2100)"
_LEAP_YEAR = "(199[26]|20([02468][048]|[13579][26]))"
_MONTH_DAY = ("((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)"
              "|02-(0[1-9]|1[0-9]|2[0-8]))")
_CLOCK = "([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]([.][0-9]{1,9})?"
_OFFSET = "([Zz]|[+-]([01][0-9]|2[0-3])(:[0-5][0-9]|[0-5][0-9])?)"
TIMESTAMP_PATTERN = f"^({_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)[Tt ]{_CLOCK}{_OFFSET}$"
TIMESTAMP_DESCRIPTION = (
    "A timestamp with a UTC offset, years 1990-2100, e.g. 2026-12-02T11:00:00Z: RFC 3339 "
    "date-time (separator T or t, seconds, 1-9 fraction digits, offset Z, z or +HH:MM), also "
    "with a space separator (2026-12-02 11:00:00+00:00) and an offset +HHMM or +HH "
    "(2026-12-02T11:00:00+0530, 2026-12-02 11:00:00+00). Refused: no offset, a date alone, "
    "no seconds, a leap second, a day the calendar lacks. `pattern` is the whole rule.")
_TIMESTAMP = re.compile(TIMESTAMP_PATTERN)
# the pattern's shape with any numbers: to tell a date that does not exist from a misspelling
_TIMESTAMP_SHAPE = re.compile(
    "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]{1,9})?"
    "([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)")

# sku and location: no `@` (the key separator), no whitespace or control characters. Spelled
# out, not `\s`: Python's, Rust's and ECMA 262's `\s` differ (U+001C-001F, U+0085, U+FEFF).
NAME_PATTERN = (r"^[^@\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f"
                r"\u3000\ufeff]+$")


def _timestamp(value: Any) -> Any:
    """A timestamp string parsed, if `TIMESTAMP_PATTERN` takes it (pydantic alone also takes
    minutes without seconds, `+05:30:15`, even epoch seconds). Parsed as
    `datetime.fromisoformat` does (fractions past microseconds are dropped), the same parse as
    the fast path's (`streams.codec`). `fullmatch`: Python's `$` also matches before a final
    newline, which ECMA 262 and RE2 refuse."""
    if not isinstance(value, str):
        return value
    if not _TIMESTAMP.fullmatch(value):
        if not _TIMESTAMP_SHAPE.fullmatch(value):
            raise ValueError("not a timestamp with a timezone offset, like 2026-12-02T11:00:00Z "
                             "(separator T or a space; seconds; Z, +HH:MM, +HHMM or +HH)")
        if not 1990 <= int(value[:4]) <= 2100:
            raise ValueError(f"{value} is outside 1990..2100")
        raise ValueError(f"{value} names no instant: a day, hour, minute, second or offset "
                         "out of range (a leap second, February 29 of a common year, +05:60)")
    return datetime.fromisoformat(value.upper())  # 3.11 reads neither `t` nor `z`


def _integral(value: Any) -> Any:
    """JSON Schema's `integer` is any number without a fractional part (3.0 is one): so is
    the worker's."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Sku = Annotated[str, Field(min_length=1, max_length=64, pattern=NAME_PATTERN)]
Location = Annotated[str, Field(min_length=1, max_length=64, pattern=NAME_PATTERN)]
EventId = Annotated[str, Field(min_length=1, max_length=128)]
# constraints before the validator: so the JSON Schema states them (pydantic leaves them out
# of the schema, as `gt`, when they wrap an already-validated type)
_INTEGRAL = BeforeValidator(_integral)
Quantity = Annotated[int, Field(gt=0, le=MAX_QUANTITY), _INTEGRAL]
Units = Annotated[int, Field(ge=0, le=1_000_000_000), _INTEGRAL]
# the schema stated whole: pydantic's own would add `format: date-time`, which strict
# validators read as RFC 3339 only (refusing the space and `+HHMM` the worker takes)
Timestamp = Annotated[AwareDatetime, BeforeValidator(_timestamp), WithJsonSchema(
    {"type": "string", "pattern": TIMESTAMP_PATTERN, "description": TIMESTAMP_DESCRIPTION})]
EventTime = Timestamp


class Event(BaseModel):
    """Base of every event: strict types, unknown fields rejected, immutable."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    schema_version: Annotated[Literal[1], _INTEGRAL] = SCHEMA_VERSION

    @model_validator(mode="after")
    def _sane_times(self) -> Self:
        for name, value in self:
            if isinstance(value, datetime) and not 1990 <= value.year <= 2100:
                raise ValueError(f"{name} {value.isoformat()} is outside 1990..2100")
        return self


class OrderEvent(Event):
    """An order line: demand (placed) or negative demand (cancelled, returned)."""

    event_id: EventId
    type: Literal["placed", "cancelled", "returned"]
    sku: Sku
    location: Location
    quantity: Quantity
    occurred_at: EventTime
    unit_price: Annotated[float, Field(ge=0)] | None = None
    order_id: str | None = None

    def signed_quantity(self) -> int:
        """Demand contribution: placed adds, cancelled/returned subtract."""
        return self.quantity if self.type == "placed" else -self.quantity


class StockEvent(Event):
    """A stock fact: a full snapshot of on-hand units, or a delta (adjustment, receipt)."""

    # what `_one_of_on_hand_or_delta` checks, stated in the exported JSON Schema
    model_config = ConfigDict(json_schema_extra={"allOf": [
        {"if": {"properties": {"type": {"const": "snapshot"}}},
         "then": {"required": ["on_hand"],
                  "properties": {"on_hand": {"type": "integer"}, "delta": {"type": "null"}}}},
        {"if": {"properties": {"type": {"enum": ["adjustment", "receipt"]}}},
         "then": {"required": ["delta"],
                  "properties": {"delta": {"type": "integer"}, "on_hand": {"type": "null"}}}},
        {"if": {"properties": {"type": {"const": "receipt"}}},
         "then": {"properties": {"delta": {"exclusiveMinimum": 0}}}},
    ]})

    event_id: EventId
    type: Literal["snapshot", "adjustment", "receipt"]
    sku: Sku
    location: Location
    on_hand: Units | None = None
    delta: Annotated[int, Field(ge=-MAX_QUANTITY, le=MAX_QUANTITY), _INTEGRAL] | None = None
    occurred_at: EventTime
    restock_id: str | None = Field(
        default=None, description="for receipts: the restock this delivery fulfils"
    )

    @model_validator(mode="after")
    def _one_of_on_hand_or_delta(self) -> Self:
        if self.type == "snapshot":
            if self.on_hand is None or self.delta is not None:
                raise ValueError("a snapshot carries on_hand and no delta")
        elif self.delta is None or self.on_hand is not None:
            raise ValueError(f"a {self.type} carries delta and no on_hand")
        elif self.type == "receipt" and self.delta <= 0:
            raise ValueError("a receipt's delta must be > 0")
        return self


class SkuPolicy(Event):
    """Restock policy of one SKU at one location (compacted catalog topic)."""

    sku: Sku
    location: Location
    lead_time_days: Annotated[int, Field(ge=0, le=365), _INTEGRAL]
    review_days: Annotated[int, Field(ge=0, le=365), _INTEGRAL] = 1
    service_level: Annotated[float, Field(gt=0, lt=1)] = 0.95
    case_pack: Annotated[int, Field(ge=1), _INTEGRAL] = 1
    moq: Annotated[int, Field(ge=0), _INTEGRAL] = 1
    unit_cost: Annotated[float, Field(ge=0)] = 0.0
    supplier: Annotated[str, Field(min_length=1, max_length=128)] = "default"


MAX_PROMOTION_DAYS = 366
# one day, spelled YYYY-MM-DD, years 1990-2100 (the days a worker can bucket)
_DAY_PATTERN = f"^({_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)$"


def _day(value: Any) -> Any:
    """A `YYYY-MM-DD` string as a date (pydantic alone also takes other spellings)."""
    if not isinstance(value, str):
        return value
    if not re.fullmatch(_DAY_PATTERN, value):
        raise ValueError("not a day YYYY-MM-DD in 1990..2100 (the calendar's own days)")
    return date.fromisoformat(value)


Day = Annotated[date, BeforeValidator(_day), WithJsonSchema(
    {"type": "string", "pattern": _DAY_PATTERN,
     "description": "a calendar day YYYY-MM-DD (the SKU's daily buckets are UTC days)"})]


def _check_span(start_day: date, end_day: date, what: str) -> None:
    """A span of days as the worker keeps it: in order, at most MAX_PROMOTION_DAYS long."""
    days = (end_day - start_day).days
    if days < 0:
        raise ValueError("end_day is before start_day")
    if days >= MAX_PROMOTION_DAYS:
        raise ValueError(f"{what} spans at most {MAX_PROMOTION_DAYS} days")


class PromotionEvent(Event):
    """What the shop has planned for one SKU at one location: a promotion and/or a price
    over `start_day` .. `end_day` (UTC days, both included), known before those days come.

    The worker keeps each SKU's planned promotions (a later `version` of the same `event_id`
    replaces it, `cancelled` withdraws it) and hands them to the forecaster as inputs for
    the days they cover; a SKU without any is forecast at full price, no promotion.
    """

    event_id: EventId = Field(description="the promotion's id; its versions share it")
    version: Annotated[int, Field(ge=1, le=1_000_000_000), _INTEGRAL] = Field(
        default=1, description="a higher version of the same event_id replaces the promotion; "
                               "an equal or lower one is a duplicate")
    sku: Sku
    location: Location
    start_day: Day
    end_day: Day
    promo: bool = Field(default=True, description="the SKU is on promotion on these days")
    price_ratio: Annotated[float, Field(gt=0, le=10)] = Field(
        default=1.0, description="price over the full price on these days (0.8 = 20% off)")
    cancelled: bool = Field(default=False, description="the promotion is withdrawn")

    @model_validator(mode="after")
    def _span(self) -> Self:
        _check_span(self.start_day, self.end_day, "a promotion")
        return self


ALL_LOCATIONS = "*"
"""`HolidayEvent.location` of a holiday that every location keeps (a national one)."""


class HolidayEvent(Event):
    """A holiday of one location (or of every location: `location` "*"), over `start_day` ..
    `end_day` (UTC days, both included), known before those days come: the shop's calendar
    (topic `shop.calendar`), the data's own holidays a model trained on them reads
    (`LSTMConfig.data_holidays`, `LightGBMConfig.data_holidays`).

    Every worker keeps the whole calendar (`streams.holiday_calendar`): a later `version` of
    the same `event_id` replaces the entry, `cancelled` withdraws it; a day no live entry
    covers is not a holiday. A store closed for the day is a holiday too.
    """

    event_id: EventId = Field(description="the holiday's id; its versions share it")
    version: Annotated[int, Field(ge=1, le=1_000_000_000), _INTEGRAL] = Field(
        default=1, description="a higher version of the same event_id replaces the holiday; "
                               "an equal or lower one is a duplicate")
    location: Location = Field(description='the location whose holiday it is; "*": every '
                                           "location's")
    start_day: Day
    end_day: Day
    name: Annotated[str, Field(max_length=128)] | None = Field(
        default=None, description="what the holiday is (for people; not read by models)")
    cancelled: bool = Field(default=False, description="the holiday is withdrawn")

    @model_validator(mode="after")
    def _span(self) -> Self:
        _check_span(self.start_day, self.end_day, "a holiday")
        return self


class ForecastEvent(Event):
    """Probabilistic multi-horizon forecast of one SKU's demand per bucket."""

    sku: Sku
    location: Location
    issued_at: Timestamp
    bucket: Timestamp = Field(description="start of the last closed bucket")
    bucket_seconds: int
    horizon: int
    quantile_levels: list[float]
    quantiles: list[list[float]] = Field(description="horizon x levels, demand per bucket")
    cumulative: list[list[float]] = Field(description="horizon x levels, cumulative demand")
    mean: list[float]
    model_version: str


class DemandEvent(Event):
    """The observed demand of one SKU in one closed bucket: the actual a forecast is scored on.

    Published when the bucket closes, with the forecast made for it (the quantiles of the first
    step of the SKU's previous forecast, `model_version` the model that made it) when the SKU
    had one; published again without the forecast while a late event may still change it (the
    allowed lateness): a consumer keeps the last quantity per (sku, location, bucket_seconds,
    bucket) and the first forecast.
    """

    sku: Sku
    location: Location
    bucket: Timestamp = Field(description="start of the closed bucket")
    bucket_seconds: Annotated[int, Field(gt=0), _INTEGRAL]
    quantity: Annotated[float, Field(ge=0)] = Field(
        description="net units ordered in the bucket (placed - cancelled - returned), at least 0")
    model_version: str | None = Field(
        default=None, description="the model whose forecast for this bucket is attached")
    forecast_levels: list[Annotated[float, Field(gt=0, lt=1)]] | None = Field(
        default=None, description="probability levels of forecast_quantiles, increasing")
    forecast_quantiles: list[Annotated[float, Field(ge=0)]] | None = Field(
        default=None, description="the forecast's quantiles of this bucket's demand")

    @model_validator(mode="after")
    def _forecast_whole(self) -> Self:
        levels, quantiles = self.forecast_levels, self.forecast_quantiles
        if levels is None and quantiles is None:
            return self
        if (levels is None or quantiles is None or len(levels) != len(quantiles)
                or not levels or self.model_version is None):
            raise ValueError("forecast_levels, forecast_quantiles (same length >= 1) and "
                             "model_version come together")
        if any(b <= a for a, b in pairwise(levels)):
            raise ValueError("forecast_levels must be strictly increasing")
        if any(b < a for a, b in pairwise(quantiles)):
            raise ValueError("forecast_quantiles must be non-decreasing")
        return self


class RestockEvent(Event):
    """A decision to reorder one SKU; `restock_id` is deterministic in its inputs."""

    restock_id: str
    sku: Sku
    location: Location
    supplier: str
    quantity: Quantity
    reorder_point: float
    order_up_to: float
    inventory_position: float
    on_hand: int
    on_order: int
    backorders: int
    service_level: float
    lead_time_days: int
    review_days: int
    unit_cost: float
    reason: str
    model_version: str
    bucket: Timestamp
    issued_at: Timestamp
    # Optional since they were added (events without them still validate): what the optimizer
    # needs to cut an order sensibly under a supplier budget or warehouse capacity.
    case_pack: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="units per case pack; the optimizer cuts whole packs only")
    moq: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="the SKU's minimum order quantity: a line is this or 0")
    demand_levels: list[Annotated[float, Field(gt=0, lt=1)]] | None = Field(
        default=None, description="probability levels of demand_quantiles, increasing")
    demand_quantiles: list[Annotated[float, Field(ge=0)]] | None = Field(
        default=None, description="quantiles of demand over lead time + review period at "
                                  "demand_levels (the forecast the quantity came from)")

    @model_validator(mode="after")
    def _demand_distribution(self) -> Self:
        levels, quantiles = self.demand_levels, self.demand_quantiles
        if levels is None and quantiles is None:
            return self
        if levels is None or quantiles is None or len(levels) != len(quantiles) or len(levels) < 2:
            raise ValueError("demand_levels and demand_quantiles come together, same length >= 2")
        if any(b <= a for a, b in pairwise(levels)):
            raise ValueError("demand_levels must be strictly increasing")
        if any(b < a for a, b in pairwise(quantiles)):
            raise ValueError("demand_quantiles must be non-decreasing")
        return self


class PlanLine(BaseModel):
    """One SKU line in a purchase plan."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    restock_id: str
    sku: Sku
    quantity: Quantity
    unit_cost: float


class PlanEvent(Event):
    """A purchase plan decided by the optimizer for one supplier and location."""

    plan_id: str
    supplier: str
    location: Location
    lines: list[PlanLine]
    total_units: int
    total_cost: float
    decided_at: Timestamp


class AlertEvent(Event):
    """A risk a subscriber should hear about.

    `model_drift` is about a segment, not one SKU: `sku` is `*`, and `location` is the
    segment's location, or `*` for the whole fleet (raised by the optimizer's accuracy monitor).
    """

    alert_id: str
    sku: Sku
    location: Location
    # every kind here is emitted: by the worker (streams/processor.py), model_drift by the
    # optimizer's accuracy monitor (optimizer/service.py)
    kind: Literal["stockout_risk", "demand_anomaly", "overdue_restock", "stale_stock",
                  "model_drift"]
    severity: Literal["info", "warning", "critical"]
    message: str
    details: dict[str, Any] = Field(default_factory=dict)
    raised_at: Timestamp
    bucket: Timestamp | None = Field(
        default=None, description="start of the closed bucket the alert is about (optional: "
                                  "older alerts lack it)")


# Fields a dead letter carries only when it was cut to fit the DLQ topic (omitted otherwise,
# so a consumer built against the first DeadLetter contract still reads every uncut record).
DEAD_LETTER_CUT_FIELDS = ("payload_bytes", "payload_sha256", "key_truncated")


class DeadLetter(Event):
    """A record the ingest path refused, with where it came from and why.

    A record too large to dead-letter whole keeps only the first bytes of its value
    (`raw_payload_b64`), with the full length and SHA-256 of the value beside them; such a
    record cannot be replayed, but it can be found (and checked) in the source topic.
    """

    source_topic: str
    partition: int
    offset: int
    key: str | None
    error: str
    error_kind: str
    raw_payload_b64: str = Field(description="the raw bytes, base64 (may not be UTF-8); only "
                                             "the first bytes when payload_bytes is set")
    received_at: Timestamp
    payload_bytes: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="set when the payload was cut: the full value's length")
    payload_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = Field(
        default=None, description="set when the payload was cut: hex SHA-256 of the full value")
    key_truncated: bool | None = Field(
        default=None, description="set (true) when the key was cut to its first characters")

    @property
    def cut(self) -> bool:
        """Whether the payload or key is only a prefix of the refused record's (no replay)."""
        return self.payload_bytes is not None or bool(self.key_truncated)

    @model_serializer(mode="wrap")
    def _omit_uncut_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name in DEAD_LETTER_CUT_FIELDS:
            if data.get(name) is None:
                data.pop(name, None)
        return data
