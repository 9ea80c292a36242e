"""Per-cycle constraints on restock orders: supplier budgets, warehouse capacity, supplier MOQ.

The stream decides each SKU alone; here one batch of restock decisions is cut down, when money
or room is short, to the case packs that serve the most expected demand (optimizer.allocation).
A cycle is the UTC day (or ISO week) of a restock's bucket. What earlier batches of the same
cycle spent comes in as `CycleUsage` (read from PostgreSQL under a row lock by the store), so
budgets hold over the whole cycle, not only per batch; the supplier minimum order value holds
for the cycle's total order to that supplier (0 or at least the minimum).

Pure: restock events and numbers in, plans, cuts and usage out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal

import numpy as np

from optimizer.allocation import AllocationProblem, allocate, pack_gains
from optimizer.consolidate import consolidate
from optimizer.service_level import DemandDistribution
from schemas.events import PlanEvent, RestockEvent

__all__ = [
    "WILDCARD",
    "CycleConstraints",
    "CycleDecision",
    "CycleUsage",
    "LineCut",
    "UsageKey",
    "allocate_cycle",
    "cycle_of",
    "usage_keys",
]

# A key in a budget/MOQ/capacity map that applies to every supplier/location not named.
WILDCARD = "*"
# Local-search rounds per allocation (each round stops early when it finds nothing better): it
# runs inside the batch's transaction, so its work is bounded (see optimizer.allocation).
_MAX_MOVES = 5
# A restock is cut in at most this many steps (see _packs).
_MAX_STEPS = 256
# Every pack the policy asked for is worth a little even where the demand distribution says
# it serves nothing, so an unconstrained batch keeps exactly what the stream decided.
_WANTED_EPS = 1e-6

CycleKind = Literal["day", "week"]
# (cycle, "supplier_spend" | "location_units", supplier or location) -> amount used so far.
UsageKey = tuple[date, str, str]
CycleUsage = Mapping[UsageKey, float]
SPEND, UNITS = "supplier_spend", "location_units"


def cycle_of(restock: RestockEvent, kind: CycleKind = "day") -> date:
    """The budget cycle of a restock: its bucket's UTC day, or the Monday of its ISO week."""
    day = restock.bucket.astimezone(UTC).date()
    return day if kind == "day" else day - timedelta(days=day.weekday())


@dataclass(frozen=True)
class CycleConstraints:
    """Limits per cycle; a name missing from a map (and no `*` entry) is unconstrained.

    supplier_budgets: money per supplier per cycle. supplier_min_order_values: a supplier's
    cycle order is 0 or at least this much money. location_capacity_units: units a location
    can receive per cycle.
    """

    supplier_budgets: Mapping[str, float] = field(default_factory=dict)
    supplier_min_order_values: Mapping[str, float] = field(default_factory=dict)
    location_capacity_units: Mapping[str, float] = field(default_factory=dict)
    cycle: CycleKind = "day"

    @property
    def active(self) -> bool:
        return bool(self.supplier_budgets or self.supplier_min_order_values
                    or self.location_capacity_units)  # fmt: skip

    def budget(self, supplier: str) -> float:
        return _lookup(self.supplier_budgets, supplier, math.inf)

    def min_order_value(self, supplier: str) -> float:
        return _lookup(self.supplier_min_order_values, supplier, 0.0)

    def capacity(self, location: str) -> float:
        return _lookup(self.location_capacity_units, location, math.inf)

    def binds(self, restock: RestockEvent) -> bool:
        """Whether any limit applies to this restock (else it passes unchanged)."""
        return (math.isfinite(self.budget(restock.supplier))
                or self.min_order_value(restock.supplier) > 0
                or math.isfinite(self.capacity(restock.location)))  # fmt: skip


def _lookup(table: Mapping[str, float], name: str, default: float) -> float:
    value = table.get(name, table.get(WILDCARD))
    return default if value is None else float(value)


@dataclass(frozen=True)
class LineCut:
    """A restock the allocation cut: `allocated` < `requested` units (0 = no plan line)."""

    restock_id: str
    sku: str
    supplier: str
    location: str
    cycle: date
    requested: int
    allocated: int
    reason: str  # "budget", "capacity", "budget+capacity", "supplier_moq", "sku_moq", "value"


