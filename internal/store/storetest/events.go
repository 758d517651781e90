package storetest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mica-pki/mica/internal/store"
)

func testEvents(t *testing.T, open Opener) {
	s := openStore(t, open)
	ctx := context.Background()
	var recorded []store.Event
	actions := []store.Action{store.ActionTokenCreated, store.ActionPolicyLoaded, store.ActionIssuanceRefused}
	for i := range 30 {
		ev := newEvent(actions[i%3], fmt.Sprintf("spiffe://example.test/e/%d", i%4))
		ev.Detail = fmt.Sprintf("event %d", i)
		if err := s.RecordEvent(ctx, ev); err != nil {
			t.Fatalf("RecordEvent: %v", err)
		}
		if len(recorded) > 0 && ev.Seq <= recorded[len(recorded)-1].Seq {
			t.Fatalf("RecordEvent assigned Seq %d after %d", ev.Seq, recorded[len(recorded)-1].Seq)
		}
		recorded = append(recorded, *ev)
	}
	tests := []struct {
		name string
		f    store.EventFilter
		keep func(store.Event) bool
		max  int
	}{
		{"All", store.EventFilter{}, func(store.Event) bool { return true }, 0},
		{"AfterSeq", store.EventFilter{AfterSeq: recorded[9].Seq}, func(e store.Event) bool { return e.Seq > recorded[9].Seq }, 0},
		{"AfterLast", store.EventFilter{AfterSeq: recorded[29].Seq}, func(store.Event) bool { return false }, 0},
		{"Action", store.EventFilter{Action: store.ActionPolicyLoaded}, func(e store.Event) bool { return e.Action == store.ActionPolicyLoaded }, 0},
		{"Identity", store.EventFilter{Identity: "spiffe://example.test/e/2"}, func(e store.Event) bool { return e.Identity == "spiffe://example.test/e/2" }, 0},
		{"Combined", store.EventFilter{AfterSeq: recorded[4].Seq, Action: store.ActionTokenCreated, Identity: "spiffe://example.test/e/1"},
			func(e store.Event) bool {
				return e.Seq > recorded[4].Seq && e.Action == store.ActionTokenCreated && e.Identity == "spiffe://example.test/e/1"
			}, 0},
		{"Limit", store.EventFilter{Limit: 4}, func(store.Event) bool { return true }, 4},
		{"AfterSeqLimit", store.EventFilter{AfterSeq: recorded[20].Seq, Limit: 3}, func(e store.Event) bool { return e.Seq > recorded[20].Seq }, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var want []store.Event
			for _, e := range recorded {
				if tc.keep(e) && (tc.max == 0 || len(want) < tc.max) {
					want = append(want, e)
				}
			}
			got, err := s.Events(ctx, tc.f)
			if err != nil {
				t.Fatalf("Events: %v", err)
			}
			if len(got) != len(want) {
				t.Fatalf("Events returned %d, want %d", len(got), len(want))
			}
			for i := range got {
				if d := sameEvent(got[i], want[i]); d != "" {
					t.Errorf("event %d: %s", i, d)
				}
			}
		})
	}
}

// mixedWriter performs the i-th write of a mixed workload and returns the
// Seq it was given.
func mixedWriter(ctx context.Context, s store.Store, i int) (int64, error) {
	switch i % 3 {
	case 0:
		ev := newEvent(store.ActionPolicyLoaded, "")
		err := s.RecordEvent(ctx, ev)
		return ev.Seq, err
	case 1:
		iss := withToken(NewIssuance(i), newJTI())
		err := s.RecordIssuance(ctx, iss)
		return iss.Event.Seq, err
	default:
		iss := NewIssuance(i)
		if err := s.RecordIssuance(ctx, iss); err != nil {
			return 0, err
		}
		ev := newEvent(store.ActionCertRevoked, iss.Certificate.Identity)
		err := s.Revoke(ctx, iss.Certificate.Serial, 1, base, ev)
		return ev.Seq, err
	}
}

// tail follows the event log the way the audit log and the revocation feed
// do, by AfterSeq, until stop is closed; it returns every Seq it saw.
// Strictly increasing commit order is what makes this lose nothing.
func tail(s store.Store, stop <-chan struct{}) ([]int64, error) {
	var seen []int64
	var after int64
	for final := false; ; {
		select {
		case <-stop:
			final = true
		default:
		}
		page, err := s.Events(context.Background(), store.EventFilter{AfterSeq: after, Limit: 10000})
		if err != nil {
			return seen, err
		}
		for _, ev := range page {
			seen = append(seen, ev.Seq)
		}
		if len(page) > 0 {
			after = page[len(page)-1].Seq
		} else if final {
			return seen, nil
		}
	}
}

func testEventSeqConcurrent(t *testing.T, open Opener) {
	s := openStore(t, open)
	runMixed(t, []store.Store{s}, s)
}

// testTwoStores runs two Stores on one database at once, as two servers
// would: one event order, no seq handed out twice, nothing lost by a tailer.
func testTwoStores(t *testing.T, open Opener) {
	a := openStore(t, open)
	b := openStore(t, open)
	runMixed(t, []store.Store{a, b}, a)
}

func runMixed(t *testing.T, writers []store.Store, reader store.Store) {
	const goroutines, perGoroutine = 64, 12
	stop := make(chan struct{})
	var tailed []int64
	var tailErr error
	tailDone := make(chan struct{})
	go func() {
		defer close(tailDone)
		tailed, tailErr = tail(reader, stop)
	}()
	var (
		mu      sync.Mutex
		results []int64
		next    atomic.Int64
		wg      sync.WaitGroup
	)
	for g := range goroutines {
		s := writers[g%len(writers)]
		wg.Go(func() {
			for range perGoroutine {
				i := int(next.Add(1))
				seq, err := mixedWriter(context.Background(), s, i)
				if err != nil {
					t.Errorf("write %d: %v", i, err)
					return
				}
				mu.Lock()
				results = append(results, seq)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(stop)
	<-tailDone
	if tailErr != nil {
		t.Fatalf("tail: %v", tailErr)
	}
	all := allEvents(t, reader)
	checkIncreasing(t, all)
	// 0 and 1 write one event, 2 writes two (issue + revoke).
	wantEvents := 0
	for i := 1; i <= goroutines*perGoroutine; i++ {
		wantEvents += 1 + btoi(i%3 == 2)
	}
	if len(all) != wantEvents {
		t.Errorf("%d events stored, want %d", len(all), wantEvents)
	}
	stored := map[int64]bool{}
	for _, ev := range all {
		stored[ev.Seq] = true
	}
	slices.Sort(results)
	for i, seq := range results {
		if i > 0 && seq == results[i-1] {
			t.Errorf("Seq %d returned to two callers", seq)
		}
		if !stored[seq] {
			t.Errorf("Seq %d returned to a caller but not stored", seq)
		}
	}
	if !slices.Equal(tailed, seqsOf(all)) {
		t.Errorf("a tailer following AfterSeq saw %d events, the log holds %d: an event committed behind one already read", len(tailed), len(all))
	}
}

func seqsOf(evs []store.Event) []int64 {
	out := make([]int64, len(evs))
	for i, ev := range evs {
		out[i] = ev.Seq
	}
	return out
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
