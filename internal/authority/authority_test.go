package authority_test

import (
	"context"
	"crypto/x509"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/authority/authoritytest"
	"github.com/mica-pki/mica/internal/policy"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/testpki"
)

func TestConcurrentReplayIssuesOnce(t *testing.T) {
	f := authoritytest.New(t)
	tok := f.Token(t, authority.TokenRequest{Identity: "spiffe://example.org/billing/api", Profile: "service"})
	const n = 24
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = f.Authority.Enroll(context.Background(), authority.EnrollRequest{Token: tok, CSR: authoritytest.CSR(t)})
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case authority.KindOf(err) != authority.KindTokenReplayed:
			t.Errorf("replay refused with %v, want token-replayed", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d enrollments succeeded with one token, want exactly 1", ok)
	}
	n2, err := f.Store.CountCertificates(context.Background(), store.Filter{Profile: "service"})
	if err != nil || n2 != 1 {
		t.Fatalf("certificates recorded for the token = %d (%v), want 1", n2, err)
	}
}

func TestEnrollRefusals(t *testing.T) {
	f := authoritytest.New(t)
	ctx := context.Background()
	bound := f.Token(t, authority.TokenRequest{Identity: "spiffe://example.org/billing/api", Profile: "service",
		Network: netip.MustParsePrefix("10.1.0.0/16")})
	tests := []struct {
		name   string
		req    authority.EnrollRequest
		kind   authority.Kind
		reason string
	}{
		{"token from outside its network", authority.EnrollRequest{Token: bound, CSR: authoritytest.CSR(t), Source: netip.MustParseAddr("192.0.2.1")},
			authority.KindForbidden, string(policy.ReasonSourceNotAllowed)},
		{"empty CSR", authority.EnrollRequest{Token: f.Token(t, authority.TokenRequest{Identity: "spiffe://example.org/billing/a", Profile: "service"})},
			authority.KindBadCSR, ""},
		{"CSR for another identity", authority.EnrollRequest{
			Token: f.Token(t, authority.TokenRequest{Identity: "spiffe://example.org/billing/a", Profile: "service"}),
			CSR:   authoritytest.CSR(t, "spiffe://example.org/billing/b")}, authority.KindIdentityMismatch, ""},
		{"TTL over the profile maximum", authority.EnrollRequest{
			Token: f.Token(t, authority.TokenRequest{Identity: "spiffe://example.org/billing/a", Profile: "service"}),
			CSR:   authoritytest.CSR(t), TTL: 48 * time.Hour}, authority.KindPolicyDenied, string(policy.ReasonTTLTooLong)},
		{"garbage token", authority.EnrollRequest{Token: "x.y.z", CSR: authoritytest.CSR(t)}, authority.KindTokenInvalid, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.Authority.Enroll(ctx, tt.req)
			var e *authority.Error
			if !errors.As(err, &e) || e.Kind != tt.kind || (tt.reason != "" && e.Reason != tt.reason) {
				t.Fatalf("err = %v, want kind %v reason %q", err, tt.kind, tt.reason)
			}
			if e.Detail == "" {
				t.Error("refusal without detail")
			}
		})
	}
	n, _ := f.Store.CountCertificates(ctx, store.Filter{Profile: "service"})
	if n != 0 {
		t.Fatalf("refusals recorded %d certificates", n)
	}
	// Authenticated refusals are in the event log.
	evs, err := f.Store.Events(ctx, store.EventFilter{Action: store.ActionIssuanceRefused})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 4 {
		t.Errorf("recorded %d refusal events, want 4 (the garbage token is unauthenticated and not recorded)", len(evs))
	}
	// The token bound to 10.1.0.0/16 still works from inside it.
	if _, err := f.Authority.Enroll(ctx, authority.EnrollRequest{Token: bound, CSR: authoritytest.CSR(t), Source: netip.MustParseAddr("10.1.2.3")}); err != nil {
		t.Fatalf("bound token from inside its network: %v", err)
	}
}

