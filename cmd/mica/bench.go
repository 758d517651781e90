package main

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/keys/custody"
	"github.com/mica-pki/mica/internal/telemetry"
	"github.com/mica-pki/mica/internal/token"
)

// benchResult is what `mica bench issue` prints.
type benchResult struct {
	Mode           string  `json:"mode"` // in-process or server
	Store          string  `json:"store"`
	KeyType        string  `json:"key_type"`
	KeyBackend     string  `json:"ca_key_backend"` // where the intermediate's key is: file or pkcs11
	Concurrency    int     `json:"concurrency"`
	DurationSec    float64 `json:"duration_seconds"`
	Issued         int     `json:"issued"`
	Errors         int     `json:"errors"`
	PerSecond      float64 `json:"certificates_per_second"`
	P50Ms          float64 `json:"p50_ms"`
	P99Ms          float64 `json:"p99_ms"`
	MaxMs          float64 `json:"max_ms"`
	PeakRSSBytes   int64   `json:"server_peak_rss_bytes"`
	TraceRatio     float64 `json:"trace_ratio"`
	FirstError     string  `json:"first_error,omitempty"`
	ClientWorkNote string  `json:"note"`
}

// csrPoolSize keys are made before the clock starts: key generation is the
// client's work, on the client's machine, and not what this measures. The
// server does the same work whichever key a CSR carries.
const csrPoolSize = 256

