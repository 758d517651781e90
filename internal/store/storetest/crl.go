package storetest

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// testCRLNumbers: numbers grow with every call, per issuer, across a
// reopen and whatever the clock says; they start at thisUpdate in
// microseconds; PreviousThisUpdate is the latest thisUpdate handed out
// before; the listing is the issuer's revocations valid at thisUpdate.
func testCRLNumbers(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openStore(t, open)
	const a, b = "issuer-a", "issuer-b"
	number := func(s store.Store, issuer string, at time.Time) (store.CRLNumber, []string) {
		t.Helper()
		var serials []string
		n, err := s.NumberCRL(ctx, issuer, at, func(r store.Revoked) error {
			serials = append(serials, r.Serial)
			return nil
		})
		if err != nil {
			t.Fatalf("NumberCRL(%s, %v): %v", issuer, at, err)
		}
		slices.Sort(serials)
		return n, serials
	}
	t0 := base.Truncate(time.Second)
	first, _ := number(s, a, t0)
	if first.Number < t0.UnixMicro() || !first.PreviousThisUpdate.IsZero() {
		t.Fatalf("first number %+v, want at least %d (thisUpdate in µs) and no previous thisUpdate", first, t0.UnixMicro())
	}
	steps := []struct {
		name     string
		at       time.Time
		wantPrev time.Time
	}{
		{"SameSecond", t0, t0},
		{"LaterSecond", t0.Add(time.Second), t0},
		{"ClockBehind", t0.Add(-time.Minute), t0.Add(time.Second)}, // the latest, not the last
		{"ClockBack", t0.Add(time.Second), t0.Add(time.Second)},
	}
	last := first.Number
	for _, st := range steps {
		n, _ := number(s, a, st.at)
		if n.Number <= last {
			t.Errorf("%s: number %d after %d: not growing", st.name, n.Number, last)
		}
		if !n.PreviousThisUpdate.Equal(st.wantPrev) {
			t.Errorf("%s: PreviousThisUpdate %v, want %v", st.name, n.PreviousThisUpdate, st.wantPrev)
		}
		last = n.Number
	}
	if n, _ := number(s, b, t0); n.Number != t0.UnixMicro() || !n.PreviousThisUpdate.IsZero() {
		t.Errorf("another issuer's first number %+v, want %d and no previous: issuers share no counter", n, t0.UnixMicro())
	}
	s = reopen(t, open, s)
	if n, _ := number(s, a, t0); n.Number <= last {
		t.Errorf("after reopen: number %d, not above %d", n.Number, last)
	}

	// The listing: a's revoked certificates still valid at thisUpdate.
	live, expired, active, other := NewIssuance(0), NewIssuance(1), NewIssuance(2), NewIssuance(3)
	live.Certificate.Issuer, expired.Certificate.Issuer, active.Certificate.Issuer = a, a, a
	expired.Certificate.NotAfter = t0.Add(-time.Second)
	other.Certificate.Issuer = b
	for _, iss := range []*store.Issuance{live, expired, active, other} {
		record(t, s, iss)
	}
	for _, iss := range []*store.Issuance{live, expired, other} {
		if err := s.Revoke(ctx, iss.Certificate.Serial, 1, base, newEvent(store.ActionCertRevoked, "")); err != nil {
			t.Fatal(err)
		}
	}
	if _, serials := number(s, a, t0); !slices.Equal(serials, []string{live.Certificate.Serial}) {
		t.Errorf("listed %v, want only %s (revoked, of issuer a, unexpired)", serials, live.Certificate.Serial)
	}
	errStop := errors.New("stop")
	if _, err := s.NumberCRL(ctx, a, t0, func(store.Revoked) error { return errStop }); err != errStop {
		t.Errorf("NumberCRL with a failing fn = %v, want fn's error as it is", err)
	}
}

// testCRLNumbersTwoStores: two stores on one database (two servers) hand
// out numbers at once: never the same number twice, and a larger number
// never lists fewer of the revocations made meanwhile.
func testCRLNumbersTwoStores(t *testing.T, open Opener) {
	ctx := context.Background()
	stores := []store.Store{openStore(t, open), openStore(t, open)}
	const issuer, perGoroutine, revocations = "issuer-a", 15, 30
	isss := make([]*store.Issuance, revocations)
	for i := range isss {
		isss[i] = NewIssuance(i)
		isss[i].Certificate.Issuer = issuer
		record(t, stores[0], isss[i])
	}
	type crl struct {
		number  int64
		serials map[string]bool
	}
	var (
		mu   sync.Mutex
		crls []crl
		wg   sync.WaitGroup
	)
	wg.Go(func() {
		for i, iss := range isss {
			if err := stores[i%2].Revoke(ctx, iss.Certificate.Serial, 1, base, newEvent(store.ActionCertRevoked, "")); err != nil {
				t.Errorf("Revoke: %v", err)
				return
			}
		}
	})
	for g := range 8 {
		s := stores[g%2]
		wg.Go(func() {
			for range perGoroutine {
				c := crl{serials: map[string]bool{}}
				n, err := s.NumberCRL(ctx, issuer, base, func(r store.Revoked) error {
					c.serials[r.Serial] = true
					return nil
				})
				if err != nil {
					t.Errorf("NumberCRL: %v", err)
					return
				}
				c.number = n.Number
				mu.Lock()
				crls = append(crls, c)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.SortFunc(crls, func(x, y crl) int { return int(x.number - y.number) })
	for i := 1; i < len(crls); i++ {
		if crls[i].number == crls[i-1].number {
			t.Fatalf("number %d handed out twice", crls[i].number)
		}
		for serial := range crls[i-1].serials {
			if !crls[i].serials[serial] {
				t.Fatalf("CRL number %d lists %s, the later number %d does not", crls[i-1].number, serial, crls[i].number)
			}
		}
	}
	if len(crls) != 8*perGoroutine {
		t.Errorf("%d numbers, want %d", len(crls), 8*perGoroutine)
	}
}
