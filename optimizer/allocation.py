"""Cross-SKU allocation: which case packs to buy under supplier budgets, capacity and supplier MOQ.

The policy says what each SKU would like (`max_packs`); when a cycle's money or warehouse room
is short, `allocate` picks the packs that serve the most expected demand per unit of the scarce
resources. Each pack's value is its expected units served, from the SKU's demand distribution
over the protection interval: the j-th pack on top of inventory position x adds
E[(D - x - (j-1) p)^+] - E[(D - x - j p)^+] units (non-increasing in j, so greedy by ratio
takes packs in order). Supplier MOQ (a minimum order value when a supplier is ordered from at
all) is repaired after the greedy pass by topping the supplier up (with wanted packs only: a
pack of gain 0 is never bought) or dropping it, whichever serves more. Warehouse room may be
one pool or one per location (`room`). Pure numpy; tests compare it with an exact MILP (scipy
HiGHS) on small instances.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from optimizer.errors import PolicyInputError
from optimizer.service_level import DemandDistribution

__all__ = ["Allocation", "AllocationProblem", "allocate", "pack_gains"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_EPS = 1e-9
# Up to 2**6 open/closed choices of MOQ suppliers are tried exactly; beyond, repair decides.
_ENUMERATE_MOQ_SUPPLIERS = 6
# Local search also gives back pairs of packs when at most this many SKUs hold packs, and
# holders^2 x wanted packs (the work of one round of pair moves) stays under _PAIR_WORK.
_PAIR_MOVES_UP_TO = 40
_PAIR_WORK = 60_000
# Local search runs only when at most this many packs are wanted in all: each move re-runs the
# greedy over them, so its cost grows like holders^2 x packs. Above, greedy by ratio plus MOQ
# repair is the answer: its loss is about one pack per binding limit, small next to many packs.
_IMPROVE_UP_TO_PACKS = 400


def pack_gains(demand: DemandDistribution, inventory_position: npt.ArrayLike,
               case_pack: npt.ArrayLike, max_packs: npt.ArrayLike) -> FloatArray:  # fmt: skip
    """(n, J) expected extra units served by each SKU's 1st..J-th pack, J = max(max_packs);
    packs beyond a SKU's max_packs gain 0 (they are never bought)."""
    ip = np.broadcast_to(np.asarray(inventory_position, dtype=np.float64), (demand.n_skus,))
    pack = np.broadcast_to(np.asarray(case_pack, dtype=np.float64), (demand.n_skus,))
    cap = np.broadcast_to(np.asarray(max_packs, dtype=np.int64), (demand.n_skus,))
    if np.any(pack < 1) or np.any(cap < 0):
        raise PolicyInputError("case_pack must be >= 1 and max_packs >= 0", field="max_packs",
                               value=(pack.min(), cap.min()))  # fmt: skip
    j_max = int(cap.max()) if cap.size else 0
    levels = ip[:, None] + pack[:, None] * np.arange(j_max + 1)[None, :]
    short = np.stack([demand.expected_shortage(levels[:, j]) for j in range(j_max + 1)], axis=1)
    gains = np.maximum(short[:, :-1] - short[:, 1:], 0.0)
    gains[np.arange(j_max)[None, :] >= cap[:, None]] = 0.0
    return np.asarray(gains, dtype=np.float64)


