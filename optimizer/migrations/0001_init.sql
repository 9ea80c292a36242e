-- 0001_init: restock history, purchase plans and their lines, and the consumer's offsets.
-- Applied by optimizer.store.migrate() inside one transaction under an advisory lock.

CREATE TABLE restock_events (
    restock_id          text PRIMARY KEY,
    sku                 text NOT NULL,
    location            text NOT NULL,
    supplier            text NOT NULL,
    quantity            integer NOT NULL CHECK (quantity > 0),
    reorder_point       double precision NOT NULL,
    order_up_to         double precision NOT NULL,
    inventory_position  double precision NOT NULL,
    service_level       double precision NOT NULL,
    lead_time_days      integer NOT NULL,
    model_version       text NOT NULL,
    bucket              timestamptz NOT NULL,
    issued_at           timestamptz NOT NULL,
    received_at         timestamptz NOT NULL DEFAULT now(),
    payload             jsonb NOT NULL
);
CREATE INDEX restock_events_sku_location_issued ON restock_events (sku, location, issued_at);

CREATE TABLE purchase_plans (
    plan_id      text PRIMARY KEY,
    supplier     text NOT NULL,
    location     text NOT NULL,
    total_units  bigint NOT NULL CHECK (total_units > 0),
    total_cost   numeric(18, 4) NOT NULL CHECK (total_cost >= 0),
    decided_at   timestamptz NOT NULL,
    status       text NOT NULL DEFAULT 'decided',
    -- Outbox: NULL until the plan is on the plans topic; a restart publishes what is left.
    published_at timestamptz
);
CREATE INDEX purchase_plans_supplier_location ON purchase_plans (supplier, location, decided_at);
CREATE INDEX purchase_plans_unpublished ON purchase_plans (decided_at) WHERE published_at IS NULL;

CREATE TABLE plan_lines (
    -- Deferred: lines are inserted first (ON CONFLICT tells which are new), then their plan.
    plan_id     text NOT NULL REFERENCES purchase_plans (plan_id) DEFERRABLE INITIALLY DEFERRED,
    restock_id  text NOT NULL UNIQUE REFERENCES restock_events (restock_id),
    sku         text NOT NULL,
    quantity    integer NOT NULL CHECK (quantity > 0),
    unit_cost   numeric(18, 4) NOT NULL CHECK (unit_cost >= 0)
);
CREATE INDEX plan_lines_plan_id ON plan_lines (plan_id);

CREATE TABLE consumer_offsets (
    group_id     text NOT NULL,
    topic        text NOT NULL,
    partition    integer NOT NULL,
    next_offset  bigint NOT NULL CHECK (next_offset >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);
