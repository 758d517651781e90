package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	mathrand "math/rand/v2"
	"sync"
	"time"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/renewal"
)

// Server is the part of the mica API the agent needs; *client.Client
// provides it. Renew and JWTSVID authenticate with the credential the
// client gets from Agent.TLSCertificate.
type Server interface {
	Enroll(ctx context.Context, token string, req client.CertificateRequest) (*client.CertificateResponse, error)
	Renew(ctx context.Context, req client.CertificateRequest) (*client.CertificateResponse, error)
	Bundle(ctx context.Context) (*client.Bundle, error)
	JWTBundle(ctx context.Context) ([]byte, error)
	JWTSVID(ctx context.Context, req client.JWTSVIDRequest) (*client.JWTSVID, error)
}

// Clock is the agent's time: now, and a channel that fires after d. Tests
// use the real clock inside a testing/synctest bubble, or their own.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Config wires an Agent. Server and Files.Dir are required; every other
// zero value is a safe default.
type Config struct {
	Server Server
	Files  Files
	// Token enrolls the first time, when Files holds no usable credential.
	// It is a secret: it is never logged.
	Token string
	// KeyType of every key the agent makes; default ECDSA P-256.
	KeyType keys.Algorithm
	// TTL asked for on every issuance (empty: the profile's default).
	TTL string
	// Hooks run, in order, after new files are written.
	Hooks []Hook
	// BundleInterval is how often the trust bundles are polled; default 5m.
	BundleInterval time.Duration
	// MaxBackoff caps the wait between failed renewals; default 5m, and
	// never more than a twelfth of the certificate's life.
	MaxBackoff time.Duration
	Clock      Clock
	// Rand gives the jitter in [0, 1); default math/rand/v2.
	Rand    func() float64
	Logger  *slog.Logger
	Metrics *Metrics
	// OnChange, when set, is called after every change of State, for
	// callers that watch several agents at once.
	OnChange func()
}

// Credential is one identity's key and certificates.
type Credential struct {
	// ID is the certificate's primary identity (its SPIFFE ID, else the
	// first DNS name or IP), the label of this identity in logs and metrics.
	ID    string
	Chain []*x509.Certificate // leaf first, then intermediates
	Key   crypto.Signer
	Roots []*x509.Certificate
	TLS   *tls.Certificate
}

func newCredential(chain []*x509.Certificate, key crypto.Signer, roots []*x509.Certificate) (*Credential, error) {
	if len(chain) == 0 {
		return nil, errors.New("agent: no certificate")
	}
	if !publicKeysEqual(chain[0].PublicKey, key.Public()) {
		return nil, errors.New("agent: the key does not match the certificate: remove the files to enroll again")
	}
	tc := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return &Credential{ID: primaryID(chain[0]), Chain: chain, Key: key, Roots: roots, TLS: tc}, nil
}

func primaryID(c *x509.Certificate) string {
	switch {
	case len(c.URIs) > 0:
		return c.URIs[0].String()
	case len(c.DNSNames) > 0:
		return c.DNSNames[0]
	case len(c.IPAddresses) > 0:
		return c.IPAddresses[0].String()
	}
	return c.SerialNumber.Text(16)
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ae, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ae.Equal(b)
}

// State is what the agent currently serves: the credential, the trust
// bundle and the JWT-SVID keys.
type State struct {
	Credential    *Credential
	TrustDomain   string
	Roots         []*x509.Certificate
	Intermediates []*x509.Certificate
	JWTBundle     []byte // JWKS JSON
	// LastRenewal is when the credential was last issued or renewed by
	// this agent (zero when loaded from disk).
	LastRenewal time.Time
}

// Agent keeps one identity's credential fresh on disk and in memory.
// Start with New and Run.
type Agent struct {
	cfg   Config
	files Files
	log   *slog.Logger
	clock Clock
	rand  func() float64

	mu      sync.Mutex
	state   State
	changed chan struct{} // closed and replaced on every change
}

