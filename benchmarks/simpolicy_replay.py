"""Replay a recorded `shelfcast simulate` run (benchmarks/simpolicy_record.py) from its recorded
forecasts, with the policy's level rules as variants, and score the recorded forecasts.

    python benchmarks/simpolicy_replay.py RUN.json RECORDING.npz OUT.json [--rules a,b,...]

RUN.json: the run's own `--json` (its config and data path); the replay simulates the same days
with the same config through `optimizer.simulation.simulate`, the forecast policies reading the
recorded cumulative quantiles (`forecast_levels`, the code `ForecastPolicy.levels` runs), the
non-forecast policies (min/max, empirical, forecast-errors) as the CLI builds them. With the
rule `none` every forecast policy must reproduce the run's inventory at 95% fill to the unit:
the script checks it and says so in OUT.json (`reproduces_run`).

Also written, per recorded policy: coverage and pinball of the recorded (L + R)-day quantiles
against the realised demand of the days they cover (day t's review: days t+1 .. t+L+R, the
days an order placed then must cover), and how much each level moves review to review
(mean |q_t - q_t-1| / mean q, per SKU pooled).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from forecasting.data import Panel, load_panel
from optimizer.level_rule import smooth_levels
from optimizer.simulation import (
    EmpiricalPolicy,
    FloatArray,
    MinMaxPolicy,
    RestockPolicy,
    SimulationConfig,
    cover_reviews,
    forecast_levels,
    simulate,
)

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class RecordedPolicy:
    """A forecast policy reading recorded cumulative quantiles; `rule` as ForecastPolicy's
    `level_rule` (`optimizer.simulation.LEVEL_RULES`), applied by the same code, or a
    bench-only experiment (`apply_rule`)."""

    name: str
    levels_q: FloatArray
    days: dict[str, int]
    cum: FloatArray
    horizon: int
    rule: str = "none"
    memory: Any = None

    def levels(self, history: FloatArray, end_day: np.datetime64, targets: FloatArray,
               config: SimulationConfig) -> tuple[FloatArray, FloatArray]:  # fmt: skip
        i = self.days[str(end_day)]
        cum: FloatArray = np.asarray(self.cum[i], dtype=np.float64)

        def at(steps: int) -> FloatArray:
            if steps != self.horizon:
                raise ValueError(f"recorded {self.horizon} steps, asked {steps}")
            return cum

        s, up, self.quantile_used = forecast_levels(self.levels_q, at, history, targets, config)
        return apply_rule(self, s, up, config)


def apply_rule(policy: RecordedPolicy, s: FloatArray, up: FloatArray, config: SimulationConfig
               ) -> tuple[FloatArray, FloatArray]:  # fmt: skip
    """`none` / `cover_mean` as ForecastPolicy's `level_rule`; bench-only experiments: `meanK`,
    `medianK`, `minK` over the last K reviews' levels."""
    if policy.rule == "none":
        return s, up
    if policy.memory is None:
        policy.memory = []
    if policy.rule == "cover_mean":
        out = smooth_levels(policy.memory, up, cover_reviews(config))
        return out, out.copy()
    kind = policy.rule.rstrip("0123456789")
    k = int(policy.rule[len(kind):])
    policy.memory.append(up)
    del policy.memory[:-k]
    stack = np.stack(policy.memory)
    if kind == "mean":
        out = stack.mean(axis=0)
    elif kind == "median":
        out = np.median(stack, axis=0)
    elif kind == "min":
        out = stack.min(axis=0)
    else:
        raise ValueError(f"unknown rule {policy.rule!r}")
    return out, out.copy()


def load_recording(path: Path) -> list[tuple[str, FloatArray, list[str], FloatArray, int]]:
    z = np.load(path)
    out = []
    k = 0
    while f"p{k}_name" in z:
        out.append((str(z[f"p{k}_name"]), z[f"p{k}_levels"], [str(d) for d in z[f"p{k}_days"]],
                    z[f"p{k}_cum"], int(z[f"p{k}_horizon"])))  # fmt: skip
        k += 1
    return out


def forecast_scores(name: str, levels: FloatArray, days: list[str], cum: FloatArray,
                    values: FloatArray, dates: Any, horizon: int) -> dict[str, Any]:
    """Coverage / pinball of recorded cover quantiles against realised cover demand."""
    index = {str(d): i for i, d in enumerate(dates)}
    sold = np.nan_to_num(values, nan=0.0)
    rows, real = [], []
    for k, day in enumerate(days):
        t = index[day]
        if t + horizon >= values.shape[1]:
            continue
        rows.append(k)
        real.append(sold[:, t + 1:t + 1 + horizon].sum(axis=1))
    q = cum[rows]  # (R, n, Q)
    y = np.stack(real)[:, :, None]  # (R, n, 1)
    err = y - q
    pinball = np.maximum(levels * err, (levels - 1.0) * err).mean(axis=(0, 1))
    cover = (y <= q).mean(axis=(0, 1))
    moves = np.abs(np.diff(cum, axis=0)).sum(axis=(0, 1)) / np.maximum(cum[1:].sum(axis=(0, 1)),
                                                                        1e-12)  # fmt: skip
    return {
        "policy": name, "origins": len(rows), "levels": [float(x) for x in levels],
        "coverage": [round(float(x), 4) for x in cover],
        "pinball": [round(float(x), 3) for x in pinball],
        "pinball_mean": round(float(pinball.mean()), 4),
        "level_move": [round(float(x), 4) for x in moves],
        "mean_quantile_sum": [round(float(x), 1) for x in cum.mean(axis=0).sum(axis=0)],
        "mean_realised_sum": round(float(np.stack(real).sum(axis=1).mean()), 1),
    }


