"""Markdown tables for benchmarks/README.md from `shelfcast backtest --json` and
`shelfcast simulate --json` files: every model's scores with the served model against the
best peer, and every policy's inventory at 95% fill against the min/max rule.

    python benchmarks/served_tables.py benchmarks/results/generalisation/served_cli/*.json
    python benchmarks/served_tables.py --with benchmarks/results/generalisation/ets FILE...

`--with DIR`: peers backtested in another run of the same protocol (DIR/<same name>.json, e.g.
ETS, too slow to run beside everything else) join each backtest's table; a model both runs
scored must have the same scores in both (same origins, same data), else it stops.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

LOWER = (("mase", "MASE (mean)"), ("mase_median", "MASE (median)"), ("wape", "WAPE"),
         ("pinball", "pinball"))  # fmt: skip
COVERAGE = (("coverage_80", "cov 80", 0.80), ("coverage_95", "cov 95", 0.95))


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3f}"


def backtest_table(doc: dict[str, Any]) -> str:
    """Every model's row, then the served model's distance to the best peer per metric."""
    models: dict[str, dict[str, float]] = doc["models"]
    served = str(doc.get("served"))
    head = [label for _, label in LOWER] + [label for _, label, _ in COVERAGE]
    lines = ["| model | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for name, m in models.items():
        cells = [_num(m[key]) for key, _ in LOWER] + [f"{m[key]:.3f}" for key, _, _ in COVERAGE]
        label = f"**{name}** (served)" if name == served else name
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    peers = [n for n in models if n != served]
    if served in models and peers:
        cells = []
        for key, _ in LOWER:
            best = min(peers, key=lambda n: models[n][key])
            gap = models[served][key] / models[best][key] - 1
            cells.append(f"{gap:+.1%} vs {best}")
        for key, _, nominal in COVERAGE:
            cells.append(f"{(models[served][key] - nominal) * 100:+.1f} pt")
        lines.append("| served vs best peer | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _retrains(p: dict[str, Any]) -> str:
    retrains = p.get("retrains") or []
    if not retrains:
        return "—"
    cpu = sum(float(r.get("cpu_seconds", r.get("train_cpu_seconds", 0.0)) or 0.0)
              for r in retrains)
    return f"{len(retrains)} ({cpu:.0f} CPU-s)"


def simulate_table(doc: dict[str, Any]) -> str:
    """Fill rate, average inventory and inventory at 95% fill per policy, vs min/max."""
    vs = doc.get("inventory_at_95_fill_vs_minmax", {})
    lines = ["| policy | fill rate | avg inventory | inventory at 95% fill | vs min/max | "
             "retrains |", "|---|---|---|---|---|---|"]
    ranked = sorted(doc["policies"].items(),
                    key=lambda kv: kv[1].get("inventory_at_95_fill") or float("inf"))
    for name, p in ranked:
        inv95 = p.get("inventory_at_95_fill")
        gap = vs.get(name)
        lines.append(f"| {name} | {p['fill_rate']:.3f} | {p['avg_inventory']:,.0f} | "
                     f"{'—' if inv95 is None else f'{inv95:,.0f}'} | "
                     f"{'' if gap is None else f'{gap:+.1%}'} | {_retrains(p)} |")
    return "\n".join(lines)


def with_peers(doc: dict[str, Any], other: dict[str, Any], name: str) -> dict[str, Any]:
    """`doc` with the models of `other` (a run of the same protocol) it lacks."""
    models = dict(doc["models"])
    for model, scores in other["models"].items():
        if model not in models:
            models[model] = scores
            continue
        mine = models[model]
        if any(abs(mine[k] - scores[k]) > 1e-9 * max(1.0, abs(mine[k])) for k, _ in LOWER):
            raise SystemExit(f"{name}: {model} scores differ between the two runs: "
                             "not the same protocol")
    return {**doc, "models": models}


def main(paths: list[str]) -> None:
    extra: Path | None = None
    if paths[:1] == ["--with"]:
        extra, paths = Path(paths[1]), paths[2:]
    for path in paths:
        doc = json.loads(Path(path).read_text())
        peers = None if extra is None else extra / Path(path).name
        if peers is not None and peers.exists() and "models" in doc:
            doc = with_peers(doc, json.loads(peers.read_text()), Path(path).stem)
        print(f"\n{Path(path).stem} (served = {doc.get('served')}):\n")
        print(simulate_table(doc) if "policies" in doc else backtest_table(doc))


if __name__ == "__main__":
    main(sys.argv[1:])
