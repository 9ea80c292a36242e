"""The seed-ensemble lever, measured before it is served (issue 16): K LSTMs that differ only
by their seed, their quantiles averaged, mixed with the LightGBM peer as the served mix is.

One training per set on the generalisation protocol (4 origins, refit once, horizon 14,
FreshRetailNet 7; tuning folds and the final holdout, the last 2 origins, apart), rows:

- `lstm_lgbm`: the served mix (seed 0's LSTM), as `promotion_lever.py` trains it;
- `lstm_lgbm_seeds`: the same mix with the LSTM part replaced by the average of K LSTMs'
  quantile curves (seed 0's plus `--seeds` more, each trained on the same history with the
  same config), its weights and calibration learned on the same validation origins from the
  averaged validation forecasts (`learn_mix`);
- `lstm_seeds`: the averaged LSTMs alone; `lstm_seedS`: each extra LSTM alone; `lstm`,
  `lightgbm`: the served mix's parts (`lstm` is seed 0's).

Averaging quantile curves (Vincentisation) keeps them monotone. The stream would carry K
LSTM states per series and run K forward passes per forecast (the LSTM is ~7 us of the mix's
~67 us per forecast: benchmarks/README "The served model's CPU per forecast"); this script
measures whether the accuracy pays for that before any serving code is written.

    python benchmarks/seed_ensemble.py --sets rossmann [--seeds 1,2] [--out DIR] [--summarise]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.combination_lever import DATA, SETS, _Part
from benchmarks.promotion_lever import _Recording, lever, run_folds, served_recording
from forecasting.base import Forecaster, QuantileForecast
from forecasting.combination import (
    LSTMLightGBMForecaster,
    Mix,
    ValidationForecasts,
    combine,
)
from forecasting.covariates import Covariates
from forecasting.data import Panel
from forecasting.registry import make_forecaster
from runtime.paths import recorded_path

BASELINE = "lstm_lgbm"


def mean_forecast(parts: Sequence[QuantileForecast]) -> QuantileForecast:
    """The quantile curves of `parts` (same series, steps, levels) averaged level by level."""
    first = parts[0]
    return QuantileForecast(first.levels, np.mean([p.daily for p in parts], axis=0),
                            np.mean([p.cumulative for p in parts], axis=0),
                            np.mean([p.mean for p in parts], axis=0))


class _Seeds(Forecaster):
    """The served mix with its LSTM part the average of the combination's LSTM and
    `seeds` more (`fit` trains them on the same history and learns the mix)."""

    fits = True
    uses_covariates = True

    def __init__(self, name: str, combined: _Recording, seeds: Sequence[int],
                 horizon: int) -> None:
        super().__init__(combined.levels.tolist())
        self.name = name  # type: ignore[misc]
        self._combined, self._seeds, self._horizon = combined, list(seeds), horizon
        self.extra: list[Any] = []
        self.mix: Mix | None = None
        self.fit_seconds = 0.0

    def fit(self, panel: Panel) -> _Seeds:
        t0 = time.process_time()
        found = self._combined.found
        assert found is not None, "the served mix is fitted first (it is the first row)"
        lstm_found = [found.lstm]
        for seed in self._seeds:
            base = make_forecaster("lstm_lgbm", device="cpu", horizon=self._horizon, seed=seed)
            assert isinstance(base, LSTMLightGBMForecaster)
            probe = LSTMLightGBMForecaster(base.lstm, mix_calibration="daily",
                                           lightgbm_options=self._combined.lightgbm_options)
            probe.cap_threads(1)
            probe.lstm.fit(panel)
            again = probe.validation_forecasts(panel)
            assert again is not None
            lstm_found.append(again.lstm)
            self.extra.append(probe.lstm)
        averaged = [mean_forecast([fs[k] for fs in lstm_found]) for k in range(len(found.lstm))]
        self.mix = self._combined.learn_mix(ValidationForecasts(
            averaged, found.lightgbm, found.actual, found.promo, found.classes))
        self.fit_seconds = time.process_time() - t0
        return self

    def lstm_forecast(self, windows: Any, horizon: int, end_days: ArrayLike | None,
                      covariates: Covariates | None) -> QuantileForecast:
        """The averaged LSTMs' forecast (each through its own `predict`, as `_Part`)."""
        return mean_forecast([m.predict(windows, horizon, end_days=end_days,
                                        covariates=covariates)
                              for m in (self._combined.lstm, *self.extra)])

    def _mixed(self, windows: Any, horizon: int, end_days: ArrayLike | None,
               covariates: Covariates | None) -> QuantileForecast:
        assert self.mix is not None and self._combined.lightgbm is not None
        weights, calibration, _ = self.mix
        peer = self._combined.lightgbm.predict(windows, horizon, end_days=end_days,
                                               covariates=covariates)
        return combine(self.lstm_forecast(windows, horizon, end_days, covariates), peer,
                       weights, integer=self._combined.config.integer_demand,
                       calibration=calibration)

    def _predict(self, windows: Any, horizon: int,
                 end_days: ArrayLike | None) -> QuantileForecast:
        return self._mixed(windows, horizon, end_days, None)

    def _predict_known(self, windows: Any, horizon: int, end_days: ArrayLike | None,
                       covariates: Covariates) -> QuantileForecast:
        return self._mixed(windows, horizon, end_days, covariates)


