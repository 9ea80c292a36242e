"""A pooled connection left mid-protocol by a PostgreSQL crash raises asyncpg's
InternalClientError; the optimizer retries it like any other outage error (the chaos suite's
PostgreSQL SIGKILL drill killed the optimizer with it before)."""

from __future__ import annotations

import asyncpg

from optimizer.service import retry_transient
from runtime.backoff import Backoff


async def test_internal_client_error_is_retried():
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise asyncpg.exceptions.InternalClientError(
                "cannot switch to state 12; another operation (2) is in progress")
        return "done"

    policy = Backoff(max_attempts=3, base_delay_s=0.001, max_delay_s=0.001)
    assert await retry_transient(flaky, policy, what="mark plans published") == "done"
    assert calls == 2
