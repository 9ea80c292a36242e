"""The decode step alone: a fetch-sized run of orders with a few malformed records, decoded
as main did (the run fails the columns, so every record goes `fast_order` one by one) and as
the processor does now (`BatchProcessor._decode_run`: parse up to the odd record, that one
alone by the exact path, halving on column-check failures), and a clean run for reference.
Checks both give the same items and dead letters; prints microseconds per record (the least
of 7 repeats) and writes JSON.

    PYTHONPATH=$PWD python benchmarks/decode_columns.py [--run 2500] [--bad-every 1000] \
        [--json benchmarks/results/decode_columns.json]
"""

from __future__ import annotations

import argparse
import json
import os
import timeit
from pathlib import Path
from typing import Any

from runtime.settings import Settings
from shelfcast.bench_pipeline import PipelineBenchOptions, backlog
from streams.codec import order_columns
from streams.outputs import BatchOutputs
from streams.processor import BatchProcessor, ProcessorConfig, RawRecord


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=int, default=2_500, help="records in the run (a fetch)")
    ap.add_argument("--bad-every", type=int, default=1_000, help="every n-th record cut short")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    settings = Settings(kafka_bootstrap="unused:9092")
    topic = settings.topics.orders
    _, orders = backlog(PipelineBenchOptions(events=args.run + 5_000, skus=5_000, days=7))
    clean = [RawRecord(topic, 0, i, k, v) for i, (k, v) in enumerate(orders[:args.run])]
    odd = [RawRecord(topic, 0, i, k, v[:-9] if i % args.bad_every == args.bad_every // 2
                     else v) for i, (k, v) in enumerate(orders[:args.run])]
    processor = BatchProcessor(ProcessorConfig.from_settings(settings), None,  # type: ignore[arg-type]
                               "none")

    def columns(records: list[RawRecord]) -> tuple[list[Any], BatchOutputs]:
        pending: list[Any] = []
        out = BatchOutputs()
        processor._decode_run(topic, records, pending, out)
        return pending, out

    def record_by_record(records: list[RawRecord]) -> tuple[list[Any], BatchOutputs]:
        pending: list[Any] = []
        out = BatchOutputs()
        if order_columns([r.value for r in records], 1 << 20) is None:
            processor._decode_each(records, pending, out)
        else:
            raise SystemExit("the odd run decoded as columns: nothing to compare")
        return pending, out

    a, b = columns(odd), record_by_record(odd)
    same = ([x[1:] for x in a[0]] == [x[1:] for x in b[0]]
            and [d.offset for d in a[1].dead_letters] == [d.offset for d in b[1].dead_letters])
    assert same, "the two decodes disagree"
    result: dict[str, Any] = {"run": args.run, "bad": len(b[1].dead_letters),
                              "loadavg": os.getloadavg()}
    for name, fn, records in (("record_by_record_odd_run", record_by_record, odd),
                              ("columns_odd_run", columns, odd),
                              ("columns_clean_run", columns, clean)):
        best = min(timeit.repeat(lambda f=fn, r=records: f(r), number=10, repeat=7))
        result[f"{name}_us_per_record"] = round(best / 10 / len(records) * 1e6, 3)
        print(f"{name:26s} {result[f'{name}_us_per_record']:6.2f} us/record")
    result["speedup_odd_run"] = round(result["record_by_record_odd_run_us_per_record"]
                                      / result["columns_odd_run_us_per_record"], 2)
    print(f"odd run: {result['speedup_odd_run']}x faster by columns "
          f"({result['bad']} bad of {args.run}); load {result['loadavg'][0]:.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
