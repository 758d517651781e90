package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
