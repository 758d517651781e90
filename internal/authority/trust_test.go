package authority_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/authority/authoritytest"
	"github.com/mica-pki/mica/internal/policy"
	"github.com/mica-pki/mica/internal/store"
)

// Hole 1 of the trust-model review: an operator minted a token for an
// administrator's SPIFFE ID under an ordinary profile that covers "/**",
// enrolled, and was treated as that administrator. Both steps are closed:
// the reserved names are refused under ordinary profiles, and a role is
// carried only by a mica-admin credential.
func TestOperatorCannotBecomeAdmin(t *testing.T) {
	f := authoritytest.New(t)
	ctx := context.Background()
	_, err := f.Authority.CreateToken(ctx, f.Operator, authority.TokenRequest{Identity: authoritytest.AdminID, Profile: "wide"})
	wantRefusal(t, "operator token for an admin's name under wide", err, authority.KindPolicyDenied, string(policy.ReasonReservedName))
	_, err = f.Authority.CreateToken(ctx, f.Operator, authority.TokenRequest{Identity: "spiffe://example.org/mica/admin/evil", Profile: authority.ProfileAdmin})
	wantRefusal(t, "operator token under mica-admin", err, authority.KindForbidden, "")
	// Even the admin cannot put a reserved name under an ordinary profile.
	_, err = f.Authority.CreateToken(ctx, f.Admin, authority.TokenRequest{Identity: "spiffe://example.org/mica/anything", Profile: "wide"})
	wantRefusal(t, "admin token for /mica/anything under wide", err, authority.KindPolicyDenied, string(policy.ReasonReservedName))
}

