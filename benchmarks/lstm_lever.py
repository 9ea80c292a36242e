"""One LSTM lever on every real data set: the generalisation protocol, the LSTM alone.

The peers' scores do not depend on the LSTM's config (same origins, same data), so a lever is
measured by re-running only the LSTM with one `LSTMConfig` change on each set and comparing
its tuning folds with the baseline run's (`generalisation_split.py --compare`):

    python benchmarks/lstm_lever.py OUTDIR --set scale_weight=0.5 [--sets uci_online_retail,...]
    python benchmarks/generalisation_split.py OUTDIR --compare BASELINE_DIR --model lstm

Each set runs with the protocol of `../shared/tools/generalisation.sh` (horizon 14, or 7 for
FreshRetailNet; 4 origins; refit once); `seed=N` among the overrides gives a seed run. The
JSON per set has the backtest's layout (models: {"lstm": ...}, folds, origins) plus the
overrides and the LSTM's training seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

# ../shared/data next to the checkout (or next to any folder above it: git worktrees nest)
DATA = next((d / "shared" / "data" for d in Path(__file__).resolve().parents[1].parents
             if (d / "shared" / "data").is_dir()), Path("../shared/data"))
SETS: dict[str, tuple[str, int]] = {
    "uci_online_retail": ("uci_online_retail/daily_panel.csv.gz", 14),
    "rossmann": ("rossmann_store_sales/daily_100_stores.csv.gz", 14),
    "freshretailnet": ("freshretailnet/daily_1111_series.csv.gz", 7),
    "store_item_sanity": ("store_item_demand/train.csv.gz", 14),
}


def run_set(name: str, data_dir: Path, overrides: dict[str, Any], max_series: int | None,
            model: str = "lstm") -> dict[str, Any]:
    """The protocol's backtest of `model` on one set with LSTMConfig `overrides`."""
    import torch

    from forecasting.backtest import rolling_origin
    from forecasting.data import load_panel
    from forecasting.lstm import make_lstm

    torch.set_num_threads(1)
    rel, horizon = SETS[name]
    limit = max_series if max_series is not None else (100 if name == "store_item_sanity"
                                                      else None)
    # with its covariates: an LSTM reads them only with promo_inputs (without, the same
    # numbers as a panel without them)
    panel = load_panel(data_dir / rel, max_series=limit, covariates=True)

    def factory(_: str) -> Any:
        return make_lstm(device="cpu", horizon=horizon, **overrides)

    t0 = time.perf_counter()
    cpu0 = time.process_time()
    result = rolling_origin(panel, [model], horizon=horizon, folds=4, refit=False,
                            factory=factory)
    doc = result.to_json()
    doc.update(data=str(data_dir / rel), overrides=overrides, wall_seconds=time.perf_counter() - t0,
               cpu_seconds=time.process_time() - cpu0)
    return doc


def main() -> None:
    from forecasting.lstm.config import config_overrides

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="override a default LSTMConfig field, e.g. scale_weight=0.5")
    p.add_argument("--sets", default="uci_online_retail,rossmann,freshretailnet")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--max-series", type=int, default=None)
    args = p.parse_args()
    try:
        overrides = config_overrides(args.set)
    except ValueError as exc:
        p.error(str(exc))
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.sets.split(","):
        if name not in SETS:
            p.error(f"unknown set {name!r} (known: {', '.join(SETS)})")
        doc = run_set(name, args.data, overrides, args.max_series)
        doc["command"] = "python benchmarks/lstm_lever.py " + " ".join(sys.argv[1:])
        (args.out / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
        s = doc["models"]["lstm"]
        print(f"{name:18s} pinball {s['pinball']:.3f} mase_median {s['mase_median']:.3f} "
              f"mase {s['mase']:.3f} wape {s['wape']:.3f} cov80 {s['coverage_80']:.3f} "
              f"cov95 {s['coverage_95']:.3f} cpu {doc['cpu_seconds']:.0f}s", flush=True)


if __name__ == "__main__":
    main()
