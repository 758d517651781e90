package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/mtls"
)

// handler is one listener's behaviour under one config: what a request
// that starts now gets. A reload builds a new handler and swaps it in; a
// request in flight keeps the one it started with.
type handler struct {
	cfg     ListenerConfig
	log     *slog.Logger
	metrics *listenerMetrics
	// inbound
	rules rules
	strip stripper
	set   http.Header
	self  *selfID
	// both
	target    *url.URL
	transport *http.Transport
	key       string // what the transport was built from, to reuse it across reloads
	verifier  *mtls.Verifier
	rp        *httputil.ReverseProxy
}

// Connection settings toward backends and upstreams.
const (
	dialTimeout         = 10 * time.Second
	tlsHandshakeTimeout = 10 * time.Second
	idleConnTimeout     = 90 * time.Second
	maxIdleConnsPerHost = 64
	maxResponseHeader   = 1 << 20
)

// transportKey is what decides a listener's transport: when it is
// unchanged across a reload, the transport and its warm connections (and
// TLS sessions) are kept.
func transportKey(c ListenerConfig) string {
	if c.Mode == Inbound {
		return fmt.Sprintf("inbound %s %s", c.Backend, c.Timeout)
	}
	e := c.Expect
	return fmt.Sprintf("outbound %s %s %q %q %q", c.Upstream, c.Timeout, e.IDs, e.IDPrefixes, e.TrustDomains)
}

// newTransport keeps connections alive and never consults HTTP_PROXY: the
// proxy talks to exactly the backend or upstream it was configured with.
func newTransport(timeout time.Duration) *http.Transport {
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                  nil,
		DialContext:            d.DialContext,
		MaxIdleConns:           4 * maxIdleConnsPerHost,
		MaxIdleConnsPerHost:    maxIdleConnsPerHost,
		IdleConnTimeout:        idleConnTimeout,
		ResponseHeaderTimeout:  timeout,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: maxResponseHeader,
	}
}

// newHandler builds a listener's handler; reuse holds the transports of the
// config being replaced, by key.
func (p *Proxy) newHandler(c ListenerConfig, reuse map[string]*http.Transport) (*handler, error) {
	h := &handler{cfg: c, log: p.log.With(slog.String("listener", c.Name)), metrics: p.o.Metrics.forListener(c.Name, c.Mode),
		key: transportKey(c), verifier: p.verifier}
	raw := c.Backend
	if c.Mode == Outbound {
		raw = c.Upstream
	}
	var err error
	if h.target, err = url.Parse(raw); err != nil {
		return nil, fmt.Errorf("proxy: listener %q: %w", c.Name, err)
	}
	h.transport = reuse[h.key]
	if h.transport == nil {
		h.transport = newTransport(c.Timeout.D())
		if c.Mode == Outbound {
			tc, err := mtls.ClientConfig(mtls.Options{Source: p.o.Source, Verifier: p.verifier, Authorize: c.Expect.authorizer()})
			if err != nil {
				return nil, fmt.Errorf("proxy: listener %q: %w", c.Name, err)
			}
			// mtls.ClientConfig caches sessions, so reconnections resume.
			h.transport.TLSClientConfig = tc
			h.transport.TLSHandshakeTimeout = tlsHandshakeTimeout
			h.transport.ForceAttemptHTTP2 = true
		}
	}
	rewrite := h.rewriteOutbound
	if c.Mode == Inbound {
		h.rules = compileRules(c)
		h.strip = newStripper(c.StripHeaders, mapKeys(c.SetHeaders))
		h.set = http.Header{}
		for k, v := range c.SetHeaders {
			h.set.Set(k, v)
		}
		h.self = &p.self
		rewrite = h.rewriteInbound
	}
	var rt http.RoundTripper = h.transport
	if c.Mode == Outbound {
		// Tracked so that Run closes connections to an upstream revoked
		// after the handshake, and a request is never sent over one.
		rt = p.verifier.Transport(h.transport)
	}
	h.rp = &httputil.ReverseProxy{
		Rewrite:      rewrite,
		Transport:    rt,
		ErrorHandler: h.proxyError,
		ErrorLog:     slog.NewLogLogger(h.log.Handler(), slog.LevelWarn),
	}
	return h, nil
}

func mapKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// peerKey carries the verified peer from the authorization step to Rewrite.
type peerKey struct{}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	defer func() { h.metrics.request(sw.status(), time.Since(start).Seconds()) }()
	if r.Method == http.MethodConnect {
		http.Error(sw, "proxy: CONNECT is not supported", http.StatusMethodNotAllowed)
		return
	}
	if r.ContentLength > h.cfg.MaxBodyBytes {
		http.Error(sw, fmt.Sprintf("proxy: request body over %d bytes", h.cfg.MaxBodyBytes), http.StatusRequestEntityTooLarge)
		return
	}
	if r.Body != nil {
		r.Body = http.MaxBytesReader(sw, r.Body, h.cfg.MaxBodyBytes)
	}
	if h.cfg.Mode == Inbound {
		peer, ok := h.authorize(sw, r)
		if !ok {
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), peerKey{}, peer))
	}
	h.rp.ServeHTTP(sw, r)
}

