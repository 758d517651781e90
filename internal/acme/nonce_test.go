package acme

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// writeCounter counts the store writes the door asks for.
type writeCounter struct {
	testStore
	writes atomic.Int64
}

func (w *writeCounter) CreateACME(ctx context.Context, recs ...store.ACMERecord) error {
	w.writes.Add(1)
	return w.testStore.CreateACME(ctx, recs...)
}

func (w *writeCounter) UpdateACME(ctx context.Context, rec store.ACMERecord, fromStatus, fromLookup string) error {
	w.writes.Add(1)
	return w.testStore.UpdateACME(ctx, rec, fromStatus, fromLookup)
}

func (w *writeCounter) UseACMENonce(ctx context.Context, nonce string, expires, now time.Time) error {
	w.writes.Add(1)
	return w.testStore.UseACMENonce(ctx, nonce, expires, now)
}

func (w *writeCounter) ACMENonceKey(ctx context.Context, epoch int64, fresh []byte) ([]byte, error) {
	w.writes.Add(1)
	return w.testStore.ACMENonceKey(ctx, epoch, fresh)
}

// TestNewNonceWritesNothing: unauthenticated nonces cost no write — the
// hour's key once, then nothing — measured at the door and, for SQLite, in
// the size of the write-ahead log.
func TestNewNonceWritesNothing(t *testing.T) {
	engines(t, func(t *testing.T, e *engine) {
		v := newEnv(t, e)
		counted := &writeCounter{testStore: e.open(t)}
		srv := v.newServer(counted)
		do(srv, http.MethodHead, testURL+"new-nonce", "", "", nil) // the hour's key
		counted.writes.Store(0)
		walBefore := walSize(t, e)
		seen := map[string]bool{}
		for i := range 1000 {
			method := http.MethodHead
			if i%2 == 1 {
				method = http.MethodGet
			}
			a := do(srv, method, testURL+"new-nonce", "", "", nil)
			n := a.header.Get("Replay-Nonce")
			if n == "" || seen[n] || (a.status != http.StatusOK && a.status != http.StatusNoContent) {
				t.Fatalf("newNonce %d: %d, nonce %q (seen before: %v)", i, a.status, n, seen[n])
			}
			seen[n] = true
		}
		if n := counted.writes.Load(); n != 0 {
			t.Errorf("1,000 new nonces asked for %d store writes, want 0", n)
		}
		if after := walSize(t, e); after != walBefore {
			t.Errorf("1,000 new nonces grew the SQLite WAL from %d to %d bytes", walBefore, after)
		}
	})
}

// walSize is the size of the SQLite write-ahead log; 0 for other engines.
func walSize(t *testing.T, e *engine) int64 {
	t.Helper()
	if e.sqlitePath == "" {
		return 0
	}
	fi, err := os.Stat(e.sqlitePath + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestNonceAcrossServers: a nonce one server made works on another
// sharing the database (even one started after it), once in all, within
// its lifetime, across the hour its key changes.
func TestNonceAcrossServers(t *testing.T) {
	engines(t, func(t *testing.T, e *engine) {
		v := newEnv(t, e)
		c := v.client()
		c.register()
		// Just before an hour turns, so the nonce outlives its key's epoch.
		now := v.clock.Now()
		v.clock.Advance(now.Truncate(nonceEpoch).Add(nonceEpoch - time.Second).Sub(now))

		use := func(srv *Server, n string) answer {
			body := rawJWS(t, c.key, string(mustJSON(t, map[string]any{"alg": "ES256", "kid": c.kid, "url": c.kid, "nonce": n})), nil)
			return do(srv, http.MethodPost, c.kid, "", "application/jose+json", body)
		}
		n1, n2 := c.nonce(), c.nonce()
		v.clock.Advance(2 * time.Minute) // the next epoch
		later := v.newServer(e.open(t))  // a server that never saw the old key
		if a := use(later, n1); a.status != http.StatusOK {
			t.Fatalf("a nonce of the last hour on another server: %v", a)
		}
		for _, srv := range []*Server{later, v.srv} {
			if a := use(srv, n1); a.problem != errBadNonce {
				t.Errorf("a nonce used once, again: %v, want badNonce", a)
			}
		}
		v.clock.Advance(nonceLifetime)
		if a := use(later, n2); a.problem != errBadNonce {
			t.Errorf("a nonce past its lifetime: %v, want badNonce", a)
		}
		// A nonce made by another deployment (another database, another key)
		// is refused, however fresh.
		foreign := v.client()
		foreign.srv = v.newServer(openSQLite(t, filepath.Join(t.TempDir(), "other.db")))
		if a := use(v.srv, foreign.nonce()); a.problem != errBadNonce {
			t.Errorf("another deployment's nonce: %v, want badNonce", a)
		}
	})
}
