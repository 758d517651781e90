package feed

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/revocation"
)

// sseEvent is one server-sent event as read off the wire.
type sseEvent struct {
	name, id string
	data     []byte
}

// readEvents opens the feed with query and reads its events until stop
// says so, checking that no line is longer than a subscriber reads.
func (e *env) readEvents(query string, stop func(sseEvent) bool) []sseEvent {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // bounds a broken test
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.url+query, nil)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("the feed answered %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 64<<20)
	var out []sseEvent
	var ev sseEvent
	for sc.Scan() {
		line := sc.Text()
		if len(line) > revocation.MaxLineBytes && ev.name != "snapshot" {
			e.t.Fatalf("a line of %d bytes in a %q event", len(line), ev.name)
		}
		switch {
		case line == "":
			if ev.name != "" {
				out = append(out, ev)
				if stop(ev) {
					return out
				}
			}
			ev = sseEvent{}
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "id: "):
			ev.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			ev.data = append(ev.data, strings.TrimPrefix(line, "data: ")...)
		}
	}
	e.t.Fatalf("the stream ended (%v) after %d events", sc.Err(), len(out))
	return nil
}

func decode[T any](t *testing.T, data []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("%v: %s", err, data)
	}
	return v
}

// fill revokes the first n certificates and denies the identities.
func (e *env) fill(n int, ids ...string) {
	e.t.Helper()
	for i := range n {
		e.revoke(i)
	}
	for _, id := range ids {
		e.deny(id, false)
	}
	if err := e.hub.CatchUp(context.Background()); err != nil {
		e.t.Fatal(err)
	}
}

// TestSnapshotInParts reads a chunked snapshot off the wire: begin, parts
// numbered from 1 of at most the part size, an end that counts them and
// carries the sequence number as its id; together they are the server's
// set.
func TestSnapshotInParts(t *testing.T) {
	e := newEnv(t, 0)
	e.hub.partEntries.Store(4)
	ids := []string{"spiffe://example.test/denied/a", "spiffe://example.test/denied/b", "denied.example.test", "192.0.2.9", "spiffe://example.test/denied/c"}
	e.fill(30, ids...)
	seq := e.hub.Stats().Seq
	events := e.readEvents("?snapshot=chunked", func(ev sseEvent) bool { return ev.name == revocation.EventSnapshotEnd })
	if events[0].name != revocation.EventSnapshotBegin || decode[revocation.SnapshotBegin](t, events[0].data).Seq != seq {
		t.Fatalf("first event %s %s, want %s at %d", events[0].name, events[0].data, revocation.EventSnapshotBegin, seq)
	}
	var serials, denied []string
	for i, ev := range events[1 : len(events)-1] {
		if ev.name != revocation.EventSnapshotPart || ev.id != "" {
			t.Fatalf("event %d is %q with id %q, want a part without an id", i+1, ev.name, ev.id)
		}
		p := decode[revocation.SnapshotPart](t, ev.data)
		if p.Seq != seq || p.Part != i+1 || len(p.Revoked)+len(p.Denied) > 4 || len(p.Revoked)+len(p.Denied) == 0 {
			t.Fatalf("part %d: %s", i+1, ev.data)
		}
		for _, r := range p.Revoked {
			serials = append(serials, r.Serial)
		}
		denied = append(denied, p.Denied...)
	}
	end := events[len(events)-1]
	parts := len(events) - 2
	if got := decode[revocation.SnapshotEnd](t, end.data); got != (revocation.SnapshotEnd{Seq: seq, Parts: parts, Revoked: 30, Denied: 5}) || end.id != strconv.FormatInt(seq, 10) {
		t.Errorf("end %s id %s, want %d parts, 30 revoked, 5 denied at %d", end.data, end.id, parts, seq)
	}
	if parts != 9 {
		t.Errorf("%d parts for 35 entries of at most 4, want 9", parts)
	}
	wantSerials, wantIDs := e.serverSet()
	slices.Sort(serials)
	slices.Sort(denied)
	slices.Sort(wantIDs)
	if !slices.Equal(serials, wantSerials) || !slices.Equal(denied, wantIDs) {
		t.Errorf("the parts hold %v %v, the server %v %v", serials, denied, wantSerials, wantIDs)
	}

	// The Subscriber asks for parts and switches once, at the end.
	var resets []revocation.SnapshotInfo
	var mu sync.Mutex
	reset, waitReset := signal(t)
	sub, _ := startSubscriber(t, revocation.Config{URL: e.url, TLS: e.tls, OnReset: func(i revocation.SnapshotInfo) {
		mu.Lock()
		resets = append(resets, i)
		mu.Unlock()
		reset()
	}})
	waitReset("the subscriber's snapshot", 1)
	e.waitSame(sub)
	mu.Lock()
	defer mu.Unlock()
	if want := (revocation.SnapshotInfo{Seq: seq, Revoked: 30, Denied: 5, Parts: 9}); len(resets) != 1 || resets[0] != want {
		t.Errorf("resets %+v, want one %+v", resets, want)
	}
}

