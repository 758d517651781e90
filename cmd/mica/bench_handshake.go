package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/ca"
	"github.com/mica-pki/mica/internal/issuance"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/mtls"
	"github.com/mica-pki/mica/revocation"
)

// handshakeBench is what every measurement of `mica bench handshake` shares:
// one CA, one server and one client credential, and the two pairs of
// configs compared — plain crypto/tls mutual TLS and the mtls package. A
// further section (see handshakeSections) gets it whole.
type handshakeBench struct {
	concurrency int
	slot        time.Duration // one measurement of one case in one round
	rounds      int

	root, intermediate *x509.Certificate
	server, client     tls.Certificate
	serverName         string // the server's DNS name, for crypto/tls's host name check
	serverID           string // its SPIFFE ID, for mtls's identity check
	revoked            *revocation.Set
	metrics            *prometheus.Registry

	plainServer, plainClient *tls.Config
	mtlsServer, mtlsClient   *tls.Config
}

// handshakeSection is one more measurement made after the crypto/tls vs
// mtls comparison, with the same credentials and configs — the place for
// the latency a proxy adds per request. run returns what goes under name in
// --json and the lines to print.
type handshakeSection struct {
	name string
	run  func(ctx context.Context, b *handshakeBench) (result any, lines []string, err error)
}

// handshakeSections are the further sections, in the order they run.
func handshakeSections() []handshakeSection {
	return nil
}

// handshakeCase is one row of the comparison.
type handshakeCase struct {
	Kind       string  `json:"kind"`   // full or resumed
	Config     string  `json:"config"` // crypto/tls or mtls
	Handshakes int     `json:"handshakes"`
	Errors     int     `json:"errors"`
	Resumed    int     `json:"resumed"`
	Seconds    float64 `json:"seconds"`
	PerSecond  float64 `json:"handshakes_per_second"`
	P50Ms      float64 `json:"p50_ms"`
	P99Ms      float64 `json:"p99_ms"`
	FirstError string  `json:"first_error,omitempty"`

	lat []time.Duration
}

type handshakeBenchResult struct {
	KeyType        string             `json:"key_type"`
	Concurrency    int                `json:"concurrency"`
	Rounds         int                `json:"rounds"`
	RevokedSerials int                `json:"revoked_serials"`
	Cases          []*handshakeCase   `json:"cases"`
	FullDiffPct    float64            `json:"full_difference_percent"`    // mtls vs crypto/tls, handshakes/s
	ResumedDiffPct float64            `json:"resumed_difference_percent"` // same, resumed
	MTLSVerified   map[string]float64 `json:"mtls_verified"`              // mica_mtls_handshakes_total by outcome
	Sections       map[string]any     `json:"sections,omitempty"`
	Note           string             `json:"note"`
}