@dataclass(frozen=True)
class AllocationProblem:
    """One cycle's purchase decision.

    gains: (n, J) value of each SKU's j-th pack (non-increasing in j; 0 = not wanted).
    pack_cost: (n,) money per pack; pack_volume: (n,) warehouse room per pack.
    supplier: (n,) index 0..K-1 of each SKU's supplier.
    budget: (K,) money per supplier this cycle (np.inf = no limit).
    supplier_moq: (K,) minimum order value of a supplier that is ordered from (0 = none).
    capacity: warehouse room for everything bought this cycle (np.inf = no limit): a scalar,
        or (L,) one per warehouse.
    room: (n,) index 0..L-1 of the warehouse each SKU's packs go to (default: all in 0).
    """

    gains: FloatArray
    pack_cost: FloatArray
    pack_volume: FloatArray
    supplier: IntArray
    budget: FloatArray
    supplier_moq: FloatArray
    capacity: float | FloatArray = float("inf")
    room: IntArray | None = None

    def __post_init__(self) -> None:
        gains = np.atleast_2d(np.asarray(self.gains, dtype=np.float64))
        n = gains.shape[0]
        fields = {
            "pack_cost": np.broadcast_to(np.asarray(self.pack_cost, dtype=np.float64), (n,)),
            "pack_volume": np.broadcast_to(np.asarray(self.pack_volume, dtype=np.float64), (n,)),
            "supplier": np.broadcast_to(np.asarray(self.supplier, dtype=np.int64), (n,)),
            "room": np.broadcast_to(np.asarray(0 if self.room is None else self.room,
                                               dtype=np.int64), (n,)),
        }
        capacity = np.atleast_1d(np.asarray(self.capacity, dtype=np.float64))
        if capacity.ndim != 1 or capacity.size == 0:
            raise PolicyInputError("must be a scalar or 1-D", field="capacity",
                                   value=capacity.shape)  # fmt: skip
        if n and not 0 <= int(fields["room"].min()) <= int(fields["room"].max()) < capacity.size:
            raise PolicyInputError(f"must be in 0..{capacity.size - 1} (one capacity per room)",
                                   field="room", value=int(fields["room"].max()))  # fmt: skip
        budget = np.atleast_1d(np.asarray(self.budget, dtype=np.float64))
        k = budget.shape[0]
        moq = np.broadcast_to(np.asarray(self.supplier_moq, dtype=np.float64), (k,))
        if n and int(fields["supplier"].max()) >= k:
            raise PolicyInputError(f"must be < {k} (one budget per supplier)", field="supplier",
                                   value=int(fields["supplier"].max()))  # fmt: skip
        for name, arr in (("gains", gains), ("pack_cost", fields["pack_cost"]),
                          ("pack_volume", fields["pack_volume"]), ("budget", budget),
                          ("supplier_moq", moq)):  # fmt: skip
            if np.any(np.isnan(arr)) or np.any(arr < 0):
                raise PolicyInputError("must be >= 0", field=name, value=arr.min())
        if np.any(fields["supplier"] < 0):
            raise PolicyInputError("must be >= 0", field="supplier", value=fields["supplier"].min())
        if not np.all(capacity >= 0):  # also refuses NaN
            raise PolicyInputError("must be >= 0", field="capacity", value=capacity.min())
        if np.any(np.diff(gains, axis=1) > 1e-9 * max(1.0, float(gains.max(initial=0.0)))):
            raise PolicyInputError("must be non-increasing along packs", field="gains",
                                   value="increasing row")  # fmt: skip
        object.__setattr__(self, "gains", gains)
        for name, arr in fields.items():
            object.__setattr__(self, name, np.array(arr))
        object.__setattr__(self, "budget", np.array(budget))
        object.__setattr__(self, "supplier_moq", np.array(moq))
        object.__setattr__(self, "capacity", capacity)

    @property
    def n_suppliers(self) -> int:
        return int(self.budget.shape[0])

    @property
    def rooms(self) -> IntArray:
        """(n,) each SKU's warehouse index (`room` after validation, never None)."""
        return np.asarray(self.room, dtype=np.int64)

    @property
    def n_rooms(self) -> int:
        return int(np.asarray(self.capacity).shape[0])


@dataclass(frozen=True)
class Allocation:
    """packs: (n,) packs bought per SKU; value: total gain; spend: (K,) per supplier;
    volume: (L,) room used per warehouse."""

    packs: IntArray
    value: float
    spend: FloatArray
    volume: FloatArray

    def feasible(self, problem: AllocationProblem, *, tol: float = 1e-6) -> bool:
        """Whether it keeps every budget, the capacity and every supplier MOQ."""
        ordered = self.spend > tol
        return bool(
            np.all(self.spend <= problem.budget + tol)
            and np.all(self.volume <= problem.capacity + tol)
            and np.all(~ordered | (self.spend >= problem.supplier_moq - tol))
        )


def _evaluate(problem: AllocationProblem, packs: IntArray) -> Allocation:
    j = problem.gains.shape[1]
    taken = np.arange(j)[None, :] < packs[:, None]
    value = float((problem.gains * taken).sum())
    spend = np.bincount(problem.supplier, weights=packs * problem.pack_cost,
                        minlength=problem.n_suppliers)  # fmt: skip
    return Allocation(packs=packs, value=value, spend=spend.astype(np.float64),
                      volume=_room_used(problem, packs))


def _room_used(problem: AllocationProblem, packs: IntArray) -> FloatArray:
    return np.bincount(problem.rooms, weights=packs * problem.pack_volume,
                       minlength=problem.n_rooms).astype(np.float64)  # fmt: skip


