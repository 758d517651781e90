package acme

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/netip"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/ratelimit"
	"github.com/mica-pki/mica/internal/store"
)

// Authority is the part of the core the ACME door calls.
type Authority interface {
	IssueACME(ctx context.Context, req authority.ACMERequest) (*authority.Issued, error)
	RevokeACME(ctx context.Context, req authority.ACMERevocation) (store.Certificate, error)
	CheckIdentity(profile string, id identity.Identity) error
	// Bundle gives the intermediates, for the chain of a certificate found
	// after a crash (recover.go).
	Bundle() (roots, intermediates []*x509.Certificate)
}

// Store is where ACME state lives, and the inventory that ARI and the
// recovery of orders left processing read.
type Store interface {
	store.ACMEStore
	Certificate(ctx context.Context, serial string) (store.Certificate, error)
	Events(ctx context.Context, f store.EventFilter) ([]store.Event, error)
}

// Config wires the ACME door. Authority, Store and Settings.Profile are
// required.
type Config struct {
	Authority Authority
	Store     Store
	Settings  Settings
	Logger    *slog.Logger
	Clock     func() time.Time
	Rand      io.Reader
	// SharedLimits, when set, keeps the order rate limits where every
	// replica takes from them (ratelimit/pgbuckets); otherwise they are
	// this process's.
	SharedLimits ratelimit.Backend
}

// Server is the ACME door; its Handler serves everything under Prefix.
type Server struct {
	auth     Authority
	store    Store
	set      Settings
	log      *slog.Logger
	now      func() time.Time
	rand     io.Reader
	base     string // Settings.URL: every URL the door hands out starts with it
	eab      map[string][]byte
	nonces   *nonces
	limits   *limiter
	validate *validator
	// validationWait is how long a challenge response waits for its
	// validation: the constant, but for tests that must not poll.
	validationWait time.Duration
}

// Prefix is where the ACME door is mounted on the API listener.
const Prefix = "/acme/"

// Lifetimes of protocol objects.
const (
	orderLifetime = 24 * time.Hour
	// validationWait is how long a challenge response waits for its
	// validation before answering "processing": long enough that a quick
	// validation is answered at once, so clients need not poll.
	validationWait = 2 * time.Second
)

// New checks cfg and returns the ACME door.
func New(cfg Config) (*Server, error) {
	if cfg.Authority == nil || cfg.Store == nil {
		return nil, errors.New("acme: Authority and Store are required")
	}
	set, eab, err := cfg.Settings.check()
	if err != nil {
		return nil, err
	}
	s := &Server{auth: cfg.Authority, store: cfg.Store, set: set, base: set.URL, log: cfg.Logger, now: cfg.Clock, rand: cfg.Rand, eab: eab}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.rand == nil {
		s.rand = rand.Reader
	}
	s.nonces = newNonces(s.store, s.now, s.rand)
	s.limits = newLimiter(set.OrdersPerAccountPerHour, set.OrdersPerIdentifierPerHour, s.now, cfg.SharedLimits)
	s.validate = newValidator(set)
	s.validationWait = validationWait
	return s, nil
}

// Handler routes the ACME endpoints (RFC 8555 §7.1).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /acme/directory", s.directory)
	mux.HandleFunc("HEAD /acme/new-nonce", s.newNonce)
	mux.HandleFunc("GET /acme/new-nonce", s.newNonce)
	mux.HandleFunc("GET /acme/renewal-info/{id}", s.renewalInfo)
	for path, h := range map[string]handler{
		"new-account":         s.newAccount,
		"account/{id}":        s.account,
		"account/{id}/orders": s.orders,
		"key-change":          s.keyChange,
		"new-order":           s.newOrder,
		"order/{id}":          s.order,
		"order/{id}/finalize": s.finalize,
		"authz/{id}":          s.authz,
		"challenge/{id}":      s.challenge,
		"cert/{id}":           s.certificate,
		"revoke-cert":         s.revokeCert,
	} {
		mux.Handle("POST "+Prefix+path, s.post(h))
	}
	mux.HandleFunc(Prefix, func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, newProblem(errMalformed, http.StatusNotFound, "no ACME resource %s %s: start at %sdirectory", r.Method, r.URL.Path, Prefix))
	})
	return mux
}

// request is an authenticated POST: its signer and payload.
type request struct {
	http    *http.Request
	url     string // the URL the client signed, checked against the one it used
	base    string // the door's configured URL, Settings.URL
	payload []byte
	acct    *account         // set when signed by an account (kid)
	jwk     *jose.JSONWebKey // set when signed by a key in the header (jwk)
	sig     *signedRequest
}

// response is what a handler answers: a JSON body (or raw bytes) with a
// status and headers.
type response struct {
	status   int
	body     any
	raw      []byte
	ctype    string
	location string
	links    []string
	retry    int
}

type handler func(ctx context.Context, r *request) (*response, *problem)

// post runs every POST through the same checks, in §6.2's order: shape of
// the JWS, the key (jwk, or kid → an account that is valid), the
// signature, the URL it was signed for, then the nonce; only then the
// handler. Every answer, refusals included, carries a fresh nonce.
func (s *Server) post(h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, hr *http.Request) {
		ctx := hr.Context()
		w.Header().Set("Link", `<`+s.base+`directory>;rel="index"`)
		if n, err := s.nonces.make(ctx); err == nil {
			w.Header().Set("Replay-Nonce", n)
		} else {
			s.log.LogAttrs(ctx, slog.LevelError, "acme: could not make a nonce", slog.String("error", err.Error()))
		}
		resp, p := s.serve(ctx, hr, h)
		if p != nil {
			if p.Status >= 500 {
				s.log.LogAttrs(ctx, slog.LevelError, "acme request failed", slog.String("path", hr.URL.Path), slog.String("detail", p.Detail))
			}
			writeProblem(w, p)
			return
		}
		s.write(w, resp)
	})
}