func TestRolesAndTokens(t *testing.T) {
	f := authoritytest.New(t)
	ctx := context.Background()
	workload := f.Principal(t, f.Issue(t, "spiffe://example.org/billing/api"))
	if _, err := f.Authority.CreateToken(ctx, workload, authority.TokenRequest{Identity: "spiffe://example.org/billing/x", Profile: "service"}); authority.KindOf(err) != authority.KindForbidden {
		t.Errorf("workload created a token: %v", err)
	}
	if _, err := f.Authority.ListCertificates(ctx, workload, store.Filter{}); authority.KindOf(err) != authority.KindForbidden {
		t.Errorf("workload read the inventory: %v", err)
	}
	if _, err := f.Authority.Certificate(ctx, workload, workload.Record.Serial); err != nil {
		t.Errorf("workload could not read its own record: %v", err)
	}
	if _, err := f.Authority.CreateToken(ctx, f.Admin, authority.TokenRequest{Identity: "spiffe://example.org/payments/x", Profile: "service"}); authority.KindOf(err) != authority.KindPolicyDenied {
		t.Errorf("token for an identity the profile never allows: %v, want policy-denied at creation", err)
	}
	if _, err := f.Authority.CreateToken(ctx, f.Admin, authority.TokenRequest{Identity: "spiffe://example.org/billing/x", Profile: "service", TTL: 48 * time.Hour}); authority.KindOf(err) != authority.KindInvalid {
		t.Errorf("48h token: %v, want invalid", err)
	}
	evs, _ := f.Store.Events(ctx, store.EventFilter{Action: store.ActionTokenCreated})
	for _, ev := range evs {
		if ev.Actor != authoritytest.AdminID || ev.Detail == "" {
			t.Errorf("token event %+v lacks actor or detail", ev)
		}
	}
}

func TestRenewKeepsIdentityAndRefusesRevoked(t *testing.T) {
	f := authoritytest.New(t)
	ctx := context.Background()
	iss := f.Issue(t, "spiffe://example.org/billing/api")
	p := f.Principal(t, iss)
	renewed, err := f.Authority.Renew(ctx, authority.RenewRequest{Peer: p, CSR: authoritytest.CSR(t)})
	if err != nil {
		t.Fatal(err)
	}
	if renewed.Record.Identity != iss.Record.Identity || renewed.Record.RenewedFrom != iss.Record.Serial || renewed.Record.Profile != "service" {
		t.Fatalf("renewal record %+v", renewed.Record)
	}
	if _, err := f.Authority.Renew(ctx, authority.RenewRequest{Peer: p, CSR: authoritytest.CSR(t, "spiffe://example.org/billing/other")}); authority.KindOf(err) != authority.KindIdentityMismatch {
		t.Errorf("renewal asking for another identity: %v", err)
	}
	if _, err := f.Authority.Revoke(ctx, f.Admin, iss.Record.Serial, 1, netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Authority.Authenticate(ctx, []*x509.Certificate{iss.Certificate}); authority.KindOf(err) != authority.KindCertRevoked {
		t.Errorf("revoked certificate authenticated: %v", err)
	}
	if _, err := f.Authority.Revoke(ctx, f.Admin, iss.Record.Serial, 1, netip.Addr{}); authority.KindOf(err) != authority.KindConflict {
		t.Errorf("second revocation: %v, want conflict", err)
	}
	foreign := testpki.New(t, "example.org")
	leaf := foreign.Leaf(t, foreign.ID(t, "/billing/api"))
	if _, err := f.Authority.Authenticate(ctx, []*x509.Certificate{leaf.Cert, foreign.Intermediate}); authority.KindOf(err) != authority.KindUnauthenticated {
		t.Errorf("certificate from another CA authenticated: %v", err)
	}
}

func TestShortLivedCertificateIsNotBornExpired(t *testing.T) {
	f := authoritytest.New(t)
	iss, err := f.Authority.Enroll(context.Background(), authority.EnrollRequest{
		Token: f.Token(t, authority.TokenRequest{Identity: "spiffe://example.org/billing/short", Profile: "service"}),
		CSR:   authoritytest.CSR(t), TTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c := iss.Certificate
	if life := c.NotAfter.Sub(c.NotBefore); life > 5*time.Second {
		t.Errorf("lifetime %v exceeds the 5s asked for", life)
	}
	if !c.NotAfter.After(time.Now().Add(3 * time.Second)) {
		t.Errorf("a 5s certificate expires at %v, too close to now", c.NotAfter)
	}
}
