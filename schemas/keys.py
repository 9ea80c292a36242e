"""Message keys: every per-SKU topic is keyed `sku@location`."""

from __future__ import annotations

__all__ = ["KEY_SEPARATOR", "sku_key", "split_key"]

KEY_SEPARATOR = "@"


def sku_key(sku: str, location: str) -> str:
    """The partitioning key that keeps an SKU's orders, stock and outputs together."""
    return f"{sku}{KEY_SEPARATOR}{location}"


def split_key(key: str) -> tuple[str, str]:
    sku, _, location = key.rpartition(KEY_SEPARATOR)
    if not sku:
        raise ValueError(f"key {key!r} is not of the form sku@location")
    return sku, location
