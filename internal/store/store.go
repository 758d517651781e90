// Package store defines what mica keeps: certificate records, lifecycle
// events and consumed enrollment tokens, and the Store interface that the
// SQLite (store/sqlite, the embedded default) and PostgreSQL (store/postgres)
// engines implement. Both run the SQL of store/sqlstore, and both pass the
// conformance suite in store/storetest.
//
// Writes that matter for durability (an issued certificate together with its
// lifecycle event) go through RecordIssuance, which engines group-commit: many
// callers share one transaction and one fsync, and each caller returns only
// after its transaction has committed.
package store

import (
	"context"
	"errors"
	"time"
)

// Status is a certificate's revocation status. Expiry is not a status: it is
// derived from NotAfter at the time of asking.
type Status string

const (
	StatusActive  Status = "active"
	StatusRevoked Status = "revoked"
	// StatusExpired is only a filter value: active and past NotAfter.
	StatusExpired Status = "expired"
)

// Certificate is the inventory record of one issued certificate.
type Certificate struct {
	Serial      string // lower-case hex of the serial number
	Fingerprint string // lower-case hex SHA-256 of DER
	Identity    string // identity.Identity.Primary()
	SANs        []string
	Profile     string
	Requester   string // authenticated principal that asked for it
	// Owner answers for the certificate: the admin who made the enrollment
	// token (kept through renewals), the ACME account, or "system".
	Owner string
	// ChainStartedAt is when the renewal chain began: the first
	// enrollment's time, kept through renewals (migration 0006).
	ChainStartedAt time.Time
	// TokenJTI is the one-time token that paid for the certificate; empty
	// for renewals, ACME and mica's own.
	TokenJTI   string
	SourceAddr string // network address the request came from
	NotBefore  time.Time
	NotAfter   time.Time
	Issuer     string // lower-case hex SHA-256 fingerprint of the issuing CA certificate
	Status     Status
	RevokedAt  time.Time // zero unless revoked
	// RevocationReason is the RFC 5280 CRLReason code; meaningful only when revoked.
	RevocationReason int
	RenewedFrom      string // serial of the certificate that authenticated a renewal
	DER              []byte
	// EventSeq is the sequence number of the lifecycle event recorded in the
	// same transaction; assigned by the store.
	EventSeq int64
}

// CertificateStatus is what can change in a certificate's record after it
// is written: whether, when and why it was revoked.
type CertificateStatus struct {
	Status           Status
	RevokedAt        time.Time // zero unless revoked
	RevocationReason int
}

// Action names a lifecycle event. The set grows with the system; values are
// stable strings because they are part of the audit record.
type Action string

const (
	ActionCertIssued      Action = "cert.issued"
	ActionCertRenewed     Action = "cert.renewed"
	ActionCertRevoked     Action = "cert.revoked"
	ActionIssuanceRefused Action = "issuance.refused"
	ActionTokenCreated    Action = "token.created"
	ActionCACreated       Action = "ca.created"
	ActionPolicyLoaded    Action = "policy.loaded"
	// ActionAuthFailed aggregates failed authentications from one source
	// over one minute, so that a flood of bad credentials cannot bloat the log.
	ActionAuthFailed Action = "auth.failed"
	// ActionIdentityDenied and ActionIdentityAllowed put an identity on the
	// deny list and take it off again.
	ActionIdentityDenied  Action = "identity.denied"
	ActionIdentityAllowed Action = "identity.allowed"
	// ActionRateLimited records requests refused by a rate limit, and the
	// anomaly actions record what the anomaly detector saw. Both are
	// throttled per key (the first at once, the rest as one summary a
	// minute), so that a flood cannot bloat the log.
	ActionRateLimited              Action = "rate.limited"
	ActionAnomalyRenewalStorm      Action = "anomaly.renewal_storm"
	ActionAnomalyIssuanceBurst     Action = "anomaly.issuance_burst"
	ActionAnomalyUnexpectedNetwork Action = "anomaly.unexpected_network"
	ActionAnomalyUnexpectedIssuer  Action = "anomaly.unexpected_issuer"
	// Governance: every step of an approval request, role grants (a
	// break-glass grant is its own action, for alerts), policy versions.
	ActionApprovalRequested Action = "approval.requested"
	ActionApprovalVoted     Action = "approval.voted"
	ActionApprovalApproved  Action = "approval.approved"
	ActionApprovalRejected  Action = "approval.rejected"
	ActionApprovalExecuted  Action = "approval.executed"
	ActionApprovalFailed    Action = "approval.failed"
	ActionApprovalExpired   Action = "approval.expired"
	ActionRoleGranted       Action = "role.granted"
	ActionRoleBreakGlass    Action = "role.break_glass"
	ActionRoleRevoked       Action = "role.revoked"
	ActionPolicyProposed    Action = "policy.proposed"
	ActionPolicyActivated   Action = "policy.activated"
	ActionPolicyRejected    Action = "policy.rejected"
)

