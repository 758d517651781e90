package groupcommit

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// The committer is tested here with plain functions as the transaction;
// the engines' conformance suite tests it over real databases.

func TestDo(t *testing.T) {
	errBatch := errors.New("disk on fire")
	errItem := errors.New("this one alone")
	tests := []struct {
		name     string
		commit   CommitFunc[int]
		wantErr  func(op int) error
		wantDone func(op int) int
	}{
		{"AllCommit", func(_ context.Context, b []*Item[int]) error {
			for _, it := range b {
				it.Op *= 10
			}
			return nil
		}, func(int) error { return nil }, func(op int) int { return op * 10 }},
		{"PerItemFailure", func(_ context.Context, b []*Item[int]) error {
			for _, it := range b {
				if it.Op%2 == 1 {
					it.Err = errItem
				}
			}
			return nil
		}, func(op int) error {
			if op%2 == 1 {
				return errItem
			}
			return nil
		}, func(op int) int { return op }},
		{"BatchFailure", func(context.Context, []*Item[int]) error { return errBatch },
			func(int) error { return errBatch }, func(op int) int { return op }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := New(Config{MaxBatch: 7}, tc.commit)
			defer c.Close()
			var wg sync.WaitGroup
			for op := range 100 {
				wg.Go(func() {
					got, err := c.Do(context.Background(), op)
					if !errors.Is(err, tc.wantErr(op)) {
						t.Errorf("Do(%d) error = %v, want %v", op, err, tc.wantErr(op))
					}
					if err == nil && got != tc.wantDone(op) {
						t.Errorf("Do(%d) = %d, want %d", op, got, tc.wantDone(op))
					}
				})
			}
			wg.Wait()
		})
	}
}

func TestBatchBound(t *testing.T) {
	var mu sync.Mutex
	largest := 0
	c := New(Config{MaxBatch: 5}, func(_ context.Context, b []*Item[int]) error {
		mu.Lock()
		largest = max(largest, len(b))
		mu.Unlock()
		return nil
	})
	var wg sync.WaitGroup
	for op := range 200 {
		wg.Go(func() { c.Do(context.Background(), op) })
	}
	wg.Wait()
	c.Close()
	if largest > 5 {
		t.Errorf("a batch of %d exceeded MaxBatch 5", largest)
	}
}

func TestClose(t *testing.T) {
	var mu sync.Mutex
	committed := map[int]bool{}
	c := New(Config{}, func(_ context.Context, b []*Item[int]) error {
		mu.Lock()
		defer mu.Unlock()
		for _, it := range b {
			committed[it.Op] = true
		}
		return nil
	})
	results := make([]error, 300)
	var wg sync.WaitGroup
	for op := range results {
		wg.Go(func() { _, results[op] = c.Do(context.Background(), op) })
		if op == 150 {
			c.Close()
		}
	}
	wg.Wait()
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for op, err := range results {
		switch {
		case err == nil && !committed[op]:
			t.Errorf("op %d returned nil but was not committed", op)
		case errors.Is(err, ErrClosed) && committed[op]:
			t.Errorf("op %d returned ErrClosed but was committed", op)
		case err != nil && !errors.Is(err, ErrClosed):
			t.Errorf("op %d: %v", op, err)
		}
	}
}

func TestCancelledBeforeCommitIsDropped(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c := New(Config{}, func(_ context.Context, b []*Item[int]) error {
		t.Errorf("committed %d items from a cancelled caller", len(b))
		return nil
	})
	defer c.Close()
	if _, err := c.Do(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("Do = %v, want context.Canceled", err)
	}
}

func TestStats(t *testing.T) {
	var batches int
	c := New(Config{MaxBatch: 7}, func(_ context.Context, b []*Item[int]) error {
		batches++ // only the committer goroutine calls this
		return nil
	})
	var wg sync.WaitGroup
	for op := range 50 {
		wg.Go(func() {
			if _, err := c.Do(context.Background(), op); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	c.Close()
	st := c.Stats()
	if st.Items != 50 || st.Batches != int64(batches) || st.Batches < 8 || st.CommitSeconds < 0 {
		t.Errorf("Stats = %+v after 50 operations in %d batches of at most 7", st, batches)
	}
}

// TestCommitTimeout freezes the transaction: with Config.Timeout the
// batch's ctx ends, its callers get the error, and the committer moves on
// to the next batch instead of staying stuck behind the frozen one.
func TestCommitTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		frozen := true
		c := New(Config{Timeout: 5 * time.Second}, func(ctx context.Context, b []*Item[int]) error {
			if frozen {
				<-ctx.Done() // a database that never answers
				return ctx.Err()
			}
			return nil
		})
		defer c.Close()
		start := time.Now()
		if _, err := c.Do(context.Background(), 1); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Do on a frozen transaction = %v, want context.DeadlineExceeded", err)
		}
		if waited := time.Since(start); waited != 5*time.Second {
			t.Errorf("the batch was given up after %v, want Config.Timeout (5s)", waited)
		}
		frozen = false
		if _, err := c.Do(context.Background(), 2); err != nil {
			t.Fatalf("Do after the frozen batch: %v", err)
		}
	})
}

// TestWaiterBounded freezes the transaction for good: a caller's own
// deadline still ends its wait.
func TestWaiterBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		c := New(Config{}, func(ctx context.Context, b []*Item[int]) error {
			<-release
			return nil
		})
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if _, err := c.Do(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Do = %v, want context.DeadlineExceeded", err)
		}
		close(release)
		c.Close()
	})
}
