package filescan

import (
	"context"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mica-pki/mica/internal/discover"
	"github.com/mica-pki/mica/internal/discover/discovertest"
	"github.com/mica-pki/mica/internal/testlayer"
)

// tool finds a program the test drives (testlayer.Tool): -short skips
// the test; missing, the program fails it.
func tool(t *testing.T, name string) string {
	t.Helper()
	return testlayer.Tool(t, name)
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
}

// TestScanTree builds a directory tree of PEM, DER, PKCS#12 and JKS files
// (the keystores made by openssl and keytool) and checks what the scan
// finds in it.
func TestScanTree(t *testing.T) {
	openssl, keytool := tool(t, "openssl"), tool(t, "keytool")
	root := discovertest.Issue(t, nil, discovertest.Spec{CN: "Files Root", IsCA: true})
	inter := discovertest.Issue(t, root, discovertest.Spec{CN: "Files Intermediate", IsCA: true})
	leaf := func(name string) *discovertest.Cert {
		return discovertest.Issue(t, inter, discovertest.Spec{CN: name, DNS: []string{name}})
	}
	web, leaky, hidden, der, p12, jks, locked, enc, a, b := leaf("web.test"), leaf("leaky.test"), leaf("hidden.test"),
		leaf("der.test"), leaf("p12.test"), leaf("jks.test"), leaf("locked.test"), leaf("enc.test"), leaf("a.test"), leaf("b.test")

	dir := t.TempDir()
	// t.TempDir's directories are closed to other users; open the way
	// in, so that a file's own mode decides who can read it.
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mk := func(rel string, data []byte, mode os.FileMode) string {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		discovertest.WriteFile(t, p, data, mode)
		return p
	}
	mk("web/fullchain.pem", discovertest.PEM(web.Cert, inter.Cert), 0o644)
	webKey := mk("web/private/key.pem", discovertest.KeyPEM(t, web.Key), 0o600)
	mk("leaky/cert.pem", discovertest.PEM(leaky.Cert), 0o644)
	leakyKey := mk("leaky/key.pem", discovertest.KeyPEM(t, leaky.Key), 0o644)
	mk("closed/cert.pem", discovertest.PEM(hidden.Cert), 0o644)
	hiddenKey := mk("closed/key.pem", discovertest.KeyPEM(t, hidden.Key), 0o644)
	if err := os.Chmod(filepath.Join(dir, "closed"), 0o700); err != nil {
		t.Fatal(err)
	}
	mk("der/cert.der", der.Cert.Raw, 0o644)
	mk("bundle/two.pem", discovertest.PEM(a.Cert, b.Cert, inter.Cert), 0o644)
	mk("trust/ca-bundle.pem", discovertest.PEM(root.Cert, inter.Cert), 0o644)
	mk("junk/not-a-cert.pem", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0o644)
	mk("junk/random.bin", []byte{0x30, 0x03, 0x02, 0x01, 0x05}, 0o644)
	mk("junk/big.pem", append(discovertest.PEM(web.Cert), make([]byte, 2<<20)...), 0o644)
	if err := os.Symlink(filepath.Join(dir, "leaky/cert.pem"), filepath.Join(dir, "junk/link.pem")); err != nil {
		t.Fatal(err)
	}

	// Keystores, made by the tools that make them in the field.
	work := t.TempDir()
	wf := func(name string, data []byte) string {
		p := filepath.Join(work, name)
		discovertest.WriteFile(t, p, data, 0o600)
		return p
	}
	p12Path := filepath.Join(dir, "p12/server.p12")
	os.MkdirAll(filepath.Dir(p12Path), 0o755)
	run(t, openssl, "pkcs12", "-export", "-in", wf("p12.pem", discovertest.PEM(p12.Cert)), "-inkey", wf("p12.key", discovertest.KeyPEM(t, p12.Key)),
		"-certfile", wf("chain.pem", discovertest.PEM(inter.Cert)), "-name", "server", "-passout", "pass:s3cret phrase", "-out", p12Path)
	os.Chmod(p12Path, 0o640)
	lockedPath := filepath.Join(dir, "p12/locked.pfx")
	run(t, openssl, "pkcs12", "-export", "-in", wf("locked.pem", discovertest.PEM(locked.Cert)), "-inkey", wf("locked.key", discovertest.KeyPEM(t, locked.Key)),
		"-passout", "pass:nobody-knows-this", "-out", lockedPath)
	jksSource := filepath.Join(work, "jks.p12")
	run(t, openssl, "pkcs12", "-export", "-in", wf("jks.pem", discovertest.PEM(jks.Cert)), "-inkey", wf("jks.key", discovertest.KeyPEM(t, jks.Key)),
		"-certfile", wf("chain2.pem", discovertest.PEM(inter.Cert)), "-name", "tomcat", "-passout", "pass:changeit", "-out", jksSource)
	jksPath := filepath.Join(dir, "java/keystore.jks")
	os.MkdirAll(filepath.Dir(jksPath), 0o755)
	run(t, keytool, "-importkeystore", "-noprompt", "-srckeystore", jksSource, "-srcstoretype", "PKCS12", "-srcstorepass", "changeit",
		"-destkeystore", jksPath, "-deststoretype", "JKS", "-deststorepass", "changeit", "-destkeypass", "changeit")
	os.Chmod(jksPath, 0o644)
	encKey := filepath.Join(dir, "enc/key.pem")
	os.MkdirAll(filepath.Dir(encKey), 0o755)
	run(t, openssl, "pkcs8", "-topk8", "-in", wf("enc.key", discovertest.KeyPEM(t, enc.Key)), "-v2", "aes-256-cbc", "-passout", "pass:s3cret phrase", "-out", encKey)
	os.Chmod(encKey, 0o644)
	mk("enc/cert.pem", discovertest.PEM(enc.Cert), 0o644)

	var problems []Problem
	cfg := Config{Passphrases: []string{"s3cret phrase", "changeit"}, MaxFileSize: 1 << 20, Problem: func(p Problem) { problems = append(problems, p) }}
	got := map[string]Found{}
	stats, err := Scan(context.Background(), []string{dir}, cfg, func(f Found) error {
		got[f.Location("host1").String()] = f
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	loc := func(rel, entry string) string {
		return discover.Location{Scheme: discover.SchemeFile, Host: "host1", Path: filepath.Join(dir, rel), Entry: entry}.String()
	}
	type want struct {
		loc    string
		format Format
		leaf   *x509.Certificate
		chain  int
		key    string
		world  bool
	}
	wants := []want{
		{loc("web/fullchain.pem", ""), FormatPEM, web.Cert, 2, webKey, false},
		{loc("leaky/cert.pem", ""), FormatPEM, leaky.Cert, 1, leakyKey, true},
		{loc("closed/cert.pem", ""), FormatPEM, hidden.Cert, 1, hiddenKey, false},
		{loc("der/cert.der", ""), FormatDER, der.Cert, 1, "", false},
		{loc("bundle/two.pem", "1"), FormatPEM, a.Cert, 2, "", false},
		{loc("bundle/two.pem", "2"), FormatPEM, b.Cert, 2, "", false},
		{loc("p12/server.p12", ""), FormatPKCS12, p12.Cert, 2, p12Path, false},
		{loc("java/keystore.jks", "tomcat"), FormatJKS, jks.Cert, 2, jksPath, true},
		{loc("enc/cert.pem", ""), FormatPEM, enc.Cert, 1, encKey, true},
	}
	for _, w := range wants {
		f, ok := got[w.loc]
		if !ok {
			t.Errorf("%s not found", w.loc)
			continue
		}
		delete(got, w.loc)
		if f.Format != w.format || !f.Chain[0].Equal(w.leaf) || len(f.Chain) != w.chain {
			t.Errorf("%s: %s with %d certificates, leaf %s; want %s, %d, %s", w.loc, f.Format, len(f.Chain), f.Chain[0].Subject, w.format, w.chain, w.leaf.Subject)
		}
		switch {
		case w.key == "" && f.Key != nil:
			t.Errorf("%s: matched key %s, want none", w.loc, f.Key.Path)
		case w.key != "" && (f.Key == nil || f.Key.Path != w.key || f.Key.WorldReadable != w.world):
			t.Errorf("%s: key %+v, want %s (world-readable %v)", w.loc, f.Key, w.key, w.world)
		}
	}
	for l := range got {
		t.Errorf("unexpected finding %s", l)
	}
	var problemPaths []string
	for _, p := range problems {
		problemPaths = append(problemPaths, filepath.Base(p.Path)+": "+p.Err.Error())
	}
	if len(problems) != 2 || !slices.ContainsFunc(problemPaths, func(s string) bool { return strings.HasPrefix(s, "locked.pfx: ") && strings.Contains(s, "passphrase") }) ||
		!slices.ContainsFunc(problemPaths, func(s string) bool { return strings.HasPrefix(s, "not-a-cert.pem: ") }) {
		t.Errorf("problems %q, want the locked PKCS#12 file and the broken PEM block", problemPaths)
	}
	if stats.Certificates != len(wants) || stats.Problems != 2 {
		t.Errorf("stats %+v", stats)
	}

	// With IncludeCA the trust bundle's CA certificates are reported too.
	withCA := 0
	cfg.IncludeCA, cfg.Problem = true, nil
	if _, err := Scan(context.Background(), []string{filepath.Join(dir, "trust")}, cfg, func(Found) error { withCA++; return nil }); err != nil || withCA != 2 {
		t.Errorf("IncludeCA: %d certificates, %v; want the root and the intermediate", withCA, err)
	}
	// Excluded directories are not entered.
	n := 0
	cfg.IncludeCA, cfg.Exclude = false, []string{filepath.Join(dir, "web"), filepath.Join(dir, "p12")}
	if _, err := Scan(context.Background(), []string{dir}, cfg, func(f Found) error {
		if strings.Contains(f.Path, "/web/") || strings.Contains(f.Path, "/p12/") {
			t.Errorf("found %s in an excluded directory", f.Path)
		}
		n++
		return nil
	}); err != nil || n != len(wants)-2 {
		t.Errorf("with exclusions: %d found, %v", n, err)
	}
	if _, err := Scan(context.Background(), []string{filepath.Join(dir, "no-such-dir")}, cfg, func(Found) error { return nil }); err == nil {
		t.Error("scanning a missing directory succeeded")
	}
}

func TestReadPassphrases(t *testing.T) {
	p := filepath.Join(t.TempDir(), "pass.txt")
	discovertest.WriteFile(t, p, []byte("one\r\n\n two with spaces \nthree"), 0o600)
	got, err := ReadPassphrases(p)
	if err != nil || !slices.Equal(got, []string{"one", " two with spaces ", "three"}) {
		t.Errorf("ReadPassphrases: %q, %v", got, err)
	}
}
