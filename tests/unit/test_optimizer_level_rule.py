"""The order-up-to level rule (`optimizer.level_rule`) and the review that runs it: each SKU
orders up to the mean of its raw levels of the last k = ceil(cover / review) reviews."""

import numpy as np
import pytest

from optimizer.level_rule import cover_reviews, mean_level, smooth_levels, smooth_sku_levels
from optimizer.review import PolicyTerms, review
from schemas import SkuPolicy
from tests.unit.test_optimizer_review import flat_forecast, no_history, terms


def test_cover_reviews_is_the_ceiling_of_cover_over_review_elementwise():
    assert cover_reviews([8, 14, 10, 1, 3], [1, 7, 4, 1, 0]).tolist() == [8, 2, 3, 1, 3]


def test_policy_terms_count_k_in_buckets_from_the_policy():
    policies = [SkuPolicy(sku="a", location="l", lead_time_days=7, review_days=1),
                SkuPolicy(sku="b", location="l", lead_time_days=7, review_days=7),
                SkuPolicy(sku="c", location="l", lead_time_days=0, review_days=0)]
    daily = PolicyTerms.of(policies, bucket_seconds=86_400)
    assert daily.review_steps.tolist() == [1, 7, 1]
    assert daily.cover_reviews().tolist() == [8, 2, 2]  # a 0-day lead time is one bucket
    hourly = PolicyTerms.of(policies[:1], bucket_seconds=3_600)  # 168 + 24 buckets
    assert hourly.cover_reviews().tolist() == [8]


def test_each_sku_averages_its_last_k_levels_fewer_when_fewer_are_remembered():
    level, n, keep = smooth_sku_levels([10.0, 10.0, 10.0, 7.0],
                                       [[], [2.0], [1.0, 2.0, 4.0, 8.0], [5.0]], [3, 3, 3, 1])
    assert level.tolist() == [10.0, 6.0, (4.0 + 8.0 + 10.0) / 3, 7.0]
    assert n.tolist() == [1, 2, 3, 1]
    assert keep == [[10.0], [2.0, 10.0], [8.0, 10.0], []]  # the last k - 1, this one's in


def test_a_smaller_k_keeps_the_newest_of_what_is_remembered():
    # a lead time cut from 7 to 1 day: k 8 -> 2, the older levels are dropped, not averaged
    level, n, keep = smooth_sku_levels([3.0], [[9.0] * 6 + [1.0]], [2])
    assert (level.tolist(), n.tolist(), keep) == ([2.0], [2], [[3.0]])


def test_the_stream_and_the_simulation_compute_the_same_level_bit_for_bit():
    rng = np.random.default_rng(1)
    raw = rng.gamma(2.0, 37.0, size=30)
    memory: list = []
    remembered: list = [[]]
    for x in raw:
        sim = smooth_levels(memory, np.array([[x]]), 8)[0, 0]
        stream, _, remembered = smooth_sku_levels([x], remembered, [8])
        assert stream[0] == sim
        assert stream[0] == np.mean(memory)  # the mean, in its plain order


def test_mean_level_leaves_out_levels_not_remembered():
    table = np.array([[np.nan, 1.0], [2.0, 3.0]])
    assert mean_level(table).tolist() == [2.0, 2.0]


# --- the review under the rule -------------------------------------------------------------
def test_without_a_memory_the_review_orders_up_to_its_own_level():
    result = review(flat_forecast(2), inventory_position=[0, 50], terms=terms(2),
                    **no_history(2))
    assert result.level_memory is None
    assert result.levels_averaged.tolist() == [1, 1]
    assert result.order_up_to.tolist() == result.raw_order_up_to.tolist() == [42.0, 42.0]


def test_a_steady_forecast_orders_what_it_ordered_without_the_rule():
    # lead 2 + review 1: k = 3; the last two reviews computed the same 42 as this one
    plain = review(flat_forecast(3), inventory_position=[0, 12, 50], terms=terms(3),
                   **no_history(3))
    smooth = review(flat_forecast(3), inventory_position=[0, 12, 50], terms=terms(3),
                    level_memory=[[42.0, 42.0]] * 3, **no_history(3))
    assert smooth.order_up_to.tolist() == plain.order_up_to.tolist()
    assert smooth.order_quantity.tolist() == plain.order_quantity.tolist() == [42, 30, 0]
    assert smooth.levels_averaged.tolist() == [3, 3, 3]
    assert smooth.level_memory == [[42.0, 42.0]] * 3


def test_a_spike_lifts_the_level_by_one_kth_of_itself():
    # a forecast three times the usual: raw 126 instead of 42; k = 3
    spike = flat_forecast(1, per_bucket=(21.0, 30.0, 42.0))
    plain = review(spike, inventory_position=[0], terms=terms(1), **no_history(1))
    smooth = review(spike, inventory_position=[0], terms=terms(1),
                    level_memory=[[42.0, 42.0]], **no_history(1))
    assert plain.order_up_to[0] == 126.0
    assert smooth.raw_order_up_to[0] == 126.0
    assert smooth.order_up_to[0] == pytest.approx(42.0 + (126.0 - 42.0) / 3)
    assert smooth.reorder_point[0] == smooth.order_up_to[0]  # (R, S): one level
    assert smooth.order_quantity[0] == 70
    assert smooth.level_memory == [[42.0, 126.0]]


def test_k_comes_from_each_skus_own_terms():
    # lead 2 + review 1 (k 3) and lead 2 + review 2 (k 2), both remembering [12, 24]
    t = terms(2, review_steps=[1, 2])
    result = review(flat_forecast(2, horizon=4), inventory_position=[0, 0], terms=t,
                    level_memory=[[12.0, 24.0], [12.0, 24.0]], **no_history(2))
    raw = result.raw_order_up_to.tolist()  # 42 over 3 buckets, 56 over 4
    assert raw == [42.0, 56.0]
    assert result.order_up_to.tolist() == pytest.approx([(12 + 24 + 42) / 3, (24 + 56) / 2])
    assert result.levels_averaged.tolist() == [3, 2]
    assert result.level_memory == [[24.0, 42.0], [56.0]]


def test_the_reason_says_when_the_level_is_a_mean():
    result = review(flat_forecast(2), inventory_position=[0, 60], terms=terms(2),
                    level_memory=[[42.0, 42.0], [42.0]], **no_history(2))
    assert result.restock_reason(0) == (
        "inventory position 0 <= reorder point 42.0; order up to 42.0 "
        "(mean of the last 3 reviews' levels; need 42, case pack 1, MOQ 0 -> 42)")
    assert result.restock_reason(1) == (
        "inventory position 60 > reorder point 42.0 (mean of the last 2 reviews' levels); "
        "no order")
    first = review(flat_forecast(1), inventory_position=[0], terms=terms(1),
                   level_memory=[[]], **no_history(1))
    assert "mean" not in first.restock_reason(0)  # a new SKU's first review: its own level
