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


def test_durable_records_take_a_float16_ring_only_where_exact_and_restore_bit_for_bit() -> None:
    from forecasting.lstm import durable
    from forecasting.lstm.features import RING_DAYS, DayRing

    rng = np.random.default_rng(6)
    store = StateSlots(2, 3, None, capacity=8, model=42, ring=True)
    windows = rng.poisson(3.0, (4, 400)).astype(float)
    windows[0, :390] = np.nan  # a young series: mostly missing
    windows[1, 17] = 2049.0  # an odd count above 2,048: not a float16
    windows[2, 50] = 0.1  # a real value: not a float16
    windows[3, 90] = -3.5  # a return, a half: exact
    state = _state(4, seed=7)
    state.h, state.c = state.h.numpy(), state.c.numpy()
    state.ring = DayRing.from_windows(windows)
    keys = [f"k{i}" for i in range(4)]
    slots, _ = store.slots(keys)
    store.scatter(slots, state)
    blobs = store.export(slots)
    f32 = durable.blob_dtype(2, 3, True).itemsize
    f16 = durable.blob_dtype(2, 3, True, half=True).itemsize
    assert [len(b) for b in blobs] == [f16, f32, f32, f16] and f32 - f16 == 2 * RING_DAYS
    for blob in blobs:
        rec = durable.record(blob)
        assert rec is not None and rec["flags"] & durable.RING_FLAG
        assert bool(rec["flags"] & durable.RING16_FLAG) == (len(blob) == f16)

    fresh = StateSlots(2, 3, None, capacity=8, model=42, ring=True)
    back, _ = fresh.slots(keys[::-1])
    assert fresh.restore(back, blobs[::-1]).all()
    got, want = fresh.gather(back[::-1].copy()), store.gather(slots)
    np.testing.assert_array_equal(got.h, want.h)
    np.testing.assert_array_equal(got.c, want.c)
    np.testing.assert_array_equal(got.ring.span(RING_DAYS), want.ring.span(RING_DAYS))
    assert [fresh.export(back[::-1].copy())[i] == blobs[i] for i in range(4)] == [True] * 4
    # the demand history of either layout, for a re-encode with other weights
    values, ends = durable.history(blobs)
    np.testing.assert_array_equal(values, windows[:, -RING_DAYS:].astype(np.float32))
    assert (ends == state.last_day).all()
    # another model's records are not restored, whatever their ring's layout
    other = StateSlots(2, 3, None, capacity=8, model=43, ring=True)
    assert not other.restore(other.slots(keys)[0], blobs).any()
