-- The latest CRL number handed out per issuer (RFC 5280 5.2.3), so that
-- numbers keep growing across restarts and replicas and no two CRLs share
-- one. this_update is the latest thisUpdate handed out for the issuer;
-- prior_this_update the latest before the last number, which tells a CRL
-- that shares its second with another (HTTP dates have whole seconds).
CREATE TABLE crl_numbers (
    issuer            TEXT   PRIMARY KEY,
    number            BIGINT NOT NULL,
    this_update       BIGINT NOT NULL, -- unix microseconds, UTC
    prior_this_update BIGINT NOT NULL  -- unix microseconds, UTC; 0 before the first
);