// TestOldSubscriberGetsOneSnapshot: a subscriber that does not ask for
// parts (one that predates them) gets the same content as one "snapshot"
// event, even when the server writes it in pieces.
func TestOldSubscriberGetsOneSnapshot(t *testing.T) {
	e := newEnv(t, 0)
	e.hub.partEntries.Store(3)
	e.fill(25, "spiffe://example.test/denied/a", "denied.example.test")
	seq := e.hub.Stats().Seq
	events := e.readEvents("", func(sseEvent) bool { return true })
	if events[0].name != "snapshot" || events[0].id != strconv.FormatInt(seq, 10) {
		t.Fatalf("first event %q id %q, want one snapshot at %d", events[0].name, events[0].id, seq)
	}
	snap := decode[revocation.Snapshot](t, events[0].data)
	var serials []string
	for _, r := range snap.Revoked {
		serials = append(serials, r.Serial)
	}
	slices.Sort(serials)
	slices.Sort(snap.Denied)
	wantSerials, wantIDs := e.serverSet()
	slices.Sort(wantIDs)
	if snap.Seq != seq || !slices.Equal(serials, wantSerials) || !slices.Equal(snap.Denied, wantIDs) {
		t.Errorf("snapshot %d %v %v, want %d %v %v", snap.Seq, serials, snap.Denied, seq, wantSerials, wantIDs)
	}
	// An empty set is still a well-formed document.
	empty := newEnv(t, 0)
	events = empty.readEvents("", func(sseEvent) bool { return true })
	if got := decode[revocation.Snapshot](t, events[0].data); got.Revoked == nil || got.Denied == nil || len(got.Revoked)+len(got.Denied) != 0 {
		t.Errorf("empty snapshot %s", events[0].data)
	}
	// Something other than parts or nothing is refused.
	resp, err := e.srv.Client().Get(e.url + "?snapshot=yes")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("snapshot=yes answered %s, want 400", resp.Status)
	}
}

// TestOldSubscriberLargeSnapshot: the one-event snapshot of a state
// larger than a piece is still one event of valid JSON; the state is put
// in the Hub directly (the store is not what is measured here).
func TestOldSubscriberLargeSnapshot(t *testing.T) {
	e := newEnv(t, 0)
	const n = 5000 // about 1 MiB of JSON: several pieces
	fillState(e.hub, n, 10)
	events := e.readEvents("", func(sseEvent) bool { return true })
	snap := decode[revocation.Snapshot](t, events[0].data)
	if len(events[0].data) < 2*revocation.PartBytes || len(snap.Revoked) != n || len(snap.Denied) != 10 {
		t.Errorf("%d bytes: %d revoked, %d denied, want %d and 10 over more than two pieces", len(events[0].data), len(snap.Revoked), len(snap.Denied), n)
	}
	events = e.readEvents("?snapshot=chunked", func(ev sseEvent) bool { return ev.name == revocation.EventSnapshotEnd })
	end := decode[revocation.SnapshotEnd](t, events[len(events)-1].data)
	if end.Revoked != n || end.Denied != 10 || end.Parts != (n+10+revocation.PartEntries-1)/revocation.PartEntries {
		t.Errorf("end %+v", end)
	}
}

// fillState puts n revoked certificates, valid for a day, and d denied
// identities straight into the Hub's state.
func fillState(h *Hub, n, d int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	at := time.Now()
	for i := range n {
		h.state.revoke(revocation.Event{Kind: revocation.KindRevoked, Serial: fmt.Sprintf("%032x", i+1<<60),
			Identity: fmt.Sprintf("spiffe://example.test/fleet/service-%d", i%5000), RevokedAt: at, Reason: 1, NotAfter: at.Add(24 * time.Hour)})
	}
	for i := range d {
		h.state.deny(fmt.Sprintf("spiffe://example.test/denied/%d", i))
	}
}

