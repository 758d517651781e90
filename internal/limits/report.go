package limits

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// EventRecorder durably appends one event to the audit log.
type EventRecorder interface {
	RecordEvent(ctx context.Context, ev *store.Event) error
}

// maxReportKeys bounds how many keys one minute tracks; beyond it events
// are counted under one "other" key per action, so a flood over many keys
// costs a fixed amount of memory and a fixed number of leaves.
const maxReportKeys = 1000

const otherKey = "\x00other"

// reporter throttles audit events per key: the first event for a key in a
// minute is recorded at once (an operator sees a storm when it starts), the
// rest are counted and recorded as one summary when the minute is flushed.
// This is how failed authentications are aggregated (auditlog's
// FailureCounter), with the first event not held back.
type reporter struct {
	rec EventRecorder
	now func() time.Time
	log *slog.Logger

	mu      sync.Mutex
	since   time.Time
	tallies map[string]*tally
}

type tally struct {
	first store.Event // the event recorded at once (or, for "other", the first one held back)
	more  int         // events for the key since, to be summarised
}

func newReporter(rec EventRecorder, now func() time.Time, log *slog.Logger) *reporter {
	return &reporter{rec: rec, now: now, log: log, tallies: map[string]*tally{}}
}

// report records ev unless an event with the same key was recorded in this
// minute, in which case it is only counted.
func (r *reporter) report(ctx context.Context, key string, ev store.Event) {
	ev.Time = r.now()
	key = string(ev.Action) + "\x00" + key
	r.mu.Lock()
	if r.since.IsZero() {
		r.since = ev.Time
	}
	t, ok := r.tallies[key]
	if !ok && len(r.tallies) >= maxReportKeys {
		// Too many keys this minute: hold this one back into its action's
		// "other" summary rather than write a leaf for it.
		key = string(ev.Action) + otherKey
		if t, ok = r.tallies[key]; !ok {
			ev.Actor, ev.Source, ev.Identity, ev.Serial, ev.Fingerprint = "various", "", "", "", ""
			r.tallies[key] = &tally{first: ev, more: 1}
			r.mu.Unlock()
			return
		}
	}
	if ok {
		t.more++
		r.mu.Unlock()
		return
	}
	r.tallies[key] = &tally{first: ev}
	r.mu.Unlock()
	if err := r.rec.RecordEvent(context.WithoutCancel(ctx), &ev); err != nil {
		r.log.LogAttrs(ctx, slog.LevelError, "limits: could not record an event",
			slog.String("action", string(ev.Action)), slog.String("error", err.Error()))
	}
}

// Flush records one summary per key that had events after its first, and
// starts a new minute.
func (r *reporter) Flush(ctx context.Context) error {
	r.mu.Lock()
	tallies, since := r.tallies, r.since
	r.tallies, r.since = map[string]*tally{}, time.Time{}
	r.mu.Unlock()
	var firstErr error
	for _, key := range slices.Sorted(maps.Keys(tallies)) {
		t := tallies[key]
		if t.more == 0 {
			continue
		}
		ev := t.first
		ev.Time, ev.Seq, ev.LeafIndex, ev.LeafHash = r.now(), 0, 0, nil
		at := since.UTC().Format(time.RFC3339)
		ev.Detail = fmt.Sprintf("%d more since %s like: %s", t.more, at, t.first.Detail)
		if strings.HasSuffix(key, otherKey) {
			ev.Detail = fmt.Sprintf("%d more since %s for keys beyond the first %d, the first of them: %s", t.more, at, maxReportKeys, t.first.Detail)
		}
		if err := r.rec.RecordEvent(ctx, &ev); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("limits: record a summary of %s: %w", ev.Action, err)
		}
	}
	return firstErr
}
