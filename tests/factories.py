"""Event factories the tests share (one RestockEvent builder, not one per test file)."""

from datetime import UTC, datetime

from schemas import RestockEvent


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
