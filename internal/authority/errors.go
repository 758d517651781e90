package authority

import (
	"errors"
	"fmt"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// Kind classifies a refusal. Front doors translate kinds into their own
// vocabulary (HTTP problem types, ACME error types, gRPC codes) in one place;
// the core never speaks HTTP.
type Kind int

const (
	KindInternal         Kind = iota // a fault of the server, not of the request
	KindInvalid                      // the request is malformed
	KindUnauthenticated              // no or unacceptable credentials
	KindForbidden                    // authenticated, but not allowed to do this
	KindTokenInvalid                 // token malformed, forged or for another server
	KindTokenExpired                 // token past its expiry (or not yet valid)
	KindTokenReplayed                // token used before
	KindIdentityMismatch             // request names another identity than its credential
	KindBadCSR                       // CSR unparsable or its signature does not verify
	KindPolicyDenied                 // the profile does not allow it
	KindLintFailed                   // the certificate would not pass lint
	KindCertRevoked                  // presented certificate is revoked
	KindCertExpired                  // presented certificate is expired or not yet valid
	KindNotFound                     // no such record
	KindConflict                     // the state does not allow it (e.g. already revoked)
	KindRateLimited                  // too many requests: a rate limit or a storm; retry after RetryAfter
	KindApprovalPending              // not refused: held for approvers (Error.Pending)
)

var kindNames = map[Kind]string{
	KindInternal:         "internal",
	KindInvalid:          "invalid-request",
	KindUnauthenticated:  "unauthenticated",
	KindForbidden:        "forbidden",
	KindTokenInvalid:     "token-invalid",
	KindTokenExpired:     "token-expired",
	KindTokenReplayed:    "token-replayed",
	KindIdentityMismatch: "identity-mismatch",
	KindBadCSR:           "bad-csr",
	KindPolicyDenied:     "policy-denied",
	KindLintFailed:       "lint-failed",
	KindCertRevoked:      "certificate-revoked",
	KindCertExpired:      "certificate-expired",
	KindNotFound:         "not-found",
	KindConflict:         "conflict",
	KindRateLimited:      "rate-limited",
	KindApprovalPending:  "approval-pending",
}

// String is the kind's stable slug, used in problem types, audit outcomes and
// metrics.
func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("kind-%d", int(k))
}

// Error is every refusal the authority returns.
type Error struct {
	Kind Kind
	// Reason refines Kind with a stable slug where there is one (a policy
	// reason such as "ttl-too-long"); empty otherwise.
	Reason string
	// Detail is one sentence for the person at the other end: what was wrong
	// and what to do. Never secrets or key material.
	Detail string
	// RetryAfter, when positive, is how long the caller should wait before
	// asking again (KindRateLimited).
	RetryAfter time.Duration
	// Pending is the approval request an action was held in
	// (KindApprovalPending).
	Pending *store.Approval
	Err     error
}

func (e *Error) Error() string { return "authority: " + e.Detail }
func (e *Error) Unwrap() error { return e.Err }

// Outcome is the slug recorded in audit events for this refusal.
func (e *Error) Outcome() string {
	if e.Reason != "" {
		return e.Reason
	}
	return e.Kind.String()
}

func newError(k Kind, err error, format string, args ...any) *Error {
	return &Error{Kind: k, Detail: fmt.Sprintf(format, args...), Err: err}
}

// KindOf returns the Kind of err, or KindInternal when err is not an *Error.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}
