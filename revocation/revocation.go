// Package revocation is the subscriber side of mica's revocation push feed:
// a Set of revoked certificate serials and denied identities that a
// Subscriber keeps current over one long-lived mTLS stream (server-sent
// events from GET /v1/revocations/feed), so that a verifier, agent or proxy
// enforces a revocation within a second of its commit instead of at the
// next CRL.
//
// Every change carries the server's sequence number. A Subscriber that
// loses its connection reconnects with the last number it applied and gets
// exactly the changes after it (or, if the server no longer holds them, a
// fresh snapshot), so it never misses one.
//
// A snapshot comes in parts (it asks with snapshot=chunked): a
// snapshot-begin event, snapshot-part events of at most PartEntries entries
// each, and a snapshot-end event that says how many parts and entries were
// sent. The Subscriber builds the new state as the parts arrive and the Set
// switches to it only once the end event confirms it whole; a connection
// cut in the middle leaves the Set as it was. A server that predates parts
// sends the snapshot as one "snapshot" event, which is still understood.
//
// Start with NewSubscriber and Run; ask Set().Revoked(serial) in the TLS
// verification hook.
package revocation

import (
	"slices"
	"sync"
	"time"

	"github.com/mica-pki/mica/identity"
)

// Kinds of Event.
const (
	KindRevoked = "revoked" // a certificate was revoked
	KindDenied  = "denied"  // an identity was put on the deny list
	KindAllowed = "allowed" // an identity was taken off it
)

