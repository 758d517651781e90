-- CA rotation: every CA certificate is a slot that moves prepared → active
-- → retired → removed. The state lives here so that every server agrees;
-- moves are compare-and-swap with their audit event. Times are unix
-- microseconds; 0 means not yet.
CREATE TABLE ca_slots (
    id                  BIGINT PRIMARY KEY,
    kind                TEXT   NOT NULL,
    state               TEXT   NOT NULL,
    cert                BYTEA   NOT NULL,
    fingerprint         TEXT   NOT NULL UNIQUE,
    parent              BIGINT NOT NULL DEFAULT 0,
    key_uri             TEXT   NOT NULL DEFAULT '',
    key_sealed          BYTEA,
    cross_from_previous BYTEA,
    cross_to_previous   BYTEA,
    not_before          BIGINT NOT NULL,
    not_after           BIGINT NOT NULL,
    prepared_at         BIGINT NOT NULL,
    activated_at        BIGINT NOT NULL DEFAULT 0,
    retired_at          BIGINT NOT NULL DEFAULT 0,
    removed_at          BIGINT NOT NULL DEFAULT 0
);
-- At most one prepared and one active slot of each kind: two servers
-- preparing at once get one slot.
CREATE UNIQUE INDEX ca_slots_one_prepared ON ca_slots (kind) WHERE state = 'prepared';
CREATE UNIQUE INDEX ca_slots_one_active ON ca_slots (kind) WHERE state = 'active';
-- When a retired issuer's last certificate expires.
CREATE INDEX certificates_issuer ON certificates (issuer, not_after);
