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
// and every denied identity.
type Snapshot struct {
	Seq     int64    `json:"seq"`
	Revoked []Event  `json:"revoked"`
	Denied  []string `json:"denied"`
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
	revoked := make(map[string]Event, len(snap.Revoked))
	for _, e := range snap.Revoked {
		revoked[e.Serial] = e
	}
	denied := make(map[string]bool, len(snap.Denied))
	names := make(map[identity.Name]bool, len(snap.Denied))
	for _, id := range snap.Denied {
		denied[id] = true
		if n, err := identity.ParseName(id); err == nil {
			names[n] = true
		}
	}
	s.mu.Lock()
	s.seq, s.revoked, s.denied, s.names = snap.Seq, revoked, denied, names
	s.notifyLocked()
	s.mu.Unlock()
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
