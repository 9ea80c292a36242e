"""The one retry schedule: doubling from the base, capped, jittered down, Retry-After honoured."""

from __future__ import annotations

import random

import pytest

from optimizer.service import DB_RETRY
from runtime.backoff import Backoff
from streams.alert_forwarder import WEBHOOK_RETRY
from streams.engine import SEND_RETRY


def test_delays_double_from_the_base_and_stop_at_the_cap():
    exact = Backoff(base_delay_s=0.5, max_delay_s=10.0, jitter=0.0)
    assert [exact.delay_s(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert exact.delay_s(10_000) == 10.0  # no overflow however long the outage


def test_jitter_scales_each_delay_down_by_at_most_the_fraction():
    b = Backoff(base_delay_s=1.0, max_delay_s=8.0)  # jitter 0.5: uniform(0.5, 1) * delay
    random.seed(7)
    firsts = [b.delay_s(1) for _ in range(200)]
    assert all(0.5 <= d <= 1.0 for d in firsts) and len(set(firsts)) > 100
    assert all(4.0 <= b.delay_s(n) <= 8.0 for n in (4, 20))


def test_a_server_given_delay_raises_the_wait_but_not_past_the_cap():
    b = Backoff(base_delay_s=1.0, max_delay_s=8.0)
    assert b.delay_s(1, retry_after_s=5.0) == 5.0
    assert b.delay_s(1, retry_after_s=500.0) == 8.0
    assert 0.5 <= b.delay_s(1, retry_after_s=0.0) <= 1.0  # shorter than ours: ours stands


def test_attempts_run_out_only_when_bounded():
    assert not Backoff(max_attempts=0).exhausted(10**6)
    bounded = Backoff(max_attempts=3)
    assert [bounded.exhausted(n) for n in (1, 2, 3, 4)] == [False, False, True, True]


def test_each_caller_keeps_its_schedule():
    assert (DB_RETRY.base_delay_s, DB_RETRY.max_delay_s, DB_RETRY.max_attempts) == (0.2, 10.0, 8)
    assert (WEBHOOK_RETRY.base_delay_s, WEBHOOK_RETRY.max_delay_s,
            WEBHOOK_RETRY.max_attempts) == (0.5, 30.0, 0)
    # the batch engine's sends while the broker is away: the exact doubling, held forever
    assert [SEND_RETRY.delay_s(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert not SEND_RETRY.exhausted(10**6)


@pytest.mark.parametrize("bad", [
    {"base_delay_s": -1.0}, {"max_delay_s": -1.0}, {"max_attempts": -1}, {"jitter": 1.5},
])
def test_nonsense_is_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        Backoff(**bad)
