"""The `lstm_lgbm` lever: the LSTM + LightGBM combination against both parts, on the
generalisation protocol (`../shared/tools/generalisation.sh`: 4 origins, refit once, horizon 14;
FreshRetailNet horizon 7), tuning folds and final holdout (the last 2 origins) apart.

    python benchmarks/combination_lever.py [--data ../shared/data]
        [--sets uci_online_retail,rossmann,freshretailnet] [--covariates auto]
        [--out benchmarks/results/generalisation/served] [--peers seasonal_naive,moving_average]

One training per set: the combination trains its LSTM and its LightGBM exactly as the
`lstm` and `lightgbm` peers train (same configs, seeds, history before the first origin:
both are deterministic on CPU), so the peers' rows here are those of the combination's own
parts — the same numbers a separate `shelfcast backtest --models lstm,lightgbm` gives, at a
third of the CPU. Writes `<set>.json` in the backtest's format (`"served": "lstm_lgbm"`) and
`combination_lever.json` (per set and on average over the real sets: the combination's
relative change against each part, tuning and holdout folds; the learned weights).

The mix's interval calibration (`mix_calibration`, forecasting/combination.py) is scored the
same way, from the same training: the combination here learns both blocks
(`mix_calibration="both"`, row `lstm_lgbm`), and `lstm_lgbm_raw` (none) and `lstm_lgbm_daily`
(daily tails only: the served default, `DEFAULT_MIX_CALIBRATION`) are the same fitted mix with
its calibration dropped or cut to the daily block (the blocks are learned apart, so that is
what "daily" learns); `vs_lstm_lgbm_raw` is the lever's effect.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.generalisation_split import REAL_SETS, part_scores
from forecasting.backtest import rolling_origin
from forecasting.base import Forecaster, QuantileForecast
from forecasting.calibration import IntervalCalibration
from forecasting.combination import LSTMLightGBMForecaster
from forecasting.covariates import Covariates
from forecasting.data import load_panel
from forecasting.registry import make_forecaster

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"  # ../shared/data
SETS: dict[str, tuple[str, int, dict[str, Any]]] = {
    "uci_online_retail": ("uci_online_retail/daily_panel.csv.gz", 14, {}),
    "rossmann": ("rossmann_store_sales/daily_100_stores.csv.gz", 14, {}),
    "freshretailnet": ("freshretailnet/daily_1111_series.csv.gz", 7, {}),
    "store_item_sanity": ("store_item_demand/train.csv.gz", 14, {"max_series": 100}),
}
METRICS = ("pinball", "mase_median", "mase", "wape", "wape_median", "pinball_total")
COVERAGE = ("coverage_80", "coverage_95")


class _Part(Forecaster):
    """One fitted part of the combination as a peer: `fit` keeps what the combination
    fitted (refit once: the same history), `predict` is the part's own."""

    fits = True
    uses_covariates = True  # handed on to the part (only LightGBM reads them)

    def __init__(self, name: str, combined: LSTMLightGBMForecaster, part: str) -> None:
        super().__init__(combined.levels.tolist())
        self.name = name  # type: ignore[misc]
        self._combined, self._part = combined, part

    def _predict(self, windows: Any, horizon: int,
                 end_days: ArrayLike | None) -> QuantileForecast:
        model = getattr(self._combined, self._part)
        return model.predict(windows, horizon, end_days=end_days)  # type: ignore[no-any-return]

    def _predict_known(self, windows: Any, horizon: int, end_days: ArrayLike | None,
                       covariates: Covariates) -> QuantileForecast:
        model = getattr(self._combined, self._part)
        return model.predict(  # type: ignore[no-any-return]
            windows, horizon, end_days=end_days, covariates=covariates)

class _Variant(Forecaster):
    """The fitted combination with its calibration replaced: `raw` none, `daily` the daily
    block of the learned one (what `mix_calibration="daily"` learns: the blocks are fitted
    apart)."""

    fits = True

    def __init__(self, name: str, combined: LSTMLightGBMForecaster, which: str) -> None:
        super().__init__(combined.levels.tolist())
        self.name = name  # type: ignore[misc]
        self._combined, self._which = combined, which

    def _predict(self, windows: Any, horizon: int,
                 end_days: ArrayLike | None) -> QuantileForecast:
        model = copy.copy(self._combined)
        cal = model.calibration
        if self._which == "raw" or cal is None:
            model.calibration = None
        else:
            model.calibration = IntervalCalibration(cal.levels, cal.daily, None, cal.report)
        return model.predict(windows, horizon, end_days=end_days)


VARIANTS = {"lstm_lgbm_raw": "raw", "lstm_lgbm_daily": "daily"}


