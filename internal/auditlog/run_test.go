package auditlog

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/sqlite"
)

// run starts fn(ctx) in the bubble; stop ends it and returns its error.
func run(t *testing.T, fn func(context.Context) error) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	stopped := false
	var err error
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			err = <-done
		}
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

// TestRunSignsEveryInterval: Run signs a checkpoint at once, then at each
// interval if the log grew, and none while it does not; the clock is the
// synctest bubble's.
func TestRunSignsEveryInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "mica.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		record := func(n int) {
			t.Helper()
			for i := range n {
				ev := store.Event{Time: time.Now(), Actor: "system", Action: store.ActionTokenCreated, Identity: fmt.Sprintf("spiffe://example.test/%d", i), Outcome: "ok"}
				if err := st.RecordEvent(ctx, &ev); err != nil {
					t.Fatal(err)
				}
			}
		}
		l, err := New(Config{Store: st, Signer: newSigner(t), Interval: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		record(5)
		run(t, l.Run)
		status := func() (size int64, at time.Duration) {
			synctest.Wait()
			s := l.Status()
			return s.CheckpointSize, s.CheckpointTime.Sub(start)
		}
		if size, at := status(); size != 5 || at != 0 {
			t.Fatalf("when Run starts: checkpoint of %d leaves at %v, want 5 at once", size, at)
		}
		time.Sleep(time.Second / 2)
		record(3)
		if size, _ := status(); size != 5 {
			t.Fatalf("between rounds: checkpoint of %d leaves, want still 5", size)
		}
		time.Sleep(time.Second + time.Second/2)
		if size, at := status(); size != 8 || at != 2*time.Second {
			t.Fatalf("at the next round: checkpoint of %d leaves at %v, want 8 at 2s", size, at)
		}
		time.Sleep(10 * time.Second)
		if size, at := status(); size != 8 || at != 2*time.Second {
			t.Errorf("with no new leaves: checkpoint of %d leaves at %v, want the one of 8 at 2s", size, at)
		}
		cps, err := st.Checkpoints(ctx, 0, 100)
		if err != nil || len(cps) != 2 {
			t.Errorf("%d checkpoints stored (%v), want 2", len(cps), err)
		}
	})
}

// TestThrottleRunFlushesEachMinute: the summary of a minute's held-back
// events is recorded when the minute ends, and the last one when Run
// stops.
func TestThrottleRunFlushesEachMinute(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{}
		th := NewThrottle(rec, nil, nil)
		stop := run(t, th.Run)
		start := time.Now()
		a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
		events := func() []store.Event {
			synctest.Wait()
			rec.mu.Lock()
			defer rec.mu.Unlock()
			return append([]store.Event(nil), rec.evs...)
		}
		for range 3 {
			th.AuthFailed(a, "token-invalid")
		}
		time.Sleep(59 * time.Second)
		if evs := events(); len(evs) != 1 {
			t.Fatalf("within the minute: %d events, want only the first failure", len(evs))
		}
		time.Sleep(time.Second)
		evs := events()
		if len(evs) != 2 || !strings.HasPrefix(evs[1].Detail, "2 more since") || evs[1].Time.Sub(start) != time.Minute {
			t.Fatalf("at the minute: %+v, want the summary of 2 more, recorded at 1m", evs)
		}
		th.AuthFailed(b, "certificate-expired")
		th.AuthFailed(b, "certificate-expired")
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if evs := events(); len(evs) != 4 || evs[3].Source != "192.0.2.2" || !strings.HasPrefix(evs[3].Detail, "1 more since") {
			t.Errorf("after Run stopped: %+v, want the first failure from 192.0.2.2 and the summary of the other", evs[2:])
		}
	})
}
