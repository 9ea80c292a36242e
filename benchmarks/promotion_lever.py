"""The promotion-aware mix lever: `lstm_lgbm` with weights of their own for forecast days with
a planned promotion (`learn_weights(promo=...)`, forecasting/combination.py) against the
plain mix (one set of weights), on the generalisation protocol (4 origins, refit once,
horizon 14; FreshRetailNet 7), tuning folds and final holdout (the last 2 origins) apart.

    python benchmarks/promotion_lever.py --sets rossmann [--data ../shared/data]
        [--out benchmarks/results/generalisation/promo_mix] [--summarise]

One training per set, several mixes from it: the LSTM and both LightGBMs (the one fitted
before the validation days, the one refitted on the whole history) are trained once, the
validation forecasts are kept, and each variant learns its weights and calibration from
them (`LSTMLightGBMForecaster.learn_mix`), so the rows differ only by the lever:

- `lstm_lgbm`: promotion days weighted on their own, the mix's calibration (daily tails)
  learned on that mix;
- `lstm_lgbm_plain`: one set of weights for every day (the served default before this
  lever), its own calibration;
- `lstm_lgbm_split_cal`: the promotion weights, and the calibration learned apart for
  days with a promotion and days without (`split_calibration`);
- `lstm`, `lightgbm`: the parts alone (as `combination_lever.py`).

Covariates are read (`--covariates auto`, the CLI's default). A set without covariate
columns (UCI) learns the same weights in both variants (no promotion days): bit for bit.
Writes `<set>.json` (backtest format) and `promotion_lever.json`: per set and on average
over the real sets, lstm_lgbm's relative change against each row, tune and holdout apart.
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

from benchmarks.combination_lever import DATA, METRICS, SETS, _Part
from benchmarks.generalisation_split import REAL_SETS, part_scores
from forecasting.backtest import rolling_origin
from forecasting.base import Forecaster, QuantileForecast
from forecasting.combination import LSTMLightGBMForecaster, Mix, ValidationForecasts
from forecasting.covariates import Covariates
from forecasting.data import Panel, load_panel
from forecasting.registry import make_forecaster


class _Recording(LSTMLightGBMForecaster):
    """The served combination, keeping its validation forecasts for the variants."""

    found: ValidationForecasts | None = None

    def validation_forecasts(self, panel: Panel) -> ValidationForecasts | None:
        self.found = super().validation_forecasts(panel)
        return self.found


class _Mix(Forecaster):
    """The fitted combination with the weights and calibration of another variant, learned
    from the same validation forecasts (`learn_mix(promo_weights=...)`)."""

    fits = True
    uses_covariates = True

    def __init__(self, name: str, combined: _Recording, promo_weights: bool,
                 split_calibration: bool = False) -> None:
        super().__init__(combined.levels.tolist())
        self.name = name  # type: ignore[misc]
        self._combined, self._promo = combined, promo_weights
        self._split = split_calibration
        self._mix: Mix | None = None

    def _model(self) -> LSTMLightGBMForecaster:
        if self._mix is None:
            assert self._combined.found is not None
            self._mix = self._combined.learn_mix(self._combined.found,
                                                 promo_weights=self._promo,
                                                 split_calibration=self._split)
        model = copy.copy(self._combined)
        model.weights, model.calibration, model.promo_calibration = self._mix
        return model

    def _predict(self, windows: Any, horizon: int,
                 end_days: ArrayLike | None) -> QuantileForecast:
        return self._model().predict(windows, horizon, end_days=end_days)

    def _predict_known(self, windows: Any, horizon: int, end_days: ArrayLike | None,
                       covariates: Covariates) -> QuantileForecast:
        return self._model().predict(windows, horizon, end_days=end_days,
                                     covariates=covariates)


def run_set(name: str, out: Path, data: Path) -> dict[str, Any]:
    rel, horizon, kwargs = SETS[name]
    panel = load_panel(data / rel, covariates=True, **kwargs)
    base = make_forecaster("lstm_lgbm", device="cpu", horizon=horizon)
    assert isinstance(base, LSTMLightGBMForecaster)
    combined = _Recording(base.lstm, mix_calibration="daily", promo_weights=True,
                          split_calibration=False)
    combined.cap_threads(1)
    parts: dict[str, Forecaster] = {
        "lstm_lgbm_plain": _Mix("lstm_lgbm_plain", combined, False),
        "lstm_lgbm_split_cal": _Mix("lstm_lgbm_split_cal", combined, True, True),
        "lstm": _Part("lstm", combined, "lstm"),
        "lightgbm": _Part("lightgbm", combined, "lightgbm")}

    def factory(model: str) -> Forecaster:
        return combined if model == "lstm_lgbm" else parts[model]

    t0 = time.perf_counter()
    result = rolling_origin(panel, ["lstm_lgbm", *parts], horizon=horizon, folds=4,
                            refit=False, factory=factory,
                            on_fold=lambda m, k, s: print(
                                f"  {name} {m:>15} fold {k}: pinball {s['pinball']:.4f} "
                                f"mase_median {s['mase_median']:.3f} "
                                f"cov80 {s['coverage_80']:.3f}", file=sys.stderr, flush=True))
    doc = result.to_json()
    plain = parts["lstm_lgbm_plain"]
    split = parts["lstm_lgbm_split_cal"]
    assert isinstance(plain, _Mix) and plain._mix is not None
    assert isinstance(split, _Mix) and split._mix is not None
    promo_cal = split._mix[2]
    doc.update(data=str((data / rel).resolve()), served="lstm_lgbm",
               wall_seconds=time.perf_counter() - t0,
               combination=combined.weights.to_json() if combined.weights else None,
               combination_plain=plain._mix[0].to_json(),
               split_calibration=None if promo_cal is None else {
                   "days_without": None if split._mix[1] is None else split._mix[1].to_json(),
                   "promo_days": promo_cal.to_json()},
               mix_calibration=(combined.calibration.to_json() if combined.calibration
                                else None),
               fit_metrics=combined.fit_metrics, load_avg=os.getloadavg()[0],
               promo_days=_promo_share(panel),
               command=f"nice -n 5 python benchmarks/promotion_lever.py --sets {name}")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(doc, indent=2, default=float) + "\n")
    return doc


def _promo_share(panel: Panel) -> float | None:
    """Share of the panel's observed days with a planned promotion (None: no covariates)."""
    if panel.covariates is None:
        return None
    promo, _ = panel.covariates.span(panel.start, panel.n_days)
    seen = np.isfinite(panel.values)
    return float(np.mean(promo[seen] > 0))


