"""The `shelfcast` command: one CLI for workers, the optimizer, schemas and the demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import asyncpg
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from forecasting.errors import ForecastingError
from optimizer.errors import OptimizerError
from runtime.errors import ConfigError, ShelfcastError
from runtime.settings import Settings
from schemas.errors import SchemaError
from shelfcast import alerts_cli, calendar_cli, cli_forecasting, cli_optimizer, cli_retrain

__all__ = ["main"]

# modules adding their own commands
PLUGINS = (cli_forecasting, cli_optimizer, cli_retrain, calendar_cli)
DEFAULT_TRANSACTIONS = Path("../shared/data/uci_online_retail/transactions.csv.gz")

EPILOG = """examples:
  shelfcast demo --events 20000 --json out.json   # whole pipeline on embedded broker + database
  shelfcast worker                                # a stream worker (SHELFCAST_KAFKA_BOOTSTRAP)
  shelfcast optimizer                             # restock -> plans in PostgreSQL
  shelfcast migrate                               # apply database migrations
  shelfcast retrain                               # champion/challenger from demand_history
  shelfcast schemas export schemas-json/          # JSON Schema for shops in other languages
  shelfcast settings                              # effective settings, secrets masked
  shelfcast dlq replay --kind late --dry-run      # what a DLQ replay would send back
  shelfcast bench pipeline --events 200000 --json benchmarks/results/pipeline.json
