package store

import (
	"context"
	"time"
)

// WebhookState is one webhook endpoint's delivery progress. It lives in
// the database so that a restarted server, or another replica, goes on
// where delivery stopped.
type WebhookState struct {
	Endpoint string
	// Cursor is the sequence number of the last event handled: every
	// event up to it was delivered, dead-lettered or filtered out.
	Cursor      int64
	LastAttempt time.Time
	LastSuccess time.Time
	LastError   string
	// Failures counts failed attempts since the last success.
	Failures    int
	DeadLetters int
}

// DeadLetter is an event an endpoint did not take: refused for good (a
// 4xx answer) or still failing when its retry time ran out.
type DeadLetter struct {
	Endpoint string
	Seq      int64
	Attempts int
	Status   int // the last HTTP status; 0 when there was no answer
	Error    string
	At       time.Time
}

// WebhookStore keeps webhook delivery state. Both engines implement it
// next to Store.
type WebhookStore interface {
	// InitWebhook returns endpoint's state, creating it with cursor when
	// the endpoint is new.
	InitWebhook(ctx context.Context, endpoint string, cursor int64) (WebhookState, error)
	// WebhookStates lists every endpoint's state, dead letters counted.
	WebhookStates(ctx context.Context) ([]WebhookState, error)
	// AdvanceWebhook moves endpoint's cursor from from to to, and clears
	// its failures when success is set. ErrConflict when the cursor is not
	// at from (another server moved it).
	AdvanceWebhook(ctx context.Context, endpoint string, from, to int64, success time.Time) error
	// NoteWebhookFailure records a failed attempt.
	NoteWebhookFailure(ctx context.Context, endpoint string, at time.Time, errText string, failures int) error
	// AddDeadLetter records an event given up on; recording one twice
	// keeps the first.
	AddDeadLetter(ctx context.Context, d DeadLetter) error
	// DeadLetters lists endpoint's dead letters, newest first, at most
	// limit (0 means 100).
	DeadLetters(ctx context.Context, endpoint string, limit int) ([]DeadLetter, error)
}

// LeaseStore hands out named leases, so that of several servers sharing
// a database one at a time does a job (delivers to one webhook endpoint,
// sends expiry notices).
type LeaseStore interface {
	// TakeLease gives the lease name to owner until now+ttl when it is
	// free, expired or already owner's, and reports whether owner holds
	// it.
	TakeLease(ctx context.Context, name, owner string, now time.Time, ttl time.Duration) (bool, error)
}

// ExpiryCandidate is a certificate about to expire that no expiry notice
// named yet: issued by mica (active, not superseded) or discovered (live).
type ExpiryCandidate struct {
	Fingerprint string
	Serial      string
	Identity    string
	Profile     string // empty for discovered certificates
	Discovered  bool
	Owner       string
	NotAfter    time.Time
}

// NoticeFilter says which certificates are at risk: issued by mica
// (active, not superseded by a newer certificate of the same identity) or
// discovered (still seen, and not in the inventory), expiring within
// Within of Now, with less than 1/LifeDivisor of their lifetime left (so
// that a short-lived certificate that its agent renews on time is never
// announced).
type NoticeFilter struct {
	Now         time.Time
	Within      time.Duration
	LifeDivisor int
	Limit       int // 0 means 1000
}

// ExpiryNoticeStore remembers which certificates were announced as about
// to expire, so that each is announced once.
type ExpiryNoticeStore interface {
	// ExpiringWithoutNotice lists the certificates at risk that no notice
	// named yet, soonest expiry first.
	ExpiringWithoutNotice(ctx context.Context, f NoticeFilter) ([]ExpiryCandidate, error)
	// AddExpiryNotice records the notice event seq for a certificate.
	AddExpiryNotice(ctx context.Context, fingerprint string, seq int64, at time.Time) error
}
