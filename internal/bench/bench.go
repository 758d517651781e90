// Package bench holds `mica bench`: throughput and latency of issuance, ACME
// orders, the revocation feed, revocation of live connections and OCSP,
// measured against a throwaway in-process server (or, for issuance, a
// running one), and of mutual-TLS handshakes (crypto/tls against the mtls
// package) and of requests through `mica proxy`. The binary parses
// the flags and wires the Server; this package measures and reports.
//
// Start with Loop, the one measuring loop every benchmark uses, then Issue.
// Figures depend on the machine and its load: report them with the load
// average and a baseline measured in the same run.
package bench

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mica-pki/mica/internal/acme"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/keys/custody"
	"github.com/mica-pki/mica/internal/procmem"
	"github.com/mica-pki/mica/internal/token"
)

// Server is a throwaway in-process mica, wired by the binary as `mica
// serve` wires it but without listeners: a fresh data directory and an
// empty store. Close removes it.
type Server struct {
	Authority *authority.Authority
	Minter    *token.Minter
	// ACME is the store's ACME ability.
	ACME               acme.Store
	Root, Intermediate *x509.Certificate
	// GetCertificate serves mica's own TLS certificate (names localhost
	// and 127.0.0.1) on the listeners the benchmarks open.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// Admin is an admin credential, for feed subscribers.
	Admin tls.Certificate
	// Feed serves the revocation feed and Revocations the CRL and OCSP
	// (plain HTTP, OCSP under OCSPPath); both nil unless asked for.
	Feed, Revocations http.Handler
	OCSPPath          string
	// OnRevocation adds fn to what runs when a revocation commits, before
	// the feed is told.
	OnRevocation func(fn func())
	// Store names the engine in the results, KeyBackend where the CA's
	// keys are (file or pkcs11).
	Store, KeyBackend string
	Close             func()
}

// Measured is the server a benchmark measures (a Server in this process
// or one in another), as its result names it, and how its cost is read.
type Measured struct {
	Server, Store string
	// CPU is the server's CPU time so far, when the server is another
	// process on this machine; nil otherwise (in-process, the process's
	// own is the server's).
	CPU func() (time.Duration, error)
	// PeakRSS is the server's peak resident memory; nil when unknown.
	PeakRSS func() int64
}

// peakRSS is PeakRSS's answer, 0 when unknown.
func (m Measured) peakRSS() int64 {
	if m.PeakRSS == nil {
		return 0
	}
	return m.PeakRSS()
}

// measured is s as a benchmark's result names it; this process is the
// server, so its own CPU time and memory are the server's.
func (s *Server) measured() Measured {
	return Measured{Store: s.Store, PeakRSS: func() int64 { _, peak := procmem.Read(); return peak }}
}

// Options say what a Server needs beyond the authority.
type Options struct {
	// DB is a postgres:// URL; empty is SQLite in the throwaway directory.
	DB string
	// OTLPEndpoint, when set, traces SampleRatio of the issuances there.
	OTLPEndpoint string
	SampleRatio  float64
	// Revocation runs the feed, CRL and OCSP outputs.
	Revocation bool
	// Keys is where the throwaway CA's keys are made (a PKCS#11 token, to
	// measure what signing there costs); zero is sealed files.
	Keys custody.Settings
}

// Open makes a Server; the binary supplies it.
type Open func(ctx context.Context, opts Options) (*Server, error)

// Loop runs op on workers until d has passed (or ctx ends) and returns
// every successful op's latency, unsorted, the failures and the first error.
// An op started before the deadline runs to its end and counts.
func Loop(ctx context.Context, workers int, d time.Duration, op func(worker, i int) error) ([]time.Duration, int, error) {
	deadline := time.Now().Add(d)
	var (
		mu       sync.Mutex
		all      []time.Duration
		failed   int
		firstErr error
		wg       sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			var lat []time.Duration
			var nfail int
			var werr error
			for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
				t0 := time.Now()
				if err := op(w, i); err != nil {
					nfail++
					if werr == nil {
						werr = err
					}
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lat...)
			failed += nfail
			if firstErr == nil {
				firstErr = werr
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	return all, failed, firstErr
}

// Percentile is the q-quantile (0 to 1) of sorted latencies, 0 for none.
func Percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(q*float64(len(sorted)-1))]
}

// Ms is d in milliseconds, to the microsecond.
func Ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// csrPoolSize keys are made before the clock starts: key generation is the
// client's work, on the client's machine, and not what is measured. The
// server does the same work whichever key a CSR carries.
const csrPoolSize = 256

// csrPool makes CSRs that name nothing (the token decides the identity),
// or tmpl's names.
func csrPool(alg keys.Algorithm, tmpl *x509.CertificateRequest) ([][]byte, error) {
	if tmpl == nil {
		tmpl = &x509.CertificateRequest{}
	}
	out := make([][]byte, csrPoolSize)
	for i := range out {
		key, err := keys.Generate(alg, rand.Reader)
		if err != nil {
			return nil, err
		}
		if out[i], err = x509.CreateCertificateRequest(rand.Reader, tmpl, key); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// tokenSource hands out enrollment tokens. Tokens are made by an admin ahead
// of time in real life, so the benchmark mints them before the clock starts
// (as many as the warm-up rate says the run will use) and mints more inline
// only if the pool runs dry.
type tokenSource struct {
	minter *token.Minter
	pool   chan string
	seq    atomic.Int64
}

func newTokenSource(m *token.Minter, premint int) (*tokenSource, error) {
	ts := &tokenSource{minter: m, pool: make(chan string, premint)}
	for range premint {
		tok, err := ts.mint()
		if err != nil {
			return nil, err
		}
		ts.pool <- tok
	}
	return ts, nil
}

func (ts *tokenSource) mint() (string, error) {
	now := time.Now()
	return ts.minter.Mint(token.Claims{
		Identity: fmt.Sprintf("spiffe://example.org/bench/%d", ts.seq.Add(1)), Profile: "service",
		Issuer: "bench", IssuedAt: now, Expiry: now.Add(time.Hour),
	})
}

func (ts *tokenSource) next() (string, error) {
	select {
	case tok := <-ts.pool:
		return tok, nil
	default:
		return ts.mint()
	}
}

// DiscardOTLP is an OTLP/HTTP receiver on loopback that reads each export
// and answers success, so that tracing costs what it costs in production
// (spans, batching, protobuf encoding, one HTTP request per batch) without
// a collector.
func DiscardOTLP() (url string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-protobuf")
	})}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), func() { srv.Close() }, nil
}

// serveTLS serves h over TLS 1.3 on a loopback port with s's certificate,
// asking for (not verifying) client certificates as `mica serve` does.
func serveTLS(s *Server, h http.Handler) (url string, stop func(), err error) {
	ln, url, err := listenLoopback()
	if err != nil {
		return "", nil, err
	}
	return url, serveTLSOn(s, ln, h), nil
}

// listenLoopback binds a loopback port for serveTLSOn and says its URL, for
// a handler that must know its own URL before it serves.
func listenLoopback() (net.Listener, string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	return ln, "https://" + ln.Addr().String(), nil
}

// serveTLSOn is serveTLS on a bound listener; it returns stop.
func serveTLSOn(s *Server, ln net.Listener, h http.Handler) (stop func()) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: s.GetCertificate, ClientAuth: tls.RequestClientCert}}
	go srv.ServeTLS(ln, "", "")
	return func() { srv.Close() }
}
