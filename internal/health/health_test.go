package health

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mica-pki/mica/internal/testlayer"
)

// TestFrozenStore: a store that never answers gets a 503-worthy answer at
// the deadline, later checks do not pile up more probes, and the store's
// return makes the server ready again.
func TestFrozenStore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var pings atomic.Int64
		thaw := make(chan struct{})
		c := &Checker{Dir: t.TempDir(), Ping: func(ctx context.Context) error {
			pings.Add(1)
			<-thaw // frozen: ignores its context, as a stalled disk does
			return nil
		}}
		start := time.Now()
		err := c.Check(context.Background())
		var nr *NotReadyError
		if !errors.As(err, &nr) || nr.Part != "store" {
			t.Fatalf("frozen store: %v, want a store NotReadyError", err)
		}
		if waited := time.Since(start); waited != DefaultTimeout {
			t.Errorf("answered after %s, want exactly the deadline %s", waited, DefaultTimeout)
		}
		for range 5 {
			if c.Check(context.Background()) == nil {
				t.Fatal("ready while the store is frozen")
			}
		}
		if n := pings.Load(); n != 1 {
			t.Errorf("%d pings in flight against a frozen store, want 1", n)
		}
		close(thaw)
		synctest.Wait()
		if err := c.Check(context.Background()); err != nil {
			t.Errorf("after the store answered: %v", err)
		}
	})
}

// TestStoreErrorNotEchoed: what the driver says (user, host, port) goes to
// the log, never into the answer.
func TestStoreErrorNotEchoed(t *testing.T) {
	c := &Checker{Dir: t.TempDir(), Ping: func(context.Context) error {
		return errors.New("failed to connect to `user=mica database=prod`: 10.1.2.3:5432 (db.internal): dial error: connection refused")
	}}
	err := c.Check(context.Background())
	if err == nil {
		t.Fatal("a failing store is ready")
	}
	for _, secret := range []string{"mica", "prod", "10.1.2.3", "5432", "db.internal"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the answer %q shows %q", err, secret)
		}
	}
	if err.Error() != "health: store: not answering" {
		t.Errorf("answer %q", err)
	}
}

// TestVolume mounts a small tmpfs as the data directory, fills it, and
// remounts it read-only: both are reported, and both recover.
func TestVolume(t *testing.T) {
	dir := mountTmpfs(t, "8m")
	c := &Checker{Dir: dir, MinFree: 4 << 20, Ping: func(context.Context) error { return nil }}
	if err := c.Check(context.Background()); err != nil {
		t.Fatalf("empty volume: %v", err)
	}
	fill := filepath.Join(dir, "fill")
	if err := os.WriteFile(fill, make([]byte, 6<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.Check(context.Background()); err == nil || !strings.Contains(err.Error(), "data volume: full") {
		t.Errorf("full volume: %v", err)
	}
	os.Remove(fill)
	if err := c.Check(context.Background()); err != nil {
		t.Errorf("after freeing space: %v", err)
	}
	run(t, "mount", "-o", "remount,ro", dir)
	if err := c.Check(context.Background()); err == nil || err.Error() != "health: data volume: read-only" {
		t.Errorf("read-only volume: %v", err)
	}
	run(t, "mount", "-o", "remount,rw", dir)
	if err := c.Check(context.Background()); err != nil {
		t.Errorf("after remounting read-write: %v", err)
	}
}

// mountTmpfs mounts a tmpfs of size on a new directory until the test
// ends. Mounting needs root, as the rest of the suite (PostgreSQL, nginx)
// does.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	mount := testlayer.Tool(t, "mount")
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root (scripts/test.sh runs the suite as root)")
	}
	dir := t.TempDir()
	run(t, mount, "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir)
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}
