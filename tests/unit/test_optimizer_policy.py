"""Inventory policy math: position, (s, S) quantities with case pack and MOQ, validation."""

import numpy as np
import pytest

from optimizer import PolicyInputError, decide_restock, inventory_position, order_quantity


def test_inventory_position_is_on_hand_plus_on_order_minus_backorders():
    assert inventory_position(10, 4, 2) == 12
    assert inventory_position(0, 0, 5) == -5
    got = inventory_position(np.array([10, 0]), np.array([4, 0]), np.array([2, 5]))
    np.testing.assert_array_equal(got, [12.0, -5.0])


@pytest.mark.parametrize("field", ["on_order", "backorders"])
def test_inventory_position_refuses_negative_on_order_or_backorders(field):
    args = {"on_hand": 1, "on_order": 1, "backorders": 1, field: -1}
    with pytest.raises(PolicyInputError) as info:
        inventory_position(**args)
    assert info.value.field == field


def test_orders_up_to_level_when_at_or_below_reorder_point():
    assert order_quantity(12, 30.5, 55.0, 1, 1) == 43
    assert order_quantity(30.5, 30.5, 55.0, 1, 1) == 25  # "at" the reorder point orders


def test_no_order_above_reorder_point():
    assert order_quantity(31, 30.5, 55.0, 12, 24) == 0
    assert order_quantity(1000, 30.5, 55.0, 1, 0) == 0


def test_rounds_up_to_whole_case_packs():
    assert order_quantity(12, 30.5, 55.0, 12, 1) == 48  # need 43 -> 4 packs of 12
    assert order_quantity(7, 30.0, 55.0, 12, 1) == 48  # need exactly 48: no extra pack


def test_float_noise_does_not_buy_an_extra_pack():
    assert order_quantity(55.0 - 48.000000000001, 30.0, 55.0, 12, 1) == 48


def test_at_least_moq_and_moq_rounded_to_case_pack():
    assert order_quantity(28, 30.0, 33.0, 1, 10) == 10  # need 5, MOQ 10
    assert order_quantity(28, 30.0, 33.0, 6, 10) == 12  # MOQ 10 -> 2 packs of 6
    assert order_quantity(28, 30.0, 33.0, 6, 0) == 6  # no MOQ: one pack covers need 5


def test_negative_inventory_position_orders_the_backlog_too():
    assert order_quantity(-20, 5.0, 30.0, 5, 1) == 50


def test_scalar_in_gives_python_int():
    assert type(order_quantity(12, 30.5, 55.0, 12, 24)) is int


def test_vectorised_equals_scalar():
    rng = np.random.default_rng(7)
    n = 500
    ip = rng.integers(-50, 200, n).astype(float)
    rp = rng.uniform(0, 100, n)
    up = rp + rng.uniform(0, 100, n)
    cp = rng.integers(1, 25, n)
    moq = rng.integers(0, 60, n)
    vec = order_quantity(ip, rp, up, cp, moq)
    assert vec.dtype == np.int64 and vec.shape == (n,)
    scalar = [
        order_quantity(float(a), float(b), float(c), int(d), int(e))
        for a, b, c, d, e in zip(ip, rp, up, cp, moq, strict=True)
    ]
    np.testing.assert_array_equal(vec, scalar)
    assert np.all(vec % cp == 0)
    assert np.all((vec == 0) == (ip > rp))


def test_arrays_broadcast_against_scalar_policy():
    got = order_quantity(np.array([12, 30.5, 31, -5]), 30.5, 55.0, 12, 24)
    np.testing.assert_array_equal(got, [48, 36, 0, 60])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"case_pack": 0}, "case_pack"),
        ({"case_pack": 2.5}, "case_pack"),
        ({"moq": -1}, "moq"),
        ({"moq": 1.5}, "moq"),
        ({"reorder_point": float("nan")}, "reorder_point"),
        ({"order_up_to": float("inf")}, "order_up_to"),
        ({"order_up_to": 10.0}, "order_up_to"),  # below the reorder point 30
        ({"inventory_position": np.array([1.0, np.nan])}, "inventory_position"),
        ({"case_pack": np.array([1, 0, 3])}, "case_pack"),
    ],
)
def test_invalid_inputs_raise_typed_error_naming_the_field(kwargs, field):
    args = {
        "inventory_position": 5.0, "reorder_point": 30.0, "order_up_to": 50.0,
        "case_pack": 1, "moq": 1, **kwargs,
    }  # fmt: skip
    with pytest.raises(PolicyInputError) as info:
        order_quantity(**args)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)  # callers catching ValueError still work


def test_decide_restock_orders_with_readable_reason():
    d = decide_restock(
        reorder_point=30.5, order_up_to=55.0, on_hand=10, on_order=4, backorders=2,
        case_pack=12, moq=24,
    )  # fmt: skip
    assert d.inventory_position == 12 and d.quantity == 48 and d.should_order
    assert d.reason.startswith("inventory position 12 <= reorder point 30.5; order up to 55.0")
    assert "case pack 12" in d.reason and "MOQ 24" in d.reason


def test_decide_restock_no_order_above_reorder_point():
    d = decide_restock(
        reorder_point=30.5, order_up_to=55.0, on_hand=40, on_order=0, backorders=0,
        case_pack=12, moq=24,
    )  # fmt: skip
    assert d.quantity == 0 and not d.should_order
    assert d.reason == "inventory position 40 > reorder point 30.5; no order"


def test_decide_restock_validates():
    with pytest.raises(PolicyInputError):
        decide_restock(
            reorder_point=30.5, order_up_to=55.0, on_hand=1, on_order=0, backorders=0,
            case_pack=0, moq=1,
        )  # fmt: skip
