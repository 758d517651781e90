// Package feed is the server side of the revocation push feed: a Hub that
// follows the store's revocation and deny list events in sequence order,
// keeps the current set and a log of recent changes, and streams them to
// subscribers as server-sent events (Handler), a snapshot first and then
// each change as it commits.
//
// A snapshot is streamed, never built: the Hub keeps its state in shards
// (by a hash of the key), and a stream takes a few shards at a time under
// the Hub's lock, marshals them into parts of at most
// revocation.PartEntries entries and writes them, while changes keep
// landing between two takes. The snapshot is labelled with the sequence
// number S the Hub had when the stream began; it holds every entry as it
// stood at S or as a later change left it, and once it is written the
// stream sends every change after S from the Hub's log, then goes live.
// A change may thus reach the subscriber twice (in a part and then as
// itself), which is harmless: applying a change again changes nothing,
// and the subscriber is told of each change once. So a new subscriber
// costs the server a few shards and one part, not a copy of the state.
//
// The wire (see the revocation package): a subscriber that asks with
// snapshot=chunked gets snapshot-begin, snapshot-part... and snapshot-end;
// one that does not (a subscriber that predates parts) gets the same
// content as one "snapshot" event, written in pieces as it is read, so it
// never sees half a set.
//
// Sequence numbers are the store's event sequence numbers, which every
// server sharing a database agrees on, so a subscriber may resume on any
// server. With PostgreSQL the Hub learns of changes committed by other
// servers through LISTEN/NOTIFY (the store's optional Listener ability);
// changes made by this server arrive through Changed. A slow poll is the
// safety net for both.
//
// The wire types and the subscriber live in the public package revocation.
// Start with New and Run.
package feed

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/revocation"
)

// Source is what the Hub reads from the store.
type Source interface {
	LastEventSeq(ctx context.Context) (int64, error)
	RevokedCertificates(ctx context.Context, issuer string, validAt time.Time, fn func(store.Revoked) error) error
	DeniedIdentities(ctx context.Context) ([]store.Denial, error)
	Events(ctx context.Context, f store.EventFilter) ([]store.Event, error)
	Certificate(ctx context.Context, serial string) (store.Certificate, error)
}

// Listener is the optional ability of a Source to say when another server
// committed a change (PostgreSQL LISTEN/NOTIFY). ListenRevocations calls fn
// after each, until ctx ends.
type Listener interface {
	ListenRevocations(ctx context.Context, fn func()) error
}

// Config wires a Hub.
type Config struct {
	Source Source
	// Poll is the safety-net interval for catching up without a
	// notification; default 5s.
	Poll time.Duration
	// MaxLog is how many recent changes are kept, at least, for resuming
	// subscribers (up to a quarter more between cuts); one that is further
	// behind gets a snapshot instead. Default 100,000.
	MaxLog int
	// OnEvent, when set, is called for each new change after it is applied
	// (the CRL and OCSP caches hang here). It must not block for long.
	OnEvent func(revocation.Event)
	// Delivered, when set, is told after each change is written to a
	// subscriber how long after the Hub applied it (metrics). It must be
	// cheap.
	Delivered func(latency time.Duration)
	Clock     func() time.Time
	Logger    *slog.Logger
}

var actions = []store.Action{store.ActionCertRevoked, store.ActionIdentityDenied, store.ActionIdentityAllowed}

// Hub follows the store and fans changes out. Safe for concurrent use.
type Hub struct {
	cfg  Config
	poke chan struct{}
	done chan struct{}

	// partEntries is how many entries a snapshot part holds at most
	// (revocation.PartEntries; tests make it small).
	partEntries atomic.Int64
	// afterPart, when set, is called by a stream after each snapshot part
	// it wrote (tests: to change the state, or cut the connection, while
	// a snapshot streams).
	afterPart atomic.Pointer[func(part int)]

	mu      sync.Mutex
	ready   bool
	base    int64 // the log holds every change after base
	seq     int64
	state   *state
	log     []revocation.Event
	subs    map[*subscriber]struct{}
	dropped int64 // subscribers cut off for lagging, since New
}

// shards is how many pieces the Hub's state is kept in; a snapshot stream
// takes whole shards under the lock, so one holds about 1/shards of the
// state at a time (1,000 entries at a million).
const shards = 1024

// state is the revoked certificates and the denied identities, each kept
// in shards by a hash of the key.
type state struct {
	seed    maphash.Seed
	revoked [shards]map[string]revocation.Event
	denied  [shards]map[string]struct{}
}

func newState() *state {
	st := &state{seed: maphash.MakeSeed()}
	for i := range shards {
		st.revoked[i] = map[string]revocation.Event{}
		st.denied[i] = map[string]struct{}{}
	}
	return st
}

