package storetest

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// BenchmarkRecordIssuance measures durable issuances per second with one
// caller and with 64 concurrent callers, each row carrying DERSize bytes
// of DER and a token. newStore must return a fresh, empty store (see Fresh).
func BenchmarkRecordIssuance(b *testing.B, newStore func(testing.TB) store.Store) {
	for _, callers := range []int{1, 64} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			s := newStore(b)
			b.Cleanup(func() { s.Close() })
			// Build inputs outside the timer; random DER is not free.
			isss := make([]*store.Issuance, b.N)
			for i := range isss {
				isss[i] = withToken(NewIssuance(i), newJTI())
			}
			next := make(chan *store.Issuance, len(isss))
			for _, iss := range isss {
				next <- iss
			}
			close(next)
			b.ResetTimer()
			if callers == 1 {
				for iss := range next {
					if err := s.RecordIssuance(context.Background(), iss); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				b.SetParallelism((callers + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := s.RecordIssuance(context.Background(), <-next); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
		})
	}
}

// BenchmarkRenewal measures durable renewals per second with 64
// concurrent callers: each records a certificate of an identity that has
// one live certificate already, as an agent's renewal does (the store then
// marks the predecessor superseded, migration 0016). newStore must return
// a fresh, empty store.
func BenchmarkRenewal(b *testing.B, newStore func(testing.TB) store.Store) {
	s := newStore(b)
	b.Cleanup(func() { s.Close() })
	firsts := make([]*store.Issuance, b.N)
	renewals := make(chan *store.Issuance, b.N)
	for i := range firsts {
		first := NewIssuance(i)
		id := fmt.Sprintf("spiffe://example.test/renewing/%d", i)
		first.Certificate.Identity, first.Event.Identity = id, id
		firsts[i] = first
		renewal := NewIssuance(i)
		renewal.Certificate.Identity, renewal.Event.Identity = id, id
		renewal.Certificate.NotAfter = first.Certificate.NotAfter.Add(time.Hour)
		renewal.Certificate.RenewedFrom = first.Certificate.Serial
		// As the authority records a renewal: the names checked against
		// the deny list and the renewed certificate's status, at commit.
		renewal.Renews, renewal.Names = first.Certificate.Serial, []string{id}
		renewals <- renewal
	}
	close(renewals)
	for i, err := range recordAll(s, firsts) {
		if err != nil {
			b.Fatalf("record certificate %d: %v", i, err)
		}
	}
	b.ResetTimer()
	b.SetParallelism((64 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.RecordIssuance(context.Background(), <-renewals); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "renewals/s")
}

// BenchmarkIsDenied measures the deny-list lookup that minting a JWT-SVID
// makes (issuance checks the list in its commit instead), with 64 concurrent callers on a list of 100 identities.
func BenchmarkIsDenied(b *testing.B, newStore func(testing.TB) store.Store) {
	s := newStore(b)
	b.Cleanup(func() { s.Close() })
	ctx := context.Background()
	for i := range 100 {
		id := fmt.Sprintf("spiffe://example.test/denied/%d", i)
		if err := s.Deny(ctx, id, &store.Event{Time: base, Actor: "admin", Action: store.ActionIdentityDenied, Identity: id, Outcome: "ok"}); err != nil {
			b.Fatal(err)
		}
	}
	b.SetParallelism((64 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			if _, err := s.IsDenied(ctx, fmt.Sprintf("spiffe://example.test/denied/%d", i%200)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
