"""A small check that the censored-demand lever leaves the sets without stock-out information
bit for bit as before: each set loaded as the benchmarks load it (covariates on), its first
`--series` series; the LSTM trained a few epochs with `censored_loss` "none", "drop" and
"pinball", and LightGBM's training rows with `censored` off and on, compared exactly.

    python benchmarks/censored_identity.py [--data ../shared/data] [--series 40] [--epochs 3]
        [--out benchmarks/results/generalisation/censored/identity.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.combination_lever import DATA, SETS
from forecasting.data import load_panel
from forecasting.lightgbm_peer import LightGBMForecaster
from forecasting.lstm.config import LSTMConfig
from forecasting.lstm.training import train_net


def check(name: str, data: Path, series: int, epochs: int) -> dict[str, Any]:
    rel, horizon, kwargs = SETS[name]
    panel = load_panel(data / rel, covariates=True, max_series=series, **kwargs)
    out: dict[str, Any] = {"series": panel.n_series, "days": panel.n_days,
                           "censored_days": None if panel.censored is None
                           else int(panel.censored.sum())}
    states = {}
    for mode in ("none", "drop", "pinball"):
        cfg = LSTMConfig(horizon=horizon, max_epochs=epochs, censored_loss=mode)
        trained = train_net(panel, cfg, device="cpu")
        states[mode] = {k: v.detach().numpy() for k, v in trained.net.state_dict().items()}
        out[f"lstm_{mode}_trained_as"] = trained.net.config.censored_loss
    for mode in ("drop", "pinball"):
        out[f"lstm_{mode}_identical"] = all(np.array_equal(states["none"][k], v)
                                            for k, v in states[mode].items())
    rows = [LightGBMForecaster(horizon, censored=c).training_rows(panel) for c in (False, True)]
    out["lightgbm_rows_identical"] = all(np.array_equal(a, b, equal_nan=True)
                                         for a, b in zip(rows[0], rows[1], strict=True))
    out["lightgbm_rows"] = [int(r[1].size) for r in rows]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--sets", default="uci_online_retail,rossmann,freshretailnet")
    ap.add_argument("--series", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", type=Path,
                    default=Path("benchmarks/results/generalisation/censored/identity.json"))
    args = ap.parse_args()
    t0, c0 = time.perf_counter(), time.process_time()
    doc: dict[str, Any] = {"sets": {}}
    for name in args.sets.split(","):
        doc["sets"][name] = check(name, args.data, args.series, args.epochs)
        print(name, json.dumps(doc["sets"][name]), flush=True)
    doc.update(wall_seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0,
               load_avg=os.getloadavg()[0],
               command=f"nice -n 5 python benchmarks/censored_identity.py --series "
                       f"{args.series} --epochs {args.epochs}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
