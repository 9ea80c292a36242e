"""Demand per bucket of a run of order lines: a dict accumulation against numpy.

What `SkuState._stretch` does when a run's lines fall in more than one bucket: sum the
units per bucket. For the run lengths a key has in a fetch (1-20 lines, 1-3 buckets), the
least of `--repeat` timings per variant, in µs per run, same process:

    python benchmarks/run_demand_sum.py --json benchmarks/results/run_demand_sum.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import timeit
from pathlib import Path

import numpy as np


def by_dict(buckets: list[int], units: list[int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for b, q in zip(buckets, units, strict=True):
        out[b] = out.get(b, 0) + q
    return out


def by_add_at(buckets: list[int], units: list[int]) -> dict[int, int]:
    keys, inverse = np.unique(np.asarray(buckets), return_inverse=True)
    sums = np.zeros(keys.size, dtype=np.int64)
    np.add.at(sums, inverse, np.asarray(units))
    return dict(zip(keys.tolist(), sums.tolist(), strict=True))


def by_bincount(buckets: list[int], units: list[int]) -> dict[int, int]:
    b = np.asarray(buckets)
    lo = int(b.min())
    sums = np.bincount(b - lo, weights=np.asarray(units, dtype=float))
    return {lo + i: int(s) for i in np.flatnonzero(sums).tolist() for s in [sums[i]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--number", type=int, default=2_000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rng = random.Random(1)
    rows = []
    for n in (1, 2, 3, 5, 10, 20):
        buckets = sorted(100 + rng.randrange(3) for _ in range(n))
        units = [rng.randint(1, 5) for _ in range(n)]
        assert by_dict(buckets, units) == by_add_at(buckets, units)
        assert {k: v for k, v in by_dict(buckets, units).items() if v} == \
            by_bincount(buckets, units)
        row: dict[str, float | int] = {"lines": n}
        for name, fn in (("dict", by_dict), ("np_add_at", by_add_at),
                         ("np_bincount", by_bincount)):
            best = min(timeit.repeat(lambda fn=fn, b=buckets, u=units: fn(b, u),
                                     number=args.number,
                                     repeat=args.repeat))
            row[name + "_us"] = round(1e6 * best / args.number, 3)
        rows.append(row)
        print(json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps({"load": os.getloadavg(), "rows": rows},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
