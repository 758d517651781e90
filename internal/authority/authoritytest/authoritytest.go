// Package authoritytest builds a real authority for tests: a throwaway CA,
// the embedded SQLite store in a temp dir, a small policy and an admin
// principal. Nothing in it is a fake.
package authoritytest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/duration"
	"github.com/mica-pki/mica/internal/policy"
	"github.com/mica-pki/mica/internal/rotation"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/sqlite"
	"github.com/mica-pki/mica/internal/testpki"
	"github.com/mica-pki/mica/internal/token"
)

// The fixture's administrators, one per built-in role.
const (
	AdminID    = "spiffe://example.org/mica/admin/root"
	OperatorID = "spiffe://example.org/mica/admin/op"
	AuditorID  = "spiffe://example.org/mica/admin/aud"
)

// ServerNames are the fixture server's own names (reserved).
var ServerNames = []string{"localhost", "127.0.0.1"}

// Fixture is a wired authority and what it was built from.
type Fixture struct {
	Authority *authority.Authority
	Store     store.Store
	PKI       *testpki.PKI
	Admin     authority.Principal
	// Operator and Auditor hold mica-admin credentials with those roles.
	Operator, Auditor authority.Principal
	// OperatorCred and AuditorCred are their credentials, for mTLS tests.
	OperatorCred, AuditorCred Cred
	// AdminIssued is the admin's credential, for mTLS tests.
	AdminIssued *authority.Issued
	AdminKey    *ecdsa.PrivateKey
}

// New builds a fixture whose "service" profile allows
// spiffe://example.org/billing/* for up to 24h.
func New(t testing.TB) *Fixture {
	t.Helper()
	return NewWith(t, nil)
}

// NewWith is New with a chance to adjust the authority's Config (hooks,
// the audit log) before it is built.
func NewWith(t testing.TB, adjust func(*authority.Config)) *Fixture {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "mica.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return NewOn(t, st, adjust)
}

// NewOn is NewWith on a store the test opened (PostgreSQL, say).
func NewOn(t testing.TB, st store.Store, adjust func(*authority.Config)) *Fixture {
	t.Helper()
	pki := testpki.New(t, "example.org")
	eng, err := policy.New(PolicyConfig())
	if err != nil {
		t.Fatal(err)
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	minter, _ := token.NewMinter(priv)
	jwtKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f := &Fixture{Store: st, PKI: pki}
	cfg := authority.Config{
		Store: st, Policy: eng, Issuers: rotation.Static(pki.Issuer, pki.Intermediate, pki.Root),
		Minter: minter, Tokens: token.NewVerifier(pub),
		Admins: map[string]authority.Role{AdminID: authority.RoleAdmin, OperatorID: authority.RoleOperator, AuditorID: authority.RoleAuditor},
		JWTKey: jwtKey,
	}
	if adjust != nil {
		adjust(&cfg)
	}
	f.Authority, err = authority.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.AdminKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f.AdminIssued = f.IssueInternal(t, authority.ProfileAdmin, AdminID, f.AdminKey)
	f.Admin = f.Principal(t, f.AdminIssued)
	f.OperatorCred = f.IssueCred(t, authority.ProfileAdmin, OperatorID)
	f.AuditorCred = f.IssueCred(t, authority.ProfileAdmin, AuditorID)
	f.Operator = f.Principal(t, f.OperatorCred.Issued)
	f.Auditor = f.Principal(t, f.AuditorCred.Issued)
	return f
}

// Cred is an issued certificate and its key.
type Cred struct {
	Issued *authority.Issued
	Key    crypto.Signer
}

// TLS is the credential as a TLS client certificate (leaf and chain).
func (c Cred) TLS() *tls.Certificate {
	out := &tls.Certificate{Certificate: [][]byte{c.Issued.Certificate.Raw}, PrivateKey: c.Key, Leaf: c.Issued.Certificate}
	for _, ch := range c.Issued.Chain {
		out.Certificate = append(out.Certificate, ch.Raw)
	}
	return out
}

// IssueCred issues name under a reserved profile with a fresh key.
func (f *Fixture) IssueCred(t testing.TB, profile, name string) Cred {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return Cred{Issued: f.IssueInternal(t, profile, name, key), Key: key}
}

// EnrollCred enrolls name under profile with a fresh token and key.
func (f *Fixture) EnrollCred(t testing.TB, profile, name string) Cred {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	iss, err := f.Authority.Enroll(context.Background(), authority.EnrollRequest{
		Token: f.Token(t, authority.TokenRequest{Identity: name, Profile: profile}), CSR: CSRWithKey(t, key)})
	if err != nil {
		t.Fatal(err)
	}
	return Cred{Issued: iss, Key: key}
}

// IssueInternal issues name under a reserved profile as mica does for
// itself, with key (a fresh P-256 key when nil).
func (f *Fixture) IssueInternal(t testing.TB, profile, name string, key crypto.Signer) *authority.Issued {
	t.Helper()
	if key == nil {
		key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	id, err := identity.Parse(name)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := f.Authority.IssueInternal(context.Background(), profile, id, key.Public(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

// PolicyConfig is the fixture's policy, for a test that builds a variant
// of it (NewWith, replacing Config.Policy): "service" allows
// spiffe://example.org/billing/*; "wide" allows every SPIFFE ID, *.example.org
// and 127.0.0.0/8, as broad as `mica init`'s starting config; mica's
// reserved profiles and names are added as in production.
func PolicyConfig() policy.Config {
	cfg, err := authority.WithReserved(policy.Config{TrustDomain: "example.org", Profiles: map[string]policy.ProfileConfig{
		"service": {SPIFFE: []string{"/billing/*"}, MaxTTL: duration.Duration(24 * time.Hour), DefaultTTL: duration.Duration(time.Hour)},
		"wide": {SPIFFE: []string{"/**"}, DNS: []string{"*.example.org", "localhost.example.org"}, IPs: []string{"127.0.0.0/8"},
			KeyTypes: []string{"ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "ed25519", "rsa"}},
	}}, ServerNames)
	if err != nil {
		panic(err)
	}
	return cfg
}

// Principal authenticates an issued certificate.
func (f *Fixture) Principal(t testing.TB, iss *authority.Issued) authority.Principal {
	t.Helper()
	p, err := f.Authority.Authenticate(context.Background(), []*x509.Certificate{iss.Certificate, iss.Chain[0]})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Token makes a one-time token as the admin.
func (f *Fixture) Token(t testing.TB, req authority.TokenRequest) string {
	t.Helper()
	tok, err := f.Authority.CreateToken(context.Background(), f.Admin, req)
	if err != nil {
		t.Fatal(err)
	}
	return tok.Raw
}

// Issue enrolls id under "service" with a fresh token.
func (f *Fixture) Issue(t testing.TB, id string) *authority.Issued {
	t.Helper()
	iss, err := f.Authority.Enroll(context.Background(), authority.EnrollRequest{
		Token: f.Token(t, authority.TokenRequest{Identity: id, Profile: "service"}), CSR: CSR(t)})
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

// CSR makes a CSR (DER) for a fresh P-256 key, naming uris, if any.
func CSR(t testing.TB, uris ...string) []byte {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return CSRWithKey(t, key, uris...)
}

// CSRWithKey makes a CSR (DER) signed by key, naming uris, if any.
func CSRWithKey(t testing.TB, key crypto.Signer, uris ...string) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
