// Package webhook delivers mica's lifecycle events to HTTP receivers (a
// CMDB, a service registry, a chat bot) as CloudEvents, signed with an
// HMAC per endpoint.
//
// Deliveries are derived from the audit log, the one place every door's
// events are recorded: each endpoint keeps a cursor (a sequence number) in
// the database and follows the log from it, the way the revocation feed
// does. An event is handed on until the receiver answers 2xx, retried with
// capped exponential backoff, and given up (a dead letter, listed by the
// CLI) only when the receiver refuses it for good or its retry time runs
// out. The cursor moves past a batch of events only once each is settled,
// so a crash or restart delivers again rather than loses: delivery is at
// least once, and the CloudEvent id (the event's sequence number) lets a
// receiver drop repeats. Issuance never waits for any of this: it writes
// the log, and delivery reads it.
//
// Several servers sharing a database deliver to each endpoint one at a
// time: a lease in the database says which.
//
// Start with [New] and [Dispatcher.Run].
package webhook

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/namematch"
	"github.com/mica-pki/mica/internal/store"
)

// Endpoint is one receiver.
type Endpoint struct {
	// Name identifies the endpoint in metrics, the CLI and the database
	// (its cursor is kept under it): rename it and it starts afresh.
	Name   string
	URL    string
	Secret []byte
	// Types selects events by type, globs allowed ("cert.*",
	// "issuance.refused"); empty selects every type. The "mica." prefix
	// may be left out.
	Types []string
	// Profiles selects events of these profiles; empty selects all.
	Profiles []string
	// Identities selects events whose identity one of these name patterns
	// covers (package namematch); empty selects all.
	Identities []string
	// Timeout bounds one attempt; default 10s.
	Timeout time.Duration
	// RetryFor is how long an event is retried before it is given up;
	// default 72h.
	RetryFor time.Duration
	// Concurrency is how many events are in flight at once; default 4.
	Concurrency int
	// RootCAs verify an https receiver; the system's when nil.
	RootCAs *x509.CertPool
}

// Log is the event log deliveries follow.
type Log interface {
	Events(ctx context.Context, f store.EventFilter) ([]store.Event, error)
	LastEventSeq(ctx context.Context) (int64, error)
}

// State keeps delivery progress and hands out leases.
type State interface {
	store.WebhookStore
	store.LeaseStore
}

// Certificates is the optional ability of a Log to read the record of the
// certificate an event names, which the event's data then carries.
type Certificates interface {
	Certificate(ctx context.Context, serial string) (store.Certificate, error)
}

// Config wires a Dispatcher.
type Config struct {
	Endpoints []Endpoint
	Log       Log
	State     State
	// Source is the CloudEvents source of every event: this mica, e.g.
	// "https://ca.example.org" or "mica://example.org".
	Source string
	// Poll is how often the log is read for new events; default 1s.
	Poll time.Duration
	// BatchSize is how many events are read at a time; default 100.
	BatchSize int
	// MinBackoff and MaxBackoff bound the wait between attempts at one
	// event; defaults 1s and 5m.
	MinBackoff, MaxBackoff time.Duration
	// LeaseTTL is how long a server holds an endpoint without renewing
	// it (a third of it, while working): after a crash, another server,
	// or the same one restarted, delivers again within it. Default 15s.
	LeaseTTL   time.Duration
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	Clock      func() time.Time
	// UserAgent is sent with every delivery.
	UserAgent string
}

// Dispatcher delivers to every endpoint.
type Dispatcher struct {
	cfg     Config
	owner   string
	workers []*worker
	metrics *metrics
}

