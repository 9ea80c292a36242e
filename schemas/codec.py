"""Bytes <-> events: decode with a clear reason on failure, encode to compact JSON."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from schemas.errors import InvalidEvent
from schemas.events import DeadLetter, Event

E = TypeVar("E", bound=Event)

__all__ = ["dead_letter", "decode", "encode"]


def _first_errors(exc: ValidationError, limit: int = 3) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "record"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def decode(model: type[E], raw: bytes | None, *, max_bytes: int = 1_048_576) -> E:
    """Validate raw JSON bytes as `model`, or raise InvalidEvent with a readable reason."""
    if raw is None:
        raise InvalidEvent("empty record (no value)", kind="empty")
    if len(raw) > max_bytes:
        raise InvalidEvent(f"payload of {len(raw)} bytes exceeds {max_bytes}", kind="oversized")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        kind = "invalid_json" if exc.errors()[0]["type"] == "json_invalid" else "validation"
        if kind == "invalid_json":
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidEvent("payload is not UTF-8", kind="not_utf8") from None
        raise InvalidEvent(_first_errors(exc), kind=kind) from None


def encode(event: BaseModel) -> bytes:
    return event.model_dump_json().encode()


def dead_letter(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | str | None,
    raw: bytes | None,
    error: InvalidEvent,
) -> DeadLetter:
    """The DLQ record for a refused input: source position, raw bytes and the reason."""
    if isinstance(key, bytes):
        key = key.decode("utf-8", errors="replace")
    return DeadLetter(
        source_topic=topic,
        partition=partition,
        offset=offset,
        key=key,
        error=error.reason,
        error_kind=error.kind,
        raw_payload_b64=base64.b64encode(raw or b"").decode("ascii"),
        received_at=datetime.now(UTC),
    )
