// Package groupcommit batches durable writes: callers queue operations, one
// committer goroutine writes everything queued in a single transaction, and
// each caller is woken with its own result after the commit. Batches grow by
// themselves under load while the previous commit waits for its fsync, so the
// cost of one fsync is shared by many callers without weakening durability.
//
// Start with New and Committer.Do; the engine supplies the CommitFunc that
// writes one batch.
//
// It is a package of its own, apart from store/sqlstore, because it knows
// nothing of SQL or of mica's records: it is generic over the operation
// type, is tested on its own with plain Go values, and its Stats are read
// by the metrics without importing the store.
package groupcommit

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// ErrClosed is returned by Do after Close has begun.
var ErrClosed = errors.New("groupcommit: committer is closed: open the store again")

// DefaultMaxBatch bounds a batch when Config.MaxBatch is zero: large enough
// to amortize an fsync, small enough to keep one transaction short.
const DefaultMaxBatch = 512

// Config tunes a Committer. The zero value is ready to use.
type Config struct {
	MaxBatch int // operations per transaction; 0 means DefaultMaxBatch
	// Timeout bounds each CommitFunc call: its ctx ends after Timeout, so
	// that a database that stopped answering fails the batch instead of
	// holding the committer, and everything queued behind it, for good.
	// Zero means no bound.
	Timeout time.Duration
}

// Item is one queued operation as the CommitFunc sees it.
type Item[T any] struct {
	// Op is the caller's operation; the CommitFunc may write results into
	// it (an assigned sequence number, say), which Do returns to the caller.
	Op T
	// Err is this item's own outcome, set by the CommitFunc for failures
	// that must not fail the rest of the batch (a replayed token, say).
	// An item with Err set must have written nothing.
	Err error

	ctx  context.Context
	done chan struct{}
}

// CommitFunc writes a batch in one transaction and commits it. It returns
// an error only when the whole transaction failed and nothing was
// committed; every caller in the batch then receives that error.
type CommitFunc[T any] func(ctx context.Context, batch []*Item[T]) error

// Committer owns the queue and the committer goroutine.
type Committer[T any] struct {
	commit   CommitFunc[T]
	maxBatch int
	timeout  time.Duration

	mu     sync.Mutex
	queue  []*Item[T]
	closed bool

	wake    chan struct{} // capacity 1: a pending wake-up is never lost
	stopped chan struct{} // closed when the committer goroutine exits

	// Running totals for Stats, written only by the committer goroutine.
	batches, items, commitNanos atomic.Int64
}

// Stats are running totals since New: how many transactions were
// committed (or attempted), how many operations they carried, and the time
// spent in the CommitFunc. Rates of these give the batch size and commit
// time under load.
type Stats struct {
	Batches       int64
	Items         int64
	CommitSeconds float64
}

// Stats reads the running totals; cheap enough for every metrics scrape.
func (c *Committer[T]) Stats() Stats {
	return Stats{Batches: c.batches.Load(), Items: c.items.Load(),
		CommitSeconds: time.Duration(c.commitNanos.Load()).Seconds()}
}

// New starts the committer goroutine. Close stops it.
func New[T any](cfg Config, commit CommitFunc[T]) *Committer[T] {
	maxBatch := cfg.MaxBatch
	if maxBatch <= 0 {
		maxBatch = DefaultMaxBatch
	}
	c := &Committer[T]{
		commit:   commit,
		maxBatch: maxBatch,
		timeout:  cfg.Timeout,
		wake:     make(chan struct{}, 1),
		stopped:  make(chan struct{}),
	}
	go c.run()
	return c
}

// Do queues op, waits for the batch holding it to commit and returns op as
// the CommitFunc left it, with the item's error or the batch's error. A
// caller bounds its wait with ctx's deadline.
//
// If ctx ends first Do returns ctx.Err() at once, but the operation is not
// withdrawn once queued: it may still commit, exactly once. A caller that
// gets ctx.Err() therefore does not know the outcome and must read the
// store (or rely on idempotence, such as a token already used) before
// retrying. An operation whose ctx has ended before its batch starts is
// dropped without being written.
func (c *Committer[T]) Do(ctx context.Context, op T) (T, error) {
	if err := ctx.Err(); err != nil {
		return op, err
	}
	it := &Item[T]{Op: op, ctx: ctx, done: make(chan struct{})}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return op, ErrClosed
	}
	c.queue = append(c.queue, it)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default: // a wake-up is already pending; the committer will see this item
	}

	select {
	case <-it.done:
		return it.Op, it.Err
	case <-ctx.Done():
		// The item stays queued or in flight; the committer owns it now.
		return op, ctx.Err()
	}
}

// Close stops accepting operations, commits everything already queued,
// and waits for the committer goroutine to exit. It is safe to call more
// than once.
func (c *Committer[T]) Close() error {
	c.mu.Lock()
	already := c.closed
	c.closed = true
	c.mu.Unlock()
	if !already {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	<-c.stopped
	return nil
}

func (c *Committer[T]) run() {
	defer close(c.stopped)
	// Batches are committed on a context of their own: a caller giving up
	// must not abort a transaction that carries other callers' work.
	ctx := context.Background()
	for {
		batch, closed := c.take()
		if len(batch) > 0 {
			c.commitBatch(ctx, batch)
			continue // drain before sleeping or exiting
		}
		if closed {
			return
		}
		<-c.wake
	}
}

// take removes up to maxBatch items from the queue.
func (c *Committer[T]) take() (batch []*Item[T], closed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := min(len(c.queue), c.maxBatch)
	batch = make([]*Item[T], n)
	copy(batch, c.queue)
	// Shift rather than reslice so the backing array does not grow forever.
	rest := copy(c.queue, c.queue[n:])
	clear(c.queue[rest:])
	c.queue = c.queue[:rest]
	return batch, c.closed
}

func (c *Committer[T]) commitBatch(ctx context.Context, items []*Item[T]) {
	live := items[:0:0]
	for _, it := range items {
		if err := it.ctx.Err(); err != nil {
			// Nobody is waiting and nothing was written yet: drop it.
			it.Err = err
			close(it.done)
			continue
		}
		live = append(live, it)
	}
	if len(live) == 0 {
		return
	}
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	start := time.Now()
	err := c.commit(ctx, live)
	c.commitNanos.Add(int64(time.Since(start)))
	c.batches.Add(1)
	c.items.Add(int64(len(live)))
	if err != nil {
		for _, it := range live {
			it.Err = err
		}
	}
	for _, it := range live {
		close(it.done)
	}
}
