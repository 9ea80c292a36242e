"""Consolidation of restock events into per-(supplier, location) purchase plans."""

from datetime import UTC, datetime

from optimizer import consolidate, plan_id_for
from schemas import deterministic_id
from tests.factories import make_restock

DECIDED = datetime(2025, 3, 1, 12, tzinfo=UTC)


restock = make_restock


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
