package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/credential"
	"github.com/mica-pki/mica/internal/authority/authoritytest"
	"github.com/mica-pki/mica/internal/keys/file"

	"github.com/mica-pki/mica/internal/store/postgres/pgtest"
	"github.com/mica-pki/mica/internal/testpki"
	"github.com/mica-pki/mica/internal/token"
)

// pgCluster is this test binary's PostgreSQL, started on first use.
var pgCluster pgtest.Cluster

const testPassphrase = "correct horse battery staple for tests"

// testConfig is the config every integration test serves: profiles that
// exercise names, TTLs, keys, usages and a CEL rule.
const testConfig = `trust_domain: example.org
database: %DB%
admins:
  spiffe://example.org/mica/admin/admin: admin
profiles:
  service:
    spiffe: ["/billing/*", "/expiring/*"]
    default_ttl: 1h
    max_ttl: 24h
    key_types: [ecdsa-p256, ecdsa-p384, ed25519, rsa]
    ext_key_usage: [clientAuth, serverAuth]
    rule: '!request.spiffe_id.endsWith("/forbidden")'
  web:
    dns: ["*.svc.example.org"]
    ext_key_usage: [serverAuth]
  gateway:
    spiffe: ["/gateway/*"]
    dns: ["*.svc.example.org"]
    ext_key_usage: [clientAuth, serverAuth]
`

// env is the environment for one test's commands.
type testEnv struct {
	t       *testing.T
	root    *testing.T // owns the server process, which outlives subtests
	dataDir string
	env     []string
	server  *serverProc
	admin   *client.Client
	roots   *x509.CertPool
	engine  string
	dbURL   string // the PostgreSQL database, for tests that reach into it
}

func (e *testEnv) mica(args ...string) cmdResult { e.t.Helper(); return mica(e.t, e.env, args...) }
func (e *testEnv) micaOK(args ...string) string  { e.t.Helper(); return micaOK(e.t, e.env, args...) }

// newTestEnv initialises a data directory on the engine and serves it.
func newTestEnv(t *testing.T, engine string) *testEnv {
	t.Helper()
	return newTestEnvWith(t, engine, "")
}

// newTestEnvWith is newTestEnv with extra lines at the end of the config.
func newTestEnvWith(t *testing.T, engine, extraConfig string) *testEnv {
	t.Helper()
	return newTestEnvFrom(t, engine, testConfig+extraConfig)
}

// newTestEnvFrom is newTestEnv with another config, where %DB% stands for
// the engine's database.
func newTestEnvFrom(t *testing.T, engine, config string) *testEnv {
	t.Helper()
	e := initTestEnvFrom(t, engine, config, filepath.Join(t.TempDir(), "data"))
	e.start()
	return e
}

// initTestEnv initialises a data directory on the engine, with extra lines
// at the end of the config, and serves nothing yet.
func initTestEnv(t *testing.T, engine, extraConfig string) *testEnv {
	t.Helper()
	return initTestEnvAt(t, engine, extraConfig, filepath.Join(t.TempDir(), "data"))
}

// initTestEnvAt is initTestEnv with the data directory at dataDir.
func initTestEnvAt(t *testing.T, engine, extraConfig, dataDir string) *testEnv {
	t.Helper()
	return initTestEnvFrom(t, engine, testConfig+extraConfig, dataDir)
}

