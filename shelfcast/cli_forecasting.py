"""`shelfcast train | backtest | bench inference`: the forecasting commands of the CLI.

Wired into shelfcast.cli by `register(subparsers)` (adds the parsers) and `run(args)`
(returns an exit code for the commands it added). torch and the peers load lazily.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from runtime.errors import ConfigError
from runtime.paths import recorded_args, recorded_path

__all__ = ["add_bench_commands", "add_commands", "add_data_args", "run"]

DEFAULT_MODELS = "seasonal_naive,moving_average,ets,tsb,lightgbm,lstm"
SERVED = "served"  # in --models: the model the stream serves by default (served_model())


def served_model() -> str:
    """The registered name a worker serves when nothing is configured: the default of
    Settings.model (SHELFCAST_MODEL), read from the field so the two cannot drift."""
    from runtime.settings import Settings

    return str(Settings.model_fields["model"].default)


def resolve_models(text: str) -> list[str]:
    """--models as registry names: `served` becomes served_model(), duplicates go (first
    place kept)."""
    names = [served_model() if m.strip() == SERVED else m.strip()
             for m in text.split(",") if m.strip()]
    return list(dict.fromkeys(names))


# The optional library each model needs, checked before a backtest starts (not after the
# models before it have run).
MODEL_MODULES = {"ets": "statsforecast", "lightgbm": "lightgbm", "lstm": "torch",
                 "lstm_lgbm": "lightgbm"}


def _require(modules: list[str]) -> None:
    """ModuleNotFoundError for the first module that is not installed (the CLI turns it into
    a one-line error naming the extra)."""
    from importlib.util import find_spec

    for module in modules:
        if find_spec(module) is None:
            raise ModuleNotFoundError(f"No module named {module!r}", name=module)


def add_data_args(p: argparse.ArgumentParser) -> None:
    """The long-CSV options every command that reads a demand panel takes."""
    p.add_argument("--data", type=Path, required=True,
                   help="long CSV (unique_id, ds, y; .gz ok; store,item,date,sales recognised)")
    p.add_argument("--id-cols", default=None, help="comma-separated id columns (joined by '/')")
    p.add_argument("--date-col", default=None, help="date column (default ds)")
    p.add_argument("--target-col", default=None, help="demand column (default y)")
    p.add_argument("--max-series", type=int, default=None, help="keep the first N series")


def add_covariate_arg(p: argparse.ArgumentParser) -> None:
    """--covariates: read the file's known-in-advance covariates (forecasting.covariates)."""
    p.add_argument("--covariates", choices=("auto", "none"), default="auto",
                   help="auto (default): read the file's known-in-advance covariates, when it "
                        "has them (promo / activity_flag, price_ratio / discount columns), for "
                        "the models that use them (lightgbm, lstm_lgbm: planned promotions, "
                        "served from shop.promotions); none: demand only")


def _lstm_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--horizon", type=int, default=14, help="buckets to forecast (default 14)")
    p.add_argument("--hidden", type=int, default=None, help="LSTM hidden units")
    p.add_argument("--layers", type=int, default=None, help="LSTM layers")
    p.add_argument("--max-epochs", type=int, default=None, help="epoch cap (early stopping)")
    p.add_argument("--patience", type=int, default=None, help="early-stopping patience")
    p.add_argument("--val-days", type=int, default=None, help="days held out for validation")
    p.add_argument("--loss", choices=["pinball", "normal"], default=None,
                   help="quantile head (pinball, default) or Gaussian likelihood (ablation)")
    p.add_argument("--mean-loss", choices=["poisson", "tweedie"], default=None,
                   help="deviance of the LSTM's mean head (default poisson; tweedie: power 1.8)")
    p.add_argument("--no-calibration", dest="calibrate", action="store_false", default=None,
                   help="keep the LSTM's raw quantiles (no interval calibration on the "
                   "validation days)")
    p.add_argument("--batch-series", type=int, default=None,
                   help="series per gradient step (default 16)")
    p.add_argument("--calendar", choices=["uk", "none"], default=None, help="holiday calendar")
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default=None,
                   help="learning-rate schedule over --max-epochs")
    p.add_argument("--state-reset-prob", type=float, default=None,
                   help="training: chance per series and BPTT chunk that its state is zeroed")
    p.add_argument("--ema-decay", type=float, default=None,
                   help="per-step decay of the kept weight average (default 0.99; 0: raw weights)")
    p.add_argument("--mean-weight", type=float, default=None,
                   help="weight of the mean head's deviance in the loss (default 0.5)")
    p.add_argument("--lr", type=float, default=None, help="AdamW learning rate (default 3e-3)")
    p.add_argument("--year-ago-weeks", type=int, default=None,
                   help="same-weekday weeks either side of a year-ago day (default 2)")
    p.add_argument("--head-month", choices=["none", "onehot", "fourier"], default=None,
                   help="the head sees each forecast day's calendar month (default onehot)")
    p.add_argument("--head-month-pairs", type=int, default=None,
                   help="annual Fourier pairs per step for --head-month fourier (default 2)")
    p.add_argument("--no-year-ago-prior", dest="year_ago_prior", action="store_const",
                   const=False, default=None, help="no gated year-ago multiplier (ablation)")
    p.add_argument("--no-year-ago-mask", dest="year_ago_masks_calendar",
                   action="store_const", const=False, default=None,
                   help="keep the head-calendar month part where a year-ago level exists")
    p.add_argument("--max-train-days", type=int, default=None,
                   help="only the last N days feed gradients (default 730)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")


