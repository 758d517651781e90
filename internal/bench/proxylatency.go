package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/mica-pki/mica/internal/proxy"
)

// proxyLatencySection measures what `mica proxy` adds to a request: the
// same client, keep-alive connections and a small GET, to the backend
// directly and through an inbound proxy in front of it.
func proxyLatencySection() handshakeSection {
	return handshakeSection{name: "proxy", run: benchProxyLatency}
}

// proxyLatencyCase is one way of reaching the backend.
type proxyLatencyCase struct {
	Path      string  `json:"path"`
	Requests  int     `json:"requests"`
	Errors    int     `json:"errors"`
	PerSecond float64 `json:"requests_per_second"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`

	seconds float64
	lat     []time.Duration
	url     string
	client  *http.Client
}

type proxyLatencyResult struct {
	Concurrency int                 `json:"concurrency"`
	Cases       []*proxyLatencyCase `json:"cases"`
	// Added is the proxy's cost per request: through the proxy minus
	// direct plain HTTP, and minus direct mTLS (the backend terminating
	// mTLS itself with the mtls package).
	AddedP50Ms        float64 `json:"added_p50_ms"`
	AddedP99Ms        float64 `json:"added_p99_ms"`
	AddedVsMTLSP50Ms  float64 `json:"added_vs_mtls_p50_ms"`
	AddedVsMTLSP99Ms  float64 `json:"added_vs_mtls_p99_ms"`
	ResumedHandshakes float64 `json:"resumed_client_connections"`
}

func benchProxyLatency(ctx context.Context, b *handshakeBench) (any, []string, error) {
	backend := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write([]byte("ok"))
	})
	plainAddr, stopPlain, err := serveLoopback(backend, nil)
	if err != nil {
		return nil, nil, err
	}
	defer stopPlain()
	mtlsAddr, stopMTLS, err := serveLoopback(backend, b.mtlsServer.Clone())
	if err != nil {
		return nil, nil, err
	}
	defer stopMTLS()

	roots := []*x509.Certificate{b.root}
	p, err := proxy.New(proxy.Options{Source: staticSource{cert: &b.server, roots: roots}, Revocations: b.revoked,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, nil, err
	}
	defer p.Shutdown()
	if err := p.Apply([]proxy.ListenerConfig{{Name: "bench", Mode: proxy.Inbound, Listen: "127.0.0.1:0",
		Backend: "http://" + plainAddr, Allow: &proxy.Rule{IDPrefixes: []string{"spiffe://example.org/bench/"}}}}); err != nil {
		return nil, nil, err
	}
	proxyAddr := p.Listeners()[0].Addr.String()

	// Connections are kept alive; a new one resumes its TLS session.
	var resumed, conns atomic.Int64
	newClient := func(tlsCfg *tls.Config) *http.Client {
		tr := &http.Transport{MaxIdleConnsPerHost: 4 * b.concurrency, IdleConnTimeout: time.Minute, Proxy: nil}
		if tlsCfg != nil {
			tlsCfg = tlsCfg.Clone()
			tlsCfg.ClientSessionCache = tls.NewLRUClientSessionCache(4 * b.concurrency)
			verify := tlsCfg.VerifyConnection
			tlsCfg.VerifyConnection = func(cs tls.ConnectionState) error {
				if cs.DidResume {
					resumed.Add(1)
				}
				conns.Add(1)
				return verify(cs)
			}
			tr.TLSClientConfig = tlsCfg
		}
		return &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}
	cases := []*proxyLatencyCase{
		{Path: "direct, plain HTTP", url: "http://" + plainAddr + "/", client: newClient(nil)},
		{Path: "direct, mTLS (mtls package)", url: "https://" + mtlsAddr + "/", client: newClient(b.mtlsClient)},
		{Path: "through mica proxy (mTLS in, HTTP out)", url: "https://" + proxyAddr + "/", client: newClient(b.mtlsClient)},
	}
	for _, c := range cases {
		defer c.client.CloseIdleConnections()
	}
	get := func(c *proxyLatencyCase) error {
		resp, err := c.client.Get(c.url)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s answered %s", c.Path, resp.Status)
		}
		return nil
	}
	for round := -1; round < b.rounds; round++ {
		order := slices.Clone(cases)
		if round%2 != 0 {
			slices.Reverse(order)
		}
		for _, c := range order {
			d := b.slot
			if round < 0 {
				d = min(b.slot, time.Second) // warm-up: connections open, code paged in
			}
			start := time.Now()
			lat, failed, firstErr := Loop(ctx, b.concurrency, d, func(int, int) error { return get(c) })
			if firstErr != nil {
				return nil, nil, fmt.Errorf("%s: %w", c.Path, firstErr)
			}
			if round >= 0 {
				c.seconds += time.Since(start).Seconds()
				c.lat = append(c.lat, lat...)
				c.Errors += failed
			}
		}
	}
	if ctx.Err() != nil {
		return nil, nil, ctx.Err()
	}
	res := proxyLatencyResult{Concurrency: b.concurrency, Cases: cases}
	for _, c := range cases {
		slices.Sort(c.lat)
		c.Requests = len(c.lat)
		c.PerSecond = float64(c.Requests) / c.seconds
		c.P50Ms, c.P99Ms = Ms(Percentile(c.lat, 0.50)), Ms(Percentile(c.lat, 0.99))
	}
	plain, direct, through := cases[0], cases[1], cases[2]
	res.AddedP50Ms, res.AddedP99Ms = through.P50Ms-plain.P50Ms, through.P99Ms-plain.P99Ms
	res.AddedVsMTLSP50Ms, res.AddedVsMTLSP99Ms = through.P50Ms-direct.P50Ms, through.P99Ms-direct.P99Ms
	if n := conns.Load(); n > 0 {
		res.ResumedHandshakes = float64(resumed.Load()) / float64(n)
	}

	lines := []string{fmt.Sprintf("proxy: GET of a 2-byte body, keep-alive (HTTP/1.1), concurrency %d, %d rounds of %s per path",
		b.concurrency, b.rounds, b.slot),
		fmt.Sprintf("  %-40s %10s %9s %9s %7s", "", "requests/s", "p50 ms", "p99 ms", "errors")}
	for _, c := range cases {
		lines = append(lines, fmt.Sprintf("  %-40s %10.0f %9.3f %9.3f %7d", c.Path, c.PerSecond, c.P50Ms, c.P99Ms, c.Errors))
	}
	lines = append(lines,
		fmt.Sprintf("  added by the proxy per request: p50 %+.3f ms, p99 %+.3f ms (vs direct plain HTTP); p50 %+.3f ms, p99 %+.3f ms (vs direct mTLS)",
			res.AddedP50Ms, res.AddedP99Ms, res.AddedVsMTLSP50Ms, res.AddedVsMTLSP99Ms),
		fmt.Sprintf("  %d client TLS connections opened, %.0f%% of them resumed", conns.Load(), 100*res.ResumedHandshakes))
	return res, lines, nil
}

// serveLoopback serves h on loopback, over TLS when cfg is set.
func serveLoopback(h http.Handler, cfg *tls.Config) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, TLSConfig: cfg}
	go func() {
		if cfg != nil {
			srv.ServeTLS(ln, "", "")
		} else {
			srv.Serve(ln)
		}
	}()
	return ln.Addr().String(), func() { srv.Close() }, nil
}
