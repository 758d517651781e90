package main

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/issuance"
	"github.com/mica-pki/mica/internal/ocsp"
	"github.com/mica-pki/mica/revocation"
)

// eventually retries f until it returns nil; the deadline bounds a broken
// test and is not a timing claim. Only for what another process (the
// server, an agent, the CLI) changes: nothing in this one signals it.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// openssl runs openssl and returns its combined output.
func openssl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("openssl", args...).CombinedOutput()
	return string(out), err
}

// fetchCRL downloads the CRL a certificate names, from this server's
// listener (the certificate names the configured public URL).
func (e *testEnv) fetchCRL(t *testing.T, dir string) []byte {
	t.Helper()
	leaf := readLeaf(t, dir)
	if len(leaf.CRLDistributionPoints) != 1 || len(leaf.OCSPServer) != 1 {
		t.Fatalf("certificate names CRL %v and OCSP %v, want one each", leaf.CRLDistributionPoints, leaf.OCSPServer)
	}
	u, err := url.Parse(leaf.CRLDistributionPoints[0])
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(e.server.httpURL + u.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	der, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("ETag") == "" || resp.Header.Get("Last-Modified") == "" {
		t.Fatalf("GET CRL: %s %v", resp.Status, resp.Header)
	}
	return der
}

func (e *testEnv) testRevocationOpenSSL(t *testing.T) {
	dir := e.issue("spiffe://example.org/billing/ocsp", "service")
	live := e.issue("spiffe://example.org/billing/ocsp-live", "service")
	serial := readLeaf(t, dir).SerialNumber.Text(16)
	ocsp := func(extra ...string) string {
		args := append([]string{"ocsp", "-issuer", filepath.Join(dir, chainFile), "-cert", filepath.Join(dir, certFile),
			"-url", e.server.httpURL + "/ocsp", "-CAfile", filepath.Join(e.dataDir, "ca", "root.pem")}, extra...)
		out, err := openssl(t, args...)
		if err != nil || !strings.Contains(out, "Response verify OK") {
			t.Fatalf("openssl ocsp: %v\n%s", err, out)
		}
		return out
	}
	if out := ocsp(); !strings.Contains(out, ": good") {
		t.Fatalf("before revocation: %s", out)
	}
	// A GET whose base64 holds "//" must reach the responder, not be
	// redirected by path cleaning: it answers (malformedRequest), 200.
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if resp, err := noRedirect.Get(e.server.httpURL + "/ocsp/MA//AA=="); err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/ocsp-response" {
		t.Errorf("GET with // in the request: %v %v", err, resp)
	}
	e.micaOK("cert", "revoke", serial, "--reason", "keyCompromise")
	for _, nonce := range [][]string{nil, {"-no_nonce"}} { // signed per request, and from the cache
		if out := ocsp(nonce...); !strings.Contains(out, ": revoked") || !strings.Contains(out, "keyCompromise") {
			t.Fatalf("after revocation (%v): %s", nonce, out)
		}
	}
	crlPath := filepath.Join(t.TempDir(), "crl.der")
	var der []byte
	eventually(t, "the CRL lists the revoked serial", func() error {
		der = e.fetchCRL(t, dir)
		os.WriteFile(crlPath, der, 0o644)
		out, err := openssl(t, "crl", "-inform", "DER", "-in", crlPath, "-noout", "-text")
		if err != nil || !strings.Contains(strings.ToLower(strings.ReplaceAll(out, ":", "")), serial) {
			return errString("openssl crl does not list " + serial + ":\n" + out)
		}
		return nil
	})
	if err := issuance.LintCRL(der); err != nil {
		t.Errorf("zlint on the served CRL: %v", err)
	}
	pemCRL := filepath.Join(t.TempDir(), "crl.pem")
	if out, err := openssl(t, "crl", "-inform", "DER", "-in", crlPath, "-out", pemCRL); err != nil {
		t.Fatal(out)
	}
	verify := func(d string) (string, error) {
		return openssl(t, "verify", "-crl_check", "-CRLfile", pemCRL, "-CAfile", filepath.Join(d, bundleFile),
			"-untrusted", filepath.Join(d, chainFile), filepath.Join(d, certFile))
	}
	if out, err := verify(dir); err == nil || !strings.Contains(out, "revoked") {
		t.Errorf("openssl verify -crl_check of the revoked certificate: %v\n%s", err, out)
	}
	if out, err := verify(live); err != nil {
		t.Errorf("openssl verify -crl_check of a live certificate: %v\n%s", err, out)
	}
}

