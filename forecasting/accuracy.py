"""Forecast accuracy monitoring: bucket scores, rolling segment scores and the drift detector.

Pure numpy and dataclasses, no I/O. The optimizer scores every actual that arrives with the
forecast made for its bucket (`score`), pools the scores of a segment (a location, or the
fleet) per bucket (`BucketTotals`, kept in PostgreSQL), and runs one `DriftMonitor` per
segment and model version over those totals, bucket by bucket; the monitor's state is JSON.

One SKU-bucket, actual y, the forecast's quantiles q at levels tau:
- pinball: the pinball loss averaged over the levels (units of demand);
- covered: 1 when q(0.1) <= y <= q(0.9), the closed central 80% interval (closed, as the
  LSTM's validation coverage is measured: forecasting/lstm/calibration.py), else 0;
- error: q(0.5) - y (units; above 0 the forecast was too high), whose sum is the bias.

A segment's rolling scores over its last buckets are ratios of sums, so that a segment of
many SKUs is judged as a whole: relative pinball = sum pinball / sum actual (a weighted
quantile loss, comparable across segments and over a level shift), coverage = covered /
scored, relative bias = sum error / sum actual.

Drift (`DriftMonitor`): over the last `drift_buckets` buckets (7: a whole week, so the
weekday mix is the same in every window) the coverage must stay in its band and the
relative pinball under its ceiling.
- Coverage band: centred on the model's own validation coverage of the 80% interval when
  its artifact states one (`expected_coverage`: the LSTM's `val_daily_coverage_80_after`),
  else on the mean of the first `baseline_buckets` window values; half-width the largest of
  `coverage_floor`, 3 binomial standard errors of the window and 3 standard deviations of the
  baseline windows.
- Pinball ceiling: no model states its validation loss in units of demand (the LSTM's
  `best_val_loss` is on its scaled targets), so it is learned: the mean of the baseline
  windows plus the larger of `loss_floor` x that mean and 3 of their standard deviations.
Hysteresis: an episode opens when a score is outside by more than a margin (coverage
`coverage_margin`, pinball `loss_margin` x the baseline mean) and closes only once both are
back inside the band itself: one alert per episode, however long it lasts.

Completeness (`complete_through`): a monitor reads a bucket once, so it must read it only
when every score it will get is in; otherwise a catch-up after a backlog reads buckets that
hold the SKUs of one partition and not yet those of another, and the windows (and alerts)
depend on how fast the replay ran. An SKU's bucket closes when its next order arrives, and
a partition of the actuals carries its SKUs' closures in event-time order (orders are
consumed in order per partition and each closure is published when it happens). So once a
partition has carried a closure of bucket b + 1, every closure of b on that partition is in;
bucket b is complete once every partition has. The rule reads only the partitions' own
progress, never the wall clock nor the other partitions' speed: a burst of backlog and a
slow replay of the same topic complete the same buckets with the same scores.
Liveness: a partition is given up on (no longer waited for) once it is more than
`partition_idle_buckets` behind the newest one AND has not moved for `partition_idle_s` of
the optimizer's clock (its SKUs went quiet; one that has carried nothing counts as being at
the first bucket any partition carried, since the first one did). Both, because a backlog
is not consumed evenly (a consumer drains one partition's buffer before the next one's, a
burst can put one partition a whole replay ahead), so lag in buckets alone says nothing;
a partition being caught up moves. One silent partition so delays the monitors once
instead of stopping them. A score that arrives for a bucket the monitor has read (an SKU
silent since its forecast, a partition given up on) stays in the
tables and the dashboard but not in the drift windows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from forecasting._numeric import FloatArray
from forecasting.metrics import pinball
from forecasting.quantiles import quantile_at

__all__ = [
    "INTERVAL_LEVELS",
    "BucketScores",
    "BucketTotals",
    "DriftBand",
    "DriftChange",
    "DriftConfig",
    "DriftMonitor",
    "PartitionProgress",
    "RollingScores",
    "expected_coverage",
    "score",
]

INTERVAL_LEVELS = (0.1, 0.9)  # the central 80% interval whose coverage is watched
_Z = 3.0  # standard errors a score may stray before it leaves its band


@dataclass(frozen=True)
class BucketScores:
    """Scores of n SKU-buckets, one entry each (see the module docstring)."""

    pinball: FloatArray
    covered: FloatArray
    median: FloatArray
    lo: FloatArray
    hi: FloatArray

    def error(self, actual: npt.ArrayLike) -> FloatArray:
        out: FloatArray = self.median - np.asarray(actual, dtype=np.float64)
        return out


def score(actual: npt.ArrayLike, quantiles: npt.ArrayLike,
          levels: npt.ArrayLike) -> BucketScores:
    """Score n actuals (n,) against their forecasts' quantiles (n, Q) at `levels` (Q,)."""
    y = np.asarray(actual, dtype=np.float64)
    q = np.asarray(quantiles, dtype=np.float64)
    tau = np.asarray(levels, dtype=np.float64)
    if q.ndim != 2 or q.shape != (y.size, tau.size):
        raise ValueError(f"quantiles {q.shape} must be (actuals {y.size}, levels {tau.size})")
    if q.shape[0] == 0:
        empty = np.zeros(0)
        return BucketScores(empty, empty, empty, empty, empty)
    loss = np.asarray(pinball(y, q, tau, axis=()), dtype=np.float64)
    lo = quantile_at(q, tau, INTERVAL_LEVELS[0])
    hi = quantile_at(q, tau, INTERVAL_LEVELS[1])
    covered = ((lo <= y) & (y <= hi)).astype(np.float64)
    return BucketScores(loss, covered, quantile_at(q, tau, 0.5), lo, hi)


