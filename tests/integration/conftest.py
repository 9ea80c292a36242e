"""Fixtures shared by the integration tests (the services themselves: tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from optimizer.store import PlanStore


@pytest.fixture
async def store(pg_database: str) -> AsyncIterator[PlanStore]:
    """A PlanStore on a fresh database, migrated."""
    plan_store = await PlanStore.connect(pg_database)
    await plan_store.migrate()
    try:
        yield plan_store
    finally:
        await plan_store.close()