func (e *testEnv) testRevokeVariants(t *testing.T) {
	const id = "spiffe://example.org/billing/many"
	a, b := e.issue(id, "service"), e.issue(id, "service")
	out := e.micaOK("cert", "revoke", "--identity", id, "--reason", "cessationOfOperation")
	for _, d := range []string{a, b} {
		if s := readLeaf(t, d).SerialNumber.Text(16); !strings.Contains(out, s) {
			t.Errorf("revoke --identity did not revoke %s:\n%s", s, out)
		}
	}
	if out := e.micaOK("cert", "revoke", "--identity", id); !strings.Contains(out, "nothing to revoke") {
		t.Errorf("second revoke --identity: %s", out)
	}
	// By fingerprint, in openssl's colon form.
	c := e.issue("spiffe://example.org/billing/byfp", "service")
	fpOut, _ := openssl(t, "x509", "-in", filepath.Join(c, certFile), "-noout", "-fingerprint", "-sha256")
	_, fp, _ := strings.Cut(strings.TrimSpace(fpOut), "=")
	if out := e.micaOK("cert", "revoke", "--fingerprint", fp); !strings.Contains(out, readLeaf(t, c).SerialNumber.Text(16)) {
		t.Errorf("revoke --fingerprint: %s", out)
	}
	// The holder revokes its own certificate over mTLS, and no other.
	own, other := e.issue("spiffe://example.org/billing/own", "service"), e.issue("spiffe://example.org/billing/other", "service")
	creds := []string{"--cert", filepath.Join(own, certFile), "--key", filepath.Join(own, keyFile)}
	if r := e.mica(append([]string{"cert", "revoke", readLeaf(t, other).SerialNumber.Text(16)}, creds...)...); r.code != 1 || !strings.Contains(r.stderr, "may not") {
		t.Errorf("holder revoking another's certificate: exit %d %s", r.code, r.stderr)
	}
	e.micaOK(append([]string{"cert", "revoke", readLeaf(t, own).SerialNumber.Text(16), "--reason", "superseded"}, creds...)...)
	rec, err := e.admin.Certificate(context.Background(), readLeaf(t, own).SerialNumber.Text(16))
	if err != nil || rec.Status != "revoked" || rec.RevocationReason != "superseded" {
		t.Errorf("after the holder revoked it: %+v, %v", rec, err)
	}
	if r := e.mica(append([]string{"cert", "renew"}, creds...)...); r.code != 1 || !strings.Contains(r.stderr, "revoked") {
		t.Errorf("renewal by a revoked certificate: exit %d %s", r.code, r.stderr)
	}
}

func (e *testEnv) testDenyList(t *testing.T) {
	const id = "spiffe://example.org/billing/denied"
	live := e.issue(id, "service")
	tok := strings.TrimSpace(e.micaOK("token", "create", "--identity", id, "--profile", "service"))
	e.micaOK("identity", "deny", id, "--reason", "host compromised")
	if out := e.micaOK("identity", "list"); !strings.Contains(out, id) || !strings.Contains(out, "host compromised") {
		t.Errorf("identity list: %s", out)
	}
	before := e.countCerts()
	r := e.mica("cert", "issue", "--token", tok, "--out", filepath.Join(t.TempDir(), "x"))
	if r.code != 1 || !strings.Contains(r.stderr, "deny list") {
		t.Errorf("issuance for a denied identity: exit %d %s", r.code, r.stderr)
	}
	r = e.mica("cert", "renew", "--cert", filepath.Join(live, certFile), "--key", filepath.Join(live, keyFile))
	if r.code != 1 || !strings.Contains(r.stderr, "deny list") {
		t.Errorf("renewal for a denied identity: exit %d %s", r.code, r.stderr)
	}
	if after := e.countCerts(); after != before {
		t.Errorf("certificates %d → %d while denied", before, after)
	}
	evs := e.micaOK("identity", "allow", id)
	if !strings.Contains(evs, "allowed") {
		t.Errorf("identity allow: %s", evs)
	}
	e.micaOK("cert", "renew", "--cert", filepath.Join(live, certFile), "--key", filepath.Join(live, keyFile))
}