// Event is one lifecycle event: who did what to which subject, and how it ended.
type Event struct {
	Seq         int64 // assigned by the store, strictly increasing
	Time        time.Time
	Actor       string // authenticated principal, or "system"
	Source      string // source network address, if any
	Action      Action
	Serial      string // subject certificate, if any
	Fingerprint string
	Identity    string
	Profile     string
	Outcome     string // "ok", or the reason a request was refused
	Detail      string // human-readable detail; never secrets or key material

	// LeafIndex is the event's 0-based position in the audit log's Merkle
	// tree, contiguous (unlike Seq, which may have gaps); LeafHash is its
	// RFC 6962 leaf hash (package auditlog/leaf). Both are assigned by the
	// store in the transaction that records the event.
	LeafIndex int64
	LeafHash  []byte
}

// Issuance is what RecordIssuance writes in one transaction.
type Issuance struct {
	Certificate Certificate
	Event       Event
	// Token, when set, is consumed in the same transaction; if it was
	// consumed before, nothing is written and ErrTokenUsed is returned.
	Token *TokenUse
	// Names are the names of the certificate's identity in canonical
	// text. If any of them is on the deny list when the transaction
	// commits, nothing is written and a *DeniedError is returned: checked
	// in the transaction, a denial committed a moment before cannot slip
	// between the check and the write.
	Names []string
	// Renews, when set, is the serial of the certificate this one
	// renews. Unless it is still active in the transaction, nothing is
	// written and ErrRenewedRevoked is returned: a revocation committed
	// while the renewal was being signed wins.
	Renews string
}

// TokenUse marks a one-time enrollment token as consumed.
type TokenUse struct {
	JTI       string
	ExpiresAt time.Time // after this the row may be purged: the token is dead anyway
}

// Filter selects certificates, listed in the inventory's order: NotAfter,
// then Serial. Zero fields select everything.
type Filter struct {
	Identity      string
	Profile       string
	Owner         string    // who answers for it (Certificate.Owner)
	Status        Status    // active and expired are judged at Now
	Now           time.Time // required when Status is active or expired
	ExpiresBefore time.Time // NotAfter strictly before this
	// After, when set, lists only what comes after it in the inventory's
	// order: the page after one that ended there. A page read this way
	// costs its own rows however deep it is; Offset reads and skips every
	// row before it, so it is for shallow pages only.
	After  Position
	Limit  int // 0 means the engine's default (1000)
	Offset int
}

// Position is a place in the inventory's order, the last certificate of a
// page: its NotAfter and Serial.
type Position struct {
	NotAfter time.Time
	Serial   string
}

// PositionOf is c's place in the inventory's order.
func PositionOf(c Certificate) Position { return Position{NotAfter: c.NotAfter, Serial: c.Serial} }

// IsZero reports whether p is the start of the inventory.
func (p Position) IsZero() bool { return p.NotAfter.IsZero() && p.Serial == "" }

// EventFilter selects events, oldest first.
type EventFilter struct {
	AfterSeq int64 // events with Seq > AfterSeq
	Action   Action
	// Actions, when set, selects events with any of these actions (and
	// Action, if also set, is one more).
	Actions  []Action
	Identity string
	Since    time.Time // events at or after this time; zero means any
	Limit    int       // 0 means 1000
}

// Checkpoint is a signed statement of the audit log's size and root hash,
// in the C2SP signed-note format (see package auditlog).
type Checkpoint struct {
	Size int64
	Root []byte
	Note []byte // the signed note, as served to witnesses
	Time time.Time
}

// DefaultTimeout bounds every store call (a query, a write and its wait
// for the group commit, a batch's transaction) when the engine's Config
// sets no other: a frozen database or a stalled disk then fails the call
// with ErrTimeout instead of hanging its caller for the whole freeze.
const DefaultTimeout = 5 * time.Second

