"""Replay the pipeline bench's backlog through a worker's CPU path in-process (no broker).

What one batch-engine worker does per batch, minus the network: `BatchProcessor.process` on
the live `StateStore`, the engine's output encoding (`_output_groups`) and the changelog
encoding of the keys the batch wrote (`_changelog_groups`). The records are the bench's own
(`shelfcast.bench_pipeline.backlog`), cut into consumer-like batches: up to `take_max`
records, a slice of each input partition in turn. Prints CPU seconds, events per CPU-second
and a digest of every output and changelog record (per key, in order) so that a change to
the hot path can be checked to give the same bytes:

    PYTHONPATH=$PWD python benchmarks/replay_worker.py [--events N] [--repeat R] [--profile]
        [--model-path DIR]

`--model-path DIR` serves that trained LSTM through the worker's own serving path
(`served_forecaster(on_loop=True)`: the inferencer with its forward passes on the event loop,
as the batch worker runs it, and the incremental states) instead of the moving average. The
batches are replayed one at a time (one input partition each), not as the engine's
concurrent partitions.

`--profile` runs it under cProfile and prints the top functions by own time; for a sampled
profile, run it under `py-spy record -o out.svg -- python benchmarks/replay_worker.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import hashlib
import pstats
import time
from collections import defaultdict
from datetime import UTC, datetime

from runtime.settings import Settings
from shelfcast.bench_pipeline import PipelineBenchOptions, backlog
from streams.engine import BatchEngine
from streams.forecaster_setup import served_forecaster
from streams.processor import BatchProcessor, ProcessorConfig, RawRecord
from streams.store import StateStore, key_partition

FIXED_NOW = datetime(2024, 2, 1, tzinfo=UTC)


def batches(settings: Settings, opts: PipelineBenchOptions) -> list[list[RawRecord]]:
    """The backlog as the worker fetches it: per input partition in offset order, each batch
    up to `take_max` records of one partition, the partitions in turn (aiokafka's `getmany`
    hands out one partition's fetched records at a time: the bench's drain writes ~35k
    changelog records, one per key per batch, i.e. ~1,250 keys per 10k-event batch)."""
    stock, orders = backlog(opts)
    queues: dict[tuple[str, int], list[RawRecord]] = defaultdict(list)
    for topic, records in ((settings.topics.stock, stock), (settings.topics.orders, orders)):
        for key, value in records:
            p = key_partition(key, opts.partitions)
            q = queues[(topic, p)]
            q.append(RawRecord(topic, p, len(q), key, value))
    out: list[list[RawRecord]] = []
    take = settings.take_max
    pos = dict.fromkeys(queues, 0)
    while any(pos[tp] < len(q) for tp, q in queues.items()):
        for tp, q in queues.items():
            if pos[tp] < len(q):
                out.append(q[pos[tp]:pos[tp] + take])
                pos[tp] += take
    return out


Sent = list[tuple[str, bytes | None, bytes | None]]


def replay(settings: Settings, work: list[list[RawRecord]], partitions: int) -> Sent:
    """Run every batch through processor + encodings; every (topic, key, value) written."""
    sent: Sent = []

    async def go() -> None:
        async with served_forecaster(settings, on_loop=True) as (model, predict):
            processor = BatchProcessor(ProcessorConfig.from_settings(settings), predict,
                                       model.model_version, now=lambda: FIXED_NOW)
            await run(processor)

    async def run(processor: BatchProcessor) -> None:
        engine = BatchEngine(settings, processor)
        engine.store = store = StateStore(partitions)
        engine._out_partitions = dict.fromkeys(settings.topics.outputs(), partitions)
        for batch in work:
            # a batch holds one input partition's records: its table
            out = await processor.process(batch, store.partition(batch[0].partition))
            for groups in (engine._output_groups(out), engine._changelog_groups()):
                for (topic, _), items in groups.items():
                    sent.extend((topic, key, value) for key, value in items)

    asyncio.run(go())
    return sent


def digest(sent: Sent) -> str:
    """sha256 over every key's records in order (the order across keys may differ)."""
    per_key: dict[tuple[str, bytes | None], hashlib._Hash] = {}
    for topic, key, value in sent:
        h = per_key.get((topic, key))
        if h is None:
            h = per_key[(topic, key)] = hashlib.sha256()
        h.update(value or b"<tombstone>")
    total = hashlib.sha256()
    for name in sorted(per_key, key=lambda k: (k[0], k[1] or b"")):
        total.update(repr(name).encode() + per_key[name].digest())
    return total.hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--model-path", default=None,
                        help="serve this trained LSTM (default: the moving average)")
    args = parser.parse_args()
    settings = Settings(kafka_bootstrap="unused:9092", device="cpu",
                        model="lstm" if args.model_path else "moving_average",
                        model_path=args.model_path)
    opts = PipelineBenchOptions(events=args.events)
    work = batches(settings, opts)
    events = sum(map(len, work))
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)  # as the worker (`streams.worker.tune_gc`)
    for _ in range(args.repeat):
        profiler = cProfile.Profile() if args.profile else None
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        sent = replay(settings, work, opts.partitions)
        if profiler is not None:
            profiler.disable()
        cpu = time.process_time() - cpu0
        wall = time.perf_counter() - wall0
        print(f"{events} events in {len(work)} batches: {cpu:.2f} CPU-s ({wall:.2f} s wall), "
              f"{events / cpu:,.0f} events per CPU-s, {1e6 * cpu / events:.1f} us/event; "
              f"{len(sent)} records out, digest {digest(sent)}")
        if profiler is not None:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
