"""Backtest rows of lightgbm and the served mix before (results/generalisation/merged_default,
main at 8998251) and after the overstock fix (results/generalisation/overstock/backtest)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

KEYS = ("pinball", "mase_median", "wape", "coverage_80", "coverage_95")


def main(before: Path, after: Path) -> None:
    print("| set | model | " + " | ".join(f"{k} before → after" for k in KEYS) + " |")
    print("|---|---|" + "---|" * len(KEYS))
    for path in sorted(after.glob("*.json")):
        old_path = before / path.name
        if not old_path.exists():
            continue
        new, old = json.loads(path.read_text()), json.loads(old_path.read_text())
        for model, row in new["models"].items():
            prev = old["models"].get(model)
            if prev is None:
                continue
            cells = []
            for k in KEYS:
                a, b = prev[k], row[k]
                rel = f" ({(b / a - 1) * 100:+.1f}%)" if not k.startswith("coverage") else ""
                cells.append(f"{a:.4g} → {b:.4g}{rel}")
            print(f"| {path.stem} | {model} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
