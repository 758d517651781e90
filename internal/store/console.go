package store

import (
	"context"
	"time"
)

// The web console's sign-in records: one-time links and the sessions they
// open. Secrets are never stored, only their SHA-256 (hex); every change
// is recorded with its audit event in one transaction, like governance.

// Console sign-in actions in the audit log.
const (
	ActionConsoleLinkCreated    Action = "console.link.created"
	ActionConsoleSessionCreated Action = "console.session.created"
	ActionConsoleSessionEnded   Action = "console.session.ended"
)

// ConsoleLink is a one-time sign-in link for one administrator's
// credential.
type ConsoleLink struct {
	Hash      string // hex SHA-256 of the link's secret
	Serial    string // the credential that asked for it
	Identity  string
	Roles     []string // the roles the credential held when it asked
	CreatedAt time.Time
	ExpiresAt time.Time
	UsedAt    time.Time // zero until used
}

// ConsoleSession is a signed-in browser.
type ConsoleSession struct {
	Hash     string // hex SHA-256 of the session cookie's secret
	Serial   string // the credential it is bound to
	Identity string
	Roles    []string // the roles it began with; it never gains more
	// Method is how it began: "link" or "certificate".
	Method    string
	Source    string // the browser's address when it began
	CreatedAt time.Time
	ExpiresAt time.Time
	EndedAt   time.Time // zero while open
	EndReason string
}

// Console keeps console links and sessions. ErrConflict when the state
// changed meanwhile (a link already used or expired, a session already
// ended); ErrNotFound for an unknown hash.
type Console interface {
	CreateConsoleLink(ctx context.Context, l *ConsoleLink, ev *Event) error
	ConsoleLink(ctx context.Context, hash string) (ConsoleLink, error)
	// RedeemConsoleLink marks link linkHash used at s.CreatedAt and opens
	// s, once: ErrConflict when the link was used before or expired by
	// then, and nothing is written.
	RedeemConsoleLink(ctx context.Context, linkHash string, s *ConsoleSession, ev *Event) error
	// CreateConsoleSession opens a session without a link (a browser's
	// client certificate).
	CreateConsoleSession(ctx context.Context, s *ConsoleSession, ev *Event) error
	ConsoleSession(ctx context.Context, hash string) (ConsoleSession, error)
	// EndConsoleSession ends an open session: ErrConflict when it had
	// ended already.
	EndConsoleSession(ctx context.Context, hash string, at time.Time, reason string, ev *Event) error
	// LapsedConsoleSessions lists up to limit sessions still open whose
	// time ran out before at, so that their end is recorded.
	LapsedConsoleSessions(ctx context.Context, at time.Time, limit int) ([]ConsoleSession, error)
	// PurgeConsole deletes links that expired before before and sessions
	// that ended before it; their creation and end stay in the audit log.
	PurgeConsole(ctx context.Context, before time.Time) error
}