func (st *state) shard(key string) int { return int(maphash.String(st.seed, key) % shards) }

func (st *state) revoke(e revocation.Event) { st.revoked[st.shard(e.Serial)][e.Serial] = e }
func (st *state) deny(id string)            { st.denied[st.shard(id)][id] = struct{}{} }
func (st *state) allow(id string)           { delete(st.denied[st.shard(id)], id) }

type subscriber struct {
	ch      chan queued
	dropped bool
	// snapshotAt is the sequence number of the snapshot the stream is
	// writing, -1 once it is live: until then changes are not queued for
	// it, as it reads them from the log after the snapshot.
	snapshotAt int64

	// What the stream handed to the connection but the peer has not taken
	// yet: a subscriber that stops reading fills the socket buffers long
	// before a write blocks, so the channel alone would show it as current.
	conn connQueue // nil when the connection cannot say (not Linux, not TCP)
	mu   sync.Mutex
	sent int64   // bytes written to the stream
	ends []int64 // stream offset at the end of each written change the peer may not have taken
	// blockedSince is when the write in progress started (Unix nanoseconds),
	// 0 when none is.
	blockedSince atomic.Int64
}

// wrote notes a change written to the stream, n bytes long, and forgets
// the ones the peer has taken.
func (s *subscriber) wrote(n int, change bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent += int64(n)
	if change {
		s.ends = append(s.ends, s.sent)
	}
	s.unreadLocked()
}

// unread is how many written changes, and how many bytes, the peer has not
// taken from the connection yet.
func (s *subscriber) unread() (changes int, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unreadLocked()
}

func (s *subscriber) unreadLocked() (int, int64) {
	if s.conn == nil {
		s.ends = s.ends[:0]
		return 0, 0
	}
	queued := s.conn.queued()
	taken := s.sent - queued
	i := 0
	for i < len(s.ends) && s.ends[i] <= taken {
		i++
	}
	if i > 0 {
		s.ends = s.ends[:copy(s.ends, s.ends[i:])]
	}
	return len(s.ends), queued
}

// queued is a change waiting in a subscriber's buffer, with when the Hub
// applied it.
type queued struct {
	revocation.Event
	applied time.Time
}

// subscriberBuffer is how many changes a subscriber may lag behind before
// it is dropped; it reconnects and resumes from the log.
const subscriberBuffer = 4096