class _SeedsLSTM(Forecaster):
    """The averaged LSTMs of a fitted `_Seeds` alone (`which` None), or one extra LSTM
    (`which`: its index among the extra seeds)."""

    fits = True
    uses_covariates = True

    def __init__(self, name: str, seeds: _Seeds, which: int | None = None) -> None:
        super().__init__(seeds.levels.tolist())
        self.name = name  # type: ignore[misc]
        self._seeds, self._which = seeds, which

    def _forecast(self, windows: Any, horizon: int, end_days: ArrayLike | None,
                  covariates: Covariates | None) -> QuantileForecast:
        if self._which is None:
            return self._seeds.lstm_forecast(windows, horizon, end_days, covariates)
        model = self._seeds.extra[self._which]
        return model.predict(windows, horizon, end_days=end_days,  # type: ignore[no-any-return]
                             covariates=covariates)

    def _predict(self, windows: Any, horizon: int,
                 end_days: ArrayLike | None) -> QuantileForecast:
        return self._forecast(windows, horizon, end_days, None)

    def _predict_known(self, windows: Any, horizon: int, end_days: ArrayLike | None,
                       covariates: Covariates) -> QuantileForecast:
        return self._forecast(windows, horizon, end_days, covariates)


def run_set(name: str, out: Path, data: Path, seeds: Sequence[int]) -> dict[str, Any]:
    panel, horizon, combined = served_recording(name, data)
    rel = SETS[name][0]
    ensemble = _Seeds("lstm_lgbm_seeds", combined, seeds, horizon)
    parts: dict[str, Forecaster] = {"lstm_lgbm_seeds": ensemble,
                                    "lstm_seeds": _SeedsLSTM("lstm_seeds", ensemble),
                                    **{f"lstm_seed{s}": _SeedsLSTM(f"lstm_seed{s}", ensemble, k)
                                       for k, s in enumerate(seeds)},
                                    "lstm": _Part("lstm", combined, "lstm"),
                                    "lightgbm": _Part("lightgbm", combined, "lightgbm")}

    t0, cpu0 = time.perf_counter(), time.process_time()
    result = run_folds(name, panel, horizon, combined, parts)
    doc = result.to_json()
    assert ensemble.mix is not None
    doc.update(data=recorded_path(data / rel), served=BASELINE, seeds=[0, *seeds],
               wall_seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - cpu0,
               train_cpu_seconds={"lstm_lgbm": combined.fit_metrics.get("train_seconds"),
                                  "extra_lstms": ensemble.fit_seconds},
               combination=None if combined.weights is None else combined.weights.to_json(),
               combination_seeds=ensemble.mix[0].to_json(), load_avg=os.getloadavg()[0],
               command=f"nice -n 5 python benchmarks/seed_ensemble.py --sets {name} "
                       f"--seeds {','.join(map(str, seeds))}")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(doc, indent=2, default=float) + "\n")
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="uci_online_retail,rossmann,freshretailnet")
    ap.add_argument("--seeds", default="1,2", help="the extra LSTMs' seeds (seed 0: served)")
    ap.add_argument("--data", type=Path, default=DATA, help="the shared data directory")
    ap.add_argument("--out", type=Path,
                    default=Path("benchmarks/results/generalisation/seed_ensemble"))
    ap.add_argument("--summarise", action="store_true",
                    help="only summarise the sets' JSONs already in --out")
    args = ap.parse_args()
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--seeds wants comma-separated integers, got {args.seeds!r}")
    if not seeds or 0 in seeds:
        ap.error("--seeds: one or more seeds other than 0 (seed 0 is the served LSTM)")
    docs: dict[str, dict[str, Any]] = {}
    for name in args.sets.split(","):
        if name not in SETS:
            ap.error(f"unknown set {name!r}; one of {', '.join(SETS)}")
        path = args.out / f"{name}.json"
        if args.summarise:
            if path.exists():
                docs[name] = json.loads(path.read_text())
            continue
        docs[name] = run_set(name, args.out, args.data, seeds)
    summary = lever(docs, baseline=BASELINE)
    for part in ("tune", "holdout"):
        print(f"\n{part} folds: relative change against {BASELINE} (negative: better)")
        for name, parts in summary["sets"].items():
            row = parts[part]
            for model in (m for m in row if m != "scores"):
                c = row["scores"][model]
                print(f"  {name:18s} {model:16s} " + " ".join(
                    f"{k} {row[model][k]:+.1%}" for k in ("pinball", "mase_median", "wape",
                                                          "pinball_total"))
                      + f" cov80 {c['coverage_80']:.3f} cov95 {c['coverage_95']:.3f}")
        for model, change in summary["average"][part].items():
            print(f"  average (real) {model:16s} " + " ".join(
                f"{k} {v:+.1%}" for k, v in change.items()))
    (args.out / "seed_ensemble.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
