"""`shelfcast simulate` and `shelfcast bench db`: the optimizer's commands of the CLI.

Wired into shelfcast.cli by `add_commands(subparsers)`, `add_bench_commands(bench_subparsers)`
and `run(args)`, which returns an exit code for these commands and None for any other.
Mistakes raise ConfigError (one line). numpy, scipy, matplotlib and torch load lazily.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from runtime.errors import ConfigError
from runtime.paths import recorded_args, recorded_path
from shelfcast.cli_forecasting import SERVED, add_covariate_arg, add_data_args, served_model

if TYPE_CHECKING:
    from forecasting.lstm import LSTMForecaster
    from optimizer.simulation import ForecastPolicy, RestockPolicy, SimulationResult

__all__ = ["DEFAULT_POLICIES", "add_bench_commands", "add_commands", "run"]

DEFAULT_POLICIES = "forecast:seasonal_naive,forecast:moving_average,minmax"
DEFAULT_DAYS = 365  # the default protocol: the last year, trained on all history before it
POLICY_KEYS = ("tail", "level_rule")
"""Keys of forecast:NAME:key=value that set the restock policy, not the model (no model takes
an option of these names)."""


def add_commands(subparsers: Any) -> None:
    """Add `simulate` to the `shelfcast` subparsers."""
    sim = subparsers.add_parser(
        "simulate", help="closed-loop restock simulation on real daily demand",
        description="Replay real daily demand through restock policies: orders land after "
        "their lead time, unmet demand is lost (or backordered), forecasts are refreshed every "
        "review from history only. Scores fill rate, cycle service level, stock-out days, "
        "average inventory and orders per policy, and sweeps service targets to interpolate "
        "the inventory needed for a 95%% fill rate.")
    add_data_args(sim)
    add_covariate_arg(sim)
    sim.add_argument("--policies", default=DEFAULT_POLICIES,
                     help="comma-separated: minmax, minmax-lr (min over lead time + review), "
                     "empirical[:history_days=N:tail_weight=W:tail_sd_factor=F] (bootstrapped "
                     "lead-time demand), forecast-errors[:level_window=N:...] (moving-average "
                     "forecast + its empirical past errors), forecast:NAME or "
                     "forecast:NAME:key=value:... (registered forecasters; the keys are the "
                     "model's, except tail=median_chord (default)|last_gap|upper_fit, the "
                     "policy's tail above the top quantile, and level_rule=cover_mean "
                     "(default, as the stream runs it)|none, the order-up-to level averaged "
                     "over the last (L + R) / R reviews or each review's own; policies that "
                     "differ only in these share one "
                     f"model, fitted and asked once; default {DEFAULT_POLICIES})")
    sim.add_argument("--service-level", type=float, default=0.95,
                     help="headline service target in (0, 1) (default 0.95)")
    sim.add_argument("--target", choices=["fill_rate", "cycle"], default="fill_rate",
                     help="what the service level means (default fill_rate)")
    sim.add_argument("--sweep", default=None,
                     help="comma-separated service targets for the curve (default: 0.5 .. 0.99999)")
    sim.add_argument("--lead-time-days", type=int, default=7)
    sim.add_argument("--lead-time-sd-days", type=float, default=0.0,
                     help="lead-time sd: actual lead times are drawn, policies plan for it")
    sim.add_argument("--review-days", type=int, default=1)
    sim.add_argument("--days", type=int, default=None,
                     help=f"simulate the last N days (default: the last {DEFAULT_DAYS}, or all "
                          "after the warm-up when the data has fewer)")
    sim.add_argument("--retrain-days", type=int, default=28,
                     help="refit trained models (LightGBM, the LSTM) on all history so far "
                          "every N simulated days (default 28; 0: never)")
    sim.add_argument("--warmup-days", type=int, default=91, help="history before day 1")
    sim.add_argument("--window-days", type=int, default=364, help="history the forecaster sees")
    sim.add_argument("--minmax-window-days", type=int, default=28,
                     help="moving-average window of the min/max rule (default 28)")
    sim.add_argument("--initial-stock-days", type=float, default=None,
                     help="starting stock in days of mean warm-up demand (default L + R)")
    sim.add_argument("--case-pack", type=int, default=1)
    sim.add_argument("--moq", type=int, default=0)
    sim.add_argument("--backorders", action="store_true", help="backorder unmet demand")
    sim.add_argument("--unit-cost", type=float, default=None,
                     help="unit cost: also report inventory value")
    sim.add_argument("--order-cost", type=float, default=0.0,
                     help="cost per order placed (default 0: free): order-up-to levels gain an "
                     "EOQ and the results carry ordering, holding and total cost")
    sim.add_argument("--holding-rate", type=float, default=0.25,
                     help="annual holding cost as a share of unit cost (default 0.25)")
    sim.add_argument("--lstm-model", type=Path, default=None,
                     help="trained LSTM directory (`shelfcast train --out DIR`) for forecast:lstm; "
                     "without it the LSTM, like every model that is trained on a panel "
                     "(lightgbm), is fitted on the days before the simulated ones")
    sim.add_argument("--lstm-out", type=Path, default=None,
                     help="without --lstm-model, forecast:lstm is trained on the days before the "
                     "simulation: save that model here")
    sim.add_argument("--lstm-max-epochs", type=int, default=None,
                     help="epoch cap when forecast:lstm is trained here (early stopping)")
    sim.add_argument("--device", default="auto", help="LSTM device: auto, cpu or cuda")
    sim.add_argument("--seed", type=int, default=0, help="seed for drawn lead times")
    sim.add_argument("--json", type=Path, default=None, help="write the results here")
    sim.add_argument("--plot", type=Path, default=None, help="write inventory-vs-fill curves")
    sim.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_bench_commands(bench_subparsers: Any) -> None:
    """Add `db` to the `shelfcast bench` subparsers."""
    db = bench_subparsers.add_parser(
        "db", help="PostgreSQL plan-write throughput (rows/s), idempotent bulk writes",
        description="Writes restock events + plan lines + plans through PlanStore in batches "
        "and reports rows/s, then redelivers the same batches and checks nothing doubled. "
        "Uses SHELFCAST_DATABASE_URL (a scratch database is created and dropped there) or "
        "starts a local PostgreSQL.")
    db.add_argument("--json", type=Path, default=None, help="write the results here")
    db.add_argument("--restocks", type=int, default=100_000, help="restock events to write")
    db.add_argument("--batch", type=int, default=5_000, help="restocks per transaction")
    db.add_argument("--skus-per-plan", type=int, default=50, help="plan lines per plan")
    db.add_argument("--budget-share", type=float, default=None,
                    help="write through the per-cycle constraints path, each supplier's budget "
                         "this share (0-1] of its largest cycle's wanted spend")


def run(args: argparse.Namespace) -> int | None:
    """Run `simulate` or `bench db`; None when `args` is another command's."""
    command = getattr(args, "command", None)
    if command == "simulate":
        return _simulate(args)
    if command == "bench" and getattr(args, "bench_command", None) == "db":
        return _bench_db(args)
    return None


