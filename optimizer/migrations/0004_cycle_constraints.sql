-- 0004_cycle_constraints: what the optimizer needs to keep supplier budgets, warehouse capacity
-- and supplier minimum order values per cycle (optimizer/constraints.py), and what it did.
--   * restock_events gets the four optional RestockEvent fields (NULL in older events);
--   * cycle_usage: money spent per (cycle, supplier) and units bought per (cycle, location) so
--     far. A constrained batch locks its rows (SELECT ... FOR UPDATE), reads them, allocates,
--     writes its lines and adds what they use in ONE transaction, so a later batch of the same
--     cycle (or another optimizer instance) sees the spend, and a redelivery adds nothing;
--   * allocation_cuts: every restock the allocation cut (partly or to 0): requested vs allocated
--     units and the constraint that bound. A restock cut to 0 has no plan line; its row here
--     (with the restock event itself) records that it was decided.

ALTER TABLE restock_events
    ADD COLUMN case_pack         integer,
    ADD COLUMN moq               integer,
    ADD COLUMN demand_levels     double precision[],
    ADD COLUMN demand_quantiles  double precision[];

CREATE TABLE cycle_usage (
    cycle  date NOT NULL,
    kind   text NOT NULL CHECK (kind IN ('supplier_spend', 'location_units')),
    key    text NOT NULL,
    used   numeric(18, 4) NOT NULL DEFAULT 0 CHECK (used >= 0),
    PRIMARY KEY (cycle, kind, key)
);

CREATE TABLE allocation_cuts (
    restock_id  text PRIMARY KEY,
    sku         text NOT NULL,
    supplier    text NOT NULL,
    location    text NOT NULL,
    cycle       date NOT NULL,
    requested   integer NOT NULL CHECK (requested > 0),
    allocated   integer NOT NULL CHECK (allocated >= 0 AND allocated < requested),
    reason      text NOT NULL,
    decided_at  timestamptz NOT NULL
);
CREATE INDEX allocation_cuts_cycle_supplier ON allocation_cuts (cycle, supplier);
