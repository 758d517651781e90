package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReloadOnSIGHUP edits mica.yaml under a running server and sends
// SIGHUP: a new profile works at once, a broken file changes nothing, a
// restart-only setting is named, a change the profiles are built from is
// refused, each reload is an audit event, and the server lives on.
func TestReloadOnSIGHUP(t *testing.T) {
	e := newTestEnv(t, "sqlite")
	cfgPath := filepath.Join(e.dataDir, configFileName)
	base, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(cfgPath, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	hup := func(wantLog string, n int) {
		t.Helper()
		if err := e.server.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		if !e.server.logs.waitFor(wantLog, n, 30*time.Second) {
			t.Fatalf("after SIGHUP, no %q (%d) in the log:\n%s", wantLog, n, e.server.logs.String())
		}
		select {
		case <-e.server.done:
			t.Fatalf("mica serve exited on SIGHUP:\n%s", e.server.logs.String())
		default:
		}
	}
	tokenFor := func(profile string) cmdResult {
		return e.mica("token", "create", "--identity", "spiffe://example.org/batch/job", "--profile", profile)
	}
	if r := tokenFor("batch"); r.code == 0 {
		t.Fatal("a token for a profile that is not configured yet")
	}

	batch := "  batch:\n    spiffe: [\"/batch/*\"]\n    ext_key_usage: [clientAuth]\n"
	write(string(base) + batch)
	hup("config reloaded", 1)
	e.issue("spiffe://example.org/batch/job", "batch")

	write(string(base) + batch + "    spife: [\"/typo\"]\n")
	hup("config not reloaded", 1)
	if !strings.Contains(e.server.logs.String(), "spife") {
		t.Errorf("the refused reload does not name the bad field:\n%s", e.server.logs.String())
	}
	if r := tokenFor("batch"); r.code != 0 {
		t.Errorf("after a refused reload the running profiles changed: %s", r.stderr)
	}

	write("listen: 127.0.0.1:1\n" + string(base) + batch + "  cron:\n    spiffe: [\"/cron/*\"]\n    ext_key_usage: [clientAuth]\n")
	hup("restart_needed_for=listen", 1)
	e.issue("spiffe://example.org/cron/nightly", "cron")

	write("server_names: [other.example.org]\n" + string(base))
	hup("config not reloaded", 2)
	if r := tokenFor("batch"); r.code != 0 {
		t.Errorf("a reload refused for server_names changed the profiles: %s", r.stderr)
	}

	out := e.micaOK("audit", "search", "--action", "policy.loaded")
	if n := strings.Count(out, "reloaded on SIGHUP"); n != 2 {
		t.Errorf("%d reloads in the audit log, want 2:\n%s", n, out)
	}
	e.server.stop(t, syscall.SIGTERM)
	if code := e.server.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("serve exited %d after SIGTERM", code)
	}
}