# ----------------------------------------------------------------------------- simulate


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if not values or not all(0.0 < v < 1.0 for v in values):
        raise ConfigError(f"{what} must be numbers in (0, 1), got {text!r}")
    return values


def _kwarg(text: str, spec: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.isidentifier():
        raise ConfigError(f"policy {spec!r}: option {text!r} is not key=value")
    value: Any = raw
    if raw.lower() in ("true", "false"):  # a flag: "false" must not stay a (truthy) string
        return key, raw.lower() == "true"
    for parse in (int, float):
        try:
            value = parse(raw)
            break
        except ValueError:
            continue
    return key, value


def _shared_model_options(args: argparse.Namespace) -> dict[str, Any]:
    """The command line's model settings, offered to every forecast:NAME (each model takes
    those its registry entry lists: the LSTM its artifact, device and epoch cap)."""
    shared: dict[str, Any] = {"device": args.device, "progress": not args.no_progress}
    if args.lstm_model is not None:
        if not args.lstm_model.is_dir():
            raise ConfigError(f"--lstm-model {args.lstm_model}: not a directory")
        shared["path"] = str(args.lstm_model)
    if args.lstm_max_epochs is not None:
        shared["max_epochs"] = args.lstm_max_epochs
    return shared


def _policies(args: argparse.Namespace) -> list[RestockPolicy]:
    from forecasting.base import Forecaster
    from forecasting.errors import ForecastingError
    from forecasting.registry import available_forecasters, make_forecaster
    from optimizer.level_rule import DEFAULT_LEVEL_RULE
    from optimizer.service_level import DEFAULT_TAIL, TAIL_RULES
    from optimizer.simulation import LEVEL_RULES, ForecastPolicy, MinMaxPolicy

    specs = [s.strip() for s in args.policies.split(",") if s.strip()]
    if not specs:
        raise ConfigError("--policies is empty")
    if len(set(specs)) != len(specs):
        raise ConfigError(f"--policies names a policy twice: {args.policies!r}")
    out: list[RestockPolicy] = []
    shared: dict[str, Any] | None = None
    models: dict[tuple[str, tuple[tuple[str, str], ...]], Forecaster] = {}
    for spec in specs:
        if spec in ("minmax", "minmax-lr"):
            out.append(MinMaxPolicy(spec, protect_review=spec == "minmax-lr"))
            continue
        kind, _, rest = spec.partition(":")
        if kind in ("empirical", "forecast-errors"):
            out.append(_empirical_policy(spec, kind, rest))
            continue
        if kind != "forecast" or not rest:
            raise ConfigError(f"unknown policy {spec!r}: use minmax, minmax-lr, empirical, "
                              "forecast-errors or forecast:NAME "
                              f"(NAME one of {', '.join(available_forecasters())})")
        name, *options = rest.split(":")
        if name == SERVED:  # what a worker serves unconfigured (the backtest's "served")
            name = served_model()
        kwargs = dict(_kwarg(o, spec) for o in options)
        policy_kwargs = {k: kwargs.pop(k) for k in POLICY_KEYS if k in kwargs}
        tail = policy_kwargs.get("tail", DEFAULT_TAIL)
        if tail not in TAIL_RULES:
            raise ConfigError(f"policy {spec!r}: tail must be one of {', '.join(TAIL_RULES)}, "
                              f"got {tail!r}")
        level_rule = policy_kwargs.get("level_rule", DEFAULT_LEVEL_RULE)
        if level_rule not in LEVEL_RULES:
            raise ConfigError(f"policy {spec!r}: level_rule must be one of "
                              f"{', '.join(LEVEL_RULES)}, got {level_rule!r}")
        if name not in available_forecasters():
            raise ConfigError(f"policy {spec!r}: no forecaster {name!r} registered "
                              f"(known: {', '.join(available_forecasters())})")
        if shared is None:
            shared = _shared_model_options(args)
        key = (name, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
        forecaster = models.get(key)
        if forecaster is None:
            try:
                forecaster = models[key] = make_forecaster(name, shared=shared, **kwargs)
            except (ForecastingError, TypeError, ValueError) as exc:
                raise ConfigError(f"policy {spec!r}: {exc}") from None
        out.append(ForecastPolicy(spec, forecaster, tail=tail, level_rule=level_rule))
    return out


def _fit_before(policy: ForecastPolicy, panel: Any, first_index: int,
                args: argparse.Namespace) -> dict[str, Any]:
    """Fit a forecast policy's model (one that `needs_fit`: LightGBM, an untrained LSTM) on
    the days before the first simulated day only, through the one `fit(panel)`."""
    from forecasting.registry import forecaster_info

    model = policy.forecaster
    model.cap_threads(1)
    past = panel.head(first_index)
    print(f"shelfcast: fitting {policy.name} on {past.n_series} series x {past.n_days} days "
          f"({past.dates[0]} .. {past.dates[-1]}), before the simulated days", file=sys.stderr)
    started = time.perf_counter()
    cpu_started = time.process_time()
    try:
        model.fit(past)
    except ValueError as exc:  # too little history for the model, bad options
        raise ConfigError(f"policy {policy.name!r}: cannot fit on {past.n_days} days: {exc}") \
            from None
    info: dict[str, Any] = {
        "trained_in_run": True, "trained_on": f"{past.dates[0]} .. {past.dates[-1]}",
        "trained_through": str(past.dates[-1]), "overlaps_simulation": False,
        "train_seconds": round(time.perf_counter() - started, 1),
        "train_cpu_seconds": round(time.process_time() - cpu_started, 1),
        "metrics": dict(model.fit_metrics),
    }  # fmt: skip
    if args.lstm_out is not None and forecaster_info(model.name).loads_artifact:
        from forecasting.model_dir import save_model_dir

        # An LSTM or an lstm_lgbm (forecasting.model_dir writes either).
        lstm = cast("LSTMForecaster", getattr(model, "lstm", model))
        data = {"path": recorded_path(args.data), "n_series": past.n_series, "n_days": past.n_days,
                "first_day": str(past.dates[0]), "last_day": str(past.dates[-1])}
        history = lstm.train_result.history if lstm.train_result is not None else []
        save_model_dir(model, args.lstm_out, data_fingerprint=past.fingerprint(), data=data,
                       metrics=info["metrics"], history=history)
        info["model_dir"] = str(args.lstm_out)
    return info


def _empirical_policy(spec: str, kind: str, options: str) -> RestockPolicy:
    from optimizer.simulation import EmpiricalPolicy

    allowed: dict[str, type] = {"history_days": int, "tail_weight": float,
                                "tail_sd_factor": float}  # fmt: skip
    if kind == "forecast-errors":
        allowed["level_window"] = int
    kwargs: dict[str, Any] = {}
    for option in filter(None, options.split(":")):
        key, value = _kwarg(option, spec)
        if key not in allowed:
            raise ConfigError(f"policy {spec!r}: unknown option {key!r} "
                              f"(known: {', '.join(allowed)})")
        try:
            kwargs[key] = allowed[key](value)
        except ValueError:
            raise ConfigError(f"policy {spec!r}: {key} must be a number, got {value!r}") from None
    if not 0.0 <= kwargs.get("tail_weight", 0.0) < 1.0 or kwargs.get("history_days", 7) < 1 \
            or kwargs.get("level_window", 28) < 1:  # fmt: skip
        raise ConfigError(f"policy {spec!r}: tail_weight must be in [0, 1), history_days and "
                          "level_window >= 1")
    if kind == "forecast-errors":
        kwargs.setdefault("level_window", 28)
    return EmpiricalPolicy(spec, **kwargs)


def _lstm_training_span(args: argparse.Namespace, first_day: str,
                        policies: list[RestockPolicy]) -> dict[str, Any] | None:
    """What the LSTM artifact (--lstm-model) was trained on, and whether that overlaps the
    simulated days; None when no policy's model was loaded from it."""
    from forecasting.registry import forecaster_info
    from optimizer.simulation import ForecastPolicy

    if args.lstm_model is None or not any(
            isinstance(p, ForecastPolicy) and forecaster_info(p.forecaster.name).loads_artifact
            for p in policies):
        return None
    from forecasting.lstm import read_metadata  # the LSTM's artifact format

    data = read_metadata(args.lstm_model).get("data", {})
    last = data.get("last_day")
    overlaps = last is not None and str(last) >= first_day
    if overlaps:
        print(f"shelfcast: warning: the LSTM was trained on data through {last}, which overlaps "
              f"the simulated days from {first_day}: its scores see the future", file=sys.stderr)
    return {"model_dir": str(args.lstm_model), "trained_through": last,
            "overlaps_simulation": overlaps}


def _machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "load_avg_1_5_15": load,
            "note": "shared machine; other jobs ran alongside"}


def _simulate(args: argparse.Namespace) -> int:
    from forecasting.data import DataFormatError, load_panel
    from optimizer.level_rule import DEFAULT_LEVEL_RULE
    from optimizer.service_level import DEFAULT_TAIL
    from optimizer.simulation import (
        DEFAULT_SWEEP,
        ForecastPolicy,
        SimulationConfig,
        SimulationError,
    )

    if not args.data.exists():
        raise ConfigError(f"data file {args.data} not found")
    service_level = _floats(str(args.service_level), "--service-level")[0]
    sweep = DEFAULT_SWEEP if args.sweep is None else _floats(args.sweep, "--sweep")
    config = SimulationConfig(
        lead_time_days=args.lead_time_days, review_days=args.review_days,
        service_level=service_level, target=args.target, sweep=sweep, days=args.days,
        warmup_days=args.warmup_days, window_days=args.window_days,
        minmax_window_days=args.minmax_window_days, case_pack=args.case_pack, moq=args.moq,
        backorders=args.backorders, unit_cost=args.unit_cost, order_cost=args.order_cost,
        holding_rate=args.holding_rate,
        lead_time_sd_days=args.lead_time_sd_days, initial_stock_days=args.initial_stock_days,
        seed=args.seed, retrain_days=args.retrain_days,
    )  # fmt: skip
    try:
        config.validate()
    except SimulationError as exc:
        raise ConfigError(str(exc)) from None
    policies = _policies(args)
    id_cols = [c.strip() for c in args.id_cols.split(",")] if args.id_cols else None
    started = time.perf_counter()
    try:
        panel = load_panel(args.data, id_cols=id_cols, date_col=args.date_col,
                           target_col=args.target_col, max_series=args.max_series,
                           covariates=args.covariates == "auto")
    except DataFormatError as exc:
        raise ConfigError(str(exc)) from None
    load_s = time.perf_counter() - started
    allowed = panel.n_days - config.warmup_days
    if config.days is None and allowed > 0:  # the last year, or all the warm-up leaves
        config = dataclasses.replace(config, days=min(DEFAULT_DAYS, allowed))
    n_days = config.days if config.days is not None else allowed
    meta: dict[str, Any] = {
        "dataset": recorded_path(args.data),
        "command": ("shelfcast " + shlex.join(recorded_args(sys.argv[1:]))
                    if sys.argv[1:] else None),
        "machine": _machine(),
        "load_seconds": round(load_s, 2),
        "loader": "forecasting.data.load_panel",
    }
    try:
        if n_days > 0:
            first_day = str(panel.dates[panel.n_days - n_days])
            span = _lstm_training_span(args, first_day, policies)
            if span is not None:
                meta["lstm"] = span
            fitted: dict[int, str] = {}  # policies sharing a model: fitted once
            for policy in policies:
                if isinstance(policy, ForecastPolicy) and id(policy.forecaster) in fitted:
                    first = fitted[id(policy.forecaster)]
                    meta["fitted"][policy.name] = {**meta["fitted"][first], "shared_with": first}
                elif isinstance(policy, ForecastPolicy) and policy.forecaster.needs_fit:
                    meta.setdefault("fitted", {})[policy.name] = _fit_before(
                        policy, panel, panel.n_days - n_days, args)
                    fitted[id(policy.forecaster)] = policy.name
        meta["covariates"] = panel.covariates is not None
        result = _run_with_progress(panel.values, panel.dates, policies, config, n_days,
                                    meta, show=not args.no_progress,
                                    covariates=panel.covariates)  # fmt: skip
    except SimulationError as exc:
        raise ConfigError(str(exc)) from None
    doc = result.as_json()
    doc["served"] = served_model()
    doc["tail_default"] = DEFAULT_TAIL  # what a forecast policy without tail=RULE used
    # what one without level_rule=RULE used (runs without these keys: "none")
    doc["level_rule_default"] = DEFAULT_LEVEL_RULE
    for policy in policies:
        if isinstance(policy, ForecastPolicy):
            doc["policies"][policy.name]["predict_seconds"] = round(policy.predict_seconds, 2)
            doc["policies"][policy.name]["level_rule"] = policy.level_rule
    _print_summary(result)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    if args.plot is not None:
        _plot(result, args.plot, title=f"{args.data.name}: L={config.lead_time_days}d, "
              f"R={config.review_days}d, {result.skus} SKUs x {result.scored_days} days, "
              f"target={config.target}")  # fmt: skip
    return 0


def _run_with_progress(values: Any, dates: Any, policies: list[RestockPolicy],
                       config: Any, n_days: int, meta: dict[str, Any],
                       *, show: bool, covariates: Any = None) -> SimulationResult:  # fmt: skip
    from optimizer.simulation import simulate

    if not show or n_days <= 0:
        return simulate(values, dates, policies, config, meta=meta, covariates=covariates)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task(f"simulating {len(policies)} policies", total=n_days)
        return simulate(values, dates, policies, config, meta=meta, covariates=covariates,
                        on_day=lambda _: bar.advance(task))  # fmt: skip


def _print_summary(result: SimulationResult) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result.skus} SKUs x {result.scored_days} scored days "
                  f"({result.first_day} .. {result.last_day}), target "
                  f"{result.config.target} {result.config.service_level}")  # fmt: skip
    for col in ("policy", "fill rate", "CSL", "stock-out days", "avg inventory", "orders",
                "inventory @95% fill"):
        table.add_column(col, justify="left" if col == "policy" else "right",
                         no_wrap=col == "policy")
    for name, res in result.policies.items():
        at95 = "not reached" if res.inventory_at_95_fill is None \
            else f"{res.inventory_at_95_fill:,.0f}"  # fmt: skip
        table.add_row(name, f"{res.fill_rate:.4f}", f"{res.cycle_service_level:.4f}",
                      f"{res.stockout_days:,}", f"{res.avg_inventory:,.0f}", f"{res.orders:,}",
                      at95)  # fmt: skip
    Console(stderr=True, width=max(Console(stderr=True).width, 120)).print(table)