// New checks cfg and returns an Agent.
func New(cfg Config) (*Agent, error) {
	if cfg.Server == nil || cfg.Files.Dir == "" {
		return nil, errors.New("agent: Server and Files.Dir are required")
	}
	a := &Agent{cfg: cfg, files: cfg.Files.withDefaults(), log: cfg.Logger, clock: cfg.Clock, rand: cfg.Rand, changed: make(chan struct{})}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.clock == nil {
		a.clock = realClock{}
	}
	if a.rand == nil {
		a.rand = mathrand.Float64
	}
	if a.cfg.KeyType == "" {
		a.cfg.KeyType = keys.Default
	}
	if a.cfg.BundleInterval <= 0 {
		a.cfg.BundleInterval = 5 * time.Minute
	}
	if a.cfg.MaxBackoff <= 0 {
		a.cfg.MaxBackoff = 5 * time.Minute
	}
	if a.cfg.Metrics != nil {
		a.cfg.Metrics.watch(a)
	}
	return a, nil
}

// State returns what the agent serves now, and a channel that is closed at
// the next change, so a caller can wait for rotations without polling.
func (a *Agent) State() (State, <-chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state, a.changed
}

// TLSCertificate is the current credential for mTLS to the server (and the
// client's GetCertificate); empty before enrollment.
func (a *Agent) TLSCertificate() (*tls.Certificate, error) {
	s, _ := a.State()
	if s.Credential == nil {
		return &tls.Certificate{}, nil
	}
	return s.Credential.TLS, nil
}

func (a *Agent) update(f func(*State)) {
	a.mu.Lock()
	f(&a.state)
	close(a.changed)
	a.changed = make(chan struct{})
	a.mu.Unlock()
	if a.cfg.OnChange != nil {
		a.cfg.OnChange()
	}
}

// Start loads the credential from disk, or enrolls with the token when
// there is none, and fetches the bundles once. Run calls it; callers that
// must wait for a credential before serving (the Workload API) call it
// first.
func (a *Agent) Start(ctx context.Context) error {
	if s, _ := a.State(); s.Credential != nil {
		return nil
	}
	cred, err := a.files.loadCredential()
	switch {
	case err == nil && a.clock.Now().Before(cred.Chain[0].NotAfter):
		a.update(func(s *State) { s.Credential = cred })
		a.log.Info("loaded credential", slog.String("identity", cred.ID), slog.Time("not_after", cred.Chain[0].NotAfter))
	case a.cfg.Token == "":
		if err == nil {
			return fmt.Errorf("agent: the certificate in %s expired at %s and cannot renew: enroll again with a new token (--token)", a.files.Dir, cred.Chain[0].NotAfter.Format(time.RFC3339))
		}
		return fmt.Errorf("agent: no credential in %s (%v) and no token to enroll with: get one with `mica token create` and pass --token", a.files.Dir, err)
	default:
		if err := a.issue(ctx, true); err != nil {
			return err
		}
	}
	if err := a.refreshBundles(ctx); err != nil {
		// The credential's own roots serve until the server answers.
		a.log.Warn("fetching the trust bundles failed; serving the roots that came with the certificate", slog.String("error", err.Error()))
	}
	return nil
}

// Run keeps the credential fresh until ctx ends: renewal at two thirds of
// its life with jitter, retries with capped backoff while the server is
// unreachable, bundle polling. It returns nil when ctx ends and an error
// only when it cannot start.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.Start(ctx); err != nil {
		return err
	}
	var wg sync.WaitGroup
	wg.Go(func() { a.pollBundles(ctx) })
	a.renewLoop(ctx)
	wg.Wait()
	return nil
}