// initTestEnvFrom initialises dataDir with config, where %DB% stands for
// the engine's database.
func initTestEnvFrom(t *testing.T, engine, config, dataDir string) *testEnv {
	t.Helper()
	e := &testEnv{t: t, root: t, dataDir: dataDir, engine: engine}
	db := `""`
	if engine == "postgres" {
		db = pgCluster.Database(t)
		e.dbURL = db
	}
	e.env = []string{"MICA_PASSPHRASE=" + testPassphrase, "MICA_DATA_DIR=" + e.dataDir}
	if err := os.MkdirAll(e.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(config, "%DB%", db, 1)
	if err := os.WriteFile(filepath.Join(e.dataDir, configFileName), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	e.micaOK("init", "--trust-domain", "example.org")
	return e
}

func (e *testEnv) start() {
	e.t.Helper()
	e.server = startServe(e.root, e.env)
	e.env = append(e.env, "MICA_SERVER="+e.server.url)
	var err error
	if e.roots, err = loadPool(filepath.Join(e.dataDir, "ca", "root.pem")); err != nil {
		e.t.Fatal(err)
	}
	cred, err := tls.LoadX509KeyPair(filepath.Join(e.dataDir, "admin", fullchainFile), filepath.Join(e.dataDir, "admin", keyFile))
	if err != nil {
		e.t.Fatal(err)
	}
	if e.admin, err = client.New(client.Config{Server: e.server.url, Roots: e.roots, Certificate: &cred}); err != nil {
		e.t.Fatal(err)
	}
}

// issue creates a token and enrolls with the CLI, returning the output dir.
func (e *testEnv) issue(id, profile string, extra ...string) string {
	e.t.Helper()
	tok := strings.TrimSpace(e.micaOK("token", "create", "--identity", id, "--profile", profile))
	out := filepath.Join(e.t.TempDir(), "cred")
	e.micaOK(append([]string{"cert", "issue", "--token", tok, "--out", out}, extra...)...)
	return out
}

func (e *testEnv) countCerts() int {
	e.t.Helper()
	certs, err := e.admin.ListCertificates(context.Background(), client.ListFilter{Limit: 10000})
	if err != nil {
		e.t.Fatal(err)
	}
	return len(certs)
}

func readLeaf(t *testing.T, dir string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, certFile))
	if err != nil {
		t.Fatal(err)
	}
	certs, err := credential.ParseCertificates(data)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0]
}

func TestIntegration(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			e := newTestEnv(t, engine)
			// Subtests share one server; each gets e.t while it runs so
			// that helpers fail the subtest, not its parent.
			run := func(name string, f func(*testing.T)) {
				t.Run(name, func(t *testing.T) {
					parent := e.t
					e.t = t
					defer func() { e.t = parent }()
					f(t)
				})
			}
			run("IssueAndVerifyWithOpenSSL", e.testIssueAndVerify)
			run("MutualTLSBetweenProcesses", e.testMutualTLS)
			run("Renew", e.testRenew)
			run("Refusals", e.testRefusals)
			run("RevokedCannotRenew", e.testRevokedCannotRenew)
			run("Inventory", e.testInventory)
			run("DurableBeforeResponse", e.testDurable)
			run("NoSecretsInLogs", e.testNoSecretsInLogs)
			run("RevocationWithOpenSSL", e.testRevocationOpenSSL)
			run("RevokeVariants", e.testRevokeVariants)
			run("DenyList", e.testDenyList)
			run("FeedResumes", e.testFeedResumes)
			run("MTLSRevokedClientRefused", e.testMTLSRevokedClient)
			if engine == "postgres" {
				run("FeedAcrossServers", e.testFeedAcrossServers)
			}
		})
	}
}