// serve authenticates a POST. The URL it was sent to is the configured
// URL and the request's path, never its Host header, so that a request
// cannot name or create objects under another URL than the door's own.
func (s *Server) serve(ctx context.Context, hr *http.Request, h handler) (*response, *problem) {
	if ct, _, _ := mime.ParseMediaType(hr.Header.Get("Content-Type")); ct != "application/jose+json" {
		return nil, newProblem(errMalformed, http.StatusUnsupportedMediaType, "requests must have Content-Type application/jose+json, not %q", ct)
	}
	body, err := io.ReadAll(io.LimitReader(hr.Body, maxJWSBytes+1))
	if err != nil {
		return nil, malformed("could not read the request body: %v", err)
	}
	if len(body) > maxJWSBytes {
		return nil, newProblem(errMalformed, http.StatusRequestEntityTooLarge, "the request body is over %d bytes", maxJWSBytes)
	}
	sig, p := parseJWS(body, true)
	if p != nil {
		return nil, p
	}
	r := &request{http: hr, url: s.base + strings.TrimPrefix(hr.URL.Path, Prefix), base: s.base, sig: sig, jwk: sig.jwk}
	key := sig.jwk
	if key == nil {
		acct, p := s.accountFromKID(ctx, sig.header.KID)
		if p != nil {
			return nil, p
		}
		r.acct, key = acct, acct.jwk
	}
	if r.payload, p = sig.verify(key); p != nil {
		return nil, p
	}
	if sig.header.URL != r.url {
		return nil, unauthorized("the JWS was signed for url %q but sent to %q: sign the URL you send to", sig.header.URL, r.url)
	}
	if p := s.nonces.use(ctx, sig.header.Nonce); p != nil {
		return nil, p
	}
	return h(ctx, r)
}

func (s *Server) accountFromKID(ctx context.Context, kid string) (*account, *problem) {
	id, ok := strings.CutPrefix(kid, s.base+"account/")
	if !ok || id == "" || strings.Contains(id, "/") {
		return nil, newProblem(errAccountDoesNotExist, http.StatusBadRequest, "kid %q is not an account URL of this server (%saccount/…)", kid, s.base)
	}
	acct, err := s.loadAccount(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, newProblem(errAccountDoesNotExist, http.StatusBadRequest, "no account %s: create one with newAccount", kid)
	}
	if err != nil {
		return nil, internal(err)
	}
	if acct.Status != statusValid {
		return nil, unauthorized("account %s is %s and can do nothing more: create a new account", kid, acct.Status)
	}
	return acct, nil
}

func (s *Server) write(w http.ResponseWriter, resp *response) {
	if resp.location != "" {
		w.Header().Set("Location", resp.location)
	}
	for _, l := range resp.links {
		w.Header().Add("Link", l)
	}
	if resp.retry > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(resp.retry))
	}
	w.Header().Set("Cache-Control", "no-store")
	status := resp.status
	if status == 0 {
		status = http.StatusOK
	}
	if resp.raw != nil {
		w.Header().Set("Content-Type", resp.ctype)
		w.WriteHeader(status)
		w.Write(resp.raw)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(resp.body)
}

func (s *Server) newNonce(w http.ResponseWriter, r *http.Request) {
	n, err := s.nonces.make(r.Context())
	if err != nil {
		s.log.LogAttrs(r.Context(), slog.LevelError, "acme: could not make a nonce", slog.String("error", err.Error()))
		writeProblem(w, internal(err))
		return
	}
	w.Header().Set("Replay-Nonce", n)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Link", `<`+s.base+`directory>;rel="index"`)
	if r.Method == http.MethodGet {
		w.WriteHeader(http.StatusNoContent)
	}
}

func (s *Server) directory(w http.ResponseWriter, r *http.Request) {
	b := s.base
	meta := map[string]any{"externalAccountRequired": s.set.ExternalAccountRequired}
	if s.set.TermsOfService != "" {
		meta["termsOfService"] = s.set.TermsOfService
	}
	if s.set.Website != "" {
		meta["website"] = s.set.Website
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"newNonce": b + "new-nonce", "newAccount": b + "new-account", "newOrder": b + "new-order",
		"revokeCert": b + "revoke-cert", "keyChange": b + "key-change", "renewalInfo": b + "renewal-info/",
		"meta": meta,
	})
}

// newID makes an object ID that sorts in creation order (so listings are
// oldest first in every engine) and cannot be guessed.
func (s *Server) newID() (string, error) {
	var b [10]byte
	if _, err := io.ReadFull(s.rand, b[:]); err != nil {
		return "", fmt.Errorf("acme: reading randomness for an ID: %w", err)
	}
	return fmt.Sprintf("%012x", s.now().UnixMilli()) + hex.EncodeToString(b[:]), nil
}

// source is the client's address, for the audit record.
func source(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr()
}

// accountURL is an account's URL: its kid, and the principal the authority
// records as "acme:" and this URL.
func (s *Server) accountURL(id string) string { return s.base + "account/" + id }
