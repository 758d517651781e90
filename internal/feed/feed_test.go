package feed

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/sqlite"
	"github.com/mica-pki/mica/internal/store/storetest"
	"github.com/mica-pki/mica/revocation"
)

type env struct {
	t     *testing.T
	st    *sqlite.Store
	hub   *Hub
	srv   *httptest.Server
	url   string
	tls   *tls.Config
	certs []*store.Issuance
}

func newEnv(t *testing.T, maxLog int) *env {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "mica.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{t: t, st: st}
	for i := range 40 {
		iss := storetest.NewIssuance(i)
		if err := st.RecordIssuance(ctx, iss); err != nil {
			t.Fatal(err)
		}
		e.certs = append(e.certs, iss)
	}
	e.hub, err = New(Config{Source: st, MaxLog: maxLog, Poll: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.hub.Load(ctx); err != nil {
		t.Fatal(err)
	}
	go e.hub.Run(ctx)
	e.srv = httptest.NewTLSServer(e.hub.Handler())
	t.Cleanup(e.srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(e.srv.Certificate())
	e.url, e.tls = e.srv.URL+"/v1/revocations/feed", &tls.Config{RootCAs: pool}
	return e
}

func (e *env) revoke(i int) {
	e.t.Helper()
	c := e.certs[i].Certificate
	now := time.Now()
	if err := e.st.Revoke(context.Background(), c.Serial, i%6, now, &store.Event{Time: now, Action: store.ActionCertRevoked, Serial: c.Serial}); err != nil {
		e.t.Fatal(err)
	}
	e.hub.Changed()
}

func (e *env) deny(id string, allow bool) {
	e.t.Helper()
	ev := &store.Event{Time: time.Now(), Action: store.ActionIdentityDenied, Identity: id}
	change := e.st.Deny
	if allow {
		ev.Action, change = store.ActionIdentityAllowed, e.st.Allow
	}
	if err := change(context.Background(), id, ev); err != nil {
		e.t.Fatal(err)
	}
	e.hub.Changed()
}

// serverSet is the truth: the store's revoked, unexpired serials and its
// deny list.
func (e *env) serverSet() (serials, ids []string) {
	e.t.Helper()
	e.st.RevokedCertificates(context.Background(), "", time.Now(), func(r store.Revoked) error {
		serials = append(serials, r.Serial)
		return nil
	})
	list, _ := e.st.DeniedIdentities(context.Background())
	for _, d := range list {
		ids = append(ids, d.Identity)
	}
	slices.Sort(serials)
	return serials, ids
}

// waitSame waits until the subscriber's set equals the server's, woken by
// each change of the subscriber's set; the generous deadline only bounds
// a broken test, it is not a timing claim.
// startSubscriber runs a subscriber with cfg until the test ends; stop
// ends it sooner and returns once its Run has.
func startSubscriber(t *testing.T, cfg revocation.Config) (sub *revocation.Subscriber, stop func()) {
	t.Helper()
	sub, err := revocation.NewSubscriber(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sub.Run(ctx); close(done) }()
	stop = sync.OnceFunc(func() { cancel(); <-done })
	t.Cleanup(stop)
	return sub, stop
}

func (e *env) waitSame(s *revocation.Subscriber) {
	e.t.Helper()
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	for {
		changed := s.Set().Changed() // before looking, so no change is missed
		serials, ids := e.serverSet()
		gs, gi := s.Set().Serials(), s.Set().Identities()
		if slices.Equal(serials, gs) && slices.Equal(ids, gi) {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			e.t.Fatalf("subscriber set differs from the server's:\nserver %v %v\nsubscriber %v %v", serials, ids, gs, gi)
		}
	}
}

// signal returns a function that notes one occurrence of something, and a
// wait that returns once it occurred n times in all, failing the test at
// the deadline.
func signal(t *testing.T) (note func(), wait func(what string, n int)) {
	ch := make(chan struct{}, 1<<10)
	seen := 0
	note = func() { ch <- struct{}{} }
	wait = func(what string, n int) {
		t.Helper()
		deadline := time.NewTimer(20 * time.Second)
		defer deadline.Stop()
		for ; seen < n; seen++ {
			select {
			case <-ch:
			case <-deadline.C:
				t.Fatalf("%s: seen %d times, want %d", what, seen, n)
			}
		}
	}
	return note, wait
}

func TestResume(t *testing.T) {
	tests := []struct {
		name          string
		maxLog        int
		wantSnapshots int32 // snapshots the subscriber receives in all
	}{
		{"FromLog", 0, 1},       // resumes with exactly the missed changes
		{"LogOverflowed", 2, 2}, // missed more than the log holds: a new snapshot
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.maxLog)
			e.revoke(0)
			var snapshots atomic.Int32
			sub, err := revocation.NewSubscriber(revocation.Config{URL: e.url, TLS: e.tls,
				OnReset: func(revocation.SnapshotInfo) { snapshots.Add(1) }})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { sub.Run(ctx); close(done) }()
			e.waitSame(sub)
			e.revoke(1)
			e.deny("spiffe://example.test/denied/a", false)
			e.waitSame(sub)
			// Disconnect, miss changes, reconnect from the last sequence.
			cancel()
			<-done
			last := sub.Set().Seq()
			for i := 2; i < 9; i++ {
				e.revoke(i)
			}
			e.deny("spiffe://example.test/denied/b", false)
			e.deny("spiffe://example.test/denied/a", true)
			if sub.Set().Seq() != last {
				t.Fatal("the subscriber changed while disconnected")
			}
			ctx, cancel = context.WithCancel(context.Background())
			defer cancel()
			go sub.Run(ctx)
			e.waitSame(sub)
			e.revoke(9)
			e.waitSame(sub)
			if got := snapshots.Load(); got != tc.wantSnapshots {
				t.Errorf("%d snapshots, want %d", got, tc.wantSnapshots)
			}
		})
	}
}

