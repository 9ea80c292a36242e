-- 0005_demand_history: the actuals (shelfcast.demand) and how the forecasts did on them.
--   * demand_history: every closed bucket's observed demand per SKU, one row per bucket
--     (a redelivery or a republished bucket updates the quantity, never adds a row); the
--     training panel of `shelfcast retrain` and the dashboard's history;
--   * forecast_scores: each forecast scored on its bucket's actual (forecasting/accuracy.py):
--     pinball loss over its levels, whether the 80% interval held the actual, its median;
--     written once per bucket (the first forecast for it wins, as demand_history's row);
--   * sku_accuracy: rolling scores per SKU and model version over its last 28 scored buckets;
--   * accuracy_buckets: the scores pooled per segment (a location, '*' = the fleet), model
--     version and bucket, added to as scores arrive (only scores inserted now are added);
--   * drift_monitors: each segment's drift detector (its JSON state), the last bucket it
--     read and its rolling scores; a batch locks the rows it updates;
--   * drift_episodes: one row per model_drift episode with its alert (outbox: published_at
--     is NULL until the alert is on shelfcast.alerts).

CREATE TABLE demand_history (
    sku             text NOT NULL,
    location        text NOT NULL,
    bucket_start    timestamptz NOT NULL,
    bucket_seconds  integer NOT NULL CHECK (bucket_seconds > 0),
    quantity        double precision NOT NULL CHECK (quantity >= 0),
    model_version   text NULL,  -- the model whose forecast for the bucket was scored
    recorded_at     timestamptz DEFAULT now(),
    PRIMARY KEY (sku, location, bucket_seconds, bucket_start)
);
CREATE INDEX demand_history_bucket ON demand_history (bucket_seconds, bucket_start);

CREATE TABLE forecast_scores (
    sku             text NOT NULL,
    location        text NOT NULL,
    bucket_start    timestamptz NOT NULL,
    bucket_seconds  integer NOT NULL,
    model_version   text NOT NULL,
    actual          double precision NOT NULL,  -- as first published (demand_history: last)
    median          double precision NOT NULL,
    low_80          double precision NOT NULL,
    high_80         double precision NOT NULL,
    pinball         double precision NOT NULL,
    covered         smallint NOT NULL CHECK (covered IN (0, 1)),
    scored_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sku, location, bucket_seconds, bucket_start)
);
CREATE INDEX forecast_scores_version ON forecast_scores (model_version, bucket_seconds,
                                                         bucket_start);

CREATE VIEW sku_accuracy AS
SELECT sku, location, bucket_seconds, model_version,
       count(*) AS scored_buckets,
       min(bucket_start) AS first_bucket,
       max(bucket_start) AS last_bucket,
       avg(pinball) AS pinball,
       sum(pinball) / NULLIF(sum(actual), 0) AS pinball_relative,
       avg(covered) AS coverage_80,
       avg(median - actual) AS bias,
       sum(median - actual) / NULLIF(sum(actual), 0) AS bias_relative
FROM (SELECT *, row_number() OVER (PARTITION BY sku, location, bucket_seconds, model_version
                                   ORDER BY bucket_start DESC) AS recent
      FROM forecast_scores) s
WHERE recent <= 28
GROUP BY sku, location, bucket_seconds, model_version;

CREATE TABLE accuracy_buckets (
    segment         text NOT NULL,
    model_version   text NOT NULL,
    bucket_seconds  integer NOT NULL,
    bucket_start    timestamptz NOT NULL,
    scored          integer NOT NULL,
    pinball         double precision NOT NULL,
    actual          double precision NOT NULL,
    covered         double precision NOT NULL,
    error           double precision NOT NULL,
    PRIMARY KEY (segment, model_version, bucket_seconds, bucket_start)
);

CREATE TABLE drift_monitors (
    segment            text NOT NULL,
    model_version      text NOT NULL,
    bucket_seconds     integer NOT NULL,
    evaluated_through  timestamptz NULL,
    state              jsonb NOT NULL DEFAULT '{}',
    open_since         timestamptz NULL,
    scored             integer NOT NULL DEFAULT 0,
    pinball_relative   double precision NULL,
    coverage_80        double precision NULL,
    bias_relative      double precision NULL,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (segment, model_version, bucket_seconds)
);

CREATE TABLE drift_episodes (
    alert_id        text PRIMARY KEY,
    segment         text NOT NULL,
    model_version   text NOT NULL,
    bucket_seconds  integer NOT NULL,
    opened_bucket   timestamptz NOT NULL,
    closed_bucket   timestamptz NULL,
    alert           jsonb NOT NULL,
    published_at    timestamptz NULL
);
CREATE INDEX drift_episodes_unpublished ON drift_episodes (opened_bucket)
    WHERE published_at IS NULL;
