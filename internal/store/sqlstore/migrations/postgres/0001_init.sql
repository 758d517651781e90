-- Lifecycle events, the audit record. seq is assigned by the database,
-- strictly increasing and never reused.
CREATE TABLE events (
    seq         BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          BIGINT  NOT NULL, -- unix microseconds, UTC
    actor       TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    serial      TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    identity    TEXT    NOT NULL,
    profile     TEXT    NOT NULL,
    outcome     TEXT    NOT NULL,
    detail      TEXT    NOT NULL
);
CREATE INDEX events_action_seq ON events (action, seq);
-- No index on identity: it would be written at a random page for every
-- event, on the issuance hot path; searches by identity are rare and scan.

-- The certificate inventory.
CREATE TABLE certificates (
    serial            TEXT    PRIMARY KEY,
    fingerprint       TEXT    NOT NULL UNIQUE,
    identity          TEXT    NOT NULL,
    sans              TEXT    NOT NULL, -- JSON array of strings
    profile           TEXT    NOT NULL,
    requester         TEXT    NOT NULL,
    source_addr       TEXT    NOT NULL,
    not_before        BIGINT  NOT NULL, -- unix microseconds, UTC
    not_after         BIGINT  NOT NULL, -- unix microseconds, UTC
    issuer            TEXT    NOT NULL,
    status            TEXT    NOT NULL CHECK (status IN ('active', 'revoked')),
    revoked_at        BIGINT,           -- unix microseconds, UTC; NULL unless revoked
    revocation_reason INTEGER NOT NULL,
    renewed_from      TEXT    NOT NULL,
    der               BYTEA   NOT NULL,
    event_seq         BIGINT  NOT NULL REFERENCES events (seq)
);
-- Each list query filters on one of these and orders by not_after, serial.
CREATE INDEX certificates_identity ON certificates (identity, not_after);
CREATE INDEX certificates_profile ON certificates (profile, not_after);
CREATE INDEX certificates_status ON certificates (status, not_after);
CREATE INDEX certificates_not_after ON certificates (not_after, serial);

-- Consumed one-time enrollment tokens; the primary key is the replay guard.
CREATE TABLE used_tokens (
    jti        TEXT   PRIMARY KEY,
    expires_at BIGINT NOT NULL, -- unix microseconds, UTC; purgeable after this
    used_at    BIGINT NOT NULL
);
CREATE INDEX used_tokens_expires_at ON used_tokens (expires_at);
