package main

import (
	"context"
	"encoding/hex"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/crl"
)

// offlineConfig rotates quickly: a prepared CA activates 2 s after it is
// published.
const offlineConfig = `trust_domain: example.org
admins:
  spiffe://example.org/mica/admin/admin: admin
profiles:
  service:
    spiffe: ["/billing/*"]
    default_ttl: 1h
    max_ttl: 1h
ca:
  propagation: 2s
  poll: 200ms
`

// waitSlots polls `mica ca status` until cond holds; the deadline bounds a
// broken test.
func (e *testEnv) waitSlots(t *testing.T, what string, cond func(caStatus) bool) caStatus {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		st := e.caStatus(t)
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: slots %+v", what, st.Slots)
		}
		<-tick.C
	}
}

func slotsIn(st caStatus, kind, state string) []slotStatus {
	var out []slotStatus
	for _, s := range st.Slots {
		if s.Kind == kind && s.State == state {
			out = append(out, s)
		}
	}
	return out
}

// TestOfflineRootRollover rotates a CA whose root stays on its own
// machine: the next intermediate is requested by the server, signed at the
// ceremony and imported as the prepared slot; then the root rolls over at
// the ceremony (cross-signed both ways), the server imports it, and the
// next intermediate comes from the new root. A certificate issued after
// the rollover verifies with openssl against the old root alone and the
// new root alone.
func TestOfflineRootRollover(t *testing.T) {
	toolPath(t, "openssl")
	rootDir := filepath.Join(t.TempDir(), "root")
	env := []string{"MICA_PASSPHRASE=" + testPassphrase}
	micaOK(t, env, "init", "--root-only", "--data-dir", rootDir)
	e := &testEnv{t: t, root: t, dataDir: filepath.Join(t.TempDir(), "data"), engine: "sqlite"}
	e.env = append(env, "MICA_DATA_DIR="+e.dataDir)
	if err := os.MkdirAll(e.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.dataDir, configFileName), []byte(offlineConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	rootCA, serverCA := filepath.Join(rootDir, "ca"), filepath.Join(e.dataDir, "ca")
	sign := func(csr string) string {
		out := filepath.Join(t.TempDir(), "signed.pem")
		micaOK(t, env, "ca", "sign-intermediate", "--data-dir", rootDir, "--csr", filepath.Join(serverCA, csr), "--out", out)
		return out
	}
	e.micaOK("ca", "request-intermediate")
	e.micaOK("ca", "import-intermediate", "--cert", sign("intermediate.csr"), "--root", filepath.Join(rootCA, "root.pem"))
	e.micaOK("init")
	e.start()

	st := e.caStatus(t)
	if len(st.Slots) != 2 || st.Slots[0].Key != "no key" {
		t.Fatalf("after the first start: %+v, want the root's key offline", st.Slots)
	}
	for _, n := range st.Next {
		if n.Step == "prepare" && !strings.Contains(n.Why, "root is offline") {
			t.Errorf("status should say the next intermediate needs the ceremony: %+v", n)
		}
	}
	if r := e.mica("ca", "rotate", "--prepare"); r.code == 0 || !strings.Contains(r.stderr, "root ceremony") {
		t.Fatalf("forcing a preparation with the root offline: exit %d, %s", r.code, r.stderr)
	}

	// The next intermediate, signed at the ceremony.
	e.micaOK("ca", "request-intermediate", "--next")
	e.micaOK("ca", "import-intermediate", "--next", "--cert", sign("next-intermediate.csr"))
	if _, err := os.Stat(filepath.Join(serverCA, "next-intermediate.csr")); err == nil {
		t.Error("the pending request was left behind")
	}
	e.waitSlots(t, "the imported intermediate activates", func(st caStatus) bool {
		a := slotsIn(st, "intermediate", "active")
		return len(a) == 1 && a[0].ID == 3
	})

	// The root rolls over at the ceremony.
	micaOK(t, env, "ca", "new-root", "--data-dir", rootDir)
	e.micaOK("ca", "import-root", "--root", filepath.Join(rootCA, "root.pem"),
		"--cross-from-previous", filepath.Join(rootCA, "root-cross-from-previous.pem"),
		"--cross-to-previous", filepath.Join(rootCA, "root-cross-to-previous.pem"))
	e.micaOK("ca", "request-intermediate", "--next")
	e.micaOK("ca", "import-intermediate", "--next", "--cert", sign("next-intermediate.csr"))
	final := e.waitSlots(t, "the new root and its intermediate activate", func(st caStatus) bool {
		r, i := slotsIn(st, "root", "active"), slotsIn(st, "intermediate", "active")
		return len(r) == 1 && r[0].ID == 4 && len(i) == 1 && i[0].Parent == 4
	})
	if len(slotsIn(final, "root", "retired")) != 1 {
		t.Fatalf("the old root should stay retired in the bundle: %+v", final.Slots)
	}

	// Each intermediate that signed has its own OCSP responder, whose
	// certificate it issued under the reserved profile, in the inventory.
	ocspCerts, err := e.admin.ListCertificates(context.Background(), client.ListFilter{Profile: "mica-ocsp"})
	if err != nil {
		t.Fatal(err)
	}
	issuers := map[string]bool{}
	for _, c := range ocspCerts {
		if !strings.HasPrefix(c.Identity, "spiffe://example.org/mica/ocsp/") {
			t.Errorf("OCSP responder certificate for %q", c.Identity)
		}
		issuers[c.Issuer] = true
	}
	if len(issuers) < 3 {
		t.Errorf("OCSP responder certificates from %d intermediates in the inventory, want one from each of the 3 that signed", len(issuers))
	}

	// A certificate of the new hierarchy, for a verifier that trusts only
	// the old root and one that trusts only the new root.
	dir := e.issue("spiffe://example.org/billing/after-rollover", "service")
	for _, root := range []string{filepath.Join(serverCA, "root.pem"), filepath.Join(rootCA, "root.pem")} {
		out, err := exec.Command("openssl", "verify", "-x509_strict", "-CAfile", root, "-untrusted", filepath.Join(dir, chainFile),
			filepath.Join(dir, certFile)).CombinedOutput()
		if err != nil {
			t.Errorf("openssl verify against %s alone: %v\n%s", root, err, out)
		}
	}

	// The new root's CRL, signed at the ceremony, is published once copied
	// where the server looks for it.
	crlPath := filepath.Join(t.TempDir(), "new-root.crl")
	out := micaOK(t, env, "ca", "root-crl", "--data-dir", rootDir, "--out", crlPath)
	newRoot := readCertFile(t, filepath.Join(rootCA, "root.pem"))
	name := "root-" + hex.EncodeToString(newRoot.SubjectKeyId) + ".crl"
	if !strings.Contains(out, name) {
		t.Fatalf("root-crl does not say where the server looks for it (%s): %s", name, out)
	}
	data, err := os.ReadFile(crlPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(serverCA, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new root's CRL is published", func() error {
		resp, err := http.Get(e.server.httpURL + crl.Path(newRoot))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return errString("GET the new root's CRL: " + resp.Status)
		}
		return nil
	})
	micaOK(t, env, "ca", "root-crl", "--previous", "--data-dir", rootDir)
}
