package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mica-pki/mica/internal/api"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/token"
	"github.com/mica-pki/mica/mtls"
	"github.com/mica-pki/mica/revocation"
)

// LiveRevocationResult is what `mica bench revoke-live` prints.
type LiveRevocationResult struct {
	Store       string  `json:"store"`
	Connections int     `json:"connections"`
	Clients     int     `json:"clients"`
	Revocations int     `json:"revocations"`
	Closed      int     `json:"closed"`
	Missing     int     `json:"missing"`
	Early       int     `json:"closed_before_their_revocation"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	MaxMs       float64 `json:"max_ms"`
	LoadAverage string  `json:"load_average"`
	Note        string  `json:"note"`
}

// LiveRevocation measures the promise that a revocation reaches
// live connections, not only new handshakes: an mTLS HTTP server built with
// the mtls package holds many kept-alive client connections; each client
// certificate in turn is revoked through the real authority, store and
// push feed, and the time from the store's commit to each of its
// connections being closed by the server is recorded.
// conns connections are spread over clients certificates; s must run the
// revocation outputs (Options.Revocation).
func LiveRevocation(ctx context.Context, s *Server, conns, clients int) (*LiveRevocationResult, error) {
	if clients < 1 || conns < clients {
		return nil, errors.New("bench revoke-live: clients must be at least 1 and connections at least clients")
	}
	if s.Feed == nil {
		return nil, errors.New("bench revoke-live: the server runs no revocation feed (open it with Options.Revocation)")
	}
	var committed atomic.Int64
	s.OnRevocation(func() { committed.Store(time.Now().UnixNano()) })
	apiURL, stopAPI, err := serveTLS(s, api.New(api.Config{Authority: s.Authority, TrustDomain: "example.org", Feed: s.Feed,
		Logger: slog.New(slog.DiscardHandler)}))
	if err != nil {
		return nil, err
	}
	defer stopAPI()

	// The feed, followed as a service would: over mTLS with a credential
	// mica issued (the admin's, here).
	admin := s.Admin
	roots := []*x509.Certificate{s.Root}
	pool := x509.NewCertPool()
	pool.AddCert(s.Root)
	ready := make(chan struct{})
	var readyOnce sync.Once
	sub, err := revocation.NewSubscriber(revocation.Config{URL: apiURL + "/v1/revocations/feed",
		TLS:     &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, Certificates: []tls.Certificate{admin}},
		OnReset: func(revocation.SnapshotInfo) { readyOnce.Do(func() { close(ready) }) }})
	if err != nil {
		return nil, err
	}
	subCtx, stopSub := context.WithCancel(ctx)
	defer stopSub()
	go sub.Run(subCtx)

	// The server under test and its clients, all issued by the authority.
	creds, err := enrollCredentials(ctx, s, clients+1)
	if err != nil {
		return nil, err
	}
	server, clientCreds := creds[0], creds[1:]
	addr, stopServer, err := serveLiveBench(ctx, server, roots, sub.Set())
	if err != nil {
		return nil, err
	}
	defer stopServer()
	select {
	case <-ready:
	case <-time.After(time.Minute):
		return nil, errors.New("bench revoke-live: no snapshot from the revocation feed in a minute")
	case <-ctx.Done():
		return nil, ctx.Err()
	}

	// Open every connection and make one request on each; then each
	// connection waits, reading, for the server to close it.
	type liveConn struct {
		client int
		closed atomic.Int64 // unix nanoseconds; 0 while open
	}
	live := make([]*liveConn, conns)
	var wg sync.WaitGroup
	var openErr atomic.Pointer[error]
	for i := range live {
		lc := &liveConn{client: i % clients}
		live[i] = lc
		c, err := openLiveConn(addr, clientCreds[lc.client], roots)
		if err != nil {
			return nil, fmt.Errorf("bench revoke-live: opening connection %d: %w", i+1, err)
		}
		wg.Go(func() {
			defer c.Close()
			var buf [1]byte
			if _, err := c.Read(buf[:]); err == nil {
				e := errors.New("the server wrote on an idle connection")
				openErr.Store(&e)
			}
			lc.closed.Store(time.Now().UnixNano())
		})
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	res := &LiveRevocationResult{Store: s.Store, Connections: conns, Clients: clients, Revocations: clients,
		Note: "one revocation at a time through the in-process authority (SQLite or PostgreSQL), the push feed over loopback mTLS to a revocation.Subscriber, and an mtls server tracking its connections (Verifier.Run); latency is from the store's commit to the server closing each connection of the revoked certificate, as the client sees it"}
	var lat []time.Duration
	for ci, cred := range clientCreds {
		if _, err := s.Authority.Revoke(ctx, benchAdmin, cred.serial, 1, netip.Addr{}); err != nil {
			return nil, err
		}
		start := committed.Load()
		wait := time.Now().Add(10 * time.Second)
		for {
			done := true
			for _, lc := range live {
				if lc.client == ci && lc.closed.Load() == 0 {
					done = false
					break
				}
			}
			if done || time.Now().After(wait) || ctx.Err() != nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
		for _, lc := range live {
			at := lc.closed.Load()
			switch {
			case lc.client == ci && at == 0:
				res.Missing++
			case lc.client == ci:
				lat = append(lat, time.Duration(at-start))
			case lc.client > ci && at != 0:
				res.Early++ // a bystander lost its connection
			}
		}
	}
	stopServer()
	wg.Wait()
	if e := openErr.Load(); e != nil {
		return nil, *e
	}
	slices.Sort(lat)
	res.Closed = len(lat)
	res.P50Ms, res.P99Ms = Ms(Percentile(lat, 0.50)), Ms(Percentile(lat, 0.99))
	if len(lat) > 0 {
		res.MaxMs = Ms(lat[len(lat)-1])
	}
	res.LoadAverage = LoadAverage()
	return res, nil
}

// WriteText prints the result for a reader.
func (res *LiveRevocationResult) WriteText(w io.Writer) {
	fmt.Fprintf(w, "revocation of live connections (%s): %d kept-alive mTLS connections over %d client certificates, each revoked in turn\n",
		res.Store, res.Connections, res.Clients)
	fmt.Fprintf(w, "commit → connection closed: p50 %.2f ms, p99 %.2f ms, max %.2f ms; %d closed, %d missing, %d bystanders closed early\n",
		res.P50Ms, res.P99Ms, res.MaxMs, res.Closed, res.Missing, res.Early)
	fmt.Fprintf(w, "load average: %s\n", res.LoadAverage)
	fmt.Fprintln(w, res.Note)
}

// liveCred is a credential the benchmark enrolled, with its serial.
type liveCred struct {
	cert   tls.Certificate
	serial string
}

// enrollCredentials enrolls n identities through the authority (the
// service profile: clientAuth and serverAuth), keys made here.
func enrollCredentials(ctx context.Context, s *Server, n int) ([]liveCred, error) {
	out := make([]liveCred, n)
	for i := range out {
		key, err := keys.Generate(keys.Default, rand.Reader)
		if err != nil {
			return nil, err
		}
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		if err != nil {
			return nil, err
		}
		now := time.Now()
		tok, err := s.Minter.Mint(token.Claims{Identity: fmt.Sprintf("spiffe://example.org/bench/live/%d", i), Profile: "service",
			Issuer: "bench", IssuedAt: now, Expiry: now.Add(time.Hour)})
		if err != nil {
			return nil, err
		}
		iss, err := s.Authority.Enroll(ctx, authority.EnrollRequest{Token: tok, CSR: csr, Source: netip.MustParseAddr("127.0.0.1")})
		if err != nil {
			return nil, err
		}
		c := tls.Certificate{Certificate: [][]byte{iss.Certificate.Raw}, PrivateKey: key, Leaf: iss.Certificate}
		for _, ic := range iss.Chain {
			c.Certificate = append(c.Certificate, ic.Raw)
		}
		out[i] = liveCred{cert: c, serial: iss.Record.Serial}
	}
	return out, nil
}

// serveLiveBench serves HTTP over mTLS with a Verifier that follows set,
// tracks every connection and closes those of revoked clients.
func serveLiveBench(ctx context.Context, cred liveCred, roots []*x509.Certificate, set *revocation.Set) (string, func(), error) {
	src := staticSource{cert: &cred.cert, roots: roots}
	v, err := mtls.NewVerifier(mtls.VerifierConfig{Roots: src, Authorize: mtls.AuthorizeTrustDomains("example.org"), Revocations: set})
	if err != nil {
		return "", nil, err
	}
	cfg, err := mtls.ServerConfig(mtls.Options{Source: src, Verifier: v})
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{TLSConfig: cfg, ConnState: v.ConnState, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(slog.DiscardHandler, slog.LevelError),
		Handler:  v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); v.Run(runCtx) }()
	go srv.ServeTLS(ln, "", "")
	var once sync.Once
	return ln.Addr().String(), func() { once.Do(func() { cancel(); <-done; srv.Close() }) }, nil
}

// openLiveConn opens a TLS connection with cred, makes one HTTP/1.1
// request and returns the connection, kept alive.
func openLiveConn(addr string, cred liveCred, roots []*x509.Certificate) (net.Conn, error) {
	cfg, err := mtls.ClientConfig(mtls.Options{Source: staticSource{cert: &cred.cert, roots: roots},
		Authorize: mtls.AuthorizeIDs("spiffe://example.org/bench/live/0")})
	if err != nil {
		return nil, err
	}
	cfg.ClientSessionCache = nil
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || br.Buffered() > 0 {
		c.Close()
		return nil, fmt.Errorf("the server answered %s", resp.Status)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}
