-- 0007_drift_completeness: a drift monitor reads a bucket only once all its scores are in
-- (forecasting/accuracy.py, Completeness), whatever the pace of the replay.
--   * demand_partition_heads: per partition of the actuals topic (and bucket length) the
--     newest bucket whose closure it carried (and when, by the optimizer's clock, it last
--     moved), the oldest, and when it carried its first; a bucket is complete once every
--     partition has carried a closure of a later one (or is given up on: far behind and
--     not moving);
--   * forecast_scores.on_time: false for a score that arrived after its partition had carried
--     a later bucket (an SKU silent since its forecast): kept, shown, not in a drift window;
--   * drift_buckets: the on-time scores pooled per segment, version and bucket, what the
--     drift monitors read (accuracy_buckets keeps every score, for the dashboard). Existing
--     totals are copied: the monitors read them as they did before.

CREATE TABLE demand_partition_heads (
    topic           text NOT NULL,
    partition       integer NOT NULL CHECK (partition >= 0),
    bucket_seconds  integer NOT NULL CHECK (bucket_seconds > 0),
    first_bucket    timestamptz NOT NULL,
    head_bucket     timestamptz NOT NULL,
    moved_at        timestamptz NOT NULL,
    seen_at         timestamptz NOT NULL,
    PRIMARY KEY (topic, bucket_seconds, partition)
);

ALTER TABLE forecast_scores ADD COLUMN on_time boolean NOT NULL DEFAULT true;

CREATE TABLE drift_buckets (LIKE accuracy_buckets INCLUDING ALL);
INSERT INTO drift_buckets SELECT * FROM accuracy_buckets;
