package auditlog

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// EventRecorder durably appends one event.
type EventRecorder interface {
	RecordEvent(ctx context.Context, ev *store.Event) error
}

// maxSources bounds how many sources one minute tracks; beyond it failures
// are counted under "other", so a flood from many addresses costs a fixed
// amount of memory and a fixed number of leaves.
const maxSources = 1000

// FailureCounter aggregates failed authentications into one auth.failed
// event per source per minute. Record is the authority's hook; Run writes
// each minute's counts once the minute is over.
type FailureCounter struct {
	rec EventRecorder
	now func() time.Time
	log *slog.Logger

	mu     sync.Mutex
	minute time.Time
	counts map[string]map[string]int // source → reason → count
}

// NewFailureCounter returns a counter writing to rec; clock and logger may be nil.
func NewFailureCounter(rec EventRecorder, clock func() time.Time, logger *slog.Logger) *FailureCounter {
	if clock == nil {
		clock = time.Now
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &FailureCounter{rec: rec, now: clock, log: logger, counts: map[string]map[string]int{}}
}

// Record counts one failure from source for reason (a stable slug).
func (f *FailureCounter) Record(source netip.Addr, reason string) {
	src := "unknown"
	if source.IsValid() {
		src = source.Unmap().String()
	}
	minute := f.now().UTC().Truncate(time.Minute)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.minute.IsZero() {
		f.minute = minute
	}
	if _, ok := f.counts[src]; !ok && len(f.counts) >= maxSources {
		src = "other"
	}
	if f.counts[src] == nil {
		f.counts[src] = map[string]int{}
	}
	f.counts[src][reason]++
}

// Flush records the counts gathered so far, one event per source, and
// starts counting afresh.
func (f *FailureCounter) Flush(ctx context.Context) error {
	f.mu.Lock()
	counts, minute := f.counts, f.minute
	f.counts, f.minute = map[string]map[string]int{}, time.Time{}
	f.mu.Unlock()
	var firstErr error
	for _, src := range slices.Sorted(maps.Keys(counts)) {
		total, parts := 0, []string{}
		for _, reason := range slices.Sorted(maps.Keys(counts[src])) {
			n := counts[src][reason]
			total += n
			parts = append(parts, fmt.Sprintf("%s %d", reason, n))
		}
		source := src
		if src == "unknown" {
			source = ""
		}
		ev := store.Event{Time: f.now(), Actor: "unauthenticated", Source: source, Action: store.ActionAuthFailed,
			Outcome: "failed", Detail: fmt.Sprintf("%d failed authentications from %s in the minute from %s: %s",
				total, src, minute.Format(time.RFC3339), strings.Join(parts, ", "))}
		if err := f.rec.RecordEvent(ctx, &ev); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("auditlog: record failed authentications: %w", err)
		}
	}
	return firstErr
}

// Run flushes once a minute until ctx ends, and once more on the way out.
func (f *FailureCounter) Run(ctx context.Context) error {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return f.Flush(context.WithoutCancel(ctx))
		case <-t.C:
			if err := f.Flush(ctx); err != nil {
				f.log.LogAttrs(ctx, slog.LevelError, "audit: recording failed authentications", slog.String("error", err.Error()))
			}
		}
	}
}