var (
	// ErrTimeout is matched (errors.Is) by the error of a store call that
	// the database did not answer within the store's timeout; the error
	// also matches context.DeadlineExceeded. A write that timed out may
	// still commit: read it back before retrying.
	ErrTimeout = errors.New("store: the database did not answer in time")
	// ErrNotFound is returned when no record matches.
	ErrNotFound = errors.New("store: not found")
	// ErrTokenUsed is returned by RecordIssuance when the token was consumed before.
	ErrTokenUsed = errors.New("store: token already used")
	// ErrAlreadyRevoked is returned by Revoke for a certificate revoked before.
	ErrAlreadyRevoked = errors.New("store: certificate already revoked")
	// ErrAlreadyDenied is returned by Deny for an identity denied before.
	ErrAlreadyDenied = errors.New("store: identity already denied")
	// ErrDenied is matched by the *DeniedError of RecordIssuance.
	ErrDenied = errors.New("store: identity denied")
	// ErrRenewedRevoked is returned by RecordIssuance when the
	// certificate an issuance renews (Issuance.Renews) is no longer active.
	ErrRenewedRevoked = errors.New("store: the certificate renewed is no longer active")
)

// DeniedError is RecordIssuance's refusal of an identity one of whose
// names (Issuance.Names) is on the deny list; it matches ErrDenied.
type DeniedError struct{ Name string }

func (e *DeniedError) Error() string { return "store: identity " + e.Name + " is on the deny list" }

// Is makes errors.Is(err, ErrDenied) true.
func (e *DeniedError) Is(target error) bool { return target == ErrDenied }

// Denial is one entry of the deny list: an identity that may be neither
// issued nor renewed.
type Denial struct {
	Identity string
	Time     time.Time
	Actor    string
	Detail   string
	EventSeq int64
}

// Revoked is a revoked certificate as the revocation outputs (CRL, OCSP,
// feed) need it.
type Revoked struct {
	Serial    string
	Identity  string
	Issuer    string
	RevokedAt time.Time
	Reason    int
	NotAfter  time.Time
}

// CRLNumber is what NumberCRL hands out for a new CRL.
type CRLNumber struct {
	// Number is the CRL number (RFC 5280 5.2.3).
	Number int64
	// PreviousThisUpdate is the latest thisUpdate handed out for the
	// issuer before this number, zero for its first CRL. A CRL whose
	// thisUpdate is not after it shares its second with another CRL of
	// the issuer, so HTTP's whole-second Last-Modified cannot tell them
	// apart.
	PreviousThisUpdate time.Time
}

