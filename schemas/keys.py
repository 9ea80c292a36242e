"""Message keys: every per-SKU topic is keyed `sku@location`."""

from __future__ import annotations

from collections.abc import Callable, Iterable

__all__ = ["KEY_SEPARATOR", "sku_key", "sku_keys", "split_key"]

KEY_SEPARATOR = "@"
_format: Callable[[str, str], str] = ("{}" + KEY_SEPARATOR + "{}").format


def sku_key(sku: str, location: str) -> str:
    """The partitioning key that keeps an SKU's orders, stock and outputs together."""
    return f"{sku}{KEY_SEPARATOR}{location}"


def sku_keys(skus: Iterable[str], locations: Iterable[str]) -> list[str]:
    """`sku_key` of each pair: one C-level `map` for a whole column of records."""
    return list(map(_format, skus, locations))


def split_key(key: str) -> tuple[str, str]:
    sku, _, location = key.rpartition(KEY_SEPARATOR)
    if not sku:
        raise ValueError(f"key {key!r} is not of the form sku@location")
    return sku, location
