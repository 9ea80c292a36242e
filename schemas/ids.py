"""Deterministic ids: the same inputs always give the same id, so a redelivery cannot double."""

from __future__ import annotations

import hashlib
import uuid

__all__ = ["deterministic_id"]

_NAMESPACE = uuid.UUID("6f1c1d1e-2b7a-5d0e-9d9b-5f3c8a6e2c11")
_HASHED_NAMESPACE = hashlib.sha1(_NAMESPACE.bytes, usedforsecurity=False)


def deterministic_id(kind: str, *parts: object) -> str:
    """A UUIDv5 over `kind` and the stringified parts (joined with an unambiguous separator).

    `str(uuid.uuid5(_NAMESPACE, text))`, computed without the UUID object (the stream makes
    one per restock and alert): SHA-1 of the namespace then the name, its first 16 bytes with
    the version (5) and variant (RFC 4122) bits set, as hex in 8-4-4-4-12 groups.
    """
    text = "\x1f".join([kind, *map(str, parts)])
    h = _HASHED_NAMESPACE.copy()
    h.update(text.encode())
    raw = bytearray(h.digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50
    raw[8] = (raw[8] & 0x3F) | 0x80
    x = raw.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"
