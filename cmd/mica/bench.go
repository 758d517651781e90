package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/mica-pki/mica/internal/acme"
	"github.com/mica-pki/mica/internal/bench"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/servercert"
	"github.com/mica-pki/mica/internal/telemetry"
	"github.com/mica-pki/mica/internal/token"
)

// benchServer is where a benchmark's requests go, chosen by flags: this
// process (the default), a running server (--server, with --server-pid for
// its CPU time), or one the benchmark spawns (--spawn).
type benchServer struct {
	server, dataDir, passFile, db, binary, cpus string
	pid                                         int
	spawn                                       bool
}

func (b *benchServer) register(fs *flag.FlagSet) {
	fs.StringVar(&b.server, "server", "", "benchmark a running server at this URL (default: in-process)")
	fs.IntVar(&b.pid, "server-pid", 0, "with --server: the server's process ID on this machine, to read its CPU time and memory from /proc")
	fs.StringVar(&b.dataDir, "data-dir", "", "with --server: the server's data directory, for its root and token key")
	fs.StringVar(&b.passFile, "passphrase-file", "", "with --server: the data directory's passphrase file (or set MICA_PASSPHRASE)")
	fs.BoolVar(&b.spawn, "spawn", false, "run `mica init` in a temporary directory and `mica serve` on a loopback port, and benchmark that server")
	fs.StringVar(&b.binary, "server-binary", "", "with --spawn: the mica binary to serve with (default: this one), to measure another build in the same run")
	fs.StringVar(&b.cpus, "server-cpus", "", "with --spawn: pin the server to these CPUs (a taskset list such as 0); pin the benchmark with taskset")
	fs.StringVar(&b.db, "db", "", "in-process or with --spawn: postgres:// URL (default: SQLite in a temporary directory)")
}

func (b *benchServer) check() error {
	switch {
	case b.spawn && b.server != "":
		return usageError("--spawn starts its own server: leave out --server")
	case (b.binary != "" || b.cpus != "") && !b.spawn:
		return usageError("--server-binary and --server-cpus are for --spawn")
	case b.pid != 0 && b.server == "":
		return usageError("--server-pid is for --server")
	case b.server != "" && b.dataDir == "":
		return usageError("--server needs --data-dir of that server, to trust its root and mint tokens")
	case b.server != "" && b.db != "":
		return usageError("--db is for in-process or --spawn: a running server has its own")
	}
	return nil
}

// remote is a server in another process as a benchmark sees it.
type remote struct {
	url, dataDir, describe string
	minter                 *token.Minter
	trustDomain            string
	roots                  *x509.CertPool
	pid                    int // 0 when unknown
	stop                   func()
}

// open returns the server of --server or --spawn; nil in-process.
func (b *benchServer) open(ctx context.Context, env *cliEnv) (*remote, error) {
	r := &remote{url: b.server, dataDir: b.dataDir, describe: b.server, pid: b.pid, stop: func() {}}
	var pass []byte
	switch {
	case b.spawn:
		binary := b.binary
		if binary == "" {
			var err error
			if binary, err = os.Executable(); err != nil {
				return nil, fmt.Errorf("bench: finding this binary to spawn the server: %w", err)
			}
		}
		s, err := bench.Spawn(ctx, bench.SpawnOptions{Binary: binary, CPUs: b.cpus, DB: b.db,
			Setup: func(dir string) error { return appendBenchLimits(dataPaths{dir}) }})
		if err != nil {
			return nil, err
		}
		r.url, r.dataDir, r.describe, r.pid, r.stop, pass = s.URL, s.DataDir, "spawned: "+s.Describe, s.PID, s.Stop, s.Passphrase
	case b.server != "":
		var err error
		if pass, err = readPassphrase(env, b.passFile, dataPaths{b.dataDir}); err != nil {
			return nil, err
		}
	default:
		return nil, nil
	}
	d := dataPaths{r.dataDir}
	cfg, err := loadConfig(d.config())
	if err == nil {
		r.trustDomain = cfg.TrustDomain
		r.roots, err = loadPool(d.rootCert())
	}
	if err == nil {
		r.minter, err = loadMinter(d, pass)
	}
	if err != nil {
		r.stop()
		return nil, err
	}
	return r, nil
}

