-- State of the ACME front door (RFC 8555). Each object is opaque JSON in
-- data, owned by the ACME package; the columns are what it queries by.
CREATE TABLE acme_accounts (
    id      TEXT   PRIMARY KEY,
    parent  TEXT   NOT NULL,
    lookup  TEXT   NOT NULL,
    status  TEXT   NOT NULL,
    expires BIGINT NOT NULL, -- unix microseconds, UTC; 0 for never
    data    BLOB  NOT NULL
);
CREATE INDEX acme_accounts_parent ON acme_accounts (parent, id);
CREATE TABLE acme_orders (
    id      TEXT   PRIMARY KEY,
    parent  TEXT   NOT NULL,
    lookup  TEXT   NOT NULL,
    status  TEXT   NOT NULL,
    expires BIGINT NOT NULL, -- unix microseconds, UTC; 0 for never
    data    BLOB  NOT NULL
);
CREATE INDEX acme_orders_parent ON acme_orders (parent, id);
CREATE TABLE acme_authorizations (
    id      TEXT   PRIMARY KEY,
    parent  TEXT   NOT NULL,
    lookup  TEXT   NOT NULL,
    status  TEXT   NOT NULL,
    expires BIGINT NOT NULL, -- unix microseconds, UTC; 0 for never
    data    BLOB  NOT NULL
);
CREATE INDEX acme_authorizations_parent ON acme_authorizations (parent, id);
CREATE TABLE acme_challenges (
    id      TEXT   PRIMARY KEY,
    parent  TEXT   NOT NULL,
    lookup  TEXT   NOT NULL,
    status  TEXT   NOT NULL,
    expires BIGINT NOT NULL, -- unix microseconds, UTC; 0 for never
    data    BLOB  NOT NULL
);
CREATE INDEX acme_challenges_parent ON acme_challenges (parent, id);
-- An account's key thumbprint is unique: one key, one account.
CREATE UNIQUE INDEX acme_accounts_lookup ON acme_accounts (lookup) WHERE lookup <> '';

-- Anti-replay nonces handed out and not yet used; a nonce is deleted when
-- it is used, so the primary key is the replay guard across replicas.
CREATE TABLE acme_nonces (
    nonce   TEXT   PRIMARY KEY,
    expires BIGINT NOT NULL -- unix microseconds, UTC
);
CREATE INDEX acme_nonces_expires ON acme_nonces (expires);
