package web

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mica-pki/mica/internal/authority"
)

// Prefix is where the console is mounted on the API listener.
const Prefix = "/ui/"

// Config wires the console.
type Config struct {
	Authority   *authority.Authority
	TrustDomain string
	// Metrics, when set, is the server's Prometheus registry: the overview
	// shows what it exports (inventory gauges, issuance counters, CRL,
	// OCSP, feed, audit log and CA figures). Without it the overview shows
	// what the authority answers alone.
	Metrics prometheus.Gatherer
	Logger  *slog.Logger
	// Clock is for what the console shows (ages, rates); the authority
	// keeps its own for what it decides.
	Clock func() time.Time
	// VerifyEvery is how often Run verifies the whole audit log; 0 means
	// every hour.
	VerifyEvery time.Duration
}

// Console is the web console: an http.Handler for Prefix, and Run for
// its background work.
type Console struct {
	cfg      Config
	log      *slog.Logger
	now      func() time.Time
	mux      *http.ServeMux
	pages    map[string]*page
	rates    *rateSampler
	timeline timelineCache
	verify   *verifier
}

// New checks cfg and returns the console.
func New(cfg Config) (*Console, error) {
	if cfg.Authority == nil {
		return nil, errors.New("web: Config.Authority is required")
	}
	c := &Console{cfg: cfg, log: cfg.Logger, now: cfg.Clock}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.cfg.VerifyEvery <= 0 {
		c.cfg.VerifyEvery = time.Hour
	}
	var err error
	if c.pages, err = loadPages(); err != nil {
		return nil, err
	}
	c.rates = &rateSampler{}
	c.verify = newVerifier(cfg.Authority, c.now, c.log)
	c.routes()
	return c, nil
}

func (c *Console) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /ui/static/{file}", c.static)
	m.HandleFunc("GET /ui/signin", c.signinPage)
	m.HandleFunc("POST /ui/signin", c.signin)
	m.HandleFunc("POST /ui/signout", c.action(c.signout))
	m.HandleFunc("GET /ui/{$}", c.authed(c.overview))
	m.HandleFunc("GET /ui/certificates", c.authed(c.inventory))
	m.HandleFunc("GET /ui/certificates/{serial}", c.authed(c.certificate))
	m.HandleFunc("POST /ui/certificates/{serial}/revoke", c.action(c.revoke))
	m.HandleFunc("GET /ui/timeline", c.authed(c.timelinePage))
	m.HandleFunc("GET /ui/revocations", c.authed(c.revocations))
	m.HandleFunc("POST /ui/identities/deny", c.action(c.denyOrAllow))
	m.HandleFunc("POST /ui/identities/allow", c.action(c.denyOrAllow))
	m.HandleFunc("GET /ui/audit", c.authed(c.audit))
	m.HandleFunc("POST /ui/audit/verify", c.action(c.verifyNow))
	m.HandleFunc("GET /ui/approvals", c.authed(c.approvals))
	m.HandleFunc("POST /ui/approvals/{id}/decide", c.action(c.decide))
	m.HandleFunc("GET /ui/report", c.authed(c.report))
	m.HandleFunc("GET /ui/report.csv", c.authed(c.reportCSV))
	m.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		c.fail(w, r, nil, http.StatusNotFound, "There is no such page in the console.")
	})
	c.mux = m
}

type nonceKey struct{}

// ServeHTTP sets the headers every answer carries, then routes. The
// Content-Security-Policy allows only the console's own stylesheet and
// images and the one script carrying this response's nonce: an injected
// inline script or handler does not run, and no page may frame the
// console or post its forms elsewhere.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	nonce := newNonce()
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'nonce-"+nonce+"'; style-src 'self'; img-src 'self'; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	// A sign-in link is in the URL: never send it to another origin as a
	// Referer. (no-referrer would also make the browser send "Origin:
	// null" on the console's own forms, which the Origin check refuses.)
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	if !strings.HasPrefix(r.URL.Path, "/ui/static/") {
		h.Set("Cache-Control", "no-store")
	}
	c.mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), nonceKey{}, nonce)))
}

func newNonce() string {
	b := make([]byte, 18)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func nonceOf(r *http.Request) string {
	n, _ := r.Context().Value(nonceKey{}).(string)
	return n
}

// Run does the console's background work until ctx ends: it records the
// end of sessions whose time ran out, samples the issuance counters for
// the overview's rates, and verifies the audit log every VerifyEvery (and
// when someone asks).
func (c *Console) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { c.verify.run(ctx, c.cfg.VerifyEvery) })
	t := time.NewTicker(30 * time.Second)
	defer func() { t.Stop(); wg.Wait() }()
	for {
		if _, err := c.cfg.Authority.EndLapsedConsoleSessions(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("ending lapsed console sessions failed", "error", err.Error())
		}
		if c.cfg.Metrics != nil {
			if fams, err := c.cfg.Metrics.Gather(); err == nil {
				c.rates.add(c.now(), issuanceTotals(familyMap(fams)))
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// statusOf maps the authority's refusals to HTTP statuses, for pages.
var statusOf = map[authority.Kind]int{
	authority.KindInvalid:         http.StatusBadRequest,
	authority.KindUnauthenticated: http.StatusUnauthorized,
	authority.KindForbidden:       http.StatusForbidden,
	authority.KindCertRevoked:     http.StatusForbidden,
	authority.KindCertExpired:     http.StatusUnauthorized,
	authority.KindNotFound:        http.StatusNotFound,
	authority.KindConflict:        http.StatusConflict,
	authority.KindRateLimited:     http.StatusTooManyRequests,
	authority.KindPolicyDenied:    http.StatusForbidden,
}

// refuse renders the authority's refusal err as an error page: its detail
// is written for the person at the other end. Internal errors are logged
// and shown without detail.
func (c *Console) refuse(w http.ResponseWriter, r *http.Request, s *session, err error) {
	var e *authority.Error
	if !errors.As(err, &e) || e.Kind == authority.KindInternal || statusOf[e.Kind] == 0 {
		c.log.LogAttrs(r.Context(), slog.LevelError, "console request failed", slog.String("path", r.URL.Path), slog.String("error", err.Error()))
		c.fail(w, r, s, http.StatusInternalServerError, "The server failed to handle this request: see its log.")
		return
	}
	c.fail(w, r, s, statusOf[e.Kind], e.Detail)
}

// fail renders an error page.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, s *session, status int, message string) {
	c.render(w, r, s, status, "error", "Error", "", errorView{Status: status, StatusText: http.StatusText(status), Message: message})
}

type errorView struct {
	Status     int
	StatusText string
	Message    string
}

func remoteAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// bounded reads query parameter name, at most max bytes.
func bounded(r *http.Request, name string, max int) (string, error) {
	v := strings.TrimSpace(r.URL.Query().Get(name))
	if len(v) > max {
		return "", fmt.Errorf("%s is longer than any the console accepts (%d bytes)", name, max)
	}
	return v, nil
}
