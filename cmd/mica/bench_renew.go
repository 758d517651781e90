package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/netip"
	"os"
	"runtime/pprof"
	"slices"
	"time"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/token"
)

// renewResult is what `mica bench renew` prints.
type renewResult struct {
	Mode        string  `json:"mode"` // in-process or server
	Server      string  `json:"server,omitempty"`
	Store       string  `json:"store"`
	KeyType     string  `json:"key_type"`
	Key         string  `json:"key"` // keep, keep-csr or new
	Concurrency int     `json:"concurrency"`
	DurationSec float64 `json:"duration_seconds"`
	Renewed     int     `json:"renewed"`
	Errors      int     `json:"errors"`
	PerSecond   float64 `json:"certificates_per_second"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	MaxMs       float64 `json:"max_ms"`
	// ServerCPUMs is the server process's CPU time per certificate (user
	// and system, every thread), 0 when the server is not on this machine.
	ServerCPUMs float64 `json:"server_cpu_ms_per_certificate"`
	// ClientCPUMs is this process's, the load generator's, per
	// certificate; 0 in-process, where the two are one.
	ClientCPUMs  float64 `json:"client_cpu_ms_per_certificate"`
	PeakRSSBytes int64   `json:"server_peak_rss_bytes"`
	LoadBefore   string  `json:"load_average_before"`
	LoadAfter    string  `json:"load_average_after"`
	FirstError   string  `json:"first_error,omitempty"`
	Note         string  `json:"note"`
}

// The ways a renewal can prove and choose its key.
const (
	renewKeep    = "keep"     // keep_key: no CSR, the handshake proves the key
	renewKeepCSR = "keep-csr" // a CSR signed by the current key (servers before keep_key)
	renewNew     = "new"      // a CSR for a new key, as the agent renews
)

// renewWorker renews one credential, again and again.
type renewWorker func(ctx context.Context, i int) error

// renewTarget is where renewals go: an in-process authority or a server.
type renewTarget struct {
	mode, server, store string
	// newWorker enrolls worker w's identity (with a token, before the
	// clock starts) and returns its renewal.
	newWorker func(ctx context.Context, w int) (renewWorker, error)
	// cpu is the server's CPU time so far; nil when unknown.
	cpu     func() (time.Duration, error)
	peakRSS func() int64
	// profile, when set, receives a CPU profile of the measured run.
	profile io.Writer
}

func runBenchRenew(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "bench renew")
	concurrency := fs.Int("concurrency", 64, "renewals in flight, each worker with its own identity and connection")
	duration := fs.Duration("duration", 10*time.Second, "how long to measure")
	warmup := fs.Duration("warmup", 2*time.Second, "unmeasured run before measuring")
	keyMode := fs.String("key", renewKeep, "keep (no CSR: keep_key), keep-csr (a CSR of the current key, for servers before keep_key) or new (a CSR for a new key each time, as the agent renews)")
	keyType := fs.String("key-type", string(keys.Default), "subject key algorithm")
	server := fs.String("server", "", "benchmark a running server at this URL (default: in-process)")
	serverPID := fs.Int("server-pid", 0, "with --server: the server's process ID on this machine, to read its CPU time and memory from /proc")
	spawn := fs.Bool("spawn", false, "start a server for the benchmark: `mica init` in a temporary directory, then `mica serve` on a loopback port")
	serverBinary := fs.String("server-binary", "", "with --spawn: the mica binary to serve with (default: this one), to measure another build in the same run")
	serverCPUs := fs.String("server-cpus", "", "with --spawn: pin the server to these CPUs (taskset list, e.g. 0); pin the benchmark itself with taskset")
	dataDir := fs.String("data-dir", "", "with --server: the server's data directory, for its root and token key")
	passFile := fs.String("passphrase-file", "", "with --server: the data directory's passphrase file (or set MICA_PASSPHRASE)")
	db := fs.String("db", "", "in-process or --spawn: postgres:// URL (default: SQLite in a temporary directory)")
	asJSON := fs.Bool("json", false, "print JSON")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of this process's measured run to this file (in-process: the server's work)")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	switch {
	case *concurrency < 1 || *duration <= 0:
		return usageError("--concurrency must be at least 1 and --duration positive")
	case *keyMode != renewKeep && *keyMode != renewKeepCSR && *keyMode != renewNew:
		return usageError("--key must be keep, keep-csr or new, not %q", *keyMode)
	case *spawn && *server != "":
		return usageError("--spawn starts its own server: leave out --server")
	case (*serverBinary != "" || *serverCPUs != "") && !*spawn:
		return usageError("--server-binary and --server-cpus are for --spawn")
	}
	tuneGC(env)
	alg, err := keys.ParseAlgorithm(*keyType)
	if err != nil {
		return usageError("%v", err)
	}
	var target renewTarget
	switch {
	case *spawn:
		s, err := spawnServer(ctx, *serverBinary, *serverCPUs, *db)
		if err != nil {
			return err
		}
		defer s.stop()
		minter, err := loadMinter(dataPaths{s.dataDir}, s.pass)
		if err != nil {
			return err
		}
		target, err = remoteRenewTarget(s.url, s.dataDir, minter, alg, *keyMode)
		if err != nil {
			return err
		}
		target.store = storeName(*db, "")
		target.server = "spawned: " + s.cmd.Path + " serve"
		if *serverCPUs != "" {
			target.server += ", CPUs " + *serverCPUs
		}
		target.cpu = func() (time.Duration, error) { return processCPU(s.pid) }
		target.peakRSS = func() int64 { return processPeakRSS(s.pid) }
	case *server != "":
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
		if target, err = remoteRenewTarget(*server, *dataDir, minter, alg, *keyMode); err != nil {
			return err
		}
		target.store, target.server = *server, *server
		if *serverPID > 0 {
			pid := *serverPID
			target.cpu = func() (time.Duration, error) { return processCPU(pid) }
			target.peakRSS = func() int64 { return processPeakRSS(pid) }
		}
	default:
		p, cleanup, err := benchInProcess(ctx, *db)
		if err != nil {
			return err
		}
		defer cleanup()
		if target, err = inProcessRenewTarget(p, alg, *keyMode); err != nil {
			return err
		}
		target.store = storeName(*db, "")
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		target.profile = f
	}
	res, err := benchRenew(ctx, target, *concurrency, *duration, *warmup)
	if err != nil {
		return err
	}
	res.KeyType, res.Key = string(alg), *keyMode
	if *asJSON {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	res.writeText(env.stdout)
	return nil
}

// benchRenew enrolls one identity per worker, then measures renewals:
// every worker renews its own credential in a loop over its own
// connection, as many agents renewing at once would.
func benchRenew(ctx context.Context, t renewTarget, workers int, d, warmup time.Duration) (renewResult, error) {
	res := renewResult{Mode: t.mode, Server: t.server, Store: t.store, Concurrency: workers}
	renew := make([]renewWorker, workers)
	for w := range renew {
		var err error
		if renew[w], err = t.newWorker(ctx, w); err != nil {
			return res, fmt.Errorf("bench: enrolling worker %d's identity: %w", w, err)
		}
	}
	op := func(w, i int) error { return renew[w](ctx, i) }
	if warmup > 0 {
		if _, _, err := measureLoop(ctx, workers, warmup, op); err != nil {
			return res, fmt.Errorf("bench: warm-up failed: %w", err)
		}
	}
	res.LoadBefore = loadAverage()
	var serverStart time.Duration
	if t.cpu != nil {
		var err error
		if serverStart, err = t.cpu(); err != nil {
			return res, err
		}
	}
	if t.profile != nil {
		if err := pprof.StartCPUProfile(t.profile); err != nil {
			return res, err
		}
	}
	clientStart, start := selfCPU(), time.Now()
	lat, failed, firstErr := measureLoop(ctx, workers, d, op)
	elapsed, clientCPU := time.Since(start), selfCPU()-clientStart
	if t.profile != nil {
		pprof.StopCPUProfile()
	}
	res.LoadAfter = loadAverage()
	n := len(lat)
	if t.cpu != nil && n > 0 {
		end, err := t.cpu()
		if err != nil {
			return res, err
		}
		res.ServerCPUMs = float64((end - serverStart).Microseconds()) / 1000 / float64(n)
	}
	switch {
	case t.mode == "in-process" && n > 0:
		res.ServerCPUMs = float64(clientCPU.Microseconds()) / 1000 / float64(n)
	case n > 0:
		res.ClientCPUMs = float64(clientCPU.Microseconds()) / 1000 / float64(n)
	}
	res.DurationSec, res.Renewed, res.Errors = elapsed.Seconds(), n, failed
	res.PerSecond = float64(n) / elapsed.Seconds()
	if firstErr != nil {
		res.FirstError = firstErr.Error()
	}
	slices.Sort(lat)
	res.P50Ms, res.P99Ms = ms(percentile(lat, 0.50)), ms(percentile(lat, 0.99))
	if n > 0 {
		res.MaxMs = ms(lat[n-1])
	}
	if t.peakRSS != nil {
		res.PeakRSSBytes = t.peakRSS()
	}
	res.Note = "identities are enrolled and new keys made before the clock starts; latency is the renewal call alone"
	if t.mode == "in-process" {
		res.Note += "; in-process there is no TLS, HTTP, JSON or request log, so the rate is an upper bound and the CPU per certificate (this process's) a lower bound on a server's"
	}
	return res, nil
}

func (r renewResult) writeText(w io.Writer) {
	where := r.Mode
	if r.Server != "" {
		where += " (" + r.Server + ")"
	}
	fmt.Fprintf(w, "bench renew: %s, store %s, %s keys, key %s, concurrency %d, %.1fs\n", where, r.Store, r.KeyType, r.Key, r.Concurrency, r.DurationSec)
	fmt.Fprintf(w, "  renewed     %d (%d errors)\n", r.Renewed, r.Errors)
	fmt.Fprintf(w, "  throughput  %.0f certificates/s\n", r.PerSecond)
	fmt.Fprintf(w, "  latency     p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", r.P50Ms, r.P99Ms, r.MaxMs)
	switch {
	case r.Mode == "in-process":
		fmt.Fprintf(w, "  CPU         %.3f ms per certificate (this process: a lower bound for a server)\n", r.ServerCPUMs)
	case r.ServerCPUMs > 0:
		fmt.Fprintf(w, "  server CPU  %.3f ms per certificate (server process, from /proc)\n", r.ServerCPUMs)
	default:
		fmt.Fprintf(w, "  server CPU  unknown (give --server-pid of a server on this machine)\n")
	}
	if r.ClientCPUMs > 0 {
		fmt.Fprintf(w, "  client CPU  %.3f ms per certificate (this process)\n", r.ClientCPUMs)
	}
	if r.PeakRSSBytes > 0 {
		fmt.Fprintf(w, "  peak RSS    %.1f MiB (server)\n", float64(r.PeakRSSBytes)/(1<<20))
	}
	fmt.Fprintf(w, "  load avg    %s before, %s after\n", r.LoadBefore, r.LoadAfter)
	if r.FirstError != "" {
		fmt.Fprintf(w, "  first error %s\n", r.FirstError)
	}
}

// renewCSRs says what worker key's renewals send for a key mode: no CSR
// to keep the key, a CSR of its own key, or, for a new key each time, the
// CSRs of pool (shared by the workers: the server's work is the same
// whichever new key a CSR names).
func renewCSRs(mode string, key crypto.Signer, pool [][]byte) (func(i int) []byte, error) {
	switch mode {
	case renewKeepCSR:
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		if err != nil {
			return nil, err
		}
		return func(int) []byte { return der }, nil
	case renewNew:
		return func(i int) []byte { return pool[i%len(pool)] }, nil
	}
	return func(int) []byte { return nil }, nil
}

// newKeyPool is the CSRs of keys made before the clock starts, for mode
// new; nil for the others.
func newKeyPool(alg keys.Algorithm, mode string) ([][]byte, error) {
	if mode != renewNew {
		return nil, nil
	}
	return csrPool(alg)
}

// benchIdentity is worker w's SPIFFE ID; run keeps runs against one
// server apart.
func benchIdentity(trustDomain string, run int64, w int) string {
	return fmt.Sprintf("spiffe://%s/bench/renew/%d/%d", trustDomain, run, w)
}

func inProcessRenewTarget(p *parts, alg keys.Algorithm, mode string) (renewTarget, error) {
	pool, err := newKeyPool(alg, mode)
	if err != nil {
		return renewTarget{}, err
	}
	src := netip.MustParseAddr("127.0.0.1")
	run := time.Now().UnixNano()
	return renewTarget{mode: "in-process",
		newWorker: func(ctx context.Context, w int) (renewWorker, error) {
			key, err := keys.Generate(alg, rand.Reader)
			if err != nil {
				return nil, err
			}
			tok, err := mintBenchToken(p.minter, benchIdentity("example.org", run, w))
			if err != nil {
				return nil, err
			}
			csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
			if err != nil {
				return nil, err
			}
			iss, err := p.authority.Enroll(ctx, authority.EnrollRequest{Token: tok, CSR: csr, Source: src})
			if err != nil {
				return nil, err
			}
			csrOf, err := renewCSRs(mode, key, pool)
			if err != nil {
				return nil, err
			}
			// As the API does: the chain as the handshake presents it, and
			// one memo for the worker's connection.
			chain := append([]*x509.Certificate{iss.Certificate}, iss.Chain...)
			memo := new(authority.ConnMemo)
			return func(ctx context.Context, i int) error {
				peer, err := p.authority.AuthenticateConn(ctx, memo, chain, src)
				if err != nil {
					return err
				}
				_, err = p.authority.Renew(ctx, authority.RenewRequest{Peer: peer, CSR: csrOf(i), KeepKey: mode == renewKeep, Source: src})
				return err
			}, nil
		},
	}, nil
}

// remoteRenewTarget renews over the API of the server at url whose data
// directory is dataDir (for its root and trust domain), enrolling with
// tokens minter makes.
func remoteRenewTarget(url, dataDir string, minter *token.Minter, alg keys.Algorithm, mode string) (renewTarget, error) {
	d := dataPaths{dataDir}
	cfg, err := loadConfig(d.config())
	if err != nil {
		return renewTarget{}, err
	}
	roots, err := loadPool(d.rootCert())
	if err != nil {
		return renewTarget{}, err
	}
	anon, err := client.New(client.Config{Server: url, Roots: roots})
	if err != nil {
		return renewTarget{}, err
	}
	pool, err := newKeyPool(alg, mode)
	if err != nil {
		return renewTarget{}, err
	}
	// PEM-encoding is the client's work: done before the clock starts.
	poolPEM := make([]string, len(pool))
	for i, der := range pool {
		poolPEM[i] = csrPEM(der)
	}
	run := time.Now().UnixNano()
	return renewTarget{mode: "server",
		newWorker: func(ctx context.Context, w int) (renewWorker, error) {
			key, err := keys.Generate(alg, rand.Reader)
			if err != nil {
				return nil, err
			}
			tok, err := mintBenchToken(minter, benchIdentity(cfg.TrustDomain, run, w))
			if err != nil {
				return nil, err
			}
			der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
			if err != nil {
				return nil, err
			}
			resp, err := anon.Enroll(ctx, tok, client.CertificateRequest{CSR: csrPEM(der)})
			if err != nil {
				return nil, err
			}
			cert, err := tls.X509KeyPair([]byte(resp.Certificate+resp.Chain), pemKey(key))
			if err != nil {
				return nil, err
			}
			// One client per worker: its own connection and credential.
			c, err := client.New(client.Config{Server: url, Roots: roots, Certificate: &cert})
			if err != nil {
				return nil, err
			}
			csrOf, err := renewCSRs(mode, key, pool)
			if err != nil {
				return nil, err
			}
			var own string
			if mode == renewKeepCSR {
				own = csrPEM(csrOf(0))
			}
			return func(ctx context.Context, i int) error {
				req := client.CertificateRequest{KeepKey: mode == renewKeep}
				switch mode {
				case renewKeepCSR:
					req.CSR = own
				case renewNew:
					req.CSR = poolPEM[i%len(poolPEM)]
				}
				_, err := c.Renew(ctx, req)
				return err
			}, nil
		},
	}, nil
}

func mintBenchToken(m *token.Minter, id string) (string, error) {
	now := time.Now()
	return m.Mint(token.Claims{Identity: id, Profile: "service", Issuer: "bench", IssuedAt: now, Expiry: now.Add(time.Hour)})
}

func csrPEM(der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func pemKey(key crypto.Signer) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		panic("bench: marshalling a key made here: " + err.Error())
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}
