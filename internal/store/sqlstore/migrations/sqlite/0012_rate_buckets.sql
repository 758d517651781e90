-- Rate-limit token buckets shared by every replica (package
-- ratelimit/pgbuckets): one row per limit and key, refilled by arithmetic
-- when taken from; a row past full_us is a full bucket and is swept. The
-- SQLite engine keeps its buckets in memory (one server) and never uses
-- this table; it exists so that both engines have one schema.
CREATE TABLE rate_buckets (
    bucket     TEXT             NOT NULL,
    key        TEXT             NOT NULL,
    tokens     DOUBLE PRECISION NOT NULL,
    updated_us BIGINT           NOT NULL,
    burst      DOUBLE PRECISION NOT NULL,
    refill     DOUBLE PRECISION NOT NULL,
    full_us    BIGINT           NOT NULL,
    PRIMARY KEY (bucket, key)
);
CREATE INDEX rate_buckets_full ON rate_buckets (full_us);