def run_set(name: str, peers: list[str], out: Path, data: Path,
            covariates: bool = False) -> dict[str, Any]:
    rel, horizon, kwargs = SETS[name]
    panel = load_panel(data / rel, covariates=covariates, **kwargs)
    combined = make_forecaster("lstm_lgbm", device="cpu", horizon=horizon,
                               mix_calibration="both")
    combined.cap_threads(1)
    assert isinstance(combined, LSTMLightGBMForecaster)
    parts: dict[str, Forecaster] = {"lstm": _Part("lstm", combined, "lstm"),
                                    "lightgbm": _Part("lightgbm", combined, "lightgbm")}
    parts.update({k: _Variant(k, combined, v) for k, v in VARIANTS.items()})

    def factory(model: str) -> Forecaster:
        if model == "lstm_lgbm":
            return combined
        return parts[model] if model in parts else make_forecaster(model)

    t0 = time.perf_counter()
    models = ["lstm_lgbm", *VARIANTS, "lstm", "lightgbm", *peers]
    result = rolling_origin(panel, models, horizon=horizon, folds=4, refit=False,
                            factory=factory,
                            on_fold=lambda m, k, s: print(
                                f"  {name} {m:>15} fold {k}: pinball {s['pinball']:.3f} "
                                f"mase_median {s['mase_median']:.3f} "
                                f"cov80 {s['coverage_80']:.3f}", file=sys.stderr, flush=True))
    doc = result.to_json()
    doc.update(data=str((data / rel).resolve()), served="lstm_lgbm",
               wall_seconds=time.perf_counter() - t0,
               combination=combined.weights.to_json() if combined.weights else None,
               mix_calibration=(combined.calibration.to_json() if combined.calibration
                                else None),
               fit_metrics=combined.fit_metrics, load_avg=os.getloadavg()[0],
               command="python benchmarks/combination_lever.py --sets " + name
               + (" --covariates auto" if covariates else ""))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(doc, indent=2, default=float) + "\n")
    return doc


def lever(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The combination's relative change against each part, per set and averaged over the
    real sets, tuning and holdout folds apart."""
    out: dict[str, Any] = {"sets": {}, "average": {}}
    for part in ("tune", "holdout"):
        sums: dict[str, dict[str, list[float]]] = {}
        for name, doc in docs.items():
            s = part_scores(doc, part, 2)
            row: dict[str, Any] = {"lstm_lgbm": s["lstm_lgbm"]}
            for ref in ("lstm", "lightgbm", *(v for v in VARIANTS if v in s)):
                change = {k: s["lstm_lgbm"][k] / s[ref][k] - 1 for k in METRICS}
                row[f"vs_{ref}"] = change
                if name in REAL_SETS:
                    for k, v in change.items():
                        sums.setdefault(ref, {}).setdefault(k, []).append(v)
            best = {k: min(v[k] for m, v in s.items() if not m.startswith("lstm_lgbm"))
                    for k in METRICS}
            row["coverage"] = {m: {c: s[m][c] for c in ("coverage_80", "coverage_95")}
                               for m in s if m.startswith("lstm_lgbm")}
            row["vs_best_peer"] = {k: s["lstm_lgbm"][k] / best[k] - 1 for k in METRICS}
            out["sets"].setdefault(name, {})[part] = row
        out["average"][part] = {f"vs_{ref}": {k: float(np.mean(v)) for k, v in m.items()}
                                for ref, m in sums.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="uci_online_retail,rossmann,freshretailnet")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/generalisation/served"))
    ap.add_argument("--data", type=Path, default=DATA, help="the shared data directory")
    ap.add_argument("--peers", default="seasonal_naive,moving_average")
    ap.add_argument("--covariates", choices=("auto", "none"), default="none",
                    help="auto: the sets' known-in-advance covariates (promotions, price "
                         "ratio) for LightGBM, as `shelfcast backtest --covariates auto`")
    ap.add_argument("--summarise", action="store_true",
                    help="only read the <set>.json files in --out and write the summary")
    args = ap.parse_args()
    peers = [p for p in args.peers.split(",") if p]
    docs: dict[str, dict[str, Any]] = {}
    for name in args.sets.split(","):
        path = args.out / f"{name}.json"
        if args.summarise:
            if path.exists():
                docs[name] = json.loads(path.read_text())
            continue
        docs[name] = run_set(name, peers, args.out, args.data, args.covariates == "auto")
    summary = lever(docs)
    summary["load_avg"] = os.getloadavg()[0]
    for part in ("tune", "holdout"):
        print(f"\n{part} folds: lstm_lgbm relative change (negative: better)")
        for name, parts in summary["sets"].items():
            row = parts[part]
            cells = "; ".join(f"{ref} " + " ".join(f"{k} {v:+.1%}" for k, v in
                                                   row[f"vs_{ref}"].items() if k in
                                                   ("pinball", "mase_median", "wape"))
                              for ref in ("lstm", "lightgbm", "best_peer",
                                          *(v for v in VARIANTS if f"vs_{v}" in row)))
            cov = "; ".join(f"{m} cov80 {c['coverage_80']:.3f} cov95 {c['coverage_95']:.3f}"
                            for m, c in row["coverage"].items())
            print(f"  {name:18s} {cells}; {cov}")
        for ref, m in summary["average"][part].items():
            print(f"  average (real) {ref}: "
                  + " ".join(f"{k} {v:+.1%}" for k, v in m.items()))
    target = args.out / "combination_lever.json"
    target.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwrote {target}")


if __name__ == "__main__":
    main()
