package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

func testRoundTrip(t *testing.T, open Opener) {
	tests := []struct {
		name   string
		modify func(*store.Issuance)
	}{
		{"AllFields", func(iss *store.Issuance) { iss.Certificate.RenewedFrom = "0badc0ffee" }},
		{"NoSANs", func(iss *store.Issuance) { iss.Certificate.SANs = nil }},
		{"EmptyStrings", func(iss *store.Issuance) {
			c := &iss.Certificate
			c.Identity, c.Profile, c.Requester, c.SourceAddr, c.Issuer = "", "", "", "", ""
			iss.Event.Source, iss.Event.Detail = "", ""
		}},
		{"UnicodeAndQuotes", func(iss *store.Issuance) {
			iss.Certificate.SANs = []string{`we"ird`, "ünïcode.example.test", `back\slash`}
			iss.Event.Detail = "it's \"quoted\"\nacross lines"
		}},
		{"WithToken", func(iss *store.Issuance) { withToken(iss, newJTI()) }},
		{"NonUTCInput", func(iss *store.Issuance) {
			loc := time.FixedZone("east", 5*3600)
			iss.Certificate.NotAfter = iss.Certificate.NotAfter.In(loc)
			iss.Event.Time = iss.Event.Time.In(loc)
		}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t, open)
			ctx := context.Background()
			iss := NewIssuance(i)
			tc.modify(iss)
			record(t, s, iss)
			if iss.Event.Seq <= 0 || iss.Certificate.EventSeq != iss.Event.Seq {
				t.Fatalf("after RecordIssuance Event.Seq = %d, Certificate.EventSeq = %d; want equal and positive", iss.Event.Seq, iss.Certificate.EventSeq)
			}
			for _, lookup := range []struct {
				name string
				get  func() (store.Certificate, error)
			}{
				{"Certificate", func() (store.Certificate, error) { return s.Certificate(ctx, iss.Certificate.Serial) }},
				{"CertificateByFingerprint", func() (store.Certificate, error) {
					return s.CertificateByFingerprint(ctx, iss.Certificate.Fingerprint)
				}},
				{"CertificateByToken", func() (store.Certificate, error) {
					if iss.Certificate.TokenJTI == "" { // only WithToken has one
						return s.Certificate(ctx, iss.Certificate.Serial)
					}
					return s.CertificateByToken(ctx, iss.Certificate.TokenJTI)
				}},
			} {
				got, err := lookup.get()
				if err != nil {
					t.Fatalf("%s: %v", lookup.name, err)
				}
				if d := sameCert(got, iss.Certificate); d != "" {
					t.Errorf("%s round trip: %s", lookup.name, d)
				}
			}
			got, err := s.CertificateWithoutDER(ctx, iss.Certificate.Serial)
			if err != nil {
				t.Fatalf("CertificateWithoutDER: %v", err)
			}
			if got.DER != nil {
				t.Errorf("CertificateWithoutDER read %d bytes of DER, want none", len(got.DER))
			}
			want := iss.Certificate
			want.DER = nil
			if d := sameCert(got, want); d != "" {
				t.Errorf("CertificateWithoutDER round trip: %s", d)
			}
			evs, err := s.Events(ctx, store.EventFilter{})
			if err != nil {
				t.Fatalf("Events: %v", err)
			}
			if len(evs) != 1 {
				t.Fatalf("Events returned %d events, want 1", len(evs))
			}
			if d := sameEvent(evs[0], iss.Event); d != "" {
				t.Errorf("event round trip: %s", d)
			}
			if evs[0].Time.Location() != time.UTC {
				t.Errorf("event time %v is not UTC", evs[0].Time)
			}
		})
	}
}

func testNotFound(t *testing.T, open Opener) {
	s := openStore(t, open)
	ctx := context.Background()
	record(t, s, NewIssuance(1))
	tests := []struct {
		name string
		call func() error
	}{
		{"Certificate", func() error { _, err := s.Certificate(ctx, "00ff"); return err }},
		{"CertificateByFingerprint", func() error { _, err := s.CertificateByFingerprint(ctx, "00ff"); return err }},
		{"CertificateByToken", func() error { _, err := s.CertificateByToken(ctx, "no-such-token"); return err }},
		{"CertificateByToken empty", func() error { _, err := s.CertificateByToken(ctx, ""); return err }},
		{"CertificateWithoutDER", func() error { _, err := s.CertificateWithoutDER(ctx, "00ff"); return err }},
		{"CertificateStatus", func() error { _, err := s.CertificateStatus(ctx, "00ff"); return err }},
		{"Revoke", func() error { return s.Revoke(ctx, "00ff", 1, base, newEvent(store.ActionCertRevoked, "")) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("got %v, want ErrNotFound", err)
			}
		})
	}
	if n := len(allEvents(t, s)); n != 1 {
		t.Errorf("%d events after failed revocation, want 1", n)
	}
}

// testInvalidInput checks that malformed writes are refused on their own,
// write nothing, and do not disturb the writes around them.
func testInvalidInput(t *testing.T, open Opener) {
	s := openStore(t, open)
	ctx := context.Background()
	tests := []struct {
		name   string
		modify func(*store.Issuance)
	}{
		{"NoSerial", func(iss *store.Issuance) { iss.Certificate.Serial = "" }},
		{"NoFingerprint", func(iss *store.Issuance) { iss.Certificate.Fingerprint = "" }},
		{"NoDER", func(iss *store.Issuance) { iss.Certificate.DER = nil }},
		{"NoNotAfter", func(iss *store.Issuance) { iss.Certificate.NotAfter = time.Time{} }},
		{"RevokedStatus", func(iss *store.Issuance) { iss.Certificate.Status = store.StatusRevoked }},
		{"NoEventAction", func(iss *store.Issuance) { iss.Event.Action = "" }},
		{"NoEventTime", func(iss *store.Issuance) { iss.Event.Time = time.Time{} }},
		{"EmptyJTI", func(iss *store.Issuance) { withToken(iss, "") }},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			iss := NewIssuance(i)
			tc.modify(iss)
			err := s.RecordIssuance(ctx, iss)
			if err == nil || errors.Is(err, store.ErrTokenUsed) {
				t.Fatalf("RecordIssuance = %v, want a validation error", err)
			}
		})
	}
	t.Run("Event", func(t *testing.T) {
		if err := s.RecordEvent(ctx, &store.Event{Time: base}); err == nil {
			t.Fatal("RecordEvent without Action succeeded")
		}
	})
	t.Run("Revoke", func(t *testing.T) {
		iss := NewIssuance(99)
		record(t, s, iss)
		for _, reason := range []int{-1, 7, 11} {
			if err := s.Revoke(ctx, iss.Certificate.Serial, reason, base, newEvent(store.ActionCertRevoked, "")); err == nil {
				t.Errorf("Revoke with reason %d succeeded", reason)
			}
		}
		if err := s.Revoke(ctx, iss.Certificate.Serial, 1, time.Time{}, newEvent(store.ActionCertRevoked, "")); err == nil {
			t.Error("Revoke at zero time succeeded")
		}
	})
	if evs := allEvents(t, s); len(evs) != 1 {
		t.Errorf("%d events after refused writes, want only the one good issuance", len(evs))
	}
}
