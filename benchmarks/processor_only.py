"""Processor CPU per event without Kafka: the pipeline bench's backlog through BatchProcessor.

The records `shelfcast bench pipeline` produces (a snapshot per SKU, then orders in time
order), cut into fetches of `--fetch` records per partition as the batch engine hands them,
are processed into the live state store; the CPU seconds of the whole process (forecasts
included, the LSTM's inferencer too) give events/s per CPU-second, and the forecaster's own
share is measured apart. No broker, no sends, no changelog: the processor alone; with
`--encode`, also the engine's encoding of what each fetch produced (`_output_groups`: the
forecast, actuals, alert and restock JSON) and of the keys it wrote (`_changelog_groups`),
their CPU counted apart as well (`output_cpu_s`, `changelog_cpu_s`).

    PYTHONPATH=$PWD python benchmarks/processor_only.py --models lstm,moving_average \
        --against /path/to/a/worktree/of/main --rounds 3 --json benchmarks/results/x.json

With `--against DIR` each round runs the code of DIR (PYTHONPATH=DIR) and of this tree in
alternation, in subprocesses, so both see the same machine load; the medians are compared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any


def _records(events: int, skus: int, days: int, partitions: int,
             malformed: float = 0.0) -> list[list[Any]]:
    from shelfcast.bench_pipeline import PipelineBenchOptions, backlog
    from streams.processor import RawRecord

    settings = _settings()
    stock, orders = backlog(PipelineBenchOptions(events=events, skus=skus, days=days))
    if malformed:  # every 1/malformed-th order cut short: a dead letter (invalid JSON)
        every = max(1, round(1 / malformed))
        orders = [(k, v[:-9]) if i % every == every // 2 else (k, v)
                  for i, (k, v) in enumerate(orders)]
    parts: list[list[Any]] = [[] for _ in range(partitions)]
    for topic, records in ((settings.topics.stock, stock), (settings.topics.orders, orders)):
        for key, value in records:
            part = parts[zlib.crc32(key) % partitions]
            part.append(RawRecord(topic, 0, len(part), key, value))
    return parts


def _settings(model: str = "moving_average") -> Any:
    from runtime.settings import Settings

    return Settings(kafka_bootstrap="unused:9092", model=model)


def measure(model: str, events: int, skus: int, days: int, fetch: int,
            partitions: int, malformed: float = 0.0, repeat: int = 3,
            encode: bool = False) -> dict[str, Any]:
    """One run in this process: CPU seconds of processing every fetch of every partition."""
    from rich.console import Console

    from shelfcast.bench_pipeline import PipelineBenchOptions, served_model
    from streams.engine import BatchEngine
    from streams.forecaster_setup import served_forecaster
    from streams.processor import BatchProcessor, ProcessorConfig
    from streams.store import StateStore

    settings = _settings(model)
    if model != "moving_average":
        settings = served_model(settings, PipelineBenchOptions(events=events, skus=skus,
                                                               days=days), Console(stderr=True))
    parts = _records(events, skus, days, partitions, malformed)
    forecast_cpu = output_cpu = changelog_cpu = 0.0
    forecasts = dead = encoded_bytes = 0
    kept = (0.0, 0, 0, 0.0, 0.0, 0)

    async def run() -> float:
        nonlocal dead, kept, forecast_cpu, forecasts, output_cpu, changelog_cpu, encoded_bytes
        async with served_forecaster(settings) as (forecaster, served):

            async def predict(windows: Any, horizon: int, **kw: Any) -> Any:
                nonlocal forecast_cpu, forecasts
                t = time.process_time()
                answer = await served(windows, horizon, **kw)
                forecast_cpu += time.process_time() - t
                forecasts += len(windows)
                return answer

            best = float("inf")
            for _ in range(repeat):  # the least CPU of `repeat` passes, each on fresh state
                processor = BatchProcessor(ProcessorConfig.from_settings(settings), predict,
                                           forecaster.model_version)
                store = StateStore(partitions)
                engine = BatchEngine(settings, processor)
                engine.store = store
                engine._out_partitions = dict.fromkeys(settings.topics.outputs(), partitions)
                forecast_cpu, forecasts, dead, encoded_bytes = 0.0, 0, 0, 0
                output_cpu = changelog_cpu = 0.0
                cpu0 = time.process_time()
                longest = max(map(len, parts))
                for start in range(0, longest, fetch):  # a fetch: each partition's next slice
                    for p, records in enumerate(parts):
                        if start < len(records):
                            out = await processor.process(records[start:start + fetch],
                                                          store.partition(p))
                            dead += len(out.dead_letters)
                            if encode:  # as the engine does after each fetch
                                t0 = time.process_time()
                                groups = (engine._output_groups(out),)
                                t1 = time.process_time()
                                groups += (engine._changelog_groups(),)
                                t2 = time.process_time()
                                output_cpu += t1 - t0
                                changelog_cpu += t2 - t1
                                encoded_bytes += sum(len(v or b"") for g in groups
                                                     for items in g.values() for _, v in items)
                cpu = time.process_time() - cpu0
                if cpu < best:
                    best, kept = cpu, (forecast_cpu, forecasts, dead, output_cpu,
                                       changelog_cpu, encoded_bytes)
            forecast_cpu, forecasts, dead, output_cpu, changelog_cpu, encoded_bytes = kept
            return best

    cpu = asyncio.run(run())
    total = sum(map(len, parts))
    result = {"model": model, "events": total, "cpu_s": round(cpu, 3),
            "events_per_cpu_s": round(total / cpu), "forecast_cpu_s": round(forecast_cpu, 3),
            "events_per_cpu_s_without_forecast": round(total / max(cpu - forecast_cpu, 1e-9)),
            "forecasts": forecasts, "dead_letters": dead}
    if encode:
        result |= {"output_cpu_s": round(output_cpu, 3),
                   "changelog_cpu_s": round(changelog_cpu, 3), "encoded_bytes": encoded_bytes}
    return result


def _child(tree: str, args: argparse.Namespace, model: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": tree}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", model,
           "--events", str(args.events), "--skus", str(args.skus), "--days", str(args.days),
           "--fetch", str(args.fetch), "--partitions", str(args.partitions),
           "--malformed", str(args.malformed), "--repeat", str(args.repeat)]
    if args.encode:
        cmd.append("--encode")
    done = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="lstm,moving_average")
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--skus", type=int, default=5_000)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--fetch", type=int, default=2_500, help="records per partition per call")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--malformed", type=float, default=0.0,
                    help="fraction of orders cut short (dead letters), e.g. 0.001")
    ap.add_argument("--repeat", type=int, default=3,
                    help="passes per run; the least CPU counts")
    ap.add_argument("--encode", action="store_true",
                    help="also the engine's output JSON and changelog encoding per fetch")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--against", help="a worktree to compare with (e.g. main), same rounds")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.events, args.skus, args.days, args.fetch,
                                 args.partitions, args.malformed, args.repeat,
                                 args.encode)))
        return
    here = str(Path(__file__).resolve().parents[1])
    trees = {"this": here} | ({"against": str(Path(args.against).resolve())}
                              if args.against else {})
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {t: {} for t in trees}
    for r in range(args.rounds):
        for model in args.models.split(","):
            for name, tree in (trees.items() if r % 2 == 0 else reversed(trees.items())):
                got = _child(tree, args, model)
                runs[name].setdefault(model, []).append(got)
                print(f"round {r} {name:8s} {model:15s} {got['events_per_cpu_s']:>8,} ev/CPU-s"
                      f" (without forecast {got['events_per_cpu_s_without_forecast']:,}, "
                      f"forecasts {got['forecasts']:,}"
                      + (f", outputs {got['output_cpu_s']} CPU-s, changelog "
                         f"{got['changelog_cpu_s']} CPU-s, {got['encoded_bytes']:,} B"
                         if args.encode else "") + ")", flush=True)
    summary: dict[str, Any] = {}
    fields = ["events_per_cpu_s", "events_per_cpu_s_without_forecast"]
    if args.encode:
        fields += ["output_cpu_s", "changelog_cpu_s", "encoded_bytes"]
    for model in args.models.split(","):
        row: dict[str, Any] = {}
        for name in trees:
            for field in fields:
                row[f"{name}_{field}"] = statistics.median(
                    x[field] for x in runs[name][model])
        if args.against:
            for field in fields:
                row[f"ratio_{field}"] = round(row[f"this_{field}"] / row[f"against_{field}"], 3)
        summary[model] = row
        print(model, json.dumps(row))
    result = {"command": " ".join(sys.argv), "trees": trees, "load_before": os.getloadavg(),
              "summary": summary, "runs": runs,
              "options": {k: v for k, v in vars(args).items() if k not in ("json", "one")}}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