def add_commands(subparsers: Any) -> None:
    """Add `train` and `backtest` to the `shelfcast` subparsers."""
    train = subparsers.add_parser(
        "train", help="train the global LSTM and write a versioned model directory",
        description="Train the global probabilistic LSTM on a long-format demand CSV; writes "
        "model.pt + metadata.json (features, horizon, scaling, data fingerprint, metrics).")
    add_data_args(train)
    add_covariate_arg(train)
    _lstm_args(train)
    train.add_argument("--model", choices=["lstm", "lstm_lgbm"], default=None,
                       help="what to train: the LSTM, or the LSTM mixed with LightGBM "
                            "(lstm_lgbm); default: the served model")
    train.add_argument("--out", type=Path, required=True, help="model directory to write")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")

    bt = subparsers.add_parser(
        "backtest", help="rolling-origin backtest of forecasters (MASE, WAPE, pinball, coverage)")
    add_data_args(bt)
    add_covariate_arg(bt)
    _lstm_args(bt)
    bt.add_argument("--folds", type=int, default=4, help="forecast origins (default 4)")
    bt.add_argument("--step", type=int, default=None, help="days between origins (= horizon)")
    bt.add_argument("--models", default=DEFAULT_MODELS,
                    help=f"default {DEFAULT_MODELS}; `{SERVED}`: the model the stream serves "
                         "by default (the JSON's \"served\")")
    bt.add_argument("--refit", choices=["every", "once"], default="every",
                    help="retrain global models at every origin or only the first")
    bt.add_argument("--jobs", type=int, default=1,
                    help="models run at once in forked processes; ETS also fits its series "
                    "in this many processes (default 1)")
    bt.add_argument("--json", type=Path, default=None, help="write the scores here")
    bt.add_argument("--plot", type=Path, default=None, help="write a PNG summary here")



def add_bench_commands(bench_sub: Any) -> None:
    """Add `bench inference` to the `shelfcast bench` subparsers."""
    inf = bench_sub.add_parser(
        "inference", help="LSTM series/s by batch size, full vs incremental, batcher latency")
    inf.add_argument("--json", type=Path, default=None, help="write the results here")
    inf.add_argument("--model", type=Path, default=None,
                     help="trained model dir (default: an untrained net of the default size)")
    inf.add_argument("--batch-sizes", default="1,8,64,512,1024,4096,16384")
    inf.add_argument("--window", type=int, default=56, help="full-window length (buckets)")
    inf.add_argument("--device", default="auto")
    inf.add_argument("--threads", type=int, default=1)
    inf.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    inf.add_argument("--requests", type=int, default=20_000,
                     help="concurrent single-series requests for the latency test")
    inf.add_argument("--warmup-days", type=_days, default=None,
                     help="also measure the full window with the LSTM warmed up over only "
                          "the last N days (encode's warmup_days; year-ago inputs unchanged)")


def _days(text: str) -> int:
    """argparse type: a whole number of days >= 1."""
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of days: {text!r}") from None
    if days < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 day, got {days}")
    return days


def _config(args: argparse.Namespace) -> Any:
    from forecasting.lstm import LSTMConfig

    overrides = {k: getattr(args, k) for k in ("hidden", "layers", "max_epochs", "patience",
                                                "val_days", "loss", "mean_loss",
                                                "batch_series", "calendar", "seed",
                                                "calibrate", "lr_schedule", "ema_decay",
                                                "state_reset_prob", "mean_weight", "lr",
                                                "max_train_days", "year_ago_weeks", "head_month",
                                                "head_month_pairs", "year_ago_prior",
                                                "year_ago_masks_calendar")
                 if getattr(args, k, None) is not None}
    return LSTMConfig(horizon=args.horizon, **overrides)


