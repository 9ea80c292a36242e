"""Tables of the policy-tail A/B (benchmarks/policy_tail_sims.sh): per set, every policy's
inventory at 95% fill (from the sweep's curve), its change vs min/max and vs the same model
with the last-gap tail, and the fill and average inventory at the 0.95 target; then the
served policy's change per set and on average over the sets.

    python benchmarks/policy_tail_table.py benchmarks/results/generalisation/policy_tail/*.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TAILS = ("last_gap", "median_chord", "upper_fit")


def _split(name: str, default: str) -> tuple[str, str]:
    """(policy without its tail key, tail rule); non-forecast policies have tail ''."""
    if not name.startswith("forecast:"):
        return name, ""
    for tail in TAILS:
        if name.endswith(f":tail={tail}"):
            return name[: -len(f":tail={tail}")], tail
    return name, default


def table(path: Path) -> dict[str, float]:
    doc = json.loads(path.read_text())
    pols = doc["policies"]
    default = doc.get("tail_default", "last_gap")  # runs before the key: last_gap
    models = {_split(name, default): res for name, res in pols.items()}
    base = pols["minmax"]["inventory_at_95_fill"]
    print(f"\n{path.parent.name}/{path.name}: {doc['skus']} SKUs x {doc['scored_days']} "
          "scored days "
          f"({doc['first_day']} .. {doc['last_day']}), load {doc['machine']['load_avg_1_5_15']}")
    print("| policy | tail | inventory at 95% fill | vs min/max | vs last_gap | fill at 0.95 "
          "| avg inventory at 0.95 |")
    print("|---|---|---|---|---|---|---|")
    ranked = sorted(pols.items(), key=lambda kv: kv[1]["inventory_at_95_fill"] or float("inf"))
    served: dict[str, float] = {}
    for name, res in ranked:
        model, tail = _split(name, default)
        at95 = res["inventory_at_95_fill"]
        ref = models.get((model, "last_gap"), {}).get("inventory_at_95_fill") if tail else None
        vs_gap = f"{(at95 / ref - 1) * 100:+.1f}%" if ref and at95 and tail != "last_gap" \
            and tail else ""  # fmt: skip
        at = "not reached" if at95 is None else f"{at95:,.0f}"
        vs = "" if at95 is None or name == "minmax" else f"{(at95 / base - 1) * 100:+.1f}%"
        print(f"| {model} | {tail} | {at} | {vs} | {vs_gap} | {res['fill_rate']:.3f} "
              f"| {res['avg_inventory']:,.0f} |")
        if model.startswith("forecast:served") and at95 is not None:
            served[tail] = at95
    return served


def main(paths: list[Path]) -> None:
    by_set = {f"{p.parent.name}/{p.stem}": table(p) for p in paths}
    print("\nserved policy, inventory at 95% fill vs its last_gap tail:")
    for tail in TAILS[1:]:
        changes = [s[tail] / s["last_gap"] - 1 for s in by_set.values()
                   if tail in s and "last_gap" in s]  # fmt: skip
        cells = ", ".join(f"{name} {s[tail] / s['last_gap'] - 1:+.1%}"
                          for name, s in by_set.items() if tail in s and "last_gap" in s)
        if changes:
            print(f"- {tail}: {cells}; average {sum(changes) / len(changes):+.1%}")


if __name__ == "__main__":
    main([Path(p) for p in sys.argv[1:]])
