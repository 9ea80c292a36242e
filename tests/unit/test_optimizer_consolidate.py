"""Consolidation of restock events into per-(supplier, location) purchase plans."""

from datetime import UTC, datetime

from optimizer import consolidate, plan_id_for
from schemas import RestockEvent, deterministic_id

DECIDED = datetime(2025, 3, 1, 12, tzinfo=UTC)


def restock(rid: str, *, sku: str = "sku-1", location: str = "berlin", supplier: str = "acme",
            quantity: int = 10, unit_cost: float = 2.5) -> RestockEvent:  # fmt: skip
    return RestockEvent(
        restock_id=rid, sku=sku, location=location, supplier=supplier, quantity=quantity,
        reorder_point=30.0, order_up_to=55.0, inventory_position=12.0, on_hand=12, on_order=0,
        backorders=0, service_level=0.95, lead_time_days=7, review_days=1, unit_cost=unit_cost,
        reason="test", model_version="m1", bucket=datetime(2025, 3, 1, tzinfo=UTC),
        issued_at=datetime(2025, 3, 1, 1, tzinfo=UTC),
    )  # fmt: skip


def test_groups_by_supplier_and_location_with_totals():
    plans = consolidate(
        [
            restock("r1", sku="a", quantity=10, unit_cost=2.5),
            restock("r2", sku="b", quantity=4, unit_cost=1.25),
            restock("r3", sku="a", location="paris", quantity=7),
            restock("r4", sku="c", supplier="bolt", quantity=1, unit_cost=100.0),
        ],
        DECIDED,
    )
    by_key = {(p.supplier, p.location): p for p in plans}
    assert set(by_key) == {("acme", "berlin"), ("acme", "paris"), ("bolt", "berlin")}
    berlin = by_key["acme", "berlin"]
    assert [line.restock_id for line in berlin.lines] == ["r1", "r2"]
    assert berlin.total_units == 14 and berlin.total_cost == 30.0
    assert berlin.decided_at == DECIDED
    assert by_key["bolt", "berlin"].total_cost == 100.0


def test_duplicate_restock_ids_in_a_batch_give_one_line():
    plans = consolidate([restock("r1"), restock("r1"), restock("r2", sku="sku-2")], DECIDED)
    assert len(plans) == 1
    assert [line.restock_id for line in plans[0].lines] == ["r1", "r2"]
    assert plans[0].total_units == 20


def test_plan_id_is_deterministic_in_the_set_of_restocks():
    a = consolidate([restock("r1"), restock("r2", sku="b")], DECIDED)
    b = consolidate([restock("r2", sku="b"), restock("r1"), restock("r1")], datetime.now(UTC))
    assert a[0].plan_id == b[0].plan_id
    assert a[0].plan_id == deterministic_id("plan", "acme", "berlin", "r1", "r2")
    assert a[0].plan_id == plan_id_for("acme", "berlin", ["r2", "r1"])
    c = consolidate([restock("r1")], DECIDED)
    assert c[0].plan_id != a[0].plan_id
    other_site = consolidate([restock("r1", location="paris")], DECIDED)
    assert other_site[0].plan_id != c[0].plan_id


def test_output_order_is_deterministic():
    items = [restock(f"r{i}", sku=f"s{i % 3}", supplier=f"sup{i % 2}") for i in range(10)]
    assert consolidate(items, DECIDED) == consolidate(list(reversed(items)), DECIDED)


def test_empty_batch_gives_no_plans():
    assert consolidate([], DECIDED) == []
