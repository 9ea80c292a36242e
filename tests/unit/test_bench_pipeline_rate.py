"""The pipeline bench's group rate once every worker is ready (`events_per_s_all_ready`)."""

from __future__ import annotations

import pytest

from shelfcast.bench_pipeline import _rate_all_ready


def test_rate_over_what_was_left_when_all_were_ready() -> None:
    assert _rate_all_ready(120_000, 2.0) == pytest.approx(60_000.0)


@pytest.mark.parametrize(("lag", "seconds"), [(999, 2.0), (0, 2.0), (50_000, 0.05), (-3, 1.0)])
def test_nothing_to_time_gives_none(lag: int, seconds: float) -> None:
    assert _rate_all_ready(lag, seconds) is None