// Store is what every engine provides. All methods are safe for concurrent
// use, and each is bounded by the engine's timeout (DefaultTimeout unless
// configured): past it the call returns an error matching ErrTimeout.
type Store interface {
	// RecordIssuance durably writes the certificate, its event and the token
	// use in one transaction (possibly shared with other callers' issuances)
	// and returns after commit. It fills in Event.Seq and Certificate.EventSeq.
	RecordIssuance(ctx context.Context, iss *Issuance) error
	// RecordEvent durably appends one event and fills in its Seq.
	RecordEvent(ctx context.Context, ev *Event) error
	// Revoke marks an active certificate revoked and records ev in the same
	// transaction. ErrNotFound, ErrAlreadyRevoked.
	Revoke(ctx context.Context, serial string, reason int, at time.Time, ev *Event) error
	// RevokeIdentity revokes every certificate of identity that is active
	// and unexpired at at, in one transaction, recording one event per
	// certificate (ev with Serial, Fingerprint and Profile filled in). It
	// returns those events with their Seq; none when there was nothing to
	// revoke.
	RevokeIdentity(ctx context.Context, identity string, reason int, at time.Time, ev Event) ([]Event, error)
	// Deny puts identity on the deny list and records ev in the same
	// transaction. ErrAlreadyDenied.
	Deny(ctx context.Context, identity string, ev *Event) error
	// Allow takes identity off the deny list and records ev in the same
	// transaction. ErrNotFound when it was not denied.
	Allow(ctx context.Context, identity string, ev *Event) error
	// IsDenied reports whether identity is on the deny list.
	IsDenied(ctx context.Context, identity string) (bool, error)
	// DeniedIdentities lists the deny list.
	DeniedIdentities(ctx context.Context) ([]Denial, error)
	// RevokedCertificates calls fn for every revoked certificate of issuer
	// (every issuer when empty) that has not expired at validAt, streaming
	// so that a million entries need no million-element slice.
	RevokedCertificates(ctx context.Context, issuer string, validAt time.Time, fn func(Revoked) error) error
	// NumberCRL hands out the number of a new CRL of issuer dated
	// thisUpdate and calls fn for every revocation it must list (the
	// revoked certificates of issuer not expired at thisUpdate, as
	// RevokedCertificates streams them). The number is larger than every
	// number handed out for issuer before, by any server sharing the
	// database, and at least thisUpdate in microseconds since the epoch,
	// so that it stays above numbers made from the clock by earlier
	// versions. Where several servers share the database, the number and
	// the listing come from one transaction, so a CRL with a larger number
	// lists every revocation that one with a smaller number lists (unless
	// it expired). An error from fn ends the listing and is returned as
	// it is; the number is then spent.
	NumberCRL(ctx context.Context, issuer string, thisUpdate time.Time, fn func(Revoked) error) (CRLNumber, error)
	// LastEventSeq is the highest event sequence number committed, 0 if none.
	LastEventSeq(ctx context.Context) (int64, error)

	Certificate(ctx context.Context, serial string) (Certificate, error)
	// CertificateWithoutDER is Certificate without the DER (DER is nil):
	// the lookup that authenticates a client, which has the certificate
	// in hand already.
	CertificateWithoutDER(ctx context.Context, serial string) (Certificate, error)
	// CertificateStatus reads only the status of a certificate: a client
	// whose record was read on an earlier request of its connection is
	// checked with it on every later one. ErrNotFound.
	CertificateStatus(ctx context.Context, serial string) (CertificateStatus, error)
	CertificateByFingerprint(ctx context.Context, fingerprint string) (Certificate, error)
	// CertificateByToken reads the certificate a one-time token paid for.
	CertificateByToken(ctx context.Context, jti string) (Certificate, error)
	ListCertificates(ctx context.Context, f Filter) ([]Certificate, error)
	CountCertificates(ctx context.Context, f Filter) (int, error)
	// CertificatesByExpiry counts the live certificates (active, NotAfter
	// after now) by profile and expiry window, in one aggregate query: the
	// inventory gauges call it at most every few seconds, whatever its size.
	// Only non-zero counts are returned.
	CertificatesByExpiry(ctx context.Context, now time.Time) ([]ExpiryCount, error)
	// ExpiryTimeline counts the live certificates expiring on each day
	// of f's window, by profile, in one aggregate query (the console's
	// timeline). Only non-zero counts are returned.
	ExpiryTimeline(ctx context.Context, f TimelineFilter) ([]DayCount, error)
	// ExpiringReport groups the certificates at risk of expiring (see
	// ExpiringFilter) by profile and owner, from one consistent snapshot.
	ExpiringReport(ctx context.Context, f ExpiringFilter) (ExpiringReport, error)
	Events(ctx context.Context, f EventFilter) ([]Event, error)

	// Leaves returns up to limit (0 means 1000, at most 10000) events with
	// LeafIndex >= start, in leaf order. LeafHashes is the same without the
	// events' contents, for keeping a tree in memory.
	Leaves(ctx context.Context, start int64, limit int) ([]Event, error)
	LeafHashes(ctx context.Context, start int64, limit int) ([][]byte, error)
	// EventBySeq reads one event (with its leaf index). ErrNotFound.
	EventBySeq(ctx context.Context, seq int64) (Event, error)
	// AddCheckpoint stores a checkpoint; storing one for a size already
	// stored does nothing (servers sharing a database may race to sign).
	AddCheckpoint(ctx context.Context, c Checkpoint) error
	// LatestCheckpoint is the checkpoint with the largest size. ErrNotFound.
	LatestCheckpoint(ctx context.Context) (Checkpoint, error)
	// Checkpoints returns up to limit (0 means 1000) checkpoints with Size
	// > afterSize, smallest first.
	Checkpoints(ctx context.Context, afterSize int64, limit int) ([]Checkpoint, error)

	// BindCA checks that the database belongs to the CA b names, recording
	// it when the database belongs to none yet and b.Create is set (or the
	// database was written by that CA before bindings were recorded):
	// *ForeignCAError for another CA's database, ErrNoCA for an empty one
	// without b.Create. Servers binding one database at once agree.
	BindCA(ctx context.Context, b CABinding) error

	// Governance keeps approvals, role grants and policy versions.
	Governance
	// Console keeps the web console's sign-in links and sessions.
	Console
	// CASlots keeps the CA rotation's state.
	CASlots

	Close() error
}
