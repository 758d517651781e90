package storetest

import (
	"context"
	"sync"
	"testing"

	"github.com/mica-pki/mica/internal/store"
)

// NewDatabase makes a fresh, empty database for t and returns what the
// engine's Open takes to reach it (a file path, a URL); the database goes
// when t ends.
type NewDatabase func(t testing.TB) string

// OpenFunc is an engine's Open.
type OpenFunc[S store.Store] func(ctx context.Context, dsn string) (S, error)

// PerTest is the Opener of an engine: the first call for a test makes its
// database with newDB, and every call opens that database with open.
func PerTest[S store.Store](newDB NewDatabase, open OpenFunc[S]) Opener {
	var mu sync.Mutex
	dsns := map[*testing.T]string{}
	dsnFor := func(t *testing.T) string {
		t.Helper()
		// Unlocked by defer: newDB may end t (a skip, a failure), and
		// the next test must not wait for a lock nobody will release.
		mu.Lock()
		defer mu.Unlock()
		dsn, ok := dsns[t]
		if !ok {
			dsn = newDB(t)
			dsns[t] = dsn
		}
		return dsn
	}
	return func(t *testing.T) store.Store {
		t.Helper()
		return mustOpen(t, open, dsnFor(t))
	}
}

// Fresh opens a store on a new database for each call, as
// BenchmarkRecordIssuance wants.
func Fresh[S store.Store](newDB NewDatabase, open OpenFunc[S]) func(testing.TB) store.Store {
	return func(t testing.TB) store.Store {
		t.Helper()
		return mustOpen(t, open, newDB(t))
	}
}

func mustOpen[S store.Store](t testing.TB, open OpenFunc[S], dsn string) store.Store {
	t.Helper()
	s, err := open(context.Background(), dsn)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// OpenTogether opens n stores on the database at dsn at once, as servers
// starting together do, and closes them: every open must succeed, so
// migrations must apply once and the others find nothing to do.
func OpenTogether[S store.Store](t *testing.T, n int, dsn string, open OpenFunc[S]) {
	t.Helper()
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			s, err := open(context.Background(), dsn)
			if err != nil {
				t.Error(err)
				return
			}
			if err := s.Close(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}
