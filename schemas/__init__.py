"""Event contracts: pydantic models, codec, keys, deterministic ids and JSON Schema export."""

from schemas.codec import dead_letter, dead_letter_bytes, decode, encode
from schemas.errors import InvalidEvent, SchemaError
from schemas.events import (
    SCHEMA_VERSION,
    AlertEvent,
    DeadLetter,
    DemandEvent,
    ForecastEvent,
    HolidayEvent,
    OrderEvent,
    PlanEvent,
    PlanLine,
    PromotionEvent,
    RestockEvent,
    SkuPolicy,
    StockEvent,
)
from schemas.export import CONTRACT_MODELS, export_json_schemas
from schemas.ids import deterministic_id
from schemas.keys import sku_key, sku_keys, split_key

__all__ = [
    "CONTRACT_MODELS",
    "SCHEMA_VERSION",
    "AlertEvent",
    "DeadLetter",
    "DemandEvent",
    "ForecastEvent",
    "HolidayEvent",
    "InvalidEvent",
    "OrderEvent",
    "PlanEvent",
    "PlanLine",
    "PromotionEvent",
    "RestockEvent",
    "SchemaError",
    "SkuPolicy",
    "StockEvent",
    "dead_letter",
    "dead_letter_bytes",
    "decode",
    "deterministic_id",
    "encode",
    "export_json_schemas",
    "sku_key",
    "sku_keys",
    "split_key",
]