// subscriber follows the feed of srv with the admin credential.
func (e *testEnv) subscriber(t *testing.T, srv *serverProc) *revocation.Subscriber {
	t.Helper()
	cred, err := tls.LoadX509KeyPair(filepath.Join(e.dataDir, "admin", fullchainFile), filepath.Join(e.dataDir, "admin", keyFile))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := revocation.NewSubscriber(revocation.Config{URL: srv.url + "/v1/revocations/feed",
		TLS: &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: e.roots, Certificates: []tls.Certificate{cred}}})
	if err != nil {
		t.Fatal(err)
	}
	return sub
}

// sameAsServer reports how the subscriber's set differs from the
// server's: its revoked, unexpired certificates and its deny list.
func (e *testEnv) sameAsServer(sub *revocation.Subscriber) error {
	ctx := context.Background()
	certs, err := e.admin.ListCertificates(ctx, client.ListFilter{Status: "revoked", Limit: 10000})
	if err != nil {
		return err
	}
	var serials []string
	for _, c := range certs {
		if c.NotAfter.After(time.Now()) {
			serials = append(serials, c.Serial)
		}
	}
	slices.Sort(serials)
	denied, err := e.admin.DeniedIdentities(ctx)
	if err != nil {
		return err
	}
	var ids []string
	for _, d := range denied {
		ids = append(ids, d.Identity)
	}
	sub.Set().Prune(time.Now())
	if got := sub.Set().Serials(); !slices.Equal(got, serials) {
		return errString("revoked serials differ: server " + strings.Join(serials, ",") + " subscriber " + strings.Join(got, ","))
	}
	if got := sub.Set().Identities(); !slices.Equal(got, ids) {
		return errString("denied identities differ: server " + strings.Join(ids, ",") + " subscriber " + strings.Join(got, ","))
	}
	return nil
}

func (e *testEnv) testFeedResumes(t *testing.T) {
	sub := e.subscriber(t, e.server)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sub.Run(ctx); close(done) }()
	e.micaOK("cert", "revoke", readLeaf(t, e.issue("spiffe://example.org/billing/feed-1", "service")).SerialNumber.Text(16))
	eventually(t, "subscriber has the server's set", func() error { return e.sameAsServer(sub) })
	cancel()
	<-done
	last := sub.Set().Seq()
	// Missed while disconnected.
	for _, n := range []string{"feed-2", "feed-3"} {
		e.micaOK("cert", "revoke", readLeaf(t, e.issue("spiffe://example.org/billing/"+n, "service")).SerialNumber.Text(16))
	}
	e.micaOK("identity", "deny", "spiffe://example.org/billing/feed-denied")
	if sub.Set().Seq() != last {
		t.Fatal("the subscriber changed while disconnected")
	}
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	go sub.Run(ctx)
	eventually(t, "resumed subscriber has exactly the server's set", func() error { return e.sameAsServer(sub) })
	e.micaOK("identity", "allow", "spiffe://example.org/billing/feed-denied")
	eventually(t, "subscriber follows the allow", func() error { return e.sameAsServer(sub) })
}

