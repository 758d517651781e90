// Package api is mica's REST front door, /v1 over HTTPS. Handlers are thin:
// they decode and bound the request, call the authority, and encode the
// answer. This is the one place where the authority's errors become
// application/problem+json (see problem.go).
package api

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/duration"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/strictjson"
)

// Limits on what a request may carry. A CSR is a few hundred bytes; RSA-4096
// with every SAN a profile allows fits easily in 16 KiB.
const (
	MaxBodyBytes = 64 << 10
	maxCSRBytes  = 16 << 10
	maxTTLLen    = 32
	maxNameLen   = 2048
	maxListLimit = 10000
	// defaultListLimit is a page's size when the request names none.
	defaultListLimit = 1000
)

// Config wires the API.
type Config struct {
	Authority   *authority.Authority
	TrustDomain string
	Logger      *slog.Logger
	// Stats reports the server's own figures for GET /v1/server/stats.
	Stats func() client.Stats
	// Ready reports whether the server can serve (e.g. the store answers).
	Ready func(ctx context.Context) error
	// Feed, when set, serves GET /v1/revocations/feed to any caller the
	// authority authenticates: revocations are public facts (the CRL says
	// them too), but the stream is held open, so it is not for anonymous
	// callers.
	Feed http.Handler
	// Webhooks are the configured webhook endpoints, shown with their
	// delivery state by GET /v1/webhooks.
	Webhooks []WebhookEndpoint
}

type server struct {
	cfg Config
	log *slog.Logger
}

