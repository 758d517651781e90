-- The web console's sign-in: one-time links (made by `mica console login`
-- over mTLS, valid for a minute) and the sessions they open. Only SHA-256
-- hashes of the secrets are kept, so a copy of the database signs nobody
-- in. A session is bound to the administrator's credential (serial) and
-- the roles it held when it began; each request checks both again. Times
-- are unix microseconds; 0 means not yet.
CREATE TABLE console_links (
    hash       TEXT   PRIMARY KEY,
    serial     TEXT   NOT NULL,
    identity   TEXT   NOT NULL,
    roles      TEXT   NOT NULL, -- JSON array of role names
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX console_links_expires_at ON console_links (expires_at);
CREATE TABLE console_sessions (
    hash       TEXT   PRIMARY KEY,
    serial     TEXT   NOT NULL,
    identity   TEXT   NOT NULL,
    roles      TEXT   NOT NULL, -- JSON array of role names
    method     TEXT   NOT NULL, -- link or certificate
    source     TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    ended_at   BIGINT NOT NULL DEFAULT 0,
    end_reason TEXT   NOT NULL DEFAULT ''
);
CREATE INDEX console_sessions_open ON console_sessions (ended_at, expires_at);
-- The console filters the inventory by owner ("who answers for these").
CREATE INDEX certificates_owner ON certificates (owner, not_after);
