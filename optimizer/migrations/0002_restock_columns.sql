-- 0002_restock_columns: every RestockEvent field becomes a typed column and the jsonb copy of
-- the event goes. The row alone now is the event (RestockEvent can be rebuilt from it), and a
-- batch write no longer builds, logs and stores a second copy of each event (the payload was
-- most of the write's cost: bench figures in benchmarks/README.md).

ALTER TABLE restock_events
    ADD COLUMN schema_version  smallint,
    ADD COLUMN on_hand         integer,
    ADD COLUMN on_order        integer,
    ADD COLUMN backorders      integer,
    ADD COLUMN review_days     integer,
    ADD COLUMN unit_cost       double precision,
    ADD COLUMN reason          text;

UPDATE restock_events SET
    schema_version = (payload ->> 'schema_version')::smallint,
    on_hand        = (payload ->> 'on_hand')::integer,
    on_order       = (payload ->> 'on_order')::integer,
    backorders     = (payload ->> 'backorders')::integer,
    review_days    = (payload ->> 'review_days')::integer,
    unit_cost      = (payload ->> 'unit_cost')::double precision,
    reason         = payload ->> 'reason';

ALTER TABLE restock_events
    ALTER COLUMN schema_version SET NOT NULL,
    ALTER COLUMN on_hand        SET NOT NULL,
    ALTER COLUMN on_order       SET NOT NULL,
    ALTER COLUMN backorders     SET NOT NULL,
    ALTER COLUMN review_days    SET NOT NULL,
    ALTER COLUMN unit_cost      SET NOT NULL,
    ALTER COLUMN reason         SET NOT NULL,
    DROP COLUMN payload;
