package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/mtls"
	"github.com/mica-pki/mica/revocation"
)

// Options are what every listener shares.
type Options struct {
	// Source is the proxy's own credential and trust bundle; required.
	Source mtls.Source
	// Revocations (the feed's Set) and CRL reject revoked peers in the
	// handshake, on both sides, and close the open connections of peers
	// revoked later (while Run runs); either may be nil.
	Revocations *revocation.Set
	CRL         *mtls.CRLChecker
	// CRLPolicy and CRLWait say what happens when CRL holds no valid,
	// fresh CRL for an issuer of a peer's path (mtls.VerifierConfig):
	// soft-fail (the default) accepts, hard-fail refuses.
	CRLPolicy mtls.CRLPolicy
	CRLWait   time.Duration
	// PinnedCAs, when set, accept only peers, clients and upstreams alike,
	// whose verified path goes through one of these CAs.
	PinnedCAs []mtls.SPKIPin
	// HandshakeMetrics counts the handshakes; Metrics the requests. Both
	// may be nil.
	HandshakeMetrics mtls.Metrics
	Metrics          *Metrics
	Logger           *slog.Logger
	// DrainTimeout bounds how long a removed listener, or every listener
	// at shutdown, waits for requests in flight; default 30s.
	DrainTimeout time.Duration
}

// Limits of the client side of every listener.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 64 << 10
)

// Proxy runs the listeners of one config and reloads them.
type Proxy struct {
	o         Options
	log       *slog.Logger
	verifier  *mtls.Verifier
	serverTLS *tls.Config
	self      selfID

	mu       sync.Mutex // serializes Apply and Shutdown
	closed   bool
	servers  map[string]*server // by serverKey
	current  []ListenerConfig
	draining sync.WaitGroup
	failed   chan error
}

// server is one bound address; its handler is swapped by reloads.
type server struct {
	mode     Mode
	ln       net.Listener
	srv      *http.Server
	handler  atomic.Pointer[handler]
	stopping atomic.Bool
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.Load().ServeHTTP(w, r) }

// New checks the options; Apply starts listeners.
func New(o Options) (*Proxy, error) {
	if o.Source == nil {
		return nil, errors.New("proxy: Options.Source is required: the proxy's own credential (agent files or the Workload API)")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 30 * time.Second
	}
	// The handshake verifies the chain, usage and revocation; who may do
	// what is decided per request by the listener's rules, so that a
	// refused identity gets a 403 it can read rather than a TLS alert.
	// Outbound listeners give their own Authorizer (the upstream they
	// expect) to their client configs.
	anyVerified := mtls.AuthorizeFunc(func(identity.Identity) bool { return true })
	v, err := mtls.NewVerifier(mtls.VerifierConfig{Roots: o.Source, Authorize: anyVerified, Revocations: o.Revocations,
		CRL: o.CRL, CRLPolicy: o.CRLPolicy, CRLWait: o.CRLWait, PinnedCAs: o.PinnedCAs,
		Metrics: o.HandshakeMetrics, Logger: o.Logger})
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	tc, err := mtls.ServerConfig(mtls.Options{Source: o.Source, Verifier: v})
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	tc.NextProtos = []string{"h2", "http/1.1"}
	return &Proxy{o: o, log: o.Logger, verifier: v, serverTLS: tc, self: selfID{src: o.Source},
		servers: map[string]*server{}, failed: make(chan error, 1)}, nil
}

