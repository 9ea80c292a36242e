"""Event factories the tests share (one RestockEvent builder, not one per test file)."""

from datetime import UTC, datetime
from typing import Any

import numpy as np

from schemas import RestockEvent

# quantile levels of a restock's demand distribution, and their standard normal scores
DEMAND_LEVELS = [0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95]
_Z = np.array([-1.645, -1.2816, -0.6745, 0.0, 0.6745, 1.2816, 1.645])


def make_restock(rid: str, *, sku: str = "sku-1", location: str = "berlin",
                 supplier: str = "acme", quantity: int = 10,
                 unit_cost: float = 2.5) -> RestockEvent:
    """A valid restock decision with fixed policy figures; only what tests vary is a knob."""
    return RestockEvent(
        restock_id=rid, sku=sku, location=location, supplier=supplier, quantity=quantity,
        reorder_point=30.0, order_up_to=55.0, inventory_position=12.0, on_hand=12, on_order=0,
        backorders=0, service_level=0.95, lead_time_days=7, review_days=1, unit_cost=unit_cost,
        reason="test", model_version="m1", bucket=datetime(2025, 3, 1, tzinfo=UTC),
        issued_at=datetime(2025, 3, 1, 1, tzinfo=UTC),
    )


def restock_with_demand(rid: str, *, mean: float = 40.0, sd: float = 12.0,
                        position: float = 0.0, pack: int | None = 6, moq: int | None = None,
                        quantity: int | None = None, **kw: Any) -> RestockEvent:
    """A restock whose demand over lead time + review is ~Normal(mean, sd), ordering up to
    its 95% quantile in whole packs."""
    quantiles = np.maximum(mean + sd * _Z, 0.0).round(4).tolist()
    if quantity is None:
        step = pack or 1
        quantity = int(np.ceil(max(quantiles[-1] - position, 1) / step) * step)
    base = make_restock(rid, quantity=quantity, **kw)
    return base.model_copy(update={
        "case_pack": pack, "moq": moq, "demand_levels": DEMAND_LEVELS if pack else None,
        "demand_quantiles": quantiles if pack else None, "inventory_position": position,
        "on_hand": int(position)})
