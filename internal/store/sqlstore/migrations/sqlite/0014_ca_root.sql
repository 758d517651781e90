-- Which CA this database belongs to: the SHA-256 fingerprint of the root
-- of the data directory that `mica init` ran with. A server of another CA
-- refuses to start on it, so two CAs never share one inventory or log.
CREATE TABLE ca_root (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    fingerprint TEXT    NOT NULL,
    recorded_at BIGINT  NOT NULL
);
