"""The exact optimum of an allocation problem (scipy's HiGHS MILP), to measure the greedy by."""

from __future__ import annotations

import numpy as np

from optimizer.allocation import AllocationProblem


def milp_optimum(problem: AllocationProblem) -> float:
    """max sum g_ij y_ij  s.t. budgets, capacity, MOQ (y_ij <= z_k, spend_k >= moq_k z_k)."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import lil_matrix

    n, j = problem.gains.shape
    k = problem.n_suppliers
    rooms = problem.n_rooms
    nv = n * j + k
    cost = np.repeat(problem.pack_cost, j)
    vol = np.repeat(problem.pack_volume, j)
    sup = np.repeat(problem.supplier, j)
    room = np.repeat(problem.rooms, j)
    rows, lo, hi = [], [], []
    a = lil_matrix((2 * k + rooms + n * j, nv))
    r = 0
    for s in range(k):
        mine = np.nonzero(sup == s)[0]
        a[r, mine] = cost[mine]
        lo.append(-np.inf), hi.append(problem.budget[s] if np.isfinite(problem.budget[s]) else 1e18)
        r += 1
        a[r, mine] = cost[mine]
        a[r, n * j + s] = -problem.supplier_moq[s]
        lo.append(0.0), hi.append(np.inf)
        r += 1
    for w, cap in enumerate(problem.capacity):
        mine = np.nonzero(room == w)[0]
        a[r, mine] = vol[mine]
        lo.append(-np.inf), hi.append(cap if np.isfinite(cap) else 1e18)
        r += 1
    for v in range(n * j):
        a[r, v] = 1.0
        a[r, n * j + sup[v]] = -1.0
        lo.append(-np.inf), hi.append(0.0)
        r += 1
    del rows
    c = -np.concatenate([problem.gains.ravel(), np.zeros(k)])
    # A pack of gain 0 is not wanted: never bought (not even to reach a MOQ).
    upper = np.concatenate([(problem.gains.ravel() > 0).astype(float), np.ones(k)])
    res = milp(c, constraints=LinearConstraint(a.tocsr(), lo, hi), integrality=np.ones(nv),
               bounds=Bounds(0, upper), options={"time_limit": 20})
    assert res.success, res.message
    return -res.fun
