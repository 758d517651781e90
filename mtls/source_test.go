package mtls_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mica-pki/mica/credential"
	"github.com/mica-pki/mica/internal/atomicfile"
	"github.com/mica-pki/mica/internal/testpki"
	"github.com/mica-pki/mica/mtls"
)

func pemCerts(certs ...*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

func pemKey(t *testing.T, l *testpki.Leaf) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(l.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// writeFiles replaces the named files atomically, in the order given, the
// way the agent does (certificates first, key last).
func writeFiles(t *testing.T, dir string, files ...fileContent) {
	t.Helper()
	for _, f := range files {
		perm := os.FileMode(0o644)
		if f.name == "key.pem" {
			perm = 0o600
		}
		if err := atomicfile.Write(filepath.Join(dir, f.name), f.data, perm); err != nil {
			t.Fatal(err)
		}
	}
}

type fileContent struct {
	name string
	data []byte
}

func credentialFiles(t *testing.T, l *testpki.Leaf, roots ...*x509.Certificate) []fileContent {
	return []fileContent{{"cert.pem", pemCerts(l.Cert)}, {"chain.pem", pemCerts(l.Chain...)},
		{"bundle.pem", pemCerts(roots...)}, {"key.pem", pemKey(t, l)}}
}

// TestFileSourcePolls: the files are checked every poll interval; a
// renewed credential is taken at the next poll, a half-written one is not
// (the previous stays), and its completion is taken at the poll after.
func TestFileSourcePolls(t *testing.T) {
	pki := testpki.New(t, "example.org")
	newCA := testpki.New(t, "example.org")
	first, renewed, half := pki.Leaf(t, pki.ID(t, serverPath)), pki.Leaf(t, pki.ID(t, serverPath)), pki.Leaf(t, pki.ID(t, serverPath))
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		writeFiles(t, dir, credentialFiles(t, first, pki.Root)...)
		src, err := mtls.NewFileSource(dir, mtls.WithPollInterval(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		serial := func() string {
			c, _ := src.Certificate()
			return c.Leaf.SerialNumber.Text(16)
		}
		poll := func() {
			time.Sleep(time.Minute) // the synctest clock: one poll interval
			synctest.Wait()
		}

		writeFiles(t, dir, credentialFiles(t, renewed, pki.Root, newCA.Root)...)
		time.Sleep(time.Minute - time.Second)
		synctest.Wait()
		if got := serial(); got != first.Cert.SerialNumber.Text(16) {
			t.Fatalf("before the poll: serial %s, want the first %s", got, first.Cert.SerialNumber.Text(16))
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if got := serial(); got != renewed.Cert.SerialNumber.Text(16) || len(src.Roots()) != 2 {
			t.Fatalf("after the poll: serial %s with %d roots, want the renewed %s with 2", got, len(src.Roots()), renewed.Cert.SerialNumber.Text(16))
		}

		writeFiles(t, dir, fileContent{"cert.pem", pemCerts(half.Cert)})
		poll()
		if got := serial(); got != renewed.Cert.SerialNumber.Text(16) {
			t.Fatalf("a certificate without its key was taken: serial %s", got)
		}
		writeFiles(t, dir, fileContent{"key.pem", pemKey(t, half)})
		poll()
		if got := serial(); got != half.Cert.SerialNumber.Text(16) {
			t.Fatalf("the completed pair was not taken: serial %s, want %s", got, half.Cert.SerialNumber.Text(16))
		}
	})
}

// TestFileSourceHotReload: a server built once presents a renewed
// certificate, refuses a half-written one, and trusts a new CA as soon as
// the bundle names it, without a restart.
func TestFileSourceHotReload(t *testing.T) {
	pki := testpki.New(t, "example.org")
	newCA := testpki.New(t, "example.org")
	dir := t.TempDir()
	first := pki.Leaf(t, pki.ID(t, serverPath))
	writeFiles(t, dir, credentialFiles(t, first, pki.Root)...)
	// Reloaded by hand here: the poll that calls Reload is
	// TestFileSourcePolls's, on the synctest clock.
	src, err := mtls.NewFileSource(dir, mtls.WithPollInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()

	metrics, reg := newMetrics(t)
	srv := serveTLS(t, mustConfig(t, mtls.ServerConfig, mtls.Options{Source: src, Metrics: metrics,
		Authorize: mtls.AuthorizeTrustDomains("example.org")}))
	clientOf := func(p *testpki.PKI) *tls.Config {
		src := sourceOf(p, p.Leaf(t, p.ID(t, clientPath)))
		src.roots = []*x509.Certificate{pki.Root} // the server's CA
		cfg := mustConfig(t, mtls.ClientConfig, mtls.Options{Source: src,
			Authorize: mtls.AuthorizeIDs("spiffe://example.org" + serverPath)})
		// No resumption: a resumed session shows the certificate of the
		// session, and this test is about what a full handshake presents.
		cfg.ClientSessionCache = nil
		return cfg
	}
	presented := func(cfg *tls.Config) (string, error) {
		cs, res, err := srv.dial(t, cfg)
		if err != nil {
			return "", err
		}
		if res.err != nil {
			return "", res.err
		}
		return cs.PeerCertificates[0].SerialNumber.Text(16), nil
	}
	if got, err := presented(clientOf(pki)); err != nil || got != first.Cert.SerialNumber.Text(16) {
		t.Fatalf("first handshake presented %s (%v), want %s", got, err, first.Cert.SerialNumber.Text(16))
	}

	renewed := pki.Leaf(t, pki.ID(t, serverPath))
	writeFiles(t, dir, credentialFiles(t, renewed, pki.Root)...)
	if err := src.Reload(); err != nil {
		t.Fatalf("the renewed credential: %v", err)
	}
	if got, err := presented(clientOf(pki)); err != nil || got != renewed.Cert.SerialNumber.Text(16) {
		t.Fatalf("after the renewal the server presented %s (%v), want %s", got, err, renewed.Cert.SerialNumber.Text(16))
	}

	// Half-written: a new certificate next to the old key.
	half := pki.Leaf(t, pki.ID(t, serverPath))
	writeFiles(t, dir, fileContent{"cert.pem", pemCerts(half.Cert)})
	if err := src.Reload(); err == nil {
		t.Fatal("Reload accepted a certificate with the wrong key")
	}
	if got, err := presented(clientOf(pki)); err != nil || got != renewed.Cert.SerialNumber.Text(16) {
		t.Fatalf("after a mismatched write the server presented %s (%v), want the previous %s", got, err, renewed.Cert.SerialNumber.Text(16))
	}
	writeFiles(t, dir, fileContent{"key.pem", pemKey(t, half)})
	if err := src.Reload(); err != nil {
		t.Fatalf("the completed pair: %v", err)
	}
	if got, _ := presented(clientOf(pki)); got != half.Cert.SerialNumber.Text(16) {
		t.Fatalf("after the key arrived the server presented %s, want %s", got, half.Cert.SerialNumber.Text(16))
	}

	// A peer from a CA the bundle does not name yet, then does.
	if _, res, err := srv.dial(t, clientOf(newCA)); rejectReason(res.err) != mtls.ReasonUnknownCA || err == nil {
		t.Fatalf("peer of a CA not in the bundle: server %v", res.err)
	}
	writeFiles(t, dir, fileContent{"bundle.pem", pemCerts(pki.Root, newCA.Root)})
	if err := src.Reload(); err != nil {
		t.Fatalf("the new bundle: %v", err)
	}
	if _, err := presented(clientOf(newCA)); err != nil {
		t.Fatalf("a peer of the new CA after the bundle names it: %v", err)
	}
	if n := handshakes(t, reg, "server", mtls.ReasonUnknownCA); n < 1 {
		t.Errorf("unknown_ca count %v", n)
	}
	if _, err := presented(clientOf(pki)); err != nil {
		t.Fatalf("the old CA's peers after the bundle change: %v", err)
	}
}

func TestFileSourceMissing(t *testing.T) {
	dir := t.TempDir()
	if _, err := mtls.NewFileSource(dir); err == nil {
		t.Fatal("a directory without a credential was accepted")
	}
	pki := testpki.New(t, "example.org")
	l := pki.Leaf(t, pki.ID(t, serverPath))
	other := pki.Leaf(t, pki.ID(t, serverPath))
	writeFiles(t, dir, fileContent{"cert.pem", pemCerts(l.Cert)}, fileContent{"bundle.pem", pemCerts(pki.Root)},
		fileContent{"key.pem", pemKey(t, other)})
	if _, err := mtls.NewFileSource(dir); err == nil {
		t.Fatal("a key that does not match the certificate was accepted")
	}
	// chain.pem is optional; other names work.
	writeFiles(t, dir, fileContent{"svc.crt", pemCerts(l.Cert, pki.Intermediate)}, fileContent{"svc.key", pemKey(t, l)})
	src, err := mtls.NewFileSource(dir, mtls.WithFileNames(mtls.FileNames{Cert: "svc.crt", Key: "svc.key"}), mtls.WithPollInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	c, err := src.Certificate()
	if err != nil || len(c.Certificate) != 2 || !c.Leaf.Equal(l.Cert) {
		t.Fatalf("Certificate() = %d certificates, %v", len(c.Certificate), err)
	}
}

// TestFileSourceReadsSwitchedDirectory: over a credential directory that
// `mica agent` writes (package credential), Reload in a tight loop never
// fails across 50 switches, starting from a directory of plain files that
// the first write adopts, and ends on the last credential.
func TestFileSourceReadsSwitchedDirectory(t *testing.T) {
	pki := testpki.New(t, "example.org")
	dir := t.TempDir()
	writeFiles(t, dir, credentialFiles(t, pki.Leaf(t, pki.ID(t, serverPath)), pki.Root)...)
	src, err := mtls.NewFileSource(dir, mtls.WithPollInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	creds := make([]*credential.Credential, 50)
	for i := range creds {
		l := pki.Leaf(t, pki.ID(t, serverPath))
		if creds[i], err = credential.New(append([]*x509.Certificate{l.Cert}, l.Chain...), l.Key, []*x509.Certificate{pki.Root}); err != nil {
			t.Fatal(err)
		}
	}
	var stop atomic.Bool
	var reloads, failures atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	wg.Go(func() {
		for !stop.Load() {
			reloads.Add(1)
			if err := src.Reload(); err != nil && failures.Add(1) == 1 {
				firstErr.Store(err)
			}
		}
	})
	d := credential.Dir{Path: dir}
	for _, c := range creds {
		if err := d.Write(c); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if failures.Load() > 0 {
		t.Fatalf("%d of %d reloads failed across %d switches; first: %v", failures.Load(), reloads.Load(), len(creds), firstErr.Load())
	}
	if err := src.Reload(); err != nil {
		t.Fatal(err)
	}
	c, _ := src.Certificate()
	if !c.Leaf.Equal(creds[len(creds)-1].Leaf()) {
		t.Fatal("the source does not hold the last credential written")
	}
	t.Logf("figures: %d reloads across %d switches, none failed", reloads.Load(), len(creds))
}

// TestResumedHandshakeStillVerified: session tickets work (and are used),
// and a resumed connection of a client revoked since is refused.
func TestResumedHandshakeStillVerified(t *testing.T) {
	pki := testpki.New(t, "example.org")
	client := pki.Leaf(t, pki.ID(t, clientPath))
	set := &revocationSet{}
	metrics, reg := newMetrics(t)
	cfg := mustConfig(t, mtls.ServerConfig, mtls.Options{Source: sourceOf(pki, pki.Leaf(t, pki.ID(t, serverPath))),
		Authorize: mtls.AuthorizeTrustDomains("example.org"), Revocations: &set.Set, Metrics: metrics})
	var mu sync.Mutex
	var resumed []bool
	verify := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		mu.Lock()
		resumed = append(resumed, cs.DidResume)
		mu.Unlock()
		return verify(cs)
	}
	srv := serveTLS(t, cfg)
	clientCfg := mustConfig(t, mtls.ClientConfig, mtls.Options{Source: sourceOf(pki, client),
		Authorize: mtls.AuthorizeIDs("spiffe://example.org" + serverPath)})

	for i, wantResumed := range []bool{false, true} {
		cs, res, err := srv.dial(t, clientCfg)
		if err != nil || res.err != nil {
			t.Fatalf("handshake %d: client %v, server %v", i, err, res.err)
		}
		if cs.DidResume != wantResumed || res.state.DidResume != wantResumed {
			t.Fatalf("handshake %d resumed: client %v server %v, want %v", i, cs.DidResume, res.state.DidResume, wantResumed)
		}
	}
	set.revoke(client.Cert)
	_, res, err := srv.dial(t, clientCfg)
	if rejectReason(res.err) != mtls.ReasonRevokedFeed || err == nil {
		t.Fatalf("resumed handshake of a revoked client: server %v, client %v", res.err, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(resumed) != 3 || !resumed[2] {
		t.Fatalf("VerifyConnection saw resumptions %v, want the refusal on a resumed handshake", resumed)
	}
	if n := handshakes(t, reg, "server", mtls.ReasonRevokedFeed); n != 1 {
		t.Errorf("revoked_feed count %v, want 1", n)
	}
}
