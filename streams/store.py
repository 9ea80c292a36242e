"""In-memory SKU state of the partitions a batch-engine worker owns, with per-batch dirty keys.

The batch engine hands a `StateStore` to the pure `BatchProcessor` as its table. Reads and
writes are plain dict operations; every write marks the key dirty, so after a batch the engine
writes each touched key once to the changelog partition its key hashes to (murmur2, as the
shop's default partitioner and Faust's `use_partitioner=True` do). On a rebalance the engine
drops the state of revoked partitions and loads assigned ones from the changelog.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any

from aiokafka.partitioner import murmur2

__all__ = ["StateStore", "key_partition"]


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for `key` among `partitions`."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


class StateStore(MutableMapping[str, Any]):
    """`sku@location` -> state, for the partitions this worker holds.

    Values are live `SkuState` objects (`holds_state_objects`: the processor updates them in
    place instead of copying them out of and back into JSON dicts every batch) or, right after
    recovery, the JSON dicts read from the changelog.
    """

    holds_state_objects = True

    def __init__(self, partitions: int) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions}")
        self.partitions = partitions
        self._data: dict[str, Any] = {}
        self._dirty: dict[str, None] = {}  # insertion-ordered set
        self._partition_of: dict[str, int] = {}  # murmur2 is pure Python: hash a key once

    def partition_for(self, key: str) -> int:
        p = self._partition_of.get(key)
        if p is None:
            p = self._partition_of[key] = key_partition(key.encode(), self.partitions)
        return p

    # --- MutableMapping --------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value
        self._dirty[key] = None

    def __delitem__(self, key: str) -> None:
        del self._data[key]
        self._dirty[key] = None

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def update(self, other: Any = (), /, **kwds: Any) -> None:
        """MutableMapping.update, a mapping in one step (a batch writes thousands of keys
        back at once) instead of one `__setitem__` per key."""
        if kwds or not isinstance(other, Mapping):
            super().update(other, **kwds)
            return
        self._data.update(other)
        self._dirty.update(dict.fromkeys(other))

    # --- engine side -----------------------------------------------------------------------
    def has_dirty(self) -> bool:
        return bool(self._dirty)

    def take_dirty(self) -> list[tuple[str, int, Any]]:
        """(key, partition, value or None if deleted) of every key written since the last call."""
        partition_of, data = self._partition_of, self._data
        out = [(k, partition_of[k] if k in partition_of else self.partition_for(k), data.get(k))
               for k in self._dirty]
        self._dirty.clear()
        return out

    def load(self, key: str, value: Any) -> None:
        """Recovery: set a key from the changelog without marking it dirty (None deletes)."""
        if value is None:
            self._data.pop(key, None)
        else:
            self._data[key] = value

    def drop_partitions(self, partitions: Iterable[int]) -> int:
        """Forget the keys of revoked partitions; returns how many were dropped."""
        gone = set(partitions)
        if not gone:
            return 0
        doomed = [k for k in self._data if self.partition_for(k) in gone]
        for k in doomed:
            del self._data[k]
            self._dirty.pop(k, None)
        return len(doomed)
