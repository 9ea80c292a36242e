"""How long a fresh worker takes to serve again after it takes over partitions whose changelog
holds N SKU states (issue 15: "a recovered worker serves again within 10 s for 50k SKUs"),
end to end on a real Apache Kafka, with the served default model (lstm_lgbm).

    PYTHONPATH=. python benchmarks/recovery_time.py --skus 50000 \\
        --json benchmarks/results/recovery_time.json

What runs (the pipeline bench's pieces: its local broker, its cached quick model and its
order records, `WorkerProcess`; the durable-state bench's SKU states):
1. the served model: the pipeline bench's quick lstm_lgbm (`served_model`), copied twice:
   `without_trees` (as saved before compiled trees travelled with the model) and `shipped`
   (with `lightgbm/compiled-trees`, written by the call `LightGBMForecaster.save` makes);
2. N changelog records on the group's changelog, one per SKU on the partition its key
   hashes to (as the input records): a steady SKU (56 buckets, ids, stock, policy;
   `durable_state.sku_state`) whose `model_state` is the served model's own durable state
   after encoding that window (so recovery restores it: no re-encode);
3. per scenario a new worker process (`shelfcast worker`, its own SHELFCAST_CACHE_DIR) that
   is the group's only member: it loads the model, compiles or reads its trees, joins,
   recovers all partitions from the changelog and logs ready; then one order each for
   `--trigger` SKUs not touched before, which closes their open bucket: the time to the
   first (and to the last) forecast published for them. The worker is then stopped.

Scenarios: `cold_cache` (an artifact without trees, empty cache: a new container before
this change), `warm_cache` (the same artifact, the cache the cold run filled: a restart on
the same host), `shipped_trees` (the artifact with its trees, empty cache: a new container
now). Phases from the worker's log (its timestamps against the parent's clock at spawn):
process start + model load (to the trees' start), trees (compile or load), group join +
assignment (when the worker joins after its model served), changelog fetch + decode (the
engine's own figure), ready -> first forecast; and when the model served and the changelog
was recovered, in seconds after spawn (a worker now loads its model while it joins and
recovers, so these overlap).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))  # durable_state, beside this file

from bench_report import emit, machine
from durable_state import sku_state

from runtime.kafka_config import client_kwargs
from runtime.settings import Settings
from schemas import sku_key
from shelfcast.bench_pipeline import (
    T0,
    PipelineBenchOptions,
    _order,
    _produce,
    served_model,
)
from shelfcast.worker_process import WorkerProcess
from streams.changelog import changelog_topic, encode_state, ensure_changelog
from streams.topics import ensure_topics

DAY0 = int((T0 - datetime(1970, 1, 1, tzinfo=UTC)).days)  # the states' open bucket
WINDOW = 56
LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def _copies(model: Path, root: Path) -> tuple[dict[str, Path], float]:
    """The served model twice: without compiled trees, and with them as a save writes them."""
    from forecasting.compiled_trees import ARTIFACT_TREES_DIR, compile_boosters
    from forecasting.lightgbm_peer import LightGBMForecaster

    without = root / "without_trees"
    shutil.copytree(model, without)
    shutil.rmtree(without / "lightgbm" / ARTIFACT_TREES_DIR, ignore_errors=True)
    shipped = root / "shipped"
    shutil.copytree(without, shipped)
    lgbm = LightGBMForecaster.load(shipped / "lightgbm")
    texts = [b.model_to_string() for b in lgbm._models]
    t0 = time.perf_counter()
    compile_boosters(texts, check=lgbm._models,
                     cache_dir=shipped / "lightgbm" / ARTIFACT_TREES_DIR)
    return {"without_trees": without, "shipped": shipped}, time.perf_counter() - t0


def _records(model_path: Path, skus: int, console: Console) -> list[tuple[bytes, bytes]]:
    """One changelog record per SKU, its model state the served model's own (encoded from
    the SKU's window, last day DAY0 - 1: the next closed bucket is one step)."""
    from forecasting import make_forecaster

    model: Any = make_forecaster("lstm_lgbm", shared={"device": "cpu", "backend": "auto"},
                                 path=str(model_path))
    rng = np.random.default_rng(0)
    states = [sku_state(i, rng, None, day0=DAY0, sku=f"S{i}", location="wh")
              for i in range(skus)]
    end = np.datetime64("1970-01-01") + np.timedelta64(DAY0 - 1, "D")
    store = model.keyed_states(skus)
    t0 = time.perf_counter()
    out: list[tuple[bytes, bytes]] = []
    for lo in range(0, skus, 5_000):
        chunk = states[lo:lo + 5_000]
        windows = np.array([[s.demand[b] for b in range(DAY0 - WINDOW, DAY0)] for s in chunk])
        keys = [sku_key(s.sku, s.location) for s in chunk]
        slots, _ = store.slots(keys)
        store.scatter(slots, model.encode(windows, np.full(len(chunk), end)))
        for s, key, blob in zip(chunk, keys, store.export(slots), strict=True):
            s.model_state = blob
            record = encode_state(s)
            assert record is not None
            out.append((key.encode(), record))
    console.print(f"{skus:,} SKU states encoded in {time.perf_counter() - t0:.1f} s "
                  f"({sum(len(v) for _, v in out) / 1e6:.0f} MB of changelog)")
    _check_restorable(model_path, states[:200])
    return out


