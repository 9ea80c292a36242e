-- 0008_planned_promotions: what the shop has planned (the `shop.promotions` topic,
-- schemas.events.PromotionEvent), recorded by the optimizer beside demand_history so that
-- retraining from PostgreSQL trains on the same known-in-advance covariates the stream
-- serves (optimizer/promotions.py). One row per (sku, location, event_id): a higher version
-- replaces it, a cancelled one stays as a withdrawn row that remembers its version.

CREATE TABLE planned_promotions (
    sku          text NOT NULL,
    location     text NOT NULL,
    event_id     text NOT NULL,
    version      integer NOT NULL CHECK (version >= 1),
    start_day    date NOT NULL,
    end_day      date NOT NULL CHECK (end_day >= start_day),
    promo        boolean NOT NULL,
    price_ratio  float8 NOT NULL CHECK (price_ratio > 0),
    cancelled    boolean NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sku, location, event_id)
);

CREATE INDEX planned_promotions_days ON planned_promotions (end_day, start_day);
