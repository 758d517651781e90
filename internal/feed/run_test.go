package feed

import (
	"context"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/sqlite"
	"github.com/mica-pki/mica/internal/store/storetest"
	"github.com/mica-pki/mica/revocation"
)

// TestRunPollsAsSafetyNet: a revocation committed where the Hub hears
// nothing of it (another server, no LISTEN/NOTIFY) is applied at the next
// poll, and one the Hub is told of by Changed at once; a snapshot drops
// revocations of expired certificates. The bubble's clock
// stands still unless the test sleeps, so "at once" means exactly that.
func TestRunPollsAsSafetyNet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "mica.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		var serials []string
		for i := range 2 {
			iss := storetest.NewIssuance(i)
			iss.Certificate.NotAfter = time.Now().Add(time.Hour)
			if err := st.RecordIssuance(ctx, iss); err != nil {
				t.Fatal(err)
			}
			serials = append(serials, iss.Certificate.Serial)
		}
		start := time.Now()
		var (
			mu      sync.Mutex
			applied []time.Duration // since start, by the bubble's clock
		)
		hub, err := New(Config{Source: st, Poll: 5 * time.Second, OnEvent: func(revocation.Event) {
			mu.Lock()
			defer mu.Unlock()
			applied = append(applied, time.Since(start))
		}})
		if err != nil {
			t.Fatal(err)
		}
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); hub.Run(runCtx) }()
		t.Cleanup(func() { cancel(); <-done })
		synctest.Wait()
		revoke := func(serial string) {
			t.Helper()
			now := time.Now()
			if err := st.Revoke(ctx, serial, 1, now, &store.Event{Time: now, Action: store.ActionCertRevoked, Serial: serial}); err != nil {
				t.Fatal(err)
			}
		}
		got := func() []time.Duration {
			synctest.Wait()
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(applied)
		}

		time.Sleep(time.Second)
		revoke(serials[0]) // nobody tells the Hub
		if a := got(); len(a) != 0 {
			t.Fatalf("applied at %v, before any poll", a)
		}
		time.Sleep(4 * time.Second)
		if a := got(); !slices.Equal(a, []time.Duration{5 * time.Second}) {
			t.Fatalf("applied at %v, want at the first poll (5s)", a)
		}
		revoke(serials[1])
		hub.Changed()
		if a := got(); !slices.Equal(a, []time.Duration{5 * time.Second, 5 * time.Second}) {
			t.Fatalf("applied at %v, want the second at once on Changed", a)
		}
		if snap := hub.Snapshot(); len(snap.Revoked) != 2 {
			t.Errorf("snapshot holds %d revocations, want 2", len(snap.Revoked))
		}
		// Once the certificates have expired, a snapshot no longer
		// carries their revocations.
		time.Sleep(time.Hour)
		if snap := hub.Snapshot(); len(snap.Revoked) != 0 {
			t.Errorf("an hour later, past the certificates' end, the snapshot holds %d revocations", len(snap.Revoked))
		}
	})
}
