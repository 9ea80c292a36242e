"""Bytes <-> events: decode with a clear reason on failure, encode to compact JSON."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from schemas.errors import InvalidEvent
from schemas.events import DeadLetter, Event

E = TypeVar("E", bound=Event)

__all__ = [
    "MAX_DEAD_LETTER_ERROR_CHARS",
    "MAX_DEAD_LETTER_KEY_CHARS",
    "dead_letter",
    "dead_letter_bytes",
    "decode",
    "encode",
]


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


# A dead letter's key and reason are cut to these lengths (characters): with the payload cut
# to a stated size too, every dead letter has a known upper bound (see `dead_letter_bytes`).
MAX_DEAD_LETTER_KEY_CHARS = 1024
MAX_DEAD_LETTER_ERROR_CHARS = 2048


def dead_letter(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | str | None,
    raw: bytes | None,
    error: InvalidEvent,
    max_payload_bytes: int | None = None,
) -> DeadLetter:
    """The DLQ record for a refused input: source position, raw bytes and the reason.

    A value longer than `max_payload_bytes` keeps its first `max_payload_bytes` bytes, with
    its full length and SHA-256 (`payload_bytes`, `payload_sha256`); a key longer than
    MAX_DEAD_LETTER_KEY_CHARS keeps its first characters (`key_truncated`)."""
    if isinstance(key, bytes):
        key = key.decode("utf-8", errors="replace")
    raw = raw or b""
    payload_bytes = payload_sha256 = key_truncated = None
    if max_payload_bytes is not None and len(raw) > max_payload_bytes:
        payload_bytes, payload_sha256 = len(raw), hashlib.sha256(raw).hexdigest()
        raw = raw[:max_payload_bytes]
    if key is not None and len(key) > MAX_DEAD_LETTER_KEY_CHARS:
        key, key_truncated = key[:MAX_DEAD_LETTER_KEY_CHARS], True
    reason = error.reason
    if len(reason) > MAX_DEAD_LETTER_ERROR_CHARS:
        reason = reason[:MAX_DEAD_LETTER_ERROR_CHARS - 3] + "..."
    return DeadLetter(
        source_topic=topic,
        partition=partition,
        offset=offset,
        key=key,
        error=reason,
        error_kind=error.kind,
        raw_payload_b64=base64.b64encode(raw).decode("ascii"),
        received_at=datetime.now(UTC),
        payload_bytes=payload_bytes,
        payload_sha256=payload_sha256,
        key_truncated=key_truncated,
    )


def dead_letter_bytes(max_payload_bytes: int) -> int:
    """An upper bound on the size of a dead letter's Kafka record (its record batch included)
    when its payload is cut to `max_payload_bytes`: the payload's base64, the key and reason
    at their cut lengths with every character escaped (a control character: `\\u001f`, 6
    bytes; anything else is written as UTF-8, at most 4), the key again as the record key
    (UTF-8: at most 4 bytes a character), topic name and the other fields."""
    base64_bytes = 4 * ((max_payload_bytes + 2) // 3)
    escaped = 6 * (MAX_DEAD_LETTER_KEY_CHARS + MAX_DEAD_LETTER_ERROR_CHARS)
    record_key = 4 * MAX_DEAD_LETTER_KEY_CHARS
    return base64_bytes + escaped + record_key + 1024  # names, topic (<= 249), hash, batch
