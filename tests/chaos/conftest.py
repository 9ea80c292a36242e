"""Chaos suite: registers the `chaos` marker, marks every test under tests/chaos with it, and
trains the tiny LSTM the scenarios serve (the default model) once per session."""

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


@pytest.fixture(scope="session")
def lstm_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LSTM (8 hidden units, 2 epochs on 40 synthetic series: seconds of CPU) in a
    model directory: what SHELFCAST_MODEL_PATH points at in the scenarios that serve it."""
    pytest.importorskip("torch")
    from shelfcast.quick_model import quick_config, synthetic_panel, train_or_reuse

    # ~3 orders per SKU and day, as the scenarios' stream (3600 orders, 240 SKUs, 6 days)
    panel = synthetic_panel(40, 120, 2.5, seed=6, end_day="2011-03-06")
    model = train_or_reuse(panel, quick_config(tiny=True),
                           cache=tmp_path_factory.mktemp("lstm-models"))
    return model.path
