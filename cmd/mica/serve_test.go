package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/sqlite"
)

// micaWithin runs the binary like mica, but kills it and fails the test
// if it has not exited within limit.
func micaWithin(t *testing.T, limit time.Duration, env []string, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, micaBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("mica %s did not exit within %s (killed)\nstdout: %s\nstderr: %s", strings.Join(args, " "), limit, out.String(), errb.String())
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running mica %v: %v", args, err)
	}
	return cmdResult{out.String(), errb.String(), code}
}

// storeCounts opens a stopped server's SQLite store and counts its events
// and certificates.
func storeCounts(t *testing.T, dataDir string) (events int64, certs int) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(dataDir, "mica.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if events, err = st.LastEventSeq(ctx); err != nil {
		t.Fatal(err)
	}
	if certs, err = st.CountCertificates(ctx, store.Filter{}); err != nil {
		t.Fatal(err)
	}
	return events, certs
}

// TestServePortTaken holds each of serve's three ports in turn: serve must
// exit at once with the message that names the flag to change, having
// issued nothing, recorded nothing and left nothing running.
func TestServePortTaken(t *testing.T) {
	e := initTestEnv(t, "sqlite", "")
	events, certs := storeCounts(t, e.dataDir)
	for _, tc := range []struct{ flag, want string }{
		{"--listen", "(choose another with --listen)"},
		{"--http-listen", "for CRL and OCSP"},
		{"--metrics-listen", "for metrics"},
	} {
		t.Run(tc.flag, func(t *testing.T) {
			held, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer held.Close()
			addrs := map[string]string{"--listen": "127.0.0.1:0", "--http-listen": "127.0.0.1:0", "--metrics-listen": "127.0.0.1:0"}
			addrs[tc.flag] = held.Addr().String()
			args := []string{"serve"}
			for f, a := range addrs {
				args = append(args, f, a)
			}
			r := micaWithin(t, time.Minute, e.env, args...)
			if r.code != 1 || !strings.Contains(r.stderr, "cannot listen on "+held.Addr().String()) || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("serve with %s taken: exit %d\nstderr: %s\nwant exit 1 and a message with %q", tc.flag, r.code, r.stderr, tc.want)
			}
			if strings.Contains(r.stdout, "serving on") {
				t.Errorf("serve said it was serving:\n%s", r.stdout)
			}
			if ev, n := storeCounts(t, e.dataDir); ev != events || n != certs {
				t.Errorf("serve with a taken port wrote to the store: events %d → %d, certificates %d → %d", events, ev, certs, n)
			}
		})
	}
}

