-- The audit log reads its leaf hashes in leaf order: all of them when a
-- server starts, and a block of 256 for a proof inside an older block.
-- PostgreSQL reads them from the leaf index itself, without a visit to
-- each event's row (1.2 million leaves: read in about 5 s through the rows).
-- SQLite reads the rows as before: its start-up is within its bound.
-- engine's own: begin
SELECT 1; -- a migration must hold a statement
-- engine's own: end