def _plot(result: SimulationResult, path: Path, *, title: str) -> None:
    from shelfcast.simulation_plot import plot_curves

    plot_curves({name: ([p.avg_inventory for p in res.curve], [p.fill_rate for p in res.curve],
                        res.inventory_at_95_fill) for name, res in result.policies.items()},
                path, title=title)


# ----------------------------------------------------------------------------- bench db


def _bench_db(args: argparse.Namespace) -> int:
    import asyncio

    from optimizer.bench_db import bench_plan_writes

    if args.restocks < 1 or args.batch < 1 or args.skus_per_plan < 1:
        raise ConfigError("--restocks, --batch and --skus-per-plan must be >= 1")
    if args.budget_share is not None and not 0 < args.budget_share <= 1:
        raise ConfigError("--budget-share must be in (0, 1]")
    from runtime.settings import Settings

    settings = Settings()
    local = None
    if settings.database_url is not None:
        dsn = settings.database_url.get_secret_value()
        server = "SHELFCAST_DATABASE_URL"
    else:
        from shelfcast.services.postgres_server import LocalPostgres

        local = LocalPostgres(fsync=True).start()
        dsn = local.dsn
        server = "local PostgreSQL 16 (fsync on), started by the bench"
    try:
        doc = asyncio.run(bench_plan_writes(dsn, restocks=args.restocks, batch=args.batch,
                                            skus_per_plan=args.skus_per_plan,
                                            budget_share=args.budget_share))  # fmt: skip
    finally:
        if local is not None:
            local.close()
    doc = {"command": "shelfcast " + shlex.join(recorded_args(sys.argv[1:])), "server": server,
           "machine": _machine(), **doc}  # fmt: skip
    print(json.dumps(doc, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0
