package main

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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
	thaw := freezePostgres(t, e.dbURL)
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

// freezePostgres stops the PostgreSQL server that listens on dbURL's port
// and all its backends; the returned thaw (also run at cleanup) continues
// them.
func freezePostgres(t *testing.T, dbURL string) (thaw func()) {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	// The server's processes carry its command line (a backend just
	// forked, too, until it names itself), so the postmaster is read from
	// the data directory that command line names.
	var postmaster int
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		cmdline, err := os.ReadFile(filepath.Join(p, "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(bytes.TrimRight(cmdline, "\x00")), "\x00")
		if !strings.HasSuffix(args[0], "postgres") || !strings.Contains(strings.Join(args, " "), "-p "+u.Port()+" ") {
			continue
		}
		for i := 1; i+1 < len(args); i++ {
			if args[i] == "-D" {
				pidFile, err := os.ReadFile(filepath.Join(args[i+1], "postmaster.pid"))
				if err != nil {
					t.Fatal(err)
				}
				first, _, _ := strings.Cut(string(pidFile), "\n")
				postmaster, _ = strconv.Atoi(strings.TrimSpace(first))
			}
		}
		break
	}
	if postmaster == 0 {
		t.Fatalf("no postgres process listens on port %s", u.Port())
	}
	// The postmaster first, so that it forks no backend after the list of
	// its children is read; then every child, read afresh.
	syscall.Kill(postmaster, syscall.SIGSTOP)
	pids := []int{postmaster}
	procs, _ = filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		stat, err := os.ReadFile(filepath.Join(p, "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces, so read after ')'.
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(postmaster) {
			pid, _ := strconv.Atoi(filepath.Base(p))
			syscall.Kill(pid, syscall.SIGSTOP)
			pids = append(pids, pid)
		}
	}
	done := false
	thaw = func() {
		if done {
			return
		}
		done = true
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	t.Cleanup(thaw)
	return thaw
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
