"""Inventory policy math: inventory position and (s, S) order quantities with case pack and MOQ.

Pure functions over numbers and numpy arrays: the one place inventory position is computed,
the order quantity and its reason in words. The periodic review (`optimizer.review`) derives
the levels from forecasts and calls these. Nothing here knows about Kafka records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import overload

import numpy as np
import numpy.typing as npt

from optimizer.errors import PolicyInputError

__all__ = [
    "RestockDecision",
    "decide_restock",
    "inventory_position",
    "order_quantity",
    "restock_reason",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

# Float noise (e.g. 55.0 - 11.9999999999) must not buy a whole extra case pack.
_PACK_EPS = 1e-9


def _first_bad(values: npt.NDArray[np.generic], bad: npt.NDArray[np.bool_]) -> object:
    return np.broadcast_to(values, bad.shape)[bad].flat[0].item()


def _require(ok: npt.NDArray[np.bool_] | np.bool_, values: npt.NDArray[np.generic], *,
             field: str, message: str) -> None:  # fmt: skip
    bad = ~np.asarray(ok)
    if bad.any():
        raise PolicyInputError(message, field=field, value=_first_bad(values, bad))


@overload
def inventory_position(on_hand: int, on_order: int, backorders: int) -> int: ...
@overload
def inventory_position(on_hand: float, on_order: float, backorders: float) -> float: ...
@overload
def inventory_position(
    on_hand: npt.ArrayLike, on_order: npt.ArrayLike, backorders: npt.ArrayLike
) -> FloatArray: ...
def inventory_position(
    on_hand: npt.ArrayLike, on_order: npt.ArrayLike, backorders: npt.ArrayLike
) -> int | float | FloatArray:
    """Units on hand + on order - backordered; scalars in give a scalar, arrays broadcast."""
    if (
        isinstance(on_hand, int | float)
        and isinstance(on_order, int | float)
        and isinstance(backorders, int | float)
    ):
        for name, value in (("on_order", on_order), ("backorders", backorders)):
            if not value >= 0:  # also refuses NaN
                raise PolicyInputError("must be >= 0", field=name, value=value)
        return on_hand + on_order - backorders
    oh, oo, bo = (np.asarray(v, dtype=np.float64) for v in (on_hand, on_order, backorders))
    _require(oo >= 0, oo, field="on_order", message="must be >= 0")
    _require(bo >= 0, bo, field="backorders", message="must be >= 0")
    return oh + oo - bo


@overload
def order_quantity(
    inventory_position: float, reorder_point: float, order_up_to: float, case_pack: int, moq: int
) -> int: ...
@overload
def order_quantity(
    inventory_position: npt.ArrayLike,
    reorder_point: npt.ArrayLike,
    order_up_to: npt.ArrayLike,
    case_pack: npt.ArrayLike,
    moq: npt.ArrayLike,
) -> IntArray: ...
def order_quantity(
    inventory_position: npt.ArrayLike,
    reorder_point: npt.ArrayLike,
    order_up_to: npt.ArrayLike,
    case_pack: npt.ArrayLike,
    moq: npt.ArrayLike,
) -> int | IntArray:
    """Units to order under an (s, S) policy, rounded up to whole case packs.

    When the inventory position is at or below the reorder point, order up to `order_up_to`,
    rounded UP to a multiple of `case_pack` and at least `moq` (itself rounded up to a case
    pack); otherwise 0. Scalars in give an int; any array in broadcasts and gives an int64 array.
    Raises PolicyInputError for non-finite levels, order_up_to < reorder_point, case_pack < 1
    or non-integral, moq < 0 or non-integral.
    """
    ip, rp, up = (
        np.asarray(v, dtype=np.float64) for v in (inventory_position, reorder_point, order_up_to)
    )
    cp, mq = (np.asarray(v, dtype=np.float64) for v in (case_pack, moq))
    for name, arr in (
        ("inventory_position", ip), ("reorder_point", rp), ("order_up_to", up),
        ("case_pack", cp), ("moq", mq),
    ):  # fmt: skip
        _require(np.isfinite(arr), arr, field=name, message="must be a finite number")
    _require(cp >= 1, cp, field="case_pack", message="must be >= 1")
    _require(cp == np.floor(cp), cp, field="case_pack", message="must be a whole number")
    _require(mq >= 0, mq, field="moq", message="must be >= 0")
    _require(mq == np.floor(mq), mq, field="moq", message="must be a whole number")
    _require(up >= rp, up, field="order_up_to", message="must be >= reorder_point")

    packs_needed = np.ceil(np.maximum(up - ip, 0.0) / cp - _PACK_EPS)
    packs_min = np.ceil(mq / cp)
    quantity = np.where(ip <= rp, np.maximum(packs_needed, packs_min) * cp, 0.0).astype(np.int64)
    if quantity.ndim == 0:
        return int(quantity)
    return quantity


@dataclass(frozen=True)
class RestockDecision:
    """The outcome of one (s, S) review: the levels used, the position seen, what to order."""

    reorder_point: float
    order_up_to: float
    inventory_position: float
    quantity: int
    reason: str

    @property
    def should_order(self) -> bool:
        return self.quantity > 0


def _fmt(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(round(float(value), 2))


def restock_reason(
    *,
    position: float,
    reorder_point: float,
    order_up_to: float,
    case_pack: int,
    moq: int,
    quantity: int,
    averaged_over: int = 1,
) -> str:
    """Why a review orders `quantity`, in words; an int position prints as one.

    Example: "inventory position 12 <= reorder point 30.5; order up to 55.0
    (need 43, case pack 12, MOQ 24 -> 48)". `averaged_over` > 1: the level is the mean of
    that many reviews' levels (`optimizer.level_rule`), and the reason says so: "... order up
    to 55.0 (mean of the last 8 reviews' levels; need 43, ...)".
    """
    ip, rp, up = _fmt(position), _fmt(reorder_point), _fmt(order_up_to)
    mean = f"mean of the last {averaged_over} reviews' levels" if averaged_over > 1 else ""
    if position <= reorder_point:
        need = max(math.ceil(order_up_to - position - _PACK_EPS), 0)
        return (
            f"inventory position {ip} <= reorder point {rp}; order up to {up} "
            f"({mean}{'; ' if mean else ''}need {need}, case pack {case_pack}, MOQ {moq} "
            f"-> {quantity})"
        )
    return f"inventory position {ip} > reorder point {rp}{f' ({mean})' if mean else ''}; no order"


def decide_restock(
    *,
    reorder_point: float,
    order_up_to: float,
    on_hand: int,
    on_order: int,
    backorders: int,
    case_pack: int,
    moq: int,
) -> RestockDecision:
    """Review one SKU: compute its inventory position and order quantity, with a readable reason.

    The scalar form of `optimizer.review.review` (which reviews many SKUs as arrays).
    """
    position = inventory_position(on_hand, on_order, backorders)
    quantity = order_quantity(position, reorder_point, order_up_to, case_pack, moq)
    return RestockDecision(
        reorder_point=float(reorder_point),
        order_up_to=float(order_up_to),
        inventory_position=float(position),
        quantity=quantity,
        reason=restock_reason(
            position=position, reorder_point=reorder_point, order_up_to=order_up_to,
            case_pack=case_pack, moq=moq, quantity=quantity,
        ),
    )
