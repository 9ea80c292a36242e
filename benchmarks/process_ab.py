"""`BatchProcessor.process` of a git revision against this tree's, in ONE process.

On a shared machine two subprocesses see different load; here the revision's `process` (its
source taken with `git show REV:streams/processor.py`, compiled in this tree's
`streams.processor` module, so everything it calls is this tree's: the decode, the state's
`order`, the forecast) and this tree's run in alternating passes over the same fetches, each
pass on fresh state. The figure of each side is the sum over the fetches of each fetch's
least CPU over the passes (steadier under a shared machine's load than the least whole
pass, `ratio_least_pass`, also printed). What differs is only the batch
loop of `process` (and what it calls that the revision did not have: `SkuState.orders`).
Both sides' outputs and final states are checked equal.

    PYTHONPATH=$PWD python benchmarks/process_ab.py --rev main --stream bench --events 60000
    PYTHONPATH=$PWD python benchmarks/process_ab.py --rev main --stream runs --run 10

The GC is tuned as the worker tunes it (`streams.worker.tune_gc`) unless `--default-gc`.
`--stream bench`: the pipeline bench's backlog as `processor_only.py` cuts it (fetches of
`--fetch` records per partition, 4 partitions, the live `StateStore`); `--stream runs`:
`order_runs.py`'s fetches of `--run` orders per key (`--cross`: each run crosses a bucket).
"""

from __future__ import annotations
import __future__

import argparse
import ast
import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def process_of(rev: str) -> Any:
    """The revision's `BatchProcessor.process`, compiled in this tree's module."""
    import streams.processor as module

    source = subprocess.run(["git", "show", f"{rev}:streams/processor.py"], cwd=HERE,
                            capture_output=True, text=True, check=True).stdout
    tree = ast.parse(source)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef)
               and n.name == "BatchProcessor")
    fn = next(n for n in cls.body if isinstance(n, ast.AsyncFunctionDef) and n.name == "process")
    code = compile(ast.Module(body=[fn], type_ignores=[]), f"{rev}:streams/processor.py",
                   "exec", flags=__future__.annotations.compiler_flag, dont_inherit=True)
    namespace: dict[str, Any] = {}
    exec(code, module.__dict__, namespace)
    return namespace["process"]  # its globals: this tree's streams.processor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rev", default="main")
    ap.add_argument("--stream", choices=["bench", "runs"], default="bench")
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--fetch", type=int, default=2_500)
    ap.add_argument("--run", type=int, default=10)
    ap.add_argument("--cross", action="store_true")
    ap.add_argument("--passes", type=int, default=5, help="passes per side, alternating")
    ap.add_argument("--default-gc", action="store_true",
                    help="Python's GC thresholds, not the worker's (`tune_gc`)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from forecasting import make_forecaster
    from streams.processor import BatchProcessor, ProcessorConfig
    from streams.state import SkuState
    from streams.store import StateStore
    from streams.worker import local_predict, tune_gc

    old = process_of(args.rev)
    settings = _load("processor_only")._settings()
    fetches, partitions = _load("order_runs").stream_fetches(
        args.stream, events=args.events, fetch=args.fetch, run=args.run, cross=args.cross,
        fetches=6)
    events = sum(len(b) for _, b in fetches)
    if not args.default_gc:
        tune_gc()  # as the worker runs: few cyclic-GC passes over the live states
    model = make_forecaster("moving_average")

    async def one_pass(process: Any) -> tuple[list[float], Any]:
        processor = BatchProcessor(ProcessorConfig.from_settings(settings),
                                   local_predict(model), model.model_version,
                                   now=lambda: datetime(2024, 3, 1, tzinfo=UTC))
        store = StateStore(partitions)
        cpu: list[float] = []
        seen: list[Any] = []
        for p, batch in fetches:
            t = time.process_time()
            out = await process(processor, batch, store.partition(p))
            cpu.append(time.process_time() - t)
            seen.append((out.accepted, out.duplicates, len(out.forecast_rows),
                         sorted((d.offset, d.error_kind) for d in out.dead_letters),
                         sorted((r.sku, r.quantity) for r in out.restocks)))
        states = {k: (v.to_json() if isinstance(v, SkuState) else v) for k, v in store.items()}
        return cpu, (seen, states)

    sides = {"rev": old, "this": BatchProcessor.process}
    best: dict[str, float] = dict.fromkeys(sides, float("inf"))  # least pass
    least: dict[str, list[float]] = {}  # least CPU of each fetch over the passes
    results: dict[str, Any] = {}
    load_before = os.getloadavg()
    for i in range(args.passes):
        for name in (sides if i % 2 == 0 else reversed(list(sides))):
            cpu, result = asyncio.run(one_pass(sides[name]))
            best[name] = min(best[name], sum(cpu))
            least[name] = list(map(min, least.get(name, cpu), cpu))
            results.setdefault(name, result)
            assert result == results[name]
    same = results["rev"] == results["this"]
    row = {"stream": args.stream, "events": events, "rev": args.rev,
           "rev_us_per_event": round(1e6 * sum(least["rev"]) / events, 3),
           "this_us_per_event": round(1e6 * sum(least["this"]) / events, 3),
           "ratio": round(sum(least["this"]) / sum(least["rev"]), 3),
           "ratio_least_pass": round(best["this"] / best["rev"], 3), "same_results": same,
           "load_before": load_before, "load_after": os.getloadavg(),
           "options": {k: str(v) for k, v in vars(args).items() if k != "json"}}
    print(json.dumps(row))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(row, indent=2) + "\n")
    if not same:
        sys.exit("the two sides differ")


if __name__ == "__main__":
    main()
