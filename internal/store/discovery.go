package store

import (
	"context"
	"time"
)

// Actions of discovery: a certificate seen deployed for the first time,
// one no longer seen anywhere it was, and one of any source about to
// expire (see ExpiryNotices).
const (
	ActionCertDiscovered  Action = "cert.discovered"
	ActionCertDisappeared Action = "cert.disappeared"
	ActionCertExpiring    Action = "cert.expiring"
)

// DiscoveredCertificate is a certificate found deployed, by a scan or an
// agent, whoever issued it. It is keyed by fingerprint: one certificate
// seen in many places is one record with many sightings.
type DiscoveredCertificate struct {
	Fingerprint string // lower-case hex SHA-256 of DER
	Serial      string // lower-case hex
	Subject     string // distinguished names, as text
	Issuer      string
	// Identity is what the certificate is filed under: its identity when
	// it has one mica can read, else its first DNS name or common name.
	Identity  string
	SANs      []string
	NotBefore time.Time
	NotAfter  time.Time
	KeyType   string // "ecdsa-p256", "rsa-2048", …
	// Class is who issued it: mica, external or self-signed.
	Class string
	// Findings are what is wrong with it: its own findings and those of
	// its live sightings (package discover's slugs). Expiry is judged when
	// read, not stored.
	Findings []string
	// Owner is who answers for it, from the config's owner rules; empty
	// when no rule matched.
	Owner     string
	DER       []byte
	FirstSeen time.Time
	LastSeen  time.Time
	// GoneAt is when its last live sighting went; zero while it is seen.
	GoneAt time.Time
	// Sightings are filled in by reads that ask for them.
	Sightings []Sighting
}

// Sighting is a certificate seen in one place by one reporter.
type Sighting struct {
	Fingerprint string
	// Location is package discover's canonical text (tls://host:port,
	// file://host/path, …).
	Location string
	// Reporter is the authenticated principal that reported it: the admin
	// who ran a scan, or the agent's identity.
	Reporter string
	// Findings are this sighting's own (missing intermediate, name
	// mismatch, key readable by everyone, …).
	Findings  []string
	Detail    string
	ScanID    string
	FirstSeen time.Time
	LastSeen  time.Time
	GoneAt    time.Time // zero while seen
}

// DiscoveryBatch is one report, written in one transaction.
type DiscoveryBatch struct {
	Reporter string
	ScanID   string
	At       time.Time
	// Certificates are inserted, or updated when known: FirstSeen and a
	// set Owner are kept, LastSeen becomes At and GoneAt is cleared.
	Certificates []DiscoveredCertificate
	// Sightings are inserted or refreshed the same way.
	Sightings []Sighting
	// Scanned are locations this report covers: a sighting at one of them
	// by Reporter that is not among Sightings is gone.
	Scanned []string
	// Complete are the locations of directories (file://host/dir) a scan
	// finished: a sighting by Reporter at or under one of them that scan
	// ScanID did not report is gone.
	Complete []string
}

// DiscoveryResult says what a batch changed, for the events that record
// it (see DiscoveryEvent).
type DiscoveryResult struct {
	// New are the certificates first seen in this batch; Gone those whose
	// last live sighting this batch ended. Both wait for their event.
	New, Gone []DiscoveredCertificate
	// SightingsGone counts the sightings this batch ended.
	SightingsGone int
}

// DiscoveryEventKind is which event a discovered certificate waits for.
type DiscoveryEventKind int

const (
	DiscoveredEvent DiscoveryEventKind = iota + 1
	DisappearedEvent
)

// DiscoveryFilter selects discovered certificates. Zero fields select
// everything live.
type DiscoveryFilter struct {
	Class    string
	Owner    string
	Finding  string // a certificate with this finding (not "expired": use ExpiresBefore)
	Identity string
	// ExpiresBefore selects NotAfter strictly before it.
	ExpiresBefore time.Time
	// IncludeGone also selects certificates no longer seen anywhere.
	IncludeGone bool
	// WithSightings fills in each certificate's sightings.
	WithSightings bool
	Limit         int // 0 means 1000
	Offset        int
}

// DiscoveredCount is how many live discovered certificates of one class
// expire within one window (ExpiryWindows, plus "expired").
type DiscoveredCount struct {
	Class  string
	Window ExpiryWindow
	Count  int64
}

// ExpiredWindow is the window of certificates already expired, which
// discovery finds (mica's own expired certificates are not counted).
const ExpiredWindow ExpiryWindow = "expired"

// FindingCount is how many live discovered certificates have a finding.
type FindingCount struct {
	Finding string
	Count   int64
}

// DiscoveryStore keeps discovered certificates. Both engines implement it
// next to Store; the discovery endpoints find it by type assertion.
type DiscoveryStore interface {
	// RecordDiscovery writes a batch in one transaction.
	RecordDiscovery(ctx context.Context, b DiscoveryBatch) (DiscoveryResult, error)
	// PendingDiscoveryEvents lists certificates whose discovered or
	// disappeared event was not recorded yet (after a crash between the
	// batch and its events), at most limit.
	PendingDiscoveryEvents(ctx context.Context, limit int) (newOnes, gone []DiscoveredCertificate, err error)
	// MarkDiscoveryEvent records that the event of kind for a certificate
	// was written as event seq.
	MarkDiscoveryEvent(ctx context.Context, fingerprint string, kind DiscoveryEventKind, seq int64) error
	// DiscoveredCertificates lists discovered certificates, soonest expiry
	// first.
	DiscoveredCertificates(ctx context.Context, f DiscoveryFilter) ([]DiscoveredCertificate, error)
	// DiscoveredByExpiry counts live discovered certificates by class and
	// expiry window, in one aggregate query.
	DiscoveredByExpiry(ctx context.Context, now time.Time) ([]DiscoveredCount, error)
	// DiscoveredFindings counts live discovered certificates by finding.
	DiscoveredFindings(ctx context.Context) ([]FindingCount, error)
	// DiscoveredExpiring groups the live discovered certificates expiring
	// in (Now, Before] by class and owner, like ExpiringReport (Profile
	// filters nothing: discovered certificates have none).
	DiscoveredExpiring(ctx context.Context, f ExpiringFilter) (DiscoveredReport, error)
}

// DiscoveredReport is the discovered part of the expiry report.
type DiscoveredReport struct {
	Groups        []DiscoveredGroup // by class, then owner
	Total, Listed int
}

// DiscoveredGroup is the discovered certificates at risk of one class and
// owner.
type DiscoveredGroup struct {
	Class, Owner   string
	Count          int
	EarliestExpiry time.Time
	// Certificates lists the group's certificates, soonest expiry first,
	// without DER or sightings.
	Certificates []DiscoveredCertificate
}