@dataclass(frozen=True)
class CycleDecision:
    """What one batch decided: its plans (allocated quantities), its cuts, and the spend and
    units its plan lines add to each cycle's usage."""

    plans: list[PlanEvent]
    cuts: list[LineCut]
    usage_added: dict[UsageKey, float]


def usage_keys(restocks: Sequence[RestockEvent], constraints: CycleConstraints) -> list[UsageKey]:
    """The usage rows a batch reads and may add to, sorted (the lock order)."""
    keys: set[UsageKey] = set()
    for r in restocks:
        cycle = cycle_of(r, constraints.cycle)
        keys.add((cycle, SPEND, r.supplier))
        keys.add((cycle, UNITS, r.location))
    return sorted(keys)


def allocate_cycle(restocks: Sequence[RestockEvent], constraints: CycleConstraints,
                   used: CycleUsage, decided_at: datetime) -> CycleDecision:  # fmt: skip
    """Cut `restocks` (not yet decided, distinct ids) to what each cycle's limits allow.

    Restocks no limit applies to pass unchanged. The others are allocated per cycle, whole
    case packs only (a restock without `case_pack` is one pack: all or nothing), packs valued
    by expected units served under the restock's demand distribution (one unit per unit
    without one); a restock the cut would leave below its SKU's MOQ is dropped to 0 and the
    cycle allocated again without it. Supplier minimum order values hold (allocate).
    """
    unique = list({r.restock_id: r for r in restocks}.values())
    quantity = {r.restock_id: r.quantity for r in unique}
    cuts: list[LineCut] = []
    by_cycle: dict[date, list[RestockEvent]] = {}
    for r in unique:
        if constraints.binds(r):
            by_cycle.setdefault(cycle_of(r, constraints.cycle), []).append(r)
    for cycle, group in sorted(by_cycle.items()):
        allocated, reasons = _allocate_group(group, cycle, constraints, used)
        for r, units in zip(group, allocated, strict=True):
            if units < r.quantity:
                quantity[r.restock_id] = units
                cuts.append(LineCut(restock_id=r.restock_id, sku=r.sku, supplier=r.supplier,
                                    location=r.location, cycle=cycle, requested=r.quantity,
                                    allocated=units, reason=reasons[r.restock_id]))  # fmt: skip
    kept = [r if quantity[r.restock_id] == r.quantity
            else r.model_copy(update={"quantity": quantity[r.restock_id]})
            for r in unique if quantity[r.restock_id] > 0]  # fmt: skip
    added: dict[UsageKey, float] = {}
    for r in kept:
        cycle = cycle_of(r, constraints.cycle)
        spend_key, units_key = (cycle, SPEND, r.supplier), (cycle, UNITS, r.location)
        added[spend_key] = added.get(spend_key, 0.0) + r.quantity * r.unit_cost
        added[units_key] = added.get(units_key, 0.0) + r.quantity
    cuts.sort(key=lambda c: c.restock_id)
    return CycleDecision(plans=consolidate(kept, decided_at), cuts=cuts, usage_added=added)


def _packs(r: RestockEvent) -> tuple[int, int]:
    """(units per step, steps requested) of a restock's cut: whole case packs, or several
    packs per step when it asks for more than _MAX_STEPS packs (the allocation's work grows
    with the steps); a quantity that is not whole packs is one step."""
    pack = r.case_pack or r.quantity
    if r.quantity % pack:
        pack = r.quantity
    packs = r.quantity // pack
    group = math.ceil(packs / _MAX_STEPS)
    while packs % group:  # the smallest whole divisor: every step the same size
        group += 1
    return pack * group, packs // group