def _check_restorable(model_path: Path, states: list[Any]) -> None:
    """The records' model states are what a recovering worker restores (the same weights,
    one step behind the bucket the trigger closes), not re-encoded: checked through an
    Inferencer on the served model, as the worker's is, on a sample."""
    from forecasting import make_forecaster
    from forecasting.inferencer import Inferencer

    model: Any = make_forecaster("lstm_lgbm", shared={"device": "cpu", "backend": "auto"},
                                 path=str(model_path))
    windows = np.array([[s.demand[b] for b in range(DAY0 - WINDOW + 1, DAY0 + 1)]
                        for s in states])
    keys = [sku_key(s.sku, s.location) for s in states]
    day = np.datetime64("1970-01-01") + np.timedelta64(DAY0, "D")

    async def serve() -> Any:
        async with Inferencer(model) as inferencer:
            await inferencer.serve_keyed(keys, windows, 14, np.full(len(keys), day),
                                         states=[s.model_state for s in states])
            return inferencer.stats

    stats = asyncio.run(serve())
    if stats.restored != len(states) or stats.full or stats.rebased:
        raise RuntimeError(f"the changelog's model states would not be restored: {stats}")


def _log_times(path: Path) -> list[tuple[float, str]]:
    """(epoch seconds, line) of each timestamped log line (the log's local time)."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        m = LOG_TIME.match(line)
        if m:
            stamp = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            out.append((stamp, line))
    return out


def _phases(path: Path, spawned: float) -> dict[str, Any]:
    """Phase times from the worker's log, seconds after `spawned`."""
    lines = _log_times(path)

    def first(text: str) -> tuple[float, str] | None:
        return next(((t, line) for t, line in lines if text in line), None)

    out: dict[str, Any] = {}
    trees_start = first("LightGBM boosters as native code")
    trees_done = first("LightGBM boosters served compiled")
    if trees_start is not None:
        out["start_and_model_load_s"] = round(trees_start[0] - spawned, 2)
    if trees_done is not None:
        m = re.search(r"(\d+) of (\d+) compiled now.* in ([\d.]+) s", trees_done[1])
        if m:  # (main's line says "the rest from the cache")
            out["trees_s"] = float(m.group(3))
            found = re.search(r"(\d+) from the model artifact, (\d+) from the cache",
                              trees_done[1])
            artifact, cache = (int(found.group(1)), int(found.group(2))) if found else (
                0, int(m.group(2)) - int(m.group(1)))
            out["trees"] = {"compiled": int(m.group(1)), "artifact": artifact, "cache": cache}
    recovered = [(t, line) for t, line in lines if "changelog record(s)" in line]
    fetch = 0.0
    records = 0
    for _, line in recovered:
        m = re.search(r"recovered (\d+) changelog record\(s\) .* in ([\d.]+) s", line)
        if m:
            records += int(m.group(1))
            fetch += float(m.group(2))
    out["changelog_records"] = records
    out["changelog_fetch_decode_s"] = round(fetch, 2)
    # Seconds after spawn at which the model served (its trees loaded) and the changelog was
    # recovered: a worker that overlaps them (the model on a thread while the engine joins
    # and recovers) has the second before the first is done.
    if trees_done is not None:
        out["model_served_at_s"] = round(trees_done[0] - spawned, 2)
    if recovered:
        out["recovered_at_s"] = round(recovered[-1][0] - spawned, 2)
        out["recovery_started_at_s"] = round(recovered[0][0] - fetch - spawned, 2)
    if recovered and trees_done is not None and recovered[0][0] - fetch >= trees_done[0]:
        # one after the other (the worker before the overlap): join once the model served
        out["join_and_assign_s"] = round(recovered[0][0] - fetch - trees_done[0], 2)
    return out


async def _first_forecasts(settings: Settings, trigger: list[int], worker: WorkerProcess,
                           spawned: float, timeout_s: float) -> dict[str, Any]:
    """Wait for the worker's ready line, send one bucket-closing order per trigger SKU, and
    time the forecasts published for them."""
    consumer = AIOKafkaConsumer(settings.topics.forecasts, **client_kwargs(settings),
                                group_id=None, auto_offset_reset="latest")
    await consumer.start()
    try:
        await consumer.seek_to_end()
        ready_after = await asyncio.to_thread(worker.wait_ready, timeout_s)
        t_ready = time.time()
        orders = [_order(90_000_000 + s, s, 1.1) for s in trigger]
        await _produce(settings, settings.topics.orders, orders)
        t_sent = time.time()
        wanted = {f"S{s}" for s in trigger}
        got: dict[str, float] = {}
        deadline = time.monotonic() + timeout_s
        while len(got) < len(wanted) and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=100)).values():
                now = time.time()
                for r in records:
                    sku = json.loads(r.value).get("sku")
                    if sku in wanted and sku not in got:
                        got[sku] = now
        first = min(got.values()) if got else float("nan")
        last = max(got.values()) if got else float("nan")
        return {"ready_s": round(t_ready - spawned, 2), "ready_poll_s": round(ready_after, 2),
                "orders_sent_s": round(t_sent - spawned, 2),
                "first_forecast_s": round(first - spawned, 2),
                "all_forecasts_s": round(last - spawned, 2),
                "ready_to_first_forecast_s": round(first - t_ready, 2),
                "forecasts": len(got), "trigger_skus": len(wanted)}
    finally:
        await consumer.stop()