// Defence in depth: were a certificate with an administrator's name ever
// issued under an ordinary profile (by a policy without the reserved
// names, here), it would still carry no role.
func TestRoleComesFromTheCredentialNotTheName(t *testing.T) {
	f := authoritytest.NewWith(t, func(c *authority.Config) {
		eng, err := policy.New(policy.Config{TrustDomain: "example.org", Profiles: map[string]policy.ProfileConfig{
			"wide":                 {SPIFFE: []string{"/**"}},
			authority.ProfileAdmin: {SPIFFE: []string{"/mica/admin/*"}, ExtKeyUsage: []string{"clientAuth"}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		c.Policy = eng
	})
	ctx := context.Background()
	tok, err := f.Authority.CreateToken(ctx, f.Admin, authority.TokenRequest{Identity: authoritytest.AdminID, Profile: "wide"})
	if err != nil {
		t.Fatal(err)
	}
	iss, err := f.Authority.Enroll(ctx, authority.EnrollRequest{Token: tok.Raw, CSR: authoritytest.CSR(t)})
	if err != nil {
		t.Fatal(err)
	}
	p := f.Principal(t, iss)
	if p.Name != authoritytest.AdminID || len(p.Roles) != 0 {
		t.Fatalf("admin's name under profile wide authenticated as %q with roles %q, want none", p.Name, p.Roles)
	}
	_, err = f.Authority.Deny(ctx, p, "spiffe://example.org/billing/x", "", netip.Addr{})
	wantRefusal(t, "deny by the impostor", err, authority.KindForbidden, "")
	wantRefusal(t, "stats by the impostor", f.Authority.Authorize(p, authority.ActServerStats, authority.Resource{}), authority.KindForbidden, "")
}

// Hole 2: the API's own names (server_names) were issuable under ordinary
// profiles whose patterns covered them.
func TestServerNamesAreReserved(t *testing.T) {
	f := authoritytest.New(t)
	for _, name := range []string{"127.0.0.1", "::ffff:127.0.0.1"} {
		_, err := f.Authority.CreateToken(context.Background(), f.Admin, authority.TokenRequest{Identity: name, Profile: "wide"})
		wantRefusal(t, "token for "+name, err, authority.KindPolicyDenied, string(policy.ReasonReservedName))
	}
	// An address next to it is an ordinary name.
	if _, err := f.Authority.CreateToken(context.Background(), f.Admin, authority.TokenRequest{Identity: "127.0.0.2", Profile: "wide"}); err != nil {
		t.Fatalf("127.0.0.2 under wide: %v", err)
	}
	if err := f.Authority.CheckIdentity("wide", mustParse(t, "127.0.0.1")); authority.KindOf(err) != authority.KindPolicyDenied {
		t.Fatalf("CheckIdentity (the ACME door's pre-check) allowed the server's own address: %v", err)
	}
}

// Hole 5: a denied identity still got JWT-SVIDs.
func TestDeniedIdentityGetsNoJWTSVID(t *testing.T) {
	f := authoritytest.New(t)
	ctx := context.Background()
	p := f.Principal(t, f.Issue(t, "spiffe://example.org/billing/api"))
	if _, err := f.Authority.MintJWTSVID(ctx, p, authority.JWTSVIDRequest{Audience: []string{"db"}}); err != nil {
		t.Fatalf("before the denial: %v", err)
	}
	if _, err := f.Authority.Deny(ctx, f.Admin, "spiffe://example.org/billing/api", "compromised", netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	_, err := f.Authority.MintJWTSVID(ctx, p, authority.JWTSVIDRequest{Audience: []string{"db"}})
	wantRefusal(t, "JWT-SVID for a denied identity", err, authority.KindForbidden, authority.ReasonIdentityDenied)
}

// The role × action matrix: every action of the table, for a workload, its
// own certificate and another's, and each built-in role. A change to the
// table shows up here as a diff a reviewer can read.
func TestAuthorizeMatrix(t *testing.T) {
	f := authoritytest.New(t)
	workload := f.Principal(t, f.Issue(t, "spiffe://example.org/billing/api"))
	other := f.Issue(t, "spiffe://example.org/billing/other").Record.Serial
	own := workload.Record.Serial
	principals := []struct {
		name string
		p    authority.Principal
	}{
		{"workload", workload}, {"auditor", f.Auditor}, {"operator", f.Operator}, {"admin", f.Admin},
	}
	type row struct {
		act   authority.Action
		res   authority.Resource
		allow string // the principals allowed, space-separated
	}
	all := "workload auditor operator admin"
	rows := []row{
		{authority.ActTokenCreate, authority.Resource{Profile: "service"}, "operator admin"},
		{authority.ActTokenCreate, authority.Resource{Profile: authority.ProfileAdmin}, "admin"},
		{authority.ActRenew, authority.Resource{}, all},
		{authority.ActCertRead, authority.Resource{Serial: own}, all},
		{authority.ActCertRead, authority.Resource{Serial: other}, "auditor operator admin"},
		{authority.ActCertList, authority.Resource{}, "auditor operator admin"},
		{authority.ActCertRevoke, authority.Resource{Serial: own}, "workload admin"},
		{authority.ActCertRevoke, authority.Resource{Serial: other}, "admin"},
		{authority.ActIdentityRevoke, authority.Resource{}, "admin"},
		{authority.ActIdentityDeny, authority.Resource{}, "admin"},
		{authority.ActDenyListRead, authority.Resource{}, "auditor operator admin"},
		{authority.ActAuditRead, authority.Resource{}, "auditor operator admin"},
		{authority.ActAuditProof, authority.Resource{Serial: own}, all},
		{authority.ActAuditProof, authority.Resource{Serial: other}, "auditor operator admin"},
		{authority.ActReportRead, authority.Resource{}, "auditor operator admin"},
		{authority.ActServerStats, authority.Resource{}, "admin"},
		{authority.ActJWTSVID, authority.Resource{}, all},
		{authority.ActFeedSubscribe, authority.Resource{}, all},
		{authority.ActConsoleSignIn, authority.Resource{}, "auditor operator admin"},
		{authority.ActInternalIssuance, authority.Resource{}, ""},
		{authority.ActACMERevoke, authority.Resource{Serial: other}, ""},
	}
	for _, r := range rows {
		for _, pr := range principals {
			want := strings.Contains(" "+r.allow+" ", " "+pr.name+" ")
			err := f.Authority.Authorize(pr.p, r.act, r.res)
			if (err == nil) != want {
				t.Errorf("%s %s %+v: err = %v, want allowed = %v", pr.name, r.act, r.res, err, want)
			}
			if err != nil && authority.KindOf(err) != authority.KindForbidden {
				t.Errorf("%s %s: refusal of kind %v, want forbidden", pr.name, r.act, authority.KindOf(err))
			}
		}
		// Nobody unauthenticated, ever.
		if err := f.Authority.Authorize(authority.Principal{}, r.act, r.res); err == nil {
			t.Errorf("unauthenticated caller allowed %s", r.act)
		}
	}
}

// A holder who names its own certificate the way openssl prints serials
// (upper case, leading zero, colons) is still its holder.
func TestSerialSpellings(t *testing.T) {
	f := authoritytest.New(t)
	ctx := context.Background()
	iss := f.Issue(t, "spiffe://example.org/billing/api")
	p := f.Principal(t, iss)
	hex := strings.ToUpper(iss.Record.Serial)
	var colons []string
	if len(hex)%2 == 1 {
		hex = "0" + hex
	}
	for i := 0; i < len(hex); i += 2 {
		colons = append(colons, hex[i:i+2])
	}
	for _, spelled := range []string{iss.Record.Serial, strings.ToUpper(iss.Record.Serial), "0" + iss.Record.Serial, strings.Join(colons, ":")} {
		rec, err := f.Authority.Certificate(ctx, p, spelled)
		if err != nil || rec.Serial != iss.Record.Serial {
			t.Errorf("holder reading its certificate as %q: %v", spelled, err)
		}
	}
	for _, bad := range []string{"", "xyz", "-1", strings.Repeat("f", 41), "0x"} {
		_, err := f.Authority.Certificate(ctx, f.Admin, bad)
		wantRefusal(t, "serial "+bad, err, authority.KindInvalid, "")
	}
}

// Bad input gets a clear refusal of the caller's kind, never an internal
// error, and records no certificate.
func TestKeysAndLifetimesPolicyOffersNeverFailInternally(t *testing.T) {
	f := authoritytest.New(t)
	ctx := context.Background()
	rsa2048, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsa4096, _ := rsa.GenerateKey(rand.Reader, 4096)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	for name, key := range map[string]crypto.Signer{"rsa-2048": rsa2048, "rsa-4096": rsa4096, "ecdsa-p521": p521} {
		tok := f.Token(t, authority.TokenRequest{Identity: "spiffe://example.org/keys/" + name, Profile: "wide"})
		if _, err := f.Authority.Enroll(ctx, authority.EnrollRequest{Token: tok, CSR: authoritytest.CSRWithKey(t, key)}); err != nil {
			t.Errorf("%s, which the profile allows: %v", name, err)
		}
	}
	before, _ := f.Store.CountCertificates(ctx, store.Filter{})
	for _, ttl := range []time.Duration{time.Nanosecond, 10 * time.Millisecond, 999 * time.Millisecond} {
		tok := f.Token(t, authority.TokenRequest{Identity: "spiffe://example.org/billing/short", Profile: "service"})
		_, err := f.Authority.Enroll(ctx, authority.EnrollRequest{Token: tok, CSR: authoritytest.CSR(t), TTL: ttl})
		wantRefusal(t, "ttl "+ttl.String(), err, authority.KindPolicyDenied, string(policy.ReasonInvalidRequest))
	}
	if after, _ := f.Store.CountCertificates(ctx, store.Filter{}); after != before {
		t.Fatalf("refused requests recorded %d certificates", after-before)
	}
}

// The admin credential's renewal chain has an end (hole 6) — checked by
// policy from the chain's age, which the authority computes.
func TestAdminRenewalChainEnds(t *testing.T) {
	eng, err := policy.New(authoritytest.PolicyConfig())
	if err != nil {
		t.Fatal(err)
	}
	info, _ := eng.Profile(authority.ProfileAdmin)
	if info.MaxRenewalChain != authority.AdminMaxRenewalChain {
		t.Fatalf("mica-admin max_renewal_chain = %v, want %v", info.MaxRenewalChain, authority.AdminMaxRenewalChain)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	req := policy.Request{Profile: authority.ProfileAdmin, Identity: mustParse(t, authoritytest.AdminID), PublicKey: key.Public(),
		Method: policy.MethodRenew, ChainAge: authority.AdminMaxRenewalChain - time.Hour}
	if _, err := eng.Decide(req); err != nil {
		t.Fatalf("renewal inside the chain: %v", err)
	}
	req.ChainAge = authority.AdminMaxRenewalChain + time.Hour
	var denied *policy.DeniedError
	if _, err := eng.Decide(req); !errors.As(err, &denied) || denied.Reason != policy.ReasonRenewalChainEnded {
		t.Fatalf("renewal past the chain: %v, want %s", err, policy.ReasonRenewalChainEnded)
	}
}

func wantRefusal(t *testing.T, what string, err error, kind authority.Kind, reason string) {
	t.Helper()
	var e *authority.Error
	if !errors.As(err, &e) || e.Kind != kind || (reason != "" && e.Reason != reason) {
		t.Errorf("%s: err = %v, want kind %v reason %q", what, err, kind, reason)
		return
	}
	if e.Detail == "" {
		t.Errorf("%s: refusal without detail", what)
	}
}

func mustParse(t *testing.T, s string) identity.Identity {
	t.Helper()
	id, err := identity.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// Hole 6 end to end: an administrator's credential renews itself for 30
// days from its enrollment token, then needs a new token.
func TestAdminRenewalChainEndsThroughRenew(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	f := authoritytest.NewWith(t, func(c *authority.Config) { c.Clock = func() time.Time { return clock() } })
	ctx := context.Background()
	tok := f.Token(t, authority.TokenRequest{Identity: "spiffe://example.org/mica/admin/bob", Profile: authority.ProfileAdmin})
	iss, err := f.Authority.Enroll(ctx, authority.EnrollRequest{Token: tok, CSR: authoritytest.CSR(t)})
	if err != nil {
		t.Fatal(err)
	}
	start := iss.Record.ChainStartedAt
	now = now.Add(20 * 24 * time.Hour)
	renewed, err := f.Authority.Renew(ctx, authority.RenewRequest{Peer: f.Principal(t, iss), CSR: authoritytest.CSR(t)})
	if err != nil {
		t.Fatalf("renewal after 20 days: %v", err)
	}
	if !renewed.Record.ChainStartedAt.Equal(start) {
		t.Fatalf("renewal chain start %v, want the enrollment's %v", renewed.Record.ChainStartedAt, start)
	}
	now = now.Add(11 * 24 * time.Hour)
	_, err = f.Authority.Renew(ctx, authority.RenewRequest{Peer: f.Principal(t, renewed), CSR: authoritytest.CSR(t)})
	wantRefusal(t, "renewal 31 days into the chain", err, authority.KindPolicyDenied, string(policy.ReasonRenewalChainEnded))
	// Workload profiles have no cap unless they set one.
	w := f.Issue(t, "spiffe://example.org/billing/api")
	now = now.Add(10 * time.Minute)
	if _, err := f.Authority.Renew(ctx, authority.RenewRequest{Peer: f.Principal(t, w), CSR: authoritytest.CSR(t)}); err != nil {
		t.Fatalf("workload renewal: %v", err)
	}
}

// A client whose response was lost retries with the same token and key and
// gets the certificate it paid for; another key is still a replay.
func TestRetryWithSameTokenAndKeyGetsTheSameCertificate(t *testing.T) {
	f := authoritytest.New(t)
	ctx := context.Background()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tok := f.Token(t, authority.TokenRequest{Identity: "spiffe://example.org/billing/api", Profile: "service"})
	first, err := f.Authority.Enroll(ctx, authority.EnrollRequest{Token: tok, CSR: authoritytest.CSRWithKey(t, key)})
	if err != nil {
		t.Fatal(err)
	}
	again, err := f.Authority.Enroll(ctx, authority.EnrollRequest{Token: tok, CSR: authoritytest.CSRWithKey(t, key)})
	if err != nil || again.Record.Serial != first.Record.Serial || !again.Certificate.Equal(first.Certificate) {
		t.Fatalf("retry with the same key: %v, serial %v (want %s)", err, again, first.Record.Serial)
	}
	_, err = f.Authority.Enroll(ctx, authority.EnrollRequest{Token: tok, CSR: authoritytest.CSR(t)})
	wantRefusal(t, "the token with another key", err, authority.KindTokenReplayed, "")
	if n, _ := f.Store.CountCertificates(ctx, store.Filter{Profile: "service"}); n != 1 {
		t.Fatalf("%d certificates for one token, want 1", n)
	}
	// Revoked, it is not handed out again.
	if _, err := f.Authority.Revoke(ctx, f.Admin, first.Record.Serial, 1, netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	_, err = f.Authority.Enroll(ctx, authority.EnrollRequest{Token: tok, CSR: authoritytest.CSRWithKey(t, key)})
	wantRefusal(t, "retry after revocation", err, authority.KindTokenReplayed, "")
}
