"""The Faust engine serving the LSTM on a real broker: a worker SIGKILLed mid-stream (from
outside, or by a crash point between two steps of a batch) and restarted recovers its table
from the changelog and resumes every SKU's recurrent state, so no event is lost or counted twice
and every forecast it (or the dead one) published equals the forecast of an uninterrupted run
(the batch engine's twin: tests/integration/test_streams_lstm_recovery.py).

What this caught: the restarted worker hung in recovery ("No event received for active tp":
the changelog was read back as JSON), a crash between a batch's changelog and its outputs
lost that batch's forecasts (the replayed events were duplicates to the recovered state), and
the restarted worker skipped a run of records of every partition, dropped by Faust at the end
of its recovery (streams/app.py `_SeekFirstRecovery`): its forecasts went missing or were off
by ~4 (3 of 14 case runs before the fix; 0 of 48 after, at load 1.6-6.4)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path

import pytest

from runtime.faults import FAULT_ENV
from runtime.settings import Settings
from shelfcast.worker_process import WorkerProcess
from streams.changelog import decode_sku_state
from streams.lag import LagProbe
from streams.topics import ensure_topics
from tests.support.kafka import produce, read_all, wait_lag
from tests.support.lstm import (
    published_means,
    recovery_orders,
    save_tiny_lstm,
    uninterrupted_run,
    worst_difference,
)

torch = pytest.importorskip("torch")

Forecasts = dict[tuple[str, datetime], list[float]]


@pytest.mark.timeout(360)
@pytest.mark.parametrize("crash", [
    None,  # SIGKILL from outside, wherever it lands
    "worker.mid_batch@8",  # outputs acknowledged, their state not yet changelogged
    "worker.before_commit@8",  # outputs and changelog acknowledged, offsets not committed
])
async def test_a_killed_faust_lstm_worker_recovers_its_table_and_forecasts_as_if_never_stopped(
    kafka_bootstrap: str, fresh_topic_prefix: str, tmp_path: Path, crash: str | None
):
    version = save_tiny_lstm(tmp_path / "model", seed=11, hidden=16,
                             fingerprint="recovery-test")
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"{fresh_topic_prefix}.",
                        shop_topic_prefix=f"{fresh_topic_prefix}.shop.",
                        app_id=f"{fresh_topic_prefix}-app", topic_partitions=4,
                        engine="faust", take_max=150, kafka_session_timeout_s=6,
                        commit_interval_s=0.5, model="lstm", model_path=tmp_path / "model",
                        window_buckets=7, max_wait_ms=1)
    await ensure_topics(settings)
    records = recovery_orders()
    log = tmp_path / "worker.log"
    first = WorkerProcess(settings, log, name="worker-1",
                          env={FAULT_ENV: crash} if crash else None).start()
    second = WorkerProcess(settings, log, name="worker-2")
    try:
        await asyncio.to_thread(first.wait_ready, 120)
        async with LagProbe(settings) as probe:
            await produce(settings, settings.topics.orders, records)
            if crash is None:
                await wait_lag(probe, int(len(records) * 0.5), 120)
                first.kill()  # mid-stream: states in memory, some batches uncommitted
            else:
                await asyncio.to_thread(_wait_exit, first, 120)
            killed_at_lag = await probe.lag()
            second.start()
            recovered_in_s = await asyncio.to_thread(second.wait_ready, 60)
            await wait_lag(probe, 0, 150)
    finally:
        first.kill()
        second.stop()
    assert first.exit_code() == -9, "the first worker should die of SIGKILL, not fail"
    assert 0 < killed_at_lag < len(records), "the kill should land mid-stream"
    assert recovered_in_s < 60

    expected, expected_demand = await uninterrupted_run(settings, records)
    versions, got = await published_means(settings)
    assert versions == {version}
    assert got.keys() == expected.keys(), "a forecast was lost (or invented) across the kill"
    worst = worst_difference(got, expected)
    assert worst < 1e-3, f"forecasts after recovery differ by up to {worst}"
    # the changelog's last word on every SKU counts each event once, as the uninterrupted run
    changelog = f"{settings.app_id}-sku_state-changelog"
    last = {r.key.decode(): r.value for r in await read_all(settings, changelog)}
    demand = {key: state.demand for key, raw in last.items()
              if (state := decode_sku_state(raw)) is not None}
    assert demand == expected_demand


def _wait_exit(worker: WorkerProcess, timeout_s: float) -> None:
    """Block until `worker` has died on its crash point."""
    end_s = time.monotonic() + timeout_s
    while worker.alive():
        if time.monotonic() > end_s:
            raise AssertionError(f"{worker.name} did not reach its crash point in {timeout_s} s")
        time.sleep(0.1)