func (e *testEnv) testIssueAndVerify(t *testing.T) {
	dir := e.issue("spiffe://example.org/billing/api", "service")
	fi, err := os.Stat(filepath.Join(dir, keyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key.pem mode = %v, want 0600", fi.Mode().Perm())
	}
	out, err := exec.Command("openssl", "verify", "-CAfile", filepath.Join(dir, bundleFile),
		"-untrusted", filepath.Join(dir, chainFile), filepath.Join(dir, certFile)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": OK") {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}
	leaf := readLeaf(t, dir)
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://example.org/billing/api" {
		t.Errorf("URI SANs = %v, want exactly spiffe://example.org/billing/api", leaf.URIs)
	}
	if len(leaf.ExtKeyUsage) != 2 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth && leaf.ExtKeyUsage[1] != x509.ExtKeyUsageClientAuth {
		t.Errorf("EKU = %v, want clientAuth and serverAuth", leaf.ExtKeyUsage)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life > time.Hour || life <= 0 {
		t.Errorf("lifetime %v, want the profile default of 1h at most", life)
	}
	// The token pins the root: a machine without --ca-file and without a
	// data directory still reaches the server safely.
	tok := strings.TrimSpace(e.micaOK("token", "create", "--identity", "spiffe://example.org/billing/pinned", "--profile", "service"))
	out2 := filepath.Join(t.TempDir(), "pinned")
	r := mica(t, []string{"MICA_SERVER=" + e.server.url}, "cert", "issue", "--data-dir", t.TempDir(), "--token", tok, "--out", out2)
	if r.code != 0 {
		t.Fatalf("cert issue with only a token: %s", r.stderr)
	}
}

func (e *testEnv) testMutualTLS(t *testing.T) {
	serverDir := e.issue("spiffe://example.org/billing/api", "service")
	clientDir := e.issue("spiffe://example.org/billing/worker", "service")
	addr := startTLSServerProcess(t, serverDir)

	dial := func(cert tls.Certificate) (string, error) {
		conn, err := tls.Dial("tcp", addr, &tls.Config{
			MinVersion: tls.VersionTLS13, RootCAs: e.roots, Certificates: []tls.Certificate{cert},
			// The server's identity is its SPIFFE ID, not a host name.
			InsecureSkipVerify: true,
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				return verifySPIFFEPeer(raw, e.roots, "spiffe://example.org/billing/api")
			},
		})
		if err != nil {
			return "", err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(conn).ReadString('\n')
		return strings.TrimSpace(line), err
	}
	good, err := tls.LoadX509KeyPair(filepath.Join(clientDir, fullchainFile), filepath.Join(clientDir, keyFile))
	if err != nil {
		t.Fatal(err)
	}
	got, err := dial(good)
	if err != nil || got != "hello spiffe://example.org/billing/worker" {
		t.Fatalf("mTLS with two mica certificates: got %q, %v", got, err)
	}
	other := testpki.New(t, "example.org")
	bad := other.Leaf(t, other.ID(t, "/billing/worker")).TLS()
	if got, err := dial(bad); err == nil {
		t.Fatalf("mTLS with a certificate from another CA succeeded: %q", got)
	}
}

// verifySPIFFEPeer checks a server chain against roots and its URI SAN.
func verifySPIFFEPeer(raw [][]byte, roots *x509.CertPool, want string) error {
	var certs []*x509.Certificate
	for _, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return err
		}
		certs = append(certs, c)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return err
	}
	if len(certs[0].URIs) != 1 || certs[0].URIs[0].String() != want {
		return errors.New("unexpected server identity")
	}
	return nil
}

func (e *testEnv) testRenew(t *testing.T) {
	dir := e.issue("spiffe://example.org/billing/renewer", "service")
	before := readLeaf(t, dir)
	keyBefore, _ := os.ReadFile(filepath.Join(dir, keyFile))
	e.micaOK("cert", "renew", "--cert", filepath.Join(dir, certFile), "--key", filepath.Join(dir, keyFile))
	after := readLeaf(t, dir)
	keyAfter, _ := os.ReadFile(filepath.Join(dir, keyFile))
	if before.SerialNumber.Cmp(after.SerialNumber) == 0 {
		t.Fatal("renewal returned the same certificate")
	}
	if after.URIs[0].String() != before.URIs[0].String() || len(after.URIs) != 1 {
		t.Errorf("renewal changed the identity: %v → %v", before.URIs, after.URIs)
	}
	if bytes.Equal(keyBefore, keyAfter) {
		t.Error("renewal kept the key; a new key is the default")
	}
	rec, err := e.admin.Certificate(context.Background(), after.SerialNumber.Text(16))
	if err != nil {
		t.Fatal(err)
	}
	if rec.RenewedFrom != before.SerialNumber.Text(16) || rec.Profile != "service" {
		t.Errorf("renewal record = %+v, want renewed_from %s and profile service", rec, before.SerialNumber.Text(16))
	}
	// --reuse-key keeps the key.
	e.micaOK("cert", "renew", "--reuse-key", "--cert", filepath.Join(dir, certFile), "--key", filepath.Join(dir, keyFile))
	keyReused, _ := os.ReadFile(filepath.Join(dir, keyFile))
	if !bytes.Equal(keyAfter, keyReused) {
		t.Error("--reuse-key replaced the key")
	}
}

