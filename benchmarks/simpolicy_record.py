"""Run one `shelfcast simulate` command unchanged and record what every forecast policy's model
answered each review: the cumulative quantiles over lead time + review period (the restock
math reads nothing else of a forecast when the lead time is fixed), per day, in an .npz.

`benchmarks/simpolicy_replay.py` replays the simulation from the recording with other policy
rules (bit for bit the same forecasts, seconds instead of minutes) and scores the forecasts'
upper quantiles against the realised demand.

    python benchmarks/simpolicy_record.py OUT.npz -- simulate --data ... (the CLI's arguments)

The recording wraps `ForecastPolicy._predict` (the memoised call policies sharing a model go
through), so the simulation, its JSON and its scores are the command's own.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from optimizer.simulation import ForecastPolicy
from shelfcast.cli import main as cli_main


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    records: dict[str, dict[str, Any]] = {}
    original = ForecastPolicy._predict

    def recording(self: ForecastPolicy, history: Any, horizon: int, end_day: Any) -> Any:
        forecast = original(self, history, horizon, end_day)
        rec = records.setdefault(self.name, {"days": [], "cum": [], "levels": forecast.levels,
                                             "horizon": horizon})
        rec["days"].append(str(end_day))
        rec["cum"].append(np.asarray(forecast.cumulative[:, horizon - 1, :], dtype=np.float64))
        return forecast

    ForecastPolicy._predict = recording  # type: ignore[method-assign]
    sys.argv = ["shelfcast", *argv[2:]]  # the JSON's "command": the simulate command itself
    try:
        rc = cli_main(argv[2:])
    finally:
        ForecastPolicy._predict = original  # type: ignore[method-assign]
    arrays: dict[str, Any] = {}
    for k, (name, rec) in enumerate(records.items()):
        arrays[f"p{k}_name"] = np.array(name)
        arrays[f"p{k}_days"] = np.array(rec["days"])
        arrays[f"p{k}_cum"] = np.stack(rec["cum"])
        arrays[f"p{k}_levels"] = np.asarray(rec["levels"])
        arrays[f"p{k}_horizon"] = np.array(rec["horizon"])
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    print(f"recorded {len(records)} forecast policies -> {out}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
