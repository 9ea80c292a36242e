"""`benchmarks/simpolicy_record.py` plus, for the served mix (lstm_lgbm), what it mixed: both
parts' forecasts per review before mixing, the weights and calibration in force, and each
refit's validation forecasts (what the weights were learned from).

    python benchmarks/cumweights_record.py OUT.npz -- simulate --data ... (the CLI's arguments)

Writes OUT.npz (simpolicy_record's recording, unchanged) and OUT_mix.npz:
- `days` (R,): each served review's day; `refit` (R,): the index of the mix in force;
- `lstm_daily`, `lstm_cum`, `lstm_mean`, `lgbm_daily`, ... (R, n, H[, Q]): the parts'
  forecasts as `combine` received them (H: the steps the policy asked for);
- `weights` / `calibration` (one JSON text per refit), `integer`;
- `val{k}_lstm_cum`, `val{k}_lgbm_cum` (O, n, H', Q), `val{k}_actual` (O, n, H'): refit k's
  validation origins (`ValidationForecasts`), from which `benchmarks/cumweights_replay.py`
  learns other cumulative weights as a refit would.

Only runs with one lstm_lgbm policy (the served one) are recorded this way: every call of
`forecasting.combination.combine` during a review is taken as that policy's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

import forecasting.combination as combination
from optimizer.simulation import ForecastPolicy

sys.path.insert(0, str(Path(__file__).resolve().parent))
import simpolicy_record


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    calls: list[tuple[Any, ...]] = []
    reviews: dict[str, list[Any]] = {k: [] for k in ("days", "refit", "a", "b")}
    mixes: list[tuple[Any, Any, bool]] = []  # (weights, calibration, integer) per refit
    validations: list[Any] = []
    original_combine = combination.combine
    original_predict = ForecastPolicy._predict
    original_learn = combination.LSTMLightGBMForecaster.learn_mix

    def combine(a: Any, b: Any, weights: Any, **kw: Any) -> Any:
        calls.append((a, b, weights, kw))
        return original_combine(a, b, weights, **kw)

    def predict(self: ForecastPolicy, history: Any, horizon: int, end_day: Any) -> Any:
        calls.clear()
        forecast = original_predict(self, history, horizon, end_day)
        if not calls:
            return forecast  # another model, or the shared memo
        if len(calls) != 1 or calls[0][3].get("promo") is not None:
            raise RuntimeError("expected one combine call without promotion flags per review")
        a, b, weights, kw = calls[0]
        if kw.get("promo_calibration") is not None:
            raise RuntimeError("promotion calibration not recorded")
        if not mixes or mixes[-1][0] is not weights or mixes[-1][1] is not kw["calibration"]:
            mixes.append((weights, kw["calibration"], bool(kw["integer"])))
        reviews["days"].append(str(end_day))
        reviews["refit"].append(len(mixes) - 1)
        reviews["a"].append(a)
        reviews["b"].append(b)
        return forecast

    def learn_mix(self: Any, found: Any, **kw: Any) -> Any:
        validations.append(found)
        return original_learn(self, found, **kw)

    combination.combine = combine  # type: ignore[assignment]
    ForecastPolicy._predict = predict  # type: ignore[method-assign]
    combination.LSTMLightGBMForecaster.learn_mix = learn_mix  # type: ignore[method-assign]
    try:
        rc = simpolicy_record.main(argv)
    finally:
        combination.combine = original_combine
        ForecastPolicy._predict = original_predict  # type: ignore[method-assign]
        combination.LSTMLightGBMForecaster.learn_mix = original_learn  # type: ignore[method-assign]
    arrays: dict[str, Any] = {"days": np.array(reviews["days"]),
                              "refit": np.array(reviews["refit"], dtype=np.int64)}
    for part in ("a", "b"):
        tag = "lstm" if part == "a" else "lgbm"
        arrays[f"{tag}_daily"] = np.stack([f.daily for f in reviews[part]])
        arrays[f"{tag}_cum"] = np.stack([f.cumulative for f in reviews[part]])
        arrays[f"{tag}_mean"] = np.stack([f.mean for f in reviews[part]])
    arrays["levels"] = np.asarray(reviews["a"][0].levels) if reviews["a"] else np.zeros(0)
    arrays["weights"] = np.array([json.dumps(w.to_json()) for w, _, _ in mixes])
    arrays["calibration"] = np.array([json.dumps(None if c is None else c.to_json())
                                      for _, c, _ in mixes])  # fmt: skip
    arrays["integer"] = np.array([i for _, _, i in mixes], dtype=bool)
    arrays["validations"] = np.array(len(validations))
    for k, found in enumerate(validations):
        arrays[f"val{k}_lstm_cum"] = np.stack([f.cumulative for f in found.lstm])
        arrays[f"val{k}_lgbm_cum"] = np.stack([f.cumulative for f in found.lightgbm])
        arrays[f"val{k}_actual"] = np.stack([np.asarray(y, dtype=np.float64)
                                             for y in found.actual])  # fmt: skip
    mix_out = out.with_name(out.stem + "_mix.npz")
    np.savez_compressed(mix_out, **arrays)
    print(f"recorded {len(reviews['days'])} served reviews, {len(mixes)} mixes, "
          f"{len(validations)} validations -> {mix_out}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
