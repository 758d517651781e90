-- The trust model's two certificate facts.
-- chain_started_at: when the renewal chain this certificate belongs to began
-- (its first enrollment), inherited by every renewal, so that a profile's
-- max_renewal_chain can end it. Older rows start their chain at their own
-- not_before, the earliest moment known for them.
ALTER TABLE certificates ADD COLUMN chain_started_at BIGINT NOT NULL DEFAULT 0;
UPDATE certificates SET chain_started_at = not_before;
-- token_jti: the one-time token that paid for this certificate, so that a
-- client whose response was lost can fetch it again with the same token
-- and key. Empty for renewals, ACME and mica's own certificates.
ALTER TABLE certificates ADD COLUMN token_jti TEXT NOT NULL DEFAULT '';
CREATE INDEX certificates_token_jti ON certificates (token_jti) WHERE token_jti <> '';
