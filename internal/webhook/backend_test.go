package webhook

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// backend is the event log and the delivery state the tests deliver
// from, kept in memory.
type backend struct {
	mu     sync.Mutex
	events []store.Event
	certs  map[string]store.Certificate
	states map[string]*store.WebhookState
	dead   map[string][]store.DeadLetter
	leases map[string]struct {
		owner string
		until time.Time
	}
}

func newBackend(*testing.T) *backend {
	return &backend{certs: map[string]store.Certificate{}, states: map[string]*store.WebhookState{}, dead: map[string][]store.DeadLetter{},
		leases: map[string]struct {
			owner string
			until time.Time
		}{}}
}

func (b *backend) nextSeq() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return int64(len(b.events)) + 1
}

func (b *backend) append(ev store.Event) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	ev.Seq, ev.LeafIndex = int64(len(b.events))+1, int64(len(b.events))
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	b.events = append(b.events, ev)
	return ev.Seq
}

func (b *backend) initialised(names ...string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, n := range names {
		if b.states[n] == nil {
			return false
		}
	}
	return true
}

func (b *backend) state(name string) store.WebhookState {
	b.mu.Lock()
	defer b.mu.Unlock()
	return *b.states[name]
}

func (b *backend) deadLetters(name string) []store.DeadLetter {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]store.DeadLetter(nil), b.dead[name]...)
}

func (b *backend) releaseLeases() {
	b.mu.Lock()
	defer b.mu.Unlock()
	clear(b.leases)
}

func (b *backend) Events(_ context.Context, f store.EventFilter) ([]store.Event, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []store.Event
	for _, ev := range b.events {
		if ev.Seq > f.AfterSeq && len(out) < f.Limit {
			out = append(out, ev)
		}
	}
	return out, nil
}

func (b *backend) LastEventSeq(context.Context) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return int64(len(b.events)), nil
}

func (b *backend) Certificate(_ context.Context, serial string) (store.Certificate, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c, ok := b.certs[serial]; ok {
		return c, nil
	}
	return store.Certificate{}, store.ErrNotFound
}

func (b *backend) InitWebhook(_ context.Context, name string, cursor int64) (store.WebhookState, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.states[name] == nil {
		b.states[name] = &store.WebhookState{Endpoint: name, Cursor: cursor}
	}
	return *b.states[name], nil
}

func (b *backend) WebhookStates(context.Context) ([]store.WebhookState, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []store.WebhookState
	for _, s := range b.states {
		out = append(out, *s)
	}
	return out, nil
}

func (b *backend) AdvanceWebhook(_ context.Context, name string, from, to int64, success time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.states[name]
	if s == nil || s.Cursor != from {
		return store.ErrConflict
	}
	s.Cursor = to
	if !success.IsZero() {
		s.LastSuccess, s.Failures = success, 0
	}
	return nil
}

func (b *backend) NoteWebhookFailure(_ context.Context, name string, at time.Time, errText string, failures int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.states[name]
	s.LastAttempt, s.LastError, s.Failures = at, errText, failures
	return nil
}

func (b *backend) AddDeadLetter(_ context.Context, d store.DeadLetter) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dead[d.Endpoint] = append(b.dead[d.Endpoint], d)
	return nil
}

func (b *backend) DeadLetters(_ context.Context, name string, _ int) ([]store.DeadLetter, error) {
	return b.deadLetters(name), nil
}

func (b *backend) TakeLease(_ context.Context, name, owner string, now time.Time, ttl time.Duration) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	l, ok := b.leases[name]
	if ok && l.owner != owner && now.Before(l.until) {
		return false, nil
	}
	l.owner, l.until = owner, now.Add(ttl)
	b.leases[name] = l
	return true, nil
}
