"""`SkuState.orders` (one call per run) against `SkuState.order` line by line, by run length.

2,000 warmed states (a clock, a snapshot), each taking L order lines in its open bucket;
least of 7 passes per side, µs per line, same process; asserts both leave equal states:

    PYTHONPATH=$PWD python benchmarks/orders_call.py
"""

from __future__ import annotations

import time

from streams.state import SkuState

B = 86_400


def fresh() -> SkuState:
    s = SkuState(sku="a", location="b")
    s.order("w", 10 * B + 5, 1, B, 56, 1, 56)
    s.on_hand, s.stock_as_of = 50, 10.0 * B
    return s


def main() -> None:
    keys = 2_000
    for run in (1, 2, 3, 5, 10, 20):
        ids = [[f"o{k}-{j}" for j in range(run)] for k in range(keys)]
        times = [[10.0 * B + 100 + j for j in range(run)] for _ in range(keys)]
        units = [[1 + j % 3 for j in range(run)] for _ in range(keys)]
        one = many = float("inf")
        for _ in range(7):
            a = [fresh() for _ in range(keys)]
            t = time.perf_counter()
            for s, i_, t_, q_ in zip(a, ids, times, units, strict=True):
                order = s.order
                for e, at, q in zip(i_, t_, q_, strict=True):
                    order(e, at, q, B, 56, 1, 56)
            one = min(one, time.perf_counter() - t)
            b = [fresh() for _ in range(keys)]
            t = time.perf_counter()
            for s, i_, t_, q_ in zip(b, ids, times, units, strict=True):
                s.orders(list(i_), list(t_), list(q_), B, 56, 1, 56)
            many = min(many, time.perf_counter() - t)
            assert [x.to_json() for x in a] == [x.to_json() for x in b]
        n = keys * run
        print(f"run {run:3d}: order() per line {1e6 * one / n:.3f} us, orders() "
              f"{1e6 * many / n:.3f} us per line ({many / one:.2f}x)")


if __name__ == "__main__":
    main()
