package main

import (
	"encoding/json"

	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/bench"
)

// TestOfflineRoot walks the offline-root flow with the real binary: the root
// key stays in one directory, the server's in another, and the server issues
// certificates that chain to the offline root.
func TestOfflineRoot(t *testing.T) {
	rootDir, serverDir := filepath.Join(t.TempDir(), "root"), filepath.Join(t.TempDir(), "server")
	env := []string{"MICA_PASSPHRASE=" + testPassphrase}
	micaOK(t, env, "init", "--root-only", "--data-dir", rootDir, "--trust-domain", "corp.example")
	micaOK(t, env, "ca", "request-intermediate", "--data-dir", serverDir, "--trust-domain", "corp.example")
	csr := filepath.Join(serverDir, "ca", "intermediate.csr")
	signed := filepath.Join(t.TempDir(), "intermediate.pem")
	micaOK(t, env, "ca", "sign-intermediate", "--data-dir", rootDir, "--csr", csr, "--out", signed, "--trust-domain", "corp.example")
	micaOK(t, env, "ca", "import-intermediate", "--data-dir", serverDir, "--cert", signed, "--root", filepath.Join(rootDir, "ca", "root.pem"))
	micaOK(t, env, "init", "--data-dir", serverDir)
	if fileExists(filepath.Join(serverDir, "ca", "root.key")) {
		t.Fatal("the root key reached the server's data directory")
	}
	srv := startServe(t, append(env, "MICA_DATA_DIR="+serverDir))
	env = append(env, "MICA_DATA_DIR="+serverDir, "MICA_SERVER="+srv.url)
	tok := strings.TrimSpace(micaOK(t, env, "token", "create", "--identity", "spiffe://corp.example/billing/api", "--profile", "service"))
	out := filepath.Join(t.TempDir(), "cred")
	micaOK(t, env, "cert", "issue", "--token", tok, "--out", out)
	res, err := exec.Command("openssl", "verify", "-CAfile", filepath.Join(rootDir, "ca", "root.pem"),
		"-untrusted", filepath.Join(out, chainFile), filepath.Join(out, certFile)).CombinedOutput()
	if err != nil {
		t.Fatalf("certificate from the imported intermediate does not verify against the offline root: %v\n%s", err, res)
	}
	// The intermediate's name constraint holds: another trust domain is refused.
	r := mica(t, env, "token", "create", "--identity", "spiffe://other.example/x", "--profile", "service")
	if r.code != 1 {
		t.Fatalf("token for another trust domain: exit %d, %s", r.code, r.stderr)
	}
}

func TestServeDevAndHealth(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	srv := startServe(t, []string{"MICA_DATA_DIR=" + dir}, "--dev")
	// The next steps are printed just after the "serving on" line that
	// startServe waits for; the reader may not have caught up yet.
	waitFor(t, "serve --dev to print the next command", 10*time.Second, func() bool {
		return strings.Contains(srv.logs.String(), "token create")
	})
	fi, err := os.Stat(filepath.Join(dir, devPassphraseFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("dev passphrase file: %v, mode %v", err, fi.Mode().Perm())
	}
	roots, err := loadPool(filepath.Join(dir, "ca", "root.pem"))
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfigFor(roots)}}
	for _, p := range []string{"/healthz", "/readyz"} {
		resp, err := hc.Get(srv.url + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s: %d", p, resp.StatusCode)
		}
	}
	// The commands it prints work as printed (with the built binary).
	env := []string{"MICA_DATA_DIR=" + dir, "MICA_SERVER=" + srv.url}
	tok := strings.TrimSpace(micaOK(t, env, "token", "create", "--identity", "spiffe://example.org/demo/api", "--profile", "service"))
	micaOK(t, env, "cert", "issue", "--token", tok, "--out", filepath.Join(t.TempDir(), "demo"))
	// A second --dev start reuses the data directory.
	srv.stop(t, syscall.SIGTERM)
	startServe(t, []string{"MICA_DATA_DIR=" + dir}, "--dev")
}

