package mtls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mica-pki/mica/identity"
)

// A handshake judges a peer once; a connection may live for hours. These
// are the Verifier's means to keep judging it: connections accepted by its
// configs are tracked (ConnState on servers, Transport on clients), and Run
// closes every tracked connection whose peer the revocation feed or a CRL
// refuses from then on, as soon as the change arrives. Middleware refuses
// each request of a refused peer, for connections that are not tracked or
// not yet closed.

// liveConns is the registry of tracked connections, by *tls.Conn.
type liveConns struct {
	conns sync.Map // *tls.Conn → *liveConn
	n     atomic.Int64
}

// liveConn is a tracked connection and the verified peer on it.
type liveConn struct {
	conn   *tls.Conn
	side   string
	chain  []*x509.Certificate
	id     identity.Identity
	closed atomic.Bool
}

// pruneEvery is how often Run forgets tracked connections found closed
// that nobody untracked (client connections closed by their transport).
const pruneEvery = time.Minute

// Run keeps tracked connections honest until ctx ends: whenever the
// revocation feed's Set or the CRLs change, it closes every tracked
// connection whose peer is now revoked, or has a name on the deny list.
// Without Run, Middleware still refuses their requests.
func (v *Verifier) Run(ctx context.Context) error {
	prune := time.NewTicker(pruneEvery)
	defer prune.Stop()
	for {
		// Ask for the next change before looking, so that a change made
		// while sweeping wakes the next sweep.
		var setChanged, crlChanged <-chan struct{}
		if v.cfg.Revocations != nil {
			setChanged = v.cfg.Revocations.Changed()
		}
		if v.cfg.CRL != nil {
			crlChanged = v.cfg.CRL.Changed()
		}
		v.sweep(false)
		select {
		case <-ctx.Done():
			return nil
		case <-setChanged:
		case <-crlChanged:
		case <-prune.C:
			v.sweep(true)
		}
	}
}

// Tracked is the number of connections being watched.
func (v *Verifier) Tracked() int { return int(v.live.n.Load()) }

// sweep closes the tracked connections of refused peers and, with prune,
// forgets those already closed.
func (v *Verifier) sweep(prune bool) {
	v.live.conns.Range(func(_, val any) bool {
		lc := val.(*liveConn)
		if rej := v.revoked(lc.chain, lc.id, false); rej != nil {
			v.closeLive(lc, rej)
		} else if prune && connClosed(lc.conn) {
			v.untrack(lc.conn)
		}
		return true
	})
}

// track starts watching a connection whose handshake completed, unless it
// is watched already; a peer refused by now is closed at once.
func (v *Verifier) track(c *tls.Conn, side string) {
	if _, ok := v.live.conns.Load(c); ok {
		return
	}
	cs := c.ConnectionState()
	if !cs.HandshakeComplete {
		return
	}
	p, rej := v.verifiedChain(cs.PeerCertificates, v.usagesFor(side))
	lc := &liveConn{conn: c, side: side, chain: p.chain, id: p.id}
	if rej != nil {
		// Not a connection of this Verifier's configs, or one whose chain
		// no longer verifies: either way not one to keep open.
		v.closeLive(lc, rej)
		return
	}
	if _, loaded := v.live.conns.LoadOrStore(c, lc); loaded {
		return
	}
	v.live.n.Add(1)
	// Stored before this check, so a change after it wakes a sweep that
	// sees the connection.
	if rej := v.revoked(lc.chain, lc.id, false); rej != nil {
		v.closeLive(lc, rej)
	}
}

func (v *Verifier) untrack(c *tls.Conn) {
	if _, ok := v.live.conns.LoadAndDelete(c); ok {
		v.live.n.Add(-1)
	}
}

// closeLive closes the connection under TLS: a blocked read or write
// fails at once, and the server or transport that owns the connection
// cleans up as after any network error. (tls.Conn.Close would first wait
// to send an alert behind a write that may be blocked.)
func (v *Verifier) closeLive(lc *liveConn, rej *RejectError) {
	v.untrack(lc.conn)
	if !lc.closed.CompareAndSwap(false, true) {
		return
	}
	// Counted first, so that whoever sees the connection close sees it
	// counted.
	v.metrics.ConnectionClosed(rej.Reason)
	lc.conn.NetConn().Close()
	v.log.Info("mtls: live connection closed", slog.String("side", lc.side), slog.String("reason", string(rej.Reason)),
		slog.String("identity", rej.Identity.String()), slog.String("remote", lc.conn.RemoteAddr().String()),
		slog.String("error", rej.Err.Error()))
}

// connClosed reports whether the socket under c is closed. A connection
// that cannot tell is reported open.
func connClosed(c *tls.Conn) bool {
	sc, ok := c.NetConn().(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	return rc.Control(func(uintptr) {}) != nil
}

// ConnState is an http.Server.ConnState hook that tracks the server's TLS
// connections from their first request until they close, so that Run
// closes those of peers revoked later (HTTP/1.1 keep-alive and HTTP/2
// alike). Chain it when the server has a hook of its own.
func (v *Verifier) ConnState(c net.Conn, state http.ConnState) {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return
	}
	switch state {
	case http.StateActive:
		v.track(tc, sideServer)
	case http.StateClosed, http.StateHijacked:
		v.untrack(tc)
	}
}

// VerifyRequest judges the client of an HTTP request again, now: the
// chain (from the cache when it verified before), revocation, deny list and
// the Verifier's Authorizer. A server uses it (or Middleware) so that a
// client refused since its handshake gets no more answers on the
// connections it holds. The error is a *RejectError, counted in
// mica_mtls_requests_refused_total.
func (v *Verifier) VerifyRequest(r *http.Request) (Peer, error) {
	var certs []*x509.Certificate
	if r.TLS != nil {
		certs = r.TLS.PeerCertificates
	}
	p, rej := v.check(certs, v.usagesFor(sideServer), v.cfg.Authorize)
	if rej != nil {
		v.metrics.RequestRefused(rej.Reason)
		v.log.Info("mtls: request refused", slog.String("reason", string(rej.Reason)),
			slog.String("identity", rej.Identity.String()), slog.String("error", rej.Err.Error()))
		return Peer{}, rej
	}
	return p.peer(), nil
}

// Middleware refuses, with 403, every request whose client this Verifier
// would refuse now (revoked, denied, expired, no longer authorized; see
// VerifyRequest), and passes the others to next. A refused HTTP/1.1
// connection is closed after the answer.
func (v *Verifier) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := v.VerifyRequest(r); err != nil {
			w.Header().Set("Connection", "close")
			http.Error(w, "forbidden: the client certificate is refused ("+string(err.(*RejectError).Reason)+")", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Transport wraps an http.Transport whose TLSClientConfig is a config of
// this Verifier (ClientConfig), so that its connections are tracked from
// the first request on each: Run then closes those to servers revoked
// later, and a request about to be sent over a connection whose server is
// refused by now fails (the transport retries it on a new connection when
// it may, whose handshake refuses the server).
func (v *Verifier) Transport(rt http.RoundTripper) http.RoundTripper {
	return &trackingTransport{v: v, next: rt}
}

type trackingTransport struct {
	v    *Verifier
	next http.RoundTripper
}

func (t *trackingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		if tc, ok := info.Conn.(*tls.Conn); ok {
			t.v.track(tc, sideClient)
		}
	}}
	ctx := httptrace.WithClientTrace(r.Context(), trace)
	return t.next.RoundTrip(r.WithContext(ctx))
}

// CloseIdleConnections passes the call on, so http.Client.CloseIdleConnections
// reaches the wrapped transport.
func (t *trackingTransport) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
