"""Stopping aiokafka clients without a stray CancelledError.

aiokafka 0.14's `Fetcher.close()` cancels its pending fetch tasks and awaits them without
suppressing the cancellation; a fetch that is sleeping out its retry backoff after a broker
error (the broker is down) then makes `consumer.stop()` raise CancelledError although nobody
cancelled the caller (aio-libs/aiokafka#974). Inside a rebalance callback that kills the group
coordination, and the worker with it -- the chaos suite's broker outage caught it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["stop_client"]

log = logging.getLogger(__name__)


async def stop_client(client: Any) -> None:
    """`await client.stop()`; a CancelledError is swallowed unless this task itself is being
    cancelled (then it propagates, as cancellation must)."""
    try:
        await client.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.warning("%s.stop() raised a stray CancelledError (broker unreachable?); ignored",
                    type(client).__name__)
