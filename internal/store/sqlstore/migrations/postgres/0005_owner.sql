-- Who answers for a certificate, for the expiry report and the inventory:
-- the admin who made the enrollment token, carried through every renewal;
-- the ACME account; "system" for the server's own. Empty for certificates
-- recorded before this column, which the report then groups by requester.
ALTER TABLE certificates ADD COLUMN owner TEXT NOT NULL DEFAULT '';