func TestPolicyCommands(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "mica.yaml")
	os.WriteFile(cfg, []byte(strings.Replace(testConfig, "%DB%", `""`, 1)), 0o644)
	out := micaOK(t, nil, "policy", "check", cfg)
	if !strings.Contains(out, "ok (") || !strings.Contains(out, "service") {
		t.Errorf("policy check output:\n%s", out)
	}
	cases := filepath.Join(t.TempDir(), "cases.yaml")
	os.WriteFile(cases, []byte(`cases:
  - name: billing allowed
    request: {profile: service, spiffe_id: spiffe://example.org/billing/api}
    want: allow
  - name: rsa-1024 refused
    request: {profile: service, spiffe_id: spiffe://example.org/billing/api, key: rsa-1024}
    want: deny
    reason: key-not-allowed
`), 0o644)
	out = micaOK(t, nil, "policy", "test", "--config", cfg, cases)
	if !strings.Contains(out, "2 passed, 0 failed") {
		t.Errorf("policy test output:\n%s", out)
	}
	// As the docs spell them: --cases, and --config (default: the data
	// directory's mica.yaml), and check with --config or no file at all.
	if out := micaOK(t, nil, "policy", "test", "--config", cfg, "--cases", cases); !strings.Contains(out, "2 passed, 0 failed") {
		t.Errorf("policy test --cases:\n%s", out)
	}
	dataEnv := []string{"MICA_DATA_DIR=" + filepath.Dir(cfg)}
	if out := micaOK(t, dataEnv, "policy", "test", "--cases", cases); !strings.Contains(out, "2 passed, 0 failed") {
		t.Errorf("policy test with the data directory's config:\n%s", out)
	}
	if out := micaOK(t, nil, "policy", "check", "--config", cfg); !strings.Contains(out, "ok (") {
		t.Errorf("policy check --config:\n%s", out)
	}
	if out := micaOK(t, dataEnv, "policy", "check"); !strings.Contains(out, "ok (") {
		t.Errorf("policy check of the data directory's config:\n%s", out)
	}
	if r := mica(t, nil, "policy", "check", "--config", cfg, cases); r.code != 2 {
		t.Errorf("policy check with two different files: exit %d, %s", r.code, r.stderr)
	}
	os.WriteFile(cases, []byte(`cases:
  - name: wrongly expected
    request: {profile: service, spiffe_id: spiffe://example.org/payments/api}
    want: allow
`), 0o644)
	if r := mica(t, nil, "policy", "test", "--config", cfg, cases); r.code != 1 || !strings.Contains(r.stdout, "FAIL") {
		t.Errorf("a failing case: exit %d\n%s", r.code, r.stdout)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("trust_domain: example.org\nprofiles:\n  service:\n    spife: [\"/x\"]\n"), 0o644)
	r := mica(t, nil, "policy", "check", bad)
	if r.code != 1 || !strings.Contains(r.stderr, "spife") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Errorf("typo in config: exit %d, stderr %q; want exit 1 and one line naming the field", r.code, r.stderr)
	}
	limited := strings.Replace(testConfig, "%DB%", `""`, 1) + "limits:\n  profiles:\n    web:\n      per_source: {rate: 10/fortnight}\n"
	os.WriteFile(bad, []byte(limited), 0o644)
	r = mica(t, nil, "policy", "check", bad)
	if r.code != 1 || !strings.Contains(r.stderr, "limits.profiles.web.per_source.rate") {
		t.Errorf("bad rate limit: exit %d, stderr %q; want exit 1 naming limits.profiles.web.per_source.rate", r.code, r.stderr)
	}
}

// TestBenchRuns runs every benchmark the bench package holds through the
// binary, briefly, and checks that each measured something and failed
// nothing.
func TestBenchRuns(t *testing.T) {
	t.Run("issue", func(t *testing.T) {
		var res bench.IssueResult
		benchJSON(t, &res, "issue", "--concurrency", "4", "--duration", "1s", "--warmup", "0")
		if res.Issued == 0 || res.Errors != 0 || res.P99Ms < res.P50Ms || res.PeakRSSBytes == 0 {
			t.Fatalf("bench result %+v", res)
		}
	})
	t.Run("acme", func(t *testing.T) {
		var res bench.ACMEResult
		benchJSON(t, &res, "acme", "--concurrency", "2", "--duration", "1s")
		if res.Orders == 0 || res.Errors != 0 || res.P99Ms < res.P50Ms {
			t.Fatalf("bench result %+v", res)
		}
	})
	t.Run("revocation", func(t *testing.T) {
		var res bench.RevocationResult
		benchJSON(t, &res, "revocation", "--subscribers", "5", "--revocations", "3")
		if res.Deliveries != 15 || res.Missing != 0 || res.MaxMs < res.P50Ms {
			t.Fatalf("bench result %+v", res)
		}
	})
	t.Run("ocsp", func(t *testing.T) {
		var res bench.OCSPResult
		benchJSON(t, &res, "ocsp", "--concurrency", "2", "--duration", "1s", "--certificates", "10", "--nonce")
		if res.Requests == 0 || res.Errors != 0 || res.P99Ms < res.P50Ms {
			t.Fatalf("bench result %+v", res)
		}
	})
}

// benchJSON runs `mica bench KIND ARGS --json` and decodes its result.
func benchJSON(t *testing.T, res any, kind string, args ...string) {
	t.Helper()
	out := micaOK(t, nil, append([]string{"bench", kind, "--json"}, args...)...)
	if err := json.Unmarshal([]byte(out), res); err != nil {
		t.Fatalf("bench %s --json output is not JSON: %v\n%s", kind, err, out)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"nope"}, {"cert", "issue"}, {"cert", "list", "--bogus"}, {"init", "--data-dir", t.TempDir()}} {
		r := mica(t, []string{"MICA_PASSPHRASE="}, args...)
		if r.code != 2 || !strings.HasPrefix(r.stderr, "mica: ") && !strings.Contains(r.stderr, "usage") {
			t.Errorf("mica %v: exit %d, stderr %q; want exit 2 with a usage message", args, r.code, r.stderr)
		}
	}
}
