"""`config_overrides`: the benchmarks' `--set KEY=JSON` settings as LSTMConfig fields."""

from __future__ import annotations

import dataclasses

import pytest

from forecasting.lstm.config import LSTMConfig, config_overrides


def test_json_values_become_config_fields() -> None:
    got = config_overrides(["hidden=32", 'calendar="none"', "levels=[0.1, 0.5, 0.9]"])
    assert got == {"hidden": 32, "calendar": "none", "levels": [0.1, 0.5, 0.9]}
    assert dataclasses.replace(LSTMConfig(), **got).hidden == 32


@pytest.mark.parametrize(("item", "reason"), [
    ("nope=1", "LSTMConfig field"),
    ("hidden", "KEY=JSON"),
    ("calendar=uk", "not JSON"),
])
def test_bad_settings_say_why(item: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        config_overrides([item])
