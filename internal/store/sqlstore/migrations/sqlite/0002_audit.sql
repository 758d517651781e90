-- The audit log: every event is a leaf of an RFC 6962 Merkle tree. The
-- leaf index is contiguous from 0 (seq may have gaps) and is assigned in
-- the transaction that records the event; leaf_hash is SHA-256(0x00 ‖ the
-- event's canonical encoding, package auditlog/leaf). Events older than
-- this migration get theirs when the store opens.
ALTER TABLE events ADD COLUMN leaf_index BIGINT;
ALTER TABLE events ADD COLUMN leaf_hash BLOB;
CREATE UNIQUE INDEX events_leaf_index ON events (leaf_index);

-- Signed checkpoints (C2SP signed notes) over the tree, one per size.
CREATE TABLE checkpoints (
    size BIGINT PRIMARY KEY,
    root BLOB   NOT NULL,
    note BLOB   NOT NULL,
    at   BIGINT NOT NULL -- unix microseconds, UTC
);