// Event is one change, as the feed sends it.
type Event struct {
	Seq       int64     `json:"seq"`
	Kind      string    `json:"kind"`
	Serial    string    `json:"serial,omitempty"` // lower-case hex
	Identity  string    `json:"identity,omitempty"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	Reason    int       `json:"reason,omitempty"` // RFC 5280 CRLReason code
	NotAfter  time.Time `json:"not_after,omitzero"`
}

// Snapshot is the whole state at Seq: every revoked, unexpired certificate
// and every denied identity. It is the data of the one-event "snapshot"
// that the feed sends a subscriber that did not ask for parts.
type Snapshot struct {
	Seq     int64    `json:"seq"`
	Revoked []Event  `json:"revoked"`
	Denied  []string `json:"denied"`
}

// Server-sent event names of a snapshot sent in parts.
const (
	EventSnapshotBegin = "snapshot-begin" // data: SnapshotBegin
	EventSnapshotPart  = "snapshot-part"  // data: SnapshotPart
	EventSnapshotEnd   = "snapshot-end"   // data: SnapshotEnd; its id is the snapshot's sequence number
)

// Limits of a snapshot sent in parts. A server puts at most PartEntries
// entries and about PartBytes of JSON in a part; a subscriber refuses any
// line longer than MaxLineBytes, so a part always fits with room to spare
// and a subscriber's memory is bounded by the set it keeps, not by the
// size of a snapshot.
const (
	PartEntries  = 1000
	PartBytes    = 256 << 10
	MaxLineBytes = 1 << 20
)

// The parts' fields name the snapshot's sequence number snapshot_seq, not
// seq: a subscriber that reads every unknown event as a change (as this
// package did before parts) finds no sequence number in them and ignores
// them, instead of taking a part for a change and jumping ahead.

// SnapshotBegin opens a snapshot sent in parts: the state at Seq follows.
type SnapshotBegin struct {
	Seq int64 `json:"snapshot_seq"`
}

// SnapshotPart is one part, numbered from 1: revoked certificates first,
// then denied identities; a part may hold some of each.
type SnapshotPart struct {
	Seq     int64    `json:"snapshot_seq"`
	Part    int      `json:"part"`
	Revoked []Event  `json:"revoked,omitempty"`
	Denied  []string `json:"denied,omitempty"`
}

// SnapshotEnd closes a snapshot sent in parts with what was sent, so the
// subscriber can check it has all of it.
type SnapshotEnd struct {
	Seq     int64 `json:"snapshot_seq"`
	Parts   int   `json:"parts"`
	Revoked int   `json:"revoked"`
	Denied  int   `json:"denied"`
}

// SnapshotInfo describes a snapshot a Set switched to.
type SnapshotInfo struct {
	Seq             int64
	Revoked, Denied int // entries it carried
	// Parts is how many parts it came in; 0 for one "snapshot" event.
	Parts int
}

// Set is a view of the revocations at a sequence number. It is safe for
// concurrent use; the zero value is an empty set at sequence 0.
type Set struct {
	mu      sync.RWMutex
	seq     int64
	revoked map[string]Event
	denied  map[string]bool        // the deny list as the feed wrote it
	names   map[identity.Name]bool // the same, read as typed names
	changed chan struct{}          // closed at the next change; nil until asked for
}

// Changed returns a channel that is closed at the next change of the set:
// a Reset, or an Apply of a new event. Whoever keeps live connections
// honest asks for it, looks at the set, then waits on it.
func (s *Set) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed == nil {
		s.changed = make(chan struct{})
	}
	return s.changed
}

// notifyLocked wakes whoever waits on Changed.
func (s *Set) notifyLocked() {
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
}

// Revoked reports whether the certificate with this serial (lower-case
// hex, as big.Int.Text(16) writes it) is revoked.
func (s *Set) Revoked(serial string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.revoked[serial]
	return ok
}

// Denied reports whether the name written as text is on the deny list.
// The text is read with identity.ParseName, so its kind decides what it is
// compared with; text that is no name is on no list.
func (s *Set) Denied(name string) bool {
	n, err := identity.ParseName(name)
	return err == nil && s.DeniedName(n)
}

// DeniedName reports whether n is on the deny list: a name is compared
// only with denied names of its own kind.
func (s *Set) DeniedName(n identity.Name) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.names[n]
}

// DeniedAny returns the first of the identity's names on the deny list.
func (s *Set) DeniedAny(id identity.Identity) (identity.Name, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if len(s.names) == 0 {
		return identity.Name{}, false
	}
	for _, n := range id.Names() {
		if s.names[n] {
			return n, true
		}
	}
	return identity.Name{}, false
}

// Seq is the sequence number of the last change applied.
func (s *Set) Seq() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.seq
}

// Serials lists the revoked serials, sorted.
func (s *Set) Serials() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.revoked))
	for k := range s.revoked {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Identities lists the denied identities, sorted.
func (s *Set) Identities() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.denied))
	for k := range s.denied {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Reset replaces the whole set with snap.
func (s *Set) Reset(snap Snapshot) {
	st := newState(len(snap.Revoked), len(snap.Denied))
	for _, e := range snap.Revoked {
		st.revoked[e.Serial] = e
	}
	for _, id := range snap.Denied {
		st.deny(id)
	}
	s.install(snap.Seq, st)
}

// state is the content of a Set, built apart while a snapshot arrives.
type state struct {
	revoked map[string]Event
	denied  map[string]bool
	names   map[identity.Name]bool
}

func newState(revoked, denied int) state {
	return state{revoked: make(map[string]Event, revoked), denied: make(map[string]bool, denied), names: make(map[identity.Name]bool, denied)}
}

func (st state) deny(id string) {
	st.denied[id] = true
	if n, err := identity.ParseName(id); err == nil {
		st.names[n] = true
	}
}

// install switches the set to st at seq, in one step under the lock.
func (s *Set) install(seq int64, st state) {
	s.mu.Lock()
	s.seq, s.revoked, s.denied, s.names = seq, st.revoked, st.denied, st.names
	s.notifyLocked()
	s.mu.Unlock()
}

// snapshot copies the set out as a Snapshot.
func (s *Set) snapshot() Snapshot {
	s.mu.RLock()
	defer s.mu.RUnlock()
	snap := Snapshot{Seq: s.seq, Revoked: make([]Event, 0, len(s.revoked)), Denied: make([]string, 0, len(s.denied))}
	for _, e := range s.revoked {
		snap.Revoked = append(snap.Revoked, e)
	}
	for id := range s.denied {
		snap.Denied = append(snap.Denied, id)
	}
	return snap
}

// Apply applies one change and reports whether it was new: an event at or
// below Seq was applied before and is ignored.
func (s *Set) Apply(e Event) bool {
	var n identity.Name
	var nameErr error
	if e.Kind == KindDenied || e.Kind == KindAllowed {
		n, nameErr = identity.ParseName(e.Identity)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.Seq <= s.seq {
		return false
	}
	if s.revoked == nil {
		s.revoked, s.denied, s.names = map[string]Event{}, map[string]bool{}, map[identity.Name]bool{}
	}
	s.seq = e.Seq
	switch e.Kind {
	case KindRevoked:
		s.revoked[e.Serial] = e
	case KindDenied:
		s.denied[e.Identity] = true
		if nameErr == nil {
			s.names[n] = true
		}
	case KindAllowed:
		delete(s.denied, e.Identity)
		if nameErr == nil {
			delete(s.names, n)
		}
	}
	s.notifyLocked()
	return true
}

// Prune forgets revoked certificates that expired before now: an expired
// certificate is refused anyway, and the server's snapshot drops them too.
func (s *Set) Prune(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, e := range s.revoked {
		if !e.NotAfter.IsZero() && e.NotAfter.Before(now) {
			delete(s.revoked, k)
		}
	}
}