def _weights(problem: AllocationProblem, use_budget: bool, use_capacity: bool) -> FloatArray:
    """Resource use of one pack as a share of each scarce resource (a Lagrangian price)."""
    budget = problem.budget[problem.supplier]
    limited = np.isfinite(budget) & (budget > 0) & use_budget
    weight = np.where(limited, problem.pack_cost / np.where(limited, budget, 1.0), 0.0)
    if use_capacity:
        capacity = np.asarray(problem.capacity)[problem.rooms]
        limited = np.isfinite(capacity) & (capacity > 0)
        weight = weight + np.where(limited, problem.pack_volume
                                   / np.where(limited, capacity, 1.0), 0.0)  # fmt: skip
    return np.asarray(weight, dtype=np.float64)


def _greedy(problem: AllocationProblem, allowed: npt.NDArray[np.bool_], start: IntArray,
            weight: FloatArray) -> IntArray:  # fmt: skip
    """Add packs by gain per `weight` while they fit, starting from `start`, for suppliers in
    `allowed`. A heap holds each SKU's next pack; a SKU whose next pack does not fit is done
    (its later packs cost the same and room only shrinks). The loop runs on Python lists:
    numpy scalar access per pack was most of an allocation's time."""
    n, j = problem.gains.shape
    packs = start.tolist()
    spend = np.bincount(problem.supplier, weights=start * problem.pack_cost,
                        minlength=problem.n_suppliers).tolist()  # fmt: skip
    volume = _room_used(problem, start).tolist()
    capacity = (np.asarray(problem.capacity) + _EPS).tolist()
    budget = (problem.budget + _EPS).tolist()
    gains = problem.gains.tolist()
    w = np.maximum(weight, _EPS).tolist()
    supplier, rooms = problem.supplier.tolist(), problem.rooms.tolist()
    pack_cost, pack_volume = problem.pack_cost.tolist(), problem.pack_volume.tolist()
    ok = allowed.tolist()
    heap: list[tuple[float, int]] = []
    for i in range(n):
        if ok[supplier[i]] and packs[i] < j and gains[i][packs[i]] > 0:
            heap.append((-gains[i][packs[i]] / w[i], i))
    heapq.heapify(heap)
    while heap:
        _, i = heapq.heappop(heap)
        k, r = supplier[i], rooms[i]
        cost, room = pack_cost[i], pack_volume[i]
        if spend[k] + cost > budget[k] or volume[r] + room > capacity[r]:
            continue
        packs[i] += 1
        spend[k] += cost
        volume[r] += room
        if packs[i] < j and gains[i][packs[i]] > 0:
            heapq.heappush(heap, (-gains[i][packs[i]] / w[i], i))
    return np.array(packs, dtype=np.int64)


def _top_up(problem: AllocationProblem, packs: IntArray, k: int) -> IntArray | None:
    """Add supplier k's wanted packs (gain > 0; best value per cost first) until its spend
    reaches its MOQ; None when they run out or the budget or capacity cannot take them."""
    packs = packs.copy()
    mine = np.nonzero(problem.supplier == k)[0]
    spend = float((packs[mine] * problem.pack_cost[mine]).sum())
    volume = _room_used(problem, packs)
    capacity = np.asarray(problem.capacity)
    j = problem.gains.shape[1]
    while spend < problem.supplier_moq[k] - _EPS:
        nxt = np.array([problem.gains[i, packs[i]] if packs[i] < j else 0.0 for i in mine])
        if not np.any(nxt > 0):
            return None  # a pack nobody wants is never bought, not even to reach a MOQ
        per_cost = nxt / np.maximum(problem.pack_cost[mine], _EPS)
        # Cheapest pack among equals: fewest money over the MOQ.
        choice = mine[int(np.lexsort((problem.pack_cost[mine], -per_cost))[0])]
        spend += problem.pack_cost[choice]
        r = int(problem.rooms[choice])
        volume[r] += problem.pack_volume[choice]
        packs[choice] += 1
        if spend > problem.budget[k] + _EPS or volume[r] > capacity[r] + _EPS:
            return None
        if problem.pack_cost[choice] <= 0:
            return None  # free packs can never reach a money MOQ
    return packs


