package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/mica-pki/mica/internal/acme"
	"github.com/mica-pki/mica/internal/api"
	"github.com/mica-pki/mica/internal/bench"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/servercert"
	"github.com/mica-pki/mica/internal/telemetry"
	"github.com/mica-pki/mica/internal/token"
)

// The handshake and proxy benchmarks still live in this package; they
// measure with the bench package's one loop.
var (
	measureLoop = bench.Loop
	percentile  = bench.Percentile
	ms          = bench.Ms
)

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
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if *concurrency < 1 || *duration <= 0 {
		return usageError("--concurrency must be at least 1 and --duration positive")
	}
	tuneGC(env)
	cfg := bench.IssueConfig{Concurrency: *concurrency, Duration: *duration, Warmup: *warmup}
	var err error
	if cfg.KeyType, err = keys.ParseAlgorithm(*keyType); err != nil {
		return usageError("%v", err)
	}
	if *server == "" {
		opts := bench.Options{DB: *db}
		if *traceRatio > 0 {
			url, stop, err := bench.DiscardOTLP()
			if err != nil {
				return err
			}
			defer stop()
			opts.OTLPEndpoint, opts.SampleRatio = url, *traceRatio
			cfg.TraceRatio = *traceRatio
		}
		s, err := openBenchServer(ctx, opts)
		if err != nil {
			return err
		}
		defer s.Close()
		cfg.Target = bench.InProcess(s)
	} else {
		if *dataDir == "" {
			return usageError("--server needs --data-dir of that server, to trust its root and mint tokens")
		}
		d := dataPaths{*dataDir}
		pass, err := readPassphrase(env, *passFile, d)
		if err != nil {
			return err
		}
		minter, err := loadMinter(d, pass)
		if err != nil {
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
		cfg.Target = bench.Remote(*server, c, admin, minter)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		cfg.CPUProfile = f
	}
	res, err := bench.Issue(ctx, cfg)
	if err != nil {
		return err
	}
	return printBench(env, *asJSON, res, res.WriteText)
}

func runBenchACME(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "bench acme")
	concurrency := fs.Int("concurrency", 16, "orders in flight")
	duration := fs.Duration("duration", 10*time.Second, "how long to measure")
	db := fs.String("db", "", "postgres:// URL (default: SQLite in a temporary directory)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if *concurrency < 1 || *duration <= 0 {
		return usageError("--concurrency must be at least 1 and --duration positive")
	}
	tuneGC(env)
	s, err := openBenchServer(ctx, bench.Options{DB: *db})
	if err != nil {
		return err
	}
	defer s.Close()
	res, err := bench.ACME(ctx, s, *concurrency, *duration)
	if err != nil {
		return err
	}
	return printBench(env, *asJSON, res, res.WriteText)
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
	s, err := openBenchServer(ctx, bench.Options{DB: *db, Revocation: true})
	if err != nil {
		return err
	}
	defer s.Close()
	res, err := bench.Revocation(ctx, s, *subscribers, *revocations)
	if err != nil {
		return err
	}
	return printBench(env, *asJSON, res, res.WriteText)
}

func runBenchOCSP(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "bench ocsp")
	var cfg bench.OCSPConfig
	fs.IntVar(&cfg.Concurrency, "concurrency", 32, "requests in flight")
	fs.DurationVar(&cfg.Duration, "duration", 5*time.Second, "how long to measure")
	fs.IntVar(&cfg.Certificates, "certificates", 200, "certificates to ask about (a tenth of them revoked)")
	fs.BoolVar(&cfg.Nonce, "nonce", false, "send a nonce with every request (each answer is then signed for it)")
	db := fs.String("db", "", "postgres:// URL (default: SQLite in a temporary directory)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if cfg.Concurrency < 1 || cfg.Duration <= 0 || cfg.Certificates < 1 {
		return usageError("--concurrency and --certificates must be at least 1 and --duration positive")
	}
	tuneGC(env)
	s, err := openBenchServer(ctx, bench.Options{DB: *db, Revocation: true})
	if err != nil {
		return err
	}
	defer s.Close()
	res, err := bench.OCSP(ctx, s, cfg)
	if err != nil {
		return err
	}
	return printBench(env, *asJSON, res, res.WriteText)
}

