package auditlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// Store is what the log needs from a store engine.
type Store interface {
	LeafHashes(ctx context.Context, start int64, limit int) ([][]byte, error)
	AddCheckpoint(ctx context.Context, c store.Checkpoint) error
	LatestCheckpoint(ctx context.Context) (store.Checkpoint, error)
}

// DefaultInterval is how often Run signs a checkpoint while events flow.
const DefaultInterval = 2 * time.Second

// syncPage is how many leaf hashes one store read brings into the tree.
const syncPage = 10000

// Config wires a Log. Store and Signer are required.
type Config struct {
	Store  Store
	Signer *Signer
	// Interval between checkpoints while the log grows; DefaultInterval if zero.
	Interval time.Duration
	Clock    func() time.Time
	Logger   *slog.Logger
}

// Log is the server side of the audit log. Several servers sharing one
// PostgreSQL database each keep their own Log: the tree is defined by the
// stored leaves, so they all compute the same roots, and a checkpoint for a
// size already signed by another server is simply not stored again.
type Log struct {
	store    Store
	signer   *Signer
	interval time.Duration
	now      func() time.Time
	log      *slog.Logger

	syncMu sync.Mutex   // one Sync at a time
	mu     sync.RWMutex // guards tree and latest
	tree   tree
	// latest is the newest checkpoint RunOnce saw or stored, for Status.
	latest store.Checkpoint
}

// New returns a Log; its tree is filled from the store on first use.
func New(cfg Config) (*Log, error) {
	if cfg.Store == nil || cfg.Signer == nil {
		return nil, errors.New("auditlog: Store and Signer are required")
	}
	l := &Log{store: cfg.Store, signer: cfg.Signer, interval: cfg.Interval, now: cfg.Clock, log: cfg.Logger}
	l.tree.keepBlocksIn(serverCut, cfg.Store.LeafHashes)
	if l.interval <= 0 {
		l.interval = DefaultInterval
	}
	if l.now == nil {
		l.now = time.Now
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	return l, nil
}

// VerifierKey is the log's public key in note verifier-key form.
func (l *Log) VerifierKey() string { return l.signer.VerifierKey() }

// Origin names the log in its checkpoints.
func (l *Log) Origin() string { return l.signer.Name() }

// Sync appends the leaf hashes committed since the last Sync to the tree
// and returns its size.
func (l *Log) Sync(ctx context.Context) (int64, error) {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	for {
		l.mu.RLock()
		start := l.tree.size()
		l.mu.RUnlock()
		hashes, err := l.store.LeafHashes(ctx, start, syncPage)
		if err != nil {
			return start, fmt.Errorf("auditlog: read leaves from %d: %w", start, err)
		}
		l.mu.Lock()
		for _, h := range hashes {
			if err := l.tree.append(h); err != nil {
				l.mu.Unlock()
				return l.tree.size(), err
			}
		}
		size := l.tree.size()
		l.mu.Unlock()
		if len(hashes) < syncPage {
			return size, nil
		}
	}
}

// RunOnce brings the tree up to date and, if it grew past the latest
// stored checkpoint, signs and stores a new one.
func (l *Log) RunOnce(ctx context.Context) error {
	size, err := l.Sync(ctx)
	if err != nil {
		return err
	}
	latest, err := l.store.LatestCheckpoint(ctx)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return fmt.Errorf("auditlog: %w", err)
	default:
		l.noteCheckpoint(latest)
		if latest.Size >= size {
			return nil
		}
	}
	if size == 0 {
		return nil
	}
	l.mu.RLock()
	root, err := l.tree.root(ctx, size)
	var signedRoot []byte
	if err == nil && latest.Size > 0 {
		signedRoot, err = l.tree.root(ctx, latest.Size)
	}
	l.mu.RUnlock()
	if err != nil {
		return err
	}
	// Never sign a tree that does not extend the last checkpoint: that
	// would be a fork, signed by the log itself.
	if latest.Size > 0 && !bytes.Equal(signedRoot, latest.Root) {
		return fmt.Errorf("auditlog: the stored log no longer extends the checkpoint of size %d: leaves were deleted or changed; "+
			"no checkpoint is signed until it does: run mica audit verify to find the first bad leaf", latest.Size)
	}
	n, err := SignCheckpoint(l.signer, size, root)
	if err != nil {
		return err
	}
	c := store.Checkpoint{Size: size, Root: root, Note: n, Time: l.now()}
	if err := l.store.AddCheckpoint(ctx, c); err != nil {
		return fmt.Errorf("auditlog: %w", err)
	}
	l.noteCheckpoint(c)
	return nil
}

func (l *Log) noteCheckpoint(c store.Checkpoint) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.Size >= l.latest.Size {
		l.latest = c
	}
}

// Status is the log as metrics see it.
type Status struct {
	// Leaves is the size of the tree as of the last sync (every RunOnce).
	Leaves int64
	// CheckpointSize and CheckpointTime describe the newest checkpoint
	// RunOnce saw or signed; zero before the first. Leaves beyond
	// CheckpointSize for long mean checkpoints have stopped.
	CheckpointSize int64
	CheckpointTime time.Time
}

// Status reads the log's state from memory; it costs no store query.
func (l *Log) Status() Status {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return Status{Leaves: l.tree.size(), CheckpointSize: l.latest.Size, CheckpointTime: l.latest.Time}
}

// Run signs checkpoints every interval until ctx ends. A failed round is
// logged and retried at the next tick: the events themselves are already
// durable, only their checkpoint is late.
func (l *Log) Run(ctx context.Context) error {
	t := time.NewTicker(l.interval)
	defer t.Stop()
	for {
		if err := l.RunOnce(ctx); err != nil && ctx.Err() == nil {
			l.log.LogAttrs(ctx, slog.LevelError, "audit checkpoint failed", slog.String("error", err.Error()))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Latest returns the latest checkpoint, signing one first if the log has
// none yet or if none covers leaf index covering (-1 accepts any).
func (l *Log) Latest(ctx context.Context, covering int64) (store.Checkpoint, error) {
	c, err := l.store.LatestCheckpoint(ctx)
	if err == nil && c.Size > covering {
		return c, nil
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return c, fmt.Errorf("auditlog: %w", err)
	}
	if err := l.RunOnce(ctx); err != nil {
		return store.Checkpoint{}, err
	}
	c, err = l.store.LatestCheckpoint(ctx)
	if err != nil {
		return c, fmt.Errorf("auditlog: %w", err)
	}
	return c, nil
}

// InclusionProof proves leaf index in the tree of size.
func (l *Log) InclusionProof(ctx context.Context, index, size int64) ([][]byte, error) {
	if err := l.atLeast(ctx, size); err != nil {
		return nil, err
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.tree.inclusion(ctx, index, size)
}

// ConsistencyProof proves that the tree of size1 is a prefix of size2.
func (l *Log) ConsistencyProof(ctx context.Context, size1, size2 int64) ([][]byte, error) {
	if err := l.atLeast(ctx, size2); err != nil {
		return nil, err
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.tree.consistency(ctx, size1, size2)
}

func (l *Log) atLeast(ctx context.Context, size int64) error {
	l.mu.RLock()
	have := l.tree.size()
	l.mu.RUnlock()
	if have >= size {
		return nil
	}
	_, err := l.Sync(ctx)
	return err
}
