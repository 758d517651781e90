package storetest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

func testRevoke(t *testing.T, open Opener) {
	ctx := context.Background()
	at := base.Add(90 * time.Minute)
	revokeEvent := func(iss *store.Issuance) *store.Event {
		ev := newEvent(store.ActionCertRevoked, iss.Certificate.Identity)
		ev.Serial = iss.Certificate.Serial
		return ev
	}
	t.Run("ThenAlreadyRevoked", func(t *testing.T) {
		s := openStore(t, open)
		iss := NewIssuance(1)
		record(t, s, iss)
		if st, err := s.CertificateStatus(ctx, iss.Certificate.Serial); err != nil || st != (store.CertificateStatus{Status: store.StatusActive}) {
			t.Fatalf("CertificateStatus before revocation = %+v, %v; want active", st, err)
		}
		ev := revokeEvent(iss)
		if err := s.Revoke(ctx, iss.Certificate.Serial, 4, at, ev); err != nil {
			t.Fatalf("Revoke: %v", err)
		}
		st, err := s.CertificateStatus(ctx, iss.Certificate.Serial)
		if err != nil || st.Status != store.StatusRevoked || !st.RevokedAt.Equal(at) || st.RevocationReason != 4 || st.RevokedAt.Location() != time.UTC {
			t.Fatalf("CertificateStatus after revocation = %+v, %v; want revoked at %v (UTC), reason 4", st, err, at)
		}
		if ev.Seq <= iss.Event.Seq {
			t.Errorf("revocation event Seq %d not after issuance Seq %d", ev.Seq, iss.Event.Seq)
		}
		got, err := s.Certificate(ctx, iss.Certificate.Serial)
		if err != nil {
			t.Fatal(err)
		}
		want := iss.Certificate
		want.Status, want.RevokedAt, want.RevocationReason = store.StatusRevoked, at, 4
		if d := sameCert(got, want); d != "" {
			t.Errorf("revoked certificate: %s", d)
		}
		evs, err := s.Events(ctx, store.EventFilter{Action: store.ActionCertRevoked})
		if err != nil || len(evs) != 1 || evs[0].Seq != ev.Seq {
			t.Fatalf("revocation events = %+v, %v; want the one with Seq %d", evs, err, ev.Seq)
		}
		if d := sameEvent(evs[0], *ev); d != "" {
			t.Errorf("revocation event: %s", d)
		}
		again := revokeEvent(iss)
		if err := s.Revoke(ctx, iss.Certificate.Serial, 1, at.Add(time.Hour), again); !errors.Is(err, store.ErrAlreadyRevoked) {
			t.Fatalf("second Revoke: got %v, want ErrAlreadyRevoked", err)
		}
		got, _ = s.Certificate(ctx, iss.Certificate.Serial)
		if !got.RevokedAt.Equal(at) || got.RevocationReason != 4 {
			t.Errorf("second Revoke changed the record: %v reason %d", got.RevokedAt, got.RevocationReason)
		}
		if n := len(allEvents(t, s)); n != 2 {
			t.Errorf("%d events, want 2: a refused revocation records nothing", n)
		}
	})
	t.Run("ExpiredCertificate", func(t *testing.T) {
		s := openStore(t, open)
		iss := NewIssuance(2)
		record(t, s, iss)
		if err := s.Revoke(ctx, iss.Certificate.Serial, 1, iss.Certificate.NotAfter.Add(time.Hour), revokeEvent(iss)); err != nil {
			t.Fatalf("revoking an expired, unrevoked certificate: %v", err)
		}
	})
	t.Run("ConcurrentSameSerial", func(t *testing.T) {
		s := openStore(t, open)
		iss := NewIssuance(3)
		record(t, s, iss)
		const n = 32
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { errs[i] = s.Revoke(ctx, iss.Certificate.Serial, 1, at, revokeEvent(iss)) })
		}
		wg.Wait()
		var ok int
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, store.ErrAlreadyRevoked):
				t.Errorf("Revoke: %v", err)
			}
		}
		if ok != 1 {
			t.Errorf("%d revocations succeeded, want 1", ok)
		}
		if n := len(allEvents(t, s)); n != 2 {
			t.Errorf("%d events, want 2", n)
		}
	})
}