func runBenchHandshake(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "bench handshake")
	concurrency := fs.Int("concurrency", 8, "handshakes in flight")
	duration := fs.Duration("duration", 10*time.Second, "how long to measure each of the four cases, split over the rounds")
	rounds := fs.Int("rounds", 5, "alternate crypto/tls and mtls this many times, so drift on a busy machine hits both alike")
	warmup := fs.Duration("warmup", time.Second, "unmeasured run of every case before measuring")
	nRevoked := fs.Int("revoked", 10000, "serials in the revocation set the mtls configs consult")
	keyType := fs.String("key-type", string(keys.Default), "algorithm of the CA and both certificates' keys")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if *concurrency < 1 || *duration <= 0 || *rounds < 1 || *nRevoked < 0 || *warmup < 0 {
		return usageError("--concurrency and --rounds must be at least 1, --duration positive, --revoked and --warmup not negative")
	}
	alg, err := keys.ParseAlgorithm(*keyType)
	if err != nil {
		return usageError("%v", err)
	}
	tuneGC(env)
	b, err := newHandshakeBench(alg, *nRevoked)
	if err != nil {
		return err
	}
	b.concurrency, b.rounds, b.slot = *concurrency, *rounds, *duration/time.Duration(*rounds)

	plainAddr, stopPlain, err := serveHandshakes(b.plainServer)
	if err != nil {
		return err
	}
	defer stopPlain()
	mtlsAddr, stopMTLS, err := serveHandshakes(b.mtlsServer)
	if err != nil {
		return err
	}
	defer stopMTLS()

	res := handshakeBenchResult{KeyType: string(alg), Concurrency: *concurrency, Rounds: *rounds, RevokedSerials: *nRevoked,
		Note: "client and server in this process on loopback, sharing the CPUs; a handshake is timed from dial to the server's first byte, so the server's verification of the client is inside it"}
	type pair struct{ plain, mtls *handshakeCase }
	kinds := []string{"full", "resumed"}
	cases := map[string]pair{}
	for _, kind := range kinds {
		p := pair{&handshakeCase{Kind: kind, Config: "crypto/tls"}, &handshakeCase{Kind: kind, Config: "mtls"}}
		cases[kind] = p
		res.Cases = append(res.Cases, p.plain, p.mtls)
	}
	// The configs used by the clients of each case; resumption needs a
	// session cache, a full handshake none.
	client := func(kind string, cfg *tls.Config) *tls.Config {
		c := cfg.Clone()
		c.ServerName = b.serverName
		c.ClientSessionCache = nil
		if kind == "resumed" {
			c.ClientSessionCache = tls.NewLRUClientSessionCache(4 * *concurrency)
		}
		return c
	}
	type runner struct {
		c    *handshakeCase
		addr string
		cfg  *tls.Config
	}
	runners := map[*handshakeCase]runner{}
	for _, kind := range kinds {
		runners[cases[kind].plain] = runner{cases[kind].plain, plainAddr, client(kind, b.plainClient)}
		runners[cases[kind].mtls] = runner{cases[kind].mtls, mtlsAddr, client(kind, b.mtlsClient)}
	}
	run := func(r runner, d time.Duration, record bool) {
		var resumed atomic.Int64
		start := time.Now()
		lat, failed, firstErr := measureLoop(ctx, *concurrency, d, func(int) error {
			didResume, err := handshakeOnce(r.addr, r.cfg)
			if didResume {
				resumed.Add(1)
			}
			return err
		})
		if !record {
			return
		}
		r.c.Seconds += time.Since(start).Seconds()
		r.c.lat = append(r.c.lat, lat...)
		r.c.Errors += failed
		r.c.Resumed += int(resumed.Load())
		if firstErr != nil && r.c.FirstError == "" {
			r.c.FirstError = firstErr.Error()
		}
	}
	if *warmup > 0 {
		for _, c := range res.Cases {
			run(runners[c], *warmup/4, false)
		}
	}
	for round := range *rounds {
		for _, kind := range kinds {
			order := []*handshakeCase{cases[kind].plain, cases[kind].mtls}
			if round%2 == 1 {
				slices.Reverse(order)
			}
			for _, c := range order {
				run(runners[c], b.slot, true)
			}
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	for _, c := range res.Cases {
		slices.Sort(c.lat)
		c.Handshakes = len(c.lat)
		c.PerSecond = float64(len(c.lat)) / c.Seconds
		c.P50Ms, c.P99Ms = ms(percentile(c.lat, 0.50)), ms(percentile(c.lat, 0.99))
	}
	diff := func(p pair) float64 { return (p.mtls.PerSecond/p.plain.PerSecond - 1) * 100 }
	res.FullDiffPct, res.ResumedDiffPct = diff(cases["full"]), diff(cases["resumed"])
	if res.MTLSVerified, err = verifiedCounts(b.metrics); err != nil {
		return err
	}

	var sectionLines []string
	for _, s := range handshakeSections() {
		out, lines, err := s.run(ctx, b)
		if err != nil {
			return fmt.Errorf("bench handshake: %s: %w", s.name, err)
		}
		if res.Sections == nil {
			res.Sections = map[string]any{}
		}
		res.Sections[s.name] = out
		sectionLines = append(sectionLines, lines...)
	}

	if *asJSON {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	w := env.stdout
	fmt.Fprintf(w, "bench handshake: mutual TLS 1.3, %s keys, concurrency %d, %d rounds of %s per case\n",
		res.KeyType, res.Concurrency, res.Rounds, b.slot)
	fmt.Fprintf(w, "  crypto/tls: ClientCAs + RequireAndVerifyClientCert, RootCAs + host name\n")
	fmt.Fprintf(w, "  mtls:       ServerConfig/ClientConfig, identity authorizer, revocation set of %d serials, metrics\n", res.RevokedSerials)
	fmt.Fprintf(w, "  %-8s %-11s %12s %9s %9s %9s %7s\n", "", "", "handshakes/s", "p50 ms", "p99 ms", "resumed", "errors")
	for _, kind := range kinds {
		for _, c := range []*handshakeCase{cases[kind].plain, cases[kind].mtls} {
			fmt.Fprintf(w, "  %-8s %-11s %12.0f %9.2f %9.2f %8.0f%% %7d\n", c.Kind, c.Config, c.PerSecond, c.P50Ms, c.P99Ms,
				100*float64(c.Resumed)/float64(max(1, c.Handshakes)), c.Errors)
		}
		fmt.Fprintf(w, "  %-8s mtls vs crypto/tls: %+.1f%% handshakes/s (target within 5%%)\n", kind, diff(cases[kind]))
	}
	fmt.Fprintf(w, "  mtls verified %.0f handshakes (both sides), refused %.0f\n", res.MTLSVerified["accepted"], res.MTLSVerified["rejected"])
	for _, c := range res.Cases {
		if c.FirstError != "" {
			fmt.Fprintf(w, "  first error (%s, %s): %s\n", c.Kind, c.Config, c.FirstError)
		}
	}
	for _, l := range sectionLines {
		fmt.Fprintln(w, l)
	}
	fmt.Fprintln(w, res.Note)
	return nil
}

// newHandshakeBench makes a CA in memory, a server and a client credential,
// the revocation set and both pairs of configs.
func newHandshakeBench(alg keys.Algorithm, nRevoked int) (*handshakeBench, error) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	rootKey, err := keys.Generate(alg, rand.Reader)
	if err != nil {
		return nil, err
	}
	root, err := ca.NewRoot(rootKey, ca.RootConfig{TrustDomain: td})
	if err != nil {
		return nil, err
	}
	intKey, err := keys.Generate(alg, rand.Reader)
	if err != nil {
		return nil, err
	}
	icfg := ca.IntermediateConfig{TrustDomain: td}
	csrDER, err := ca.NewIntermediateCSR(intKey, icfg)
	if err != nil {
		return nil, err
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, err
	}
	inter, err := ca.SignIntermediate(root, rootKey, csr, icfg)
	if err != nil {
		return nil, err
	}
	iss, err := issuance.New(issuance.Config{Cert: inter, Signer: intKey})
	if err != nil {
		return nil, err
	}
	b := &handshakeBench{root: root, intermediate: inter, serverName: "api.bench.example.org",
		serverID: "spiffe://example.org/bench/api", metrics: prometheus.NewRegistry()}
	issue := func(names string, eku x509.ExtKeyUsage) (tls.Certificate, error) {
		id, err := identity.Parse(names)
		if err != nil {
			return tls.Certificate{}, err
		}
		key, err := keys.Generate(alg, rand.Reader)
		if err != nil {
			return tls.Certificate{}, err
		}
		now := time.Now()
		cert, err := iss.Issue(issuance.Request{PublicKey: key.Public(), Identity: id, NotBefore: now.Add(-time.Minute),
			NotAfter: now.Add(24 * time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{eku}})
		if err != nil {
			return tls.Certificate{}, err
		}
		return tls.Certificate{Certificate: [][]byte{cert.Raw, inter.Raw}, PrivateKey: key, Leaf: cert}, nil
	}
	if b.server, err = issue(b.serverID+","+b.serverName, x509.ExtKeyUsageServerAuth); err != nil {
		return nil, err
	}
	if b.client, err = issue("spiffe://example.org/bench/client", x509.ExtKeyUsageClientAuth); err != nil {
		return nil, err
	}

	pool := x509.NewCertPool()
	pool.AddCert(root)
	b.plainServer = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{b.server},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	b.plainClient = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{b.client}, RootCAs: pool}

	b.revoked = &revocation.Set{}
	snap := revocation.Snapshot{Seq: int64(nRevoked)}
	for range nRevoked {
		sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
		if err != nil {
			return nil, err
		}
		snap.Revoked = append(snap.Revoked, revocation.Event{Kind: revocation.KindRevoked, Serial: sn.Text(16)})
	}
	b.revoked.Reset(snap)
	metrics, err := mtls.NewMetrics(b.metrics)
	if err != nil {
		return nil, err
	}
	roots := []*x509.Certificate{root}
	opts := func(cert tls.Certificate, allow mtls.Authorizer) mtls.Options {
		return mtls.Options{Source: staticSource{cert: &cert, roots: roots}, Authorize: allow, Revocations: b.revoked, Metrics: metrics}
	}
	if b.mtlsServer, err = mtls.ServerConfig(opts(b.server, mtls.AuthorizePathPrefixes("spiffe://example.org/bench/"))); err != nil {
		return nil, err
	}
	if b.mtlsClient, err = mtls.ClientConfig(opts(b.client, mtls.AuthorizeIDs(b.serverID))); err != nil {
		return nil, err
	}
	return b, nil
}

// staticSource is an mtls.Source that never changes: in the benchmark the
// credentials are the same for both configs and are not reloaded.
type staticSource struct {
	cert  *tls.Certificate
	roots []*x509.Certificate
}

func (s staticSource) Certificate() (*tls.Certificate, error) { return s.cert, nil }
func (s staticSource) Roots() []*x509.Certificate             { return s.roots }

// serveHandshakes accepts connections on loopback, completes the handshake
// and writes one byte, so the client knows the server accepted it.
func serveHandshakes(cfg *tls.Config) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				tc := tls.Server(c, cfg)
				if tc.Handshake() == nil {
					tc.Write([]byte{1})
				}
			})
		}
	})
	return ln.Addr().String(), func() { ln.Close(); wg.Wait() }, nil
}

