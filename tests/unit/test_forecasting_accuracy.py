"""The accuracy monitor's math: bucket scores, rolling segment scores, the drift detector.

The replays run the served baseline (moving average, the workers' default) over a simulated
fleet, one bucket at a time as the optimizer would see it: a stable replay must raise no
episode, an injected level shift must open one within the stated number of buckets, once.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from forecasting import make_forecaster
from forecasting.accuracy import (
    BucketTotals,
    DriftConfig,
    DriftMonitor,
    PartitionProgress,
    RollingScores,
    expected_coverage,
    score,
)
from forecasting.metrics import pinball

LEVELS = [0.1, 0.5, 0.9]

# a level shift of x2 or x0.3 on a Poisson fleet is seen within this many buckets
DETECTION_BUCKETS = 3


def test_score_reads_pinball_interval_and_median_error():
    q = np.array([[2.0, 5.0, 8.0], [2.0, 5.0, 8.0], [2.0, 5.0, 8.0]])
    s = score([5.0, 8.0, 12.0], q, LEVELS)
    assert s.covered.tolist() == [1.0, 1.0, 0.0]  # the interval's ends are inside
    assert s.error([5.0, 8.0, 12.0]).tolist() == [0.0, -3.0, -7.0]
    # 12 above every quantile: tau * (y - q) per level, averaged
    assert s.pinball[2] == pytest.approx((0.1 * 10 + 0.5 * 7 + 0.9 * 4) / 3)
    assert s.pinball.tolist() == pytest.approx(
        np.asarray(pinball([5.0, 8.0, 12.0], q, LEVELS, axis=())).tolist())


def test_score_interpolates_the_interval_between_levels():
    levels = [0.05, 0.25, 0.5, 0.75, 0.95]  # no 0.1 / 0.9 level: read between 0.05 and 0.25
    s = score([1.0], [[0.0, 4.0, 5.0, 6.0, 10.0]], levels)
    assert s.lo[0] == pytest.approx(1.0) and s.hi[0] == pytest.approx(9.0)
    assert s.covered[0] == 1.0


def test_score_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="quantiles"):
        score([1.0, 2.0], [[1.0, 2.0, 3.0]], LEVELS)


def test_rolling_scores_are_ratios_of_sums():
    totals = [BucketTotals(2, 3.0, 10.0, 2.0, -1.0), BucketTotals(2, 1.0, 30.0, 0.0, 5.0)]
    r = RollingScores.of(totals)
    assert (r.buckets, r.scored) == (2, 4)
    assert r.pinball_relative == pytest.approx(4.0 / 40.0)
    assert r.coverage == pytest.approx(0.5)
    assert r.bias_relative == pytest.approx(4.0 / 40.0)
    assert r.pinball_mean == pytest.approx(1.0)
    assert math.isnan(RollingScores.of([BucketTotals(1, 0.0, 0.0, 1.0, 0.0)]).pinball_relative)


def test_expected_coverage_reads_the_lstm_validation_figure():
    meta = {"metrics": {"val_daily_coverage_80_before": 0.85,
                        "val_daily_coverage_80_after": 0.80}}
    assert expected_coverage(meta) == 0.80
    assert expected_coverage({"metrics": {"val_daily_coverage_80_before": 0.85}}) == 0.85
    assert expected_coverage({"metrics": {"best_val_loss": 15.5}}) is None
    assert expected_coverage({}) is None


def test_monitor_state_round_trips_through_json():
    monitor = DriftMonitor(expected_coverage=0.8)
    for b in range(40):
        monitor.observe(b, BucketTotals(10, 5.0, 50.0, 8.0, 1.0))
    again = DriftMonitor.from_json(monitor.to_json())
    assert again == monitor
    assert again.observe(40, BucketTotals(10, 5.0, 50.0, 8.0, 1.0)) is None


def test_monitor_refuses_buckets_out_of_order():
    monitor = DriftMonitor()
    monitor.observe(5, BucketTotals(1, 1.0, 1.0, 1.0, 0.0))
    with pytest.raises(ValueError, match="not after"):
        monitor.observe(5, BucketTotals(1, 1.0, 1.0, 1.0, 0.0))


def test_hysteresis_one_episode_until_back_inside_the_band():
    """Coverage wanders just below the open threshold and back: no second alert while it
    stays outside the band; it closes only inside it, and opens again only past the margin."""
    cfg = DriftConfig(drift_buckets=1, report_buckets=4, baseline_buckets=2)
    monitor = DriftMonitor(cfg, expected_coverage=0.8)
    n = 10_000  # binomial error negligible: the band is 0.8 +- the floor (0.08)

    def at(b: int, coverage: float) -> str | None:
        change = monitor.observe(b, BucketTotals(n, 0.1 * n, n, coverage * n, 0.0))
        return change.kind if change else None

    assert [at(b, 0.8) for b in range(3)] == [None, None, None]
    assert at(3, 0.70) is None  # outside the band, inside the margin
    assert at(4, 0.66) == "opened"  # below 0.72 - 0.05
    assert [at(5, 0.71), at(6, 0.60), at(7, 0.70)] == [None, None, None]  # same episode
    assert at(8, 0.75) == "closed"  # back inside [0.72, 0.88]
    assert at(9, 0.70) is None
    assert at(10, 0.95) == "opened"  # above 0.88 + 0.05: a new episode


def _fleet(seed: int, skus: int = 40, days: int = 200) -> np.ndarray:
    rng = np.random.default_rng(seed)
    level = rng.gamma(2.0, 3.0, size=(skus, 1))  # 0.5-20 units a day
    weekly = 1.0 + 0.3 * np.sin(2 * np.pi * np.arange(days) / 7)
    return rng.poisson(level * weekly).astype(float)


def _replay(demand: np.ndarray, *, warm: int = 28, window: int = 56,
            expected: float | None = None) -> list[tuple[str, int]]:
    """Forecast each bucket from the closed ones before it (as the worker does), score it
    and hand the fleet's totals to the monitor; the episodes (kind, bucket) in order."""
    forecaster = make_forecaster("moving_average")
    monitor = DriftMonitor(expected_coverage=expected)
    skus, days = demand.shape
    episodes = []
    for t in range(warm, days):
        past = demand[:, max(0, t - window):t]
        past = np.hstack([np.full((skus, window - past.shape[1]), np.nan), past])
        fc = forecaster.predict(past, 1)
        s = score(demand[:, t], fc.daily[:, 0, :], fc.levels)
        change = monitor.observe(t, BucketTotals(
            skus, float(s.pinball.sum()), float(demand[:, t].sum()),
            float(s.covered.sum()), float(s.error(demand[:, t]).sum())))
        if change is not None:
            episodes.append((change.kind, t))
    return episodes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_stable_replay_raises_no_drift(seed):
    assert _replay(_fleet(seed)) == []