@dataclass(frozen=True)
class BucketTotals:
    """A segment's scores in one bucket: sums over the SKUs scored in it."""

    scored: int
    pinball: float
    actual: float
    covered: float
    error: float

    def __add__(self, other: BucketTotals) -> BucketTotals:
        return BucketTotals(self.scored + other.scored, self.pinball + other.pinball,
                            self.actual + other.actual, self.covered + other.covered,
                            self.error + other.error)


@dataclass(frozen=True)
class RollingScores:
    """A segment's scores over its last `buckets` buckets (NaN where undefined)."""

    buckets: int
    scored: int
    pinball_relative: float  # sum pinball / sum actual
    coverage: float  # share of actuals inside the 80% interval (nominal 0.8)
    bias_relative: float  # sum (median - actual) / sum actual; > 0 over-forecast
    pinball_mean: float  # pinball per SKU-bucket, units

    @classmethod
    def of(cls, totals: Sequence[BucketTotals]) -> RollingScores:
        total = sum(totals, BucketTotals(0, 0.0, 0.0, 0.0, 0.0))
        return cls(len(totals), total.scored, _ratio(total.pinball, total.actual),
                   _ratio(total.covered, total.scored), _ratio(total.error, total.actual),
                   _ratio(total.pinball, total.scored))


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


@dataclass(frozen=True)
class DriftConfig:
    """Windows (in buckets) and tolerances of the accuracy monitor (module docstring)."""

    report_buckets: int = 28  # the rolling scores kept and exported
    drift_buckets: int = 7  # the window the drift decision reads
    baseline_buckets: int = 28  # window values learned before the band is known (4 weeks)
    coverage_floor: float = 0.08  # least half-width of the coverage band
    coverage_margin: float = 0.05  # beyond the band by more than this: an episode opens
    loss_floor: float = 0.15  # least headroom of the pinball ceiling, x baseline mean
    loss_margin: float = 0.15  # above the ceiling by more than this x baseline mean: opens
    partition_idle_buckets: int = 7  # a partition this far behind and ...
    partition_idle_s: float = 600.0  # ... not moving for this long is no longer waited for

    def __post_init__(self) -> None:
        if not 1 <= self.drift_buckets <= self.report_buckets:
            raise ValueError("need 1 <= drift_buckets <= report_buckets")
        if self.baseline_buckets < 2:
            raise ValueError("baseline_buckets must be >= 2 (a spread needs two values)")
        if self.partition_idle_buckets < 1 or self.partition_idle_s < 0:
            raise ValueError("need partition_idle_buckets >= 1 and partition_idle_s >= 0")


