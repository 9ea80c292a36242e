"""Cross-SKU allocation: greedy + MOQ repair against an exact MILP (scipy HiGHS)."""

import numpy as np
import pytest

from optimizer import PolicyInputError
from optimizer.allocation import AllocationProblem, allocate, pack_gains
from optimizer.service_level import DemandDistribution

scipy_optimize = pytest.importorskip("scipy.optimize")

from tests.support.milp import milp_optimum  # noqa: E402  (after the skip: it needs scipy)


def random_problem(rng: np.random.Generator, *, n: int, suppliers: int) -> AllocationProblem:
    mean = rng.gamma(2.0, 15.0, n)
    dist = DemandDistribution.normal(mean, mean * rng.uniform(0.3, 1.0, n))
    pack = rng.choice([1, 4, 6, 12], n)
    position = mean * rng.uniform(0.0, 0.8, n)
    want = np.ceil((mean * 1.6 - position) / pack).clip(1, 8).astype(int)
    gains = pack_gains(dist, position, pack, want)
    unit_cost = rng.uniform(1.0, 20.0, n)
    supplier = rng.integers(0, suppliers, n)
    full = np.bincount(supplier, weights=want * pack * unit_cost, minlength=suppliers)
    budget = full * rng.uniform(0.3, 0.9, suppliers)
    # MOQs up to a third of the budget. A MOQ close to the budget turns opening a supplier
    # into a subset-sum problem the greedy does not solve (see optimizer.allocation).
    return AllocationProblem(
        gains=gains, pack_cost=pack * unit_cost, pack_volume=pack * rng.uniform(0.5, 2.0, n),
        supplier=supplier, budget=budget, supplier_moq=budget * rng.uniform(0.05, 0.33, suppliers),
        capacity=float((want * pack).sum() * rng.uniform(0.4, 1.2)),
    )


@pytest.mark.parametrize("seed", range(20))
def test_allocation_is_feasible_and_within_1_percent_of_the_milp_optimum(seed):
    rng = np.random.default_rng(seed)
    problem = random_problem(rng, n=int(rng.integers(10, 21)), suppliers=int(rng.integers(1, 4)))
    got = allocate(problem)
    assert got.feasible(problem)
    best = milp_optimum(problem)
    assert got.value >= 0.99 * best - 1e-9, (got.value, best)


@pytest.mark.parametrize("seed", range(10))
def test_capacity_per_warehouse_is_kept_and_within_1_percent_of_the_milp(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(10, 19))
    base = random_problem(rng, n=n, suppliers=int(rng.integers(1, 3)))
    room = rng.integers(0, 2, n)
    used = np.bincount(room, weights=base.pack_volume * (base.gains > 0).sum(axis=1),
                       minlength=2)  # fmt: skip
    problem = AllocationProblem(
        gains=base.gains, pack_cost=base.pack_cost, pack_volume=base.pack_volume,
        supplier=base.supplier, budget=base.budget * 2, supplier_moq=base.supplier_moq,
        capacity=used * rng.uniform(0.3, 0.8, 2), room=room)
    got = allocate(problem)
    assert got.feasible(problem)
    assert np.all(got.volume <= problem.capacity + 1e-6)
    assert got.value >= 0.99 * milp_optimum(problem) - 1e-9


def test_room_index_must_name_a_capacity():
    with pytest.raises(PolicyInputError, match="room"):
        AllocationProblem(gains=np.ones((2, 1)), pack_cost=[1.0, 1.0], pack_volume=[1.0, 1.0],
                          supplier=[0, 0], budget=[np.inf], supplier_moq=[0.0],
                          capacity=[5.0], room=[0, 1])


def test_unconstrained_allocation_buys_everything_wanted():
    dist = DemandDistribution.normal([50.0, 20.0], [10.0, 5.0])
    gains = pack_gains(dist, [0.0, 0.0], [6, 12], [10, 3])
    problem = AllocationProblem(gains=gains, pack_cost=[6.0, 24.0], pack_volume=[1.0, 1.0],
                                supplier=[0, 0], budget=[np.inf], supplier_moq=[0.0])
    got = allocate(problem)
    # Every pack with positive value is bought, none beyond max_packs.
    np.testing.assert_array_equal(got.packs, (gains > 0).sum(axis=1))


def test_supplier_below_its_moq_is_dropped_or_topped_up():
    gains = np.array([[5.0, 1.0], [4.0, 0.0], [3.0, 0.0]])
    problem = AllocationProblem(gains=gains, pack_cost=[10.0, 10.0, 10.0],
                                pack_volume=[1.0, 1.0, 1.0], supplier=[0, 1, 1],
                                budget=[100.0, 100.0], supplier_moq=[0.0, 50.0])  # fmt: skip
    got = allocate(problem)
    assert got.feasible(problem)
    # Supplier 1 cannot reach 50 with its 2 SKUs' wanted packs (20 in all), and packs nobody
    # wants are never bought to make up the difference: it is dropped.
    assert got.spend[1] == 0
    assert np.all(got.packs <= (gains > 0).sum(axis=1))


def test_gains_are_expected_units_served_per_pack():
    dist = DemandDistribution(np.array([[0.0, 10.0, 20.0]]), np.array([[0.5, 0.3, 0.2]]))
    gains = pack_gains(dist, [0.0], [5], [5])
    # E[min(D, x)] at x = 5, 10, 15, 20, 25: 2.5, 5, 6, 7, 7
    np.testing.assert_allclose(gains[0], [2.5, 2.5, 1.0, 1.0, 0.0])
    with pytest.raises(PolicyInputError):
        AllocationProblem(gains=np.array([[1.0, 2.0]]), pack_cost=[1.0], pack_volume=[1.0],
                          supplier=[0], budget=[1.0], supplier_moq=[0.0])
