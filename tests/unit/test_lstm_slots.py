"""StateSlots: keyed LSTM states in slot arrays — round trip, growth, LRU eviction, clear."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from forecasting.lstm.features import ScaleState  # noqa: E402
from forecasting.lstm.forecaster import SeriesState  # noqa: E402
from forecasting.lstm.slots import StateSlots  # noqa: E402

DAY = np.datetime64("2011-05-01", "D")


def _state(n: int, seed: int, layers: int = 2, hidden: int = 3) -> SeriesState:
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    return SeriesState(torch.randn(layers, n, hidden, generator=g),
                       torch.randn(layers, n, hidden, generator=g),
                       ScaleState(rng.random(n), rng.integers(1, 9, n).astype(float)),
                       DAY + rng.integers(0, 5, n).astype("timedelta64[D]"))


def _assert_same(a: SeriesState, b: SeriesState) -> None:
    torch.testing.assert_close(a.h, b.h, rtol=0, atol=0)
    torch.testing.assert_close(a.c, b.c, rtol=0, atol=0)
    np.testing.assert_array_equal(a.scale.level, b.scale.level)
    np.testing.assert_array_equal(a.scale.count, b.scale.count)
    np.testing.assert_array_equal(a.last_day, b.last_day)


def test_states_round_trip_through_slots_and_grow_past_the_first_capacity() -> None:
    store = StateSlots(2, 3, torch.device("cpu"), capacity=4)
    keys = [f"sku{i}" for i in range(10)]
    slots, new = store.slots(keys)
    assert new.all() and len(set(slots.tolist())) == 10 and store.capacity >= 10
    assert np.isnat(store.last_day[slots]).all()  # a new key has no state yet
    state = _state(10, seed=1)
    store.scatter(slots, state)
    again, new = store.slots(keys[::-1])
    assert not new.any() and again.tolist() == slots[::-1].tolist()
    _assert_same(store.gather(again), state.take(np.arange(10)[::-1].copy()))
    more, new = store.slots(["sku3", "x", "sku7"])
    assert new.tolist() == [False, True, False] and more[0] == slots[3]
    _assert_same(store.gather(slots), state)  # other keys untouched by new ones


def test_the_least_recently_used_keys_are_dropped_beyond_max_states() -> None:
    store = StateSlots(1, 2, torch.device("cpu"), max_states=16, capacity=4)
    store.scatter(store.slots([f"old{i}" for i in range(8)])[0], _state(8, 2, layers=1,
                                                                         hidden=2))
    recent = [f"recent{i}" for i in range(8)]
    store.scatter(store.slots(recent)[0], _state(8, 3, layers=1, hidden=2))
    store.slots([f"old{i}" for i in range(4, 8)])  # touched again: now more recent
    slots, new = store.slots(["fresh0", "fresh1"])  # 18 > 16: the oldest 2 (at least) go
    assert new.all() and len(store) == 16
    assert sum(f"old{i}" in store for i in range(4)) == 2  # two of the least recently used
    assert all(k in store for k in recent) and all(f"old{i}" in store for i in range(4, 8))
    assert np.isnat(store.last_day[slots]).all()  # a reused slot does not leak its old day


def test_clear_forgets_every_key() -> None:
    store = StateSlots(1, 2, torch.device("cpu"))
    store.slots(["a", "b"])
    store.clear()
    assert len(store) == 0 and "a" not in store
    _, new = store.slots(["b", "c"])
    assert new.all()


def test_day_rings_are_kept_per_slot_and_a_consumed_step_writes_in_place() -> None:
    from forecasting.lstm.features import RING_DAYS, DayRing

    rng = np.random.default_rng(4)
    store = StateSlots(2, 3, torch.device("cpu"), capacity=2)
    windows = rng.poisson(3.0, (5, 420)).astype(float)
    state = _state(5, seed=5)
    state.ring = DayRing.from_windows(windows[:, :400])
    slots, _ = store.slots([f"k{i}" for i in range(5)])  # grows past capacity 2
    store.scatter(slots, state)
    got = store.gather(slots[::-1].copy())
    assert got.ring is not None and got.ring.values is store.ring_values  # a view
    np.testing.assert_array_equal(got.ring.span(RING_DAYS), state.ring.span(RING_DAYS)[::-1])
    got.ring.push_(windows[::-1, 400])  # a consumed step: one write per key in the store
    store.scatter(slots[::-1].copy(), got)
    assert store.gather(slots).ring.span(RING_DAYS)[:, -1].tolist() == windows[:, 400].tolist()
    store.slots([f"new{i}" for i in range(10)])  # growth keeps the rings
    assert store.capacity > 8
    ring = store.gather(slots).ring
    assert ring is not None
    np.testing.assert_array_equal(ring.span(RING_DAYS),
                                  DayRing.from_windows(windows[:, :401]).span(RING_DAYS))