// New returns a Hub; Run loads the current state and follows the store.
func New(cfg Config) (*Hub, error) {
	if cfg.Source == nil {
		return nil, errors.New("feed: Config needs a Source")
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 5 * time.Second
	}
	if cfg.MaxLog <= 0 {
		cfg.MaxLog = 100_000
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Hub{cfg: cfg, poke: make(chan struct{}, 1), done: make(chan struct{}), state: newState(), subs: map[*subscriber]struct{}{}}
	h.partEntries.Store(revocation.PartEntries)
	return h, nil
}

// Changed says a change committed; the Hub catches up at once. It never
// blocks.
func (h *Hub) Changed() {
	select {
	case h.poke <- struct{}{}:
	default:
	}
}

// Load reads the current state from the store. Run calls it; call it
// first to serve snapshots before Run has started.
func (h *Hub) Load(ctx context.Context) error {
	// The sequence number is read before the state: changes committed in
	// between are in the state and are also replayed after it, which is
	// harmless because applying a change twice changes nothing.
	seq, err := h.cfg.Source.LastEventSeq(ctx)
	if err != nil {
		return fmt.Errorf("feed: %w", err)
	}
	st := newState()
	err = h.cfg.Source.RevokedCertificates(ctx, "", h.cfg.Clock(), func(r store.Revoked) error {
		st.revoke(revocation.Event{Kind: revocation.KindRevoked, Serial: r.Serial, Identity: r.Identity,
			RevokedAt: r.RevokedAt, Reason: r.Reason, NotAfter: r.NotAfter})
		return nil
	})
	if err != nil {
		return fmt.Errorf("feed: %w", err)
	}
	list, err := h.cfg.Source.DeniedIdentities(ctx)
	if err != nil {
		return fmt.Errorf("feed: %w", err)
	}
	for _, d := range list {
		st.deny(d.Identity)
	}
	h.mu.Lock()
	h.ready, h.base, h.seq, h.state, h.log = true, seq, seq, st, nil
	h.mu.Unlock()
	return nil
}

// Run loads the state and follows the store until ctx ends; then every
// open stream is ended.
func (h *Hub) Run(ctx context.Context) error {
	defer close(h.done)
	h.mu.Lock()
	ready := h.ready
	h.mu.Unlock()
	if !ready {
		if err := h.Load(ctx); err != nil {
			return err
		}
	}
	if l, ok := h.cfg.Source.(Listener); ok {
		go l.ListenRevocations(ctx, h.Changed)
	}
	t := time.NewTicker(h.cfg.Poll)
	defer t.Stop()
	for {
		if err := h.CatchUp(ctx); err != nil && ctx.Err() == nil {
			h.cfg.Logger.LogAttrs(ctx, slog.LevelError, "revocation feed cannot read the store; retrying", slog.String("error", err.Error()))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-h.poke:
		case <-t.C:
		}
	}
}

// CatchUp applies every change committed after the Hub's sequence number.
func (h *Hub) CatchUp(ctx context.Context) error {
	for {
		h.mu.Lock()
		after := h.seq
		h.mu.Unlock()
		evs, err := h.cfg.Source.Events(ctx, store.EventFilter{AfterSeq: after, Actions: actions, Limit: 1000})
		if err != nil {
			return fmt.Errorf("feed: %w", err)
		}
		for _, ev := range evs {
			e, err := h.toEvent(ctx, ev)
			if err != nil {
				return err
			}
			if h.apply(e) && h.cfg.OnEvent != nil {
				h.cfg.OnEvent(e)
			}
		}
		if len(evs) < 1000 {
			return nil
		}
	}
}

func (h *Hub) toEvent(ctx context.Context, ev store.Event) (revocation.Event, error) {
	e := revocation.Event{Seq: ev.Seq, Identity: ev.Identity}
	switch ev.Action {
	case store.ActionIdentityDenied:
		e.Kind = revocation.KindDenied
	case store.ActionIdentityAllowed:
		e.Kind = revocation.KindAllowed
	default:
		// The event says which certificate; the record says how it was
		// revoked and until when it matters.
		rec, err := h.cfg.Source.Certificate(ctx, ev.Serial)
		if err != nil {
			return e, fmt.Errorf("feed: revoked certificate %s: %w", ev.Serial, err)
		}
		e.Kind, e.Serial, e.Identity, e.RevokedAt, e.Reason, e.NotAfter =
			revocation.KindRevoked, rec.Serial, rec.Identity, rec.RevokedAt, rec.RevocationReason, rec.NotAfter
	}
	return e, nil
}

// apply applies e and sends it to every subscriber; false if it was
// applied before.
func (h *Hub) apply(e revocation.Event) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if e.Seq <= h.seq {
		return false
	}
	h.seq = e.Seq
	switch e.Kind {
	case revocation.KindRevoked:
		h.state.revoke(e)
	case revocation.KindDenied:
		h.state.deny(e.Identity)
	case revocation.KindAllowed:
		h.state.allow(e.Identity)
	}
	h.log = append(h.log, e)
	applied := time.Now()
	// The log is cut back to MaxLog only once it is a quarter over: a
	// cut copies the whole log, and cutting at every change made a bulk
	// revocation quadratic (BenchmarkApplyPastMaxLog: 15 ms a change at
	// 100,000 before, 8 µs after).
	if len(h.log) > h.cfg.MaxLog+h.cfg.MaxLog/4 {
		drop := len(h.log) - h.cfg.MaxLog
		h.base = h.log[drop-1].Seq
		h.log = append([]revocation.Event(nil), h.log[drop:]...)
	}
	for s := range h.subs {
		if s.snapshotAt >= 0 {
			continue // writing its snapshot: it reads this from the log next
		}
		select {
		case s.ch <- queued{e, applied}:
		default:
			// Too far behind: end its stream; it resumes from the log.
			h.dropped++
			s.dropped = true
			close(s.ch)
			delete(h.subs, s)
		}
	}
	return true
}

// Snapshot is the current state, all of it at once (streams never build
// one: see the package comment).
func (h *Hub) Snapshot() revocation.Snapshot {
	h.mu.Lock()
	defer h.mu.Unlock()
	snap := revocation.Snapshot{Seq: h.seq, Revoked: []revocation.Event{}, Denied: []string{}}
	c := snapshotCursor{}
	for !c.done {
		snap.Revoked, snap.Denied = h.takeLocked(&c, -1, snap.Revoked, snap.Denied)
	}
	return snap
}

// snapshotCursor is how far a stream has read the state: revoked
// certificates shard by shard, then denied identities.
type snapshotCursor struct {
	shard  int
	denied bool
	done   bool
}

// take appends the entries of the next shards to revoked and denied,
// whole shards, until it has at least want entries (want < 0: all) or
// has read the last shard. Revocations of certificates that have expired
// are not worth sending: it forgets them.
func (h *Hub) take(c *snapshotCursor, want int, revoked []revocation.Event, denied []string) ([]revocation.Event, []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.takeLocked(c, want, revoked, denied)
}

