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

// maxThrottleKeys bounds how many keys one minute tracks; beyond it events
// are counted under one "other" key per action, so a flood over many keys
// (sources, identities) costs a fixed amount of memory and a fixed number
// of leaves.
const maxThrottleKeys = 1000

// maxReasons bounds the reasons one key's summary counts apart.
const maxReasons = 20

const otherKey = "\x00other"

// Throttle is how events that a client can cause at will (failed
// authentications, rate-limit refusals, anomalies) reach the audit log
// without letting a flood multiply its leaves: per action and key, the
// first event in a minute is recorded at once (an operator sees a storm
// when it starts) and the rest are counted, by reason, into one summary
// recorded when the minute is flushed (Run does it every minute). At most
// 1,000 keys a minute are told apart; the rest share one summary per
// action. The authority's failed authentications (AuthFailed) and the
// limits package's refusals and anomalies both go through it.
type Throttle struct {
	rec EventRecorder
	now func() time.Time
	log *slog.Logger

	mu      sync.Mutex
	since   time.Time
	tallies map[string]*tally
}

type tally struct {
	first   store.Event    // recorded at once (or, for "other", the first one held back)
	more    int            // events for the key since, to be summarised
	reasons map[string]int // more, by reason
}

// NewThrottle returns a Throttle writing to rec; clock and logger may be nil.
func NewThrottle(rec EventRecorder, clock func() time.Time, logger *slog.Logger) *Throttle {
	if clock == nil {
		clock = time.Now
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Throttle{rec: rec, now: clock, log: logger, tallies: map[string]*tally{}}
}

// Report records ev at once unless an event of the same action and key was
// recorded in this minute; then it is only counted under reason (a short
// slug, or empty) for the minute's summary.
func (t *Throttle) Report(ctx context.Context, key, reason string, ev store.Event) {
	ev.Time = t.now()
	key = string(ev.Action) + "\x00" + key
	t.mu.Lock()
	if t.since.IsZero() {
		t.since = ev.Time
	}
	tl, ok := t.tallies[key]
	if !ok && len(t.tallies) >= maxThrottleKeys {
		// Too many keys this minute: hold this one back into its action's
		// "other" summary rather than write a leaf for it.
		key = string(ev.Action) + otherKey
		if tl, ok = t.tallies[key]; !ok {
			ev.Actor, ev.Source, ev.Identity, ev.Serial, ev.Fingerprint = "various", "", "", "", ""
			tl = &tally{first: ev}
			t.tallies[key] = tl
		}
	}
	if ok || tl != nil {
		tl.count(reason)
		t.mu.Unlock()
		return
	}
	t.tallies[key] = &tally{first: ev}
	t.mu.Unlock()
	if err := t.rec.RecordEvent(context.WithoutCancel(ctx), &ev); err != nil {
		t.log.LogAttrs(ctx, slog.LevelError, "auditlog: could not record an event",
			slog.String("action", string(ev.Action)), slog.String("error", err.Error()))
	}
}

func (tl *tally) count(reason string) {
	tl.more++
	if reason == "" {
		return
	}
	if tl.reasons == nil {
		tl.reasons = map[string]int{}
	}
	if _, ok := tl.reasons[reason]; !ok && len(tl.reasons) >= maxReasons {
		reason = "other"
	}
	tl.reasons[reason]++
}

// AuthFailed records a failed authentication from source for reason (a
// stable slug); it has the shape of the authority's AuthFailed hook.
func (t *Throttle) AuthFailed(source netip.Addr, reason string) {
	src, from := "", "an unknown source"
	if source.IsValid() {
		src = source.Unmap().String()
		from = src
	}
	t.Report(context.Background(), src, reason, store.Event{Actor: "unauthenticated", Source: src,
		Action: store.ActionAuthFailed, Outcome: "failed", Detail: fmt.Sprintf("authentication failed from %s: %s", from, reason)})
}

// Flush records one summary per key that had events after its first, and
// starts a new minute.
func (t *Throttle) Flush(ctx context.Context) error {
	t.mu.Lock()
	tallies, since := t.tallies, t.since
	t.tallies, t.since = map[string]*tally{}, time.Time{}
	t.mu.Unlock()
	var firstErr error
	for _, key := range slices.Sorted(maps.Keys(tallies)) {
		tl := tallies[key]
		if tl.more == 0 {
			continue
		}
		ev := tl.first
		ev.Time, ev.Seq, ev.LeafIndex, ev.LeafHash = t.now(), 0, 0, nil
		at := since.UTC().Format(time.RFC3339)
		var by string
		if len(tl.reasons) > 0 {
			parts := make([]string, 0, len(tl.reasons))
			for _, r := range slices.Sorted(maps.Keys(tl.reasons)) {
				parts = append(parts, fmt.Sprintf("%s %d", r, tl.reasons[r]))
			}
			by = " (" + strings.Join(parts, ", ") + ")"
		}
		ev.Detail = fmt.Sprintf("%d more since %s%s like: %s", tl.more, at, by, tl.first.Detail)
		if strings.HasSuffix(key, otherKey) {
			ev.Detail = fmt.Sprintf("%d more since %s%s for keys beyond the first %d, the first of them: %s",
				tl.more, at, by, maxThrottleKeys, tl.first.Detail)
		}
		if err := t.rec.RecordEvent(ctx, &ev); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("auditlog: record a summary of %s: %w", ev.Action, err)
		}
	}
	return firstErr
}

// Run flushes once a minute until ctx ends, and once more on the way out.
func (t *Throttle) Run(ctx context.Context) error {
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return t.Flush(context.WithoutCancel(ctx))
		case <-tick.C:
			if err := t.Flush(ctx); err != nil {
				t.log.LogAttrs(ctx, slog.LevelError, "auditlog: recording throttled events' summaries", slog.String("error", err.Error()))
			}
		}
	}
}
