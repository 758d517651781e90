-- Certificates found deployed (mica discover, agents' reports), whoever
-- issued them, one row per certificate however many places it is seen.
CREATE TABLE discovered_certificates (
    fingerprint     TEXT    PRIMARY KEY, -- hex SHA-256 of DER
    serial          TEXT    NOT NULL,
    subject         TEXT    NOT NULL,
    issuer          TEXT    NOT NULL,
    identity        TEXT    NOT NULL,
    sans            TEXT    NOT NULL, -- JSON array of strings
    not_before      BIGINT  NOT NULL, -- unix microseconds, UTC
    not_after       BIGINT  NOT NULL, -- unix microseconds, UTC
    key_type        TEXT    NOT NULL,
    class           TEXT    NOT NULL CHECK (class IN ('mica', 'external', 'self-signed')),
    own_findings    TEXT    NOT NULL, -- comma-separated: the certificate's own
    findings        TEXT    NOT NULL, -- comma-separated: its own and its live sightings'
    owner           TEXT    NOT NULL,
    der             BYTEA   NOT NULL,
    first_seen      BIGINT  NOT NULL,
    last_seen       BIGINT  NOT NULL,
    gone_at         BIGINT,           -- NULL while seen somewhere
    discovered_seq  BIGINT  NOT NULL, -- its cert.discovered event; 0 until recorded
    disappeared_seq BIGINT  NOT NULL  -- its cert.disappeared event; 0 until recorded
);
CREATE INDEX discovered_not_after ON discovered_certificates (not_after);
-- Rows whose event is still to be written (after a crash between a report
-- and its events): few, so a partial index finds them without a scan.
CREATE INDEX discovered_pending ON discovered_certificates (fingerprint)
    WHERE discovered_seq = 0 OR (gone_at IS NOT NULL AND disappeared_seq = 0);

-- Where each discovered certificate was seen, by whom.
CREATE TABLE discovery_sightings (
    fingerprint TEXT   NOT NULL REFERENCES discovered_certificates (fingerprint),
    location    TEXT   NOT NULL, -- tls://host:port, file://host/path, ...
    reporter    TEXT   NOT NULL, -- the admin who scanned, or the agent's identity
    findings    TEXT   NOT NULL, -- comma-separated: this sighting's own
    detail      TEXT   NOT NULL,
    scan_id     TEXT   NOT NULL,
    first_seen  BIGINT NOT NULL, -- unix microseconds, UTC
    last_seen   BIGINT NOT NULL,
    gone_at     BIGINT,          -- NULL while seen
    PRIMARY KEY (fingerprint, location, reporter)
);
CREATE INDEX discovery_sightings_place ON discovery_sightings (reporter, location);

-- Webhook delivery: each endpoint's cursor in the event log, and the
-- events given up on.
CREATE TABLE webhook_endpoints (
    name         TEXT    PRIMARY KEY,
    cursor_seq   BIGINT  NOT NULL,
    last_attempt BIGINT  NOT NULL, -- unix microseconds, UTC; 0 for never
    last_success BIGINT  NOT NULL, -- unix microseconds, UTC; 0 for never
    last_error   TEXT    NOT NULL,
    failures     INTEGER NOT NULL
);
CREATE TABLE webhook_dead_letters (
    endpoint TEXT    NOT NULL,
    seq      BIGINT  NOT NULL,
    attempts INTEGER NOT NULL,
    status   INTEGER NOT NULL,
    error    TEXT    NOT NULL,
    at       BIGINT  NOT NULL, -- unix microseconds, UTC
    PRIMARY KEY (endpoint, seq)
);

-- Named leases: which of the servers sharing the database does a job.
CREATE TABLE leases (
    name    TEXT   PRIMARY KEY,
    owner   TEXT   NOT NULL,
    expires BIGINT NOT NULL -- unix microseconds, UTC
);

-- Certificates announced as about to expire (cert.expiring), once each.
CREATE TABLE expiry_notices (
    fingerprint TEXT   PRIMARY KEY,
    event_seq   BIGINT NOT NULL,
    at          BIGINT NOT NULL -- unix microseconds, UTC
);
