-- Nonces are issued without a write: each is an HMAC under the key of its
-- epoch (an hour), kept here so that every server makes and checks the same
-- nonces. The first server to need an epoch's key stores a random one.
CREATE TABLE acme_nonce_keys (
    epoch  BIGINT PRIMARY KEY, -- hours since 1970-01-01 UTC
    secret BLOB  NOT NULL
);
-- acme_nonces now holds the nonces already used, until they expire: a
-- nonce works once because its insert is unique. Rows of the old meaning
-- (nonces handed out) name nonces that can no longer verify.
DELETE FROM acme_nonces;
-- Orders a crash left processing are found by status and settled.
CREATE INDEX acme_orders_status ON acme_orders (status, id);