def load_run(path: Path, max_series: int | None) -> tuple[dict[str, Any], SimulationConfig,
                                                          Panel]:
    """A recorded run's JSON, its simulation config and its data set's panel."""
    run = json.loads(path.read_text())
    cfg = dict(run["config"])
    cfg["sweep"] = tuple(cfg["sweep"])
    data = Path(run["dataset"])
    if not data.is_absolute():
        data = (REPO / data).resolve()
    return run, SimulationConfig(**cfg), load_panel(data, max_series=max_series)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("recording", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--rules", default="as_run", help="comma-separated level rules to replay "
                    "each recorded policy under: none, cover_mean, meanK, medianK, minK, and "
                    "as_run (the rule it ran: its JSON's level_rule, `none` in runs written "
                    "before it was recorded); the policy's own rule keeps the run's name")
    ap.add_argument("--vary", default="", help="comma-separated name parts: only the recorded "
                    "policies matching one get the other rules (all get the rule they ran)")
    ap.add_argument("--max-series", type=int, default=None, help="as the run's, if it had one")
    args = ap.parse_args(argv)
    run, config, panel = load_run(args.run, args.max_series)
    recorded = load_recording(args.recording)
    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    policies: list[RestockPolicy] = []
    for name, lv, days, cum, horizon in recorded:
        vary = [v for v in args.vary.split(",") if v]
        ran = run["policies"].get(name, {}).get("level_rule", "none")
        for rule in dict.fromkeys(ran if r == "as_run" else r for r in rules):
            if rule != ran and vary and not any(v in name for v in vary):
                continue
            label = name if rule == ran else f"{name}:level_rule={rule}"
            policies.append(RecordedPolicy(label, lv, {d: i for i, d in enumerate(days)}, cum,
                                           horizon, rule))  # fmt: skip
    for pname in run["policies"]:
        if pname in ("minmax", "minmax-lr"):
            policies.append(MinMaxPolicy(pname, protect_review=pname == "minmax-lr"))
        elif pname == "empirical":
            policies.append(EmpiricalPolicy(pname))
        elif pname == "forecast-errors":
            policies.append(EmpiricalPolicy(pname, level_window=28))
    started = time.perf_counter()
    result = simulate(panel.values, panel.dates, policies, config)
    doc = result.as_json()
    doc["replay_of"] = {"run": str(args.run), "recording": str(args.recording),
                        "command": run.get("command"), "rules": rules,
                        "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    checks = {}
    for name, res in doc["policies"].items():
        if name in run["policies"]:
            before = run["policies"][name]["inventory_at_95_fill"]
            checks[name] = (before, res["inventory_at_95_fill"])
    doc["reproduces_run"] = {k: {"run": a, "replay": b, "equal": a == b}
                             for k, (a, b) in checks.items()}  # fmt: skip
    doc["forecast_scores"] = [
        forecast_scores(name, lv, days, cum, panel.values, panel.dates, horizon)
        for name, lv, days, cum, horizon in recorded
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    base = doc["policies"].get("minmax", {}).get("inventory_at_95_fill")
    for name, res in sorted(doc["policies"].items(),
                            key=lambda kv: kv[1]["inventory_at_95_fill"] or 1e300):
        inv = res["inventory_at_95_fill"]
        vs = f"{inv / base - 1:+.1%}" if inv and base else ""
        dg = res["diagnostics"]
        print(f"{name:60s} {inv:>14,.0f} {vs:>7s} fill@.95 {res['fill_rate']:.3f} "
              f"orders {res['orders']:>6d} size {dg['mean_order_size']} churn {dg['level_churn']} "
              f"above {dg['share_above_reorder_point']} q {dg['mean_quantile_used']} "
              f"S {dg['mean_order_up_to']:,.0f} excess {dg['mean_excess_position']:,.0f}")
    for k, v in doc["reproduces_run"].items():
        print("reproduces", k, v)
    for sc in doc["forecast_scores"]:
        print(sc["policy"], "cov", sc["coverage"], "pinball", sc["pinball_mean"],
              "move", sc["level_move"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
