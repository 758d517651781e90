package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
	xocsp "golang.org/x/crypto/ocsp"

	"github.com/mica-pki/mica/internal/api"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/revocation"
)

// revBench is a throwaway in-process server with its revocation outputs.
type revBench struct {
	p       *parts
	rev     *revocationOutputs
	cleanup func()
	ctx     context.Context
}

func newRevBench(ctx context.Context, db string) (*revBench, error) {
	p, cleanup, err := benchInProcess(ctx, db)
	if err != nil {
		return nil, err
	}
	quiet := slog.New(slog.DiscardHandler)
	rev, err := newRevocationOutputs(ctx, p, quiet)
	if err != nil {
		cleanup()
		return nil, err
	}
	runCtx, cancel := context.WithCancelCause(ctx)
	wg := rev.run(runCtx, cancel)
	return &revBench{p: p, rev: rev, ctx: runCtx, cleanup: func() { cancel(nil); wg.Wait(); cleanup() }}, nil
}

// enroll issues n certificates through the authority, as machines would.
func (b *revBench) enroll(ctx context.Context, n int) ([]*authority.Issued, error) {
	csrs, err := csrPool(keys.Default)
	if err != nil {
		return nil, err
	}
	ts := &tokenSource{minter: b.p.minter}
	var out []*authority.Issued
	for i := range n {
		tok, err := ts.mint()
		if err != nil {
			return nil, err
		}
		iss, err := b.p.authority.Enroll(ctx, authority.EnrollRequest{Token: tok, CSR: csrs[i%len(csrs)], Source: netip.MustParseAddr("127.0.0.1")})
		if err != nil {
			return nil, err
		}
		out = append(out, iss)
	}
	return out, nil
}

type revBenchResult struct {
	Store        string  `json:"store"`
	Subscribers  int     `json:"subscribers"`
	Revocations  int     `json:"revocations"`
	Deliveries   int     `json:"deliveries"`
	ConnectSec   float64 `json:"connect_all_seconds"`
	P50Ms        float64 `json:"p50_ms"`
	P99Ms        float64 `json:"p99_ms"`
	MaxMs        float64 `json:"max_ms"`
	Missing      int     `json:"missing_deliveries"`
	PeakRSSBytes int64   `json:"peak_rss_bytes"`
	Note         string  `json:"note"`
}

