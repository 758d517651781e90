-- Governance: requests held for approvers, their votes, time-bound role
-- grants, and versions of the policy. Times are unix microseconds; 0 means
-- not yet.
CREATE TABLE approvals (
    id          TEXT    PRIMARY KEY,
    action      TEXT    NOT NULL,
    params      BYTEA      NOT NULL,
    params_hash TEXT    NOT NULL,
    profile     TEXT    NOT NULL DEFAULT '',
    requester   TEXT    NOT NULL,
    reason      TEXT    NOT NULL DEFAULT '',
    required    INTEGER NOT NULL,
    approvers   TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL,
    decided_at  BIGINT  NOT NULL DEFAULT 0,
    result      TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX approvals_status ON approvals (status, created_at);
CREATE TABLE approval_votes (
    approval_id TEXT    NOT NULL REFERENCES approvals (id),
    approver    TEXT    NOT NULL,
    approve     INTEGER NOT NULL,
    at          BIGINT  NOT NULL,
    comment     TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (approval_id, approver)
);
CREATE TABLE role_grants (
    id          TEXT    PRIMARY KEY,
    identity    TEXT    NOT NULL,
    role        TEXT    NOT NULL,
    granted_by  TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    break_glass INTEGER NOT NULL DEFAULT 0,
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL,
    revoked_at  BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX role_grants_identity ON role_grants (identity, expires_at);
CREATE TABLE policy_versions (
    version      BIGINT PRIMARY KEY,
    document     BYTEA     NOT NULL,
    hash         TEXT   NOT NULL,
    proposed_by  TEXT   NOT NULL,
    status       TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    activated_at BIGINT NOT NULL DEFAULT 0
);
-- At most one active version.
CREATE UNIQUE INDEX policy_versions_active ON policy_versions (status) WHERE status = 'active';