@dataclass(frozen=True)
class DriftBand:
    """Where a segment's window scores are expected: coverage in [low, high], relative pinball
    at most `loss_high` (NaN while it is being learned); `source` says where the coverage
    centre came from ('validation' or 'baseline')."""

    coverage_low: float
    coverage_high: float
    loss_high: float
    loss_baseline: float
    source: Literal["validation", "baseline"]


@dataclass(frozen=True)
class DriftChange:
    """An episode opened or closed at `bucket` (index), with the window's scores then."""

    kind: Literal["opened", "closed"]
    bucket: int
    scores: RollingScores
    band: DriftBand
    reasons: tuple[str, ...]


@dataclass
class DriftMonitor:
    """The drift detector of one segment and model version; `observe` each bucket in order.

    State is plain JSON (`to_json` / `from_json`) so that the store can keep it in a row.
    """

    config: DriftConfig = field(default_factory=DriftConfig)
    expected_coverage: float | None = None  # the model's validation coverage, when known
    history: list[tuple[int, BucketTotals]] = field(default_factory=list)
    baseline: list[tuple[float, float]] = field(default_factory=list)  # (coverage, loss)
    open_since: int | None = None

    # --- state ---------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"expected_coverage": self.expected_coverage,
                "history": [[b, asdict(t)] for b, t in self.history],
                "baseline": [list(v) for v in self.baseline], "open_since": self.open_since}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], config: DriftConfig | None = None
                  ) -> DriftMonitor:
        return cls(config=config or DriftConfig(),
                   expected_coverage=data.get("expected_coverage"),
                   history=[(int(b), BucketTotals(**t)) for b, t in data.get("history", [])],
                   baseline=[(float(c), float(v)) for c, v in data.get("baseline", [])],
                   open_since=data.get("open_since"))

    @property
    def last_bucket(self) -> int | None:
        return self.history[-1][0] if self.history else None

    def rolling(self, buckets: int | None = None) -> RollingScores:
        """Scores over the last `buckets` observed buckets (default: `report_buckets`)."""
        n = self.config.report_buckets if buckets is None else buckets
        return RollingScores.of([t for _, t in self.history[-n:]])

    # --- the decision --------------------------------------------------------------------
    def band(self, window: RollingScores | None = None) -> DriftBand | None:
        """The band now (None while neither a validation coverage nor a baseline is known)."""
        cfg = self.config
        learned = len(self.baseline) >= cfg.baseline_buckets
        if self.expected_coverage is None and not learned:
            return None
        coverages = np.array([c for c, _ in self.baseline[:cfg.baseline_buckets]])
        losses = np.array([v for _, v in self.baseline[:cfg.baseline_buckets]])
        if self.expected_coverage is not None:
            centre, source = self.expected_coverage, "validation"
        else:
            centre, source = float(np.nanmean(coverages)), "baseline"
        half = cfg.coverage_floor
        if learned:
            half = max(half, _Z * _nanstd(coverages))
        if window is not None and window.scored > 0:
            p = min(max(centre, 0.0), 1.0)
            half = max(half, _Z * math.sqrt(p * (1.0 - p) / window.scored))
        loss_high = loss_base = math.nan
        if learned:
            loss_base = float(np.nanmean(losses)) if np.isfinite(losses).any() else math.nan
            loss_high = loss_base + max(cfg.loss_floor * loss_base, _Z * _nanstd(losses))
        return DriftBand(centre - half, centre + half, loss_high, loss_base,
                         "validation" if source == "validation" else "baseline")

    def observe(self, bucket: int, totals: BucketTotals) -> DriftChange | None:
        """Take the segment's totals of `bucket` (later than any before); return the episode
        that opened or closed with it, if one did."""
        cfg = self.config
        if self.history and bucket <= self.history[-1][0]:
            raise ValueError(f"bucket {bucket} is not after {self.history[-1][0]}")
        self.history.append((bucket, totals))
        del self.history[:-cfg.report_buckets]
        if len(self.history) < cfg.drift_buckets:
            return None
        window = self.rolling(cfg.drift_buckets)
        if len(self.baseline) < cfg.baseline_buckets:
            self.baseline.append((window.coverage, window.pinball_relative))
        band = self.band(window)
        if band is None:
            return None
        outside = _outside(window, band, cfg)
        if self.open_since is None:
            if outside:
                self.open_since = bucket
                return DriftChange("opened", bucket, window, band, tuple(outside))
        elif not _outside(window, band, cfg, margin=False):
            self.open_since = None
            return DriftChange("closed", bucket, window, band, ())
        return None