func (h *Hub) takeLocked(c *snapshotCursor, want int, revoked []revocation.Event, denied []string) ([]revocation.Event, []string) {
	now := h.cfg.Clock()
	for !c.done && (want < 0 || len(revoked)+len(denied) < want) {
		if !c.denied {
			m := h.state.revoked[c.shard]
			for serial, e := range m {
				if e.NotAfter.Before(now) {
					delete(m, serial)
					continue
				}
				revoked = append(revoked, e)
			}
		} else {
			for id := range h.state.denied[c.shard] {
				denied = append(denied, id)
			}
		}
		if c.shard++; c.shard == shards {
			c.shard = 0
			c.done = c.denied
			c.denied = true
		}
	}
	return revoked, denied
}

// subscribe registers a subscriber that has applied everything up to
// since. When since is within the log it gets the changes after it
// (backlog) and then every new change on ch; registering under the same
// lock that apply holds is what makes the hand-over from backlog to live
// gap-free. Otherwise (since is 0 or the log no longer reaches back to it)
// it is to write a snapshot at snapshotAt and then call live.
func (h *Hub) subscribe(since int64, conn connQueue) (snapshotAt int64, backlog []revocation.Event, s *subscriber, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.ready {
		return 0, nil, nil, errors.New("feed: not loaded yet; retry in a moment")
	}
	s = &subscriber{ch: make(chan queued, subscriberBuffer), conn: conn, snapshotAt: -1}
	if since > 0 && since >= h.base && since <= h.seq {
		backlog = h.logAfterLocked(since)
	} else {
		s.snapshotAt = h.seq
	}
	h.subs[s] = struct{}{}
	return s.snapshotAt, backlog, s, nil
}

// live ends a subscriber's snapshot: it returns the changes after the
// snapshot from the log and queues every later one on ch. It fails when
// the log no longer reaches back to the snapshot (more than MaxLog
// changes while it streamed): the stream ends and the subscriber, which
// has the snapshot, comes back for another.
func (h *Hub) live(s *subscriber) ([]revocation.Event, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.snapshotAt < h.base {
		return nil, fmt.Errorf("feed: more than %d changes while the snapshot at %d streamed; the subscriber comes back for another", h.cfg.MaxLog, s.snapshotAt)
	}
	backlog := h.logAfterLocked(s.snapshotAt)
	s.snapshotAt = -1
	return backlog, nil
}

// logAfterLocked copies the changes in the log after seq.
func (h *Hub) logAfterLocked(seq int64) []revocation.Event {
	i := sort.Search(len(h.log), func(i int) bool { return h.log[i].Seq > seq })
	return append([]revocation.Event(nil), h.log[i:]...)
}

func (h *Hub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !s.dropped {
		delete(h.subs, s)
	}
}

// Subscribers is how many streams are open.
func (h *Hub) Subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// Stats is the Hub's state as metrics see it.
type Stats struct {
	Subscribers int
	// MaxLag is how far the slowest open stream is behind the latest
	// change, by what its subscriber has taken: the changes waiting in its
	// buffer in the Hub plus those written to its connection that the peer
	// has not taken yet (Linux; elsewhere only the buffer). A subscriber is
	// cut off (and Dropped grows) when its buffer in the Hub reaches 4096.
	MaxLag int
	// MaxUnreadBytes is the most bytes one subscriber's connection holds
	// that its peer has not taken (Linux only).
	MaxUnreadBytes int64
	// MaxWriteBlocked is the longest a write to one subscriber has been
	// waiting, now: a peer that stopped reading with full socket buffers.
	MaxWriteBlocked time.Duration
	// Seq is the sequence number of the latest change applied.
	Seq int64
	// Dropped counts subscribers cut off for lagging, since New.
	Dropped int64
}

// Stats reads the Hub's state; cheap enough for every metrics scrape.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := Stats{Subscribers: len(h.subs), Seq: h.seq, Dropped: h.dropped}
	now := time.Now().UnixNano()
	for s := range h.subs {
		changes, bytes := s.unread()
		waiting := len(s.ch)
		if s.snapshotAt >= 0 { // writing its snapshot: the log holds its changes
			waiting = len(h.log) - sort.Search(len(h.log), func(i int) bool { return h.log[i].Seq > s.snapshotAt })
		}
		st.MaxLag = max(st.MaxLag, waiting+changes)
		st.MaxUnreadBytes = max(st.MaxUnreadBytes, bytes)
		if since := s.blockedSince.Load(); since != 0 {
			st.MaxWriteBlocked = max(st.MaxWriteBlocked, time.Duration(now-since))
		}
	}
	return st
}