// New returns the API's handler.
func New(cfg Config) http.Handler {
	s := &server{cfg: cfg, log: cfg.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /v1/bundle", s.bundle)
	mux.HandleFunc("POST /v1/tokens", s.authed(s.createToken))
	mux.HandleFunc("POST /v1/certificates", s.enroll)
	mux.HandleFunc("POST /v1/certificates/renew", s.renewing(s.renew))
	mux.HandleFunc("GET /v1/certificates", s.authed(s.listCertificates))
	mux.HandleFunc("GET /v1/certificates/{serial}", s.authed(s.getCertificate))
	mux.HandleFunc("POST /v1/certificates/{serial}/revoke", s.authed(s.revoke))
	mux.HandleFunc("GET /v1/server/stats", s.authed(s.stats))
	mux.HandleFunc("POST /v1/jwt-svids", s.authed(s.jwtSVID))
	mux.HandleFunc("GET /v1/jwt-bundle", s.jwtBundle)
	s.auditRoutes(mux)
	s.reportRoutes(mux)
	s.governanceRoutes(mux)
	s.discoveryRoutes(mux)
	s.consoleRoutes(mux)
	mux.HandleFunc("POST /v1/certificates/revoke", s.authed(s.revokeMatching))
	mux.HandleFunc("POST /v1/identities/deny", s.authed(s.deny))
	mux.HandleFunc("POST /v1/identities/allow", s.authed(s.deny))
	mux.HandleFunc("GET /v1/identities/denied", s.authed(s.deniedIdentities))
	if cfg.Feed != nil {
		mux.HandleFunc("GET /v1/revocations/feed", func(w http.ResponseWriter, r *http.Request) {
			p, ok := s.authenticate(w, r, s.cfg.Authority.AuthenticateConn)
			if !ok {
				return
			}
			if err := s.cfg.Authority.Authorize(p, authority.ActFeedSubscribe, authority.Resource{}); err != nil {
				s.fail(w, r, err)
				return
			}
			cfg.Feed.ServeHTTP(w, r)
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, http.StatusNotFound, "not-found", "Not Found", fmt.Sprintf("no endpoint %s %s: see the API reference in the README", r.Method, r.URL.Path))
	})
	return mux
}

func (s *server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	io.WriteString(w, "ok\n")
}

func (s *server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Ready != nil {
		if err := s.cfg.Ready(r.Context()); err != nil {
			writeProblem(w, http.StatusServiceUnavailable, "not-ready", "Not Ready", err.Error())
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain")
	io.WriteString(w, "ready\n")
}

func (s *server) bundle(w http.ResponseWriter, _ *http.Request) {
	roots, inters := s.cfg.Authority.Bundle()
	b := client.Bundle{TrustDomain: s.cfg.TrustDomain}
	for _, c := range roots {
		b.Roots = append(b.Roots, pemCert(c))
	}
	for _, c := range inters {
		b.Intermediates = append(b.Intermediates, pemCert(c))
	}
	writeJSON(w, http.StatusOK, b)
}

func (s *server) createToken(w http.ResponseWriter, r *http.Request, p authority.Principal) {
	var req client.TokenRequest
	if !decode(w, r, &req) {
		return
	}
	if len(req.Identity) > maxNameLen || len(req.Profile) > 256 {
		writeProblem(w, http.StatusBadRequest, "field-too-long", "Field Too Long", "identity or profile is longer than any this server accepts")
		return
	}
	ttl, ok := parseTTL(w, req.TTL)
	if !ok {
		return
	}
	var network netip.Prefix
	if req.CIDR != "" {
		var err error
		if network, err = netip.ParsePrefix(req.CIDR); err != nil {
			writeProblem(w, http.StatusBadRequest, "invalid-request", "Invalid Request", fmt.Sprintf("cidr %q is not a network like 10.0.0.0/8", req.CIDR))
			return
		}
	}
	tok, err := s.cfg.Authority.CreateToken(r.Context(), p, authority.TokenRequest{
		Identity: req.Identity, Profile: req.Profile, TTL: ttl, Network: network, Source: remoteAddr(r), Approval: req.Approval,
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, client.TokenResponse{
		Token: tok.Raw, ID: tok.Claims.ID, Identity: tok.Claims.Identity, Profile: tok.Claims.Profile, ExpiresAt: tok.Claims.Expiry,
	})
}

func (s *server) enroll(w http.ResponseWriter, r *http.Request) {
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || raw == "" {
		writeProblem(w, http.StatusUnauthorized, "token-missing", "Token Missing", "enrollment needs a one-time token in the Authorization: Bearer header: get one with `mica token create`")
		return
	}
	s.issue(w, r, false, func(req certificateRequest) (*authority.Issued, error) {
		return s.cfg.Authority.Enroll(r.Context(), authority.EnrollRequest{Token: raw, CSR: req.csr, TTL: req.ttl, Source: remoteAddr(r)})
	})
}

func (s *server) renew(w http.ResponseWriter, r *http.Request, p authority.Principal) {
	s.issue(w, r, true, func(req certificateRequest) (*authority.Issued, error) {
		return s.cfg.Authority.Renew(r.Context(), authority.RenewRequest{Peer: p, CSR: req.csr, KeepKey: req.keepKey, TTL: req.ttl, Source: remoteAddr(r)})
	})
}

// issue is the shared body of enroll and renew: read the CSR (or, for a
// renewal, keep_key) and TTL, ask the authority through call, answer with
// the certificate.
func (s *server) issue(w http.ResponseWriter, r *http.Request, renewal bool, call func(certificateRequest) (*authority.Issued, error)) {
	var body client.CertificateRequest
	if !decode(w, r, &body) {
		return
	}
	req, ok := parseCertificateRequest(w, body, renewal)
	if !ok {
		return
	}
	iss, err := call(req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, IssuedResponse(iss))
}

// listCertificates answers GET /v1/certificates?identity=&profile=&status=
// &expiring_within=&limit=&cursor=&pem=: one page of the inventory in its
// order (expiry, then serial), and the cursor of the next page when there
// is one (cursor.go).
func (s *server) listCertificates(w http.ResponseWriter, r *http.Request, p authority.Principal) {
	q := newQuery(r)
	if q.v.Has("offset") {
		// An old client paging by offset would read the first page over
		// and over: refuse rather than ignore.
		q.errs = append(q.errs, "offset is not supported: read the next page with cursor= set to the previous answer's next")
	}
	n := int(q.int("limit", 0, maxListLimit))
	if n == 0 {
		n = defaultListLimit
	}
	key := listKey{identity: q.v.Get("identity"), profile: q.v.Get("profile"), status: q.v.Get("status")}
	if len(key.identity) > maxNameLen || len(key.profile) > maxNameLen {
		q.errs = append(q.errs, "identity or profile is longer than any this server accepts")
	}
	f := store.Filter{Identity: key.identity, Profile: key.profile}
	switch key.status {
	case "", "active", "revoked", "expired":
		f.Status = store.Status(key.status)
	default:
		q.errs = append(q.errs, fmt.Sprintf("status %q is not one of active, revoked, expired", key.status))
	}
	if v := q.v.Get("expiring_within"); v != "" {
		d, err := duration.Parse(v)
		if err != nil || d <= 0 || len(v) > maxTTLLen {
			q.errs = append(q.errs, fmt.Sprintf("expiring_within %q is not a positive duration like 7d or 36h", v))
		}
		key.expiringWithin = d
		f.ExpiresBefore = time.Now().Add(d)
	}
	if q.fail(w) {
		return
	}
	if cs := q.v["cursor"]; len(cs) > 0 {
		var err error
		if len(cs) > 1 {
			err = errors.New("cursor is given more than once: send the one from the previous answer's next")
		} else if cs[0] != "" {
			f.After, err = decodeCursor(cs[0], key)
		}
		if err != nil {
			writeProblem(w, http.StatusBadRequest, "invalid-cursor", "Invalid Cursor", err.Error())
			return
		}
	}
	// One row more than the page tells whether another page follows, so
	// the last page says so (no next) instead of leading to an empty one.
	f.Limit = n + 1
	certs, err := s.cfg.Authority.ListCertificates(r.Context(), p, f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var out client.CertificateList
	if len(certs) > n {
		certs = certs[:n]
		out.Next = encodeCursor(key, store.PositionOf(certs[n-1]))
	}
	out.Certificates = make([]client.Certificate, 0, len(certs))
	withPEM := q.v.Get("pem") == "true"
	for _, c := range certs {
		out.Certificates = append(out.Certificates, inventoryRecord(c, withPEM))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) getCertificate(w http.ResponseWriter, r *http.Request, p authority.Principal) {
	serial := r.PathValue("serial")
	rec, err := s.cfg.Authority.Certificate(r.Context(), p, serial)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, inventoryRecord(rec, true))
}

func (s *server) revoke(w http.ResponseWriter, r *http.Request, p authority.Principal) {
	serial := r.PathValue("serial")
	var req client.RevokeRequest
	if !decode(w, r, &req) {
		return
	}
	code, err := client.ReasonCode(req.Reason)
	if err != nil {
		writeProblem(w, http.StatusBadRequest, "invalid-request", "Invalid Request", err.Error())
		return
	}
	rec, err := s.cfg.Authority.Revoke(r.Context(), p, serial, code, remoteAddr(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, inventoryRecord(rec, false))
}

func (s *server) revokeMatching(w http.ResponseWriter, r *http.Request, p authority.Principal) {
	var req client.RevokeMatchingRequest
	if !decode(w, r, &req) {
		return
	}
	code, err := client.ReasonCode(req.Reason)
	if err != nil {
		writeProblem(w, http.StatusBadRequest, "invalid-request", "Invalid Request", err.Error())
		return
	}
	var recs []store.Certificate
	switch {
	case (req.Fingerprint == "") == (req.Identity == ""):
		writeProblem(w, http.StatusBadRequest, "invalid-request", "Invalid Request", "name exactly one of fingerprint or identity (or revoke by serial at /v1/certificates/{serial}/revoke)")
		return
	case len(req.Fingerprint) > 128 || len(req.Identity) > maxNameLen:
		writeProblem(w, http.StatusBadRequest, "field-too-long", "Field Too Long", "fingerprint or identity is longer than any this server accepts")
		return
	case req.Fingerprint != "":
		var rec store.Certificate
		rec, err = s.cfg.Authority.RevokeByFingerprint(r.Context(), p, req.Fingerprint, code, remoteAddr(r))
		recs = []store.Certificate{rec}
	default:
		recs, err = s.cfg.Authority.RevokeIdentity(r.Context(), p, req.Identity, code, remoteAddr(r))
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := client.CertificateList{Certificates: make([]client.Certificate, 0, len(recs))}
	for _, c := range recs {
		out.Certificates = append(out.Certificates, inventoryRecord(c, false))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) deny(w http.ResponseWriter, r *http.Request, p authority.Principal) {
	var req client.DenyRequest
	if !decode(w, r, &req) {
		return
	}
	if len(req.Identity) > maxNameLen {
		writeProblem(w, http.StatusBadRequest, "field-too-long", "Field Too Long", "identity is longer than any this server accepts")
		return
	}
	change := s.cfg.Authority.Deny
	if strings.HasSuffix(r.URL.Path, "/allow") {
		change = s.cfg.Authority.Allow
	}
	d, err := change(r.Context(), p, req.Identity, req.Reason, remoteAddr(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, denialRecord(d))
}

func (s *server) deniedIdentities(w http.ResponseWriter, r *http.Request, p authority.Principal) {
	list, err := s.cfg.Authority.DeniedIdentities(r.Context(), p)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := client.DenialList{Denied: make([]client.Denial, 0, len(list))}
	for _, d := range list {
		out.Denied = append(out.Denied, denialRecord(d))
	}
	writeJSON(w, http.StatusOK, out)
}

func denialRecord(d store.Denial) client.Denial {
	return client.Denial{Identity: d.Identity, At: d.Time, Actor: d.Actor, Reason: d.Detail, EventSeq: d.EventSeq}
}

func (s *server) stats(w http.ResponseWriter, r *http.Request, p authority.Principal) {
	if err := s.cfg.Authority.Authorize(p, authority.ActServerStats, authority.Resource{}); err != nil {
		s.fail(w, r, err)
		return
	}
	var st client.Stats
	if s.cfg.Stats != nil {
		st = s.cfg.Stats()
	}
	writeJSON(w, http.StatusOK, st)
}

// authedHandler serves callers who must present a credential; authed runs
// it with the principal their client certificate authenticated, after
// answering everyone else with the authority's refusal.
type authedHandler func(w http.ResponseWriter, r *http.Request, p authority.Principal)

func (s *server) authed(h authedHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if p, ok := s.authenticate(w, r, s.cfg.Authority.AuthenticateConn); ok {
			h(w, r, p)
		}
	}
}

// renewing is authed for the renewal endpoint, whose certificate's status
// the authority checks when the renewal commits.
func (s *server) renewing(h authedHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if p, ok := s.authenticate(w, r, s.cfg.Authority.AuthenticateRenewal); ok {
			h(w, r, p)
		}
	}
}

// authenticator is how a route has the authority judge its caller.
type authenticator func(context.Context, *authority.ConnMemo, []*x509.Certificate, netip.Addr) (authority.Principal, error)

// authenticate hands the client certificate chain from the TLS handshake to
// the authority, which judges it, with the connection's memo when the
// server was given ConnContext.
func (s *server) authenticate(w http.ResponseWriter, r *http.Request, judge authenticator) (authority.Principal, bool) {
	var chain []*x509.Certificate
	if r.TLS != nil {
		chain = r.TLS.PeerCertificates
	}
	memo, _ := r.Context().Value(connMemoKey{}).(*authority.ConnMemo)
	p, err := judge(r.Context(), memo, chain, remoteAddr(r))
	if err != nil {
		s.fail(w, r, err)
		return p, false
	}
	return p, true
}

type connMemoKey struct{}

// ConnContext is for the http.Server.ConnContext of the listener that
// serves the API: it gives each connection the memo in which the
// authority keeps the client chain it verified, so that a client
// certificate is verified once per connection instead of on every request.
func ConnContext(ctx context.Context, _ net.Conn) context.Context {
	return context.WithValue(ctx, connMemoKey{}, new(authority.ConnMemo))
}

// certificateRequest is a client.CertificateRequest checked and decoded.
type certificateRequest struct {
	csr     []byte // DER; nil when keepKey
	keepKey bool
	ttl     time.Duration
}

func parseCertificateRequest(w http.ResponseWriter, req client.CertificateRequest, renewal bool) (certificateRequest, bool) {
	out := certificateRequest{keepKey: req.KeepKey}
	switch {
	case req.KeepKey && !renewal:
		writeProblem(w, http.StatusBadRequest, "invalid-request", "Invalid Request", "keep_key is for renewal only: an enrollment sends a CSR for its new key")
		return out, false
	case req.KeepKey && req.CSR != "":
		writeProblem(w, http.StatusBadRequest, "invalid-request", "Invalid Request", "send either a CSR or keep_key, not both: keep_key renews the current key without a CSR")
		return out, false
	case req.KeepKey:
	case len(req.CSR) > maxCSRBytes:
		writeProblem(w, http.StatusRequestEntityTooLarge, "field-too-long", "Field Too Long", fmt.Sprintf("csr is %d bytes; at most %d are accepted", len(req.CSR), maxCSRBytes))
		return out, false
	default:
		block, rest := pem.Decode([]byte(req.CSR))
		if block == nil || block.Type != "CERTIFICATE REQUEST" || len(strings.TrimSpace(string(rest))) > 0 {
			detail := `csr must be exactly one PEM block of type "CERTIFICATE REQUEST"`
			if renewal && req.CSR == "" {
				detail += `, or set "keep_key": true to renew the current key`
			}
			writeProblem(w, http.StatusBadRequest, "bad-csr", "Bad CSR", detail)
			return out, false
		}
		out.csr = block.Bytes
	}
	var ok bool
	out.ttl, ok = parseTTL(w, req.TTL)
	return out, ok
}

func parseTTL(w http.ResponseWriter, s string) (time.Duration, bool) {
	if s == "" {
		return 0, true
	}
	d, err := duration.Parse(s)
	if len(s) > maxTTLLen || err != nil || d < 0 {
		writeProblem(w, http.StatusBadRequest, "invalid-request", "Invalid Request", fmt.Sprintf("ttl %q is not a duration like 1h, 90m or 7d", s))
		return 0, false
	}
	return d, true
}

// decode reads one JSON object of bounded size strictly (package
// strictjson: no unknown field, no key twice, no trailing data), so that a
// typo is an error rather than silently ignored.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	return decodeLimit(w, r, v, MaxBodyBytes)
}

// decodeLimit is decode for a body of at most limit bytes.
func decodeLimit(w http.ResponseWriter, r *http.Request, v any, limit int64) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		writeProblem(w, http.StatusUnsupportedMediaType, "unsupported-media-type", "Unsupported Media Type", "send the body as application/json")
		return false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err == nil {
		err = strictjson.Unmarshal(body, v)
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeProblem(w, http.StatusRequestEntityTooLarge, "body-too-large", "Body Too Large", fmt.Sprintf("request body is over %d bytes", limit))
			return false
		}
		writeProblem(w, http.StatusBadRequest, "malformed-body", "Malformed Body", "request body is not the expected JSON: "+err.Error())
		return false
	}
	return true
}

// IssuedResponse shapes an issuance as the API answers it.
func IssuedResponse(iss *authority.Issued) client.CertificateResponse {
	var chain, roots strings.Builder
	for _, c := range iss.Chain {
		chain.WriteString(caPEM(c))
	}
	for _, c := range iss.Roots {
		roots.WriteString(caPEM(c))
	}
	return client.CertificateResponse{
		Certificate: pemCert(iss.Certificate), Chain: chain.String(), Bundle: roots.String(),
		Serial: iss.Record.Serial, Identity: iss.Record.Identity, Profile: iss.Record.Profile,
		NotBefore: iss.Record.NotBefore, NotAfter: iss.Record.NotAfter, EventSeq: iss.Record.EventSeq,
		LeafIndex: iss.LeafIndex,
	}
}

func inventoryRecord(c store.Certificate, withPEM bool) client.Certificate {
	out := client.Certificate{
		Serial: c.Serial, Fingerprint: c.Fingerprint, Identity: c.Identity, SANs: c.SANs, Profile: c.Profile,
		Requester: c.Requester, Owner: c.Owner, SourceAddr: c.SourceAddr, NotBefore: c.NotBefore, NotAfter: c.NotAfter,
		Issuer: c.Issuer, Status: string(c.Status), RenewedFrom: c.RenewedFrom, EventSeq: c.EventSeq,
	}
	if !c.ChainStartedAt.IsZero() && c.ChainStartedAt.Unix() > 0 {
		cs := c.ChainStartedAt
		out.ChainStartedAt = &cs
	}
	if c.Status == store.StatusRevoked {
		at := c.RevokedAt
		out.RevokedAt, out.RevocationReason = &at, client.ReasonName(c.RevocationReason)
	}
	if withPEM {
		out.PEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.DER}))
	}
	return out
}

func pemCert(c *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}

// caPEMs holds the PEM of the CA certificates that issuance responses
// carry: the same few answer every issuance until a rotation, so each is
// encoded once. Kept by pointer, as the CA set hands them out; emptied
// when full, which takes dozens of rotations in one process.
var caPEMs struct {
	sync.Mutex
	m map[*x509.Certificate]string
}

const maxCAPEMs = 64

// caPEM is pemCert for a CA certificate.
func caPEM(c *x509.Certificate) string {
	caPEMs.Lock()
	defer caPEMs.Unlock()
	if p, ok := caPEMs.m[c]; ok {
		return p
	}
	if caPEMs.m == nil || len(caPEMs.m) >= maxCAPEMs {
		caPEMs.m = make(map[*x509.Certificate]string)
	}
	p := pemCert(c)
	caPEMs.m[c] = p
	return p
}

func remoteAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
