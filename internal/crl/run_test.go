package crl

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mica-pki/mica/internal/issuance"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/storetest"
	"github.com/mica-pki/mica/internal/testpki"
)

// runService starts s.Run in the bubble and stops it when the test ends.
func runService(t *testing.T, s *Service) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// newCountingService is a Service with a debounce of a second on a store
// of its own, and the number of CRLs it has built.
func newCountingService(t *testing.T) (*Service, store.Store, *atomic.Int32) {
	t.Helper()
	pki := testpki.New(t, "example.org")
	st := openSQLite(t, filepath.Join(t.TempDir(), "mica.db"))
	builds := new(atomic.Int32)
	s, err := New(Config{Source: st, Issuer: pki.Intermediate, Signer: issuance.NewCRLSigner(pki.Intermediate, pki.IntermediateKey), IssuerID: issuerID,
		Debounce: time.Second, Lint: func(der []byte) error { builds.Add(1); return issuance.LintCRL(der) }})
	if err != nil {
		t.Fatal(err)
	}
	return s, st, builds
}

// TestRunDebouncesChanges: Run builds at once, then once per burst of
// changes, a debounce after the first; the clock is the bubble's, so
// nothing waits for real.
func TestRunDebouncesChanges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, st, builds := newCountingService(t)
		runService(t, s)
		synctest.Wait()
		first := s.Current()
		if first == nil || first.Entries != 0 {
			t.Fatalf("after Run started: %+v, want an empty CRL", first)
		}

		revokeAt(t, st, "1a2b", time.Now().Add(time.Hour))
		s.Changed()
		time.Sleep(time.Second / 2)
		revokeAt(t, st, "3c4d", time.Now().Add(time.Hour))
		s.Changed() // within the debounce: the same build
		synctest.Wait()
		if s.Current() != first {
			t.Fatal("the CRL was rebuilt before the debounce ended")
		}
		time.Sleep(time.Second / 2)
		synctest.Wait()
		second := s.Current()
		if second == first || !slices.Equal(serials(t, second.DER), []string{"1a2b", "3c4d"}) {
			t.Fatalf("a debounce after the first change: %v, want one CRL with both revocations", serials(t, second.DER))
		}
		time.Sleep(time.Hour)
		synctest.Wait()
		if n := builds.Load(); n != 2 {
			t.Errorf("%d builds in the hour after a burst of two changes, want 2: the first and one for the burst", n)
		}
	})
}

// TestRunKeepsACRLBuiltBeforeIt: a server builds its CRL before it serves
// and then starts Run, which does not build the same CRL again at once;
// a change made in between is still built, a debounce later.
func TestRunKeepsACRLBuiltBeforeIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, st, builds := newCountingService(t)
		time.Sleep(time.Second) // the next build gets a second of its own
		if err := s.RunOnce(t.Context()); err != nil {
			t.Fatal(err)
		}
		first := s.Current()
		runService(t, s)
		synctest.Wait()
		if s.Current() != first || builds.Load() != 1 {
			t.Fatalf("Run built again at once (%d builds), want the CRL built before it kept", builds.Load())
		}
		revokeAt(t, st, "1a2b", time.Now().Add(time.Hour))
		s.Changed()
		time.Sleep(time.Second)
		synctest.Wait()
		if got := s.Current(); got == first || !slices.Equal(serials(t, got.DER), []string{"1a2b"}) {
			t.Fatal("a change after the CRL built before Run was not built a debounce later")
		}
	})
}

// TestRunRebuildsAtHalfValidity: with no change, a CRL is replaced once
// half its validity has passed, long before relying parties would find
// it expired.
func TestRunRebuildsAtHalfValidity(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pki := testpki.New(t, "example.org")
		st := openSQLite(t, filepath.Join(t.TempDir(), "mica.db"))
		s, err := New(Config{Source: st, Issuer: pki.Intermediate, Signer: issuance.NewCRLSigner(pki.Intermediate, pki.IntermediateKey), IssuerID: issuerID,
			Validity: 4 * time.Hour, Lint: issuance.LintCRL})
		if err != nil {
			t.Fatal(err)
		}
		runService(t, s)
		synctest.Wait()
		first := s.Current()
		time.Sleep(2*time.Hour - time.Second)
		synctest.Wait()
		if s.Current() != first {
			t.Fatal("rebuilt before half the validity passed")
		}
		time.Sleep(time.Second)
		synctest.Wait()
		next := s.Current()
		if next == first || !next.ThisUpdate.Equal(first.ThisUpdate.Add(2*time.Hour)) || !next.NextUpdate.Equal(next.ThisUpdate.Add(4*time.Hour)) {
			t.Fatalf("at half the validity: this %v next %v, first was %v", next.ThisUpdate, next.NextUpdate, first.ThisUpdate)
		}
	})
}

// TestRunRetriesWithBackoff: a build that fails (here the lint refuses
// it) is retried after 1s, 2s, 4s…, while the last good CRL stays served;
// once one succeeds the schedule is back to half the validity.
func TestRunRetriesWithBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pki := testpki.New(t, "example.org")
		st := openSQLite(t, filepath.Join(t.TempDir(), "mica.db"))
		var (
			mu       sync.Mutex
			attempts []time.Duration // since the start, by the bubble's clock
			failing  bool
		)
		start := time.Now()
		s, err := New(Config{Source: st, Issuer: pki.Intermediate, Signer: issuance.NewCRLSigner(pki.Intermediate, pki.IntermediateKey), IssuerID: issuerID,
			Validity: time.Hour, Lint: func(der []byte) error {
				mu.Lock()
				defer mu.Unlock()
				attempts = append(attempts, time.Since(start))
				if failing && len(attempts) <= 4 {
					return errors.New("lint refused it")
				}
				return issuance.LintCRL(der)
			}})
		if err != nil {
			t.Fatal(err)
		}
		runService(t, s)
		synctest.Wait()
		good := s.Current()
		mu.Lock()
		failing = true
		mu.Unlock()
		s.Changed() // the next three builds fail
		time.Sleep(time.Minute)
		synctest.Wait()
		mu.Lock()
		got := slices.Clone(attempts)
		mu.Unlock()
		d := 200 * time.Millisecond // the default debounce
		want := []time.Duration{0, d, d + time.Second, d + 3*time.Second, d + 7*time.Second}
		if !slices.Equal(got, want) {
			t.Fatalf("builds at %v, want %v", got, want)
		}
		// thisUpdate has whole seconds.
		if cur := s.Current(); cur == good || cur.ThisUpdate.Sub(start) != 7*time.Second {
			t.Errorf("after the retries: the CRL of %v, want the one built at %v", cur.ThisUpdate.Sub(start), d+7*time.Second)
		}
	})
}

// revokeAt records a certificate of this issuer with serial (hex) that
// expires at notAfter, and revokes it now by the (bubble's) clock.
func revokeAt(t *testing.T, st store.Store, serial string, notAfter time.Time) {
	t.Helper()
	ctx := context.Background()
	iss := storetest.NewIssuance(0)
	c := &iss.Certificate
	c.Serial, c.Issuer, c.NotBefore, c.NotAfter = serial, issuerID, notAfter.Add(-2*time.Hour), notAfter
	iss.Event.Serial = serial
	if err := st.RecordIssuance(ctx, iss); err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	if err := st.Revoke(ctx, serial, 1, at, &store.Event{Time: at, Actor: "admin", Action: store.ActionCertRevoked, Serial: serial}); err != nil {
		t.Fatal(err)
	}
}
