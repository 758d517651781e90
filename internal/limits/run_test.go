package limits_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mica-pki/mica/internal/limits"
	"github.com/mica-pki/mica/internal/ratelimit"
	"github.com/mica-pki/mica/internal/store"
)

// sweptBackend stands in for the shared buckets (pgbuckets, whose own
// tests run on PostgreSQL): it grants every claim and notes when Run asks
// it to sweep.
type sweptBackend struct {
	mu    sync.Mutex
	swept []time.Time
}

func (b *sweptBackend) TakeAll(context.Context, time.Time, []ratelimit.SharedClaim) (int, time.Duration, error) {
	return -1, 0, nil
}

func (b *sweptBackend) Sweep(_ context.Context, now time.Time) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.swept = append(b.swept, now)
	return 0, nil
}

// TestRunEachMinute: Run records the minute's summaries and sweeps the
// shared buckets once a minute, and records the last summaries when it
// stops; on the synctest clock, so the minutes cost nothing.
func TestRunEachMinute(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rules, err := limits.Compile(limits.Limits{}, limits.Anomalies{}, []string{"service"})
		if err != nil {
			t.Fatal(err)
		}
		evs, shared := &events{}, &sweptBackend{}
		g, err := limits.New(limits.Config{Rules: rules, Recorder: evs, Shared: shared})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- g.Run(ctx) }()
		start := time.Now()
		storms := func() []store.Event {
			synctest.Wait()
			return evs.with(store.ActionAnomalyRenewalStorm)
		}
		id := "spiffe://example.org/stormy"
		for range 6 { // the fifth renewal in a lifetime is a storm, the sixth held back
			if err := g.Admit(ctx, renewal(id, time.Hour)); err != nil {
				t.Fatal(err)
			}
		}
		if got := storms(); len(got) != 1 {
			t.Fatalf("%d storm events at once, want 1", len(got))
		}
		time.Sleep(time.Minute)
		if got := storms(); len(got) != 2 || !strings.HasPrefix(got[1].Detail, "1 more since") || got[1].Time.Sub(start) != time.Minute {
			t.Fatalf("after a minute: %+v, want the summary of the held-back one, at 1m", got)
		}
		g.Admit(ctx, renewal(id, time.Hour)) // a storm again in the new minute: recorded at once
		g.Admit(ctx, renewal(id, time.Hour)) // held back
		time.Sleep(time.Minute)
		if got := storms(); len(got) != 4 {
			t.Fatalf("%d storm events after two minutes, want 4", len(got))
		}
		g.Admit(ctx, renewal(id, time.Hour))
		g.Admit(ctx, renewal(id, time.Hour)) // held back until Run stops
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if got := storms(); len(got) != 6 || !strings.HasPrefix(got[5].Detail, "1 more since") {
			t.Errorf("%d storm events after Run stopped, want 6, the last a summary", len(got))
		}
		shared.mu.Lock()
		defer shared.mu.Unlock()
		if want := []time.Time{start.Add(time.Minute), start.Add(2 * time.Minute)}; !slices.EqualFunc(shared.swept, want, time.Time.Equal) {
			t.Errorf("shared buckets swept at %v, want at %v", shared.swept, want)
		}
	})
}