def _repair_moq(problem: AllocationProblem, packs: IntArray, weight: FloatArray,
                rounds: int) -> IntArray:  # fmt: skip
    """Make every supplier's spend 0 or >= its MOQ: top up or drop, whichever serves more."""
    allowed = np.ones(problem.n_suppliers, dtype=bool)
    for _ in range(rounds):
        current = _evaluate(problem, packs)
        short = np.nonzero((current.spend > _EPS)
                           & (current.spend < problem.supplier_moq - _EPS))[0]  # fmt: skip
        if short.size == 0:
            return packs
        # The supplier furthest below its MOQ (relatively) first.
        gap = (problem.supplier_moq[short] - current.spend[short]) / problem.supplier_moq[short]
        k = int(short[np.argmax(gap)])
        dropped_allowed = allowed.copy()
        dropped_allowed[k] = False
        base = np.where(problem.supplier == k, 0, packs)
        dropped = _greedy(problem, dropped_allowed, base, weight)
        candidates = [(_evaluate(problem, dropped).value, dropped, dropped_allowed)]
        topped = _top_up(problem, packs, k)
        if topped is not None:
            filled = _greedy(problem, allowed, topped, weight)  # use what room is left
            candidates.append((_evaluate(problem, filled).value, filled, allowed))
        _, packs, allowed = max(candidates, key=lambda c: c[0])
    final = _evaluate(problem, packs)
    below = (final.spend > _EPS) & (final.spend < problem.supplier_moq - _EPS)
    return np.where(below[problem.supplier], 0, packs)


def _improve(problem: AllocationProblem, packs: IntArray, weight: FloatArray,
             max_moves: int) -> IntArray:  # fmt: skip
    """Local search: give back one SKU's last pack and refill greedily; keep improvements."""
    best = _evaluate(problem, packs)
    allowed = best.spend > _EPS
    wanted = int((problem.gains > 0).sum())
    for _ in range(max_moves):
        improved = False
        holders = np.nonzero(best.packs > 0)[0]
        moves: list[tuple[int, ...]] = [(int(i),) for i in holders]
        if holders.size <= _PAIR_MOVES_UP_TO and holders.size**2 * wanted <= _PAIR_WORK:
            moves += [(int(a), int(b)) for a in holders for b in holders if a <= b]
        for move in moves:
            trial = best.packs.copy()
            blocked = weight.copy()
            for i in move:
                trial[i] -= 1
                # The SKU may not take its pack straight back: refill the others first.
                blocked[i] = np.inf
            if np.any(trial < 0):
                continue
            trial = _greedy(problem, allowed, trial, blocked)
            candidate = _evaluate(problem, trial)
            if candidate.value > best.value + 1e-9 and candidate.feasible(problem):
                best, improved = candidate, True
        if not improved:
            break
    return best.packs


def _open_sets(problem: AllocationProblem) -> list[npt.NDArray[np.bool_]]:
    """Which suppliers may be ordered from: all of them, and — when MOQs bind and there are
    few suppliers with an MOQ — every subset of those (which to drop is the hard choice)."""
    k = problem.n_suppliers
    everyone = np.ones(k, dtype=bool)
    with_moq = np.nonzero(problem.supplier_moq > 0)[0]
    if with_moq.size == 0 or with_moq.size > _ENUMERATE_MOQ_SUPPLIERS:
        return [everyone]
    sets = []
    for mask in range(1 << with_moq.size):
        allowed = everyone.copy()
        allowed[with_moq[[(mask >> b) & 1 == 0 for b in range(with_moq.size)]]] = False
        sets.append(allowed)
    return sets


def allocate(problem: AllocationProblem, *, max_moves: int = 20) -> Allocation:
    """Packs per SKU maximising total gain under budgets, capacity and supplier MOQs.

    Greedy by gain per unit of scarce resource, under a few resource prices (budget and
    capacity shares together, each alone, none); each result is made MOQ-feasible (a
    supplier below its MOQ is topped up or dropped, whichever serves more) and improved by
    single-pack exchanges. The best feasible answer wins. Budgets, capacity and MOQs always
    hold in the result.
    """
    n, _ = problem.gains.shape
    wanted_packs = int((problem.gains > 0).sum())
    rounds = 2 * problem.n_suppliers + 1
    best: Allocation | None = None
    for use_budget, use_capacity in ((True, True), (True, False), (False, True), (False, False)):
        weight = _weights(problem, use_budget, use_capacity)
        if best is not None and not use_budget and not use_capacity and n > 2000:
            break  # large batches: the priced runs are enough
        for allowed in _open_sets(problem):
            packs = _greedy(problem, allowed, np.zeros(n, dtype=np.int64), weight)
            packs = _repair_moq(problem, packs, weight, rounds)
            if wanted_packs <= _IMPROVE_UP_TO_PACKS:
                packs = _improve(problem, packs, weight, max_moves)
            candidate = _evaluate(problem, packs)
            if candidate.feasible(problem) and (best is None or candidate.value > best.value):
                best = candidate
    if best is None:  # pragma: no cover - buying nothing is always feasible
        best = _evaluate(problem, np.zeros(n, dtype=np.int64))
    return best
