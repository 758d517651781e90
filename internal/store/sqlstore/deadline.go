package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// Every method of Store runs under a deadline of its own (Config.Timeout),
// so that a database that stopped answering (PostgreSQL frozen or
// unreachable, a stalled disk, a write lock held by another process)
// fails the call with an error that says so, instead of hanging its
// caller for as long as the database does. A caller's own, earlier
// deadline or cancellation is reported as it is.

// errDeadline is the cause of a call's own deadline, which tells it from
// the caller's.
var errDeadline = errors.New("sqlstore: the call's own deadline passed")

// call bounds one call of the store by its timeout. Defer end with the
// call's error: it releases the deadline and, when that deadline ended the
// call, replaces the error with a TimeoutError naming what.
//
// A write shares its transaction with others (group commit), whose
// deadline may pass a moment before its own: a deadline error while the
// caller's context is still live is the store's timeout too.
func (s *Store) call(parent context.Context, what string, write bool) (_ context.Context, end func(*error)) {
	ctx, cancel := context.WithTimeoutCause(parent, s.timeout, errDeadline)
	return ctx, func(err *error) {
		ours := context.Cause(ctx) == errDeadline ||
			errors.Is(*err, context.DeadlineExceeded) && parent.Err() == nil
		if *err != nil && ours && !isOutcome(*err) {
			*err = &TimeoutError{Engine: s.d.Name, What: what, After: s.timeout, Write: write, hint: s.d.Unanswered}
		}
		cancel()
	}
}

// stream is call for a read that streams rows: the deadline is for the
// database to answer the next row, and starts again with each row (call
// next), so that a long listing that keeps moving is not cut, while one
// that stalls is.
func (s *Store) stream(ctx context.Context, what string) (_ context.Context, next func(), end func(*error)) {
	ctx, cancel := context.WithCancelCause(ctx)
	timer := time.AfterFunc(s.timeout, func() { cancel(errDeadline) })
	return ctx, func() { timer.Reset(s.timeout) }, func(err *error) {
		timer.Stop()
		if *err != nil && context.Cause(ctx) == errDeadline {
			*err = &TimeoutError{Engine: s.d.Name, What: what, After: s.timeout, hint: s.d.Unanswered}
		}
		cancel(nil)
	}
}

// isOutcome reports whether err is an answer the database gave, which
// stands even if the deadline passed while it was handed back.
func isOutcome(err error) bool {
	for _, o := range []error{store.ErrNotFound, store.ErrTokenUsed, store.ErrAlreadyRevoked, store.ErrAlreadyDenied, store.ErrConflict} {
		if errors.Is(err, o) {
			return true
		}
	}
	return false
}

// TimeoutError is the error of a call the database did not answer within
// the store's timeout. It matches store.ErrTimeout and
// context.DeadlineExceeded.
type TimeoutError struct {
	Engine string        // "sqlite", "postgres"
	What   string        // what the call was doing
	After  time.Duration // the store's timeout
	// Write is set for a write: it may still commit.
	Write bool
	hint  string
}

func (e *TimeoutError) Error() string {
	msg := fmt.Sprintf("%s: %s: the database did not answer within %s: %s", e.Engine, e.What, e.After, e.hint)
	if e.Write {
		msg += "; the write may still commit: read it back before retrying"
	}
	return msg
}

// Unwrap makes errors.Is match store.ErrTimeout and
// context.DeadlineExceeded.
func (e *TimeoutError) Unwrap() []error { return []error{store.ErrTimeout, context.DeadlineExceeded} }
