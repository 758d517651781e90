package store

import (
	"context"
	"time"
)

// CA rotation is a state machine kept in the database, so that every server
// sharing it agrees on which CA signs: each CA certificate (a root or an
// intermediate) is a slot that moves prepared → active → retired → removed,
// and each move is compare-and-swap with its audit event in the same
// transaction.

// SlotKind is what a slot holds.
type SlotKind string

const (
	SlotRoot         SlotKind = "root"
	SlotIntermediate SlotKind = "intermediate"
)

// SlotState is where a slot stands.
type SlotState string

const (
	// SlotPrepared: made and published in the trust bundle; signs nothing
	// yet (a prepared root only its cross-certificates).
	SlotPrepared SlotState = "prepared"
	// SlotActive signs: the one intermediate that signs leaves, the one
	// root that signs intermediates.
	SlotActive SlotState = "active"
	// SlotRetired signs no new certificate but stays in bundles and keeps
	// its CRL and OCSP while certificates it signed are unexpired.
	SlotRetired SlotState = "retired"
	// SlotRemoved is out of every bundle.
	SlotRemoved SlotState = "removed"
)

// CASlot is one CA certificate and where its key is.
type CASlot struct {
	// ID is the slot's generation, assigned by the store in order of
	// creation across both kinds: root 1, intermediate 2, …
	ID    int64
	Kind  SlotKind
	State SlotState
	// Cert is the CA certificate (DER); Fingerprint its hex SHA-256, which
	// certificates it signs name as their issuer.
	Cert        []byte
	Fingerprint string
	// Parent is the root slot that signed an intermediate; 0 for a root.
	Parent int64
	// KeyURI or KeySealed say where the key is (package custody's Ref);
	// both empty for a key kept offline (a root on its own machine).
	KeyURI    string
	KeySealed []byte
	// For a root that rolled over from the previous one: CrossFromPrevious
	// is this root's key certified by the previous root (for verifiers that
	// trust only the old one), CrossToPrevious the previous root certified
	// by this root's key (for verifiers that trust only the new one).
	CrossFromPrevious []byte
	CrossToPrevious   []byte
	NotBefore         time.Time
	NotAfter          time.Time
	PreparedAt        time.Time
	ActivatedAt       time.Time // zero until active
	RetiredAt         time.Time // zero until retired
	RemovedAt         time.Time // zero until removed
}

// SlotMove is one compare-and-swap state change of a slot.
type SlotMove struct {
	ID       int64
	From, To SlotState
}

// CASlots keeps the CA slots. ErrConflict when a change lost a race (a
// slot of that kind is already prepared, a slot was no longer in the state
// a move expects); nothing of it is then written.
type CASlots interface {
	// CASlots lists every slot, oldest first.
	CASlots(ctx context.Context) ([]CASlot, error)
	// AddCASlots inserts slots (their IDs assigned in order) with ev, in one
	// transaction. At most one slot of each kind may be prepared and one
	// active at any time, so two servers preparing the next intermediate
	// at once get one slot, and the other ErrConflict.
	AddCASlots(ctx context.Context, slots []*CASlot, ev *Event) error
	// MoveCASlots applies moves, all or none, at at, with ev.
	MoveCASlots(ctx context.Context, moves []SlotMove, at time.Time, ev *Event) error
	// IssuedUntil is the latest NotAfter of the certificates issuer (a
	// fingerprint) signed, leaving out those of profile except; zero when
	// there are none.
	IssuedUntil(ctx context.Context, issuer, except string) (time.Time, error)
}

// The audit actions of CA rotation.
const (
	ActionCASlotPrepared  Action = "ca.prepared"
	ActionCASlotActivated Action = "ca.activated"
	ActionCASlotRemoved   Action = "ca.removed"
	// ActionCASlotImported records the slots a CA started from (its root
	// and first intermediate), the first time a server runs it.
	ActionCASlotImported Action = "ca.imported"
)
