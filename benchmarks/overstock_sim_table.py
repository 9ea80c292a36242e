"""Inventory at 95% fill per policy of the overstock runs' simulate_*.json (vs min/max)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(paths: list[str]) -> None:
    for name in paths:
        doc = json.loads(Path(name).read_text())
        load = doc.get("machine", {}).get("load_avg_1_5_15")
        print(f"\n{Path(name).stem} ({doc['skus']} SKUs, {doc['first_day']} .. {doc['last_day']}, "
              f"{doc['scored_days']} scored days; load at start {load and round(load[0], 1)})\n")
        print("| policy | fill rate | avg inventory | inventory at 95% fill | vs min/max | "
              "fill at the 0.5 target |")
        print("|---|---|---|---|---|---|")
        vs = doc.get("inventory_at_95_fill_vs_minmax", {})
        rows = sorted(doc["policies"].items(),
                      key=lambda kv: kv[1]["inventory_at_95_fill"] or float("inf"))
        for policy, res in rows:
            at95 = res["inventory_at_95_fill"]
            rel = f"{vs[policy] * 100:+.1f}%" if policy in vs else ""
            print(f"| {policy} | {res['fill_rate']:.3f} | {res['avg_inventory']:,.0f} | "
                  f"{'—' if at95 is None else f'{at95:,.0f}'} | {rel} | "
                  f"{res['curve'][0]['fill_rate']:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