// testFeedAcrossServers: a revocation made through one server reaches a
// subscriber of another server sharing the database (LISTEN/NOTIFY).
func (e *testEnv) testFeedAcrossServers(t *testing.T) {
	second := startServe(t, e.env)
	sub := e.subscriber(t, second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sub.Run(ctx)
	eventually(t, "subscriber of the second server starts in step", func() error { return e.sameAsServer(sub) })
	serial := readLeaf(t, e.issue("spiffe://example.org/billing/across", "service")).SerialNumber.Text(16)
	e.micaOK("cert", "revoke", serial) // through the first server
	eventually(t, "the second server's subscriber sees the first server's revocation", func() error {
		if !sub.Set().Revoked(serial) {
			return errString("not yet")
		}
		return nil
	})
}

// TestOCSPCacheConfig: ocsp.cache_size is read as a size with a unit,
// defaults to the package's, refuses what it cannot mean with the fix,
// and is a restart-only setting.
func TestOCSPCacheConfig(t *testing.T) {
	base := "trust_domain: example.org\nprofiles:\n  service: {spiffe: [\"/**\"]}\n"
	for _, tc := range []struct {
		name, yaml string
		want       int64
		err        string
	}{
		{"Default", "", ocsp.DefaultCacheSize, ""},
		{"Given", "ocsp: {cache_size: 256MiB}\n", 256 << 20, ""},
		{"NoUnit", "ocsp: {cache_size: 33554432}\n", 0, "line 4: bytesize: \"33554432\" has no unit: write a whole number and a binary unit"},
		{"DecimalUnit", "ocsp: {cache_size: 32MB}\n", 0, "binary unit: B, KiB, MiB, GiB or TiB (e.g. 32MiB)"},
		{"TooSmall", "ocsp: {cache_size: 64KiB}\n", 0, "ocsp: cache_size 64KiB is below the smallest, 1MiB"},
		{"UnknownField", "ocsp: {cache: 32MiB}\n", 0, "field cache not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseConfig([]byte(base+tc.yaml), "mica.yaml")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, err := cfg.OCSP.CacheBytes(); err != nil || got != tc.want {
				t.Errorf("cache bytes %d, %v; want %d", got, err, tc.want)
			}
		})
	}
	a, _ := parseConfig([]byte(base), "mica.yaml")
	b, _ := parseConfig([]byte(base+"ocsp: {cache_size: 64MiB}\n"), "mica.yaml")
	if reflect.DeepEqual(restartOnly(a)["ocsp"], restartOnly(b)["ocsp"]) {
		t.Error("a changed ocsp.cache_size is not named as needing a restart")
	}
}

// TestOCSPCacheSize runs the server with a cache bound from mica.yaml:
// the bound is the one exported, openssl's requests are answered from
// the cache, and a revocation is answered revoked.
func TestOCSPCacheSize(t *testing.T) {
	e := newTestEnvWith(t, "sqlite", "ocsp:\n  cache_size: 2MiB\n")
	dir := e.issue("spiffe://example.org/billing/cached", "service")
	ocspQuery := func() string {
		out, err := openssl(t, "ocsp", "-issuer", filepath.Join(dir, chainFile), "-cert", filepath.Join(dir, certFile),
			"-url", e.server.httpURL+"/ocsp", "-CAfile", filepath.Join(e.dataDir, "ca", "root.pem"), "-no_nonce")
		if err != nil {
			t.Fatalf("openssl ocsp: %v\n%s", err, out)
		}
		return out
	}
	if out := ocspQuery(); !strings.Contains(out, ": good") {
		t.Fatalf("before revocation: %s", out)
	}
	if got := scrapedValue(t, e.server.metricsURL, "mica_ocsp_cache_limit_bytes"); got != 2<<20 {
		t.Errorf("mica_ocsp_cache_limit_bytes = %v, want 2 MiB as configured", got)
	}
	if n, b := scrapedValue(t, e.server.metricsURL, "mica_ocsp_cached_responses"), scrapedValue(t, e.server.metricsURL, "mica_ocsp_cache_bytes"); n != 1 || b <= 0 || b > 2<<20 {
		t.Errorf("after one request: %v responses cached in %v bytes, want one, within the bound", n, b)
	}
	e.micaOK("cert", "revoke", readLeaf(t, dir).SerialNumber.Text(16), "--reason", "keyCompromise")
	eventually(t, "OCSP answers revoked", func() error {
		if out := ocspQuery(); !strings.Contains(out, ": revoked") {
			return errString("after revocation: " + out)
		}
		return nil
	})
}
