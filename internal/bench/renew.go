package bench

import (
	"cmp"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/netip"
	"runtime/pprof"
	"slices"
	"time"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/token"
)

// The ways a renewal can prove and choose its key (RenewConfig.Key).
const (
	// RenewKeep keeps the key and sends no CSR (keep_key): the TLS
	// handshake proves the key.
	RenewKeep = "keep"
	// RenewKeepCSR keeps the key with a CSR it signed: how a renewal that
	// keeps its key asks a server from before keep_key.
	RenewKeepCSR = "keep-csr"
	// RenewNew asks for a new key with its CSR, as the agent renews.
	RenewNew = "new"
)

// How a worker's renewals reach the server (RenewConfig.Connection).
const (
	// ConnReuse renews over one connection per worker, opened once, with
	// the certificate it enrolled: the server's cost of a renewal alone.
	ConnReuse = "reuse"
	// ConnNew opens a connection for each renewal, presenting the
	// certificate the last renewal returned, as an agent does: it renews
	// once in a certificate's lifetime, so every renewal pays for a full
	// mTLS handshake. Keys are kept.
	ConnNew = "new"
)

// RenewResult is what `mica bench renew` reports.
type RenewResult struct {
	Mode        string  `json:"mode"` // in-process or server
	Server      string  `json:"server,omitempty"`
	Store       string  `json:"store"`
	KeyType     string  `json:"key_type"`
	Key         string  `json:"key"`        // keep, keep-csr or new
	Connection  string  `json:"connection"` // reuse or new
	Concurrency int     `json:"concurrency"`
	DurationSec float64 `json:"duration_seconds"`
	Renewed     int     `json:"renewed"`
	Errors      int     `json:"errors"`
	PerSecond   float64 `json:"certificates_per_second"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	MaxMs       float64 `json:"max_ms"`
	// ServerCPUMs is the server's CPU time per certificate: the server
	// process's (user and system, every thread), or in-process this
	// process's; 0 when unknown.
	ServerCPUMs float64 `json:"server_cpu_ms_per_certificate"`
	// ClientCPUMs is this process's, the load's, per certificate, when
	// the server is another process.
	ClientCPUMs  float64 `json:"client_cpu_ms_per_certificate,omitempty"`
	PeakRSSBytes int64   `json:"server_peak_rss_bytes"`
	LoadBefore   string  `json:"load_average_before"`
	LoadAfter    string  `json:"load_average_after"`
	FirstError   string  `json:"first_error,omitempty"`
	Note         string  `json:"note"`
}

// RenewWorker renews one worker's credential; i counts its renewals.
type RenewWorker func(ctx context.Context, i int) error

// RenewTarget is where renewals go: an in-process authority or a server.
type RenewTarget struct {
	Mode string
	Measured
	// NewWorker enrolls worker w's identity (with a token, before the
	// clock starts) and returns its renewal.
	NewWorker func(ctx context.Context, w int) (RenewWorker, error)
}

// RenewConfig is one `mica bench renew` run.
type RenewConfig struct {
	Target      RenewTarget
	Concurrency int
	Duration    time.Duration
	Warmup      time.Duration
	KeyType     keys.Algorithm
	Key         string
	Connection  string // ConnReuse or ConnNew; only a server's renewals can use ConnNew
	// CPUProfile, when set, receives a CPU profile of this process's
	// measured run (in-process, the server's work).
	CPUProfile io.Writer
}

// Renew measures renewals: one identity per worker, enrolled before the
// clock starts, each worker renewing its own credential in a loop over its
// own connection, as that many agents renewing at once would.
func Renew(ctx context.Context, cfg RenewConfig) (RenewResult, error) {
	t := cfg.Target
	res := RenewResult{Mode: t.Mode, Server: t.Server, Store: t.Store, KeyType: string(cfg.KeyType), Key: cfg.Key,
		Connection: cmp.Or(cfg.Connection, ConnReuse), Concurrency: cfg.Concurrency,
		Note: "identities are enrolled and new keys made before the clock starts; latency is the renewal call alone"}
	if res.Connection == ConnNew {
		res.Note += ", with the mTLS handshake of a new connection each time"
	}
	if t.Mode == "in-process" {
		res.Note += "; in-process there is no TLS, HTTP, JSON or request log: the rate is an upper bound on a server's, the CPU per certificate a lower bound"
	}
	renew := make([]RenewWorker, cfg.Concurrency)
	for w := range renew {
		var err error
		if renew[w], err = t.NewWorker(ctx, w); err != nil {
			return res, fmt.Errorf("bench: enrolling worker %d's identity: %w", w, err)
		}
	}
	op := func(w, i int) error { return renew[w](ctx, i) }
	if cfg.Warmup > 0 {
		if _, _, err := Loop(ctx, cfg.Concurrency, cfg.Warmup, op); err != nil {
			return res, fmt.Errorf("bench: warm-up failed: %w", err)
		}
	}
	m, err := startMeter(t.CPU, cfg.CPUProfile)
	if err != nil {
		return res, err
	}
	start := time.Now()
	lat, failed, firstErr := Loop(ctx, cfg.Concurrency, cfg.Duration, op)
	elapsed := time.Since(start)
	n := len(lat)
	if res.ServerCPUMs, res.ClientCPUMs, err = m.stop(n); err != nil {
		return res, err
	}
	res.LoadBefore, res.LoadAfter = m.loadBefore, LoadAverage()
	res.DurationSec, res.Renewed, res.Errors = elapsed.Seconds(), n, failed
	res.PerSecond = float64(n) / elapsed.Seconds()
	if firstErr != nil {
		res.FirstError = firstErr.Error()
	}
	slices.Sort(lat)
	res.P50Ms, res.P99Ms = Ms(Percentile(lat, 0.50)), Ms(Percentile(lat, 0.99))
	if n > 0 {
		res.MaxMs = Ms(lat[n-1])
	}
	res.PeakRSSBytes = t.peakRSS()
	return res, nil
}

// meter measures the CPU time of a run: the server's, when it is another
// process, and this process's.
type meter struct {
	serverCPU    func() (time.Duration, error)
	profile      io.Writer
	server, self time.Duration
	loadBefore   string
}

func startMeter(serverCPU func() (time.Duration, error), profile io.Writer) (*meter, error) {
	m := &meter{serverCPU: serverCPU, profile: profile, loadBefore: LoadAverage()}
	if serverCPU != nil {
		var err error
		if m.server, err = serverCPU(); err != nil {
			return nil, err
		}
	}
	if profile != nil {
		if err := pprof.StartCPUProfile(profile); err != nil {
			return nil, err
		}
	}
	m.self = SelfCPU()
	return m, nil
}

// stop ends the run of n certificates and returns the server's CPU
// milliseconds per certificate and, when the server is another process,
// this process's.
func (m *meter) stop(n int) (server, client float64, err error) {
	self := SelfCPU() - m.self
	if m.profile != nil {
		pprof.StopCPUProfile()
	}
	if n == 0 {
		return 0, 0, nil
	}
	perCert := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(n) }
	if m.serverCPU == nil {
		return perCert(self), 0, nil
	}
	end, err := m.serverCPU()
	if err != nil {
		return 0, 0, err
	}
	return perCert(end - m.server), perCert(self), nil
}

// WriteText prints r for people.
func (r RenewResult) WriteText(w io.Writer) {
	where := r.Mode
	if r.Server != "" {
		where += " (" + r.Server + ")"
	}
	fmt.Fprintf(w, "bench renew: %s, store %s, %s keys, key %s, connection %s, concurrency %d, %.1fs\n", where, r.Store, r.KeyType, r.Key, r.Connection, r.Concurrency, r.DurationSec)
	fmt.Fprintf(w, "  renewed     %d (%d errors)\n", r.Renewed, r.Errors)
	writeCommon(w, r.PerSecond, r.P50Ms, r.P99Ms, r.MaxMs, r.Mode, r.ServerCPUMs, r.ClientCPUMs, r.PeakRSSBytes, r.LoadBefore, r.LoadAfter)
	if r.FirstError != "" {
		fmt.Fprintf(w, "  first error %s\n", r.FirstError)
	}
}

// writeCommon prints the lines issue and renew share.
func writeCommon(w io.Writer, perSecond, p50, p99, max float64, mode string, serverCPU, clientCPU float64, peakRSS int64, loadBefore, loadAfter string) {
	fmt.Fprintf(w, "  throughput  %.0f certificates/s\n", perSecond)
	fmt.Fprintf(w, "  latency     p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", p50, p99, max)
	switch {
	case mode == "in-process":
		fmt.Fprintf(w, "  CPU         %.3f ms per certificate (this process; no TLS, HTTP or JSON: a lower bound for a server)\n", serverCPU)
	case serverCPU > 0:
		fmt.Fprintf(w, "  server CPU  %.3f ms per certificate (the server process, from /proc)\n", serverCPU)
	default:
		fmt.Fprintf(w, "  server CPU  unknown (give --server-pid of a server on this machine, or --spawn one)\n")
	}
	if clientCPU > 0 {
		fmt.Fprintf(w, "  client CPU  %.3f ms per certificate (this process)\n", clientCPU)
	}
	if peakRSS > 0 {
		fmt.Fprintf(w, "  peak RSS    %.1f MiB (server)\n", float64(peakRSS)/(1<<20))
	}
	fmt.Fprintf(w, "  load avg    %s before, %s after\n", loadBefore, loadAfter)
}

// renewCSRs says what a worker whose key is key sends with each renewal in
// mode: no CSR to keep the key, a CSR of key, or, for a new key each time,
// pool's CSRs (shared by the workers: the server's work is the same
// whichever new key a CSR names).
func renewCSRs(mode string, key crypto.Signer, pool [][]byte) (func(i int) []byte, error) {
	switch mode {
	case RenewKeepCSR:
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		if err != nil {
			return nil, err
		}
		return func(int) []byte { return der }, nil
	case RenewNew:
		return func(i int) []byte { return pool[i%len(pool)] }, nil
	case RenewKeep:
		return func(int) []byte { return nil }, nil
	}
	return nil, fmt.Errorf("bench: key mode %q is not keep, keep-csr or new", mode)
}

// newKeyPool is the CSRs of keys made before the clock starts, for mode
// new; nil for the others.
func newKeyPool(alg keys.Algorithm, mode string) ([][]byte, error) {
	if mode != RenewNew {
		return nil, nil
	}
	return csrPool(alg, nil)
}

// renewIdentity is worker w's SPIFFE ID; run keeps runs against one server
// apart.
func renewIdentity(trustDomain string, run int64, w int) string {
	return fmt.Sprintf("spiffe://%s/bench/renew/%d/%d", trustDomain, run, w)
}

func mintRenewToken(m *token.Minter, id string) (string, error) {
	now := time.Now()
	return m.Mint(token.Claims{Identity: id, Profile: "service", Issuer: "bench", IssuedAt: now, Expiry: now.Add(time.Hour)})
}

// InProcessRenew renews through s's authority as the API does: the chain
// the handshake would present, and one connection memo per worker.
func InProcessRenew(s *Server, alg keys.Algorithm, mode string) (RenewTarget, error) {
	pool, err := newKeyPool(alg, mode)
	if err != nil {
		return RenewTarget{}, err
	}
	src := netip.MustParseAddr("127.0.0.1")
	run := time.Now().UnixNano()
	return RenewTarget{Mode: "in-process", Measured: s.measured(),
		NewWorker: func(ctx context.Context, w int) (RenewWorker, error) {
			key, err := keys.Generate(alg, rand.Reader)
			if err != nil {
				return nil, err
			}
			tok, err := mintRenewToken(s.Minter, renewIdentity("example.org", run, w))
			if err != nil {
				return nil, err
			}
			csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
			if err != nil {
				return nil, err
			}
			iss, err := s.Authority.Enroll(ctx, authority.EnrollRequest{Token: tok, CSR: csr, Source: src})
			if err != nil {
				return nil, err
			}
			csrOf, err := renewCSRs(mode, key, pool)
			if err != nil {
				return nil, err
			}
			chain := append([]*x509.Certificate{iss.Certificate}, iss.Chain...)
			memo := new(authority.ConnMemo)
			return func(ctx context.Context, i int) error {
				peer, err := s.Authority.AuthenticateRenewal(ctx, memo, chain, src)
				if err != nil {
					return err
				}
				_, err = s.Authority.Renew(ctx, authority.RenewRequest{Peer: peer, CSR: csrOf(i), KeepKey: mode == RenewKeep, Source: src})
				return err
			}, nil
		},
	}, nil
}

// RemoteRenew renews over the API of the server at url, trusting roots,
// with identities in trustDomain enrolled with tokens minter makes. Each
// worker is a client of its own, with its own connection and credential.
func RemoteRenew(url string, roots *x509.CertPool, trustDomain string, minter *token.Minter, alg keys.Algorithm, mode, conn string) (RenewTarget, error) {
	if conn == ConnNew && mode == RenewNew {
		return RenewTarget{}, fmt.Errorf("bench: a renewal on a new connection keeps its key: use key %s or %s with it", RenewKeep, RenewKeepCSR)
	}
	anon, err := client.New(client.Config{Server: url, Roots: roots})
	if err != nil {
		return RenewTarget{}, err
	}
	pool, err := newKeyPool(alg, mode)
	if err != nil {
		return RenewTarget{}, err
	}
	// PEM is the client's work, done before the clock starts.
	poolPEM := make([]string, len(pool))
	for i, der := range pool {
		poolPEM[i] = csrPEM(der)
	}
	run := time.Now().UnixNano()
	return RenewTarget{Mode: "server", Measured: Measured{Server: url, Store: url},
		NewWorker: func(ctx context.Context, w int) (RenewWorker, error) {
			key, err := keys.Generate(alg, rand.Reader)
			if err != nil {
				return nil, err
			}
			tok, err := mintRenewToken(minter, renewIdentity(trustDomain, run, w))
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
			keyDER, err := x509.MarshalPKCS8PrivateKey(key)
			if err != nil {
				return nil, err
			}
			keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
			// connect is a client of its own, and so a connection of its
			// own, presenting the certificate of resp.
			connect := func(resp *client.CertificateResponse) (*client.Client, error) {
				cert, err := tls.X509KeyPair([]byte(resp.Certificate+resp.Chain), keyPEM)
				if err != nil {
					return nil, err
				}
				return client.New(client.Config{Server: url, Roots: roots, Certificate: &cert})
			}
			c, err := connect(resp)
			if err != nil {
				return nil, err
			}
			csrOf, err := renewCSRs(mode, key, pool)
			if err != nil {
				return nil, err
			}
			var own string
			if mode == RenewKeepCSR {
				own = csrPEM(csrOf(0))
			}
			return func(ctx context.Context, i int) error {
				req := client.CertificateRequest{KeepKey: mode == RenewKeep}
				switch mode {
				case RenewKeepCSR:
					req.CSR = own
				case RenewNew:
					req.CSR = poolPEM[i%len(poolPEM)]
				}
				resp, err := c.Renew(ctx, req)
				if err != nil || conn != ConnNew {
					return err
				}
				next, err := connect(resp)
				if err != nil {
					return err
				}
				c.Close()
				c = next
				return nil
			}, nil
		},
	}, nil
}

func csrPEM(der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}