@pytest.mark.parametrize("factor", [2.0, 0.3])
def test_a_level_shift_opens_one_episode_within_the_stated_buckets(factor):
    demand = _fleet(0)
    shift_at = 140
    rng = np.random.default_rng(11)
    demand[:, shift_at:] = rng.poisson(demand[:, shift_at:] * factor)
    episodes = _replay(demand)
    opened = [t for kind, t in episodes if kind == "opened"]
    assert len(opened) == 1, episodes
    assert shift_at <= opened[0] < shift_at + DETECTION_BUCKETS


def test_a_validation_band_watches_from_the_first_full_window():
    """With the model's validation coverage the band needs no baseline: a shift right after
    the first week is caught (a learned band would still be learning)."""
    demand = _fleet(3, days=80)
    demand[:, 40:] *= 3
    episodes = _replay(demand, expected=0.8)
    assert episodes and episodes[0][0] == "opened" and 40 <= episodes[0][1] < 43
    assert _replay(demand) == []  # the learned band is not known yet at bucket 40


# --- completeness: a monitor reads a bucket once every score of it is in --------------------

GOOD = BucketTotals(10, 5.0, 50.0, 10.0, 0.0)  # partition 0's SKUs in a bucket: all covered
POOR = BucketTotals(10, 15.0, 50.0, 6.0, 0.0)  # partition 1's: 6 in 10 covered (fleet: 0.8)
Closure = tuple[int, int, BucketTotals]  # (partition, bucket, the scores it brought)


def _partition_streams(buckets: int) -> list[list[Closure]]:
    """Each partition's closures in its own order: one per bucket."""
    return [[(0, b, GOOD) for b in range(buckets)], [(1, b, POOR) for b in range(buckets)]]


def _drive(batches: list[list[Closure]], *, cfg: DriftConfig, naive: bool = False,
           seconds_per_batch: float = 1.0) -> tuple[dict[int, BucketTotals], list[str]]:
    """What optimizer/actuals.py does with each consumed batch: carry its closures (on-time
    scores pooled per bucket), then feed the monitor the buckets that became complete. The
    buckets it read with their totals, and its episodes. `naive`: the rule before the fix,
    every bucket but the newest scored one is complete."""
    progress, pooled, read, episodes = PartitionProgress(), {}, {}, []
    monitor = DriftMonitor(cfg, expected_coverage=0.8)
    for i, batch in enumerate(batches):
        now_s = i * seconds_per_batch
        for partition, bucket, totals in batch:
            if progress.carry(partition, bucket, now_s):
                pooled[bucket] = pooled.get(bucket, BucketTotals(0, 0.0, 0.0, 0.0, 0.0)) + totals
        if naive:
            through = max(pooled) - 1
        else:
            through = progress.complete_through(2, now_s, cfg.partition_idle_buckets,
                                                cfg.partition_idle_s)
        last = monitor.last_bucket
        for bucket in sorted(b for b in pooled if through is not None and b <= through
                             and (last is None or b > last)):
            read[bucket] = pooled[bucket]
            change = monitor.observe(bucket, pooled[bucket])
            if change is not None:
                episodes.append(f"{change.kind} {bucket}")
    return read, episodes