def _panel(args: argparse.Namespace) -> Any:
    from forecasting.data import load_panel

    ids = args.id_cols.split(",") if args.id_cols else None
    return load_panel(args.data, id_cols=ids, date_col=args.date_col,
                      target_col=args.target_col, max_series=args.max_series,
                      covariates=getattr(args, "covariates", "none") == "auto")


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def _train(args: argparse.Namespace) -> int:
    from forecasting.model_dir import SAVABLE, save_model_dir, train_model

    name = args.model or (served_model() if served_model() in SAVABLE else "lstm")
    if name == "lstm_lgbm":
        _require(["lightgbm"])
    _threads(args.threads)
    panel = _panel(args)
    config = _config(args)
    print(f"training {name} on {panel.n_series} series x {panel.n_days} days "
          f"({panel.dates[0]} .. {panel.dates[-1]})", file=sys.stderr)
    result = train_model(name, panel, config, device=args.device,
                         progress=not args.no_progress)
    data = {"path": recorded_path(args.data), "n_series": panel.n_series, "n_days": panel.n_days,
            "first_day": str(panel.dates[0]), "last_day": str(panel.dates[-1])}
    version = save_model_dir(result.forecaster, args.out, data_fingerprint=panel.fingerprint(),
                             data=data, metrics=result.metrics, history=result.history)
    print(json.dumps({"model_dir": str(args.out), "model": name, "model_version": version,
                      "model_id": version.partition("+")[2], **result.metrics}, indent=2))
    return 0


def _backtest(args: argparse.Namespace) -> int:
    from forecasting.backtest import rolling_origin
    from forecasting.registry import available_forecasters, make_forecaster

    models = resolve_models(args.models)
    unknown = [m for m in models if m not in available_forecasters()]
    if unknown or not models:
        raise ConfigError(f"--models: unknown {', '.join(unknown) or '(none given)'} "
                          f"(registered: {', '.join(available_forecasters())})")
    _require([MODEL_MODULES[m] for m in models if m in MODEL_MODULES]
             + (["matplotlib"] if args.plot else []))
    panel = _panel(args)
    lstm_config = _config(args)
    # Offered to every model; each takes those its registry entry lists.
    shared = {"horizon": args.horizon, "n_jobs": args.jobs, "device": args.device,
              "config": lstm_config}

    def factory(name: str) -> Any:
        model = make_forecaster(name, shared=shared)
        model.cap_threads(args.threads)
        return model

    def on_fold(name: str, fold: int, s: dict[str, float]) -> None:
        print(f"{name:>15} fold {fold}: mase {s['mase']:.3f} wape {s['wape']:.3f} "
              f"pinball {s['pinball']:.3f} cov80 {s['coverage_80']:.3f} "
              f"cov95 {s['coverage_95']:.3f} fit {s['fit_seconds']:.1f}s", file=sys.stderr,
              flush=True)

    t0 = time.perf_counter()
    result = rolling_origin(panel, models, horizon=args.horizon, folds=args.folds,
                            step=args.step, refit=args.refit == "every", factory=factory,
                            on_fold=on_fold, jobs=args.jobs)
    doc = result.to_json()
    doc["data"] = recorded_path(args.data)
    doc["served"] = served_model()
    doc["lstm_config"] = lstm_config.to_json()
    doc["wall_seconds"] = time.perf_counter() - t0
    doc["command"] = "shelfcast " + " ".join(recorded_args(sys.argv[1:])) if sys.argv[0].endswith(
        "shelfcast") else None
    _print_table(result.models)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    if args.plot:
        from forecasting.backtest import plot_backtest

        plot_backtest(result, panel, args.plot)
    return 0


def _print_table(models: dict[str, dict[str, float]]) -> None:
    from rich.console import Console
    from rich.table import Table

    cols = ["mase", "wape", "pinball", "coverage_80", "coverage_95", "pinball_total",
            "fit_seconds", "predict_seconds"]
    table = Table("model", *cols)
    for name, s in models.items():
        table.add_row(name, *(f"{s[c]:.3f}" for c in cols))
    Console(stderr=True).print(table)


def _bench(args: argparse.Namespace) -> int:
    from forecasting.lstm.bench import run_inference_bench

    sizes = [int(x) for x in args.batch_sizes.split(",")]
    doc = run_inference_bench(model_dir=args.model, batch_sizes=sizes, window=args.window,
                              device=args.device, threads=args.threads,
                              seconds=args.seconds, requests=args.requests,
                              warmup_days=args.warmup_days)
    text = json.dumps(doc, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    return 0


def run(args: argparse.Namespace) -> int | None:
    """Run a forecasting command; None when the command is not one of ours."""
    if args.command == "train":
        return _train(args)
    if args.command == "backtest":
        return _backtest(args)
    if args.command == "bench" and args.bench_command == "inference":
        return _bench(args)
    return None