// printBench prints a result as indented JSON or as text.
func printBench(env *cliEnv, asJSON bool, res any, text func(io.Writer)) error {
	if asJSON {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	text(env.stdout)
	return nil
}

// revBench is a throwaway in-process server with its parts in view, for
// the benchmarks still in this package (revoke-live); the rest measure it
// as a bench.Server (openBenchServer).
type revBench struct {
	p       *parts
	rev     *revocationOutputs // nil unless asked for
	certs   *servercert.Certificate
	cleanup func()
}

// newRevBench is openInProcess with the revocation outputs running.
func newRevBench(ctx context.Context, db string) (*revBench, error) {
	return openInProcess(ctx, bench.Options{DB: db, Revocation: true})
}

// serveBenchAPI serves the REST API with the feed over TLS on loopback.
func serveBenchAPI(b *revBench) (string, func(), error) {
	log := slog.New(slog.DiscardHandler)
	srv := &http.Server{
		Handler:           api.New(api.Config{Authority: b.p.authority, TrustDomain: "example.org", Logger: log, Feed: b.rev.hub.Handler()}),
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: b.certs.GetCertificate, ClientAuth: tls.RequestClientCert},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	go srv.ServeTLS(ln, "", "")
	return "https://" + ln.Addr().String(), func() { srv.Close() }, nil
}

// openInProcess wires a throwaway in-process server for the benchmarks: a
// fresh data directory (so the store starts empty and durable, exactly as
// in production) with its CA, the parts `mica serve` opens, its own TLS
// certificate, and, when asked, the revocation outputs running.
func openInProcess(ctx context.Context, opts bench.Options) (_ *revBench, err error) {
	dir, err := os.MkdirTemp("", "mica-bench-")
	if err != nil {
		return nil, err
	}
	var closers []func()
	cleanup := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
		os.RemoveAll(dir)
	}
	defer func() {
		if err != nil {
			cleanup()
		}
	}()
	var b [16]byte
	rand.Read(b[:])
	pass := []byte(hex.EncodeToString(b[:]))
	d := dataPaths{dir}
	quiet := &cliEnv{stdout: io.Discard, stderr: io.Discard, getenv: func(string) string { return "" }}
	if err := initDataDir(ctx, quiet, initOptions{data: d, trustDomain: "example.org", keyType: string(keys.Default),
		passphrase: pass, adminName: "bench", dbURL: opts.DB}); err != nil {
		return nil, err
	}
	cfg, err := loadConfig(d.config())
	if err != nil {
		return nil, err
	}
	cfg.Tracing = telemetry.TracingConfig{OTLPEndpoint: opts.OTLPEndpoint, SampleRatio: opts.SampleRatio}
	p, err := openParts(ctx, d, cfg, pass, openOptions{dbURL: opts.DB})
	if err != nil {
		return nil, err
	}
	closers = append(closers, func() { p.Close() })
	log := slog.New(slog.DiscardHandler)
	rb := &revBench{p: p, cleanup: cleanup}
	if rb.certs, err = newServerCertificate(ctx, p, []string{"localhost", "127.0.0.1"}, log); err != nil {
		return nil, err
	}
	if opts.Revocation {
		if rb.rev, err = newRevocationOutputs(ctx, p, log); err != nil {
			return nil, err
		}
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { rb.rev.run(runCtx); close(done) }()
		closers = append(closers, func() { cancel(); <-done })
	}
	return rb, nil
}

// openBenchServer is openInProcess as the bench package measures it.
func openBenchServer(ctx context.Context, opts bench.Options) (*bench.Server, error) {
	rb, err := openInProcess(ctx, opts)
	if err != nil {
		return nil, err
	}
	p := rb.p
	admin, err := tls.LoadX509KeyPair(filepath.Join(p.data.adminDir(), fullchainFile), filepath.Join(p.data.adminDir(), keyFile))
	if err != nil {
		rb.cleanup()
		return nil, err
	}
	acmeStore, _ := p.store.(acme.Store)
	s := &bench.Server{Authority: p.authority, Minter: p.minter, ACME: acmeStore, Root: p.hierarchy.Root,
		Intermediate: p.hierarchy.Intermediate, GetCertificate: rb.certs.GetCertificate, Admin: admin,
		OCSPPath: ocspPath, Store: storeName(opts.DB, ""), OnRevocation: func(func()) {}, Close: rb.cleanup}
	if rb.rev != nil {
		s.Feed, s.Revocations = rb.rev.hub.Handler(), rb.rev.handler(p)
		s.OnRevocation = func(fn func()) { p.revocations.set(func() { fn(); rb.rev.hub.Changed() }) }
	}
	return s, nil
}

func loadMinter(d dataPaths, pass []byte) (*token.Minter, error) {
	key, err := loadTokenKey(d, pass)
	if err != nil {
		return nil, err
	}
	return token.NewMinter(key)
}
