package bench

import (
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"time"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/token"
)

// IssueResult is what `mica bench issue` reports.
type IssueResult struct {
	Mode        string  `json:"mode"` // in-process or server
	Server      string  `json:"server,omitempty"`
	Store       string  `json:"store"`
	KeyType     string  `json:"key_type"`
	KeyBackend  string  `json:"ca_key_backend,omitempty"` // where the intermediate's key is: file or pkcs11
	Concurrency int     `json:"concurrency"`
	DurationSec float64 `json:"duration_seconds"`
	Issued      int     `json:"issued"`
	Errors      int     `json:"errors"`
	PerSecond   float64 `json:"certificates_per_second"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	MaxMs       float64 `json:"max_ms"`
	// ServerCPUMs and ClientCPUMs are as in RenewResult.
	ServerCPUMs    float64 `json:"server_cpu_ms_per_certificate"`
	ClientCPUMs    float64 `json:"client_cpu_ms_per_certificate,omitempty"`
	PeakRSSBytes   int64   `json:"server_peak_rss_bytes"`
	LoadBefore     string  `json:"load_average_before"`
	LoadAfter      string  `json:"load_average_after"`
	TraceRatio     float64 `json:"trace_ratio"`
	FirstError     string  `json:"first_error,omitempty"`
	ClientWorkNote string  `json:"note"`
}

// IssueTarget is what enrollments go to: an in-process Server or a running
// one.
type IssueTarget struct {
	Mode string
	Measured
	// KeyBackend is where the issuing CA's key is, when known.
	KeyBackend string
	Minter     *token.Minter
	Enroll     func(ctx context.Context, token string, csr []byte) error
}

// InProcess enrolls through s's authority directly.
func InProcess(s *Server) IssueTarget {
	src := netip.MustParseAddr("127.0.0.1")
	return IssueTarget{Mode: "in-process", Measured: s.measured(), KeyBackend: s.KeyBackend, Minter: s.Minter,
		Enroll: func(ctx context.Context, tok string, csr []byte) error {
			_, err := s.Authority.Enroll(ctx, authority.EnrollRequest{Token: tok, CSR: csr, Source: src})
			return err
		},
	}
}

// Remote enrolls over the API of the server at url with c, mints tokens
// with the server's token key, and asks admin for the server's memory.
func Remote(url string, c, admin *client.Client, minter *token.Minter) IssueTarget {
	measured := Measured{Server: url, Store: url, PeakRSS: func() int64 {
		st, err := admin.Stats(context.Background())
		if err != nil {
			return 0
		}
		return st.PeakRSSBytes
	}}
	return IssueTarget{Mode: "server", Measured: measured, Minter: minter,
		Enroll: func(ctx context.Context, tok string, csr []byte) error {
			_, err := c.Enroll(ctx, tok, client.CertificateRequest{CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))})
			return err
		},
	}
}

// IssueConfig is one `mica bench issue` run.
type IssueConfig struct {
	Target      IssueTarget
	Concurrency int
	Duration    time.Duration
	// Warmup is an unmeasured run first; its rate sizes the token pool.
	Warmup  time.Duration
	KeyType keys.Algorithm
	// CPUProfile, when set, receives a CPU profile of the measured run.
	CPUProfile io.Writer
	TraceRatio float64
}

// Issue measures enrollments: tokens are minted and keys made before the
// clock starts (admin and client work), so latency is the enrollment call
// alone.
func Issue(ctx context.Context, cfg IssueConfig) (IssueResult, error) {
	res := IssueResult{Mode: cfg.Target.Mode, Server: cfg.Target.Server, Store: cfg.Target.Store, KeyType: string(cfg.KeyType), KeyBackend: cfg.Target.KeyBackend, Concurrency: cfg.Concurrency,
		TraceRatio:     cfg.TraceRatio,
		ClientWorkNote: "keys are pre-generated and tokens pre-minted before the clock starts (client and admin work); latency is the enrollment call alone"}
	csrs, err := csrPool(cfg.KeyType, nil)
	if err != nil {
		return res, err
	}
	run := func(d time.Duration, tokens *tokenSource) ([]time.Duration, int, error) {
		return Loop(ctx, cfg.Concurrency, d, func(w, i int) error {
			tok, err := tokens.next()
			if err != nil {
				return err
			}
			// A token from the pre-minted pool costs a channel receive, so
			// it is inside the timing without moving it.
			return cfg.Target.Enroll(ctx, tok, csrs[(w*7919+i)%len(csrs)])
		})
	}
	premint := 1000
	if cfg.Warmup > 0 {
		tokens, err := newTokenSource(cfg.Target.Minter, 0)
		if err != nil {
			return res, err
		}
		lat, _, err := run(cfg.Warmup, tokens)
		if err != nil {
			return res, fmt.Errorf("bench: warm-up failed: %w", err)
		}
		premint = int(float64(len(lat))/cfg.Warmup.Seconds()*cfg.Duration.Seconds()*1.3) + 64*cfg.Concurrency
	}
	tokens, err := newTokenSource(cfg.Target.Minter, premint)
	if err != nil {
		return res, err
	}
	m, err := startMeter(cfg.Target.CPU, cfg.CPUProfile)
	if err != nil {
		return res, err
	}
	start := time.Now()
	lat, failed, firstErr := run(cfg.Duration, tokens)
	elapsed := time.Since(start)
	if res.ServerCPUMs, res.ClientCPUMs, err = m.stop(len(lat)); err != nil {
		return res, err
	}
	res.LoadBefore, res.LoadAfter = m.loadBefore, LoadAverage()
	res.DurationSec, res.Issued, res.Errors = elapsed.Seconds(), len(lat), failed
	res.PerSecond = float64(len(lat)) / elapsed.Seconds()
	if firstErr != nil {
		res.FirstError = firstErr.Error()
	}
	slices.Sort(lat)
	res.P50Ms, res.P99Ms = Ms(Percentile(lat, 0.50)), Ms(Percentile(lat, 0.99))
	if len(lat) > 0 {
		res.MaxMs = Ms(lat[len(lat)-1])
	}
	res.PeakRSSBytes = cfg.Target.peakRSS()
	return res, nil
}

// WriteText prints r for people.
func (r IssueResult) WriteText(w io.Writer) {
	where := r.Mode
	if r.Server != "" {
		where += " (" + r.Server + ")"
	}
	fmt.Fprintf(w, "bench issue: %s, store %s, %s keys, concurrency %d, %.1fs\n", where, r.Store, r.KeyType, r.Concurrency, r.DurationSec)
	if r.KeyBackend != "" {
		fmt.Fprintf(w, "  CA keys     %s\n", r.KeyBackend)
	}
	fmt.Fprintf(w, "  issued      %d (%d errors)\n", r.Issued, r.Errors)
	writeCommon(w, r.PerSecond, r.P50Ms, r.P99Ms, r.MaxMs, r.Mode, r.ServerCPUMs, r.ClientCPUMs, r.PeakRSSBytes, r.LoadBefore, r.LoadAfter)
	if r.TraceRatio > 0 {
		fmt.Fprintf(w, "  tracing     %.0f%% of issuances, exported over OTLP/HTTP to loopback\n", r.TraceRatio*100)
	}
	if r.FirstError != "" {
		fmt.Fprintf(w, "  first error %s\n", r.FirstError)
	}
}
