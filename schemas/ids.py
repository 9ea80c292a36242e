"""Deterministic ids: the same inputs always give the same id, so a redelivery cannot double."""

from __future__ import annotations

import uuid

__all__ = ["deterministic_id"]

_NAMESPACE = uuid.UUID("6f1c1d1e-2b7a-5d0e-9d9b-5f3c8a6e2c11")


def deterministic_id(kind: str, *parts: object) -> str:
    """A UUIDv5 over `kind` and the stringified parts (joined with an unambiguous separator)."""
    text = "\x1f".join([kind, *(str(p) for p in parts)])
    return str(uuid.uuid5(_NAMESPACE, text))
