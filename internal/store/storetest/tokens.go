package storetest

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/mica-pki/mica/internal/store"
)

func testTokenReplay(t *testing.T, open Opener) {
	ctx := context.Background()
	t.Run("Sequential", func(t *testing.T) {
		s := openStore(t, open)
		jti := newJTI()
		record(t, s, withToken(NewIssuance(1), jti))
		replay := withToken(NewIssuance(2), jti)
		if err := s.RecordIssuance(ctx, replay); !errors.Is(err, store.ErrTokenUsed) {
			t.Fatalf("replayed token: got %v, want ErrTokenUsed", err)
		}
		assertAbsent(t, s, replay)
		if replay.Event.Seq != 0 {
			t.Errorf("refused issuance got Event.Seq %d", replay.Event.Seq)
		}
		// A different token still works.
		record(t, s, withToken(NewIssuance(3), newJTI()))
	})
	t.Run("ConcurrentSameToken", func(t *testing.T) {
		s := openStore(t, open)
		jti := newJTI()
		const n = 50
		isss := make([]*store.Issuance, n)
		for i := range isss {
			isss[i] = withToken(NewIssuance(i), jti)
		}
		errs := recordAll(s, isss)
		var ok int
		for i, err := range errs {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, store.ErrTokenUsed):
				assertAbsent(t, s, isss[i])
			default:
				t.Errorf("issuance %d: %v", i, err)
			}
		}
		if ok != 1 {
			t.Fatalf("%d issuances consumed the same token, want exactly 1", ok)
		}
		if evs := allEvents(t, s); len(evs) != 1 {
			t.Fatalf("%d events, want 1", len(evs))
		}
	})
	t.Run("AcrossReopen", func(t *testing.T) {
		s := openStore(t, open)
		jti := newJTI()
		record(t, s, withToken(NewIssuance(1), jti))
		s = reopen(t, open, s)
		if err := s.RecordIssuance(ctx, withToken(NewIssuance(2), jti)); !errors.Is(err, store.ErrTokenUsed) {
			t.Fatalf("token replayed after reopen: got %v, want ErrTokenUsed", err)
		}
	})
}

// testBatchIsolation checks that items failing on their own fail alone
// when they share a batch with good ones.
func testBatchIsolation(t *testing.T, open Opener) {
	tests := []struct {
		name string
		// poison prepares the store and returns the one issuance that must fail.
		poison func(t *testing.T, s store.Store) *store.Issuance
		want   error
	}{
		{"ReplayedToken", func(t *testing.T, s store.Store) *store.Issuance {
			jti := newJTI()
			record(t, s, withToken(NewIssuance(0), jti))
			return withToken(NewIssuance(1), jti)
		}, store.ErrTokenUsed},
		{"DuplicateSerial", func(t *testing.T, s store.Store) *store.Issuance {
			first := NewIssuance(0)
			record(t, s, first)
			dup := NewIssuance(1)
			dup.Certificate.Serial = first.Certificate.Serial
			return dup
		}, nil},
		{"DuplicateFingerprint", func(t *testing.T, s store.Store) *store.Issuance {
			first := NewIssuance(0)
			record(t, s, first)
			dup := NewIssuance(1)
			dup.Certificate.Fingerprint = first.Certificate.Fingerprint
			return dup
		}, nil},
		// The deny list and the renewed certificate's status are read in
		// the transaction that would write, so a denial or a revocation
		// committed before it always wins; and the refused item's token
		// stays unused.
		{"DeniedName", func(t *testing.T, s store.Store) *store.Issuance {
			iss := withToken(NewIssuance(1), newJTI())
			name := iss.Certificate.SANs[1]
			if err := s.Deny(context.Background(), name, newEvent(store.ActionIdentityDenied, name)); err != nil {
				t.Fatal(err)
			}
			iss.Names = []string{iss.Certificate.Identity, name}
			return iss
		}, store.ErrDenied},
		{"RenewsRevoked", func(t *testing.T, s store.Store) *store.Issuance {
			first := NewIssuance(0)
			record(t, s, first)
			ev := newEvent(store.ActionCertRevoked, first.Certificate.Identity)
			ev.Serial = first.Certificate.Serial
			if err := s.Revoke(context.Background(), first.Certificate.Serial, 1, base, ev); err != nil {
				t.Fatal(err)
			}
			renewal := withToken(NewIssuance(1), newJTI())
			renewal.Renews = first.Certificate.Serial
			return renewal
		}, store.ErrRenewedRevoked},
		{"RenewsUnknown", func(t *testing.T, s store.Store) *store.Issuance {
			record(t, s, NewIssuance(0))
			renewal := withToken(NewIssuance(1), newJTI())
			renewal.Renews = "00ff"
			return renewal
		}, store.ErrRenewedRevoked},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t, open)
			bad := tc.poison(t, s)
			before := len(allEvents(t, s))
			const n = 100
			isss := make([]*store.Issuance, n)
			for i := range isss {
				isss[i] = withToken(NewIssuance(i+2), newJTI())
			}
			const badAt = n / 2
			if tc.want == nil {
				bad.Token = nil
			}
			isss[badAt] = bad
			errs := recordAll(s, isss)
			for i, err := range errs {
				if i == badAt {
					if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
						t.Errorf("poisoned issuance: got %v, want failure %v", err, tc.want)
					}
					if tc.want != nil {
						assertAbsent(t, s, bad)
					}
					continue
				}
				if err != nil {
					t.Errorf("issuance %d failed alongside the poisoned one: %v", i, err)
					continue
				}
				assertPresent(t, s, isss[i])
			}
			if got := len(allEvents(t, s)); got != before+n-1 {
				t.Errorf("%d events, want %d (%d before + %d good)", got, before+n-1, before, n-1)
			}
			if tc.want != nil && tc.want != store.ErrTokenUsed {
				// Refused before its token was consumed: the token still works.
				again := withToken(NewIssuance(n+2), bad.Token.JTI)
				record(t, s, again)
			}
		})
	}
}

// recordAll records every issuance from its own goroutine, released
// together so that they share batches, and returns their errors.
func recordAll(s store.Store, isss []*store.Issuance) []error {
	errs := make([]error, len(isss))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, iss := range isss {
		wg.Go(func() {
			<-start
			errs[i] = s.RecordIssuance(context.Background(), iss)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

func assertAbsent(t *testing.T, s store.Store, iss *store.Issuance) {
	t.Helper()
	if _, err := s.Certificate(context.Background(), iss.Certificate.Serial); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("refused certificate %s: lookup got %v, want ErrNotFound", iss.Certificate.Serial, err)
	}
	for _, ev := range allEvents(t, s) {
		if ev.Detail == iss.Event.Detail && ev.Serial == iss.Event.Serial {
			t.Errorf("refused issuance %s left event %d", iss.Certificate.Serial, ev.Seq)
		}
	}
}

func assertPresent(t *testing.T, s store.Store, iss *store.Issuance) {
	t.Helper()
	got, err := s.Certificate(context.Background(), iss.Certificate.Serial)
	if err != nil {
		t.Errorf("committed certificate %s: %v", iss.Certificate.Serial, err)
		return
	}
	if d := sameCert(got, iss.Certificate); d != "" {
		t.Errorf("committed certificate %s: %s", iss.Certificate.Serial, d)
	}
}
