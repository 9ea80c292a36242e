"""Per-cycle constraints: restock batches cut to supplier budgets, capacity and MOQs."""

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest
from pydantic import ValidationError

from optimizer.allocation import AllocationProblem, pack_gains
from optimizer.constraints import (
    SPEND,
    UNITS,
    CycleConstraints,
    allocate_cycle,
    cycle_of,
    usage_keys,
)
from optimizer.service_level import DemandDistribution
from runtime.settings import Settings, settings_env
from schemas.events import RestockEvent
from tests.factories import DEMAND_LEVELS as LEVELS
from tests.factories import restock_with_demand as restock
from tests.support.milp import milp_optimum

NOW = datetime(2025, 3, 1, 2, tzinfo=UTC)
DAY = date(2025, 3, 1)


def quantities(decision) -> dict[str, int]:
    return {line.restock_id: line.quantity for plan in decision.plans for line in plan.lines}


def spend_by_supplier(decision) -> dict[str, float]:
    out: dict[str, float] = {}
    for plan in decision.plans:
        out[plan.supplier] = out.get(plan.supplier, 0.0) + plan.total_cost
    return out


def test_no_limits_keep_every_restock_as_decided():
    batch = [restock(f"r{i}", sku=f"s{i}", mean=10 + 5 * i) for i in range(6)]
    decision = allocate_cycle(batch, CycleConstraints(), {}, NOW)
    assert quantities(decision) == {r.restock_id: r.quantity for r in batch}
    assert decision.cuts == []
    # A limit on another supplier changes nothing here either.
    other = CycleConstraints(supplier_budgets={"globex": 1.0})
    assert quantities(allocate_cycle(batch, other, {}, NOW)) == quantities(decision)


def test_a_loose_budget_keeps_packs_the_distribution_values_at_zero():
    # The policy asked for far more than the forecast says can be sold: every pack is kept
    # all the same when the budget does not bind.
    r = restock("r1", mean=5.0, sd=0.5, quantity=60)
    decision = allocate_cycle([r], CycleConstraints(supplier_budgets={"acme": 1e6}), {}, NOW)
    assert quantities(decision) == {"r1": 60}


def test_budget_holds_cuts_are_recorded_and_whole_packs():
    batch = [restock(f"r{i}", sku=f"s{i}", mean=20 + 7 * i, unit_cost=1 + i) for i in range(8)]
    wanted = sum(r.quantity * r.unit_cost for r in batch)
    limits = CycleConstraints(supplier_budgets={"acme": wanted * 0.4})
    decision = allocate_cycle(batch, limits, {}, NOW)
    assert spend_by_supplier(decision)["acme"] <= wanted * 0.4 + 1e-6
    got = quantities(decision)
    cut = {c.restock_id: c for c in decision.cuts}
    assert cut, "a 40% budget must cut something"
    for r in batch:
        kept = got.get(r.restock_id, 0)
        assert kept % 6 == 0
        if kept < r.quantity:
            c = cut[r.restock_id]
            assert (c.requested, c.allocated, c.cycle) == (r.quantity, kept, DAY)
            assert "budget" in c.reason
        else:
            assert r.restock_id not in cut
    assert decision.usage_added[(DAY, SPEND, "acme")] == pytest.approx(
        spend_by_supplier(decision)["acme"])
    assert decision.usage_added[(DAY, UNITS, "berlin")] == sum(got.values())


def expected_units_served(batch: list[RestockEvent], got: dict[str, int]) -> float:
    dist = DemandDistribution.from_quantiles(LEVELS, [r.demand_quantiles for r in batch])
    ip = np.array([r.inventory_position for r in batch])
    q = np.array([got.get(r.restock_id, 0) for r in batch])
    return float((dist.expected_shortage(ip) - dist.expected_shortage(ip + q)).sum())


