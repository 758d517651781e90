package sqlite

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/store/storetest"
)

// TestWriteLockHeld holds SQLite's write lock from a connection of its
// own, as another process on the same file would: every write returns
// within the store's timeout with an error that says what to check, the
// reads go on (WAL readers do not wait for the writer), and the store
// writes again once the lock is released.
func TestWriteLockHeld(t *testing.T) {
	ctx := context.Background()
	path := newDatabase(t)
	const timeout = time.Second
	s, err := OpenConfig(ctx, Config{Path: path, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	calls := storetest.Calls(s)
	for i, err := range storetest.CallAll(t, calls, time.Minute) {
		if err != nil {
			t.Fatalf("%s before the lock: %v", calls[i].Name, err)
		}
	}

	other, err := sql.Open("sqlite", path+"?_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	lock, err := other.BeginTx(ctx, nil) // BEGIN IMMEDIATE: the write lock, now
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	errs := storetest.CallAll(t, calls, timeout+30*time.Second)
	t.Logf("%d calls with the write lock held elsewhere returned within %s (timeout %s)", len(calls), time.Since(start).Round(time.Millisecond), timeout)
	for i, err := range errs {
		if calls[i].Write {
			storetest.CheckTimedOut(t, calls[i].Name, err, timeout, "no other process keeps the database file locked")
		} else if err != nil {
			t.Errorf("%s while another connection holds the write lock: %v; WAL readers should not wait for it", calls[i].Name, err)
		}
	}
	if err := lock.Rollback(); err != nil {
		t.Fatal(err)
	}

	for i, err := range storetest.CallAll(t, calls, time.Minute) {
		if err != nil {
			t.Errorf("%s after the lock was released: %v", calls[i].Name, err)
		}
	}
}
