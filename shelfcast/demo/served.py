"""The model the demo serves without training: a small pre-trained `lstm_lgbm` (the served
default: LSTM + LightGBM mixed per quantile, forecasting.combination) committed beside this
module (model/), trained on the demo's own history before the replayed days. It serves
without torch: the LSTM part in numpy from lstm/model.npz, LightGBM from its model texts.

The demo serves it when SHELFCAST_MODEL is its kind (lstm_lgbm; `lstm` serves its lstm/
part, an LSTM model directory of its own) and the history it reads has the committed
model's data fingerprint (the default data file and `--events`); on other data it says so
and trains one when torch is installed (the `train` extra), else serves the committed
model, saying it was trained on other data.

Reproduce it (needs torch: pip install -e '.[train]'):

    python -m shelfcast.demo.served --data ../shared/data/uci_online_retail/transactions.csv.gz

which trains it as the demo's on-the-spot path does (`shelfcast.quick_model.train_or_reuse`
with `quick_config()` and the light LightGBM part, on the same split, one thread; no
wall-clock cap) and writes only what serving reads here (no model.pt); model/README.md has
the figures.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from forecasting.lstm.artifact_files import (
    NPZ_FILE,
    ArtifactError,
    read_metadata,
)

__all__ = ["COMMITTED_MODEL", "DEMO_EVENTS", "DEMO_MODEL", "DEMO_SERIES", "CommittedModel",
           "committed_model", "main", "train_committed"]

COMMITTED_MODEL = Path(__file__).resolve().parent / "model"
DEMO_MODEL = "lstm_lgbm"  # the served default (runtime.settings), what is committed
DEMO_EVENTS = 20_000  # the replayed order lines the committed model was trained before
DEMO_SERIES = 400  # SKUs (most sold) it was trained on
LSTM_PART = "lstm"  # the combination's LSTM part: an LSTM model directory of its own


@dataclass(frozen=True)
class CommittedModel:
    """A committed model directory: what it is (`kind`: its registered name), its version and
    the data fingerprint it was trained on."""

    path: Path
    model_version: str
    data_fingerprint: str
    kind: str = DEMO_MODEL

    def serving(self, kind: str) -> CommittedModel | None:
        """The committed model that serves as `kind`: this one, or for `lstm` the LSTM part
        of this `lstm_lgbm` (None when there is none)."""
        if kind == self.kind:
            return self
        if kind == "lstm" and self.kind == "lstm_lgbm":
            return committed_model(self.path / LSTM_PART)
        return None


def committed_model(path: Path = COMMITTED_MODEL) -> CommittedModel | None:
    """The committed model (None when its files are missing or unreadable)."""
    try:
        meta = read_metadata(path)
    except (ArtifactError, OSError, ValueError):
        return None
    kind = str(meta.get("model", "lstm"))
    if not (path / (f"{LSTM_PART}/{NPZ_FILE}" if kind == "lstm_lgbm" else NPZ_FILE)).exists():
        return None
    return CommittedModel(path, str(meta["model_version"]), str(meta["data_fingerprint"]), kind)


def _copy_serving_files(src: Path, out: Path) -> None:
    """What serving reads: metadata.json and the parts, without the torch weights (model.pt;
    the LSTM part serves from model.npz), LightGBM's booster texts gzipped (a third of
    their size; the model id is over the texts, so it is the same)."""
    for item in sorted(src.iterdir()):
        if item.is_dir():
            _copy_serving_files(item, out / item.name)
        elif item.name.startswith("booster_") and item.suffix == ".txt":
            out.mkdir(parents=True, exist_ok=True)
            # mtime=0: the same text gives the same bytes (a rerun changes no file)
            (out / f"{item.name}.gz").write_bytes(gzip.compress(item.read_bytes(), 9, mtime=0))
        elif item.name != "model.pt":
            out.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(item, out / item.name)


def train_committed(data: Path, out: Path, *, events: int = DEMO_EVENTS,
                    series: int = DEMO_SERIES, model: str = DEMO_MODEL) -> dict[str, object]:
    """Train the demo's model on the history before the last `events` order lines of `data`,
    as the demo trains one on the spot, and write what serving reads into `out` (needs
    torch). Files of an earlier model there are replaced; README.md is kept."""
    from shelfcast.demo.scoring import split_history
    from shelfcast.quick_model import quick_config, train_or_reuse

    split = split_history(data, events, max_series=series)
    panel = split.panel
    with tempfile.TemporaryDirectory() as tmp:
        trained = train_or_reuse(panel, quick_config(), cache=Path(tmp), model=model,
                                 data={"path": data.name, "before": split.replay_first_day,
                                       "events": events})
        out.mkdir(parents=True, exist_ok=True)
        for old in out.iterdir():
            if old.name != "README.md":
                shutil.rmtree(old) if old.is_dir() else old.unlink()
        _copy_serving_files(trained.path, out)
    meta = read_metadata(out)
    files = {str(f.relative_to(out)): f.stat().st_size for f in sorted(out.rglob("*"))
             if f.is_file() and f.name != "README.md"}
    return {"model_version": meta["model_version"], "data_fingerprint": panel.fingerprint(),
            "n_series": panel.n_series, "n_days": panel.n_days,
            "first_day": str(panel.dates[0]), "last_day": str(panel.dates[-1]),
            "before": split.replay_first_day, "train_cpu_s": round(trained.train_cpu_s, 1),
            "bytes": sum(files.values()), "files": files}


def main(argv: list[str] | None = None) -> int:
    """`python -m shelfcast.demo.served --data CSV [--out DIR]`: (re)train the committed model."""
    parser = argparse.ArgumentParser(prog="python -m shelfcast.demo.served",
                                     description="Train the demo's committed model.")
    parser.add_argument("--data", type=Path, required=True, help="UCI transactions CSV")
    parser.add_argument("--out", type=Path, default=COMMITTED_MODEL)
    parser.add_argument("--events", type=int, default=DEMO_EVENTS)
    parser.add_argument("--model", choices=("lstm_lgbm", "lstm"), default=DEMO_MODEL)
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"error: --data {args.data}: not found", file=sys.stderr)
        return 1
    try:
        report = train_committed(args.data, args.out, events=args.events, model=args.model)
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            raise
        print("error: training needs torch: pip install 'shelfcast[train]'", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