func (a *Agent) renewLoop(ctx context.Context) {
	for {
		s, _ := a.State()
		leaf := s.Credential.Chain[0]
		at := renewal.RenewAt(leaf.NotBefore, leaf.NotAfter, a.rand())
		if !a.sleep(ctx, at.Sub(a.clock.Now())) {
			return
		}
		for attempt := 0; ; attempt++ {
			err := a.RenewOnce(ctx)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			now := a.clock.Now()
			attrs := []slog.Attr{slog.String("identity", s.Credential.ID), slog.String("error", err.Error()),
				slog.Duration("expires_in", leaf.NotAfter.Sub(now).Round(time.Second))}
			switch {
			case now.After(leaf.NotAfter):
				a.log.LogAttrs(ctx, slog.LevelError, "CERTIFICATE EXPIRED without renewal: services using it will fail; fix the server connection or enroll again with a new token", attrs...)
			case renewal.ExpiringSoon(now, leaf.NotBefore, leaf.NotAfter):
				a.log.LogAttrs(ctx, slog.LevelError, "certificate expires soon and renewal keeps failing", attrs...)
			default:
				a.log.LogAttrs(ctx, slog.LevelWarn, "renewal failed; retrying", attrs...)
			}
			limit := renewal.RetryCap(leaf.NotAfter.Sub(leaf.NotBefore), a.cfg.MaxBackoff)
			wait := renewal.Backoff(attempt, time.Second, limit, a.rand())
			// A server that rate-limits says when to come back; asking
			// sooner only earns another refusal. Its word is capped like our
			// own backoff, so a misconfigured limit cannot park the agent
			// past its certificate's renewal window.
			if p := (*client.Problem)(nil); errors.As(err, &p) && p.RetryAfter > wait {
				wait = min(p.RetryAfter, limit)
			}
			if !a.sleep(ctx, wait) {
				return
			}
		}
	}
}

// RenewOnce renews the credential now: new key, CSR, renewal over mTLS,
// files written, hooks run. The in-memory credential switches only after
// the files are safely written, so a failure leaves the current one served.
func (a *Agent) RenewOnce(ctx context.Context) error {
	return a.issue(ctx, false)
}

func (a *Agent) issue(ctx context.Context, enroll bool) error {
	err := a.issueOnce(ctx, enroll)
	if m := a.cfg.Metrics; m != nil {
		s, _ := a.State()
		id := "unknown"
		if s.Credential != nil {
			id = s.Credential.ID
		}
		if err != nil {
			m.failures.WithLabelValues(id).Inc()
		} else {
			m.renewals.WithLabelValues(id).Inc()
			// The failure count exists from the first certificate on, at
			// zero, so that increase() in alerts sees the first failure.
			m.failures.WithLabelValues(id)
		}
	}
	return err
}

func (a *Agent) issueOnce(ctx context.Context, enroll bool) error {
	key, err := keys.Generate(a.cfg.KeyType, rand.Reader)
	if err != nil {
		return fmt.Errorf("agent: making a key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return fmt.Errorf("agent: making the CSR: %w", err)
	}
	req := client.CertificateRequest{CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), TTL: a.cfg.TTL}
	var resp *client.CertificateResponse
	a.dropConnections()
	if enroll {
		resp, err = a.cfg.Server.Enroll(ctx, a.cfg.Token, req)
	} else {
		resp, err = a.cfg.Server.Renew(ctx, req)
	}
	if err != nil {
		return err
	}
	leaf, err := parseCerts([]byte(resp.Certificate))
	if err != nil {
		return fmt.Errorf("agent: the server's certificate: %w", err)
	}
	chain, _ := parseCerts([]byte(resp.Chain))
	roots, _ := parseCerts([]byte(resp.Bundle))
	cred, err := newCredential(append(leaf[:1], chain...), key, roots)
	if err != nil {
		return err
	}
	if err := a.files.writeCredential(cred); err != nil {
		return err
	}
	now := a.clock.Now()
	a.update(func(s *State) {
		s.Credential, s.LastRenewal = cred, now
		if len(s.Roots) == 0 {
			s.Roots = roots
		}
	})
	a.dropConnections()
	verb := "renewed"
	if enroll {
		verb = "enrolled"
	}
	a.log.Info("certificate "+verb, slog.String("identity", cred.ID), slog.String("serial", resp.Serial),
		slog.Time("not_after", resp.NotAfter))
	a.runHooks(ctx)
	return nil
}