func TestManySubscribers(t *testing.T) {
	e := newEnv(t, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var subs []*revocation.Subscriber
	for range 50 {
		sub, err := revocation.NewSubscriber(revocation.Config{URL: e.url, TLS: e.tls})
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, sub)
		go sub.Run(ctx)
	}
	for i := range 20 {
		e.revoke(i)
	}
	for i, s := range subs {
		t.Run(fmt.Sprint(i), func(t *testing.T) { e.t = t; e.waitSame(s) })
	}
}

// TestStats checks what the feed metrics read: open streams, the slowest
// one's backlog, and delivery to a live subscriber.
func TestStats(t *testing.T) {
	e := newEnv(t, 0)
	delivered, waitDelivered := signal(t)
	e.hub.cfg.Delivered = func(d time.Duration) {
		if d >= 0 {
			delivered()
		}
	}
	// A subscriber that reads nothing: its backlog is the lag.
	_, _, stuck, err := e.hub.subscribe(0, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The Hub registers a subscriber before it writes the snapshot.
	snapshot, waitSnapshot := signal(t)
	live, err := revocation.NewSubscriber(revocation.Config{URL: e.url, TLS: e.tls, OnReset: func(revocation.SnapshotInfo) { snapshot() }})
	if err != nil {
		t.Fatal(err)
	}
	go live.Run(ctx)
	waitSnapshot("the live subscriber's snapshot", 1)
	if n := e.hub.Stats().Subscribers; n != 2 {
		t.Fatalf("%d subscribers once the live one has its snapshot, want 2", n)
	}
	for i := range 3 {
		e.revoke(i)
	}
	e.waitSame(live)
	st := e.hub.Stats()
	if st.Subscribers != 2 || st.MaxLag != 3 || st.Seq == 0 || st.Dropped != 0 {
		t.Errorf("Stats = %+v, want 2 subscribers, the slowest 3 changes behind", st)
	}
	waitDelivered("Delivered for the 3 changes to the live subscriber", 3)
	e.hub.unsubscribe(stuck)
	if st := e.hub.Stats(); st.Subscribers != 1 || st.MaxLag != 0 {
		t.Errorf("after the stuck subscriber left, Stats = %+v", st)
	}
}

// TestLagCountsUnreadChanges is a subscriber that stops reading while its
// changes still fit in the socket buffers: no write blocks and the Hub's
// buffer stays empty, yet the lag must show what the subscriber has not
// read; once it reads, the lag goes back to zero.
func TestLagCountsUnreadChanges(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the send queue is read on Linux only")
	}
	e := newEnv(t, 0)
	delivered, waitDelivered := signal(t)
	e.hub.cfg.Delivered = func(d time.Duration) {
		if d >= 0 {
			delivered()
		}
	}
	srv := httptest.NewUnstartedServer(e.hub.Handler())
	srv.Config.ConnContext = ConnContext
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	// The smallest receive buffer the kernel allows, so the changes wait
	// in the server's send queue rather than in the reader's socket.
	d := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1) })
	}}
	conn, err := tls.DialWithDialer(d, "tcp", srv.Listener.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "example.com"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /v1/revocations/feed HTTP/1.1\r\nHost: feed\r\n\r\n")
	rd := bufio.NewReader(conn)
	conn.SetReadDeadline(time.Now().Add(20 * time.Second)) // bounds a broken test: the snapshot never comes
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(line, "event: snapshot") {
			break
		}
	}
	conn.SetReadDeadline(time.Time{})
	// Registered before its snapshot was written.
	if n := e.hub.Stats().Subscribers; n != 1 {
		t.Fatalf("%d subscribers once the snapshot arrived, want 1", n)
	}
	const n = 30
	for i := range n {
		e.revoke(i)
	}
	// Written to the socket, not read: from here the kernel only takes
	// bytes off the send queue as the reader acknowledges them.
	waitDelivered("Delivered for the changes the reader does not read", n)
	if st := e.hub.Stats(); st.Seq == 0 || st.MaxLag < n/2 || st.MaxUnreadBytes == 0 {
		t.Fatalf("the unread changes do not show as lag: %+v", st)
	}
	t.Logf("stopped reader: %+v", e.hub.Stats())
	// It reads again: everything it was sent is taken.
	go io.Copy(io.Discard, rd)
	waitUntil(t, "the lag to clear once it reads", func() bool {
		st := e.hub.Stats()
		return st.MaxLag == 0 && st.MaxUnreadBytes == 0
	})
}

