package authority

import (
	"context"
	"errors"
	"math"
	"net/netip"

	"github.com/mica-pki/mica/internal/store"
)

// AuditLog is what the authority needs from the audit log (package
// auditlog): its key, its checkpoints and its proofs.
type AuditLog interface {
	VerifierKey() string
	// Latest returns the latest checkpoint, signing a new one first if
	// none covers leaf index covering.
	Latest(ctx context.Context, covering int64) (store.Checkpoint, error)
	InclusionProof(ctx context.Context, index, size int64) ([][]byte, error)
	ConsistencyProof(ctx context.Context, size1, size2 int64) ([][]byte, error)
}

// AuthFailedFunc is told of one failed authentication from source, with
// the refusal's stable slug as reason. It must not block.
type AuthFailedFunc func(source netip.Addr, reason string)

func (a *Authority) failedAuth(source netip.Addr, reason string) {
	if a.authFailed != nil {
		a.authFailed(source, reason)
	}
}

func (a *Authority) auditLog() (AuditLog, error) {
	if a.audit == nil {
		return nil, newError(KindInternal, nil, "this server has no audit log configured")
	}
	return a.audit, nil
}

// AuditKey is the log's public key in note verifier-key form. It is public:
// a checkpoint is worth keeping only if anyone can check its signature.
func (a *Authority) AuditKey() (string, error) {
	l, err := a.auditLog()
	if err != nil {
		return "", err
	}
	return l.VerifierKey(), nil
}

// AuditCheckpoint is the latest signed checkpoint, for a witness to keep.
func (a *Authority) AuditCheckpoint(ctx context.Context, p Principal) (store.Checkpoint, error) {
	if err := a.Authorize(p, ActAuditRead, Resource{}); err != nil {
		return store.Checkpoint{}, err
	}
	l, err := a.auditLog()
	if err != nil {
		return store.Checkpoint{}, err
	}
	// Covering every possible index makes the log sign first if it grew,
	// so a witness always gets a checkpoint over everything committed.
	c, err := l.Latest(ctx, math.MaxInt64-1)
	if err != nil {
		return c, newError(KindInternal, err, "could not read the latest checkpoint: %v", err)
	}
	return c, nil
}

// AuditCheckpoints lists stored checkpoints larger than afterSize.
func (a *Authority) AuditCheckpoints(ctx context.Context, p Principal, afterSize int64, limit int) ([]store.Checkpoint, error) {
	if err := a.Authorize(p, ActAuditRead, Resource{}); err != nil {
		return nil, err
	}
	cs, err := a.store.Checkpoints(ctx, afterSize, limit)
	if err != nil {
		return nil, newError(KindInternal, err, "could not read checkpoints: %v", err)
	}
	return cs, nil
}

// AuditLeaves reads the log's leaves (events in leaf order) from start.
func (a *Authority) AuditLeaves(ctx context.Context, p Principal, start int64, limit int) ([]store.Event, error) {
	if err := a.Authorize(p, ActAuditRead, Resource{}); err != nil {
		return nil, err
	}
	if start < 0 {
		return nil, newError(KindInvalid, nil, "leaf index %d is negative", start)
	}
	evs, err := a.store.Leaves(ctx, start, limit)
	if err != nil {
		return nil, newError(KindInternal, err, "could not read the audit log: %v", err)
	}
	return evs, nil
}

// AuditEvents searches the events.
func (a *Authority) AuditEvents(ctx context.Context, p Principal, f store.EventFilter) ([]store.Event, error) {
	if err := a.Authorize(p, ActAuditRead, Resource{}); err != nil {
		return nil, err
	}
	evs, err := a.store.Events(ctx, f)
	if err != nil {
		return nil, newError(KindInvalid, err, "could not search the audit log: %v", err)
	}
	return evs, nil
}

// AuditConsistency proves that the tree of size1 is a prefix of size2's.
func (a *Authority) AuditConsistency(ctx context.Context, p Principal, size1, size2 int64) ([][]byte, error) {
	if err := a.Authorize(p, ActAuditRead, Resource{}); err != nil {
		return nil, err
	}
	l, err := a.auditLog()
	if err != nil {
		return nil, err
	}
	if size1 < 0 || size1 > size2 {
		return nil, newError(KindInvalid, nil, "no consistency proof from size %d to %d: the first must not exceed the second", size1, size2)
	}
	hashes, err := l.ConsistencyProof(ctx, size1, size2)
	if err != nil {
		return nil, newError(KindInvalid, err, "%v", err)
	}
	return hashes, nil
}

// InclusionProof is a certificate's issuance event, its leaf index, and the
// proof that the leaf is in the tree of Checkpoint.
type InclusionProof struct {
	Event      store.Event
	Checkpoint store.Checkpoint
	Hashes     [][]byte
}

// AuditProof proves that the event recorded with certificate serial is in
// the log. Auditors may ask for any certificate; a holder for its own.
func (a *Authority) AuditProof(ctx context.Context, p Principal, serial string) (InclusionProof, error) {
	serial, err := ParseSerial(serial)
	if err != nil {
		return InclusionProof{}, err
	}
	if err := a.Authorize(p, ActAuditProof, Resource{Serial: serial}); err != nil {
		return InclusionProof{}, err
	}
	l, err := a.auditLog()
	if err != nil {
		return InclusionProof{}, err
	}
	rec, err := a.store.Certificate(ctx, serial)
	if errors.Is(err, store.ErrNotFound) {
		return InclusionProof{}, newError(KindNotFound, err, "no certificate with serial %s", serial)
	}
	if err != nil {
		return InclusionProof{}, newError(KindInternal, err, "could not read the inventory: %v", err)
	}
	ev, err := a.store.EventBySeq(ctx, rec.EventSeq)
	if err != nil {
		return InclusionProof{}, newError(KindInternal, err, "could not read the issuance event: %v", err)
	}
	if ev.LeafIndex < 0 {
		return InclusionProof{}, newError(KindConflict, nil, "the issuance event of %s is not in the audit log yet", serial)
	}
	c, err := l.Latest(ctx, ev.LeafIndex)
	if err != nil {
		return InclusionProof{}, newError(KindInternal, err, "could not read the latest checkpoint: %v", err)
	}
	hashes, err := l.InclusionProof(ctx, ev.LeafIndex, c.Size)
	if err != nil {
		return InclusionProof{}, newError(KindInternal, err, "could not build the inclusion proof: %v", err)
	}
	return InclusionProof{Event: ev, Checkpoint: c, Hashes: hashes}, nil
}
