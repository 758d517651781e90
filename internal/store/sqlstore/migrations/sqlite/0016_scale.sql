-- A million live certificates: every list page and report is read from an
-- index in the order it is wanted, and the expiry report needs no search
-- per certificate.

-- Owner is always set: certificates recorded before 0005 answer to their
-- requester, as the expiry report already showed them, so the column can
-- be filtered and indexed as it is.
UPDATE certificates SET owner = requester WHERE owner = '';

-- The inventory pages by (not_after, serial) after at most one filter;
-- each filter's index ends with that order, so a page reads its rows and
-- no more.
DROP INDEX certificates_identity;
CREATE INDEX certificates_identity ON certificates (identity, not_after, serial);
DROP INDEX certificates_profile;
CREATE INDEX certificates_profile ON certificates (profile, not_after, serial);
-- 0015 made (owner, not_after); the list pages by (not_after, serial).
DROP INDEX IF EXISTS certificates_owner;
CREATE INDEX certificates_owner ON certificates (owner, not_after, serial);
-- The (status, not_after) index goes: it matched every query on status
-- equally well, so planners chose it where an identity search was meant
-- (the expiry report turned quadratic). Revoked certificates have an index
-- of their own, in the inventory's order and covering what the CRL and
-- the revocation feed read, so that those read no certificate rows.
DROP INDEX certificates_status;
-- The live certificates in the inventory's order, so that a page of them
-- at an offset skips the rows before it in the index, without reading
-- each row to see its status; with the profile, the expiry timeline
-- counts them from the index alone (the status is in it for SQLite,
-- which counts a column of the condition as one to read).
CREATE INDEX certificates_active ON certificates (not_after, serial, profile, status) WHERE status = 'active';
-- The revoked certificates of a profile or an owner in the same order: a
-- page of them reads them alone, not every certificate of the profile.
-- Only a revocation writes these.
CREATE INDEX certificates_revoked_profile ON certificates (profile, not_after, serial) WHERE status = 'revoked';
CREATE INDEX certificates_revoked_owner ON certificates (owner, not_after, serial) WHERE status = 'revoked';
CREATE INDEX certificates_revoked ON certificates (not_after, serial, issuer, identity, revoked_at, revocation_reason) WHERE status = 'revoked';

-- superseded_until: the not_after of an active certificate of the same
-- identity recorded after this one (0 when none), the latest of them until
-- one outlives this certificate. A certificate is superseded at a time t
-- exactly when superseded_until > t: the expiry report reads that from the
-- row instead of searching for successors. Triggers keep it: an issuance
-- raises it on its identity's live predecessors that are not yet
-- superseded for the rest of their life (superseded_until < not_after,
-- kept in an index of their own, so that an identity shared by many
-- machines costs one row or a few, not one per machine); a revocation
-- recomputes it where it came from the revoked certificate. Rows that
-- expired before the change are left alone: no later report lists them.
ALTER TABLE certificates ADD COLUMN superseded_until BIGINT NOT NULL DEFAULT 0;
UPDATE certificates SET superseded_until = coalesce((SELECT max(n.not_after) FROM certificates n
    WHERE n.identity = certificates.identity AND n.status = 'active' AND n.event_seq > certificates.event_seq), 0)
WHERE status = 'active';
-- The live certificates as the expiry report and the inventory gauges
-- group them, covering both.
CREATE INDEX certificates_live ON certificates (profile, owner, not_after, superseded_until) WHERE status = 'active';
CREATE INDEX certificates_unsuperseded ON certificates (identity, not_after) WHERE status = 'active' AND superseded_until < not_after;
-- engine's own: begin
CREATE TRIGGER certificates_supersede AFTER INSERT ON certificates
WHEN NEW.status = 'active'
BEGIN
    UPDATE certificates SET superseded_until = NEW.not_after
    WHERE identity = NEW.identity AND status = 'active' AND superseded_until < not_after
      AND not_after > NEW.not_before AND event_seq < NEW.event_seq AND superseded_until < NEW.not_after;
END;
CREATE TRIGGER certificates_unsupersede AFTER UPDATE OF status ON certificates
WHEN OLD.status = 'active' AND NEW.status <> 'active'
BEGIN
    UPDATE certificates SET superseded_until = coalesce((SELECT max(n.not_after) FROM certificates n
        WHERE n.identity = certificates.identity AND n.not_after > NEW.revoked_at AND n.status = 'active'
          AND n.event_seq > certificates.event_seq), 0)
    WHERE identity = NEW.identity AND not_after > NEW.revoked_at AND status = 'active'
      AND event_seq < NEW.event_seq AND superseded_until = NEW.not_after;
END;
-- engine's own: end