// dropConnections closes kept-alive connections to the server, when the
// Server can (an optional ability, found by type assertion). The server
// judges the certificate of the TLS connection, and a connection made
// before (by a bundle poll, or before enrollment) carries the old
// credential or none; dropping them before and after every issuance makes
// the next request present the current one.
func (a *Agent) dropConnections() {
	if c, ok := a.cfg.Server.(interface{ Close() }); ok {
		c.Close()
	}
}

func (a *Agent) runHooks(ctx context.Context) {
	for _, h := range a.cfg.Hooks {
		// A failed hook does not undo the renewal: the files are valid and
		// the next rotation runs the hook again.
		if err := h(ctx); err != nil {
			a.log.Error("reload hook failed", slog.String("error", err.Error()))
		}
	}
}

func (a *Agent) pollBundles(ctx context.Context) {
	for {
		if !a.sleep(ctx, a.cfg.BundleInterval) {
			return
		}
		if err := a.refreshBundles(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("fetching the trust bundles failed; keeping the current ones", slog.String("error", err.Error()))
		}
	}
}

// refreshBundles fetches the X.509 and JWT bundles and, when they changed,
// writes bundle.pem, updates what the Workload API serves and runs the
// hooks, so new roots reach the host before anything is signed by them.
func (a *Agent) refreshBundles(ctx context.Context) error {
	b, err := a.cfg.Server.Bundle(ctx)
	if err != nil {
		return err
	}
	roots, err := parseCerts([]byte(joinPEM(b.Roots)))
	if err != nil {
		return fmt.Errorf("agent: the server's bundle holds no usable root: %w", err)
	}
	inters, _ := parseCerts([]byte(joinPEM(b.Intermediates)))
	jwks, jerr := a.cfg.Server.JWTBundle(ctx)
	s, _ := a.State()
	rootsChanged := !sameCerts(s.Roots, roots)
	changed := rootsChanged || !sameCerts(s.Intermediates, inters) || s.TrustDomain != b.TrustDomain ||
		(jerr == nil && !bytes.Equal(s.JWTBundle, jwks))
	if !changed {
		return jerr
	}
	if rootsChanged {
		if err := a.files.writeBundle(roots); err != nil {
			return err
		}
	}
	a.update(func(s *State) {
		s.Roots, s.Intermediates, s.TrustDomain = roots, inters, b.TrustDomain
		if jerr == nil {
			s.JWTBundle = jwks
		}
	})
	if rootsChanged && len(s.Roots) > 0 {
		a.log.Info("trust bundle changed", slog.Int("roots", len(roots)), slog.Int("intermediates", len(inters)))
		if m := a.cfg.Metrics; m != nil {
			m.bundleUpdates.Inc()
		}
		a.runHooks(ctx)
	}
	return jerr
}

// FetchJWTSVID asks the server for a JWT-SVID for this agent's identity.
func (a *Agent) FetchJWTSVID(ctx context.Context, audience []string) (*client.JWTSVID, error) {
	return a.cfg.Server.JWTSVID(ctx, client.JWTSVIDRequest{Audience: audience})
}

// sleep waits d or until ctx ends; it reports whether to carry on.
func (a *Agent) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	select {
	case <-ctx.Done():
		return false
	case <-a.clock.After(d):
		return true
	}
}

func joinPEM(blocks []string) string {
	var b bytes.Buffer
	for _, p := range blocks {
		b.WriteString(p)
		b.WriteByte('\n')
	}
	return b.String()
}

func sameCerts(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}
