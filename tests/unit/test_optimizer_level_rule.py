"""The order-up-to level rule (`optimizer.level_rule`) and the review that runs it: each SKU
orders up to the mean of its raw levels of the reviews within its protection interval (the
simulation: the last k = ceil(cover / review) reviews; the stream: the reviews of its last
cover-steps buckets, which a SKU reviewed every period makes the same)."""

import numpy as np
import pytest

from optimizer.level_rule import cover_reviews, mean_level, smooth_levels, smooth_sku_levels
from optimizer.review import LevelMemory, review
from tests.unit.test_optimizer_review import flat_forecast, no_history, terms


def test_cover_reviews_is_the_ceiling_of_cover_over_review_elementwise():
    assert cover_reviews([8, 14, 10, 1, 3], [1, 7, 4, 1, 0]).tolist() == [8, 2, 3, 1, 3]


def test_each_sku_averages_the_levels_of_its_protection_interval():
    # reviewed at bucket 100, windows of 3, 3, 3 and 1 buckets
    level, n, keep, at = smooth_sku_levels(
        [10.0, 10.0, 10.0, 7.0],
        [[], [2.0], [1.0, 2.0, 4.0, 8.0], [5.0]],
        [[], [99], [96, 97, 98, 99], [99]], [100, 100, 100, 100], [3, 3, 3, 1])
    assert level.tolist() == [10.0, 6.0, (4.0 + 8.0 + 10.0) / 3, 7.0]
    assert n.tolist() == [1, 2, 3, 1]
    assert keep == [[10.0], [2.0, 10.0], [4.0, 8.0, 10.0], [7.0]]
    assert at == [[100], [99, 100], [98, 99, 100], [100]]


def test_a_sparse_skus_old_levels_are_not_averaged():
    # an SKU without orders for ten days: its review of bucket 90 is outside an 8-bucket
    # protection interval at bucket 100, so it orders up to its own level; one of bucket 95
    # counts
    level, n, _, at = smooth_sku_levels([3.0, 3.0], [[90.0], [9.0]], [[90], [95]],
                                        [100, 100], [8, 8])
    assert (level.tolist(), n.tolist(), at) == ([3.0, 6.0], [1, 2], [[100], [95, 100]])


def test_a_review_of_the_same_bucket_again_replaces_its_level():
    level, n, keep, at = smooth_sku_levels([4.0], [[1.0, 2.0]], [[98, 99]], [99], [8])
    assert (level.tolist(), n.tolist(), keep, at) == ([2.5], [2], [[1.0, 4.0]], [[98, 99]])


def test_the_stream_and_the_simulation_compute_the_same_level_bit_for_bit():
    # reviewed every bucket (daily review, lead 7: window 8 buckets, k 8)
    rng = np.random.default_rng(1)
    raw = rng.gamma(2.0, 37.0, size=30)
    memory: list = []
    levels: list = [[]]
    made_at: list = [[]]
    for day, x in enumerate(raw):
        sim = smooth_levels(memory, np.array([[x]]), 8)[0, 0]
        stream, _, levels, made_at = smooth_sku_levels([x], levels, made_at, [day], [8])
        assert stream[0] == sim
        assert stream[0] == np.mean(memory)  # the mean, in its plain order


def test_mean_level_leaves_out_levels_not_remembered():
    table = np.array([[np.nan, 1.0], [2.0, 3.0]])
    assert mean_level(table).tolist() == [2.0, 2.0]


# --- the review under the rule -------------------------------------------------------------
def memory(levels: list[list[float]], bucket: int = 50) -> LevelMemory:
    """Levels remembered from the buckets just before `bucket`, one a bucket."""
    return LevelMemory(levels, [list(range(bucket - len(x), bucket)) for x in levels],
                       bucket=[bucket] * len(levels))


def test_without_a_memory_the_review_orders_up_to_its_own_level():
    result = review(flat_forecast(2), inventory_position=[0, 50], terms=terms(2),
                    **no_history(2))
    assert result.level_memory is None
    assert result.levels_averaged.tolist() == [1, 1]
    assert result.order_up_to.tolist() == result.raw_order_up_to.tolist() == [42.0, 42.0]


def test_a_steady_forecast_orders_what_it_ordered_without_the_rule():
    # lead 2 + review 1: a 3-bucket interval; the last two reviews computed the same 42
    plain = review(flat_forecast(3), inventory_position=[0, 12, 50], terms=terms(3),
                   **no_history(3))
    smooth = review(flat_forecast(3), inventory_position=[0, 12, 50], terms=terms(3),
                    level_memory=memory([[42.0, 42.0]] * 3), **no_history(3))
    assert smooth.order_up_to.tolist() == plain.order_up_to.tolist()
    assert smooth.order_quantity.tolist() == plain.order_quantity.tolist() == [42, 30, 0]
    assert smooth.levels_averaged.tolist() == [3, 3, 3]
    assert smooth.level_memory == ([[42.0, 42.0, 42.0]] * 3, [[48, 49, 50]] * 3)


def test_a_spike_lifts_the_level_by_a_third_of_itself_over_three_buckets():
    # a forecast three times the usual: raw 126 instead of 42; a 3-bucket interval
    spike = flat_forecast(1, per_bucket=(21.0, 30.0, 42.0))
    plain = review(spike, inventory_position=[0], terms=terms(1), **no_history(1))
    smooth = review(spike, inventory_position=[0], terms=terms(1),
                    level_memory=memory([[42.0, 42.0]]), **no_history(1))
    assert plain.order_up_to[0] == 126.0
    assert smooth.raw_order_up_to[0] == 126.0
    assert smooth.order_up_to[0] == pytest.approx(42.0 + (126.0 - 42.0) / 3)
    assert smooth.reorder_point[0] == smooth.order_up_to[0]  # (R, S): one level
    assert smooth.order_quantity[0] == 70
    assert smooth.level_memory == ([[42.0, 42.0, 126.0]], [[48, 49, 50]])


def test_the_interval_comes_from_each_skus_own_terms():
    # lead 2 + review 1 (3 buckets) and lead 2 + review 2 (4 buckets), both remembering the
    # levels of buckets 46..49
    t = terms(2, review_steps=[1, 2])
    result = review(flat_forecast(2, horizon=4), inventory_position=[0, 0], terms=t,
                    level_memory=memory([[6.0, 9.0, 12.0, 24.0]] * 2), **no_history(2))
    raw = result.raw_order_up_to.tolist()  # 42 over 3 buckets, 56 over 4
    assert raw == [42.0, 56.0]
    assert result.order_up_to.tolist() == pytest.approx([(12 + 24 + 42) / 3,
                                                         (9 + 12 + 24 + 56) / 4])
    assert result.levels_averaged.tolist() == [3, 4]


def test_the_reason_says_when_the_level_is_a_mean():
    result = review(flat_forecast(2), inventory_position=[0, 60], terms=terms(2),
                    level_memory=memory([[42.0, 42.0], [42.0]]), **no_history(2))
    assert result.restock_reason(0) == (
        "inventory position 0 <= reorder point 42.0; order up to 42.0 "
        "(mean of the last 3 reviews' levels; need 42, case pack 1, MOQ 0 -> 42)")
    assert result.restock_reason(1) == (
        "inventory position 60 > reorder point 42.0 (mean of the last 2 reviews' levels); "
        "no order")
    first = review(flat_forecast(1), inventory_position=[0], terms=terms(1),
                   level_memory=memory([[]]), **no_history(1))
    assert "mean" not in first.restock_reason(0)  # a new SKU's first review: its own level
