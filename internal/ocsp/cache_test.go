package ocsp

import (
	"context"
	"math/big"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	xocsp "golang.org/x/crypto/ocsp"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/bytesize"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/testpki"
)

// serialOf is the serial requestsFor asks about in its i-th request.
func serialOf(i int) *big.Int { return new(big.Int).Lsh(big.NewInt(int64(i)+1), 120) }

// fleet is an inventory of n certificates of pki's issuer, those of the
// indexes revoked revoked (keyCompromise, an hour ago), and the requests
// about them.
func fleet(t testing.TB, pki *testpki.PKI, n int, revoked func(i int) bool) (*fakeSource, [][]byte) {
	t.Helper()
	id := authority.Fingerprint(pki.Intermediate.Raw)
	src := &fakeSource{certs: map[string]store.Certificate{}}
	at := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	for i := range n {
		c := store.Certificate{Serial: serialOf(i).Text(16), Issuer: id, Status: store.StatusActive}
		if revoked != nil && revoked(i) {
			c.Status, c.RevokedAt, c.RevocationReason = store.StatusRevoked, at, 1
		}
		src.certs[c.Serial] = c
	}
	return src, requestsFor(t, pki, n)
}

// newResponder is a responder for pki's issuer reading src, with cache.
func newResponder(t testing.TB, pki *testpki.PKI, src Source, cache *Cache, clock func() time.Time) *Responder {
	t.Helper()
	id := authority.Fingerprint(pki.Intermediate.Raw)
	r, err := New(Config{Source: src, Issuer: pki.Intermediate, IssuerID: id, Responder: responderFunc(t, pki), Cache: cache, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// mustAnswer parses der as a response of pki's issuer about serial i and
// returns its status.
func mustAnswer(t testing.TB, pki *testpki.PKI, der []byte, i int) int {
	t.Helper()
	resp, err := xocsp.ParseResponse(der, pki.Intermediate)
	if err != nil {
		t.Fatalf("serial %d: %v", i, err)
	}
	if resp.SerialNumber.Cmp(serialOf(i)) != 0 {
		t.Fatalf("asked about serial %x, answered about %x", serialOf(i), resp.SerialNumber)
	}
	return resp.Status
}

// TestCacheStaysWithinItsBound asks about many more distinct certificates
// than the smallest cache holds: what it accounts never passes its bound,
// and neither does what the heap grows by.
func TestCacheStaysWithinItsBound(t *testing.T) {
	pki := testpki.New(t, "example.org")
	const n = 3000 // about 5.5 MiB of responses
	src, reqs := fleet(t, pki, n, nil)
	r := newResponder(t, pki, src, NewCache(MinCacheSize), nil)
	ctx := context.Background()
	before := liveHeap()
	for i, req := range reqs {
		der := r.Respond(ctx, req)
		if i%100 == 0 && mustAnswer(t, pki, der, i) != xocsp.Good {
			t.Fatalf("serial %d: not good", i)
		}
		if st := r.CacheStats(); st.Bytes > st.MaxBytes || st.MaxBytes != MinCacheSize {
			t.Fatalf("after %d certificates the cache accounts %d bytes, past its bound of %d", i+1, st.Bytes, st.MaxBytes)
		}
	}
	grown := int64(liveHeap()) - int64(before)
	runtime.KeepAlive(reqs)
	st := r.CacheStats()
	if grown > st.MaxBytes {
		t.Errorf("caching %d distinct responses grew the heap by %d bytes, past the cache's bound of %d", n, grown, st.MaxBytes)
	}
	if st.Bytes < st.MaxBytes-8<<10 || st.Evicted != uint64(n-st.Responses) {
		t.Errorf("cache: %+v; want it full to within a few responses, having evicted the rest", st)
	}
	checkCache(t, r.cache)
}

// TestCacheAccountsForItsMemory fills a cache that evicts nothing: what it
// accounts covers what the heap grew by (so the bound is honest) without
// overstating it by much (so the bound is not wasted).
func TestCacheAccountsForItsMemory(t *testing.T) {
	pki := testpki.New(t, "example.org")
	const n = 5000
	src, reqs := fleet(t, pki, n, nil)
	r := newResponder(t, pki, src, NewCache(1<<30), nil)
	ctx := context.Background()
	before := liveHeap()
	for _, req := range reqs {
		r.Respond(ctx, req)
	}
	grown := int64(liveHeap()) - int64(before)
	runtime.KeepAlive(reqs) // else freed by the collection and counted against the cache
	st := r.CacheStats()
	if st.Responses != n {
		t.Fatalf("%d responses cached, want %d", st.Responses, n)
	}
	t.Logf("heap grew by %d bytes a response; the cache accounts %d", grown/n, st.Bytes/n)
	if st.Bytes < grown {
		t.Errorf("the cache accounts %d bytes for %d responses, the heap grew by %d: raise entryOverhead by %d", st.Bytes, n, grown, (grown-st.Bytes)/n+1)
	}
	if st.Bytes > grown*6/5 {
		t.Errorf("the cache accounts %d bytes for %d responses, the heap grew by only %d: entryOverhead is too large", st.Bytes, n, grown)
	}
}

// TestEvictedAnswersStayCorrect: a certificate whose response was evicted
// is read and signed again, with its status now, and cached again.
func TestEvictedAnswersStayCorrect(t *testing.T) {
	pki := testpki.New(t, "example.org")
	const n = 1500 // about three times what the smallest cache holds
	revoked := func(i int) bool { return i%10 == 3 }
	src, reqs := fleet(t, pki, n, revoked)
	r := newResponder(t, pki, src, NewCache(MinCacheSize), nil)
	ctx := context.Background()
	for _, req := range reqs {
		r.Respond(ctx, req)
	}
	if st := r.CacheStats(); st.Evicted == 0 {
		t.Fatalf("nothing was evicted: %+v", st)
	}
	for i := range 100 { // the first asked, long evicted
		reads := src.reads
		der := r.Respond(ctx, reqs[i])
		if src.reads != reads+1 {
			t.Fatalf("serial %d: answered without reading its status (%d reads), yet it was evicted", i, src.reads-reads)
		}
		want := xocsp.Good
		if revoked(i) {
			want = xocsp.Revoked
		}
		if got := mustAnswer(t, pki, der, i); got != want {
			t.Fatalf("serial %d after eviction: status %d, want %d", i, got, want)
		}
	}
	reads := src.reads
	if mustAnswer(t, pki, r.Respond(ctx, reqs[99]), 99) != xocsp.Good || src.reads != reads {
		t.Error("a response signed again after eviction was not cached again")
	}
}

// TestCacheKeepsWhatIsAskedFor: while a sweep through many more
// certificates than the cache holds passes, the certificates asked about
// again and again stay cached.
func TestCacheKeepsWhatIsAskedFor(t *testing.T) {
	pki := testpki.New(t, "example.org")
	const hot, n = 50, 2500
	src, reqs := fleet(t, pki, n, nil)
	r := newResponder(t, pki, src, NewCache(MinCacheSize), nil)
	ctx := context.Background()
	for i := range hot {
		r.Respond(ctx, reqs[i])
	}
	reads := src.reads
	for i := hot; i < n; i++ {
		r.Respond(ctx, reqs[i])
		r.Respond(ctx, reqs[i%hot])
	}
	if hotReads := src.reads - reads - (n - hot); hotReads != 0 {
		t.Errorf("the %d certificates asked about all along were read %d times during a sweep through %d others: evicted while in use", hot, hotReads, n-hot)
	}
}

// gatedSource is a fakeSource that can hold one read of a serial, after
// reading it, until released: a request that read a status just before a
// revocation committed.
type gatedSource struct {
	*fakeSource
	mu    sync.Mutex
	gates map[string]*gate
}

type gate struct{ read, release chan struct{} }

// hold makes the next read of serial wait, once read, for release.
func (g *gatedSource) hold(serial string) *gate {
	g.mu.Lock()
	defer g.mu.Unlock()
	gt := &gate{read: make(chan struct{}), release: make(chan struct{})}
	g.gates[serial] = gt
	return gt
}

func (g *gatedSource) Certificate(ctx context.Context, serial string) (store.Certificate, error) {
	c, err := g.fakeSource.Certificate(ctx, serial)
	g.mu.Lock()
	gt := g.gates[serial]
	delete(g.gates, serial)
	g.mu.Unlock()
	if gt != nil {
		close(gt.read)
		<-gt.release
	}
	return c, err
}

// waitRead waits for the held read to happen.
func (gt *gate) waitRead(t *testing.T) {
	t.Helper()
	select {
	case <-gt.read:
	case <-time.After(30 * time.Second):
		t.Fatal("the status was never read")
	}
}

// TestRevocationWinsOverResponsesInFlight: a response signed from a
// status read before a revocation, by a request or by the re-signer, is
// never cached over the revocation: the next request is answered
// revoked.
func TestRevocationWinsOverResponsesInFlight(t *testing.T) {
	for _, tc := range []struct {
		name string
		// cachedBefore: a response is cached before, and stale by the time
		// of the request in flight, so the request signs a new one.
		cachedBefore bool
		// inFlight is what reads the status before the revocation.
		inFlight func(ctx context.Context, r *Responder, req []byte)
	}{
		{"FirstRequest", false, func(ctx context.Context, r *Responder, req []byte) { r.Respond(ctx, req) }},
		{"RequestForAStaleResponse", true, func(ctx context.Context, r *Responder, req []byte) { r.Respond(ctx, req) }},
		{"ReSigning", true, func(ctx context.Context, r *Responder, _ []byte) {
			r.resignAll(ctx, func(*cached) bool { return true })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pki := testpki.New(t, "example.org")
			inner, reqs := fleet(t, pki, 1, nil)
			src := &gatedSource{fakeSource: inner, gates: map[string]*gate{}}
			var now atomic.Int64
			now.Store(time.Now().UnixNano())
			clock := func() time.Time { return time.Unix(0, now.Load()) }
			r := newResponder(t, pki, src, nil, clock)
			ctx := context.Background()
			serial := serialOf(0).Text(16)
			if tc.cachedBefore {
				if mustAnswer(t, pki, r.Respond(ctx, reqs[0]), 0) != xocsp.Good {
					t.Fatal("not good before the revocation")
				}
				now.Add(int64(50 * time.Minute)) // past three quarters of the hour's validity
			}

			gt := src.hold(serial)
			done := make(chan struct{})
			go func() { defer close(done); tc.inFlight(ctx, r, reqs[0]) }()
			gt.waitRead(t) // read: active

			c := inner.certs[serial]
			c.Status, c.RevokedAt, c.RevocationReason = store.StatusRevoked, clock().UTC().Truncate(time.Second), 1
			inner.set(c)
			r.Changed(ctx, serial) // what the feed does once the revocation commits

			close(gt.release)
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("the request in flight never finished")
			}
			if got := mustAnswer(t, pki, r.Respond(ctx, reqs[0]), 0); got != xocsp.Revoked {
				t.Fatalf("after the revocation and Changed: status %d, want revoked (a good response signed before it was cached)", got)
			}
		})
	}
}

// TestSharedCache: the responders of two issuing CAs share one bound; a
// CA taken out of the set takes its responses out of the cache.
func TestSharedCache(t *testing.T) {
	a, b := testpki.New(t, "example.org"), testpki.New(t, "example.org")
	srcA, reqsA := fleet(t, a, 400, nil)
	srcB, reqsB := fleet(t, b, 400, nil)
	cache := NewCache(MinCacheSize)
	ra, rb := newResponder(t, a, srcA, cache, nil), newResponder(t, b, srcB, cache, nil)
	m := NewResponders()
	m.Set([]*Responder{ra, rb})
	ctx := context.Background()
	for i := range reqsA { // the same serials, under two issuers
		if mustAnswer(t, a, m.Respond(ctx, reqsA[i]), i) != xocsp.Good || mustAnswer(t, b, m.Respond(ctx, reqsB[i]), i) != xocsp.Good {
			t.Fatalf("serial %d: not good", i)
		}
	}
	st := m.CacheStats()
	if st.MaxBytes != MinCacheSize || st.Bytes > st.MaxBytes || st.Evicted == 0 || st.Responses != cache.Stats().Responses {
		t.Fatalf("two responders sharing one cache: %+v; want one bound, kept, and their responses counted once", st)
	}
	// B's certificate revoked: A's response about the same serial stays.
	serial := serialOf(399).Text(16)
	c := srcB.certs[serial]
	c.Status, c.RevokedAt = store.StatusRevoked, time.Now().UTC().Truncate(time.Second)
	srcB.set(c)
	m.Changed(ctx, serial)
	readsA, readsB := srcA.reads, srcB.reads
	if mustAnswer(t, a, m.Respond(ctx, reqsA[399]), 399) != xocsp.Good || mustAnswer(t, b, m.Respond(ctx, reqsB[399]), 399) != xocsp.Revoked {
		t.Fatal("a revocation under one issuer changed the other's answer, or was not answered")
	}
	if srcA.reads != readsA || srcB.reads != readsB {
		t.Error("the responses after the revocation were not answered from the cache")
	}

	m.Set([]*Responder{ra})
	checkCache(t, cache)
	left := cache.Stats()
	cache.mu.RLock()
	for _, s := range cache.byID {
		if s.owner != ra {
			t.Errorf("a response of the removed issuer's responder is still cached")
			break
		}
	}
	cache.mu.RUnlock()
	if left.Responses == 0 || left.Responses >= st.Responses {
		t.Errorf("after removing one issuer: %d responses cached, before %d; want only the other's", left.Responses, st.Responses)
	}
}

func TestSettingsCacheBytes(t *testing.T) {
	for _, tc := range []struct {
		size bytesize.Size
		want int64
		err  string
	}{
		{0, DefaultCacheSize, ""},
		{MinCacheSize, MinCacheSize, ""},
		{256 << 20, 256 << 20, ""},
		{512 << 10, 0, "ocsp: cache_size 512KiB is below the smallest, 1MiB: give at least that"},
	} {
		got, err := Settings{CacheSize: tc.size}.CacheBytes()
		if tc.err != "" {
			if err == nil || !strings.HasPrefix(err.Error(), tc.err) {
				t.Errorf("%v: %d, %v; want an error starting %q", tc.size, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%v: %d, %v; want %d", tc.size, got, err, tc.want)
		}
	}
}

// TestCacheUnderConcurrentUse asks, revokes and re-signs from several
// goroutines at once on a cache that evicts all along (run it with
// -race), then checks that the ring, the maps and the count agree.
func TestCacheUnderConcurrentUse(t *testing.T) {
	pki := testpki.New(t, "example.org")
	const n = 1200
	src, reqs := fleet(t, pki, n, nil)
	r := newResponder(t, pki, src, NewCache(MinCacheSize), nil)
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range n {
				r.Respond(ctx, reqs[(i*7+w*301)%n])
			}
		})
	}
	wg.Go(func() {
		for i := 0; i < n; i += 5 {
			serial := serialOf(i).Text(16)
			src.mu.Lock()
			c := src.certs[serial]
			c.Status, c.RevokedAt = store.StatusRevoked, time.Now().UTC().Truncate(time.Second)
			src.certs[serial] = c
			src.mu.Unlock()
			r.Changed(ctx, serial)
		}
	})
	wg.Go(func() {
		for range 3 {
			r.resignAll(ctx, func(*cached) bool { return true })
		}
	})
	wg.Wait()

	checkCache(t, r.cache)
	for i := 0; i < n; i += 5 {
		if got := mustAnswer(t, pki, r.Respond(ctx, reqs[i]), i); got != xocsp.Revoked {
			t.Fatalf("serial %d, revoked: answered %d", i, got)
		}
	}
}

// checkCache checks that cc's ring, maps and count agree, and that it
// is within its bound.
func checkCache(t *testing.T, cc *Cache) {
	t.Helper()
	cc.mu.RLock()
	defer cc.mu.RUnlock()
	var ring, bytes int64
	cc.each(func(s *slot) {
		ring++
		bytes += s.size
		if cc.byID[s.key] != s || s.next.prev != s {
			t.Fatalf("slot %x: not the map's, or its ring links disagree", s.key)
		}
		found := false
		for p := cc.bySerial[s.resp.serial]; p != nil; p = p.sameSerial {
			found = found || p == s
		}
		if !found {
			t.Fatalf("slot of serial %s is not in its serial's chain", s.resp.serial)
		}
	})
	chained := 0
	for _, head := range cc.bySerial {
		for p := head; p != nil; p = p.sameSerial {
			chained++
		}
	}
	if ring != int64(len(cc.byID)) || chained != len(cc.byID) || bytes != cc.bytes || cc.bytes > cc.max {
		t.Fatalf("ring of %d slots, %d in the map, %d in serial chains; %d bytes in the slots, %d counted, bound %d",
			ring, len(cc.byID), chained, bytes, cc.bytes, cc.max)
	}
}

// TestRemovedResponderCachesNothing: a request still in flight when its
// issuer's responder is taken out of the set leaves nothing in the shared
// cache, where no one would re-sign it.
func TestRemovedResponderCachesNothing(t *testing.T) {
	a, b := testpki.New(t, "example.org"), testpki.New(t, "example.org")
	srcA, _ := fleet(t, a, 1, nil)
	innerB, reqsB := fleet(t, b, 1, nil)
	srcB := &gatedSource{fakeSource: innerB, gates: map[string]*gate{}}
	cache := NewCache(MinCacheSize)
	ra, rb := newResponder(t, a, srcA, cache, nil), newResponder(t, b, srcB, cache, nil)
	m := NewResponders()
	m.Set([]*Responder{ra, rb})
	ctx := context.Background()

	gt := srcB.hold(serialOf(0).Text(16))
	done := make(chan []byte)
	go func() { done <- m.Respond(ctx, reqsB[0]) }()
	gt.waitRead(t)
	m.Set([]*Responder{ra})
	close(gt.release)
	select {
	case der := <-done:
		if mustAnswer(t, b, der, 0) != xocsp.Good {
			t.Fatal("the request in flight was not answered good")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the request in flight never finished")
	}
	if st := cache.Stats(); st.Responses != 0 {
		t.Errorf("%d responses cached for a responder taken out of the set, which nothing re-signs", st.Responses)
	}
	checkCache(t, cache)
}
