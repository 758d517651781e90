package sqlstore

import (
	"context"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// The writes below validate and encode in the caller's goroutine, queue
// the operation for the engine's committer and hand back what the
// committed batch assigned. If ctx ends while a write is queued or
// committing, they return ctx.Err(), or a TimeoutError when the store's
// own timeout ended the wait; either way the write may still commit: read
// it back before retrying.

// RecordIssuance implements store.Store.
func (s *Store) RecordIssuance(ctx context.Context, iss *store.Issuance) (err error) {
	ctx, end := s.call(ctx, "record issuance", true)
	defer end(&err)
	op, err := issuanceOp(iss)
	if err != nil {
		return s.errorf("record issuance: %w", err)
	}
	op, err = s.committer.Do(ctx, op)
	if err != nil {
		return err
	}
	iss.Event.Seq, iss.Certificate.EventSeq = op.Seq, op.Seq
	iss.Event.LeafIndex, iss.Event.LeafHash = op.LeafIndex, op.Event.LeafHash
	iss.Certificate.Status = store.StatusActive
	return nil
}

// RecordEvent implements store.Store.
func (s *Store) RecordEvent(ctx context.Context, ev *store.Event) (err error) {
	ctx, end := s.call(ctx, "record event", true)
	defer end(&err)
	op, err := eventOp(ev)
	if err != nil {
		return s.errorf("record event: %w", err)
	}
	return s.do(ctx, op, ev)
}

// Revoke implements store.Store.
func (s *Store) Revoke(ctx context.Context, serial string, reason int, at time.Time, ev *store.Event) (err error) {
	ctx, end := s.call(ctx, "revoke certificate "+serial, true)
	defer end(&err)
	op, err := revokeOp(serial, reason, at, ev)
	if err != nil {
		return s.errorf("revoke: %w", err)
	}
	return s.do(ctx, op, ev)
}

// RevokeIdentity implements store.Store.
func (s *Store) RevokeIdentity(ctx context.Context, identity string, reason int, at time.Time, ev store.Event) (_ []store.Event, err error) {
	ctx, end := s.call(ctx, "revoke identity "+identity, true)
	defer end(&err)
	op, err := revokeIdentityOp(identity, reason, at, &ev)
	if err != nil {
		return nil, s.errorf("revoke identity: %w", err)
	}
	op, err = s.committer.Do(ctx, op)
	if err != nil {
		return nil, err
	}
	return revokedEvents(ev, op.Revoked), nil
}

// Deny implements store.Store.
func (s *Store) Deny(ctx context.Context, identity string, ev *store.Event) (err error) {
	ctx, end := s.call(ctx, "deny "+identity, true)
	defer end(&err)
	return s.denyOrAllow(ctx, identity, false, ev)
}

// Allow implements store.Store.
func (s *Store) Allow(ctx context.Context, identity string, ev *store.Event) (err error) {
	ctx, end := s.call(ctx, "allow "+identity, true)
	defer end(&err)
	return s.denyOrAllow(ctx, identity, true, ev)
}

func (s *Store) denyOrAllow(ctx context.Context, identity string, allow bool, ev *store.Event) error {
	op, err := denyOp(identity, allow, ev)
	if err != nil {
		return s.errorf("%w", err)
	}
	return s.do(ctx, op, ev)
}

// do commits op, whose one event is ev, and fills in ev's sequence number
// and audit leaf.
func (s *Store) do(ctx context.Context, op Op, ev *store.Event) error {
	op, err := s.committer.Do(ctx, op)
	if err != nil {
		return err
	}
	ev.Seq, ev.LeafIndex, ev.LeafHash = op.Seq, op.LeafIndex, op.Event.LeafHash
	return nil
}
