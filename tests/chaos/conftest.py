"""Chaos suite: registers the `chaos` marker and marks every test under tests/chaos with it."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "chaos: fault-injection scenarios (worker/optimizer kills, rebalances, broker and "
        "PostgreSQL restarts) checked by a verifier; writes chaos-report.json",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.chaos)