// measure names r in m (a spawned server by its store, a running one by
// its URL) and, when r runs on this machine, reads its CPU time and peak
// memory from /proc.
func (r *remote) measure(m *bench.Measured, where benchServer) {
	m.Server = r.describe
	if where.spawn {
		m.Store = storeName(where.db, "")
	}
	if r.pid != 0 {
		m.CPU = func() (time.Duration, error) { return bench.ProcessCPU(r.pid) }
		m.PeakRSS = func() int64 { return bench.ProcessPeakRSS(r.pid) }
	}
}

// createCPUProfile creates --cpuprofile's file, when one is named, and
// points *w at it.
func createCPUProfile(path string, w *io.Writer) (done func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	*w = f
	return func() { f.Close() }, nil
}

// benchLimits lets a benchmark's identities renew more often than an
// agent would: the default per-identity limit allows ten in a burst. The
// guard still runs (buckets, storm and burst detectors), as in production,
// with its anomaly thresholds raised out of a benchmark's reach: bursts
// beyond any rate, and renewal storms at the largest count the config
// allows, 1,000 renewals in a lifetime (about 25 s of a 64-worker run on
// two cores; a longer run sets it off and says so in its audit log). A
// benchmark is a storm and a burst by design; production's requests pass
// the detectors without setting them off, and that is the path measured.
const benchLimits = `
# mica bench: each benchmark identity renews many times a second.
limits:
  profiles:
    service:
      per_identity: {rate: off}
anomalies:
  renewal_storm: {action: alert, max_renewals_per_lifetime: 1000}
  issuance_burst: {action: alert, window: 1m, per_profile: 1000000000, per_requester: 1000000000}
`

// appendBenchLimits adds benchLimits to the config of data directory d.
func appendBenchLimits(d dataPaths) error {
	f, err := os.OpenFile(d.config(), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = io.WriteString(f, benchLimits)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func runBenchIssue(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "bench issue")
	concurrency := fs.Int("concurrency", 64, "requests in flight")
	duration := fs.Duration("duration", 10*time.Second, "how long to measure")
	warmup := fs.Duration("warmup", time.Second, "unmeasured run before measuring")
	var where benchServer
	where.register(fs)
	keyType := fs.String("key-type", string(keys.Default), "subject key algorithm")
	asJSON := fs.Bool("json", false, "print JSON")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of this process's measured run to this file (in-process: the server's work)")
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
	if err := where.check(); err != nil {
		return err
	}
	tuneRuntime(env)
	cfg := bench.IssueConfig{Concurrency: *concurrency, Duration: *duration, Warmup: *warmup}
	if cfg.KeyType, err = keys.ParseAlgorithm(*keyType); err != nil {
		return usageError("%v", err)
	}
	r, err := where.open(ctx, env)
	if err != nil {
		return err
	}
	if r == nil {
		opts := bench.Options{DB: where.db, Keys: keySettings}
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
		defer r.stop()
		cf := clientFlags{server: r.url, dataDir: r.dataDir}
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
		cfg.Target = bench.Remote(r.url, c, admin, r.minter)
		r.measure(&cfg.Target.Measured, where)
	}
	closeProfile, err := createCPUProfile(*cpuProfile, &cfg.CPUProfile)
	if err != nil {
		return err
	}
	defer closeProfile()
	res, err := bench.Issue(ctx, cfg)
	if err != nil {
		return err
	}
	return printBench(env, *asJSON, res, res.WriteText)
}

