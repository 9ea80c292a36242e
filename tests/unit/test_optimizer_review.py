"""The periodic review as arrays: a forecast, positions and policy terms in; orders, levels,
stock-out risk and anomaly flags out. Row i of every array is one SKU."""

import numpy as np
import pytest

from forecasting import QuantileForecast
from optimizer.policy import decide_restock
from optimizer.review import (
    RISK_CLOSE,
    RISK_OPEN,
    PolicyTerms,
    overdue_restocks,
    review,
    stale_stock,
    steps_of_days,
)
from schemas import SkuPolicy

LEVELS = (0.05, 0.5, 0.95)


def flat_forecast(n: int, per_bucket=(7.0, 10.0, 14.0), horizon: int = 4) -> QuantileForecast:
    """n series with the same demand: bucket quantiles `per_bucket`, h buckets h times that."""
    q = np.asarray(per_bucket)
    daily = np.broadcast_to(q, (n, horizon, 3)).copy()
    cumulative = np.arange(1, horizon + 1)[None, :, None] * q[None, None, :] * np.ones((n, 1, 1))
    return QuantileForecast(np.asarray(LEVELS), daily, cumulative, np.full((n, horizon), q[1]))


def terms(n: int, *, lead=2, review_steps=1, service=0.95, case_pack=1, moq=0) -> PolicyTerms:
    """The same terms for n SKUs; any term may also be a list, one value per SKU."""
    def col(v, dtype):
        return np.broadcast_to(np.asarray(v, dtype=dtype), (n,)).copy()
    lead, review_steps = np.asarray(lead), np.asarray(review_steps)
    return PolicyTerms(col(lead, np.int64), col(lead + review_steps, np.int64),
                       col(service, np.float64), col(case_pack, np.int64), col(moq, np.int64))


def no_history(n: int) -> dict:
    return {"previous_high": np.full(n, np.nan), "observed": np.zeros(n)}


def test_a_restock_rounds_up_to_case_packs_and_the_moq():
    # demand over lead 2 + review 1 = 3 buckets: quantiles 21 / 30 / 42 at 5% / 50% / 95%
    result = review(flat_forecast(3), inventory_position=[12, 40, 50],
                    terms=terms(3, case_pack=12, moq=[48, 0, 48]), **no_history(3))
    assert result.order_up_to.tolist() == [42.0, 42.0, 42.0]  # the 95% quantile
    assert result.reorder_point.tolist() == result.order_up_to.tolist()  # (R, S): one level
    # 12 on hand needs 30 -> 3 packs = 36, raised to the MOQ 48; 40 needs 2 -> one pack
    # (no MOQ); 50 is above the reorder point
    assert result.order_quantity.tolist() == [48, 12, 0]
    assert result.restock_reason(0) == (
        "inventory position 12 <= reorder point 42.0; order up to 42.0 "
        "(need 30, case pack 12, MOQ 48 -> 48)")


def test_nothing_is_ordered_for_stock_never_seen():
    result = review(flat_forecast(2), inventory_position=[0, 0], terms=terms(2),
                    stock_known=[True, False], **no_history(2))
    assert result.order_quantity.tolist() == [42, 0]
    assert np.isnan(result.stockout_risk[1]) and not result.raise_stockout[1]


def test_the_orders_demand_distribution_goes_with_them():
    result = review(flat_forecast(2), inventory_position=[0, 100], terms=terms(2),
                    **no_history(2))
    assert result.demand_levels.tolist() == list(LEVELS)
    assert result.cover_quantiles is not None
    assert result.cover_quantiles[0].tolist() == [21.0, 30.0, 42.0]  # 3 buckets of demand
    assert np.isnan(result.cover_quantiles[1]).all()  # no order, no distribution


def test_a_cover_beyond_the_horizon_is_extrapolated_not_cut():
    # lead 6 + review 2 = 8 buckets on a 4-bucket forecast: mean x 2, spread x sqrt(2)
    result = review(flat_forecast(1), inventory_position=[0],
                    terms=terms(1, lead=6, review_steps=2), **no_history(1))
    assert result.order_up_to[0] == pytest.approx(2 * 40 + np.sqrt(2) * (56 - 40))
    assert result.risk_steps.tolist() == [4]  # the risk looks as far as the forecast goes


def test_stockout_risk_above_the_threshold_raises_an_alert_once():
    # demand over the 2-bucket lead time: 14 / 20 / 28 at 5% / 50% / 95%
    result = review(flat_forecast(4), inventory_position=[20, 24, 24, 28], terms=terms(4),
                    stockout_alert_open=[False, False, True, True], **no_history(4))
    assert result.stockout_risk == pytest.approx([0.5, 0.275, 0.275, 0.05])
    assert RISK_CLOSE < 0.275 and 0.275 >= RISK_OPEN
    # 50% and 27.5% raise where no alert is open; an open one stays until the risk falls
    # below RISK_CLOSE (the last SKU's 5%)
    assert result.raise_stockout.tolist() == [True, True, False, False]
    assert result.clear_stockout.tolist() == [False, False, False, True]