@dataclass
class PartitionProgress:
    """How far each partition of the actuals has carried bucket closures (module docstring,
    Completeness): per partition the newest bucket it carried and when (seconds of the
    optimizer's clock) it last moved; the oldest bucket any partition carried and when the
    first one did. `carry` each closure in its partition's order."""

    heads: dict[int, int] = field(default_factory=dict)
    moved_at_s: dict[int, float] = field(default_factory=dict)
    first_bucket: int | None = None
    started_at_s: float | None = None

    def carry(self, partition: int, bucket: int, at_s: float) -> bool:
        """Note a closure of `bucket` on `partition` at `at_s`; True when it is on time: its
        partition had not yet carried a later bucket (a score that is not on time stays
        out of the drift windows, whatever the other partitions' progress)."""
        head = self.heads.get(partition)
        if head is None or bucket > head:
            self.heads[partition] = bucket
            self.moved_at_s[partition] = at_s
        if self.first_bucket is None or bucket < self.first_bucket:
            self.first_bucket = bucket
        if self.started_at_s is None:
            self.started_at_s = at_s
        return head is None or bucket >= head

    def complete_through(self, partitions: int, now_s: float, idle_buckets: int,
                         idle_s: float) -> int | None:
        """The newest bucket (index) every score of which is in, or None while there is
        none: bucket b is complete once every partition 0 .. `partitions` - 1 waited for has
        carried a closure of b + 1 (module docstring: Completeness, Liveness)."""
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1, not {partitions}")
        if not self.heads or self.first_bucket is None or self.started_at_s is None:
            return None
        newest = max(self.heads.values())
        waited = []
        for p in sorted(set(range(partitions)) | set(self.heads)):
            head = self.heads.get(p, self.first_bucket)
            moved_at_s = self.moved_at_s.get(p, self.started_at_s)
            if newest - head <= idle_buckets or now_s - moved_at_s <= idle_s:
                waited.append(head)
        return min(waited) - 1


def _outside(window: RollingScores, band: DriftBand, cfg: DriftConfig, *,
             margin: bool = True) -> list[str]:
    """Why `window` is out of `band` (by more than the margins when `margin`)."""
    reasons: list[str] = []
    c_margin = cfg.coverage_margin if margin else 0.0
    cov = window.coverage
    if math.isfinite(cov):
        if cov < band.coverage_low - c_margin:
            reasons.append(f"coverage {cov:.3f} below {band.coverage_low:.3f}")
        elif cov > band.coverage_high + c_margin:
            reasons.append(f"coverage {cov:.3f} above {band.coverage_high:.3f}")
    loss = window.pinball_relative
    if math.isfinite(band.loss_high):
        limit = band.loss_high + (cfg.loss_margin * band.loss_baseline if margin else 0.0)
        # no demand at all in a window where there was some: the relative loss is undefined
        # and the forecast certainly wrong
        if (not math.isfinite(loss) and window.scored > 0) or loss > limit:
            reasons.append(f"relative pinball {loss:.3f} above {band.loss_high:.3f}")
    return reasons


def _nanstd(values: FloatArray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.std(ddof=1)) if finite.size >= 2 else 0.0


def expected_coverage(metadata: Mapping[str, Any]) -> float | None:
    """The validation coverage of the 80% interval a model artifact's metadata states (the
    LSTM's calibrated `val_daily_coverage_80_after`, else before calibration), or None."""
    metrics = metadata.get("metrics") or {}
    for name in ("val_daily_coverage_80_after", "val_daily_coverage_80_before"):
        value = metrics.get(name) if isinstance(metrics, Mapping) else None
        if isinstance(value, int | float) and 0.0 < float(value) < 1.0:
            return float(value)
    return None