func csrPEM(der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// mint signs a token with the server's own token key, for refusals that the
// admin API would (rightly) not let an admin create.
func (e *testEnv) mint(t *testing.T, c token.Claims) string {
	t.Helper()
	k, err := file.Load(filepath.Join(e.dataDir, "token.key"), []byte(testPassphrase))
	if err != nil {
		t.Fatal(err)
	}
	m, err := token.NewMinter(k.(ed25519.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	if c.Issuer == "" {
		c.Issuer = "test"
	}
	raw, err := m.Mint(c)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func (e *testEnv) testRefusals(t *testing.T) {
	ctx := context.Background()
	anon, err := client.New(client.Config{Server: e.server.url, Roots: e.roots})
	if err != nil {
		t.Fatal(err)
	}
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	newToken := func(id, profile string) string {
		tr, err := e.admin.CreateToken(ctx, client.TokenRequest{Identity: id, Profile: profile})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Token
	}
	now := time.Now()
	usedToken := newToken("spiffe://example.org/billing/once", "service")
	if _, err := anon.Enroll(ctx, usedToken, client.CertificateRequest{CSR: csrPEM(authoritytest.CSRWithKey(t, p256))}); err != nil {
		t.Fatal(err)
	}
	badSig := authoritytest.CSRWithKey(t, p256)
	badSig[len(badSig)-5] ^= 0xff

	tests := []struct {
		name string
		do   func() error
		want string // problem slug
	}{
		{"token replay", func() error {
			// With another key: the same token and key get the certificate
			// they paid for again (a client whose response was lost).
			_, err := anon.Enroll(ctx, usedToken, client.CertificateRequest{CSR: csrPEM(authoritytest.CSR(t))})
			return err
		}, "token-replayed"},
		{"expired token", func() error {
			tok := e.mint(t, token.Claims{Identity: "spiffe://example.org/billing/late", Profile: "service",
				IssuedAt: now.Add(-2 * time.Hour), Expiry: now.Add(-time.Hour)})
			_, err := anon.Enroll(ctx, tok, client.CertificateRequest{CSR: csrPEM(authoritytest.CSRWithKey(t, p256))})
			return err
		}, "token-expired"},
		{"forged token", func() error {
			_, err := anon.Enroll(ctx, "eyJhbGciOiJFZERTQSJ9.e30.AAAA", client.CertificateRequest{CSR: csrPEM(authoritytest.CSRWithKey(t, p256))})
			return err
		}, "token-invalid"},
		{"token for another identity", func() error {
			tok := newToken("spiffe://example.org/billing/a", "service")
			_, err := anon.Enroll(ctx, tok, client.CertificateRequest{CSR: csrPEM(authoritytest.CSRWithKey(t, p256, "spiffe://example.org/billing/b"))})
			return err
		}, "identity-mismatch"},
		{"CSR signature does not match", func() error {
			tok := newToken("spiffe://example.org/billing/sig", "service")
			_, err := anon.Enroll(ctx, tok, client.CertificateRequest{CSR: csrPEM(badSig)})
			return err
		}, "bad-csr"},
		{"wildcard name", func() error {
			tok := e.mint(t, token.Claims{Identity: "*.svc.example.org", Profile: "web", IssuedAt: now, Expiry: now.Add(time.Minute)})
			_, err := anon.Enroll(ctx, tok, client.CertificateRequest{CSR: csrPEM(authoritytest.CSRWithKey(t, p256))})
			return err
		}, "wildcard-not-allowed"},
		{"wildcard name at token creation", func() error {
			_, err := e.admin.CreateToken(ctx, client.TokenRequest{Identity: "*.svc.example.org", Profile: "web"})
			return err
		}, "wildcard-not-allowed"},
		{"name outside the profile", func() error {
			tok := e.mint(t, token.Claims{Identity: "spiffe://example.org/payments/api", Profile: "service", IssuedAt: now, Expiry: now.Add(time.Minute)})
			_, err := anon.Enroll(ctx, tok, client.CertificateRequest{CSR: csrPEM(authoritytest.CSRWithKey(t, p256))})
			return err
		}, "identity-not-allowed"},
		{"RSA-1024 key", func() error {
			tok := newToken("spiffe://example.org/billing/weak", "service")
			_, err := anon.Enroll(ctx, tok, client.CertificateRequest{CSR: csrPEM(authoritytest.CSRWithKey(t, rsa1024))})
			return err
		}, "key-not-allowed"},
		{"TTL over the maximum", func() error {
			tok := newToken("spiffe://example.org/billing/long", "service")
			_, err := anon.Enroll(ctx, tok, client.CertificateRequest{CSR: csrPEM(authoritytest.CSRWithKey(t, p256)), TTL: "48h"})
			return err
		}, "ttl-too-long"},
		{"CEL rule says no", func() error {
			tok := e.mint(t, token.Claims{Identity: "spiffe://example.org/billing/forbidden", Profile: "service", IssuedAt: now, Expiry: now.Add(time.Minute)})
			_, err := anon.Enroll(ctx, tok, client.CertificateRequest{CSR: csrPEM(authoritytest.CSRWithKey(t, p256))})
			return err
		}, "rule-denied"},
		{"malformed body", func() error { return rawPost(e, "/v1/certificates", "Bearer x", []byte(`{"csr": 12`)) }, "malformed-body"},
		{"unknown field", func() error { return rawPost(e, "/v1/certificates", "Bearer x", []byte(`{"csr":"","admin":true}`)) }, "malformed-body"},
		{"oversized body", func() error {
			return rawPost(e, "/v1/certificates", "Bearer x", []byte(`{"csr":"`+strings.Repeat("A", 70<<10)+`"}`))
		}, "body-too-large"},
		{"no token", func() error {
			_, err := anon.Enroll(ctx, "", client.CertificateRequest{CSR: csrPEM(authoritytest.CSRWithKey(t, p256))})
			return err
		}, "token-missing"},
		{"token creation without credential", func() error {
			_, err := anon.CreateToken(ctx, client.TokenRequest{Identity: "spiffe://example.org/billing/x", Profile: "service"})
			return err
		}, "unauthenticated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.countCerts()
			err := tt.do()
			var p *client.Problem
			if !errors.As(err, &p) {
				t.Fatalf("got %v, want a problem %q", err, tt.want)
			}
			if p.Slug() != tt.want {
				t.Fatalf("problem %q (%s), want %q", p.Slug(), p.Detail, tt.want)
			}
			if p.Detail == "" || p.Title == "" || p.Status < 400 {
				t.Errorf("problem lacks title, detail or status: %+v", p)
			}
			if after := e.countCerts(); after != before {
				t.Fatalf("certificate count changed from %d to %d", before, after)
			}
		})
	}
}

func rawPost(e *testEnv, path, auth string, body []byte) error {
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.roots}}}
	defer hc.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, e.server.url+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", auth)
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		return errors.New("response is not application/problem+json but " + ct)
	}
	p := &client.Problem{}
	if err := json.NewDecoder(resp.Body).Decode(p); err != nil {
		return err
	}
	return p
}