// TestChangesDuringSnapshot: changes committed while a snapshot streams
// reach the subscriber once each, after the snapshot, whether they landed
// in shards the stream had read (they come from the log: without it they
// would be lost) or not (then they are in a part too, which is harmless).
func TestChangesDuringSnapshot(t *testing.T) {
	tests := []struct {
		name        string
		partEntries int64
		atPart      int
	}{
		// One part: every shard was read when the changes land.
		{"AfterEveryShard", 1000, 1},
		// Small parts: the changes land while most shards are unread.
		{"MidSnapshot", 2, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 0)
			e.hub.partEntries.Store(tc.partEntries)
			e.fill(10, "spiffe://example.test/denied/a", "spiffe://example.test/denied/b")
			before := e.hub.Stats().Seq
			var during atomic.Int64 // the changes made while the snapshot streamed, after this sequence
			hook := func(part int) {
				if part != tc.atPart || !during.CompareAndSwap(0, -1) {
					return
				}
				for i := 10; i < 20; i++ {
					e.revoke(i)
				}
				e.deny("spiffe://example.test/denied/a", true)  // allowed
				e.deny("spiffe://example.test/denied/c", false) // denied
				if err := e.hub.CatchUp(context.Background()); err != nil {
					t.Error(err)
				}
				// The stream still writing its snapshot lags by the changes
				// waiting for it in the log.
				if st := e.hub.Stats(); st.Subscribers != 1 || st.MaxLag < 12 {
					t.Errorf("while the snapshot streams, Stats = %+v, want 1 subscriber at least 12 changes behind", st)
				}
				during.Store(e.hub.Stats().Seq)
			}
			e.hub.afterPart.Store(&hook)
			var mu sync.Mutex
			applied := map[int64]int{}
			var resets []revocation.SnapshotInfo
			sub, _ := startSubscriber(t, revocation.Config{URL: e.url, TLS: e.tls,
				OnEvent: func(ev revocation.Event) {
					mu.Lock()
					applied[ev.Seq]++
					mu.Unlock()
				},
				OnReset: func(i revocation.SnapshotInfo) {
					mu.Lock()
					resets = append(resets, i)
					mu.Unlock()
				}})
			e.waitSame(sub)
			if during.Load() <= before {
				t.Fatal("no change was made while the snapshot streamed")
			}
			if sub.Set().Seq() != during.Load() {
				// waitSame saw the same set; the last change may still be on its way.
				deadline := time.Now().Add(20 * time.Second)
				for sub.Set().Seq() != during.Load() && time.Now().Before(deadline) {
					<-sub.Set().Changed()
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if len(resets) != 1 || resets[0].Seq != before {
				t.Fatalf("resets %+v, want one at %d, the sequence when the stream began", resets, before)
			}
			// Every change after the snapshot's sequence, once.
			var want []int64
			evs, err := e.st.Events(context.Background(), store.EventFilter{AfterSeq: before, Actions: actions})
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range evs {
				want = append(want, ev.Seq)
			}
			if len(want) != 12 {
				t.Fatalf("%d changes after %d in the store, want 12", len(want), before)
			}
			for _, seq := range want {
				if applied[seq] != 1 {
					t.Errorf("change %d told %d times, want once", seq, applied[seq])
				}
			}
			if len(applied) != len(want) {
				t.Errorf("told of %d changes, want %d", len(applied), len(want))
			}
		})
	}
}

// TestSnapshotCutKeepsOldState: a connection cut in the middle of a
// snapshot leaves the subscriber's set exactly as it was, and the next
// connection brings the whole new one.
func TestSnapshotCutKeepsOldState(t *testing.T) {
	e := newEnv(t, 2) // a log of 2 changes: a subscriber away for more needs a snapshot
	e.hub.partEntries.Store(2)
	e.fill(5, "spiffe://example.test/denied/a")
	sub, stop := startSubscriber(t, revocation.Config{URL: e.url, TLS: e.tls})
	e.waitSame(sub)
	stop()
	oldSeq, oldSerials, oldIDs := sub.Set().Seq(), sub.Set().Serials(), sub.Set().Identities()
	for i := 5; i < 15; i++ {
		e.revoke(i)
	}
	e.deny("spiffe://example.test/denied/a", true)
	if err := e.hub.CatchUp(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The first snapshot after this is cut after its third part.
	var cuts atomic.Int32
	hook := func(part int) {
		if part == 3 && cuts.CompareAndSwap(0, 1) {
			e.srv.CloseClientConnections()
		}
	}
	e.hub.afterPart.Store(&hook)
	changed := sub.Set().Changed()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // bounds a broken test
	defer cancel()
	err := sub.RunOnce(ctx)
	if cuts.Load() != 1 || ctx.Err() != nil {
		t.Fatalf("the connection ended (%v) without the cut", err)
	}
	if sub.Set().Seq() != oldSeq || !slices.Equal(sub.Set().Serials(), oldSerials) || !slices.Equal(sub.Set().Identities(), oldIDs) {
		t.Errorf("after a cut mid-snapshot (%v) the set is at %d with %d serials, want it unchanged at %d with %d",
			err, sub.Set().Seq(), len(sub.Set().Serials()), oldSeq, len(oldSerials))
	}
	select {
	case <-changed:
		t.Error("the set changed during a snapshot that never ended")
	default:
	}
	// Reconnecting brings the whole new set.
	go sub.Run(ctx)
	e.waitSame(sub)
}

// TestLogOverflowsDuringSnapshot: when more changes commit while a
// snapshot streams than the log holds, the stream ends after the snapshot
// and the subscriber, which has it, comes back for another; it ends with
// the server's set.
func TestLogOverflowsDuringSnapshot(t *testing.T) {
	e := newEnv(t, 2)
	e.hub.partEntries.Store(2)
	e.fill(4)
	var once atomic.Bool
	hook := func(int) {
		if once.CompareAndSwap(false, true) {
			for i := 4; i < 9; i++ {
				e.revoke(i)
			}
			if err := e.hub.CatchUp(context.Background()); err != nil {
				t.Error(err)
			}
		}
	}
	e.hub.afterPart.Store(&hook)
	resets, waitResets := signal(t)
	sub, _ := startSubscriber(t, revocation.Config{URL: e.url, TLS: e.tls, OnReset: func(revocation.SnapshotInfo) { resets() }})
	waitResets("a second snapshot after the log overflowed", 2)
	e.waitSame(sub)
}
