"""Replay the served policy of a recorded run (benchmarks/cumweights_record.py) with other
cumulative-block mix weights: each review's cover quantiles remixed from the recorded parts by
`forecasting.combination.combine` (the served code: mixing, clipping, sorting, the mix's
calibration, rounding) with the refit's weights, the cumulative block replaced per variant.

    python benchmarks/cumweights_replay.py RUN.json RECORDING.npz OUT.json [--variants a,b]

RECORDING.npz: simpolicy_record's file; its `_mix.npz` sibling holds the parts. Variants
(per refit; "learned": on that refit's validation origins only, as `learn_weights` does):
- `as_run`: the weights in force (must reproduce the run to the unit, checked);
- `daily`: the cumulative levels take the daily block's weights;
- `pooled` (learned): one weight for every cumulative level (`_best_pooled`);
- `move_fall` (learned): per level tau, the grid weight minimising pinball + (1 - tau) x the
  mean fall of the mixed level from one validation origin to the next (same step): a fall
  leaves stock above the new level, an over-forecast of its size, which the pinball loss at
  tau charges (1 - tau) per unit;
- `move_abs` (learned): pinball + 1 x the mean absolute move (sensitivity);
- `move_fall_review` (learned; added after the first results, see the README): as
  `move_fall` with the fall measured between origins one review period apart (the run's
  `review_days`: the same as `move_fall` under daily review);
- `move_fall_upper`, `move_fall_lower` (diagnostic): `move_fall`'s weights on the levels
  >= 0.9 / below 0.9 only, the run's on the others;
- `fall` (learned, servable): `forecasting.combination.learn_weights(cumulative_weights="fall")`,
  the served code's option: `move_fall_upper`'s rule (the replay checks they agree, and
  that `learn_weights` on the recorded validation origins gives the weights the run served);
- `lstm_upper` (diagnostic, not servable): the LSTM alone on levels >= 0.9;
- `lstm_all`, `lgbm_all` (diagnostic): one part alone on every cumulative level.
Every variant runs with the served policy's level rule (the run's JSON), min/max beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from forecasting.base import QuantileForecast
from forecasting.calibration import IntervalCalibration
from forecasting.combination import (
    GRID_STEPS,
    CombinationWeights,
    _best_pooled,
    _pinball_level,
    _post,
    combine,
    learn_weights,
)
from optimizer.simulation import MinMaxPolicy, RestockPolicy, simulate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from simpolicy_replay import (
    RecordedPolicy,
    forecast_scores,
    load_recording,
    load_run,
)

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
SERVED_PREFIX = "forecast:served"  # the run's served policy: the first key starting so
VARIANTS = ("as_run", "daily", "pooled", "move_fall", "move_abs", "move_fall_review",
            "move_fall_upper", "move_fall_lower", "fall", "lstm_upper", "lstm_all", "lgbm_all")


@dataclasses.dataclass
class Validation:
    """One refit's validation origins: the parts' cumulative quantiles (O, n, H, Q) and the
    realised totals (O, n, H) (NaN after a missing day)."""

    lstm: FloatArray
    lgbm: FloatArray
    totals: FloatArray


def grid_weight(a: FloatArray, b: FloatArray, t: FloatArray, ok: FloatArray, tau: float,
                integer: bool, penalty: Callable[[FloatArray], float]) -> float:
    """The grid weight of a (O, n, H) minimising the pinball at tau on the cells `ok`
    (as `_best`) + `penalty(mixed (O, n, H))`; ties: the first grid point."""
    grid = np.linspace(0.0, 1.0, GRID_STEPS + 1)
    losses = []
    for w in grid:
        m = _post(w * a + (1.0 - w) * b, integer)
        losses.append(_pinball_level(t[ok], m[ok], tau) + penalty(m))
    return float(grid[int(np.argmin(losses))])


def mean_fall(m: FloatArray, spacing: int = 1) -> float:
    """Mean fall of each (series, step) level from one origin to the one `spacing` later."""
    return float(np.mean(np.maximum(m[:-spacing] - m[spacing:], 0.0)))


def scaled_fall(scale: float, spacing: int, m: FloatArray) -> float:
    return scale * mean_fall(m, spacing)


def mean_move(m: FloatArray) -> float:
    return float(np.mean(np.abs(m[1:] - m[:-1])))


def learned(variant: str, val: Validation, levels: FloatArray, integer: bool,
            review_days: int = 1) -> tuple[float, ...]:  # fmt: skip
    """The cumulative weights `variant` learns on a refit's validation origins."""
    ok = np.isfinite(val.totals)
    if variant == "pooled":
        a = val.lstm[ok]  # (cells, Q)
        return (_best_pooled(a, val.lgbm[ok], val.totals[ok], levels, integer),) * levels.size
    out = []
    for k, tau in enumerate(levels):
        if variant == "move_fall":
            pen: Callable[[FloatArray], float] = partial(scaled_fall, 1.0 - float(tau), 1)
        elif variant == "move_fall_review":
            pen = partial(scaled_fall, 1.0 - float(tau), review_days)
        elif variant == "move_abs":
            pen = mean_move
        else:
            raise ValueError(variant)
        out.append(grid_weight(val.lstm[..., k], val.lgbm[..., k], val.totals, ok, float(tau),
                               integer, pen))  # fmt: skip
    return tuple(out)


