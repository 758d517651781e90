package storetest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// testRevokeIdentity: every live certificate of one identity is revoked in
// one call, each with its own event; expired, already revoked and other
// identities' certificates are untouched.
func testRevokeIdentity(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openStore(t, open)
	// i%7 picks the identity: 0, 7, 14 share one; 1 is another.
	mine := []*store.Issuance{NewIssuance(0), NewIssuance(7), NewIssuance(14)}
	other := NewIssuance(1)
	for _, iss := range append(slices.Clone(mine), other) {
		record(t, s, iss)
	}
	id := mine[0].Certificate.Identity
	// One already revoked, so RevokeIdentity must skip it.
	if err := s.Revoke(ctx, mine[2].Certificate.Serial, 1, base, &store.Event{Time: base, Action: store.ActionCertRevoked, Serial: mine[2].Certificate.Serial}); err != nil {
		t.Fatal(err)
	}
	at := base.Add(30 * time.Minute) // every fixture is still valid then
	before, _ := s.LastEventSeq(ctx)
	evs, err := s.RevokeIdentity(ctx, id, 5, at, store.Event{Time: at, Actor: "admin", Action: store.ActionCertRevoked, Identity: id, Outcome: "ok"})
	if err != nil {
		t.Fatalf("RevokeIdentity: %v", err)
	}
	want := []string{mine[0].Certificate.Serial, mine[1].Certificate.Serial}
	var got []string
	for _, ev := range evs {
		got = append(got, ev.Serial)
		if ev.Seq <= before || ev.Fingerprint == "" || ev.Profile == "" {
			t.Errorf("event %+v: want Seq after %d and the certificate's fingerprint and profile", ev, before)
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("revoked %v, want %v", got, want)
	}
	for _, iss := range mine[:2] {
		c, _ := s.Certificate(ctx, iss.Certificate.Serial)
		if c.Status != store.StatusRevoked || c.RevocationReason != 5 || !c.RevokedAt.Equal(at) {
			t.Errorf("%s: status %s reason %d at %v", c.Serial, c.Status, c.RevocationReason, c.RevokedAt)
		}
	}
	if c, _ := s.Certificate(ctx, other.Certificate.Serial); c.Status != store.StatusActive {
		t.Errorf("another identity's certificate was revoked")
	}
	if c, _ := s.Certificate(ctx, mine[2].Certificate.Serial); c.RevocationReason != 1 {
		t.Errorf("an already revoked certificate was revoked again")
	}
	evs, err = s.RevokeIdentity(ctx, id, 5, at, store.Event{Time: at, Action: store.ActionCertRevoked, Identity: id})
	if err != nil || len(evs) != 0 {
		t.Errorf("second RevokeIdentity = %v, %v; want nothing to do", evs, err)
	}
}

func testDenyAllow(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openStore(t, open)
	const id = "spiffe://example.test/denied"
	ev := func(a store.Action) *store.Event {
		return &store.Event{Time: base, Actor: "admin", Action: a, Identity: id, Outcome: "ok", Detail: "compromised host"}
	}
	if d, err := s.IsDenied(ctx, id); err != nil || d {
		t.Fatalf("IsDenied before = %v, %v", d, err)
	}
	if err := s.Allow(ctx, id, ev(store.ActionIdentityAllowed)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Allow of an identity not denied: %v, want ErrNotFound", err)
	}
	deny := ev(store.ActionIdentityDenied)
	if err := s.Deny(ctx, id, deny); err != nil || deny.Seq == 0 {
		t.Fatalf("Deny: %v (seq %d)", err, deny.Seq)
	}
	if err := s.Deny(ctx, id, ev(store.ActionIdentityDenied)); !errors.Is(err, store.ErrAlreadyDenied) {
		t.Fatalf("second Deny: %v, want ErrAlreadyDenied", err)
	}
	if d, err := s.IsDenied(ctx, id); err != nil || !d {
		t.Fatalf("IsDenied after Deny = %v, %v", d, err)
	}
	list, err := s.DeniedIdentities(ctx)
	if err != nil || len(list) != 1 || list[0].Identity != id || list[0].EventSeq != deny.Seq || !list[0].Time.Equal(base) || list[0].Detail != "compromised host" {
		t.Fatalf("DeniedIdentities = %+v, %v", list, err)
	}
	allow := ev(store.ActionIdentityAllowed)
	if err := s.Allow(ctx, id, allow); err != nil || allow.Seq <= deny.Seq {
		t.Fatalf("Allow: %v (seq %d)", err, allow.Seq)
	}
	if d, _ := s.IsDenied(ctx, id); d {
		t.Fatal("still denied after Allow")
	}
	evs, err := s.Events(ctx, store.EventFilter{Actions: []store.Action{store.ActionIdentityDenied, store.ActionIdentityAllowed}})
	if err != nil || len(evs) != 2 || evs[0].Seq != deny.Seq || evs[1].Seq != allow.Seq {
		t.Fatalf("deny list events = %+v, %v; want exactly the deny and the allow: refusals record nothing", evs, err)
	}
	if last, err := s.LastEventSeq(ctx); err != nil || last != allow.Seq {
		t.Errorf("LastEventSeq = %d, %v; want %d", last, err, allow.Seq)
	}
}

func testRevokedCertificates(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openStore(t, open)
	if last, err := s.LastEventSeq(ctx); err != nil || last != 0 {
		t.Fatalf("LastEventSeq of an empty store = %d, %v", last, err)
	}
	var all []*store.Issuance
	for i := range 6 {
		iss := NewIssuance(i) // NotAfter base + (i+1)h
		if i == 5 {
			iss.Certificate.Issuer = "another-issuer"
		}
		record(t, s, iss)
		all = append(all, iss)
	}
	for _, i := range []int{0, 2, 3, 5} {
		c := all[i].Certificate
		if err := s.Revoke(ctx, c.Serial, i, base, &store.Event{Time: base, Action: store.ActionCertRevoked, Serial: c.Serial}); err != nil {
			t.Fatal(err)
		}
	}
	collect := func(issuer string, at time.Time) map[string]store.Revoked {
		out := map[string]store.Revoked{}
		err := s.RevokedCertificates(ctx, issuer, at, func(r store.Revoked) error { out[r.Serial] = r; return nil })
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	// At base+90m certificate 0 (NotAfter base+1h) has expired: it drops off.
	got := collect(all[0].Certificate.Issuer, base.Add(90*time.Minute))
	if len(got) != 2 {
		t.Fatalf("revoked and unexpired of one issuer: %v, want certificates 2 and 3", got)
	}
	r := got[all[3].Certificate.Serial]
	if r.Reason != 3 || !r.RevokedAt.Equal(base) || !r.NotAfter.Equal(all[3].Certificate.NotAfter) || r.Identity != all[3].Certificate.Identity {
		t.Errorf("entry %+v does not match the record", r)
	}
	if n := len(collect("", base)); n != 4 {
		t.Errorf("every issuer at base: %d entries, want 4", n)
	}
	stop := errors.New("stop")
	if err := s.RevokedCertificates(ctx, "", base, func(store.Revoked) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("fn's error = %v, want it returned", err)
	}
}
