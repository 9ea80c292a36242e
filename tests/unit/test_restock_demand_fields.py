"""The stream's restock events carry what the optimizer needs to cut them: case pack, MOQ and
the demand distribution over lead time + review the quantity came from."""

import numpy as np

from optimizer.service_level import DemandDistribution
from schemas import RestockEvent, decode, encode
from tests.unit.test_streams_batching import run_in_batches, stream


def test_restocks_carry_a_valid_demand_distribution_consistent_with_their_levels():
    restocks = run_in_batches(stream(), 500, {}).restocks
    assert restocks
    for r in restocks:
        again = decode(RestockEvent, encode(r))  # what the optimizer sees: fully validated
        assert again == r
        assert r.demand_levels is not None and r.demand_quantiles is not None
        assert r.quantity % r.case_pack == 0 and r.quantity >= r.moq
        # The order-up-to level is the distribution's quantile at the SKU's service level.
        at_level = np.interp(r.service_level, r.demand_levels, r.demand_quantiles)
        assert abs(at_level - r.order_up_to) <= 1e-3 * max(1.0, r.order_up_to)
        DemandDistribution.from_quantiles(r.demand_levels, [r.demand_quantiles])
    catalogued = [r for r in restocks if r.sku == "S1"]
    assert catalogued and all((r.case_pack, r.moq) == (6, 12) for r in catalogued)