// testRevokedCannotRenew: the CLI says in one line why a renewal was
// refused. That an expired or not yet valid certificate cannot renew is
// internal/api's TestRenewOutsideValidity, on an injected clock: here it
// would cost a wait for a certificate to expire.
func (e *testEnv) testRevokedCannotRenew(t *testing.T) {
	dir := e.issue("spiffe://example.org/billing/revoked", "service")
	leaf := readLeaf(t, dir)
	e.micaOK("cert", "revoke", leaf.SerialNumber.Text(16), "--reason", "keyCompromise")
	before := e.countCerts()
	r := e.mica("cert", "renew", "--cert", filepath.Join(dir, certFile), "--key", filepath.Join(dir, keyFile))
	if r.code != 1 || !strings.Contains(r.stderr, "revoked") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Fatalf("renewal with a revoked certificate: exit %d, stderr %q; want exit 1 and one line naming the revocation", r.code, r.stderr)
	}
	if after := e.countCerts(); after != before {
		t.Fatalf("certificate count %d → %d after a refused renewal", before, after)
	}
}

func (e *testEnv) testInventory(t *testing.T) {
	dir := e.issue("spiffe://example.org/billing/listed", "service")
	serial := readLeaf(t, dir).SerialNumber.Text(16)
	table := e.micaOK("cert", "list", "--identity", "spiffe://example.org/billing/listed")
	if !strings.Contains(table, serial) || !strings.Contains(table, "SERIAL") {
		t.Errorf("table listing lacks %s:\n%s", serial, table)
	}
	var certs []client.Certificate
	if err := json.Unmarshal([]byte(e.micaOK("cert", "list", "--profile", "service", "--status", "active", "--output", "json")), &certs); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range certs {
		found = found || c.Serial == serial
		if c.Profile != "service" || c.Status != "active" {
			t.Errorf("filter leaked %+v", c)
		}
	}
	if !found {
		t.Errorf("json listing lacks %s", serial)
	}
	csv := e.micaOK("cert", "list", "--expiring-within", "2h", "--output", "csv")
	if !strings.HasPrefix(csv, "serial,identity") || !strings.Contains(csv, serial) {
		t.Errorf("csv listing:\n%s", csv)
	}
	if out := e.micaOK("cert", "list", "--status", "revoked", "--output", "csv"); strings.Contains(out, serial) {
		t.Errorf("active certificate listed as revoked")
	}
	insp := e.micaOK("cert", "inspect", filepath.Join(dir, certFile))
	for _, want := range []string{"spiffe://example.org/billing/listed", serial, "Remaining:", "Status:", "active", "Issuer chain:"} {
		if !strings.Contains(insp, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, insp)
		}
	}
	if insp := e.micaOK("cert", "inspect", serial); !strings.Contains(insp, "billing/listed") {
		t.Errorf("inspect by serial:\n%s", insp)
	}
	r := e.mica("cert", "list", "--output", "yaml")
	if r.code != 2 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Errorf("bad --output: exit %d, stderr %q; want exit 2 and one line", r.code, r.stderr)
	}
}

