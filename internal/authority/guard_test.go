package authority_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/authority/authoritytest"
	"github.com/mica-pki/mica/internal/policy"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/testpki"
)

// recordingGuard is a hand-written authority.Guard that remembers what it
// was asked and refuses when told to.
type recordingGuard struct {
	mu       sync.Mutex
	admitted []authority.Attempt
	networks []authority.Attempt
	issuers  []authority.ForeignIssuer
	refuse   bool
}

var errLimited = &authority.Error{Kind: authority.KindRateLimited, Detail: "slow down", RetryAfter: time.Minute}

func (g *recordingGuard) Admit(_ context.Context, at authority.Attempt) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.admitted = append(g.admitted, at)
	if g.refuse {
		return errLimited
	}
	return nil
}

func (g *recordingGuard) UnexpectedNetwork(_ context.Context, at authority.Attempt) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.networks = append(g.networks, at)
	return nil
}

func (g *recordingGuard) UnexpectedIssuer(_ context.Context, _ netip.Addr, fi authority.ForeignIssuer) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.issuers = append(g.issuers, fi)
}

func TestGuardIsAskedByEveryDoor(t *testing.T) {
	g := &recordingGuard{}
	f := authoritytest.NewWith(t, func(cfg *authority.Config) {
		pc := authoritytest.PolicyConfig()
		svc := pc.Profiles["service"]
		svc.ExpectedNetworks = []string{"10.0.0.0/8"}
		svc.DNS = []string{"*.example.org"}
		pc.Profiles["service"] = svc
		eng, err := policy.New(pc)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Policy, cfg.Guard = eng, g
	})
	ctx := context.Background()
	if len(g.admitted) != 0 {
		t.Fatalf("mica's own issuance (the fixture's admin) asked the guard: %+v", g.admitted)
	}
	src := netip.MustParseAddr("10.1.2.3")
	tok := f.Token(t, authority.TokenRequest{Identity: "spiffe://example.org/billing/api", Profile: "service"})
	iss, err := f.Authority.Enroll(ctx, authority.EnrollRequest{Token: tok, CSR: authoritytest.CSR(t), Source: src})
	if err != nil {
		t.Fatal(err)
	}
	peer := f.Principal(t, iss)
	if _, err := f.Authority.Renew(ctx, authority.RenewRequest{Peer: peer, CSR: authoritytest.CSR(t), Source: netip.MustParseAddr("192.0.2.9")}); err != nil {
		t.Fatal(err)
	}
	acmeID, _ := identity.Parse("www.example.org")
	acme, err := f.Authority.IssueACME(ctx, authority.ACMERequest{Account: "https://ca/acct/1", Profile: "service", Identity: acmeID,
		CSR: csrForDNS(t, "www.example.org"), Source: src})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Authority.IssueACME(ctx, authority.ACMERequest{Account: "https://ca/acct/1", Profile: "service", Identity: acmeID,
		CSR: csrForDNS(t, "www.example.org"), Source: src, Replaces: acme.Record.Serial}); err != nil {
		t.Fatal(err)
	}
	want := []authority.Attempt{
		{Method: policy.MethodToken, Profile: "service", Identity: "spiffe://example.org/billing/api", Requester: authoritytest.AdminID, Source: src},
		{Method: policy.MethodRenew, Profile: "service", Identity: "spiffe://example.org/billing/api", Requester: "spiffe://example.org/billing/api",
			Source: netip.MustParseAddr("192.0.2.9"), Lifetime: iss.Record.NotAfter.Sub(iss.Record.NotBefore)},
		{Method: policy.MethodACME, Profile: "service", Identity: "www.example.org", Requester: "acme:https://ca/acct/1", Source: src},
		{Method: policy.MethodACME, Profile: "service", Identity: "www.example.org", Requester: "acme:https://ca/acct/1", Source: src,
			Lifetime: acme.Record.NotAfter.Sub(acme.Record.NotBefore)},
	}
	if len(g.admitted) != len(want) {
		t.Fatalf("guard admitted %d requests, want %d: %+v", len(g.admitted), len(want), g.admitted)
	}
	for i, w := range want {
		got := g.admitted[i]
		got.Actor = ""
		if got != w {
			t.Errorf("attempt %d = %+v\nwant %+v", i, got, w)
		}
	}
	// Only the renewal came from outside 10.0.0.0/8.
	if len(g.networks) != 1 || g.networks[0].Source != netip.MustParseAddr("192.0.2.9") {
		t.Errorf("unexpected networks reported: %+v", g.networks)
	}

	// A refusal comes back as it is, nothing is issued, and no
	// issuance.refused leaf is written for it (the guard records it,
	// throttled).
	g.refuse = true
	before := countEvents(t, f.Store)
	tok = f.Token(t, authority.TokenRequest{Identity: "spiffe://example.org/billing/other", Profile: "service"})
	_, err = f.Authority.Enroll(ctx, authority.EnrollRequest{Token: tok, CSR: authoritytest.CSR(t), Source: src})
	if !errors.Is(err, errLimited) {
		t.Fatalf("enroll while refused: %v", err)
	}
	if _, err := f.Authority.Renew(ctx, authority.RenewRequest{Peer: peer, CSR: []byte("not even a CSR"), Source: src}); !errors.Is(err, errLimited) {
		t.Fatalf("renew while refused: %v, want the guard's refusal before the CSR is looked at", err)
	}
	if after := countEvents(t, f.Store); after != before+1 { // the token.created event only
		t.Errorf("%d events written by refused requests, want none", after-before-1)
	}
}

