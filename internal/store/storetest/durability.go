package storetest

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// testDurability checks that everything acknowledged survives a reopen.
func testDurability(t *testing.T, open Opener) {
	s := openStore(t, open)
	ctx := context.Background()
	isss := make([]*store.Issuance, 200)
	for i := range isss {
		isss[i] = withToken(NewIssuance(i), newJTI())
	}
	for i, err := range recordAll(s, isss) {
		if err != nil {
			t.Fatalf("RecordIssuance %d: %v", i, err)
		}
	}
	revoked := isss[17]
	if err := s.Revoke(ctx, revoked.Certificate.Serial, 3, base, newEvent(store.ActionCertRevoked, "")); err != nil {
		t.Fatal(err)
	}
	before := allEvents(t, s)
	s = reopen(t, open, s)
	for _, iss := range isss {
		want := iss.Certificate
		if iss == revoked {
			want.Status, want.RevokedAt, want.RevocationReason = store.StatusRevoked, base, 3
		}
		got, err := s.Certificate(ctx, want.Serial)
		if err != nil {
			t.Fatalf("after reopen: %v", err)
		}
		if d := sameCert(got, want); d != "" {
			t.Errorf("after reopen: %s", d)
		}
	}
	after := allEvents(t, s)
	if len(after) != len(before) {
		t.Fatalf("%d events after reopen, %d before", len(after), len(before))
	}
	for i := range after {
		if after[i].Seq != before[i].Seq {
			t.Fatalf("event %d has Seq %d after reopen, %d before", i, after[i].Seq, before[i].Seq)
		}
	}
	// Sequence numbers keep increasing across a reopen.
	ev := newEvent(store.ActionPolicyLoaded, "")
	if err := s.RecordEvent(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if ev.Seq <= after[len(after)-1].Seq {
		t.Errorf("Seq %d after reopen is not above %d", ev.Seq, after[len(after)-1].Seq)
	}
}

// testCloseDrains closes the store while writers are queueing: every write
// that returned nil is stored, and every write that failed (other than by
// its own context) is not.
func testCloseDrains(t *testing.T, open Opener) {
	s := openStore(t, open)
	const n = 300
	isss := make([]*store.Issuance, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range isss {
		isss[i] = NewIssuance(i)
		wg.Go(func() { errs[i] = s.RecordIssuance(context.Background(), isss[i]) })
		if i == n/2 {
			wg.Go(func() {
				s.closed = true
				if err := s.Store.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
		}
	}
	wg.Wait()
	s = openStore(t, open)
	checkOutcomes(t, s, isss, errs)
}

// testCancellation cancels callers at random moments: a nil result means
// stored; a context error means either, but exactly once.
func testCancellation(t *testing.T, open Opener) {
	s := openStore(t, open)
	const n = 300
	isss := make([]*store.Issuance, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range isss {
		isss[i] = withToken(NewIssuance(i), newJTI())
		ctx, cancel := context.WithCancel(context.Background())
		if i%3 == 0 {
			cancel() // before the call: must write nothing
		}
		wg.Go(func() {
			defer cancel()
			if i%3 == 1 {
				time.AfterFunc(time.Duration(rand.IntN(2000))*time.Microsecond, cancel)
			}
			errs[i] = s.RecordIssuance(ctx, isss[i])
		})
	}
	wg.Wait()
	for i := 0; i < n; i += 3 {
		if !errors.Is(errs[i], context.Canceled) {
			t.Errorf("issuance %d with a cancelled context: got %v, want context.Canceled", i, errs[i])
		}
	}
	// Writes still in flight after their callers gave up land before Close
	// returns; look after a reopen.
	s = reopen(t, open, s)
	checkOutcomes(t, s, isss, errs)
	for i := 0; i < n; i += 3 {
		assertAbsent(t, s, isss[i])
	}
	// A caller that gave up retries: the token tells it the first attempt won.
	for i, err := range errs {
		if !errors.Is(err, context.Canceled) {
			continue
		}
		_, lookErr := s.Certificate(context.Background(), isss[i].Certificate.Serial)
		retryErr := s.RecordIssuance(context.Background(), isss[i])
		if lookErr == nil && !errors.Is(retryErr, store.ErrTokenUsed) {
			t.Errorf("retry of committed issuance %d: got %v, want ErrTokenUsed", i, retryErr)
		}
		if errors.Is(lookErr, store.ErrNotFound) && retryErr != nil {
			t.Errorf("retry of dropped issuance %d: %v", i, retryErr)
		}
	}
}

// checkOutcomes asserts that each issuance was applied exactly as its
// result says: nil ⇒ stored once with one event, a non-context error ⇒
// absent, a context error ⇒ stored once or absent.
func checkOutcomes(t *testing.T, s store.Store, isss []*store.Issuance, errs []error) {
	t.Helper()
	events := eventsBySerial(t, s)
	var stored, failed int
	for i, iss := range isss {
		_, err := s.Certificate(context.Background(), iss.Certificate.Serial)
		present := err == nil
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Certificate: %v", err)
		}
		ambiguous := errors.Is(errs[i], context.Canceled) || errors.Is(errs[i], context.DeadlineExceeded)
		switch {
		case errs[i] == nil && !present:
			t.Errorf("issuance %d returned nil but is not stored", i)
		case errs[i] != nil && !ambiguous && present:
			t.Errorf("issuance %d failed (%v) but is stored", i, errs[i])
		}
		if want := btoi(present); events[iss.Certificate.Serial] != want {
			t.Errorf("issuance %d: %d events for a certificate stored=%v", i, events[iss.Certificate.Serial], present)
		}
		if present {
			stored++
		}
		if errs[i] != nil && !ambiguous {
			failed++
		}
	}
	t.Logf("%d stored, %d refused, %d total", stored, failed, len(isss))
}

func testConcurrentIssuance(t *testing.T, open Opener) {
	s := openStore(t, open)
	const goroutines, each = 64, 16
	var wg sync.WaitGroup
	isss := make([]*store.Issuance, goroutines*each)
	for g := range goroutines {
		wg.Go(func() {
			for k := range each {
				i := g*each + k
				isss[i] = withToken(NewIssuance(i), newJTI())
				if err := s.RecordIssuance(context.Background(), isss[i]); err != nil {
					t.Errorf("RecordIssuance %d: %v", i, err)
				}
			}
		})
	}
	wg.Wait()
	n, err := s.CountCertificates(context.Background(), store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if n != len(isss) {
		t.Fatalf("CountCertificates = %d, want %d", n, len(isss))
	}
	seqs := map[int64]bool{}
	for _, iss := range isss {
		if seqs[iss.Event.Seq] {
			t.Fatalf("Seq %d given twice", iss.Event.Seq)
		}
		seqs[iss.Event.Seq] = true
		assertPresent(t, s, iss)
	}
	checkIncreasing(t, allEvents(t, s))
}