def lever(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """lstm_lgbm's relative change against each other row, per set and averaged over the
    real sets, tuning and holdout folds apart; every row's coverage."""
    out: dict[str, Any] = {"sets": {}, "average": {}}
    for part in ("tune", "holdout"):
        sums: dict[str, dict[str, list[float]]] = {}
        for name, doc in docs.items():
            s = part_scores(doc, part, 2)
            row: dict[str, Any] = {"scores": s}
            for ref in (m for m in s if m != "lstm_lgbm"):
                change = {k: s["lstm_lgbm"][k] / s[ref][k] - 1 for k in METRICS}
                row[f"vs_{ref}"] = change
                if name in REAL_SETS:
                    for k, v in change.items():
                        sums.setdefault(ref, {}).setdefault(k, []).append(v)
            out["sets"].setdefault(name, {})[part] = row
        out["average"][part] = {f"vs_{ref}": {k: float(np.mean(v)) for k, v in m.items()}
                                for ref, m in sums.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="uci_online_retail,rossmann,freshretailnet")
    ap.add_argument("--out", type=Path,
                    default=Path("benchmarks/results/generalisation/promo_mix"))
    ap.add_argument("--data", type=Path, default=DATA, help="the shared data directory")
    ap.add_argument("--summarise", action="store_true",
                    help="only read the <set>.json files in --out and write the summary")
    args = ap.parse_args()
    docs: dict[str, dict[str, Any]] = {}
    for name in args.sets.split(","):
        path = args.out / f"{name}.json"
        if args.summarise:
            if path.exists():
                docs[name] = json.loads(path.read_text())
            continue
        docs[name] = run_set(name, args.out, args.data)
    summary = lever(docs)
    summary["load_avg"] = os.getloadavg()[0]
    for part in ("tune", "holdout"):
        print(f"\n{part} folds: lstm_lgbm (promotion weights) relative change (negative: "
              "better)")
        for name, parts in summary["sets"].items():
            row = parts[part]
            cells = "; ".join(f"{ref[3:]} " + " ".join(f"{k} {v:+.1%}" for k, v in
                                                      row[ref].items() if k in
                                                      ("pinball", "mase_median", "wape"))
                              for ref in row if ref.startswith("vs_"))
            cov = "; ".join(f"{m} cov80 {c['coverage_80']:.3f} cov95 {c['coverage_95']:.3f}"
                            for m, c in row["scores"].items())
            print(f"  {name:18s} {cells}\n  {'':18s} {cov}")
        for ref, m in summary["average"][part].items():
            print(f"  average (real) {ref}: "
                  + " ".join(f"{k} {v:+.1%}" for k, v in m.items()))
    target = args.out / "promotion_lever.json"
    target.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwrote {target}")


if __name__ == "__main__":
    main()
