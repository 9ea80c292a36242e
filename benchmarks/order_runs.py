"""Processor CPU per order by run length: L orders of each key per fetch, no broker.

`BatchProcessor.process` on fetches of `--fetch` order records spread over `fetch / L` keys
(each key's L orders interleaved with the other keys', as a partition's fetch holds them),
every key warmed first (a stock snapshot and an order, so its clock and stock are set).
`--cross` makes every key's run cross into the next bucket once (the run stops there and
the rest is held to the next round, as a bucket close does). `--redeliver F` repeats a
fraction F of the orders (duplicates within the fetch). The CPU of every fetch's `process`
call, least of `--repeat` passes on fresh state, per order; the moving average forecasts
what closes. A digest of the outputs and final states lets two trees be checked for the
same results.

    PYTHONPATH=$PWD python benchmarks/order_runs.py --runs 1,2,3,5,10,20,50 \
        --against ../colrun-main --rounds 3 --json benchmarks/results/order_runs.json

With `--against DIR` each run is repeated with the code of DIR and of this tree in
alternation (subprocesses, same load); the medians of the rounds are compared.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _records(run: int, fetch: int, fetches: int, cross: bool, redeliver: float,
             seed: int = 7) -> tuple[list[Any], list[list[Any]]]:
    from runtime.settings import Settings
    from schemas import sku_key
    from streams.processor import RawRecord

    topics = Settings(kafka_bootstrap="unused:9092").topics
    rng = random.Random(seed)
    keys = max(1, fetch // run)
    offsets = {"stock": 0, "orders": 0}

    def record(topic: str, value: dict[str, Any], sku: str) -> Any:
        name = "stock" if topic == topics.stock else "orders"
        offsets[name] += 1
        return RawRecord(topic, 0, offsets[name], sku_key(sku, "wh").encode(),
                         json.dumps(value).encode())

    warm = []
    for k in range(keys):
        warm.append(record(topics.stock, {
            "event_id": f"snap{k}", "type": "snapshot", "sku": f"S{k}", "location": "wh",
            "on_hand": rng.randint(0, 3 * run), "occurred_at": T0.isoformat()}, f"S{k}"))
    warm += [record(topics.orders, {
        "event_id": f"w{k}", "type": "placed", "sku": f"S{k}", "location": "wh",
        "quantity": 1, "occurred_at": (T0 + timedelta(minutes=1)).isoformat()}, f"S{k}")
        for k in range(keys)]
    batches = [warm]
    n = 0
    for f in range(fetches):
        day = T0 + timedelta(days=f)
        lines = []
        for k in range(keys):
            for j in range(run):
                # with --cross: the run's last line falls in the next bucket
                at = day + timedelta(days=1 if cross and j == run - 1 else 0,
                                     minutes=5 + 1400 * j / run)
                lines.append((k, j, {"event_id": f"o{n}", "type": "placed", "sku": f"S{k}",
                                     "location": "wh", "quantity": rng.randint(1, 4),
                                     "occurred_at": at.isoformat()}))
                n += 1
        rng.shuffle(lines)
        lines.sort(key=lambda x: x[1])  # each key's lines in time order, keys interleaved
        batch = [record(topics.orders, v, f"S{k}") for k, _, v in lines]
        if redeliver:
            batch += [record(topics.orders, json.loads(r.value), r.key.decode().split("@")[0])
                      for r in rng.sample(batch, int(redeliver * len(batch)))]
        if not cross:  # no bucket closes inside the fetch: the next day opens first
            close = [record(topics.orders, {
                "event_id": f"c{f}-{k}", "type": "placed", "sku": f"S{k}", "location": "wh",
                "quantity": 1, "occurred_at": (day + timedelta(days=1)).isoformat()}, f"S{k}")
                for k in range(keys)]
            batches.append(batch)
            batches.append(close)
        else:
            batches.append(batch)
    return warm, batches


def stream_fetches(stream: str, *, events: int, fetch: int, run: int, cross: bool,
                   fetches: int) -> tuple[list[tuple[int, list[Any]]], int]:
    """(partition, records) fetches and the partition count of a fixed stream:
    `bench` the pipeline bench's backlog cut as `processor_only.py` cuts it, `runs` this
    script's `fetches` fetches of `run` orders per key (what process_ab.py and
    process_instructions.py process)."""
    if stream == "bench":
        import importlib.util
        spec = importlib.util.spec_from_file_location(
            "processor_only", Path(__file__).resolve().parent / "processor_only.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        parts = module._records(events, 5_000, 7, 4)
        cut = [(p, records[s:s + fetch]) for s in range(0, max(map(len, parts)), fetch)
               for p, records in enumerate(parts) if s < len(records)]
        return cut, len(parts)
    _, batches = _records(run, fetch, fetches, cross, 0.0)
    return [(0, b) for b in batches], 1


def measure(run: int, fetch: int, fetches: int, cross: bool, redeliver: float,
            repeat: int) -> dict[str, Any]:
    from forecasting import make_forecaster
    from runtime.settings import Settings
    from streams.processor import BatchOutputs, BatchProcessor, ProcessorConfig
    from streams.state import SkuState
    from streams.store import StateStore
    from streams.worker import local_predict

    settings = Settings(kafka_bootstrap="unused:9092")
    _, batches = _records(run, fetch, fetches, cross, redeliver)
    timed = batches[1:]
    if not cross:
        timed = timed[0::2]  # the runs; the closing fetches in between are not timed
    timed_ids = {id(b) for b in timed}
    orders = sum(map(len, timed))
    model = make_forecaster("moving_average")
    best = float("inf")
    digest = ""

    async def one_pass() -> tuple[float, str]:
        processor = BatchProcessor(ProcessorConfig.from_settings(settings),
                                   local_predict(model), model.model_version,
                                   now=lambda: datetime(2024, 3, 1, tzinfo=UTC))
        table = StateStore(1).partition(0)
        cpu = 0.0
        h = hashlib.blake2b(digest_size=8)
        for batch in batches:
            t = time.process_time()
            out: BatchOutputs = await processor.process(batch, table)
            if id(batch) in timed_ids:
                cpu += time.process_time() - t
            h.update(repr((out.accepted, out.duplicates, len(out.forecast_rows),
                           [(d.offset, d.error_kind) for d in out.dead_letters],
                           [(r.sku, r.quantity) for r in out.restocks])).encode())
        for key in sorted(table):
            state = table[key]
            h.update(json.dumps(state.to_json() if isinstance(state, SkuState) else state,
                                sort_keys=True).encode())
        return cpu, h.hexdigest()

    for _ in range(repeat):
        cpu, digest = asyncio.run(one_pass())
        best = min(best, cpu)
    return {"run": run, "orders": orders, "cpu_s": round(best, 4),
            "us_per_order": round(1e6 * best / orders, 3), "digest": digest}


def _child(tree: str, args: argparse.Namespace, run: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", str(run),
           "--fetch", str(args.fetch), "--fetches", str(args.fetches),
           "--redeliver", str(args.redeliver), "--repeat", str(args.repeat)]
    if args.cross:
        cmd.append("--cross")
    done = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": tree}, cwd=tree,
                          capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default="1,2,3,5,10,20,50", help="orders per key per fetch")
    ap.add_argument("--fetch", type=int, default=2_500, help="orders per fetch")
    ap.add_argument("--fetches", type=int, default=6)
    ap.add_argument("--cross", action="store_true", help="each run crosses a bucket")
    ap.add_argument("--redeliver", type=float, default=0.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--against")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.fetch, args.fetches, args.cross,
                                 args.redeliver, args.repeat)))
        return
    here = str(Path(__file__).resolve().parents[1])
    trees = {"this": here} | ({"against": str(Path(args.against).resolve())}
                              if args.against else {})
    runs = [int(r) for r in args.runs.split(",")]
    got: dict[str, dict[int, list[dict[str, Any]]]] = {t: {r: [] for r in runs} for t in trees}
    load_before = os.getloadavg()
    for rnd in range(args.rounds):
        for run in runs:
            for name, tree in (trees.items() if rnd % 2 == 0 else reversed(trees.items())):
                one = _child(tree, args, run)
                got[name][run].append(one)
                print(f"round {rnd} {name:8s} run {run:3d}: {one['us_per_order']:7.3f} us/order"
                      f"  digest {one['digest']}", flush=True)
    summary = {}
    for run in runs:
        row: dict[str, Any] = {name: statistics.median(x["us_per_order"] for x in got[name][run])
                               for name in trees}
        if args.against:
            row["ratio"] = round(row["this"] / row["against"], 3)
            row["same_digest"] = ({x["digest"] for x in got["this"][run]}
                                  == {x["digest"] for x in got["against"][run]})
        summary[run] = row
        print(f"run {run:3d}: " + json.dumps(row))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "command": " ".join(sys.argv), "trees": trees, "load_before": load_before,
            "load_after": os.getloadavg(), "summary": summary, "runs": got,
            "options": {k: v for k, v in vars(args).items() if k not in ("json", "one")}},
            indent=2) + "\n")


if __name__ == "__main__":
    main()
