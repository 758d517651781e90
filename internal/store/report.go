package store

import "time"

// ExpiringFilter selects the certificates at risk of expiring: active (not
// revoked), expiring after Now and at or before Before, and not superseded,
// that is with no newer unexpired active certificate of the same identity
// (a renewed certificate is not at risk: its successor is in use).
type ExpiringFilter struct {
	Now, Before time.Time
	Profile     string // only this profile; empty for all
	// Limit caps the certificates listed (0 means 1000, at most 10000).
	// Groups and their counts always cover every certificate at risk.
	Limit int
}

// ExpiringReport is the expiry report: the certificates at risk, grouped
// by profile and owner.
type ExpiringReport struct {
	Groups []ExpiringGroup // by profile, then owner
	// Total is the number of certificates at risk; Listed how many of them
	// the groups list (fewer than Total when Limit cut the list).
	Total, Listed int
}

// ExpiringGroup is the certificates at risk of one profile and owner. The
// owner is Certificate.Owner: the admin who made the enrollment token
// (kept through every renewal), acme:<account URL> for ACME, or system;
// certificates recorded before owners were group by their requester.
type ExpiringGroup struct {
	Profile, Owner string
	Count          int
	EarliestExpiry time.Time
	// Certificates lists the group's certificates, soonest expiry first,
	// without DER.
	Certificates []Certificate
}
