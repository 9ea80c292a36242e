-- 0003_lean_writes: plan_lines loses its two foreign keys, restock_events an
-- index no query used.
-- Each was a per-row trigger that locks the referenced row (SELECT ... FOR KEY SHARE, a WAL
-- record and a dirtied page per plan line): together 40-50% of a batch write's time. The
-- store keeps both invariants set-based instead (optimizer/store.py, write_batch):
--   * a plan line's restock exists: its restock is in the same batch (inserted or already
--     there) or is checked by one indexed lookup before anything is written; restock events
--     are never deleted (the run-time role has no DELETE);
--   * a plan line's plan exists: lines and the plans that own them are inserted by the same
--     transaction (whole plans in the same statement as their lines).
-- tests/integration/test_optimizer_store.py checks both after every kind of write.

ALTER TABLE plan_lines
    DROP CONSTRAINT plan_lines_plan_id_fkey,
    DROP CONSTRAINT plan_lines_restock_id_fkey;

-- No query reads restock events by (sku, location, issued_at): the index cost a fifth of the
-- server's CPU per batch write. Add it back (CREATE INDEX CONCURRENTLY) with its first reader.
DROP INDEX restock_events_sku_location_issued;