def _interleave(streams: list[list[Closure]], seed: int) -> list[list[Closure]]:
    """The closures in batches of random size, the partitions interleaved at random in runs
    of random length (each one's order kept), as a consumer may hand out a backlog."""
    rng = np.random.default_rng(seed)
    queues = [list(s) for s in streams]
    merged: list[Closure] = []
    while any(queues):
        live = [q for q in queues if q]
        q = live[int(rng.integers(len(live)))]
        n = int(rng.integers(1, 15))
        merged.extend(q[:n])
        del q[:n]
    batches, i = [], 0
    while i < len(merged):
        n = int(rng.integers(1, 25))
        batches.append(merged[i:i + n])
        i += n
    return batches


def test_a_burst_of_backlog_reads_the_same_buckets_as_a_slow_replay():
    """Two partitions, one of well-covered SKUs, one of poorly covered: the fleet sits at
    the validation coverage (0.8). Slowly, bucket by bucket, or in a burst where a whole
    partition comes before the other, or interleaved at random: the monitor reads every
    bucket once with all its scores, and nothing opens. The rule before the fix read the
    burst's buckets with one partition only (coverage 1.0) and opened a false episode."""
    cfg = DriftConfig()
    streams = _partition_streams(60)
    full = {b: GOOD + POOR for b in range(59)}  # the newest bucket is never known complete
    slow = [[s[b] for s in streams] for b in range(60)]
    burst = [streams[0][i:i + 10] for i in range(0, 60, 10)] + [
        streams[1][i:i + 10] for i in range(0, 60, 10)]
    for batches in [slow, burst] + [_interleave(streams, seed) for seed in range(5)]:
        assert _drive(batches, cfg=cfg) == (full, [])
    read, episodes = _drive(burst, cfg=cfg, naive=True)
    assert read[30] == GOOD and episodes == ["opened 6"]


def test_a_score_after_its_partition_moved_on_is_not_on_time():
    """A score for a bucket its partition has passed (an SKU silent since its forecast)
    stays out of the monitor whatever the other partitions did: on time depends on the
    partition's own order only."""
    progress = PartitionProgress()
    assert progress.carry(0, 5, 0.0) and progress.carry(0, 6, 0.0)
    assert progress.carry(0, 6, 0.0)  # another SKU of the same bucket
    assert not progress.carry(0, 5, 0.0)
    assert progress.carry(1, 2, 0.0)  # another partition, far behind: its own clock
    assert progress.complete_through(2, 0.0, 7, 600.0) == 1
    assert progress.heads == {0: 6, 1: 2}


def test_a_partition_that_has_carried_nothing_is_waited_for():
    progress = PartitionProgress()
    for b in range(40):
        progress.carry(0, b, 1.0)
    # partition 1 counts as being at the first bucket: nothing is complete
    assert progress.complete_through(2, 2.0, 7, 600.0) == -1
    assert progress.complete_through(1, 2.0, 7, 600.0) == 38


def test_a_silent_partition_is_given_up_once_far_behind_and_standing_still():
    """Liveness: a partition whose SKUs went quiet is waited for while it is close to the
    newest or moved recently, and given up once it is both far behind and still."""
    progress = PartitionProgress()
    for b in range(5):
        progress.carry(0, b, b * 100.0)
        progress.carry(1, b, b * 100.0)  # partition 1 moves last at 400 s, to bucket 4
    for b in range(5, 30):
        progress.carry(0, b, b * 100.0)
        now_s = b * 100.0
        through = progress.complete_through(2, now_s, 7, 600.0)
        if b - 4 <= 7 or now_s - 400.0 <= 600.0:
            assert through == 3, b
        else:
            assert through == b - 1, b
    # as far behind, but it moved within the timeout (a backlog being caught up): waited for
    assert progress.complete_through(2, 400.0 + 600.0, 7, 600.0) == 3


def test_drift_config_refuses_a_partition_timeout_below_one_bucket():
    with pytest.raises(ValueError, match="partition_idle"):
        DriftConfig(partition_idle_buckets=0)
