package main

import (
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// readyz asks the server's /readyz with a client that gives up after 10 s
// (a server that hangs fails the test instead of holding it) and returns
// the status and body.
func readyz(t *testing.T, e *testEnv) (int, string) {
	t.Helper()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfigFor(e.roots)}}
	resp, err := hc.Get(e.server.url + "/readyz")
	if err != nil {
		t.Fatalf("GET /readyz: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// waitReady asks /readyz until it says 200, for at most 30 s: the server
// is another process, with nothing to wait on but its answer.
func waitReady(t *testing.T, e *testEnv) {
	t.Helper()
	var code int
	var body string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if code, body = readyz(t, e); code == http.StatusOK {
			return
		}
	}
	t.Fatalf("/readyz did not become ready: %d %s", code, body)
}

// TestReadyzFrozenDatabase freezes the PostgreSQL server (SIGSTOP to the
// postmaster and every backend): /readyz must say 503 at once, not hang
// for the freeze, and must not show how the database is reached.
func TestReadyzFrozenDatabase(t *testing.T) {
	e := newTestEnv(t, "postgres")
	if code, body := readyz(t, e); code != http.StatusOK {
		t.Fatalf("/readyz before the freeze: %d %s", code, body)
	}
	thaw := pgCluster.Freeze(t)
	code, body := readyz(t, e)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "store") {
		t.Errorf("/readyz with the database frozen: %d %s; want 503 naming the store", code, body)
	}
	u, _ := url.Parse(e.dbURL)
	for _, secret := range []string{u.Host, u.Port(), u.User.Username() + "@", "user=", strings.TrimPrefix(u.Path, "/")} {
		if strings.Contains(body, secret) {
			t.Errorf("/readyz shows %q to an anonymous caller: %s", secret, body)
		}
	}
	thaw()
	waitReady(t, e)
}

// TestReadyzDataVolume serves a data directory on a tmpfs the test
// mounts: a full volume and a read-only one each make /readyz say 503 with
// the reason, and each recovers.
func TestReadyzDataVolume(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root (scripts/test.sh runs the suite as root)")
	}
	vol := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=160m,mode=0700", "tmpfs", vol).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v\n%s", err, out)
	}
	// Registered first, so it runs after the server is stopped.
	t.Cleanup(func() { exec.Command("umount", "-l", vol).Run() })
	e := initTestEnvAt(t, "sqlite", "", filepath.Join(vol, "data"))
	e.start()
	if code, body := readyz(t, e); code != http.StatusOK {
		t.Fatalf("/readyz: %d %s", code, body)
	}
	fill := filepath.Join(vol, "fill")
	if err := os.WriteFile(fill, make([]byte, 120<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, body := readyz(t, e); code != http.StatusServiceUnavailable || !strings.Contains(body, "data volume: full") {
		t.Errorf("/readyz with the volume full: %d %s", code, body)
	}
	os.Remove(fill)
	waitReady(t, e)
	// A volume goes read-only under a running server when the kernel
	// meets errors; a read-only bind mount over it does the same to every
	// later write without unmounting what the server holds open.
	mount := func(args ...string) {
		if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
			t.Fatalf("mount %v: %v\n%s", args, err, out)
		}
	}
	mount("--bind", vol, vol)
	bound := true
	t.Cleanup(func() {
		if bound {
			exec.Command("umount", vol).Run()
		}
	})
	mount("-o", "remount,ro,bind", vol)
	if code, body := readyz(t, e); code != http.StatusServiceUnavailable || !strings.Contains(body, "data volume: read-only") {
		t.Errorf("/readyz with the volume read-only: %d %s", code, body)
	}
	if out, err := exec.Command("umount", vol).CombinedOutput(); err != nil {
		t.Fatalf("umount the read-only bind: %v\n%s", err, out)
	}
	bound = false
	waitReady(t, e)
}