def _scenario(name: str, settings: Settings, model: Path, cache: Path, trigger: list[int],
              log: Path, console: Console, timeout_s: float,
              tree: Path | None = None) -> dict[str, Any]:
    console.rule(f"{name}: model {model.name}, cache {cache.name}, code {tree or 'this tree'}")
    run = settings.model_copy(update={"model_path": model})
    env = {"SHELFCAST_CACHE_DIR": str(cache)}
    if tree is not None:  # the worker runs another checkout's code (e.g. main's)
        env["PYTHONPATH"] = str(tree.resolve())
    worker = WorkerProcess(run, log, name=name, env=env)
    spawned = time.time()
    # `python -m` puts its working directory first on sys.path: the child starts in `tree`
    with contextlib.chdir(tree or Path.cwd()):
        worker.start()
    try:
        served = asyncio.run(_first_forecasts(run, trigger, worker, spawned, timeout_s))
    finally:
        worker.stop()
    result = {**_phases(log, spawned), **served}
    console.print(json.dumps(result))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skus", type=int, default=50_000)
    parser.add_argument("--trigger", type=int, default=1_000,
                        help="SKUs whose bucket an order closes after recovery, per scenario")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1, help="the scenarios, this many times")
    parser.add_argument("--timeout-s", type=float, default=180.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--compare-tree", type=Path, help="also run the cold and warm "
                        "scenarios with the worker's code from this checkout (e.g. a "
                        "worktree of main), in the same rounds")
    parser.add_argument("--logs", type=Path, help="keep the workers' logs here (default: a "
                        "new directory under /tmp, printed)")
    args = parser.parse_args()
    logs = args.logs or Path(tempfile.mkdtemp(prefix="shelfcast-recovery-logs-"))
    logs.mkdir(parents=True, exist_ok=True)
    from shelfcast.services.kafka_broker import LocalKafka

    console = Console(stderr=True)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    load_at_start = os.getloadavg()
    settings = served_model(Settings(), PipelineBenchOptions(), console)
    assert settings.model_path is not None
    with tempfile.TemporaryDirectory(prefix="shelfcast-recovery-") as tmp:
        root = Path(tmp)
        copies, save_compile_s = _copies(settings.model_path, root)
        records = _records(copies["shipped"], args.skus, console)
        with LocalKafka(root / "kafka") as broker:
            settings = settings.model_copy(update={
                "kafka_bootstrap": broker.bootstrap, "topic_partitions": args.partitions,
                "app_id": "shelfcast-recovery", "shop_topic_prefix": "rec.shop.",
                "topic_prefix": "rec."})

            async def fill() -> float:
                await ensure_topics(settings)
                await ensure_changelog(settings, args.partitions)
                t0 = time.perf_counter()
                await _produce(settings, changelog_topic(settings), records)
                return time.perf_counter() - t0

            produce_s = asyncio.run(fill())
            console.print(f"changelog filled in {produce_s:.1f} s")
            records.clear()
            plan: list[tuple[str, str, str, Path | None]] = [
                ("cold_cache", "without_trees", "cold", None),
                ("warm_cache", "without_trees", "cold", None),
                ("shipped_trees", "shipped", "fresh", None)]
            if args.compare_tree is not None:
                plan = [("compare_cold_cache", "without_trees", "compare", args.compare_tree),
                        ("compare_warm_cache", "without_trees", "compare", args.compare_tree),
                        *plan]
            runs: list[dict[str, Any]] = []
            n = 0
            for r in range(args.rounds):
                for name, artifact, cache_name, tree in plan:
                    cache = root / f"cache-{r}-{cache_name}"
                    trigger = list(range(n * args.trigger, (n + 1) * args.trigger))
                    n += 1
                    result = _scenario(name, settings, copies[artifact], cache, trigger,
                                       logs / f"{r + 1}-{name}.log", console, args.timeout_s,
                                       tree)
                    runs.append({"scenario": name, "round": r + 1, **result})
                    if name == "shipped_trees":
                        shutil.rmtree(cache, ignore_errors=True)
    report = {
        "skus": args.skus, "partitions": args.partitions, "trigger_skus": args.trigger,
        "model": settings.model, "model_path": str(settings.model_path),
        "save_compile_s": round(save_compile_s, 2), "changelog_produce_s": round(produce_s, 2),
        "compare_tree": None if args.compare_tree is None else str(args.compare_tree),
        "runs": runs, "logs": str(logs), "started_utc": started,
        "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(load_at_start),
    }
    emit(report, args.json)


if __name__ == "__main__":
    main()