func runBenchRevocation(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "bench revocation")
	subscribers := fs.Int("subscribers", 1000, "feed subscribers, each its own mTLS connection")
	revocations := fs.Int("revocations", 50, "revocations to measure, one at a time")
	db := fs.String("db", "", "postgres:// URL (default: SQLite in a temporary directory)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if *subscribers < 1 || *revocations < 1 {
		return usageError("--subscribers and --revocations must be at least 1")
	}
	tuneGC(env)
	b, err := newRevBench(ctx, *db)
	if err != nil {
		return err
	}
	defer b.cleanup()
	// The moment the store commits a revocation, the authority fires this
	// hook: that is the start of the measured propagation.
	var committed atomic.Int64
	b.p.revocations.set(func() { committed.Store(time.Now().UnixNano()); b.rev.hub.Changed() })

	url, stop, err := serveBenchAPI(b)
	if err != nil {
		return err
	}
	defer stop()
	adminDir := b.p.data.adminDir()
	cred, err := tls.LoadX509KeyPair(filepath.Join(adminDir, fullchainFile), filepath.Join(adminDir, keyFile))
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AddCert(b.p.hierarchy.Root)
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, Certificates: []tls.Certificate{cred}}

	certs, err := b.enroll(ctx, *revocations)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	var lat []time.Duration
	var got atomic.Int64
	subCtx, cancelSubs := context.WithCancel(ctx)
	defer cancelSubs()
	var ready atomic.Int64
	start := time.Now()
	for range *subscribers {
		sub, err := revocation.NewSubscriber(revocation.Config{URL: url + "/v1/revocations/feed", TLS: tlsCfg,
			OnSnapshot: func(revocation.Snapshot) { ready.Add(1) },
			OnEvent: func(revocation.Event) {
				d := time.Duration(time.Now().UnixNano() - committed.Load())
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
				got.Add(1)
			}})
		if err != nil {
			return err
		}
		go sub.Run(subCtx)
	}
	for ready.Load() < int64(*subscribers) {
		if time.Since(start) > 2*time.Minute {
			return fmt.Errorf("only %d of %d subscribers connected in 2 minutes", ready.Load(), *subscribers)
		}
		time.Sleep(10 * time.Millisecond)
	}
	connect := time.Since(start)
	res := revBenchResult{Store: storeName(*db, ""), Subscribers: *subscribers, Revocations: *revocations, ConnectSec: connect.Seconds(),
		Note: "latency is from the store's commit of each revocation to its arrival in each subscriber's Set, over loopback mTLS; revocations one at a time"}
	admin := authority.Principal{Name: authority.SystemPrincipal}
	for i, iss := range certs {
		want := int64(*subscribers) * int64(i+1)
		if _, err := b.p.authority.Revoke(ctx, admin, iss.Record.Serial, 1, netip.Addr{}); err != nil {
			return err
		}
		deadline := time.Now().Add(10 * time.Second)
		for got.Load() < want && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	mu.Lock()
	slices.Sort(lat)
	res.Deliveries, res.Missing = len(lat), *subscribers**revocations-len(lat)
	res.P50Ms, res.P99Ms = ms(percentile(lat, 0.50)), ms(percentile(lat, 0.99))
	if len(lat) > 0 {
		res.MaxMs = ms(lat[len(lat)-1])
	}
	mu.Unlock()
	_, res.PeakRSSBytes = processMemory()
	if *asJSON {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Fprintf(env.stdout, "revocation feed (%s): %d subscribers connected in %.1fs; %d revocations, %d deliveries (%d missing)\n",
		res.Store, res.Subscribers, res.ConnectSec, res.Revocations, res.Deliveries, res.Missing)
	fmt.Fprintf(env.stdout, "commit → subscriber: p50 %.2f ms, p99 %.2f ms, max %.2f ms; peak RSS %d MiB\n",
		res.P50Ms, res.P99Ms, res.MaxMs, res.PeakRSSBytes>>20)
	fmt.Fprintln(env.stdout, res.Note)
	return nil
}

// serveBenchAPI serves the REST API with the feed over TLS on loopback.
func serveBenchAPI(b *revBench) (string, func(), error) {
	log := slog.New(slog.DiscardHandler)
	certs, err := newServerCertificate(b.ctx, b.p, []string{"localhost", "127.0.0.1"}, log)
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{
		Handler:   api.New(api.Config{Authority: b.p.authority, TrustDomain: "example.org", Logger: log, Feed: b.rev.hub.Handler()}),
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: certs.get, ClientAuth: tls.RequestClientCert},
		ErrorLog:  slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	go srv.ServeTLS(ln, "", "")
	return "https://" + ln.Addr().String(), func() { srv.Close() }, nil
}

type ocspBenchResult struct {
	Store        string  `json:"store"`
	Concurrency  int     `json:"concurrency"`
	Certificates int     `json:"certificates"`
	Nonce        bool    `json:"nonce"`
	DurationSec  float64 `json:"duration_seconds"`
	Requests     int     `json:"requests"`
	Errors       int     `json:"errors"`
	PerSecond    float64 `json:"requests_per_second"`
	P50Ms        float64 `json:"p50_ms"`
	P99Ms        float64 `json:"p99_ms"`
	Note         string  `json:"note"`
}

func runBenchOCSP(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "bench ocsp")
	concurrency := fs.Int("concurrency", 32, "requests in flight")
	duration := fs.Duration("duration", 5*time.Second, "how long to measure")
	n := fs.Int("certificates", 200, "certificates to ask about (a tenth of them revoked)")
	nonce := fs.Bool("nonce", false, "send a nonce with every request (each answer is then signed for it)")
	db := fs.String("db", "", "postgres:// URL (default: SQLite in a temporary directory)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if *concurrency < 1 || *duration <= 0 || *n < 1 {
		return usageError("--concurrency and --certificates must be at least 1 and --duration positive")
	}
	tuneGC(env)
	b, err := newRevBench(ctx, *db)
	if err != nil {
		return err
	}
	defer b.cleanup()
	srv, url, _, err := serveHTTP("127.0.0.1:0", b.rev.handler(b.p), slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer srv.Close()
	certs, err := b.enroll(ctx, *n)
	if err != nil {
		return err
	}
	admin := authority.Principal{Name: authority.SystemPrincipal}
	var reqs [][]byte
	for i, iss := range certs {
		if i%10 == 0 {
			if _, err := b.p.authority.Revoke(ctx, admin, iss.Record.Serial, 1, netip.Addr{}); err != nil {
				return err
			}
		}
		der, err := xocsp.CreateRequest(iss.Certificate, b.p.hierarchy.Intermediate, nil)
		if err != nil {
			return err
		}
		if *nonce {
			der = ocspRequestWithNonce(der)
		}
		reqs = append(reqs, der)
	}
	httpc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *concurrency * 2}}
	post := func(der []byte) error {
		resp, err := httpc.Post(url+ocspPath, "application/ocsp-request", bytes.NewReader(der))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 || len(body) < 100 {
			return fmt.Errorf("ocsp answered %s, %d bytes", resp.Status, len(body))
		}
		return nil
	}
	// Warm the cache the way real traffic does: the first request for a
	// certificate signs, every later one is served from the cache.
	for _, r := range reqs {
		if err := post(r); err != nil {
			return err
		}
	}
	var mu sync.Mutex
	var lat []time.Duration
	var errs atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(*duration)
	start := time.Now()
	for w := range *concurrency {
		wg.Go(func() {
			var mine []time.Duration
			for i := w; time.Now().Before(end); i++ {
				t0 := time.Now()
				if err := post(reqs[i%len(reqs)]); err != nil {
					errs.Add(1)
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	res := ocspBenchResult{Store: storeName(*db, ""), Concurrency: *concurrency, Certificates: *n, Nonce: *nonce,
		DurationSec: elapsed.Seconds(), Requests: len(lat), Errors: int(errs.Load()),
		PerSecond: float64(len(lat)) / elapsed.Seconds(), P50Ms: ms(percentile(lat, 0.5)), P99Ms: ms(percentile(lat, 0.99)),
		Note: "POST over loopback HTTP/1.1 from this process; client and server share the CPUs"}
	if *asJSON {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Fprintf(env.stdout, "ocsp (%s, nonce %v): %d requests in %.1fs with %d in flight: %.0f requests/s, p50 %.2f ms, p99 %.2f ms, %d errors\n",
		res.Store, res.Nonce, res.Requests, res.DurationSec, res.Concurrency, res.PerSecond, res.P50Ms, res.P99Ms, res.Errors)
	fmt.Fprintln(env.stdout, res.Note)
	return nil
}

// ocspRequestWithNonce re-encodes a one-certificate request with a random
// 16-byte nonce extension (id-pkix-ocsp-nonce, RFC 8954).
func ocspRequestWithNonce(der []byte) []byte {
	in := cryptobyte.String(der)
	var outer, tbs cryptobyte.String
	if !in.ReadASN1(&outer, cbasn1.SEQUENCE) || !outer.ReadASN1(&tbs, cbasn1.SEQUENCE) {
		return der
	}
	nonce := make([]byte, 16)
	rand.Read(nonce)
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddBytes(tbs)
			b.AddASN1(cbasn1.Tag(2).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1ObjectIdentifier(asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 2})
						b.AddASN1(cbasn1.OCTET_STRING, func(b *cryptobyte.Builder) { b.AddASN1OctetString(nonce) })
					})
				})
			})
		})
	})
	out, err := b.Bytes()
	if err != nil {
		return der
	}
	return out
}
