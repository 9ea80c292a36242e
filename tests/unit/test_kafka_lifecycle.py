"""stop_client: a stray CancelledError from a client's stop() is swallowed; a real
cancellation of the caller still propagates."""

from __future__ import annotations

import asyncio

import pytest

from runtime.kafka_lifecycle import stop_client


class StrayCancel:
    """Like aiokafka's consumer when its fetcher awaits a cancelled task."""

    stopped = False

    async def stop(self) -> None:
        inner = asyncio.ensure_future(asyncio.sleep(10))
        inner.cancel()
        self.stopped = True
        await inner


async def test_a_stray_cancelled_error_is_swallowed():
    client = StrayCancel()
    await stop_client(client)
    assert client.stopped


async def test_cancelling_the_caller_still_cancels_it():
    class Slow:
        async def stop(self) -> None:
            await asyncio.sleep(10)

    task = asyncio.ensure_future(stop_client(Slow()))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