@pytest.mark.parametrize("seed", range(6))
def test_the_most_valuable_packs_are_kept_within_1_percent_of_the_milp(seed):
    rng = np.random.default_rng(seed)
    n = 12
    batch = [restock(f"r{i}", sku=f"s{i}", mean=float(rng.gamma(2, 15)),
                     sd=float(rng.uniform(3, 15)), position=float(rng.uniform(0, 20)),
                     pack=int(rng.choice([1, 4, 6])), unit_cost=float(rng.uniform(1, 10)),
                     supplier=["acme", "globex"][i % 2], location=["berlin", "paris"][i % 3 > 0])
             for i in range(n)]  # fmt: skip
    full = {s: sum(r.quantity * r.unit_cost for r in batch if r.supplier == s)
            for s in ("acme", "globex")}
    limits = CycleConstraints(
        supplier_budgets={s: v * rng.uniform(0.3, 0.8) for s, v in full.items()},
        location_capacity_units={"berlin": 1e9, "paris": sum(r.quantity for r in batch) * 0.3})
    decision = allocate_cycle(batch, limits, {}, NOW)
    got = quantities(decision)
    # The same instance, solved exactly (the epsilon on wanted packs is negligible here).
    pack = np.array([r.case_pack for r in batch])
    dist = DemandDistribution.from_quantiles(LEVELS, [r.demand_quantiles for r in batch])
    problem = AllocationProblem(
        gains=pack_gains(dist, [r.inventory_position for r in batch], pack,
                         [r.quantity // r.case_pack for r in batch]),
        pack_cost=pack * np.array([r.unit_cost for r in batch]), pack_volume=pack,
        supplier=[r.supplier == "globex" for r in batch],
        budget=[limits.budget("acme"), limits.budget("globex")], supplier_moq=[0.0, 0.0],
        capacity=[1e9, limits.capacity("paris")], room=[r.location == "paris" for r in batch])
    assert expected_units_served(batch, got) >= 0.99 * milp_optimum(problem) - 1e-6
    spend = spend_by_supplier(decision)
    assert all(spend.get(s, 0) <= limits.budget(s) + 1e-6 for s in full)
    paris = sum(q for rid, q in got.items() if rid in {r.restock_id for r in batch
                                                        if r.location == "paris"})
    assert paris <= limits.capacity("paris") + 1e-9


def test_what_earlier_batches_used_counts_against_the_cycle():
    batch = [restock(f"r{i}", sku=f"s{i}", unit_cost=2.0) for i in range(4)]
    budget = sum(r.quantity for r in batch) * 2.0
    limits = CycleConstraints(supplier_budgets={"acme": budget},
                              location_capacity_units={"berlin": 10_000})
    assert allocate_cycle(batch, limits, {}, NOW).cuts == []
    used = {(DAY, SPEND, "acme"): budget - 30.0}
    decision = allocate_cycle(batch, limits, used, NOW)
    assert spend_by_supplier(decision).get("acme", 0.0) <= 30.0
    # Another day's spend is another cycle's.
    assert allocate_cycle(batch, limits, {(DAY - timedelta(days=1), SPEND, "acme"): budget},
                          NOW).cuts == []  # fmt: skip
    full_room = {(DAY, UNITS, "berlin"): 10_000.0}
    gone = allocate_cycle(batch, limits, full_room, NOW)
    assert gone.plans == [] and {c.reason for c in gone.cuts} == {"capacity"}
    assert all(c.allocated == 0 for c in gone.cuts)


def test_sku_moq_and_unknown_case_pack_are_all_or_nothing():
    big = restock("big", sku="a", mean=60, pack=6, moq=48, unit_cost=1.0)
    whole = restock("whole", sku="b", mean=30, pack=None, quantity=37, unit_cost=1.0)
    limits = CycleConstraints(supplier_budgets={"acme": 40.0})
    got = quantities(allocate_cycle([big, whole], limits, {}, NOW))
    assert got.get("big", 0) == 0 or got["big"] >= 48
    assert got.get("whole", 0) in (0, 37)


def test_money_a_sku_moq_frees_goes_to_the_other_restocks():
    # `big` cannot reach its MOQ of 48 units within 45: it gets 0, and `small` all it asked.
    big = restock("big", sku="a", mean=80, sd=5, pack=6, moq=48, quantity=60, unit_cost=1.0)
    small = restock("small", sku="b", mean=20, sd=8, pack=6, quantity=36, unit_cost=1.0)
    decision = allocate_cycle([big, small], CycleConstraints(supplier_budgets={"acme": 45.0}),
                              {}, NOW)  # fmt: skip
    assert quantities(decision) == {"small": 36}
    assert [(c.restock_id, c.allocated, c.reason) for c in decision.cuts] == [
        ("big", 0, "sku_moq")]


def test_huge_orders_are_cut_in_bounded_equal_steps():
    huge = restock("huge", mean=40_000, sd=5_000, pack=1, quantity=60_000, unit_cost=1.0)
    decision = allocate_cycle([huge], CycleConstraints(supplier_budgets={"acme": 30_000}),
                              {}, NOW)  # fmt: skip
    (cut,) = decision.cuts
    # 60,000 units in 256 steps at most: steps of 240 units (the smallest whole divisor).
    assert cut.allocated % 240 == 0 and 30_000 - 240 < cut.allocated <= 30_000


def test_supplier_minimum_order_value_is_met_or_nothing_is_ordered():
    small = [restock(f"r{i}", sku=f"s{i}", mean=5, sd=1, unit_cost=1.0) for i in range(3)]
    limits = CycleConstraints(supplier_min_order_values={"acme": 1_000.0})
    decision = allocate_cycle(small, limits, {}, NOW)
    assert decision.plans == [] and {c.reason for c in decision.cuts} == {"supplier_moq"}
    # Once the cycle's order to the supplier met its minimum, later batches add freely.
    later = allocate_cycle(small, limits, {(DAY, SPEND, "acme"): 1_200.0}, NOW)
    assert later.cuts == []


def test_wildcard_and_weekly_cycles():
    limits = CycleConstraints(supplier_budgets={"*": 10.0}, cycle="week")
    r = restock("r1", unit_cost=1.0)
    assert limits.budget("anyone") == 10.0 and limits.capacity("berlin") == float("inf")
    sunday = r.model_copy(update={"bucket": datetime(2025, 3, 2, tzinfo=UTC)})
    assert cycle_of(sunday, "week") == date(2025, 2, 24) == cycle_of(r, "week")
    assert cycle_of(sunday) == date(2025, 3, 2)
    assert usage_keys([r], limits) == [(date(2025, 2, 24), UNITS, "berlin"),
                                       (date(2025, 2, 24), SPEND, "acme")]


def test_limits_come_from_json_settings_and_typos_are_errors(monkeypatch):
    monkeypatch.setenv("SHELFCAST_SUPPLIER_BUDGETS", '{"acme": 5000, "*": 100}')
    monkeypatch.setenv("SHELFCAST_LOCATION_CAPACITY_UNITS", '{"berlin": 12000}')
    settings = Settings()
    assert settings.supplier_budgets == {"acme": 5000.0, "*": 100.0}
    assert settings.supplier_min_order_values == {}
    # A child process gets them back as JSON (settings_env), not as a Python repr.
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    assert Settings().supplier_budgets == settings.supplier_budgets
    monkeypatch.setenv("SHELFCAST_SUPPLIER_BUDGETS", "acme=5000")
    with pytest.raises(ValidationError, match="JSON object"):
        Settings()
    monkeypatch.setenv("SHELFCAST_SUPPLIER_BUDGETS", '{"acme": -1}')
    with pytest.raises(ValidationError, match="greater than or equal"):
        Settings()