func (e *testEnv) testDurable(t *testing.T) {
	dir := e.issue("spiffe://example.org/billing/durable", "service")
	serial := readLeaf(t, dir).SerialNumber.Text(16)
	// No graceful shutdown: whatever the client was told must already be
	// on disk.
	e.server.stop(t, syscall.SIGKILL)
	e.env = e.env[:len(e.env)-1] // drop the old MICA_SERVER
	e.start()
	rec, err := e.admin.Certificate(context.Background(), serial)
	if err != nil {
		t.Fatalf("certificate %s returned to the client is gone after a crash: %v", serial, err)
	}
	if rec.EventSeq == 0 {
		t.Errorf("record has no event sequence: %+v", rec)
	}
	// SIGTERM drains and exits cleanly.
	e.server.stop(t, syscall.SIGTERM)
	if code := e.server.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0\n%s", code, e.server.logs.String())
	}
	e.env = e.env[:len(e.env)-1]
	e.start()
}

func (e *testEnv) testNoSecretsInLogs(t *testing.T) {
	tok := strings.TrimSpace(e.micaOK("token", "create", "--identity", "spiffe://example.org/billing/logs", "--profile", "service"))
	out := filepath.Join(t.TempDir(), "c")
	e.micaOK("cert", "issue", "--token", tok, "--out", out)
	e.mica("cert", "issue", "--token", tok, "--out", filepath.Join(t.TempDir(), "again")) // a replay is logged
	logs := e.server.logs.String()
	if !strings.Contains(logs, "certificate issued") {
		t.Fatalf("server logs do not show issuance; is the test reading them?\n%s", logs)
	}
	for _, secret := range []string{tok, strings.Split(tok, ".")[2], testPassphrase, "PRIVATE KEY"} {
		if strings.Contains(logs, secret) {
			t.Errorf("server log contains a secret (%.12s…)", secret)
		}
	}
}
