// Package health says whether a mica server can do its work now, for
// GET /readyz: the store answers within a short deadline, and the data
// directory's volume is neither read-only nor full. Its answers are safe
// for anyone to read: they never carry what the store's own errors do
// (user, host, port, database), which go to the log instead.
//
// Start with Checker.Check.
package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Defaults for Checker.
const (
	DefaultTimeout = time.Second
	DefaultMinFree = 64 << 20
)

// NotReadyError says why the server is not ready, in words for anyone.
type NotReadyError struct {
	// Part is "store" or "data volume".
	Part   string
	Reason string
}

func (e *NotReadyError) Error() string { return "health: " + e.Part + ": " + e.Reason }

// Checker runs the readiness checks. The zero value is not usable: set
// Ping and Dir. Its methods are safe for concurrent use.
type Checker struct {
	// Ping asks the store something cheap; it gets a context with the
	// deadline, and Check answers at the deadline even if Ping does not
	// return (a frozen database, a stalled disk).
	Ping func(ctx context.Context) error
	// Dir is the data directory whose volume must be writable and not full.
	Dir string
	// Timeout bounds the whole check; default DefaultTimeout.
	Timeout time.Duration
	// MinFree is the free space, in bytes, below which the volume counts
	// as full; default DefaultMinFree.
	MinFree uint64
	Logger  *slog.Logger

	mu sync.Mutex
	// running is the probe in flight: a check that finds one waits for it
	// instead of starting another, so a frozen store holds at most one
	// goroutine however often /readyz is asked.
	running *probe
	// last is the last outcome's text, so that only changes are logged.
	last string
}

type probe struct {
	done chan struct{}
	err  error // set before done closes
}

// Check returns nil when the server is ready, else a *NotReadyError, in
// at most Timeout.
func (c *Checker) Check(ctx context.Context) error {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	p := c.start(timeout)
	t := time.NewTimer(timeout)
	defer t.Stop()
	var err error
	select {
	case <-p.done:
		err = p.err
	case <-t.C:
		err = &NotReadyError{Part: "store", Reason: fmt.Sprintf("no answer within %s", timeout)}
	case <-ctx.Done():
		return &NotReadyError{Part: "store", Reason: "the check was cancelled"}
	}
	c.report(err)
	var nr *NotReadyError
	if err != nil && !errors.As(err, &nr) {
		// Only the checks' own words leave this package.
		return &NotReadyError{Part: "store", Reason: "not answering"}
	}
	return err
}

// start returns the probe in flight, or starts one.
func (c *Checker) start(timeout time.Duration) *probe {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running != nil {
		return c.running
	}
	p := &probe{done: make(chan struct{})}
	c.running = p
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		p.err = c.probe(ctx)
		c.mu.Lock()
		c.running = nil
		c.mu.Unlock()
		close(p.done)
	}()
	return p
}

// probe runs the checks once: the volume first (cheap, and a full disk
// explains a store that fails), then the store.
func (c *Checker) probe(ctx context.Context) error {
	minFree := c.MinFree
	if minFree == 0 {
		minFree = DefaultMinFree
	}
	if err := checkVolume(c.Dir, minFree); err != nil {
		return err
	}
	if err := c.Ping(ctx); err != nil {
		if ctx.Err() != nil {
			return &NotReadyError{Part: "store", Reason: "no answer within the deadline"}
		}
		return err // logged in full, shown as "not answering"
	}
	return nil
}

// report logs a change of outcome, with the full error.
func (c *Checker) report(err error) {
	text := ""
	if err != nil {
		text = err.Error()
	}
	c.mu.Lock()
	changed := text != c.last
	c.last = text
	c.mu.Unlock()
	if !changed || c.Logger == nil {
		return
	}
	if err != nil {
		c.Logger.Warn("not ready", slog.String("error", text))
	} else {
		c.Logger.Info("ready again")
	}
}
