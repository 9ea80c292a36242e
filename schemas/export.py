"""JSON Schema export of the event contracts, for shops written in other languages."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from schemas.events import (
    AlertEvent,
    DeadLetter,
    DemandEvent,
    ForecastEvent,
    HolidayEvent,
    OrderEvent,
    PlanEvent,
    PromotionEvent,
    RestockEvent,
    SkuPolicy,
    StockEvent,
)

__all__ = ["CONTRACT_MODELS", "KEY_RULE", "export_json_schemas"]

KEYED_INPUTS = frozenset({"OrderEvent", "StockEvent", "SkuPolicy", "PromotionEvent"})
KEY_RULE = ("Kafka key: `sku@location` of the payload, or no key; a record whose key names "
            "another SKU or location is dead-lettered (error_kind key_mismatch).")

CONTRACT_MODELS: dict[str, type[BaseModel]] = {
    "OrderEvent": OrderEvent,
    "StockEvent": StockEvent,
    "SkuPolicy": SkuPolicy,
    "PromotionEvent": PromotionEvent,
    "HolidayEvent": HolidayEvent,
    "ForecastEvent": ForecastEvent,
    "RestockEvent": RestockEvent,
    "PlanEvent": PlanEvent,
    "AlertEvent": AlertEvent,
    "DemandEvent": DemandEvent,
    "DeadLetter": DeadLetter,
}


def export_json_schemas(out_dir: Path) -> list[Path]:
    """Write one `<Model>.v<version>.schema.json` per contract model; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in CONTRACT_MODELS.items():
        schema = model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"shelfcast:{name}:v1"
        if name in KEYED_INPUTS:  # what a schema cannot check, said where a shop reads it
            schema["description"] = f"{schema.get('description', '')} {KEY_RULE}".strip()
            schema["x-kafka-key"] = "sku@location"
        path = out_dir / f"{name}.v1.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
