"""Instructions of the batch processor on a fixed stream, for `valgrind --tool=callgrind`.

A shared machine's load moves CPU-seconds by ±20% from run to run; instruction counts do not
move. This processes a stream (`--stream bench`: the pipeline bench's backlog cut as
`processor_only.py` cuts it; `--stream runs`: `order_runs.py`'s fetches of `--run` orders
per key) with the tree on PYTHONPATH, or, with `--no-process`, only builds the records
(the part to subtract). Hash seed fixed, GC tuned as the worker's:

    for tree in $PWD ../colrun-main; do for mode in "" --no-process; do
      PYTHONHASHSEED=0 PYTHONPATH=$tree valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        python benchmarks/process_instructions.py --stream bench --events 20000 $mode 2>&1 \
        | grep "Collected"; done; done

The processor's instructions of a tree = its run's total minus its `--no-process` run's.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from process_ab import _load  # noqa: E402  (a sibling script: loads benchmarks/<name>.py)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stream", choices=["bench", "runs"], default="bench")
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--fetch", type=int, default=2_500)
    ap.add_argument("--run", type=int, default=10)
    ap.add_argument("--cross", action="store_true")
    ap.add_argument("--no-process", action="store_true")
    args = ap.parse_args()

    from forecasting import make_forecaster
    from streams.processor import BatchProcessor, ProcessorConfig
    from streams.store import StateStore
    from streams.worker import local_predict, tune_gc

    settings = _load("processor_only")._settings()
    fetches, partitions = _load("order_runs").stream_fetches(
        args.stream, events=args.events, fetch=args.fetch, run=args.run, cross=args.cross,
        fetches=4)
    model = make_forecaster("moving_average")
    processor = BatchProcessor(ProcessorConfig.from_settings(settings), local_predict(model),
                               model.model_version, now=lambda: datetime(2024, 3, 1, tzinfo=UTC))
    store = StateStore(partitions)
    tune_gc()

    async def go() -> int:
        accepted = 0
        for p, batch in fetches:
            out = await processor.process(batch, store.partition(p))
            accepted += out.accepted
        return accepted

    if not args.no_process:
        print("accepted", asyncio.run(go()), "of", sum(len(b) for _, b in fetches))


if __name__ == "__main__":
    main()