func runBenchRenew(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "bench renew")
	cfg := bench.RenewConfig{}
	fs.IntVar(&cfg.Concurrency, "concurrency", 64, "renewals in flight; each worker has an identity and a connection of its own")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to measure")
	fs.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "unmeasured run before measuring")
	fs.StringVar(&cfg.Key, "key", bench.RenewKeep, "keep (no CSR: keep_key), keep-csr (a CSR of the current key, for servers before keep_key) or new (a CSR for a new key each time, as the agent renews)")
	fs.StringVar(&cfg.Connection, "connection", bench.ConnReuse, "reuse (one connection per worker: a renewal's own cost) or new (a new mTLS connection with the last certificate for each renewal, as agents renew, once a lifetime; keys kept; needs a server)")
	var where benchServer
	where.register(fs)
	keyType := fs.String("key-type", string(keys.Default), "subject key algorithm")
	asJSON := fs.Bool("json", false, "print JSON")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of this process's measured run to this file (in-process: the server's work)")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	switch {
	case cfg.Concurrency < 1 || cfg.Duration <= 0:
		return usageError("--concurrency must be at least 1 and --duration positive")
	case cfg.Key != bench.RenewKeep && cfg.Key != bench.RenewKeepCSR && cfg.Key != bench.RenewNew:
		return usageError("--key must be keep, keep-csr or new, not %q", cfg.Key)
	case cfg.Connection != bench.ConnReuse && cfg.Connection != bench.ConnNew:
		return usageError("--connection must be reuse or new, not %q", cfg.Connection)
	case cfg.Connection == bench.ConnNew && cfg.Key == bench.RenewNew:
		return usageError("--connection new keeps the key: use --key keep or keep-csr with it")
	}
	if err := where.check(); err != nil {
		return err
	}
	tuneRuntime(env)
	var err error
	if cfg.KeyType, err = keys.ParseAlgorithm(*keyType); err != nil {
		return usageError("%v", err)
	}
	r, err := where.open(ctx, env)
	if err != nil {
		return err
	}
	if r == nil {
		if cfg.Connection == bench.ConnNew {
			return usageError("--connection new needs a server: add --spawn, or --server with --data-dir")
		}
		s, err := openBenchServer(ctx, bench.Options{DB: where.db})
		if err != nil {
			return err
		}
		defer s.Close()
		if cfg.Target, err = bench.InProcessRenew(s, cfg.KeyType, cfg.Key); err != nil {
			return err
		}
	} else {
		defer r.stop()
		if cfg.Target, err = bench.RemoteRenew(r.url, r.roots, r.trustDomain, r.minter, cfg.KeyType, cfg.Key, cfg.Connection); err != nil {
			return err
		}
		r.measure(&cfg.Target.Measured, where)
	}
	closeProfile, err := createCPUProfile(*cpuProfile, &cfg.CPUProfile)
	if err != nil {
		return err
	}
	defer closeProfile()
	res, err := bench.Renew(ctx, cfg)
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
	tuneRuntime(env)
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
	tuneRuntime(env)
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
	tuneRuntime(env)
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

// revBench is a throwaway in-process server with its parts in view, as
// openBenchServer hands it to the bench package.
type revBench struct {
	p       *parts
	rev     *revocationOutputs // nil unless asked for
	certs   *servercert.Certificate
	cleanup func()
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
	// The environment is read for the token's PIN only.
	quiet := &cliEnv{stdout: io.Discard, stderr: io.Discard, getenv: os.Getenv}
	if err := initDataDir(ctx, quiet, initOptions{data: d, trustDomain: "example.org", keyType: string(keys.Default),
		passphrase: pass, adminName: "bench", dbURL: opts.DB, keys: opts.Keys}); err != nil {
		return nil, err
	}
	if err := appendBenchLimits(d); err != nil {
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
		OCSPPath: ocspPath, Store: storeName(opts.DB, ""), KeyBackend: string(p.caKeys.Backend()), OnRevocation: func(func()) {}, Close: rb.cleanup}
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