func runBenchIssue(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "bench issue")
	concurrency := fs.Int("concurrency", 16, "requests in flight")
	duration := fs.Duration("duration", 10*time.Second, "how long to measure")
	warmup := fs.Duration("warmup", time.Second, "unmeasured run before measuring")
	server := fs.String("server", "", "benchmark a running server at this URL (default: in-process)")
	dataDir := fs.String("data-dir", "", "with --server: the server's data directory, for its root and token key")
	passFile := fs.String("passphrase-file", "", "with --server: the data directory's passphrase file (or set MICA_PASSPHRASE)")
	db := fs.String("db", "", "in-process: postgres:// URL (default: SQLite in a temporary directory)")
	keyType := fs.String("key-type", string(keys.Default), "subject key algorithm")
	asJSON := fs.Bool("json", false, "print JSON")
	cpuProfile := fs.String("cpuprofile", "", "in-process: write a CPU profile of the measured run to this file")
	traceRatio := fs.Float64("trace-ratio", 0, "in-process: trace this share of issuances (0 to 1), exported over OTLP/HTTP to a discarding receiver on loopback; 0 is tracing off")
	kf := addKeyFlags(fs) // in-process: where the throwaway CA's keys are
	if err := parse(env, fs, args); err != nil {
		return err
	}
	keySettings, err := kf.settings()
	if err != nil {
		return err
	}
	if *concurrency < 1 || *duration <= 0 {
		return usageError("--concurrency must be at least 1 and --duration positive")
	}
	tuneGC(env)
	alg, err := keys.ParseAlgorithm(*keyType)
	if err != nil {
		return usageError("%v", err)
	}
	csrs, err := csrPool(alg)
	if err != nil {
		return err
	}
	res := benchResult{KeyType: string(alg), Concurrency: *concurrency,
		ClientWorkNote: "keys are pre-generated and tokens pre-minted before the clock starts (client and admin work); latency is the enrollment call alone"}

	var enroll func(ctx context.Context, tok string, csr []byte) error
	var minter *token.Minter
	var peakRSS func() int64
	if *server == "" {
		var tracing telemetry.TracingConfig
		if *traceRatio > 0 {
			url, stop, err := discardOTLP()
			if err != nil {
				return err
			}
			defer stop()
			tracing = telemetry.TracingConfig{OTLPEndpoint: url, SampleRatio: *traceRatio}
		}
		p, cleanup, err := benchInProcessWith(ctx, *db, tracing, keySettings)
		if err != nil {
			return err
		}
		defer cleanup()
		res.Mode, res.Store, minter = "in-process", storeName(*db, ""), p.minter
		res.KeyBackend = string(p.caKeys.Backend())
		res.TraceRatio = *traceRatio
		src := netip.MustParseAddr("127.0.0.1")
		enroll = func(ctx context.Context, tok string, csr []byte) error {
			_, err := p.authority.Enroll(ctx, authority.EnrollRequest{Token: tok, CSR: csr, Source: src})
			return err
		}
		peakRSS = func() int64 { _, peak := processMemory(); return peak }
	} else {
		if *dataDir == "" {
			return usageError("--server needs --data-dir of that server, to trust its root and mint tokens")
		}
		d := dataPaths{*dataDir}
		pass, err := readPassphrase(env, *passFile, d)
		if err != nil {
			return err
		}
		if minter, err = loadMinter(d, pass); err != nil {
			return err
		}
		cf := clientFlags{server: *server, dataDir: *dataDir}
		c, err := cf.client(false)
		if err != nil {
			return err
		}
		defer c.Close()
		admin, err := cf.client(true)
		if err != nil {
			return err
		}
		defer admin.Close()
		res.Mode, res.Store = "server", *server
		enroll = func(ctx context.Context, tok string, csr []byte) error {
			_, err := c.Enroll(ctx, tok, client.CertificateRequest{CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))})
			return err
		}
		peakRSS = func() int64 {
			st, err := admin.Stats(ctx)
			if err != nil {
				return 0
			}
			return st.PeakRSSBytes
		}
	}

	tokens, err := newTokenSource(minter, 0)
	if err != nil {
		return err
	}
	premint := 1000
	if *warmup > 0 {
		_, n, _, err := benchLoop(ctx, *concurrency, *warmup, tokens, csrs, enroll)
		if err != nil {
			return fmt.Errorf("warm-up failed: %w", err)
		}
		premint = int(float64(n)/warmup.Seconds()*duration.Seconds()*1.3) + 64**concurrency
	}
	if tokens, err = newTokenSource(minter, premint); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	start := time.Now()
	lat, issued, failed, firstErr := benchLoop(ctx, *concurrency, *duration, tokens, csrs, enroll)
	elapsed := time.Since(start)
	res.DurationSec, res.Issued, res.Errors = elapsed.Seconds(), issued, failed
	res.PerSecond = float64(issued) / elapsed.Seconds()
	if firstErr != nil {
		res.FirstError = firstErr.Error()
	}
	slices.Sort(lat)
	res.P50Ms, res.P99Ms = ms(percentile(lat, 0.50)), ms(percentile(lat, 0.99))
	if len(lat) > 0 {
		res.MaxMs = ms(lat[len(lat)-1])
	}
	res.PeakRSSBytes = peakRSS()
	if *asJSON {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Fprintf(env.stdout, "bench issue: %s, store %s, %s keys, concurrency %d, %.1fs\n",
		res.Mode, res.Store, res.KeyType, res.Concurrency, res.DurationSec)
	if res.KeyBackend != "" {
		fmt.Fprintf(env.stdout, "  CA keys     %s\n", res.KeyBackend)
	}
	fmt.Fprintf(env.stdout, "  issued      %d (%d errors)\n", res.Issued, res.Errors)
	fmt.Fprintf(env.stdout, "  throughput  %.0f certificates/s\n", res.PerSecond)
	fmt.Fprintf(env.stdout, "  latency     p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", res.P50Ms, res.P99Ms, res.MaxMs)
	fmt.Fprintf(env.stdout, "  peak RSS    %.1f MiB (server)\n", float64(res.PeakRSSBytes)/(1<<20))
	if res.TraceRatio > 0 {
		fmt.Fprintf(env.stdout, "  tracing     %.0f%% of issuances, exported over OTLP/HTTP to loopback\n", res.TraceRatio*100)
	}
	if res.FirstError != "" {
		fmt.Fprintf(env.stdout, "  first error %s\n", res.FirstError)
	}
	return nil
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

// benchLoop runs enrollments on workers until d has passed and returns
// every successful one's latency, the counts, and the first error seen. A
// token from the pre-minted pool costs a channel receive, so it is inside
// the timing without moving it.
func benchLoop(ctx context.Context, workers int, d time.Duration, tokens *tokenSource, csrs [][]byte,
	enroll func(context.Context, string, []byte) error) ([]time.Duration, int, int, error) {
	lat, failed, err := measureLoop(ctx, workers, d, func(w, i int) error {
		tok, err := tokens.next()
		if err != nil {
			return err
		}
		return enroll(ctx, tok, csrs[(w*7919+i)%len(csrs)])
	})
	return lat, len(lat), failed, err
}

// measureLoop runs op in workers until d has passed and returns every
// successful op's latency, the failures and the first error.
func measureLoop(ctx context.Context, workers int, d time.Duration, op func(worker, i int) error) ([]time.Duration, int, error) {
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

func csrPool(alg keys.Algorithm) ([][]byte, error) {
	out := make([][]byte, csrPoolSize)
	for i := range out {
		key, err := keys.Generate(alg, rand.Reader)
		if err != nil {
			return nil, err
		}
		if out[i], err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// benchInProcess sets up a throwaway authority: a fresh data directory (so
// the store starts empty and durable, exactly as in production) with its CA.
func benchInProcess(ctx context.Context, dbURL string) (*parts, func(), error) {
	return benchInProcessTraced(ctx, dbURL, telemetry.TracingConfig{})
}

// benchInProcessTraced is benchInProcess with tracing as tracing says.
func benchInProcessTraced(ctx context.Context, dbURL string, tracing telemetry.TracingConfig) (*parts, func(), error) {
	return benchInProcessWith(ctx, dbURL, tracing, custody.Settings{})
}

// benchInProcessWith is benchInProcessTraced with the CA's keys where
// keySettings say (a PKCS#11 token, to measure what signing there costs).
func benchInProcessWith(ctx context.Context, dbURL string, tracing telemetry.TracingConfig, keySettings custody.Settings) (*parts, func(), error) {
	dir, err := os.MkdirTemp("", "mica-bench-")
	if err != nil {
		return nil, nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	var b [16]byte
	rand.Read(b[:])
	pass := []byte(hex.EncodeToString(b[:]))
	d := dataPaths{dir}
	quiet := &cliEnv{stdout: io.Discard, stderr: io.Discard, getenv: func(string) string { return "" }}
	quiet.getenv = os.Getenv // the token's PIN
	if err := initDataDir(ctx, quiet, initOptions{data: d, trustDomain: "example.org", keyType: string(keys.Default),
		passphrase: pass, adminName: "bench", dbURL: dbURL, keys: keySettings}); err != nil {
		cleanup()
		return nil, nil, err
	}
	cfg, err := loadConfig(d.config())
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	cfg.Tracing = tracing
	p, err := openParts(ctx, d, cfg, pass, dbURL, nil)
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	return p, func() { p.Close(); cleanup() }, nil
}

// discardOTLP is an OTLP/HTTP receiver on loopback that reads each export
// and answers success, so that tracing costs what it costs in production
// (spans, batching, protobuf encoding, one HTTP request per batch) without
// a collector.
func discardOTLP() (url string, stop func(), err error) {
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

func loadMinter(d dataPaths, pass []byte) (*token.Minter, error) {
	key, err := loadTokenKey(d, pass)
	if err != nil {
		return nil, err
	}
	return token.NewMinter(key)
}

func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q * float64(len(sorted)-1))
	return sorted[i]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