// waitUntil polls cond until it holds; the deadline only bounds a broken
// test. Only for what nothing signals: the kernel's socket queues
// draining as the peer acknowledges what it read.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSubscriberConnectionHooks: a verifier learns when its stream opens
// and when it is cut (the proxy's feed-connected metric and its log line
// hang on these hooks).
func TestSubscriberConnectionHooks(t *testing.T) {
	e := newEnv(t, 0)
	srv := httptest.NewUnstartedServer(e.hub.Handler())
	srv.StartTLS()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	connected, waitConnected := signal(t)
	cut, waitCut := signal(t)
	var cuts atomic.Int32
	startSubscriber(t, revocation.Config{URL: srv.URL + "/v1/revocations/feed", TLS: &tls.Config{RootCAs: pool},
		OnConnect: connected, OnDisconnect: func(error) { cuts.Add(1); cut() }})
	waitConnected("OnConnect", 1)
	if n := cuts.Load(); n != 0 {
		t.Fatalf("OnDisconnect called %d times on an open stream", n)
	}
	srv.CloseClientConnections()
	srv.Close()
	waitCut("OnDisconnect after the server went away", 1)
}

// BenchmarkApplyPastMaxLog is the cost of one change once the log holds
// MaxLog changes, as in a bulk revocation of a whole fleet: the log is
// trimmed in steps, so a change costs no copy of the whole log.
func BenchmarkApplyPastMaxLog(b *testing.B) {
	st, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "mica.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	h, err := New(Config{Source: st, MaxLog: 100_000})
	if err != nil {
		b.Fatal(err)
	}
	h.ready = true
	future := time.Now().Add(time.Hour)
	for i := range 100_000 {
		h.apply(revocation.Event{Seq: int64(i + 1), Kind: revocation.KindRevoked, Serial: fmt.Sprintf("%x", i), NotAfter: future})
	}
	b.ResetTimer()
	for i := range b.N {
		h.apply(revocation.Event{Seq: int64(100_001 + i), Kind: revocation.KindRevoked, Serial: fmt.Sprintf("b%x", i), NotAfter: future})
	}
}