// TestDatabaseBelongsToOneCA walks the README's PostgreSQL path: init --db
// records the database in mica.yaml, serve finds it without --db, and a
// database is refused to every CA but its own, with a message that says
// what to do and nothing left behind.
func TestDatabaseBelongsToOneCA(t *testing.T) {
	env := []string{"MICA_PASSPHRASE=" + testPassphrase}
	pg := pgCluster.Database(t)
	a := filepath.Join(t.TempDir(), "a")
	micaOK(t, env, "init", "--data-dir", a, "--db", pg)
	cfg, err := os.ReadFile(filepath.Join(a, configFileName))
	if err != nil || !strings.Contains(string(cfg), "database: \""+pg+"\"") {
		t.Fatalf("init --db did not record the database in mica.yaml (%v):\n%s", err, cfg)
	}
	srv := startServe(t, append(env, "MICA_DATA_DIR="+a))
	// The admin credential init made is in that database, so admin calls
	// work only if serve opened it (an empty SQLite one is refused).
	micaOK(t, append(env, "MICA_DATA_DIR="+a, "MICA_SERVER="+srv.url), "cert", "list")
	srv.stop(t, syscall.SIGTERM)

	serveArgs := []string{"serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--metrics-listen", "off"}
	t.Run("another CA's init", func(t *testing.T) {
		b := filepath.Join(t.TempDir(), "b")
		r := micaWithin(t, time.Minute, env, "init", "--data-dir", b, "--db", pg)
		if r.code != 1 || !strings.Contains(r.stderr, "belongs to another CA") {
			t.Fatalf("init of a second CA on the first one's database: exit %d, %s", r.code, r.stderr)
		}
		if fileExists(b) {
			t.Errorf("the refused init left %s behind", b)
		}
	})
	t.Run("a SQLite CA served on another database", func(t *testing.T) {
		c := filepath.Join(t.TempDir(), "c")
		micaOK(t, env, "init", "--data-dir", c)
		r := micaWithin(t, time.Minute, env, append(serveArgs, "--data-dir", c, "--db", pg)...)
		if r.code != 1 || !strings.Contains(r.stderr, "belongs to another CA") {
			t.Errorf("serve on another CA's database: exit %d, %s", r.code, r.stderr)
		}
		empty := pgCluster.Database(t)
		r = micaWithin(t, time.Minute, env, append(serveArgs, "--data-dir", c, "--db", empty)...)
		if r.code != 1 || !strings.Contains(r.stderr, "holds nothing of the CA") || strings.Contains(r.stdout, "serving on") {
			t.Errorf("serve on an empty database: exit %d, %s", r.code, r.stderr)
		}
		// The refusal bound nothing: a new CA can still be made on it.
		micaOK(t, env, "init", "--data-dir", filepath.Join(t.TempDir(), "d"), "--db", empty)
	})
	t.Run("init --db against a config that names another", func(t *testing.T) {
		e := filepath.Join(t.TempDir(), "e")
		os.MkdirAll(e, 0o700)
		os.WriteFile(filepath.Join(e, configFileName), []byte(strings.Replace(testConfig, "%DB%", `""`, 1)), 0o644)
		r := micaWithin(t, time.Minute, env, "init", "--data-dir", e, "--db", pgCluster.Database(t))
		if r.code != 2 || !strings.Contains(r.stderr, "set database: in it") {
			t.Errorf("init --db with a SQLite config: exit %d, %s", r.code, r.stderr)
		}
	})
}

// TestPublicURL: certificates name where the CRL and OCSP listener really
// is — its own address when nothing else is said, --public-url when it is —
// and a listener on every address must be named.
func TestPublicURL(t *testing.T) {
	e := newTestEnv(t, "sqlite") // --http-listen 127.0.0.1:0
	leaf := readLeaf(t, e.issue("spiffe://example.org/billing/a", "service"))
	if want := e.server.httpURL + "/crl/"; len(leaf.CRLDistributionPoints) != 1 || !strings.HasPrefix(leaf.CRLDistributionPoints[0], want) {
		t.Errorf("CRL distribution points %v, want one under %s (where the listener is)", leaf.CRLDistributionPoints, want)
	}
	if want := e.server.httpURL + "/ocsp"; len(leaf.OCSPServer) != 1 || leaf.OCSPServer[0] != want {
		t.Errorf("OCSP servers %v, want %s", leaf.OCSPServer, want)
	}
	resp, err := http.Get(leaf.CRLDistributionPoints[0])
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET the CRL the certificate names: %v %v", err, resp)
	}
	resp.Body.Close()
	e.server.stop(t, syscall.SIGTERM)

	e.server = startServe(t, e.env, "--public-url", "http://crl.example.test:9999/")
	e.env = append(e.env, "MICA_SERVER="+e.server.url)
	leaf = readLeaf(t, e.issue("spiffe://example.org/billing/b", "service"))
	if len(leaf.OCSPServer) != 1 || leaf.OCSPServer[0] != "http://crl.example.test:9999/ocsp" {
		t.Errorf("with --public-url: OCSP servers %v", leaf.OCSPServer)
	}
	e.server.stop(t, syscall.SIGTERM)

	r := micaWithin(t, time.Minute, e.env, "serve", "--listen", "127.0.0.1:0", "--http-listen", "0.0.0.0:0", "--metrics-listen", "off")
	if r.code != 1 || !strings.Contains(r.stderr, "--public-url") {
		t.Errorf("--http-listen on every address without --public-url: exit %d, %s", r.code, r.stderr)
	}
}
