package ocsp

import (
	"context"
	"crypto/x509"
	"math/big"
	"runtime"
	"testing"

	xocsp "golang.org/x/crypto/ocsp"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/testpki"
)

// everyActive answers that every serial is an active certificate of
// issuer, like an inventory that holds all of them.
type everyActive struct{ issuer string }

func (s everyActive) Certificate(_ context.Context, serial string) (store.Certificate, error) {
	return store.Certificate{Serial: serial, Issuer: s.issuer, Status: store.StatusActive}, nil
}

// benchResponder is a responder for pki's issuer whose source knows every
// serial, with a cache of cacheBytes.
func benchResponder(b *testing.B, pki *testpki.PKI, cacheBytes int64) *Responder {
	b.Helper()
	id := authority.Fingerprint(pki.Intermediate.Raw)
	r, err := New(Config{Source: everyActive{issuer: id}, Issuer: pki.Intermediate, IssuerID: id,
		Responder: responderFunc(b, pki), Cache: NewCache(cacheBytes)})
	if err != nil {
		b.Fatal(err)
	}
	return r
}

// requestsFor makes n requests (SHA-1 CertIDs, as openssl and most
// clients send them) about distinct serials of pki's issuer.
func requestsFor(b testing.TB, pki *testpki.PKI, n int) [][]byte {
	b.Helper()
	reqs := make([][]byte, n)
	for i := range reqs {
		// 16-octet serials like the ones mica issues.
		serial := new(big.Int).Lsh(big.NewInt(int64(i)+1), 120)
		der, err := xocsp.CreateRequest(&x509.Certificate{SerialNumber: serial}, pki.Intermediate, nil)
		if err != nil {
			b.Fatal(err)
		}
		reqs[i] = der
	}
	return reqs
}

// BenchmarkCacheHit is the hot path: a request without a nonce about a
// certificate whose response is cached.
func BenchmarkCacheHit(b *testing.B) {
	pki := testpki.New(b, "example.org")
	r := benchResponder(b, pki, DefaultCacheSize)
	req := requestsFor(b, pki, 1)[0]
	ctx := context.Background()
	r.Respond(ctx, req)
	b.ReportAllocs()
	for b.Loop() {
		r.Respond(ctx, req)
	}
}

// BenchmarkCacheHitParallel is the hot path on every core, each
// goroutine asking about its own certificates.
func BenchmarkCacheHitParallel(b *testing.B) {
	pki := testpki.New(b, "example.org")
	r := benchResponder(b, pki, DefaultCacheSize)
	reqs := requestsFor(b, pki, 256)
	ctx := context.Background()
	for _, req := range reqs {
		r.Respond(ctx, req)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			r.Respond(ctx, reqs[i%len(reqs)])
			i++
		}
	})
}

// BenchmarkCacheMiss asks in turn about 4,096 certificates, more than
// the smallest cache holds (about 500), so every request is looked up,
// signed and cached in place of another.
func BenchmarkCacheMiss(b *testing.B) {
	pki := testpki.New(b, "example.org")
	r := benchResponder(b, pki, MinCacheSize)
	reqs := requestsFor(b, pki, 4096)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		r.Respond(ctx, reqs[i%len(reqs)])
		i++
	}
}

// cacheFill is how many distinct certificates BenchmarkCacheEntryBytes
// and TestCacheAccountsForItsMemory cache: enough that the per-entry
// figure is not the maps' rounding.
const cacheFill = 20_000

// BenchmarkCacheEntryBytes measures what one cached response costs the
// heap (the live heap after filling a cache with cacheFill distinct
// certificates, less the one before, over cacheFill) and reports it as
// B/entry. Run it with -benchtime=1x: one op is a whole fill.
func BenchmarkCacheEntryBytes(b *testing.B) {
	pki := testpki.New(b, "example.org")
	reqs := requestsFor(b, pki, cacheFill)
	ctx := context.Background()
	var perEntry, accounted float64
	for b.Loop() {
		r := benchResponder(b, pki, 1<<30)
		before := liveHeap()
		for _, req := range reqs {
			r.Respond(ctx, req)
		}
		after := liveHeap()
		if n := r.CacheStats().Responses; n != cacheFill {
			b.Fatalf("%d responses cached, want %d", n, cacheFill)
		}
		perEntry = float64(after-before) / cacheFill
		accounted = float64(r.CacheStats().Bytes) / cacheFill
		runtime.KeepAlive(r)
	}
	b.ReportMetric(perEntry, "B/entry")
	b.ReportMetric(accounted, "accounted-B/entry")
}

// liveHeap is the heap's live bytes after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
