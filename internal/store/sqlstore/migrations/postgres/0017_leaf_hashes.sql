-- The audit log reads its leaf hashes in leaf order: all of them when a
-- server starts, and a block of 256 for a proof inside an older block.
-- PostgreSQL reads them from the leaf index itself, without a visit to
-- each event's row (1.2 million leaves: read in about 5 s through the rows).
-- SQLite reads the rows as before: its start-up is within its bound.
-- engine's own: begin
CREATE UNIQUE INDEX events_leaf_index_hash ON events (leaf_index) INCLUDE (leaf_hash);
DROP INDEX events_leaf_index;
ALTER INDEX events_leaf_index_hash RENAME TO events_leaf_index;
-- engine's own: end