def test_demand_above_the_last_forecasts_high_quantile_is_an_anomaly():
    result = review(flat_forecast(4), inventory_position=[100] * 4, terms=terms(4),
                    previous_high=[8.0, 8.0, np.nan, 0.4], observed=[9.0, 8.0, 100.0, 1.0])
    # above 8: yes; at 8: no; no previous forecast: no; a single unit is never an anomaly
    assert result.anomalous.tolist() == [True, False, False, False]
    # and the high quantile the next review tests against: this forecast's next bucket
    assert result.next_bucket_high.tolist() == [14.0] * 4


def test_the_review_agrees_with_the_scalar_decision():
    rng = np.random.default_rng(7)
    n = 40
    position = rng.integers(-10, 60, n)
    t = PolicyTerms(rng.integers(1, 4, n), rng.integers(4, 7, n), rng.uniform(0.6, 0.99, n),
                    rng.choice([1, 6, 12], n), rng.choice([0, 10, 24], n))
    result = review(flat_forecast(n, horizon=8), inventory_position=position, terms=t,
                    **no_history(n))
    for i in range(n):
        decision = decide_restock(
            reorder_point=float(result.reorder_point[i]), order_up_to=float(result.order_up_to[i]),
            on_hand=int(position[i]), on_order=0, backorders=0, case_pack=int(t.case_pack[i]),
            moq=int(t.moq[i]))
        assert result.order_quantity[i] == decision.quantity
        if decision.quantity:
            assert result.restock_reason(i) == decision.reason


def test_policy_terms_count_buckets():
    catalog = SkuPolicy(sku="A", location="L", lead_time_days=2, review_days=1,
                        service_level=0.9, case_pack=6, moq=12)
    same_day = SkuPolicy(sku="B", location="L", lead_time_days=0, review_days=0)
    hourly = PolicyTerms.of([catalog, same_day, catalog], bucket_seconds=3_600)
    assert hourly.lead_steps.tolist() == [48, 1, 48]  # an order never lands in its own bucket
    assert hourly.cover_steps.tolist() == [72, 2, 72]
    assert hourly.service_level.tolist() == [0.9, 0.95, 0.9]
    assert (hourly.case_pack.tolist(), hourly.moq.tolist()) == ([6, 1, 6], [12, 1, 12])
    assert steps_of_days(7, 86_400) == 7
    assert PolicyTerms.of([], bucket_seconds=86_400).lead_steps.shape == (0,)


def test_a_restock_is_overdue_once_lead_time_and_grace_have_passed():
    # issued at the review of bucket 10 with a 3-bucket lead: due by the end of bucket 13;
    # with a grace of 2 it is overdue once bucket 15 has closed unreceived
    at = np.array([13, 14, 15, 40])
    assert overdue_restocks([10] * 4, [3] * 4, at, grace_buckets=2).tolist() == [
        False, False, True, True]
    assert overdue_restocks([10], [3], [13], grace_buckets=0).tolist() == [True]
    assert overdue_restocks([], [], [], grace_buckets=2).shape == (0,)


def test_the_stockout_risk_counts_only_what_can_still_arrive():
    # 24 units of position, 20 of them an overdue restock: orders see 24, the risk sees 4
    result = review(flat_forecast(2), inventory_position=[24, 24], arriving_position=[24, 4],
                    terms=terms(2), **no_history(2))
    assert result.order_quantity.tolist() == [18, 18]  # up to 42 from 24 either way
    assert result.stockout_risk[0] == pytest.approx(0.275)
    # 4 is below the 5% quantile 14 of lead-time demand: the risk is at least 95%
    assert result.stockout_risk[1] >= 0.95 and result.raise_stockout.tolist() == [True, True]
    assert result.arriving_position.tolist() == [24.0, 4.0]
    plain = review(flat_forecast(1), inventory_position=[24], terms=terms(1), **no_history(1))
    assert plain.arriving_position.tolist() == [24.0]  # default: the inventory position


def test_stale_stock_opens_once_per_episode_and_closes_on_fresh_data():
    age, raise_, clear = stale_stock([3.0, 3.0, 9.0, 9.0, np.nan], [10, 11, 12, 12, 12],
                                     stale_buckets=7,
                                     alert_open=[False, False, True, False, False])
    assert age[:4].tolist() == [7.0, 8.0, 3.0, 3.0] and np.isnan(age[4])
    # 7 buckets old is not yet older than 7; 8 is (raised); an open alert closes on fresh
    # data; never-seen stock is unknown, not stale
    assert raise_.tolist() == [False, True, False, False, False]
    assert clear.tolist() == [False, False, True, False, False]
    _, again, _ = stale_stock([3.0], [30], stale_buckets=7, alert_open=[True])
    assert again.tolist() == [False]  # still stale, alert open: no second alert
