"""The promotion-aware mix lever: `lstm_lgbm` with weights of their own for forecast days with
a planned promotion (`learn_weights(promo=...)`, forecasting/combination.py) against the
plain mix (one set of weights), on the generalisation protocol (4 origins, refit once,
horizon 14; FreshRetailNet 7), tuning folds and final holdout (the last 2 origins) apart.

    python benchmarks/promotion_lever.py --sets rossmann [--data ../shared/data]
        [--out benchmarks/results/generalisation/promo_mix] [--set KEY=JSON] [--summarise]

One training per set, several mixes from it: the LSTM and both LightGBMs (the one fitted
before the validation days, the one refitted on the whole history) are trained once, the
validation forecasts are kept, and each variant learns its weights and calibration from
them (`LSTMLightGBMForecaster.learn_mix`), so the rows differ only by the lever:

- `lstm_lgbm`: promotion days weighted on their own (`promo_weights=True`), the mix's
  calibration (daily tails) learned on that mix;
- `lstm_lgbm_plain`: one set of weights for every day (the served default before this
  lever), its own calibration;
- `lstm_lgbm_split_cal`: the promotion weights, and the calibration learned apart for
  days with a promotion and days without (`split_calibration`);
- `lstm_lgbm_promo_lgbm`: a rule, not learned: the plain weights, except that promotion
  days' daily quantiles and mean are LightGBM's alone (the cumulative ones as learned);
- `lstm_lgbm_shrink50`, `lstm_lgbm_pooled`: the plain mix with each level's weight
  shrunk halfway / all the way toward its block's pooled weight (`weight_shrink` 0.5 / 1);
  `lstm_lgbm_daily_pooled`: one weight for the daily block, the cumulative levels each
  their own (`weight_shrink` 1, `cumulative_weight_shrink` 0);
- `lstm_lgbm_cum_fall`: the plain mix with the upper cumulative levels' weights paying for
  their falls (`cumulative_weights="fall"`; the daily block is the plain mix's, so its
  daily scores are the plain mix's bit for bit); `lstm_lgbm_cum_levels`: the same with each
  cumulative level's pinball alone (the weights of before; the plain mix learns the model's
  default, "fall" since it was made the default, so compare these two rows);
- `lstm_lgbm_classes`: the plain mix with weights of their own per demand class
  (`class_weights`, forecasting/demand_class.py: smooth, erratic, intermittent, lumpy at
  each origin), its calibration learned on that mix;
- `lstm`, `lightgbm`: the parts alone (as `combination_lever.py`).

Covariates are read (`--covariates auto`, the CLI's default). A set without covariate
columns (UCI) learns the same weights in every variant (no promotion days): bit for bit.
Writes `<set>.json` (backtest format, plus `by_promo`: each row's daily pinball on the
forecast days with a planned promotion and on the others) and `promotion_lever.json`: per
set and on average over the real sets, each row's relative change against the plain mix,
tune and holdout apart.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
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
from forecasting.backtest import BacktestResult, rolling_origin
from forecasting.base import Forecaster, QuantileForecast
from forecasting.combination import (
    CombinationWeights,
    LSTMLightGBMForecaster,
    Mix,
    ValidationForecasts,
    learn_calibration,
)
from forecasting.covariates import Covariates
from forecasting.data import Panel, load_panel
from forecasting.lightgbm_peer import LightGBMConfig
from forecasting.lstm.config import config_overrides
from forecasting.metrics import pinball
from forecasting.registry import make_forecaster
from runtime.paths import recorded_path


class _Recording(LSTMLightGBMForecaster):
    """The served combination, keeping its validation forecasts for the variants."""

    found: ValidationForecasts | None = None

    def validation_forecasts(self, panel: Panel) -> ValidationForecasts | None:
        self.found = super().validation_forecasts(panel)
        return self.found


class _Variant(Forecaster):
    """A variant of the fitted combination: forecasts with the combination `_model()` gives."""

    fits = True
    uses_covariates = True

    def _model(self) -> LSTMLightGBMForecaster:
        raise NotImplementedError

    def _predict(self, windows: Any, horizon: int,
                 end_days: ArrayLike | None) -> QuantileForecast:
        return self._model().predict(windows, horizon, end_days=end_days)

    def _predict_known(self, windows: Any, horizon: int, end_days: ArrayLike | None,
                       covariates: Covariates) -> QuantileForecast:
        return self._model().predict(windows, horizon, end_days=end_days,
                                     covariates=covariates)


class _Mix(_Variant):
    """The fitted combination with the weights and calibration of another variant, learned
    from the same validation forecasts (`learn_mix(promo_weights=...)`)."""

    def __init__(self, name: str, combined: _Recording, promo_weights: bool,
                 split_calibration: bool = False, promo_to_lightgbm: bool = False,
                 shrink: float | None = None, cumulative: str | None = None,
                 classes: bool | None = None, cumulative_shrink: float | None = None) -> None:
        super().__init__(combined.levels.tolist())
        self.name = name  # type: ignore[misc]
        self._combined, self._promo = combined, promo_weights
        self._split, self._to_lightgbm = split_calibration, promo_to_lightgbm
        self._shrink, self._cumulative, self._classes = shrink, cumulative, classes
        self._cumulative_shrink = cumulative_shrink
        self._mix: Mix | None = None

    def _model(self) -> LSTMLightGBMForecaster:
        if self._mix is None:
            found = self._combined.found
            assert found is not None
            self._mix = self._combined.learn_mix(found, promo_weights=self._promo,
                                                 split_calibration=self._split,
                                                 shrink=self._shrink,
                                                 cumulative_shrink=self._cumulative_shrink,
                                                 cumulative_weights=self._cumulative,
                                                 class_weights=self._classes)
            if self._to_lightgbm and found.promo is not None:
                # a rule, not learned: promotion days' daily quantiles and mean are
                # LightGBM's alone (the part that reads promotions); cumulative as learned
                plain = self._mix[0]
                q = len(plain.levels)
                weights = dataclasses.replace(plain, promo=CombinationWeights(
                    plain.levels, (0.0,) * q, plain.cumulative, 0.0))
                self._mix = (weights, learn_calibration(
                    found.lstm, found.lightgbm, found.actual, weights,
                    integer=self._combined.config.integer_demand,
                    blocks=self._combined.mix_calibration, promo=found.promo), None)
        model = copy.copy(self._combined)
        model.weights, model.calibration, model.promo_calibration = self._mix
        return model


class _Fresh(_Variant):
    """The fitted combination with one set of weights and its calibration learned on the
    last `val_days` of the history by a second LSTM and LightGBM trained on the days before
    them: days neither that LSTM's training nor its early stopping read (the served mix
    learns its weights on the origins its LSTM's early stopping chose the epoch on). A
    diagnostic: serving it would cost a second training."""

    def __init__(self, name: str, combined: _Recording, horizon: int) -> None:
        super().__init__(combined.levels.tolist())
        self.name = name  # type: ignore[misc]
        self._combined, self._horizon = combined, horizon
        self._mix: Mix | None = None
        self.report: dict[str, float] = {}

    def fit(self, panel: Panel) -> _Fresh:
        base = make_forecaster("lstm_lgbm", device="cpu", horizon=self._horizon)
        assert isinstance(base, LSTMLightGBMForecaster)
        probe = LSTMLightGBMForecaster(base.lstm, mix_calibration="daily")
        probe.cap_threads(1)
        probe.lstm.fit(panel.head(panel.n_days - probe.lstm.config.val_days))
        found = probe.validation_forecasts(panel)
        assert found is not None
        self._mix = self._combined.learn_mix(found, promo_weights=False)
        self.report = dict(self._mix[0].report)
        return self

    def _model(self) -> LSTMLightGBMForecaster:
        assert self._mix is not None
        model = copy.copy(self._combined)
        model.weights, model.calibration, model.promo_calibration = self._mix
        return model


def served_recording(name: str, data: Path) -> tuple[Panel, int, _Recording]:
    """Set `name`'s panel (covariates read), its horizon, and the served mix (untrained,
    one thread) that keeps its validation forecasts: what each lever script trains once."""
    rel, horizon, kwargs = SETS[name]
    panel = load_panel(data / rel, covariates=True, **kwargs)
    base = make_forecaster("lstm_lgbm", device="cpu", horizon=horizon)
    assert isinstance(base, LSTMLightGBMForecaster)
    combined = _Recording(base.lstm, mix_calibration="daily")
    combined.cap_threads(1)
    return panel, horizon, combined


def run_folds(name: str, panel: Panel, horizon: int, combined: _Recording,
              parts: dict[str, Forecaster]) -> BacktestResult:
    """The generalisation protocol (4 origins, refit once): the served mix `combined` first
    (as "lstm_lgbm"), then `parts`, one progress line per model and fold."""
    def factory(model: str) -> Forecaster:
        return combined if model == "lstm_lgbm" else parts[model]

    return rolling_origin(panel, ["lstm_lgbm", *parts], horizon=horizon, folds=4,
                          refit=False, factory=factory,
                          on_fold=lambda m, k, s: print(
                              f"  {name} {m:>15} fold {k}: pinball {s['pinball']:.4f} "
                              f"mase_median {s['mase_median']:.3f} "
                              f"cov80 {s['coverage_80']:.3f}", file=sys.stderr, flush=True))


def run_set(name: str, out: Path, data: Path, fresh: bool = False,
            mix_days: int | None = None, val_days: int | None = None,
            overrides: dict[str, Any] | None = None,
            lightgbm_options: dict[str, Any] | None = None) -> dict[str, Any]:
    rel, horizon, kwargs = SETS[name]
    panel = load_panel(data / rel, covariates=True, **kwargs)
    extra: dict[str, Any] = {k: v for k, v in (("mix_days", mix_days), ("val_days", val_days))
             if v is not None}
    extra.update(overrides or {})
    base = make_forecaster("lstm_lgbm", device="cpu", horizon=horizon, **extra)
    assert isinstance(base, LSTMLightGBMForecaster)
    combined = _Recording(base.lstm, mix_calibration="daily", promo_weights=True,
                          split_calibration=False, lightgbm_options=lightgbm_options)
    combined.cap_threads(1)
    parts: dict[str, Forecaster] = {
        "lstm_lgbm_plain": _Mix("lstm_lgbm_plain", combined, False),
        "lstm_lgbm_split_cal": _Mix("lstm_lgbm_split_cal", combined, True, True),
        "lstm_lgbm_promo_lgbm": _Mix("lstm_lgbm_promo_lgbm", combined, False,
                                     promo_to_lightgbm=True),
        # each level's weight halfway to its block's pooled weight / the pooled weight
        "lstm_lgbm_shrink50": _Mix("lstm_lgbm_shrink50", combined, False, shrink=0.5),
        "lstm_lgbm_pooled": _Mix("lstm_lgbm_pooled", combined, False, shrink=1.0),
        # one weight for the daily block, the cumulative levels each their own (and "fall")
        "lstm_lgbm_daily_pooled": _Mix("lstm_lgbm_daily_pooled", combined, False, shrink=1.0,
                                       cumulative_shrink=0.0),
        # the upper cumulative levels' weights pay for their falls
        "lstm_lgbm_cum_fall": _Mix("lstm_lgbm_cum_fall", combined, False, cumulative="fall"),
        # ... and as before they did (the plain mix learns the default, "fall" since session 12)
        "lstm_lgbm_cum_levels": _Mix("lstm_lgbm_cum_levels", combined, False,
                                     cumulative="levels"),
        # weights of their own per demand class (smooth / erratic / intermittent / lumpy)
        "lstm_lgbm_classes": _Mix("lstm_lgbm_classes", combined, False, classes=True),
        "lstm": _Part("lstm", combined, "lstm"),
        "lightgbm": _Part("lightgbm", combined, "lightgbm")}

    if fresh:
        parts["lstm_lgbm_fresh"] = _Fresh("lstm_lgbm_fresh", combined, horizon)

    t0 = time.perf_counter()
    result = run_folds(name, panel, horizon, combined, parts)
    doc = result.to_json()
    plain = parts["lstm_lgbm_plain"]
    split = parts["lstm_lgbm_split_cal"]
    assert isinstance(plain, _Mix) and plain._mix is not None
    assert isinstance(split, _Mix) and split._mix is not None
    promo_cal = split._mix[2]
    doc.update(data=recorded_path(data / rel), served="lstm_lgbm",
               wall_seconds=time.perf_counter() - t0,
               combination=combined.weights.to_json() if combined.weights else None,
               combination_plain=plain._mix[0].to_json(),
               combination_shrunk={k: parts[k]._mix[0].to_json()  # type: ignore[attr-defined]
                                   for k in ("lstm_lgbm_shrink50", "lstm_lgbm_pooled",
                                             "lstm_lgbm_daily_pooled",
                                             "lstm_lgbm_cum_fall", "lstm_lgbm_cum_levels",
                                             "lstm_lgbm_classes")},
               combination_fresh=(parts["lstm_lgbm_fresh"]._mix[0].to_json()  # type: ignore[attr-defined]
                                  if fresh else None),
               split_calibration=None if promo_cal is None else {
                   "days_without": None if split._mix[1] is None else split._mix[1].to_json(),
                   "promo_days": promo_cal.to_json()},
               mix_calibration=(combined.calibration.to_json() if combined.calibration
                                else None),
               fit_metrics=combined.fit_metrics, load_avg=os.getloadavg()[0],
               promo_days=_promo_share(panel),
               by_promo=_by_promo(result.forecasts, panel, horizon),
               command=f"nice -n 5 python benchmarks/promotion_lever.py --sets {name}"
               + (" --fresh" if fresh else "")
               + ("" if mix_days is None else f" --mix-days {mix_days}")
               + ("" if val_days is None else f" --val-days {val_days}")
               + "".join(f" --set {k}={json.dumps(v)}" for k, v in (overrides or {}).items())
               + "".join(f" --lightgbm-set {k}={json.dumps(v)}"
                         for k, v in (lightgbm_options or {}).items()),
               overrides=overrides or {}, lightgbm_options=lightgbm_options or {},
               cpu_seconds=time.process_time(),
               lstm_config={k: v for k, v in combined.config.to_json().items()
                            if k in ("val_days", "mix_days", "horizon", "promo_inputs",
                                     "data_holidays")})
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


def _by_promo(per_model: dict[str, Any], panel: Panel, horizon: int,
              holdout: int = 2) -> dict[str, Any] | None:
    """Daily pinball of each model on the forecast days with a planned promotion and on the
    others, tuning and holdout folds apart (pooled over their cells)."""
    if panel.covariates is None:
        return None
    out: dict[str, Any] = {}
    for name, folds in per_model.items():
        acc: dict[str, dict[str, list[float]]] = {}
        for k, f in enumerate(folds):
            part = "tune" if k < len(folds) - holdout else "holdout"
            promo, _ = panel.covariates.span(panel.dates[f.cutoff], horizon)
            loss = np.asarray(pinball(f.actual, f.forecast.daily, f.forecast.levels, axis=()))
            seen = np.isfinite(f.actual)
            for group, cells in (("promo", (promo > 0) & seen), ("no_promo", (promo == 0)
                                                                   & seen)):
                acc.setdefault(part, {}).setdefault(group, []).extend(loss[cells].tolist())
        out[name] = {part: {g: {"pinball": float(np.mean(v)), "days": len(v)}
                            for g, v in groups.items()} for part, groups in acc.items()}
    return out


BASELINE = "lstm_lgbm_plain"  # the served mix before this lever


def lever(docs: dict[str, dict[str, Any]], baseline: str = BASELINE) -> dict[str, Any]:
    """Each row's relative change against `baseline` (the plain mix), per set and averaged
    over the real sets, tuning and holdout folds apart; every row's scores."""
    out: dict[str, Any] = {"baseline": baseline, "sets": {}, "average": {}}
    for part in ("tune", "holdout"):
        sums: dict[str, dict[str, list[float]]] = {}
        for name, doc in docs.items():
            s = part_scores(doc, part, 2)
            row: dict[str, Any] = {"scores": s}
            for model in (m for m in s if m != baseline):
                change = {k: s[model][k] / s[baseline][k] - 1 for k in METRICS}
                row[model] = change
                if name in REAL_SETS:
                    for k, v in change.items():
                        sums.setdefault(model, {}).setdefault(k, []).append(v)
            out["sets"].setdefault(name, {})[part] = row
        out["average"][part] = {model: {k: float(np.mean(v)) for k, v in m.items()}
                                for model, m in sums.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="uci_online_retail,rossmann,freshretailnet")
    ap.add_argument("--out", type=Path,
                    default=Path("benchmarks/results/generalisation/promo_mix"))
    ap.add_argument("--data", type=Path, default=DATA, help="the shared data directory")
    ap.add_argument("--fresh", action="store_true",
                    help="also lstm_lgbm_fresh: weights learned on days the LSTM never read "
                         "(a second training)")
    ap.add_argument("--mix-days", type=int, default=None,
                    help="the LSTM's mix window (LSTMConfig.mix_days; default: the served "
                         "default): days held out of its training and early stopping, on "
                         "which every mix learns its weights and calibration")
    ap.add_argument("--val-days", type=int, default=None,
                    help="the LSTM's early-stopping window (LSTMConfig.val_days; default 28)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                    help="an LSTMConfig field of the mix's LSTM part, e.g. promo_inputs=true "
                         "(as lstm_lever.py's)")
    ap.add_argument("--lightgbm-set", action="append", default=[], metavar="KEY=JSON",
                    help="a LightGBMConfig field of the mix's LightGBM part, e.g. "
                         "censored=true")
    ap.add_argument("--summarise", action="store_true",
                    help="only read the <set>.json files in --out and write the summary")
    args = ap.parse_args()
    try:
        overrides = config_overrides(args.set)
    except ValueError as exc:
        ap.error(str(exc))
    lightgbm_options: dict[str, Any] = {}
    for item in args.lightgbm_set:
        key, sep, value = item.partition("=")
        if not sep or key not in LightGBMConfig.__dataclass_fields__:
            ap.error(f"--lightgbm-set wants KEY=JSON with a LightGBMConfig field, got {item!r}")
        lightgbm_options[key] = json.loads(value)
    docs: dict[str, dict[str, Any]] = {}
    for name in args.sets.split(","):
        path = args.out / f"{name}.json"
        if args.summarise:
            if path.exists():
                docs[name] = json.loads(path.read_text())
            continue
        docs[name] = run_set(name, args.out, args.data, args.fresh, args.mix_days,
                              args.val_days, overrides, lightgbm_options)
    summary = lever(docs)
    summary["load_avg"] = os.getloadavg()[0]
    for part in ("tune", "holdout"):
        print(f"\n{part} folds: relative change against {BASELINE} (negative: better)")
        for name, parts in summary["sets"].items():
            row = parts[part]
            for model, change in row.items():
                if model == "scores":
                    continue
                c = row["scores"][model]
                print(f"  {name:18s} {model:22s} " + " ".join(
                    f"{k} {change[k]:+.1%}" for k in ("pinball", "mase_median", "wape",
                                                      "pinball_total"))
                      + f" cov80 {c['coverage_80']:.3f} cov95 {c['coverage_95']:.3f}")
            c = row["scores"][BASELINE]
            print(f"  {name:18s} {BASELINE:22s} cov80 {c['coverage_80']:.3f} "
                  f"cov95 {c['coverage_95']:.3f}")
        for model, m in summary["average"][part].items():
            print(f"  average (real) {model:22s} "
                  + " ".join(f"{k} {v:+.1%}" for k, v in m.items()))
    target = args.out / "promotion_lever.json"
    target.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwrote {target}")


if __name__ == "__main__":
    main()
