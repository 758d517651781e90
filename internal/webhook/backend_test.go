package webhook

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/sqlite"
	"github.com/mica-pki/mica/internal/store/storetest"
)

// backend is the event log and the delivery state the tests deliver
// from: a real SQLite store in the test's directory. Every delivery-state
// write the dispatcher makes is signalled (changed), so tests wait on it
// rather than poll. A worker writes its state on every step, so a counter
// it moves is followed by a signal.
type backend struct {
	*sqlite.Store
	t *testing.T

	mu   sync.Mutex
	wake chan struct{} // closed and replaced on every write
}

func newBackend(t *testing.T) *backend {
	t.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "mica.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &backend{Store: s, t: t, wake: make(chan struct{})}
}

// changed is closed at the next delivery-state write.
func (b *backend) changed() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.wake
}

func (b *backend) notify() {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.wake)
	b.wake = make(chan struct{})
}

func (b *backend) InitWebhook(ctx context.Context, endpoint string, cursor int64) (store.WebhookState, error) {
	defer b.notify()
	return b.Store.InitWebhook(ctx, endpoint, cursor)
}

func (b *backend) AdvanceWebhook(ctx context.Context, endpoint string, from, to int64, success time.Time) error {
	defer b.notify()
	return b.Store.AdvanceWebhook(ctx, endpoint, from, to, success)
}

func (b *backend) NoteWebhookFailure(ctx context.Context, endpoint string, at time.Time, errText string, failures int) error {
	defer b.notify()
	return b.Store.NoteWebhookFailure(ctx, endpoint, at, errText, failures)
}

func (b *backend) AddDeadLetter(ctx context.Context, d store.DeadLetter) error {
	defer b.notify()
	return b.Store.AddDeadLetter(ctx, d)
}

// append records ev (at the current time unless set) and returns its
// sequence number.
func (b *backend) append(ev store.Event) int64 {
	b.t.Helper()
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	if ev.Outcome == "" {
		ev.Outcome = "ok"
	}
	if err := b.RecordEvent(context.Background(), &ev); err != nil {
		b.t.Fatal(err)
	}
	return ev.Seq
}

// nextSeq is the sequence number the next event will get (SQLite's
// AUTOINCREMENT leaves no gaps without a rollback).
func (b *backend) nextSeq() int64 {
	b.t.Helper()
	last, err := b.LastEventSeq(context.Background())
	if err != nil {
		b.t.Fatal(err)
	}
	return last + 1
}

// issued records a certificate with serial, so that events naming it
// carry its record.
func (b *backend) issued(serial, owner string) {
	b.t.Helper()
	iss := storetest.NewIssuance(1)
	iss.Certificate.Serial, iss.Certificate.Owner, iss.Event.Serial = serial, owner, serial
	if err := b.RecordIssuance(context.Background(), iss); err != nil {
		b.t.Fatal(err)
	}
}

func (b *backend) initialised(names ...string) bool {
	states, err := b.WebhookStates(context.Background())
	if err != nil {
		b.t.Fatal(err)
	}
	have := map[string]bool{}
	for _, s := range states {
		have[s.Endpoint] = true
	}
	for _, n := range names {
		if !have[n] {
			return false
		}
	}
	return true
}

func (b *backend) state(name string) store.WebhookState {
	b.t.Helper()
	states, err := b.WebhookStates(context.Background())
	if err != nil {
		b.t.Fatal(err)
	}
	for _, s := range states {
		if s.Endpoint == name {
			return s
		}
	}
	b.t.Fatalf("no state for %s", name)
	return store.WebhookState{}
}

func (b *backend) deadLetters(name string) []store.DeadLetter {
	b.t.Helper()
	dl, err := b.DeadLetters(context.Background(), name, 0)
	if err != nil {
		b.t.Fatal(err)
	}
	return dl
}
