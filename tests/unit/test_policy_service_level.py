"""Service-level math: oracle tests against stockpyl, consistency and monotonicity properties."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer import PolicyInputError, order_quantity
from optimizer.service_level import (
    DemandDistribution,
    lead_time_demand_normal,
    lead_time_pmf,
    normal_cycle_level,
    normal_fill_rate_level,
    normal_loss,
    poisson_cycle_level,
    poisson_fill_rate_level,
    poisson_loss,
    restock_levels,
    standard_normal_loss,
)

stockpyl = pytest.importorskip("stockpyl")
from stockpyl import loss_functions as spl  # noqa: E402
from stockpyl.newsvendor import newsvendor_normal, newsvendor_poisson  # noqa: E402

LEVELS = np.array([0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975])


# --------------------------------------------------------------------- oracle: stockpyl


@pytest.mark.parametrize(("h", "p", "mean", "sd", "lead"), [
    (0.18, 0.70, 50, 8, 0), (1.0, 19.0, 50, 8, 3), (0.5, 4.5, 12.5, 6.0, 7),
    (2.0, 2.0, 300, 40, 1), (1.0, 99.0, 3.0, 2.5, 14),
])  # fmt: skip
def test_normal_base_stock_matches_stockpyl_newsvendor(h, p, mean, sd, lead):
    # Base-stock over lead time + one review period at the critical ratio p / (h + p).
    expected, _ = newsvendor_normal(h, p, mean, sd, lead_time=lead)
    mu, sigma = lead_time_demand_normal(mean, sd, lead + 1)
    assert normal_cycle_level(mu, sigma, p / (h + p)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("h", "p", "mean"), [
    (0.18, 0.70, 50), (1.0, 19.0, 3.2), (1.0, 9.0, 0.4), (0.1, 0.9, 120.0), (1.0, 1.0, 7.0),
])  # fmt: skip
def test_poisson_base_stock_matches_stockpyl_newsvendor(h, p, mean):
    expected, _ = newsvendor_poisson(h, p, mean)
    assert poisson_cycle_level(mean, p / (h + p)) == expected


@pytest.mark.parametrize("z", [-3.0, -1.2, 0.0, 0.4, 1.3, 2.5, 4.0])
def test_standard_normal_loss_matches_stockpyl(z):
    assert standard_normal_loss(z) == pytest.approx(spl.standard_normal_loss(z)[0], abs=1e-12)


@pytest.mark.parametrize(("x", "mean"), [(18, 15), (0, 3.5), (4, 0.7), (140, 120), (2, 10)])
def test_poisson_loss_matches_stockpyl(x, mean):
    assert poisson_loss(x, mean) == pytest.approx(spl.poisson_loss(x, mean)[0], rel=1e-10)


@pytest.mark.parametrize(("mean", "sd", "cycle", "beta"), [
    (100, 20, 30, 0.95), (350, 45, 50, 0.99), (8, 6, 1.2, 0.9), (56, 21, 8, 0.98),
])  # fmt: skip
def test_normal_fill_rate_level_meets_its_shortage_budget_by_stockpyl_loss(mean, sd, cycle, beta):
    level = normal_fill_rate_level(mean, sd, cycle, beta)
    assert spl.normal_loss(level, mean, sd)[0] == pytest.approx((1 - beta) * cycle, rel=1e-9)


@pytest.mark.parametrize(("mean", "cycle", "beta"), [
    (15, 10, 0.95), (3.5, 0.5, 0.99), (70, 10, 0.9), (0.8, 0.1, 0.95),
])  # fmt: skip
def test_poisson_fill_rate_level_is_the_smallest_meeting_the_budget_by_stockpyl_loss(
    mean, cycle, beta
):
    level = int(poisson_fill_rate_level(mean, cycle, beta))
    budget = (1 - beta) * cycle
    assert spl.poisson_loss(level, mean)[0] <= budget
    if level > 0:
        assert spl.poisson_loss(level - 1, mean)[0] > budget


# --------------------------------------------------------------------- distribution-free


def _normal_quantiles(mean, sd):
    from statistics import NormalDist

    return np.array([[NormalDist(m, s).inv_cdf(lv) for lv in LEVELS]
                     for m, s in zip(mean, sd, strict=True)])


def test_forecast_quantiles_reproduce_the_normal_closed_forms():
    mean, sd = np.array([100.0, 40.0, 500.0]), np.array([20.0, 12.0, 60.0])
    dist = DemandDistribution.from_quantiles(LEVELS, _normal_quantiles(mean, sd))
    # Between the forecast's levels the quantile is linear in the level (as in
    # QuantileForecast.lead_time_quantile): within 1% of the normal's curved quantile.
    for alpha in (0.5, 0.8, 0.95):
        np.testing.assert_allclose(dist.quantile(alpha), normal_cycle_level(mean, sd, alpha),
                                   rtol=1e-2)  # fmt: skip
    # The fill-rate level lives in the tail beyond the top quantile: the exponential tail
    # must stay within a few percent of the normal answer. A normal's tail is thinner than
    # an exponential's: the last gap's tail (the chord nearest the tail) is the closer, the
    # default median chord errs up (more stock), by under 4% here.
    want = normal_fill_rate_level(mean, sd, mean / 8, 0.95)
    gap = DemandDistribution.from_quantiles(LEVELS, _normal_quantiles(mean, sd), tail="last_gap")
    np.testing.assert_allclose(gap.level_for_shortage(0.05 * mean / 8), want, rtol=0.03)
    got = dist.level_for_shortage(0.05 * mean / 8)
    assert np.all(got >= want) and np.all(got <= 1.04 * want)


def test_normal_atoms_match_the_closed_form_loss():
    dist = DemandDistribution.normal([100.0], [20.0])
    for x in (60.0, 100.0, 130.0):
        assert dist.expected_shortage(x)[0] == pytest.approx(normal_loss(x, 100, 20), abs=0.05)


def test_level_for_shortage_inverts_expected_shortage_exactly_on_atoms():
    dist = DemandDistribution(np.array([[0.0, 2.0, 5.0, 9.0]]), np.array([[0.4, 0.3, 0.2, 0.1]]))
    for budget in (0.05, 0.3, 0.9, 2.0):
        level = dist.level_for_shortage(budget)
        assert dist.expected_shortage(level)[0] == pytest.approx(budget, abs=1e-9)


def test_lead_time_variability_widens_the_levels():
    days, probs = lead_time_pmf(7, 2)
    assert probs.sum() == pytest.approx(1.0) and days.min() >= 1 and (days * probs).sum() == \
        pytest.approx(7.0, abs=0.05)  # fmt: skip
    by_days = {int(d): DemandDistribution.normal(10.0 * d, 3.0 * np.sqrt(d)) for d in days}
    fixed = by_days[7]
    mixed = DemandDistribution.mixture([by_days[int(d)] for d in days], probs)
    assert mixed.quantile(0.95)[0] > fixed.quantile(0.95)[0] + 5
    mu, sd = lead_time_demand_normal(10.0, 3.0, 7, 2)
    assert sd == pytest.approx(np.sqrt(7 * 9 + 100 * 4))
    assert mixed.quantile(0.95)[0] == pytest.approx(normal_cycle_level(mu, sd, 0.95), rel=0.03)


def test_restock_levels_cycle_and_fill_rate():
    cover = DemandDistribution.normal([80.0, 8.0], [16.0, 4.3])
    s, up = restock_levels(cover, service_level=0.95, target="cycle", review_demand=[10.0, 1.0])
    np.testing.assert_allclose(up, cover.quantile(0.95))
    np.testing.assert_array_equal(s, up)  # order-up-to: every review tops the position up
    s, up = restock_levels(cover, service_level=0.95, target="fill_rate",
                           review_demand=[10.0, 1.0])  # fmt: skip
    np.testing.assert_allclose(cover.expected_shortage(up), [0.5, 0.05], rtol=1e-6)
    assert np.all(up >= s) and np.all(s >= 0)
    with pytest.raises(PolicyInputError):
        restock_levels(cover, service_level=1.0, review_demand=1.0)
    with pytest.raises(PolicyInputError):
        restock_levels(cover, service_level=0.9, target="bogus",  # type: ignore[arg-type]
                       review_demand=1.0)


# --------------------------------------------------------------------- properties

levels = st.floats(0.5, 0.999)
quantile_rows = st.lists(st.floats(0.0, 500.0), min_size=9, max_size=9).map(sorted)


@settings(max_examples=60, deadline=None)
@given(row=quantile_rows, a=levels, b=levels, target=st.sampled_from(["cycle", "fill_rate"]))
def test_higher_service_level_never_lowers_the_levels(row, a, b, target):
    lo, hi = sorted((a, b))
    cover = DemandDistribution.from_quantiles(LEVELS, np.array([row]))
    review = row[4] / 8 + 0.01
    s_lo, up_lo = restock_levels(cover, service_level=lo, target=target, review_demand=review)
    s_hi, up_hi = restock_levels(cover, service_level=hi, target=target, review_demand=review)
    assert s_hi[0] >= s_lo[0] - 1e-9
    assert up_hi[0] >= up_lo[0] - 1e-9


@settings(max_examples=60, deadline=None)
@given(mean=st.floats(0.1, 1000.0), cv=st.floats(0.05, 3.0), a=levels, b=levels)
def test_closed_form_levels_are_monotone_in_the_service_level(mean, cv, a, b):
    lo, hi = sorted((a, b))
    sd = mean * cv
    assert normal_cycle_level(mean, sd, hi) >= normal_cycle_level(mean, sd, lo) - 1e-9
    assert normal_fill_rate_level(mean, sd, mean / 7, hi) >= \
        normal_fill_rate_level(mean, sd, mean / 7, lo) - 1e-9  # fmt: skip
    assert poisson_cycle_level(mean, hi) >= poisson_cycle_level(mean, lo)
    assert poisson_fill_rate_level(mean, mean / 7, hi) >= \
        poisson_fill_rate_level(mean, mean / 7, lo)  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(on_hand=st.integers(-50, 500), on_order=st.integers(0, 500), extra=st.integers(0, 500),
       s=st.floats(0, 400), gap=st.floats(0, 400), pack=st.integers(1, 24), moq=st.integers(0, 48))
def test_more_stock_on_order_never_raises_the_order(on_hand, on_order, extra, s, gap, pack, moq):
    # With a MOQ an order can jump from 0 to the MOQ, but never grow as the position grows.
    q_less = order_quantity(on_hand + on_order, s, s + gap, pack, moq)
    q_more = order_quantity(on_hand + on_order + extra, s, s + gap, pack, moq)
    assert q_more <= q_less