"""


OUR_PACKAGES = frozenset({"runtime", "schemas", "streams", "forecasting", "optimizer",
                          "shelfcast"})
# Optional packages by the pyproject extra that installs them (README "Install").
EXTRAS = {"lightgbm": "forecast", "statsforecast": "forecast", "matplotlib": "forecast",
          "torch": "train",
          "pytest": "dev", "yaml": "dev", "stockpyl": "dev"}


def missing_dependency(module: str) -> str:
    """One line naming what to install for a module that is not there."""
    top = module.partition(".")[0]
    extra = EXTRAS.get(top)
    if extra is not None:
        return (f"this needs {top}, which is in the `{extra}` extra: "
                f"pip install 'shelfcast[{extra}]' (or pip install -e '.[{extra}]')")
    return (f"this needs the package {top!r}, which is not installed (a base dependency: "
            "reinstall with pip install shelfcast, or pip install -e .)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shelfcast", description="Streaming demand forecasting and restock planning.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo", help="replay real orders through the whole pipeline (embedded services)",
        description="Replay the last UCI Online Retail order lines through the pipeline, "
        "serving the default model, lstm_lgbm (SHELFCAST_MODEL): the pre-trained one committed "
        "with the demo (for the default data and --events; no torch needed), else trained first "
        "on the days before the replay (with torch). With "
        "no SHELFCAST_KAFKA_BOOTSTRAP / SHELFCAST_DATABASE_URL it starts Apache Kafka (with "
        "Java; else the embedded tansu broker) and PostgreSQL itself.")
    demo.add_argument("--data", type=Path, default=None,
                      help=f"transactions CSV (default: {DEFAULT_TRANSACTIONS})")
    demo.add_argument("--events", type=int, default=20_000,
                      help="event budget: orders + stock + catalog events to publish")
    demo.add_argument("--json", type=Path, default=None, help="write the summary here")
    demo.add_argument("--day-seconds", type=float, default=0.5,
                      help="wall seconds per replayed day (accelerated clock); 0 = flat out")
    demo.add_argument("--redeliver-every", type=int, default=200,
                      help="re-send every Nth order event, as a retrying producer would (0 = off)")
    demo.add_argument("--model-cache", type=Path, default=None,
                      help="where the demo's trained LSTM is cached by the data it was trained "
                           "on (default ~/.cache/shelfcast/models)")

    bench = sub.add_parser("bench", help="benchmarks that print figures and write JSON")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    pipeline = bench_sub.add_parser(
        "pipeline", help="worker events/s vs raw consume, order->restock latency, RSS",
        description="Starts a local Apache Kafka unless SHELFCAST_KAFKA_BOOTSTRAP is set.")
    pipeline.add_argument("--events", type=int, default=200_000)
    pipeline.add_argument("--workers", type=int, default=1)
    pipeline.add_argument("--skus", type=int, default=5_000)
    pipeline.add_argument("--days", type=int, default=7)
    pipeline.add_argument("--partitions", type=int, default=4)
    pipeline.add_argument("--json", type=Path, default=None)
    pipeline.add_argument("--model-path", type=Path, default=None,
                          help="trained model dir the workers serve (default "
                               "SHELFCAST_MODEL_PATH, else a small LSTM trained first)")
    pipeline.add_argument("--compare-baseline", action="store_true",
                          help="also run the moving average in the same invocation (same "
                               "broker, same backlog); its figures go under `baseline`")
    for plugin in PLUGINS:
        plugin.add_bench_commands(bench_sub)

    dlq = sub.add_parser("dlq", help="dead-letter topic tools")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    replay = dlq_sub.add_parser(
        "replay", help="send dead-lettered records back to their source topics",
        description="Replays each dead letter's raw payload to its source topic with its "
        "original key (after the cause was fixed). Progress is kept per consumer group, so a "
        "record is replayed once.")
    replay.add_argument("--kind", action="append", default=None,
                        help="only this error kind (repeatable), e.g. late, validation")
    replay.add_argument("--dry-run", action="store_true", help="count, send nothing")
    replay.add_argument("--limit", type=int, default=None, help="stop after N dead letters")

    alerts_cli.add_commands(sub)
    for plugin in PLUGINS:
        plugin.add_commands(sub)

    sub.add_parser("worker", help="run a stream worker until stopped (engine: SHELFCAST_ENGINE)")
    sub.add_parser("optimizer", help="run the optimizer service until stopped")
    sub.add_parser("migrate", help="apply database migrations")
    sub.add_parser("settings", help="print the effective settings (secrets masked)")

    schemas = sub.add_parser("schemas", help="event contracts")
    schemas_sub = schemas.add_subparsers(dest="schemas_command", required=True, metavar="ACTION")
    export = schemas_sub.add_parser("export", help="write JSON Schema files")
    export.add_argument("out_dir", type=Path)
    return parser


def _database_url(settings: Settings) -> str:
    if settings.database_url is None:
        raise ConfigError("no database configured: set SHELFCAST_DATABASE_URL=postgresql://...")
    return settings.database_url.get_secret_value()


def _run(args: argparse.Namespace) -> int:
    for plugin in (alerts_cli, *PLUGINS):
        if (code := plugin.run(args)) is not None:
            return code
    if args.command == "schemas":
        from schemas import export_json_schemas

        for path in export_json_schemas(args.out_dir):
            print(path)
        return 0
    settings = Settings()
    from streams.forecaster_setup import model_info

    model_info(settings)  # SHELFCAST_MODEL names a registered forecaster (one-line error)
    if args.command == "settings":
        print(json.dumps(settings.public_dict(), indent=2))
        return 0
    if args.command == "worker":
        from streams.forecaster_setup import check_servable
        from streams.worker import run_worker

        check_servable(settings)  # a model it can serve, before it connects to anything

        run_worker(settings)
        return 0
    if args.command == "optimizer":
        from optimizer.service import run_service
        from runtime.logs import configure_logging

        configure_logging(settings)
        asyncio.run(run_service(settings, _database_url(settings)))
        return 0
    if args.command == "migrate":
        from optimizer.store import PlanStore

        owner = settings.migration_database_url or settings.database_url
        if owner is None:
            raise ConfigError("no database configured: set SHELFCAST_MIGRATION_DATABASE_URL or "
                              "SHELFCAST_DATABASE_URL=postgresql://...")

        async def migrate() -> list[int]:
            async with await PlanStore.connect(owner.get_secret_value()) as store:
                applied = await store.migrate()
                if settings.database_runtime_role:
                    await store.grant_runtime_role(settings.database_runtime_role)
                return applied

        applied = asyncio.run(migrate())
        print(f"applied migrations: {applied or 'none (up to date)'}"
              + (f"; granted run-time rights to {settings.database_runtime_role}"
                 if settings.database_runtime_role else ""))
        return 0
    if args.command == "bench" and args.bench_command == "pipeline":
        from shelfcast.bench_pipeline import PipelineBenchOptions, run_pipeline_bench

        if args.events <= args.skus or args.workers < 1 or args.partitions < args.workers:
            raise ConfigError("need --events > --skus, --workers >= 1, --partitions >= --workers")
        run_pipeline_bench(settings, PipelineBenchOptions(
            events=args.events, workers=args.workers, skus=args.skus, days=args.days,
            partitions=args.partitions, json_path=args.json, model_path=args.model_path,
            compare_baseline=args.compare_baseline))
        return 0
    if args.command == "dlq":
        from streams.dlq_replay import replay_dead_letters

        result = asyncio.run(replay_dead_letters(
            settings, kinds=set(args.kind) if args.kind else None, dry_run=args.dry_run,
            limit=args.limit))
        verb = "would replay" if args.dry_run else "replayed"
        print(f"scanned {result.scanned}, {verb} {result.replayed}, skipped {result.skipped}: "
              + (", ".join(f"{t} {n}" for t, n in sorted(result.by_topic.items())) or "-"))
        if result.cut:
            print(f"not replayable: {result.cut} dead letter(s) whose payload or key was cut to "
                  "fit the DLQ (read them from their source topic at the offset they name)")
        return 0
    if args.command == "demo":
        from shelfcast.demo.runner import DemoOptions, run_demo

        data = args.data or DEFAULT_TRANSACTIONS
        if not data.exists():
            raise ConfigError(f"data file {data} not found (pass --data PATH)")
        if args.events <= 0:
            raise ConfigError("--events must be > 0")
        opts = DemoOptions(data=data, events=args.events, json_path=args.json,
                           day_seconds=args.day_seconds, redeliver_every=args.redeliver_every,
                           model_cache=args.model_cache)
        run_demo(settings, opts)
        return 0
    raise AssertionError(args.command)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (ShelfcastError, OptimizerError, ForecastingError, SchemaError) as exc:
        print(f"shelfcast: error: {exc}", file=sys.stderr)
        return 1
    except (OSError, KafkaError, asyncpg.PostgresError) as exc:
        print(f"shelfcast: error: {type(exc).__name__}: {exc} — is the service up? check "
              "SHELFCAST_KAFKA_BOOTSTRAP / SHELFCAST_DATABASE_URL", file=sys.stderr)
        return 1
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        print(f"shelfcast: error: setting {where}: {first['msg']}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.partition(".")[0] in OUR_PACKAGES:
            raise  # our own module missing is a bug, not an install choice
        print(f"shelfcast: error: {missing_dependency(exc.name)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