// handshakeOnce dials, shakes hands and waits for the server's byte: in
// TLS 1.3 the client's Handshake returns before the server has verified
// the client, and the byte comes only after. Reading it also takes in the
// server's session tickets.
func handshakeOnce(addr string, cfg *tls.Config) (resumed bool, err error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return false, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(c, cfg)
	if err := tc.Handshake(); err != nil {
		return false, err
	}
	var b [1]byte
	if _, err := io.ReadFull(tc, b[:]); err != nil {
		return false, fmt.Errorf("the server refused the handshake: %w", err)
	}
	return tc.ConnectionState().DidResume, nil
}

// measureLoop runs op in workers until d has passed and returns every
// successful op's latency, the failures and the first error.
func measureLoop(ctx context.Context, workers int, d time.Duration, op func(worker int) error) ([]time.Duration, int, error) {
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
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t0 := time.Now()
				if err := op(w); err != nil {
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

// verifiedCounts sums mica_mtls_handshakes_total by outcome: proof that
// the mtls cases went through the package's verification, resumed ones
// included.
func verifiedCounts(reg *prometheus.Registry) (map[string]float64, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return nil, err
	}
	out := map[string]float64{"accepted": 0, "rejected": 0}
	for _, mf := range mfs {
		if mf.GetName() != "mica_mtls_handshakes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" {
					out[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return out, nil
}