func TestForeignIssuerIsReported(t *testing.T) {
	g := &recordingGuard{}
	f := authoritytest.NewWith(t, func(cfg *authority.Config) { cfg.Guard = g })
	rogue := testpki.New(t, "example.org")
	leaf := rogue.Leaf(t, rogue.ID(t, "/billing/api"), testpki.WithExtKeyUsage(x509.ExtKeyUsageClientAuth))
	if _, err := f.Authority.Authenticate(context.Background(), []*x509.Certificate{leaf.Cert, rogue.Intermediate}); err == nil {
		t.Fatal("a foreign certificate authenticated")
	}
	if len(g.issuers) != 1 || g.issuers[0].Subject != rogue.Intermediate.Subject.String() ||
		g.issuers[0].SHA256 != authority.Fingerprint(rogue.Intermediate.Raw) || g.issuers[0].KeyID == "" {
		t.Fatalf("reported issuers = %+v", g.issuers)
	}
	// Without the issuer in the chain the subject is still named.
	f.Authority.Authenticate(context.Background(), []*x509.Certificate{leaf.Cert})
	if len(g.issuers) != 2 || g.issuers[1].SHA256 != "" || g.issuers[1].Subject == "" {
		t.Fatalf("reported issuers = %+v", g.issuers)
	}
	// A certificate from mica's intermediate is not foreign, even when
	// refused for another reason (here: no clientAuth usage).
	server := f.PKI.Leaf(t, f.PKI.ID(t, "/billing/api"), testpki.WithExtKeyUsage(x509.ExtKeyUsageServerAuth))
	if _, err := f.Authority.Authenticate(context.Background(), []*x509.Certificate{server.Cert, f.PKI.Intermediate}); err == nil {
		t.Fatal("a serverAuth-only certificate authenticated")
	}
	if len(g.issuers) != 2 {
		t.Fatalf("a mica certificate was reported as foreign: %+v", g.issuers[2:])
	}
}

func countEvents(t *testing.T, s store.Store) int {
	t.Helper()
	evs, err := s.Events(context.Background(), store.EventFilter{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	return len(evs)
}

// csrForDNS makes a CSR (DER) naming dns, for a fresh P-256 key.
func csrForDNS(t *testing.T, dns ...string) []byte {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: dns}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
