-- The deny list: identities that may be neither issued nor renewed,
-- whatever credential they present.
CREATE TABLE denied_identities (
    identity  TEXT   PRIMARY KEY,
    at        BIGINT NOT NULL, -- unix microseconds, UTC
    actor     TEXT   NOT NULL,
    detail    TEXT   NOT NULL,
    event_seq BIGINT NOT NULL REFERENCES events (seq)
);
