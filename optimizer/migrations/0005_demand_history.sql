-- 0005_demand_history: the observed demand of every closed bucket per SKU and location,
-- written idempotently (one row per SKU, location, bucket length and bucket start), with the
-- model version that was serving when the bucket closed.

CREATE TABLE demand_history (
    sku             text NOT NULL,
    location        text NOT NULL,
    bucket_start    timestamptz NOT NULL,
    bucket_seconds  integer NOT NULL,
    quantity        double precision NOT NULL,
    model_version   text NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sku, location, bucket_seconds, bucket_start)
);
