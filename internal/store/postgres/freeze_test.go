package postgres

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/store/postgres/pgtest"
	"github.com/mica-pki/mica/internal/store/storetest"
)

// TestFrozenServer stops every process of a real PostgreSQL server with
// SIGSTOP, as a hung host or stalled disk would, and checks that every
// store call returns within the store's timeout with an error that says
// what to check, and that the store works again once the server resumes.
func TestFrozenServer(t *testing.T) {
	server := pgtest.Local()
	t.Cleanup(func() {
		if err := server.Stop(); err != nil {
			t.Errorf("stop the frozen test's server: %v", err)
		}
	})
	ctx := context.Background()
	const timeout = 2 * time.Second
	s, err := OpenConfig(ctx, Config{URL: server.Database(t), Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	// Warm the pool, so that calls find open connections to frozen
	// backends as well as having to open new ones.
	calls := storetest.Calls(s)
	for i, err := range storetest.CallAll(t, calls, time.Minute) {
		if err != nil {
			t.Fatalf("%s before the freeze: %v", calls[i].Name, err)
		}
	}

	thaw := server.Freeze(t)
	start := time.Now()
	errs := storetest.CallAll(t, calls, timeout+30*time.Second)
	t.Logf("%d calls on the frozen server returned within %s (timeout %s)", len(calls), time.Since(start).Round(time.Millisecond), timeout)
	for i, err := range errs {
		storetest.CheckTimedOut(t, calls[i].Name, err, timeout, "check that PostgreSQL is up")
	}
	thaw()

	for i, err := range storetest.CallAll(t, calls, time.Minute) {
		if err != nil {
			t.Errorf("%s after the server resumed: %v", calls[i].Name, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestOpenFrozenServer checks that opening a store on a server that
// accepts connections and then says nothing fails within the timeout.
func TestOpenFrozenServer(t *testing.T) {
	server := pgtest.Local()
	t.Cleanup(func() {
		if err := server.Stop(); err != nil {
			t.Errorf("stop the frozen test's server: %v", err)
		}
	})
	url := server.Database(t)
	server.Freeze(t)
	done := make(chan error, 1)
	go func() {
		s, err := OpenConfig(context.Background(), Config{URL: url, Timeout: time.Second})
		if err == nil {
			s.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "did not answer within 1s") {
			t.Errorf("OpenConfig on a frozen server = %v, want an error saying it did not answer within 1s", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("OpenConfig on a frozen server still waiting after a minute")
	}
}
