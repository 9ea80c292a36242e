"""Where `LSTMConfig.year_ago_gaps` acts, and what it does to the LSTM there.

    python benchmarks/year_ago_gaps_check.py [--data ../shared/data] [--out DIR] [--train]

1. Identity (always): on every real set, the year-ago inputs at every origin of the whole
   history (what training and every backtest origin read) under "zero" and each other mode:
   which series and origin days differ. None differ: that set's training and forecasts are
   the same bit for bit (training and serving are seeded and deterministic on CPU).
2. `--train` (Rossmann): the LSTM of the protocol trained once on the history before the
   first origin (the year-ago inputs of its training are identical under both: part 1),
   then the protocol's 4 origins forecast with each setting; daily pinball per fold for
   the stores with a year-ago gap and for the others.

Writes `year_ago_gaps_check.json` in --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.combination_lever import DATA, SETS
from forecasting.data import Panel, load_panel
from forecasting.lstm.features import (
    RING_DAYS,
    YEAR_AGO_GAPS,
    year_ago_features,
    year_ago_span,
)
from forecasting.metrics import pinball

REAL = ("uci_online_retail", "rossmann", "freshretailnet")


def identity(panel: Panel, horizon: int, weeks: int) -> dict[str, Any]:
    """Series and origin days whose year-ago inputs differ between the two settings."""
    y = panel.values
    n = y.shape[0]
    width = year_ago_span(horizon, weeks)
    padded = np.concatenate([np.full((n, RING_DAYS - 1), np.nan), y], axis=1)
    series: set[int] = set()
    days: list[str] = []
    cells = 0
    scale = np.ones(n)
    for t in range(panel.n_days):
        span = padded[:, t : t + width]
        a = year_ago_features(span, scale, panel.dates[t], horizon, weeks, "zero")
        moved = np.zeros(n, dtype=bool)
        for other in YEAR_AGO_GAPS[1:]:
            b = year_ago_features(span, scale, panel.dates[t], horizon, weeks, other)
            moved |= np.any(a != b, axis=1)
        if moved.any():
            cells += int(moved.sum())
            series.update(np.flatnonzero(moved).tolist())
            days.append(str(panel.dates[t]))
    return {"series": len(series), "series_ids": [str(panel.ids[i]) for i in sorted(series)],
            "origins": cells, "first_day": days[0] if days else None,
            "last_day": days[-1] if days else None, "n_series": n, "n_days": panel.n_days}


def train_check(panel: Panel, horizon: int, gap_ids: list[str]) -> dict[str, Any]:
    """One LSTM trained before the first origin, each setting's forecasts at the 4 origins;
    daily pinball of the gap stores and the others per fold."""
    import torch

    from forecasting.lstm import make_lstm

    torch.set_num_threads(1)
    folds = 4
    cutoffs = [panel.n_days - horizon - k * horizon for k in range(folds - 1, -1, -1)]
    model = make_lstm(device="cpu", horizon=horizon, year_ago_gaps="zero")
    t0 = time.perf_counter()
    model.fit(panel.head(cutoffs[0]))
    fit_s = time.perf_counter() - t0
    gap = np.isin(np.asarray(panel.ids).astype(str), gap_ids)
    base_config = model.config
    out: dict[str, Any] = {"fit_seconds": fit_s, "gap_stores": int(gap.sum()), "folds": []}
    for k, cutoff in enumerate(cutoffs):
        history = panel.values[:, :cutoff]
        actual = panel.values[:, cutoff : cutoff + horizon]
        row: dict[str, Any] = {"fold": k, "origin": str(panel.dates[cutoff - 1])}
        for gaps in YEAR_AGO_GAPS:
            model.config = dataclasses.replace(base_config, year_ago_gaps=gaps)
            fc = model.predict(history, horizon, end_days=panel.dates[cutoff - 1])
            loss = np.asarray(pinball(actual, fc.daily, fc.levels, axis=()))  # (n, H, Q)
            seen = np.isfinite(actual)
            row[gaps] = {
                group: float(np.mean(loss[cells & seen]))
                for group, cells in (("gap_stores", gap[:, None] & np.ones_like(seen)),
                                     ("other_stores", ~gap[:, None] & np.ones_like(seen)),
                                     ("all", np.ones_like(seen)))}
            row[gaps]["gap_stores_median_ratio"] = float(np.nanmedian(
                fc.daily[gap, :, fc.levels.tolist().index(0.5)]
                / np.where(actual[gap] > 0, actual[gap], np.nan)))
        out["folds"].append(row)
        print(f"  fold {k} {row['origin']}: " + "  ".join(
            f"{g}: gap {row[g]['gap_stores']:.1f} other {row[g]['other_stores']:.1f} "
            f"all {row[g]['all']:.1f} (gap median/actual {row[g]['gap_stores_median_ratio']:.2f})"
            for g in YEAR_AGO_GAPS), file=sys.stderr, flush=True)
    model.config = base_config
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path,
                    default=Path("benchmarks/results/generalisation/year_ago_gaps"))
    ap.add_argument("--train", action="store_true", help="also the Rossmann LSTM check")
    args = ap.parse_args()
    from forecasting.lstm.config import LSTMConfig

    weeks = LSTMConfig().year_ago_weeks
    doc: dict[str, Any] = {"identity": {}, "load_avg": os.getloadavg()[0]}
    for name in REAL:
        rel, horizon, kwargs = SETS[name]
        panel = load_panel(args.data / rel, **kwargs)
        doc["identity"][name] = identity(panel, horizon, weeks)
        got = doc["identity"][name]
        print(f"{name}: {got['series']} series, {got['origins']} (series, origin) cells "
              f"differ ({got['first_day']} .. {got['last_day']})", file=sys.stderr)
        if args.train and name == "rossmann":
            doc["rossmann_lstm"] = train_check(panel, horizon, got["series_ids"])
    doc["cpu_seconds"] = time.process_time()
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / "year_ago_gaps_check.json"
    target.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {target}", file=sys.stderr)


if __name__ == "__main__":
    main()