def served_learning(val: Validation, levels: FloatArray, integer: bool, rule: str
                    ) -> tuple[float, ...]:  # fmt: skip
    """The cumulative weights `learn_weights(cumulative_weights=rule)` learns from the recorded
    validation origins (their daily block stands in for the unrecorded daily one: the
    cumulative weights read only the cumulative block and the realised totals)."""
    fcs = [[QuantileForecast.trusted(levels.copy(), c, c, c[..., 0]) for c in part]
           for part in (val.lstm, val.lgbm)]
    actual = [np.diff(t, axis=1, prepend=0.0) for t in val.totals]
    return learn_weights(fcs[0], fcs[1], actual, integer=integer,
                         cumulative_weights=rule).cumulative


def variant_weights(variant: str, w: CombinationWeights, val: Validation | None,
                    integer: bool, review_days: int = 1) -> CombinationWeights:
    levels = np.asarray(w.levels)
    if variant == "as_run":
        return w
    if variant == "fall" and val is not None:
        return dataclasses.replace(w, cumulative=served_learning(val, levels, integer, "fall"))
    if variant in ("move_fall_upper", "move_fall_lower") and val is not None:
        fall = learned("move_fall", val, levels, integer)
        upper = variant == "move_fall_upper"
        cum = tuple(f if (tau >= 0.9) == upper else c
                    for tau, f, c in zip(w.levels, fall, w.cumulative, strict=True))
        return dataclasses.replace(w, cumulative=cum)
    if variant == "daily":
        cum = w.daily
    elif variant == "lstm_upper":
        cum = tuple(1.0 if tau >= 0.9 else c for tau, c in zip(w.levels, w.cumulative,
                                                                strict=True))  # fmt: skip
    elif variant == "lstm_all":
        cum = (1.0,) * levels.size
    elif variant == "lgbm_all":
        cum = (0.0,) * levels.size
    else:
        if val is None:
            return w
        cum = learned(variant, val, levels, integer, review_days)
    return dataclasses.replace(w, cumulative=tuple(float(c) for c in cum))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("recording", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--max-series", type=int, default=None, help="as the run's, if it had one")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    run, config, panel = load_run(args.run, args.max_series)
    recorded = {name: rest for name, *rest in load_recording(args.recording)}
    served = next((k for k in run["policies"] if k.startswith(SERVED_PREFIX)), None)
    if served is None or served not in recorded:
        raise SystemExit(f"no recorded {SERVED_PREFIX} policy in {args.run}")
    q_levels, rec_days, rec_cum, horizon = recorded[served]
    z = np.load(args.recording.with_name(args.recording.stem + "_mix.npz"))
    levels = np.asarray(z["levels"], dtype=np.float64)
    days = [str(d) for d in z["days"]]
    if days != rec_days:
        raise SystemExit("the mix recording's reviews are not the served policy's")
    weights = [CombinationWeights.from_json(json.loads(str(s))) for s in z["weights"]]
    cals = [IntervalCalibration.from_json(json.loads(str(s))) for s in z["calibration"]]
    integer = [bool(i) for i in z["integer"]]
    vals: list[Validation | None] = []
    for k in range(int(z["validations"])):
        y = z[f"val{k}_actual"]
        vals.append(Validation(z[f"val{k}_lstm_cum"], z[f"val{k}_lgbm_cum"],
                               np.cumsum(y, axis=2)))  # fmt: skip
    if len(vals) != len(weights):
        raise SystemExit(f"{len(vals)} validations for {len(weights)} mixes")
    # the served learning on the recorded validation origins gives the weights the run served
    relearned = all(served_learning(val, levels, i, "levels") == w.cumulative
                    for val, w, i in zip(vals, weights, integer, strict=True)
                    if val is not None)  # fmt: skip
    rule = run["policies"][served].get("level_rule", "none")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    chosen: dict[str, list[CombinationWeights]] = {
        v: [variant_weights(v, w, val, i, config.review_days)
            for w, val, i in zip(weights, vals, integer, strict=True)]
        for v in variants}  # fmt: skip
    refit = z["refit"]
    parts = {k: z[k] for k in ("lstm_daily", "lstm_cum", "lstm_mean", "lgbm_daily", "lgbm_cum",
                               "lgbm_mean")}  # fmt: skip
    cums: dict[str, FloatArray] = {}
    for v in variants:
        out = np.empty_like(rec_cum)
        for r in range(len(days)):
            k = int(refit[r])
            a = QuantileForecast.trusted(levels.copy(), parts["lstm_daily"][r],
                                         parts["lstm_cum"][r], parts["lstm_mean"][r])
            b = QuantileForecast.trusted(levels.copy(), parts["lgbm_daily"][r],
                                         parts["lgbm_cum"][r], parts["lgbm_mean"][r])
            mixed = combine(a, b, chosen[v][k], integer=integer[k], calibration=cals[k])
            out[r] = mixed.cumulative[:, horizon - 1, :]
        cums[v] = out
    remix_equal = bool(np.array_equal(cums["as_run"], rec_cum)) if "as_run" in cums else None
    index = {d: i for i, d in enumerate(days)}
    policies: list[RestockPolicy] = [
        RecordedPolicy(served if v == "as_run" else f"{served}:cum_weights={v}", q_levels,
                       index, cums[v], horizon, rule)
        for v in variants]  # fmt: skip
    policies.append(MinMaxPolicy("minmax"))
    result = simulate(panel.values, panel.dates, policies, config)
    doc = result.as_json()
    base = doc["policies"]["minmax"]["inventory_at_95_fill"]
    doc["replay_of"] = {"run": str(args.run), "recording": str(args.recording),
                        "command": run.get("command"), "variants": variants,
                        "level_rule": rule,
                        "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    doc["remix_equals_recorded"] = remix_equal
    doc["relearned_weights_equal_as_run"] = relearned
    if "fall" in chosen and "move_fall_upper" in chosen:
        doc["fall_equals_move_fall_upper"] = all(
            a.cumulative == b.cumulative
            for a, b in zip(chosen["fall"], chosen["move_fall_upper"], strict=True))
    ran = run["policies"][served]["inventory_at_95_fill"]
    doc["reproduces_run"] = {"run": ran,
                             "replay": doc["policies"].get(served, {}).get("inventory_at_95_fill"),
                             "minmax_run": run["policies"]["minmax"]["inventory_at_95_fill"],
                             "minmax_replay": base}  # fmt: skip
    doc["variants"] = {}
    for v in variants:
        name = served if v == "as_run" else f"{served}:cum_weights={v}"
        inv = doc["policies"][name]["inventory_at_95_fill"]
        ws = np.array([w.cumulative for w in chosen[v]])
        sc = forecast_scores(name, q_levels, days, cums[v], panel.values, panel.dates, horizon)
        doc["variants"][v] = {
            "policy": name, "inventory_at_95_fill": inv,
            "vs_as_run": None if not inv or not ran else round(inv / ran - 1.0, 5),
            "vs_minmax": None if not inv or not base else round(inv / base - 1.0, 5),
            "cumulative_weights_mean_over_refits": [round(float(x), 3) for x in ws.mean(0)],
            "cumulative_weights_per_refit": ws.tolist(),
            "cover_pinball_mean": sc["pinball_mean"], "cover_coverage": sc["coverage"],
            "cover_level_move": sc["level_move"],
            "diagnostics": doc["policies"][name]["diagnostics"],
            "fill_rate": doc["policies"][name]["fill_rate"],
            "orders": doc["policies"][name]["orders"],
        }
    doc["validation_pinball"] = validation_table(vals, chosen, levels, integer)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print("remix equals recorded:", remix_equal, "| relearned weights equal:", relearned,
          "| fall = move_fall_upper:", doc.get("fall_equals_move_fall_upper"), "| run", ran,
          "replay",
          doc["reproduces_run"]["replay"], "| minmax", base)
    for v, row in doc["variants"].items():
        dg = row["diagnostics"]
        print(f"{v:11s} {row['inventory_at_95_fill']:>14,.0f} vs run {row['vs_as_run']:+.2%} "
              f"vs minmax {row['vs_minmax']:+.1%} fill {row['fill_rate']:.3f} orders "
              f"{row['orders']:>6d} churn {dg['level_churn']} excess "
              f"{dg['mean_excess_position']:,.0f} cover pinball {row['cover_pinball_mean']} "
              f"val pinball {doc['validation_pinball'][v]} "
              f"w {row['cumulative_weights_mean_over_refits']}")
    return 0


def validation_table(vals: list[Validation | None], chosen: dict[str, list[CombinationWeights]],
                     levels: FloatArray, integer: list[bool]) -> dict[str, float]:
    """Each variant's cumulative pinball (mean over levels and refits) on the validation
    origins its weights were learned on (the learning objective's pinball part)."""
    out = {}
    for v, ws in chosen.items():
        total, n = 0.0, 0
        for val, w, i in zip(vals, ws, integer, strict=True):
            if val is None:
                continue
            ok = np.isfinite(val.totals)
            for k, tau in enumerate(levels):
                c = w.cumulative[k]
                m = _post(c * val.lstm[..., k] + (1.0 - c) * val.lgbm[..., k], i)
                total += _pinball_level(val.totals[ok], m[ok], float(tau))
                n += 1
        out[v] = round(total / max(n, 1), 4)
    return out


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
