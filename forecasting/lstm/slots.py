"""StateSlots: the carried LSTM states of named series, one row ("slot") per key.

The micro-batcher keeps an SKU's recurrent state between requests so that a new bucket
costs one step. Kept as one `SeriesState` per key, a batch of 1,024 keys meant 1,024 small
tensors to stack and 1,024 to cut out again. Here every field lives in one preallocated
array indexed by slot: a batch gathers its states with one `index_select`, runs one step and
scatters them back; the only per-key Python is the dict lookup key -> slot.

A model with year-ago inputs also carries each series' day ring (features.DayRing): the
store keeps the rings of all slots in one array, `gather` hands out views of its rows and a
step that consumes the gathered state (`LSTMForecaster.update(..., consume=True)`) writes
the new day straight into the store: O(1) per key, not a copy of 392 days.

The same arrays are the durable form's columns (durable.py): `export` turns the rows of a
batch into one record per key with one `tobytes`, `restore` puts records back into slots
with one `frombuffer`; a stream changelogs them, so the working set here is a bounded
cache (least recently used keys are dropped) of state that lives in the changelog.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from forecasting.lstm.durable import (
    FORMAT,
    NO_DAY_INT,
    RING16_FLAG,
    RING_FLAG,
    blob_dtype,
    half_exact,
    history,
)
from forecasting.lstm.features import RING_DAYS, DayRing, ScaleState
from forecasting.lstm.state import SeriesState

if TYPE_CHECKING:  # device None: numpy arrays (the numpy backend, no torch installed)
    import torch

__all__ = ["StateSlots"]

Slots = NDArray[np.intp]
NO_DAY = np.datetime64("NaT", "D")


class StateSlots:
    """States of up to `max_states` keys in arrays that grow by doubling.

    A key's slot is stable while the key is kept. When a new key would exceed `max_states`,
    the least recently used eighth of the keys is dropped at once (one partial sort per
    eviction rather than one per key); a dropped key is restored from its durable record
    (`restore`) or, without one, re-encoded from its window.

    `model` is the fingerprint stamped on exported records (durable.fingerprint of the
    weights); `ring`: whether the model's states carry a day ring (year-ago inputs).
    `device` None keeps h and c in float32 numpy arrays (the numpy backend's states).
    """

    h: Any  # (layers, capacity, hidden): a torch tensor on `device`, or a numpy array
    c: Any

    def __init__(self, layers: int, hidden: int, device: torch.device | None, *,
                 max_states: int = 1_000_000, capacity: int = 1024, model: int = 0,
                 ring: bool = False) -> None:
        if max_states < 1:
            raise ValueError(f"max_states must be >= 1, got {max_states}")
        self.max_states = int(max_states)
        self.device = device
        self.layers, self.hidden = int(layers), int(hidden)
        self.model = int(model)
        self.has_ring = bool(ring)
        self.record = blob_dtype(self.layers, self.hidden, self.has_ring)
        # the layouts a record may have: the ring as float32, or as float16 where exact
        self.layouts = [self.record]
        if self.has_ring:
            self.layouts.append(blob_dtype(self.layers, self.hidden, True, half=True))
        capacity = max(1, min(capacity, self.max_states))
        self._slot: dict[str, int] = {}
        self._key: list[str | None] = [None] * capacity
        self._free: list[int] = list(range(capacity - 1, -1, -1))
        self.h = self._zeros(capacity)
        self.c = self._zeros(capacity)
        self.level = np.zeros(capacity)
        self.count = np.zeros(capacity)
        self.last_day = np.full(capacity, NO_DAY)
        self._used = np.zeros(capacity, dtype=np.int64)  # batch counter at last use
        self._tick = 0
        # The day rings (features.DayRing), made when the first state with one is stored.
        self.ring_values: NDArray[np.float32] | None = None  # (capacity, RING_DAYS)
        self.ring_pos = np.zeros(capacity, dtype=np.intp)

    def __len__(self) -> int:
        return len(self._slot)

    def __contains__(self, key: object) -> bool:
        return key in self._slot

    @property
    def capacity(self) -> int:
        """Slots allocated (kept keys plus free slots)."""
        return len(self._key)

    def clear(self) -> None:
        """Forget every key (e.g. the model changed: old states belong to old weights)."""
        for slot in self._slot.values():
            self._key[slot] = None
            self._free.append(slot)
        self._slot.clear()
        self.last_day[:] = NO_DAY

    def slots(self, keys: Sequence[str]) -> tuple[Slots, NDArray[np.bool_]]:
        """The slot of every key, giving new keys a fresh slot; and which keys are new.
        Marks all of them as just used."""
        get = self._slot.get
        slots = np.fromiter((get(k, -1) for k in keys), dtype=np.intp, count=len(keys))
        new = slots < 0
        self._tick += 1
        if new.any():
            fresh = np.flatnonzero(new)
            self._used[slots[~new]] = self._tick  # keep this batch's keys out of eviction
            self._make_room(fresh.size)
            for i in fresh.tolist():
                slot = self._free.pop()
                key = keys[i]
                self._slot[key] = slot
                self._key[slot] = key
                slots[i] = slot
            self.last_day[slots[fresh]] = NO_DAY
        self._used[slots] = self._tick
        return slots, new

    def gather(self, slots: Slots) -> SeriesState:
        """The states in `slots`, as one batch: copies, except the day rings, which are
        views of the store's rows (valid until these slots are next written)."""
        ring = None if self.ring_values is None else DayRing(
            self.ring_values, self.ring_pos[slots], np.array(slots, dtype=np.intp))
        if self.device is None:
            h, c = self.h[:, slots], self.c[:, slots]  # fancy indexing copies
        else:
            idx = self._index(slots)
            h, c = self.h.index_select(1, idx), self.c.index_select(1, idx)
        return SeriesState(h, c,
                           ScaleState(self.level[slots], self.count[slots]),
                           self.last_day[slots], ring)

    def scatter(self, slots: Slots, state: SeriesState) -> None:
        """Store the batch `state` (row i) into `slots[i]`."""
        if self.device is None:
            self.h[:, slots], self.c[:, slots] = state.h, state.c
        else:
            idx = self._index(slots)
            self.h.index_copy_(1, idx, state.h)
            self.c.index_copy_(1, idx, state.c)
        self.level[slots] = state.scale.level
        self.count[slots] = state.scale.count
        self.last_day[slots] = state.last_day
        ring = state.ring
        if ring is None:
            return
        if self.ring_values is None:
            self.ring_values = np.full((self.capacity, RING_DAYS), np.nan, dtype=np.float32)
        if not (ring.values is self.ring_values and ring.rows is not None
                and np.array_equal(ring.rows, slots)):  # else: already written in place
            self.ring_values[slots] = ring.own_values()
        self.ring_pos[slots] = ring.pos

    # --- durable records (durable.py) -----------------------------------------------------
    def export(self, slots: Slots) -> list[bytes]:
        """The durable record of each slot's state (one `tobytes` per layout of the batch: a
        ring that is exactly float16 is written as float16, durable.py)."""
        slots = np.asarray(slots, dtype=np.intp)
        n = len(slots)
        if not self.has_ring:
            return self._export(slots, self.record, None)
        rings = (np.full((n, RING_DAYS), np.nan, dtype=np.float32)
                 if self.ring_values is None else self.ring_values[slots])
        half = half_exact(rings)
        if half.all():
            return self._export(slots, self.layouts[1], rings)
        if not half.any():
            return self._export(slots, self.record, rings)
        out: list[bytes] = [b""] * n
        for rows, layout in ((np.flatnonzero(half), self.layouts[1]),
                             (np.flatnonzero(~half), self.record)):
            for i, blob in zip(rows.tolist(), self._export(slots[rows], layout, rings[rows]),
                               strict=True):
                out[i] = blob
        return out

    def _export(self, slots: Slots, layout: np.dtype,
                rings: NDArray[np.float32] | None) -> list[bytes]:
        n = len(slots)
        rec = np.zeros(n, dtype=layout)
        rec["format"] = FORMAT
        rec["layers"], rec["hidden"] = self.layers, self.hidden
        days = self.last_day[slots]
        rec["last_day"] = np.where(np.isnat(days), NO_DAY_INT,
                                   days.astype("datetime64[D]").astype(np.int64))
        rec["model"] = self.model
        rec["level"], rec["count"] = self.level[slots], self.count[slots]
        width = self.layers * self.hidden
        if self.device is None:
            rec["h"] = self.h[:, slots].transpose(1, 0, 2).reshape(n, width)
            rec["c"] = self.c[:, slots].transpose(1, 0, 2).reshape(n, width)
        else:
            idx = self._index(slots)
            rec["h"] = (self.h.index_select(1, idx).transpose(0, 1).reshape(n, width)
                        .cpu().numpy())
            rec["c"] = (self.c.index_select(1, idx).transpose(0, 1).reshape(n, width)
                        .cpu().numpy())
        if rings is not None:
            half = layout is not self.record
            rec["flags"] = RING_FLAG | (RING16_FLAG if half else 0)
            rec["ring"] = rings  # exact when half (half_exact)
            rec["ring_pos"] = self.ring_pos[slots]
        buf, size = rec.tobytes(), layout.itemsize
        return [buf[i * size:(i + 1) * size] for i in range(n)]

    def restore(self, slots: Slots, blobs: Sequence[bytes | None]) -> NDArray[np.bool_]:
        """Put the records `blobs[i]` into `slots[i]`; returns which were taken: a record of
        this model and layout (format, fingerprint, L, H, ring; its ring float32 or float16).
        The others' slots are left as they were (a caller re-encodes those)."""
        taken = np.zeros(len(blobs), dtype=bool)
        target_all = np.asarray(slots, dtype=np.intp)
        for layout in self.layouts:
            size = layout.itemsize
            fits = np.fromiter((b is not None and len(b) == size for b in blobs), dtype=bool,
                               count=len(blobs))
            if not fits.any():
                continue
            rows = np.flatnonzero(fits)
            rec = np.frombuffer(b"".join([blobs[i] for i in rows.tolist()]),  # type: ignore[misc]
                                dtype=layout)
            half = RING16_FLAG if layout is not self.record else 0
            ok = ((rec["format"] == FORMAT) & (rec["model"] == self.model)
                  & (rec["layers"] == self.layers) & (rec["hidden"] == self.hidden)
                  & (rec["last_day"] != NO_DAY_INT)
                  & (((rec["flags"] & RING_FLAG) != 0) == self.has_ring)
                  & ((rec["flags"] & RING16_FLAG) == half))
            taken[rows[ok]] = True
            self._restore(target_all[rows[ok]], rec[ok])
        return taken

    def _restore(self, target: Slots, rec: NDArray[np.void]) -> None:
        n = target.size
        if not n:
            return
        shape = (n, self.layers, self.hidden)
        if self.device is None:
            self.h[:, target] = rec["h"].reshape(shape).transpose(1, 0, 2)
            self.c[:, target] = rec["c"].reshape(shape).transpose(1, 0, 2)
        else:
            import torch

            idx = self._index(target)
            h = torch.from_numpy(rec["h"].reshape(shape)).transpose(0, 1).to(self.device)
            c = torch.from_numpy(rec["c"].reshape(shape)).transpose(0, 1).to(self.device)
            self.h.index_copy_(1, idx, h.contiguous())
            self.c.index_copy_(1, idx, c.contiguous())
        self.level[target], self.count[target] = rec["level"], rec["count"]
        self.last_day[target] = rec["last_day"].astype("datetime64[D]")
        if self.has_ring:
            if self.ring_values is None:
                self.ring_values = np.full((self.capacity, RING_DAYS), np.nan,
                                           dtype=np.float32)
            self.ring_values[target] = rec["ring"]
            self.ring_pos[target] = rec["ring_pos"]

    @staticmethod
    def history(blobs: Sequence[bytes | None]) -> tuple[NDArray[np.float64],
                                                         NDArray[np.datetime64]]:
        """The demand history records of any model carry (durable.history)."""
        return history(blobs)

    def _zeros(self, capacity: int) -> Any:
        if self.device is None:
            return np.zeros((self.layers, capacity, self.hidden), dtype=np.float32)
        import torch

        return torch.zeros(self.layers, capacity, self.hidden, device=self.device)

    def _index(self, slots: Slots) -> torch.Tensor:
        import torch

        assert self.device is not None
        idx = torch.from_numpy(np.ascontiguousarray(slots, dtype=np.int64))
        if self.device.type == "cuda":
            return idx.pin_memory().to(self.device, non_blocking=True)
        return idx

    def _make_room(self, n_new: int) -> None:
        over = len(self._slot) + n_new - self.max_states
        if over > 0:
            self._evict(min(len(self._slot), max(over, self.max_states // 8)))
        if len(self._free) < n_new:
            self._grow(len(self._slot) + n_new)

    def _evict(self, n: int) -> None:
        """Drop the `n` least recently used keys (not those of the current batch, unless a
        batch alone holds more than max_states keys)."""
        taken = np.flatnonzero(np.fromiter((k is not None for k in self._key), dtype=bool,
                                           count=len(self._key)))
        oldest = taken[np.argpartition(self._used[taken], n - 1)[:n]] if n < taken.size \
            else taken
        for slot in oldest.tolist():
            key = self._key[slot]
            assert key is not None
            del self._slot[key]
            self._key[slot] = None
            self._free.append(slot)

    def _grow(self, needed: int) -> None:
        old = self.capacity
        new = old
        while new < needed:
            new *= 2
        extra = new - old
        if self.device is None:
            self.h = np.concatenate([self.h, self._zeros(extra)], axis=1)
            self.c = np.concatenate([self.c, self._zeros(extra)], axis=1)
        else:
            import torch

            self.h = torch.cat([self.h, self._zeros(extra)], dim=1)
            self.c = torch.cat([self.c, self._zeros(extra)], dim=1)
        self.level = np.concatenate([self.level, np.zeros(extra)])
        self.count = np.concatenate([self.count, np.zeros(extra)])
        self.last_day = np.concatenate([self.last_day, np.full(extra, NO_DAY)])
        self._used = np.concatenate([self._used, np.zeros(extra, dtype=np.int64)])
        self.ring_pos = np.concatenate([self.ring_pos, np.zeros(extra, dtype=np.intp)])
        if self.ring_values is not None:
            self.ring_values = np.concatenate(
                [self.ring_values, np.full((extra, RING_DAYS), np.nan, dtype=np.float32)])
        self._key.extend([None] * extra)
        self._free.extend(range(new - 1, old - 1, -1))
