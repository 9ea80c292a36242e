"""The LSTM the demo serves without training: a small pre-trained model committed beside this
module (lstm_model/: model.npz and metadata.json), trained on the demo's own history before
the replayed days, served in numpy (no torch).

The demo serves it when the history it reads has the committed model's data fingerprint
(the default data file and `--events`); on other data it says so and trains one when torch
is installed (the `train` extra), else serves the committed model, saying it was trained on
other data.

Reproduce it (needs torch: pip install -e '.[train]'):

    python -m shelfcast.demo.served --data ../shared/data/uci_online_retail/transactions.csv.gz

which trains `quick_config()` on the same split the demo makes (no wall-clock cap, one
thread) and writes model.npz and metadata.json here (lstm_model/README.md has the figures).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from forecasting.lstm.artifact_files import (
    METADATA_FILE,
    NPZ_FILE,
    ArtifactError,
    read_metadata,
)

__all__ = ["COMMITTED_MODEL", "DEMO_EVENTS", "DEMO_SERIES", "CommittedModel", "committed_model",
           "main", "train_committed"]

COMMITTED_MODEL = Path(__file__).resolve().parent / "lstm_model"
DEMO_EVENTS = 20_000  # the replayed order lines the committed model was trained before
DEMO_SERIES = 400  # SKUs (most sold) it was trained on


@dataclass(frozen=True)
class CommittedModel:
    """The committed model directory, its version and the data fingerprint it was trained on."""

    path: Path
    model_version: str
    data_fingerprint: str


def committed_model(path: Path = COMMITTED_MODEL) -> CommittedModel | None:
    """The committed model (None when its files are missing or unreadable)."""
    try:
        meta = read_metadata(path)
    except (ArtifactError, OSError, ValueError):
        return None
    if not (path / NPZ_FILE).exists():
        return None
    return CommittedModel(path, str(meta["model_version"]), str(meta["data_fingerprint"]))


def train_committed(data: Path, out: Path, *, events: int = DEMO_EVENTS,
                    series: int = DEMO_SERIES) -> dict[str, object]:
    """Train the demo's model on the history before the last `events` order lines of `data`
    and write its model.npz and metadata.json into `out` (needs torch)."""
    import torch

    from forecasting.lstm import save_artifact, train_lstm
    from shelfcast.demo.scoring import split_history
    from shelfcast.quick_model import quick_config

    torch.set_num_threads(1)
    split = split_history(data, events, max_series=series)
    panel = split.panel
    cpu0 = time.process_time()
    result = train_lstm(panel, quick_config(), device="cpu")
    cpu_s = time.process_time() - cpu0
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        save_artifact(result.forecaster, tmp, data_fingerprint=panel.fingerprint(),
                      data={"path": data.name, "before": split.replay_first_day,
                            "events": events, "n_series": panel.n_series,
                            "n_days": panel.n_days, "first_day": str(panel.dates[0]),
                            "last_day": str(panel.dates[-1])},
                      metrics={**result.metrics, "train_cpu_s": cpu_s},
                      history=result.history)
        for name in (NPZ_FILE, METADATA_FILE):
            shutil.copyfile(Path(tmp) / name, out / name)
    meta = read_metadata(out)
    return {"model_version": meta["model_version"], "data_fingerprint": panel.fingerprint(),
            "n_series": panel.n_series, "n_days": panel.n_days, "train_cpu_s": round(cpu_s, 1),
            "npz_bytes": (out / NPZ_FILE).stat().st_size}


def main(argv: list[str] | None = None) -> int:
    """`python -m shelfcast.demo.served --data CSV [--out DIR]`: (re)train the committed model."""
    parser = argparse.ArgumentParser(prog="python -m shelfcast.demo.served",
                                     description="Train the demo's committed LSTM.")
    parser.add_argument("--data", type=Path, required=True, help="UCI transactions CSV")
    parser.add_argument("--out", type=Path, default=COMMITTED_MODEL)
    parser.add_argument("--events", type=int, default=DEMO_EVENTS)
    args = parser.parse_args(argv)
    try:
        report = train_committed(args.data, args.out, events=args.events)
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            raise
        print("error: training needs torch: pip install 'shelfcast[train]'", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
