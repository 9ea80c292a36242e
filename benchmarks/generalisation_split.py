"""Tuning folds vs final holdout of the generalisation backtests, per set and on average.

The protocol (`../shared/tools/generalisation.sh`) runs 4 rolling origins per real data set
with `--refit once`: the global models train once, on the history before the first origin.
The last `--holdout` origins (default 2: the last 28 days at horizon 14, the last 14 days at
FreshRetailNet's horizon 7) are the final holdout: no training ever sees them (refit once)
and no modelling decision looks at them. Decisions use the first origins only ("tune").

    python benchmarks/generalisation_split.py DIR_OR_JSON... [--holdout 2] [--part tune]
        [--compare OTHER_DIR --model lstm]

prints, per set, a table of every model on the tuning folds and, apart, on the holdout folds;
`--compare` prints the relative change of one model between two runs (e.g. a lever against
the baseline), per set and averaged over the real sets (store-item is a sanity check only
and is left out of the average).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

METRICS = ("pinball", "mase_median", "mase", "wape", "wape_median", "coverage_80",
           "coverage_95", "pinball_total")
REAL_SETS = ("uci_online_retail", "rossmann", "freshretailnet")


def load(paths: list[str]) -> dict[str, dict[str, Any]]:
    """{set name: backtest JSON} from files or directories of `<set>.json`."""
    out: dict[str, dict[str, Any]] = {}
    for p in map(Path, paths):
        files = sorted(p.glob("*.json")) if p.is_dir() else [p]
        for f in files:
            doc = json.loads(f.read_text())
            if "folds" in doc:
                out[f.stem] = doc
    return out


def part_scores(doc: dict[str, Any], part: str, holdout: int) -> dict[str, dict[str, float]]:
    """{model: {metric: mean over the folds of `part`}} ("tune", "holdout" or "all")."""
    n_folds = int(doc["n_folds"])
    first_holdout = n_folds - holdout
    def keep(k: int) -> bool:
        return part == "all" or (k >= first_holdout) == (part == "holdout")

    rows: dict[str, list[dict[str, float]]] = {}
    for f in doc["folds"]:
        if keep(int(f["fold"])):
            rows.setdefault(f["model"], []).append(f)
    return {m: {k: sum(r[k] for r in rs) / len(rs) for k in METRICS if k in rs[0]}
            for m, rs in rows.items()}


def table(scores: dict[str, dict[str, float]]) -> str:
    """A markdown table; the best value of each loss metric in bold."""
    head = "| model | " + " | ".join(METRICS) + " |"
    lines = [head, "|" + "---|" * (len(METRICS) + 1)]
    best = {k: min(s[k] for s in scores.values() if k in s) for k in METRICS
            if not k.startswith("coverage") and all(k in s for s in scores.values())}
    for model, s in scores.items():
        cells = []
        for k in METRICS:
            v = s.get(k, math.nan)
            cell = f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
            cells.append(f"**{cell}**" if k in best and v == best[k] else cell)
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--holdout", type=int, default=2, help="last origins held out (default 2)")
    ap.add_argument("--part", choices=["tune", "holdout", "all"], default=None,
                    help="print only this part (default: tune and holdout)")
    ap.add_argument("--compare", help="a baseline run (dir or JSON) to compare --model against")
    ap.add_argument("--model", default="lstm")
    ap.add_argument("--baseline-model", default=None, help="model name in the baseline run")
    args = ap.parse_args()
    runs = load(args.paths)
    if args.compare:
        base = load([args.compare])
        ref = args.baseline_model or args.model
        part = args.part or "tune"
        print(f"{args.model} vs baseline {ref}, {part} folds: relative change (negative: better)")
        changes: dict[str, list[float]] = {}
        for name, doc in runs.items():
            if name not in base:
                continue
            new = part_scores(doc, part, args.holdout).get(args.model)
            old = part_scores(base[name], part, args.holdout).get(ref)
            if new is None or old is None:
                continue
            cells = []
            for k in ("pinball", "mase_median", "mase", "wape", "pinball_total"):
                d = new[k] / old[k] - 1
                cells.append(f"{k} {new[k]:.3f} ({d:+.1%})")
                if name in REAL_SETS:
                    changes.setdefault(k, []).append(d)
            cov = f"cov80 {new['coverage_80']:.3f} cov95 {new['coverage_95']:.3f}"
            print(f"  {name:18s} " + "; ".join(cells) + f"; {cov}")
        if changes:
            avg = "; ".join(f"{k} {sum(v) / len(v):+.1%}" for k, v in changes.items())
            print(f"  {'average (real)':18s} {avg}  [{len(changes['pinball'])} sets]")
        return
    for name, doc in runs.items():
        parts = [args.part] if args.part else ["tune", "holdout"]
        for part in parts:
            origins = [o for k, o in enumerate(doc["origins"])
                       if (k >= doc["n_folds"] - args.holdout) == (part == "holdout")
                       or part == "all"]
            print(f"\n**{name}** — {part} origins {', '.join(origins)} "
                  f"({doc['n_series']} series, horizon {doc['horizon']})\n")
            print(table(part_scores(doc, part, args.holdout)))


if __name__ == "__main__":
    main()