def _gains(group: Sequence[RestockEvent], pack: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """(n, J) expected units served by each restock's j-th pack, plus a tie-breaking epsilon
    on every wanted pack; restocks without a distribution serve one unit per unit."""
    j_max = int(wanted.max())
    gains = np.zeros((len(group), j_max))
    with_dist: dict[tuple[float, ...], list[tuple[int, list[float]]]] = {}
    for i, r in enumerate(group):
        if r.demand_levels is not None and r.demand_quantiles is not None:
            with_dist.setdefault(tuple(r.demand_levels), []).append((i, r.demand_quantiles))
        else:
            gains[i, : wanted[i]] = pack[i]
    for levels, members in with_dist.items():
        rows = [i for i, _ in members]
        idx = np.asarray(rows)
        dist = DemandDistribution.from_quantiles(levels, [q for _, q in members])
        position = [group[i].inventory_position for i in rows]
        block = pack_gains(dist, position, pack[idx], wanted[idx])
        gains[idx, : block.shape[1]] = block
    gains += _WANTED_EPS * (np.arange(j_max)[None, :] < wanted[:, None])
    return gains


def _allocate_group(group: Sequence[RestockEvent], cycle: date, constraints: CycleConstraints,
                    used: CycleUsage) -> tuple[list[int], dict[str, str]]:  # fmt: skip
    """Allocated units per restock of one cycle, and the reason of each cut."""
    suppliers = sorted({r.supplier for r in group})
    locations = sorted({r.location for r in group})
    sup_index = {s: k for k, s in enumerate(suppliers)}
    loc_index = {loc: k for k, loc in enumerate(locations)}
    packs = [_packs(r) for r in group]
    pack = np.array([p for p, _ in packs], dtype=np.int64)
    wanted = np.array([w for _, w in packs], dtype=np.int64)
    unit_cost = np.array([r.unit_cost for r in group])
    spent = np.array([used.get((cycle, SPEND, s), 0.0) for s in suppliers])
    budget = np.array([max(constraints.budget(s) - spent[k], 0.0)
                       for k, s in enumerate(suppliers)])  # fmt: skip
    # The minimum holds for the cycle's total: once a supplier is ordered from, it is met.
    moq = np.array([constraints.min_order_value(s) if spent[k] <= 0 else 0.0
                    for k, s in enumerate(suppliers)])  # fmt: skip
    capacity = np.array([max(constraints.capacity(loc) - used.get((cycle, UNITS, loc), 0.0), 0.0)
                         for loc in locations])  # fmt: skip
    gains = _gains(group, pack, wanted)
    min_packs = np.minimum(wanted, [max(1, math.ceil((r.moq or 0) / p))
                                    for r, p in zip(group, pack, strict=True)])  # fmt: skip
    excluded = np.zeros(len(group), dtype=bool)
    while True:
        # A line the SKU's MOQ forbids goes to 0 and the rest is allocated again without it,
        # so the money and room it would have used go to others.
        problem = AllocationProblem(
            gains=np.where(excluded[:, None], 0.0, gains), pack_cost=pack * unit_cost,
            pack_volume=pack.astype(np.float64),
            supplier=np.array([sup_index[r.supplier] for r in group]), budget=budget,
            supplier_moq=moq, capacity=capacity,
            room=np.array([loc_index[r.location] for r in group]))  # fmt: skip
        got = np.minimum(allocate(problem, max_moves=_MAX_MOVES).packs, wanted)
        below = (got > 0) & (got < min_packs)
        if not below.any():
            break
        excluded |= below
    reasons = {group[i].restock_id: "sku_moq" for i in np.nonzero(excluded)[0].tolist()}
    spend = np.bincount(problem.supplier, weights=got * problem.pack_cost,
                        minlength=len(suppliers))  # fmt: skip
    short = (spend > 0) & (spend < moq - 1e-9)
    if short.any():  # never after allocate (it keeps MOQs); kept as the contract's guard
        got[short[problem.supplier]] = 0
        spend[short] = 0.0
    room_used = np.bincount(problem.rooms, weights=got * problem.pack_volume,
                            minlength=len(locations))  # fmt: skip
    for i, r in enumerate(group):
        if got[i] >= wanted[i] or r.restock_id in reasons:
            continue
        k, room = int(problem.supplier[i]), int(problem.rooms[i])
        if spend[k] <= 0 and moq[k] > 0:
            reasons[r.restock_id] = "supplier_moq"
            continue
        bound = []
        if budget[k] - spend[k] < problem.pack_cost[i] - 1e-9:
            bound.append("budget")
        if capacity[room] - room_used[room] < problem.pack_volume[i] - 1e-9:
            bound.append("capacity")
        reasons[r.restock_id] = "+".join(bound) or "value"
    return [int(g * p) for g, p in zip(got, pack, strict=True)], reasons
