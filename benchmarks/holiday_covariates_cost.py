"""CPU per forecast SKU of handing the shop's holidays to the forecaster: `covariates_of` for
a batch of due SKUs whose locations have holidays (the grid over window and horizon, the
calendar's flags per location), against the same batch without any (None: the plain call).

    python benchmarks/holiday_covariates_cost.py [--skus 1000] [--locations 50] \
        [--json benchmarks/results/holiday_covariates_cost.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import date, timedelta
from pathlib import Path

from schemas.events import HolidayEvent
from streams.holiday_calendar import HolidayCalendar
from streams.planned_promotions import covariates_of
from streams.state import SkuState


def _per_sku_us(fn: object, skus: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        fn()  # type: ignore[operator]
        best = min(best, time.process_time() - t0)
    return best / skus * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skus", type=int, default=1000)
    parser.add_argument("--locations", type=int, default=50)
    parser.add_argument("--holidays-per-location", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cal = HolidayCalendar()
    start = date(2015, 1, 1)
    for loc in range(args.locations):
        for k in range(args.holidays_per_location):
            day = start + timedelta(days=(k * 17 + loc) % 365)
            cal.apply(HolidayEvent(event_id=f"L{loc}-{k}", location=f"L{loc}", start_day=day,
                                   end_day=day))
    states = [SkuState(sku=f"S{i}", location=f"L{i % args.locations}") for i in range(args.skus)]
    last = [(date(2015, 6, 1) - date(1970, 1, 1)).days] * args.skus
    with_us = _per_sku_us(lambda: covariates_of(states, last, 14, cal, 56), args.skus,
                          args.rounds)
    without_us = _per_sku_us(lambda: covariates_of(states, last, 14, None, 56), args.skus,
                             args.rounds)
    out = {"skus": args.skus, "locations": args.locations,
           "holidays_per_location": args.holidays_per_location,
           "covariates_of_us_per_sku_with_holidays": round(with_us, 3),
           "covariates_of_us_per_sku_without": round(without_us, 3),
           "loadavg": os.getloadavg()}
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
