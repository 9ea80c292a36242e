"""In-memory SKU state of the partitions a batch-engine worker owns, per source partition.

State follows the record's SOURCE partition, whatever partitioner the shop's producer used
(Kafka Streams' rule: a task's changelog partition is its input partition). The batch engine
hands the pure `BatchProcessor` one `PartitionTable` per input partition of a batch; every
write marks the key dirty, so after a batch the engine writes each touched key once to the
changelog partition of the input partition it came from. On a rebalance the engine drops the
tables of revoked partitions and loads assigned ones from the same changelog partitions.

A key seen on two partitions (a producer that picked partitions by hand, or changed its
partitioner) is two states, one per partition, each moving with its partition: never one
state written where the other partition's owner cannot find it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any

from aiokafka.partitioner import murmur2

__all__ = ["PartitionTable", "StateStore", "key_partition"]


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's Java default partitioner (murmur2) picks for `key`.

    The engine places its OUTPUTS with it (as a Java producer would); state never: that
    follows the input partition.
    """
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


class PartitionTable(MutableMapping[str, Any]):
    """`sku@location` -> state of one input partition: the table the processor works on.

    Values are live `SkuState` objects (`holds_state_objects`: the processor updates them in
    place instead of copying them out of and back into JSON dicts every batch) or, right after
    recovery, the JSON dicts read from the changelog.
    """

    holds_state_objects = True

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self._data: dict[str, Any] = {}
        self._dirty: dict[str, None] = {}  # insertion-ordered set

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

    def load(self, key: str, value: Any) -> None:
        """Recovery: set a key from the changelog without marking it dirty (None deletes)."""
        if value is None:
            self._data.pop(key, None)
        else:
            self._data[key] = value


class StateStore(Mapping[str, Any]):
    """The tables of the input partitions this worker holds (`partition(p)`), and a read-only
    view across them by `sku@location` (the dashboard's).

    `partitions`: the input topics' partition count.
    """

    def __init__(self, partitions: int) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions}")
        self.partitions = partitions
        self._tables: dict[int, PartitionTable] = {}

    def partition(self, partition: int) -> PartitionTable:
        """The table of input partition `partition` (created empty on first use)."""
        table = self._tables.get(partition)
        if table is None:
            if not 0 <= partition < self.partitions:
                raise ValueError(f"partition {partition} outside 0..{self.partitions - 1}")
            table = self._tables[partition] = PartitionTable(partition)
        return table

    def held(self) -> list[int]:
        """The partitions with a table, in order."""
        return sorted(self._tables)

    # --- the view by key ---------------------------------------------------------------------
    def states_of(self, key: str) -> dict[int, Any]:
        """partition -> state of `key`, for every partition that holds it."""
        return {p: t._data[key] for p, t in sorted(self._tables.items()) if key in t._data}

    def __getitem__(self, key: str) -> Any:
        """The state of `key`; a key held on several partitions gives the one whose clock is
        furthest (the lowest partition on a tie): `states_of` has them all."""
        states = self.states_of(key)
        if not states:
            raise KeyError(key)
        if len(states) == 1:
            return next(iter(states.values()))
        return max(states.values(), key=_watermark)  # max keeps the first of equals

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(k for t in self._tables.values() for k in t._data))

    def __len__(self) -> int:
        if len(self._tables) == 1:
            return len(next(iter(self._tables.values())))
        return sum(1 for _ in self)

    def __contains__(self, key: object) -> bool:
        return any(key in t._data for t in self._tables.values())

    # --- engine side -------------------------------------------------------------------------
    def has_dirty(self) -> bool:
        return any(t._dirty for t in self._tables.values())

    def take_dirty(self) -> list[tuple[str, int, Any]]:
        """(key, partition, value or None if deleted) of every key written since the last
        call; the partition is the input partition the key's state belongs to."""
        out: list[tuple[str, int, Any]] = []
        for p, table in self._tables.items():
            if table._dirty:
                data = table._data
                out.extend((k, p, data.get(k)) for k in table._dirty)
                table._dirty.clear()
        return out

    def load(self, partition: int, key: str, value: Any) -> None:
        """Recovery: a changelog record of `partition` (None deletes), not marked dirty."""
        self.partition(partition).load(key, value)

    def drop_partitions(self, partitions: Iterable[int]) -> int:
        """Forget the state of revoked partitions; returns how many keys were dropped."""
        dropped = 0
        for p in set(partitions):
            table = self._tables.pop(p, None)
            if table is not None:
                dropped += len(table)
        return dropped


def _watermark(state: Any) -> int:
    value = state.get("watermark") if isinstance(state, dict) else state.watermark
    return -1 if value is None else int(value)
