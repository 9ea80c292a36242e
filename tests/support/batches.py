"""Run a record list through a `BatchProcessor` in batches cut at given offsets, the outputs
of all batches gathered in one `BatchOutputs` (the batching property tests compare these)."""

from __future__ import annotations

import asyncio
from typing import Any

from streams.processor import BatchOutputs, BatchProcessor, RawRecord


def run_in_batches(processor: BatchProcessor, records: list[RawRecord], cuts: list[int],
                   table: Any) -> BatchOutputs:
    """The records in batches ending at each of `cuts` (and at the end)."""
    total = BatchOutputs()
    bounds = sorted({c for c in cuts if 0 < c < len(records)} | {len(records)})

    async def go() -> None:
        start = 0
        for end in bounds:
            out = await processor.process(records[start:end], table)
            start = end
            total.forecast_rows.extend(out.forecast_rows)
            for name in ("restocks", "alert_rows", "dead_letters", "demand_rows"):
                getattr(total, name).extend(getattr(out, name))
            total.accepted += out.accepted
            total.duplicates += out.duplicates

    asyncio.run(go())
    return total
