package authority_test

import (
	"context"
	"crypto/x509"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/authority/authoritytest"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/sqlite"
)

// racingStore lets another request's write commit just before the next
// issuance is recorded: the moment after the authority has checked the
// caller and signed, when nothing it read before can still be trusted.
type racingStore struct {
	store.Store
	before func()
}

func (s *racingStore) RecordIssuance(ctx context.Context, iss *store.Issuance) error {
	if f := s.before; f != nil {
		s.before = nil
		f()
	}
	return s.Store.RecordIssuance(ctx, iss)
}

func newRacingFixture(t *testing.T) (*authoritytest.Fixture, *racingStore) {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "mica.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rs := &racingStore{Store: st}
	return authoritytest.NewOn(t, rs, nil), rs
}

// A revocation that commits while the renewal of the same certificate is
// being signed wins: the renewal is refused and records nothing, so a
// stolen credential cannot outrun its revocation by renewing.
func TestRevocationDuringRenewalWins(t *testing.T) {
	f, rs := newRacingFixture(t)
	ctx := context.Background()
	const id = "spiffe://example.org/billing/api"
	p := f.Principal(t, f.Issue(t, id))
	rs.before = func() {
		if _, err := f.Authority.Revoke(ctx, f.Admin, p.Record.Serial, 1, netip.Addr{}); err != nil {
			t.Errorf("revoke: %v", err)
		}
	}
	_, err := f.Authority.Renew(ctx, authority.RenewRequest{Peer: p, KeepKey: true})
	wantRefusal(t, "renewal of a certificate revoked while it was signed", err, authority.KindCertRevoked, "")
	certs, err := f.Store.ListCertificates(ctx, store.Filter{Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 1 {
		t.Errorf("%d certificates for %s, want only the revoked one: the refused renewal must record nothing", len(certs), id)
	}
}

// A denial that commits while a certificate for the identity is being
// signed wins, on every door: the certificate is not recorded.
func TestDenialDuringIssuanceWins(t *testing.T) {
	f, rs := newRacingFixture(t)
	ctx := context.Background()
	const id = "spiffe://example.org/billing/api"
	p := f.Principal(t, f.Issue(t, id))
	rs.before = func() {
		if _, err := f.Authority.Deny(ctx, f.Admin, id, "compromised", netip.Addr{}); err != nil {
			t.Errorf("deny: %v", err)
		}
	}
	_, err := f.Authority.Renew(ctx, authority.RenewRequest{Peer: p, KeepKey: true})
	wantRefusal(t, "renewal of an identity denied while it was signed", err, authority.KindForbidden, authority.ReasonIdentityDenied)
	if err != nil && !strings.Contains(err.Error(), id) {
		t.Errorf("refusal %q does not name the denied identity", err)
	}
	certs, err := f.Store.ListCertificates(ctx, store.Filter{Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 1 {
		t.Errorf("%d certificates for %s, want 1: the refused renewal must record nothing", len(certs), id)
	}
}

// On a connection whose chain the authority already knows, a renewal does
// not read the certificate's status before signing: the commit refuses a
// revoked one. Every other request still reads it, and so does a renewal
// by an administrator's credential.
func TestRenewalOnWarmConnectionOfRevokedCertificate(t *testing.T) {
	f := authoritytest.New(t)
	ctx := context.Background()
	const id = "spiffe://example.org/billing/api"
	cred := f.EnrollCred(t, "service", id)
	chain := append([]*x509.Certificate{cred.Issued.Certificate}, cred.Issued.Chain...)
	adminChain := append([]*x509.Certificate{f.AdminIssued.Certificate}, f.AdminIssued.Chain...)
	var memo, adminMemo authority.ConnMemo
	if _, err := f.Authority.AuthenticateConn(ctx, &memo, chain, netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Authority.AuthenticateConn(ctx, &adminMemo, adminChain, netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Authority.Revoke(ctx, f.Admin, cred.Issued.Record.Serial, 1, netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	_, err := f.Authority.AuthenticateConn(ctx, &memo, chain, netip.Addr{})
	wantRefusal(t, "another request by a revoked certificate", err, authority.KindCertRevoked, "")
	p, err := f.Authority.AuthenticateRenewal(ctx, &memo, chain, netip.Addr{})
	if err != nil {
		t.Fatalf("renewal on a warm connection: %v (its status is the commit's to check)", err)
	}
	_, err = f.Authority.Renew(ctx, authority.RenewRequest{Peer: p, KeepKey: true})
	wantRefusal(t, "renewal of a revoked certificate", err, authority.KindCertRevoked, "")
	certs, err := f.Store.ListCertificates(ctx, store.Filter{Identity: id})
	if err != nil || len(certs) != 1 {
		t.Errorf("certificates of %s = %d, %v; want the revoked one alone", id, len(certs), err)
	}

	if _, err := f.Authority.Revoke(ctx, f.Admin, f.AdminIssued.Record.Serial, 1, netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	_, err = f.Authority.AuthenticateRenewal(ctx, &adminMemo, adminChain, netip.Addr{})
	wantRefusal(t, "renewal by a revoked administrator's credential", err, authority.KindCertRevoked, "")
}