// Apply makes the listeners those of ls. The first call starts them; later
// calls reload: a listener whose address and mode are unchanged keeps its
// socket and connections and serves new requests with the new rules,
// backend and headers (requests in flight finish with the old ones); new
// addresses are bound; listeners no longer configured stop accepting and
// drain. An invalid config, or an address that cannot be bound, changes
// nothing.
func (p *Proxy) Apply(ls []ListenerConfig) error {
	if err := Validate(ls); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("proxy: shut down")
	}
	reuse := map[string]*http.Transport{}
	for _, s := range p.servers {
		h := s.handler.Load()
		reuse[h.key] = h.transport
	}
	handlers := make([]*handler, len(ls))
	for i, c := range ls {
		h, err := p.newHandler(c.withDefaults(), reuse)
		if err != nil {
			return err
		}
		handlers[i] = h
	}

	// Bind the addresses not held yet first, so that a failure leaves the
	// running listeners untouched.
	bound := map[string]net.Listener{}
	closeBound := func() {
		for _, ln := range bound {
			ln.Close()
		}
	}
	for _, c := range ls {
		if p.servers[serverKey(c)] != nil {
			continue
		}
		ln, err := net.Listen("tcp", c.Listen)
		if err != nil {
			closeBound()
			return fmt.Errorf("proxy: listener %q: cannot listen on %s: %w (is another process on it?)", c.Name, c.Listen, err)
		}
		bound[serverKey(c)] = ln
	}
	// An address whose mode changed must be released before it is bound
	// again: the one step here that can leave a listener down.
	for _, c := range ls {
		old := p.servers[serverKey(c)]
		if old == nil || old.mode == c.Mode {
			continue
		}
		p.drain(old)
		delete(p.servers, serverKey(c))
		ln, err := net.Listen("tcp", c.Listen)
		if err != nil {
			closeBound()
			return fmt.Errorf("proxy: listener %q: mode changed and %s could not be bound again: %w", c.Name, c.Listen, err)
		}
		bound[serverKey(c)] = ln
	}

	next := make(map[string]*server, len(ls))
	for i, c := range ls {
		if s := p.servers[serverKey(c)]; s != nil {
			s.handler.Store(handlers[i])
			next[serverKey(c)] = s
			p.log.Info("proxy: listener reloaded", slog.String("listener", c.Name), slog.String("mode", string(c.Mode)),
				slog.String("address", s.ln.Addr().String()))
			continue
		}
		s := p.start(c.Mode, bound[serverKey(c)], handlers[i])
		next[serverKey(c)] = s
		p.log.Info("proxy: listener started", slog.String("listener", c.Name), slog.String("mode", string(c.Mode)),
			slog.String("address", s.ln.Addr().String()))
	}
	for addr, s := range p.servers {
		if next[addr] == nil {
			p.log.Info("proxy: listener removed, draining", slog.String("listener", s.handler.Load().cfg.Name))
			p.drain(s)
		}
	}
	// Transports no handler uses any more: their idle connections go now,
	// busy ones when their requests finish and the idle timeout passes.
	kept := map[*http.Transport]bool{}
	for _, h := range handlers {
		kept[h.transport] = true
	}
	for _, t := range reuse {
		if !kept[t] {
			t.CloseIdleConnections()
		}
	}
	p.servers, p.current = next, append([]ListenerConfig(nil), ls...)
	return nil
}

// start serves one listener with its handler.
func (p *Proxy) start(mode Mode, ln net.Listener, h *handler) *server {
	s := &server{mode: mode, ln: ln}
	s.handler.Store(h)
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		// Refused handshakes are logged by mtls with their reason; what
		// net/http adds (handshake errors, panics) is detail.
		ErrorLog: slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}
	s.srv.Protocols = new(http.Protocols)
	s.srv.Protocols.SetHTTP1(true)
	serve := func() error { return s.srv.Serve(ln) }
	if mode == Inbound {
		// Tracked so that Run closes the connections of clients revoked
		// after their handshake; the handler re-verifies every request.
		s.srv.ConnState = p.verifier.ConnState
		s.srv.Protocols.SetHTTP2(true)
		s.srv.TLSConfig = p.serverTLS.Clone() // net/http adds to it
		serve = func() error { return s.srv.ServeTLS(ln, "", "") }
	}
	go func() {
		err := serve()
		if s.stopping.Load() || errors.Is(err, http.ErrServerClosed) {
			return
		}
		select {
		case p.failed <- fmt.Errorf("proxy: listener %q on %s stopped: %w", h.cfg.Name, ln.Addr(), err):
		default:
		}
	}()
	return s
}

// drain stops a server accepting now and lets its requests finish in the
// background, up to DrainTimeout.
func (p *Proxy) drain(s *server) {
	s.stopping.Store(true)
	s.ln.Close()
	p.draining.Add(1)
	go func() {
		defer p.draining.Done()
		ctx, cancel := context.WithTimeout(context.Background(), p.o.DrainTimeout)
		defer cancel()
		if err := s.srv.Shutdown(ctx); err != nil {
			s.srv.Close()
		}
	}()
}

// Listener is a running listener, with the address it is bound to.
type Listener struct {
	Name string
	Mode Mode
	Addr net.Addr
}

// Listeners lists the running listeners in config order.
func (p *Proxy) Listeners() []Listener {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Listener
	for _, c := range p.current {
		if s := p.servers[serverKey(c)]; s != nil {
			out = append(out, Listener{Name: c.Name, Mode: c.Mode, Addr: s.ln.Addr()})
		}
	}
	return out
}

// Run closes the connections, inbound and outbound, of peers revoked or
// denied after their handshake, until ctx ends or a listener fails; then it
// shuts down gracefully.
func (p *Proxy) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	live := make(chan struct{})
	go func() { defer close(live); p.verifier.Run(ctx) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-p.failed:
	}
	cancel()
	<-live
	p.Shutdown()
	return err
}

// Shutdown stops every listener accepting and waits, up to DrainTimeout,
// for the requests in flight.
func (p *Proxy) Shutdown() {
	p.mu.Lock()
	p.closed = true
	for _, s := range p.servers {
		p.drain(s)
	}
	p.servers = map[string]*server{}
	p.mu.Unlock()
	p.draining.Wait()
}