// authorize answers 403 (or 400 for a path that could dodge a route) and
// returns false unless the listener's rules allow the verified peer.
func (h *handler) authorize(w http.ResponseWriter, r *http.Request) (mtls.Peer, bool) {
	// Judged again on every request: a client revoked or denied since its
	// handshake gets nothing more on the connections it holds.
	peer, err := h.verifier.VerifyRequest(r)
	if err != nil {
		h.metrics.deny()
		w.Header().Set("Connection", "close")
		http.Error(w, "forbidden: the client certificate is refused: "+string(rejectReason(err)), http.StatusForbidden)
		return peer, false
	}
	if len(h.rules.routes) > 0 && !canonicalPath(r.URL.Path, r.URL.EscapedPath()) {
		http.Error(w, "proxy: the request path is not canonical (dot or empty segments, encoded slashes or backslashes)", http.StatusBadRequest)
		return peer, false
	}
	allow, route := h.rules.forPath(r.URL.Path)
	err = errors.New("no rule allows this path")
	if allow != nil {
		err = allow(peer.Identity, r.TLS.PeerCertificates)
	}
	if err != nil {
		h.metrics.deny()
		h.log.Info("proxy: request refused", slog.String("identity", peer.Identity.Primary()),
			slog.String("route", route), slog.String("error", err.Error()))
		http.Error(w, "forbidden: "+peer.Identity.Primary()+" is not allowed here", http.StatusForbidden)
		return peer, false
	}
	return peer, true
}

// rewriteInbound forwards to the backend with the client's identity
// headers removed and the verified ones set. ReverseProxy has already
// removed the hop-by-hop headers, those the client's Connection header
// named, and the client's X-Forwarded-* headers.
func (h *handler) rewriteInbound(pr *httputil.ProxyRequest) {
	pr.SetURL(h.target)
	pr.SetXForwarded()
	h.strip.strip(pr.Out.Header)
	h.strip.strip(pr.Out.Trailer)
	peer := pr.In.Context().Value(peerKey{}).(mtls.Peer)
	setIdentity(pr.Out.Header, peer.Identity, peer.Certificate, h.self.get())
	for k, v := range h.set {
		pr.Out.Header[k] = v
	}
}

// rewriteOutbound forwards to the upstream; the proxy's identity is proved
// by its certificate, not by headers.
func (h *handler) rewriteOutbound(pr *httputil.ProxyRequest) {
	pr.SetURL(h.target)
}

// proxyError answers for a backend or upstream that did not: 413 for a
// body over the limit, 502 otherwise.
func (h *handler) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
		http.Error(w, fmt.Sprintf("proxy: request body over %d bytes", mbe.Limit), http.StatusRequestEntityTooLarge)
		return
	}
	if r.Context().Err() != nil {
		// The client gave up; nobody reads this answer.
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	h.metrics.upstreamError()
	what := "backend"
	if h.cfg.Mode == Outbound {
		what = "upstream"
	}
	h.log.Warn("proxy: "+what+" failed", slog.String(what, h.target.Host), slog.String("error", err.Error()))
	http.Error(w, "proxy: the "+what+" did not answer", http.StatusBadGateway)
}

// statusWriter remembers the final status for the metrics. Unwrap lets
// ReverseProxy flush and hijack through it.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 && code >= 200 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusWriter) status() int {
	if s.code == 0 {
		return http.StatusOK
	}
	return s.code
}

// selfID is the proxy's own SPIFFE ID for X-Forwarded-Client-Cert's By,
// read from the current certificate and remembered until it changes.
type selfID struct {
	src  mtls.Source
	last atomic.Pointer[selfIDEntry]
}

type selfIDEntry struct {
	cert *tls.Certificate
	id   string
}

func (s *selfID) get() string {
	c, err := s.src.Certificate()
	if err != nil || c == nil || len(c.Certificate) == 0 {
		return ""
	}
	if e := s.last.Load(); e != nil && e.cert == c {
		return e.id
	}
	leaf := c.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return ""
		}
	}
	var id string
	if ident, err := identity.FromCertificate(leaf); err == nil && !ident.SPIFFE.IsZero() {
		id = ident.SPIFFE.String()
	}
	s.last.Store(&selfIDEntry{cert: c, id: id})
	return id
}

func rejectReason(err error) mtls.Reason {
	var rej *mtls.RejectError
	if errors.As(err, &rej) {
		return rej.Reason
	}
	return mtls.ReasonBadChain
}
