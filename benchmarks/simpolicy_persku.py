"""Per SKU: where the served policy's order-up-to ratchet exceeds the LSTM's (recorded run).

    python benchmarks/simpolicy_persku.py RUN.json RECORDING.npz

Recomputes each review's level at the 0.95 target from the recorded forecasts (the first two
recorded policies: served, then lstm, as benchmarks/simpolicy_runs.sh records them) and a
ratchet proxy per SKU: the mean over days of (the max of the last L + 1 levels) - today's
level, the stock a fallen level leaves. Prints how the served - lstm difference spreads.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from optimizer.simulation import FloatArray, SimulationConfig, forecast_levels


def ratchet(levels: FloatArray, days: int) -> FloatArray:
    """(SKUs,) mean over days of the max of the last `days` levels minus today's."""
    out = np.zeros_like(levels)
    for t in range(levels.shape[0]):
        out[t] = levels[max(0, t - days + 1):t + 1].max(axis=0) - levels[t]
    return np.asarray(out.mean(axis=0), dtype=np.float64)


def churn(levels: FloatArray) -> FloatArray:
    """(SKUs,) mean |S_t - S_t-1| over the mean S."""
    moves = np.abs(np.diff(levels, axis=0)).mean(axis=0)
    return np.asarray(moves / np.maximum(levels.mean(axis=0), 1e-9), dtype=np.float64)


def main(argv: list[str]) -> int:
    run = json.loads(open(argv[0]).read())
    cfg = dict(run["config"])
    cfg["sweep"] = tuple(cfg["sweep"])
    config = SimulationConfig(**cfg)
    z = np.load(argv[1])
    targets = np.array([0.95])
    levels: dict[str, FloatArray] = {}
    for k in (0, 1):
        cum, lv = z[f"p{k}_cum"], z[f"p{k}_levels"]
        history = np.zeros((cum.shape[1], 1))
        levels[str(z[f"p{k}_name"])] = np.stack([
            forecast_levels(lv, lambda _s, c=cum[t]: c, history, targets, config)[1][0]
            for t in range(cum.shape[0])
        ])  # fmt: skip
    (na, a), (nb, b) = levels.items()
    days = config.lead_time_days + 1
    ra, rb = ratchet(a, days), ratchet(b, days)
    print(f"{na} vs {nb}: summed mean level {a.mean(0).sum():,.0f} vs {b.mean(0).sum():,.0f}, "
          f"ratchet proxy {ra.sum():,.0f} vs {rb.sum():,.0f}")
    d = ra - rb
    order = np.argsort(-d)
    for top in (5, 10, 25, 50, 100):
        print(f"top {top} SKUs carry {d[order[:top]].sum():,.0f} of the {d.sum():,.0f} extra "
              f"ratchet ({d[order[:top]].sum() / d.sum():.0%})")
    print(f"SKUs with the served ratchet above the LSTM's: {(d > 0).sum()} of {d.size}")
    print(f"median per-SKU churn: served {np.median(churn(a)):.3f}, lstm {np.median(churn(b)):.3f}")
    print("top 10 SKUs: id, mean S served / lstm, churn served / lstm, max S served / lstm")
    ca, cb = churn(a), churn(b)
    for i in order[:10]:
        print(i, round(a[:, i].mean()), round(b[:, i].mean()), round(ca[i], 3), round(cb[i], 3),
              round(a[:, i].max()), round(b[:, i].max()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
