package authority_test

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/authority/authoritytest"
	"github.com/mica-pki/mica/internal/policy"
	"github.com/mica-pki/mica/internal/testpki"
)

func TestRenewKeepingTheKey(t *testing.T) {
	f := authoritytest.New(t)
	ctx := context.Background()
	cred := f.EnrollCred(t, "service", "spiffe://example.org/billing/api")
	p := f.Principal(t, cred.Issued)
	renewed, err := f.Authority.Renew(ctx, authority.RenewRequest{Peer: p, KeepKey: true})
	if err != nil {
		t.Fatal(err)
	}
	if !renewed.Certificate.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(cred.Key.Public()) {
		t.Error("a renewal that keeps its key certified another key")
	}
	if renewed.Record.Identity != cred.Issued.Record.Identity || renewed.Record.RenewedFrom != cred.Issued.Record.Serial ||
		renewed.Record.Serial == cred.Issued.Record.Serial {
		t.Errorf("renewal record %+v", renewed.Record)
	}

	t.Run("not with a CSR as well", func(t *testing.T) {
		_, err := f.Authority.Renew(ctx, authority.RenewRequest{Peer: p, KeepKey: true, CSR: authoritytest.CSR(t)})
		if authority.KindOf(err) != authority.KindBadCSR {
			t.Errorf("keep_key with a CSR: %v, want bad-csr", err)
		}
	})
	t.Run("not without the certificate's handshake", func(t *testing.T) {
		// An approval carried out for a requester proves no key.
		carried := p
		carried.Approval = "a1"
		_, err := f.Authority.Renew(ctx, authority.RenewRequest{Peer: carried, KeepKey: true})
		if authority.KindOf(err) != authority.KindBadCSR {
			t.Errorf("keep_key without the certificate's handshake: %v, want bad-csr", err)
		}
	})
	t.Run("the kept key meets today's policy", func(t *testing.T) {
		_, key, _ := ed25519.GenerateKey(rand.Reader)
		iss, err := f.Authority.Enroll(ctx, authority.EnrollRequest{
			Token: f.Token(t, authority.TokenRequest{Identity: "spiffe://example.org/billing/ed", Profile: "service"}),
			CSR:   authoritytest.CSRWithKey(t, key)})
		if err != nil {
			t.Fatal(err)
		}
		peer := f.Principal(t, iss)
		cfg := authoritytest.PolicyConfig()
		svc := cfg.Profiles["service"]
		svc.KeyTypes = []string{"ecdsa-p256"}
		cfg.Profiles["service"] = svc
		eng, err := policy.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		f.Authority.SetPolicy(eng)
		_, err = f.Authority.Renew(ctx, authority.RenewRequest{Peer: peer, KeepKey: true})
		var e *authority.Error
		if authority.KindOf(err) != authority.KindPolicyDenied || !errors.As(err, &e) || e.Reason != string(policy.ReasonKeyNotAllowed) {
			t.Errorf("keeping a key the profile no longer allows: %v, want key-not-allowed", err)
		}
	})
}

// TestConnMemo checks what a connection's memo may and may not skip: the
// chain is verified once, but the inventory status and the time are
// checked on every request, and another chain is never taken for the
// remembered one.
func TestConnMemo(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	f := authoritytest.NewWith(t, func(c *authority.Config) { c.Clock = func() time.Time { return clock() } })
	ctx := context.Background()
	iss := f.Issue(t, "spiffe://example.org/billing/api")
	chain := []*x509.Certificate{iss.Certificate, iss.Chain[0]}
	var memo authority.ConnMemo
	src := netip.MustParseAddr("127.0.0.1")

	if _, err := f.Authority.AuthenticateConn(ctx, &memo, chain, src); err != nil {
		t.Fatal(err)
	}
	if got := authority.MemoChain(&memo); len(got) != 2 || got[0] != iss.Certificate {
		t.Fatalf("memo holds %v after a verified chain, want the chain", got)
	}
	p, err := f.Authority.AuthenticateConn(ctx, &memo, chain, src)
	if err != nil || p.Name != "spiffe://example.org/billing/api" || p.Record.Serial != iss.Record.Serial {
		t.Fatalf("second request on the connection: %+v, %v", p, err)
	}

	t.Run("another chain is verified, not taken for the remembered one", func(t *testing.T) {
		other := f.Issue(t, "spiffe://example.org/billing/other")
		p, err := f.Authority.AuthenticateConn(ctx, &memo, []*x509.Certificate{other.Certificate, other.Chain[0]}, src)
		if err != nil || p.Name != "spiffe://example.org/billing/other" || p.Record.Serial != other.Record.Serial {
			t.Errorf("another mica chain on the memo authenticated as %q (%s), %v", p.Name, p.Record.Serial, err)
		}
		if got := authority.MemoChain(&memo); len(got) != 2 || got[0] != other.Certificate {
			t.Errorf("memo holds %v, want the last chain verified", got)
		}
		if _, err := f.Authority.AuthenticateConn(ctx, &memo, chain, src); err != nil {
			t.Fatal(err)
		}
		foreign := testpki.New(t, "example.org")
		leaf := foreign.Leaf(t, foreign.ID(t, "/billing/api"))
		_, err = f.Authority.AuthenticateConn(ctx, &memo, []*x509.Certificate{leaf.Cert, foreign.Intermediate}, src)
		if authority.KindOf(err) != authority.KindUnauthenticated {
			t.Errorf("a foreign chain on a connection that verified another: %v, want unauthenticated", err)
		}
		if got := authority.MemoChain(&memo); len(got) != 2 || got[0] != iss.Certificate {
			t.Errorf("a refused chain replaced the memo: %v", got)
		}
	})
	t.Run("the time is checked on every request", func(t *testing.T) {
		clock = func() time.Time { return iss.Certificate.NotAfter.Add(time.Second) }
		defer func() { clock = func() time.Time { return now } }()
		if _, err := f.Authority.AuthenticateConn(ctx, &memo, chain, src); authority.KindOf(err) != authority.KindCertExpired {
			t.Errorf("expired certificate on a remembered connection: %v, want certificate-expired", err)
		}
	})
	t.Run("the inventory status is read on every request", func(t *testing.T) {
		if _, err := f.Authority.Revoke(ctx, f.Admin, iss.Record.Serial, 1, netip.Addr{}); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Authority.AuthenticateConn(ctx, &memo, chain, src); authority.KindOf(err) != authority.KindCertRevoked {
			t.Errorf("revoked certificate on a remembered connection: %v, want certificate-revoked", err)
		}
	})
	t.Run("a refused chain is not remembered", func(t *testing.T) {
		var fresh authority.ConnMemo
		foreign := testpki.New(t, "example.org")
		leaf := foreign.Leaf(t, foreign.ID(t, "/billing/api"))
		f.Authority.AuthenticateConn(ctx, &fresh, []*x509.Certificate{leaf.Cert, foreign.Intermediate}, src)
		if got := authority.MemoChain(&fresh); got != nil {
			t.Errorf("memo holds %v after a refused chain", got)
		}
	})
}
