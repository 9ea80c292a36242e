"""`shelfcast retrain`: the arguments of champion/challenger retraining (shelfcast/retrain.py
does the work). Wired into shelfcast.cli as a plugin: `add_commands`, `run`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from runtime.errors import ConfigError

__all__ = ["add_bench_commands", "add_commands", "run"]

EPILOG = """examples:
  shelfcast retrain                       # once (SHELFCAST_DATABASE_URL, SHELFCAST_MODEL_PATH)
  shelfcast retrain --max-epochs 10 --max-seconds 600 --json retrain.json
  shelfcast retrain --on-drift            # once per model_drift alert episode

Promotion: the challenger replaces the champion when its mean pinball loss on the same folds
is lower by more than --margin (relative); within the margin, only when its 80% interval
coverage is closer to 0.80 by more than --coverage-margin. Every decision is a row of
model_versions.
"""


def add_commands(subparsers: Any) -> None:
    """Add `retrain` to the `shelfcast` subparsers."""
    from forecasting.promotion import COVERAGE_MARGIN, PINBALL_MARGIN
    from shelfcast.cli_forecasting import _lstm_args

    p = subparsers.add_parser(
        "retrain", help="train a challenger on demand_history; promote it if it beats the "
        "serving model", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Champion/challenger retraining from the demand the system recorded "
        "(demand_history): a challenger LSTM trained on the days before the backtest, both "
        "models scored on the same rolling-origin folds of the most recent weeks, the winner "
        "written into the model directory atomically (the workers roll it in), the decision "
        "recorded in model_versions.")
    p.add_argument("--model-dir", type=Path, default=None,
                   help="the serving model directory (default: SHELFCAST_MODEL_PATH)")
    p.add_argument("--folds", type=int, default=2, help="backtest origins (default 2)")
    p.add_argument("--step", type=int, default=None,
                   help="days between origins (default: --horizon)")
    p.add_argument("--history-days", type=int, default=730,
                   help="read only the last N days of demand_history (default 730; 0 = all)")
    p.add_argument("--max-seconds", type=float, default=1800.0,
                   help="training time budget in seconds (default 1800; 0 = none)")
    p.add_argument("--margin", type=float, default=PINBALL_MARGIN,
                   help=f"relative pinball gain the challenger needs (default {PINBALL_MARGIN})")
    p.add_argument("--coverage-margin", type=float, default=COVERAGE_MARGIN,
                   help="tie-break: how much closer to 0.80 its 80%% coverage must be "
                   f"(default {COVERAGE_MARGIN})")
    p.add_argument("--json", type=Path, default=None, help="write the outcome here")
    p.add_argument("--no-progress", action="store_true",
                   help="epoch lines instead of a progress bar (the default off a terminal)")
    drift = p.add_argument_group("drift trigger")
    drift.add_argument("--on-drift", action="store_true",
                       help="follow the alerts topic; retrain once per model_drift episode")
    drift.add_argument("--group", default=None,
                       help="consumer group (default: <app id>-retrain)")
    drift.add_argument("--from-beginning", action="store_true",
                       help="a new group starts at the oldest retained alert")
    drift.add_argument("--max-runs", type=int, default=None, help="stop after N retrainings")
    drift.add_argument("--settle-buckets", type=int, default=0, metavar="N",
                       help="wait until N buckets after the bucket a drift episode opened at "
                       "are recorded before retraining (the challenger learns the new demand "
                       "from them; default 0: at once)")
    drift.add_argument("--exit-when-idle", type=float, default=None, metavar="SECONDS",
                       help="stop once no alert came for this long")
    _lstm_args(p)


def add_bench_commands(bench_sub: Any) -> None:
    """No benchmarks of our own."""


def _options(args: argparse.Namespace, model_dir: Path) -> Any:
    from forecasting.retrain import BacktestProtocol
    from shelfcast.cli_forecasting import _config
    from shelfcast.retrain import RetrainOptions

    if args.folds < 1 or (args.step is not None and args.step < 1) or args.horizon < 1:
        raise ConfigError("--folds, --step and --horizon must be >= 1")
    if min(args.history_days, args.max_seconds, args.settle_buckets, args.margin,
           args.coverage_margin) < 0:
        raise ConfigError("--history-days, --max-seconds, --settle-buckets and the margins "
                          "must be >= 0")
    config = _config(args)
    protocol = BacktestProtocol(horizon=args.horizon, folds=args.folds, step=args.step,
                                val_days=config.val_days)
    return RetrainOptions(
        model_dir=model_dir, protocol=protocol, config=config,
        history_days=args.history_days or None, max_seconds=args.max_seconds or None,
        margin=args.margin, coverage_margin=args.coverage_margin, device=args.device,
        progress_bar=not args.no_progress and sys.stderr.isatty())


def run(args: argparse.Namespace) -> int | None:
    """Run `retrain`; None when the command is not ours."""
    if args.command != "retrain":
        return None
    import torch

    from runtime.settings import Settings
    from shelfcast.retrain import retrain_on_drift, retrain_once, summary_table, write_json

    settings = Settings()
    if settings.database_url is None:
        raise ConfigError("no database configured: set SHELFCAST_DATABASE_URL=postgresql://... "
                          "(retraining reads demand_history and records model_versions)")
    model_dir = args.model_dir or settings.model_path
    if model_dir is None:
        raise ConfigError("no model directory: pass --model-dir DIR or set "
                          "SHELFCAST_MODEL_PATH (the directory the workers serve from)")
    options = _options(args, model_dir)
    torch.set_num_threads(args.threads)
    url = settings.database_url.get_secret_value()
    if args.on_drift:
        if settings.kafka_bootstrap is None:
            raise ConfigError("--on-drift reads the alerts topic: set SHELFCAST_KAFKA_BOOTSTRAP")
        outcomes = asyncio.run(retrain_on_drift(
            settings, url, options, group_id=args.group, from_beginning=args.from_beginning,
            max_runs=args.max_runs, idle_exit_s=args.exit_when_idle,
            settle_buckets=args.settle_buckets))
    else:
        outcomes = [asyncio.run(retrain_once(settings, url, options))]
    for outcome in outcomes:
        print(summary_table(outcome))
    if args.json and outcomes:
        write_json(args.json, outcomes)
    return 0