// New checks cfg and returns a Dispatcher; Run delivers.
func New(cfg Config) (*Dispatcher, error) {
	if cfg.Log == nil || cfg.State == nil {
		return nil, errors.New("webhook: Config needs a Log and a State")
	}
	if cfg.Source == "" {
		return nil, errors.New("webhook: Config needs a Source (the CloudEvents source, e.g. mica://example.org)")
	}
	setDefault(&cfg.Poll, time.Second)
	setDefault(&cfg.MinBackoff, time.Second)
	setDefault(&cfg.MaxBackoff, 5*time.Minute)
	setDefault(&cfg.LeaseTTL, 15*time.Second)
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 100
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "mica-webhook"
	}
	var id [8]byte
	rand.Read(id[:])
	d := &Dispatcher{cfg: cfg, owner: hex.EncodeToString(id[:])}
	names := map[string]bool{}
	for _, ep := range cfg.Endpoints {
		w, err := newWorker(d, ep)
		if err != nil {
			return nil, err
		}
		if names[ep.Name] {
			return nil, fmt.Errorf("webhook: two endpoints are named %q: names key the delivery state, so they must differ", ep.Name)
		}
		names[ep.Name] = true
		d.workers = append(d.workers, w)
	}
	m, err := newMetrics(cfg.Registerer, d.names())
	if err != nil {
		return nil, err
	}
	d.metrics = m
	return d, nil
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
	}
}

func (d *Dispatcher) names() []string {
	out := make([]string, len(d.workers))
	for i, w := range d.workers {
		out[i] = w.ep.Name
	}
	return out
}

// Run delivers until ctx ends. Events in flight then are delivered again
// after the next start.
func (d *Dispatcher) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, w := range d.workers {
		wg.Go(func() { w.run(ctx) })
	}
	wg.Wait()
	return nil
}

// filter is an endpoint's compiled selection.
type filter struct {
	types      []string
	profiles   map[string]bool
	identities []namematch.Pattern
}

func (f *filter) match(ev store.Event) bool {
	if len(f.types) > 0 {
		ok := false
		for _, t := range f.types {
			if m, _ := path.Match(t, string(ev.Action)); m {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(f.profiles) > 0 && !f.profiles[ev.Profile] {
		return false
	}
	if len(f.identities) > 0 {
		n, err := identity.ParseName(ev.Identity)
		if err != nil || !namematch.Any(f.identities, []identity.Name{n}) {
			return false
		}
	}
	return true
}

func compileFilter(ep Endpoint) (filter, error) {
	f := filter{}
	for _, t := range ep.Types {
		t = trimPrefix(t)
		if _, err := path.Match(t, ""); err != nil || t == "" {
			return f, fmt.Errorf("webhook: endpoint %s: type %q is not an event type or a glob like cert.*", ep.Name, t)
		}
		f.types = append(f.types, t)
	}
	if len(ep.Profiles) > 0 {
		f.profiles = map[string]bool{}
		for _, p := range ep.Profiles {
			f.profiles[p] = true
		}
	}
	ids, err := namematch.ParseAll(ep.Identities)
	if err != nil {
		return f, fmt.Errorf("webhook: endpoint %s: %w", ep.Name, err)
	}
	f.identities = ids
	return f, nil
}

func trimPrefix(t string) string {
	if len(t) > len(TypePrefix) && t[:len(TypePrefix)] == TypePrefix {
		return t[len(TypePrefix):]
	}
	return t
}

// checkEndpoint validates one endpoint's settings.
func checkEndpoint(ep *Endpoint) error {
	if ep.Name == "" || len(ep.Name) > 64 {
		return errors.New("webhook: every endpoint needs a name of at most 64 characters")
	}
	u, err := url.Parse(ep.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		return fmt.Errorf("webhook: endpoint %s: url %q must be an http(s) URL without credentials", ep.Name, ep.URL)
	}
	if len(ep.Secret) < 24 {
		return fmt.Errorf("webhook: endpoint %s: the signing secret is missing or shorter than 24 bytes: make one with `mica webhook secret`", ep.Name)
	}
	setDefault(&ep.Timeout, 10*time.Second)
	setDefault(&ep.RetryFor, 72*time.Hour)
	if ep.Concurrency <= 0 {
		ep.Concurrency = 4
	}
	return nil
}

// RedactedURL is the endpoint's URL without its query, which may carry a
// token, for the CLI and logs.
func RedactedURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable)"
	}
	u.RawQuery, u.Fragment, u.User = "", "", nil
	return u.String()
}

func httpClient(ep Endpoint) *http.Client {
	return &http.Client{
		Timeout: ep.Timeout,
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: ep.RootCAs},
			MaxIdleConnsPerHost: ep.Concurrency,
			IdleConnTimeout:     90 * time.Second,
			ForceAttemptHTTP2:   true,
		},
		// A redirect is answered as a failure: the signature names this
		// URL's receiver, and following would hand the event elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
