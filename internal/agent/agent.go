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
	"io"
	"io/fs"
	"log/slog"
	mathrand "math/rand/v2"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/credential"
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

// Config wires an Agent. Server and Dir.Path are required; every other
// zero value is a safe default.
type Config struct {
	Server Server
	// Dir is where the credential lives (package credential: the files
	// switch together, and a restart picks them up).
	Dir credential.Dir
	// Token enrolls the first time, when Dir holds no usable credential.
	// It is a secret: it is never logged.
	Token string
	// TokenFile, when set, is read for a token whenever the agent has no
	// usable credential (at start, and every TokenPoll while blocked), so
	// an admin recovers a blocked agent by writing a new token there,
	// without a restart. It wins over Token when it holds one.
	TokenFile string
	// TokenPoll is how often a blocked agent reads TokenFile; default 10s.
	TokenPoll time.Duration
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

// Credential is one identity's key and certificates, as the agent serves
// them.
type Credential struct {
	*credential.Credential
	// ID is the certificate's primary identity (its SPIFFE ID, else the
	// first DNS name or IP), the label of this identity in logs and metrics.
	ID  string
	TLS *tls.Certificate
}

func newCredential(c *credential.Credential) *Credential {
	return &Credential{Credential: c, ID: primaryID(c.Leaf()), TLS: c.TLSCertificate()}
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
	// Blocked, when set, says why the agent cannot renew without an
	// admin; it keeps serving Credential (if any) meanwhile.
	Blocked Block
}

// Agent keeps one identity's credential fresh on disk and in memory.
// Start with New and Run.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	clock Clock
	rand  func() float64
	kick  chan struct{} // RenewNow

	mu      sync.Mutex
	state   State
	changed chan struct{} // closed and replaced on every change

	// writeMu orders writes of the directory with the state that
	// matches them (renewals and bundle changes run in two goroutines).
	writeMu sync.Mutex
	// spent is the last token the server took or refused as a token: a
	// token file still holding it is not tried again. lastTok is the last
	// token tried, which a blocked agent asks with again only when due.
	spent, lastTok string
}

// New checks cfg and returns an Agent.
func New(cfg Config) (*Agent, error) {
	if cfg.Server == nil || cfg.Dir.Path == "" {
		return nil, errors.New("agent: Server and Dir.Path are required")
	}
	a := &Agent{cfg: cfg, log: cfg.Logger, clock: cfg.Clock, rand: cfg.Rand, changed: make(chan struct{}), kick: make(chan struct{}, 1)}
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
	if a.cfg.TokenPoll <= 0 {
		a.cfg.TokenPoll = 10 * time.Second
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

// RenewNow makes a running agent renew at once; a blocked one reads its
// token file and asks the server at once. `mica agent` calls it on SIGUSR1.
func (a *Agent) RenewNow() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
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

// label names this agent in logs and metrics: its identity, or its
// directory before it has one.
func (a *Agent) label() string {
	if s, _ := a.State(); s.Credential != nil {
		return s.Credential.ID
	}
	return a.cfg.Dir.Path
}

// Start loads the credential from disk, or enrolls with the token when
// there is none (or it expired), and fetches the bundles once. Run calls
// it; callers that must wait for a credential before serving (the
// Workload API) call it first. Without a usable credential or token it
// fails, unless a TokenFile is configured: then the agent starts blocked
// and Run waits for a token there.
func (a *Agent) Start(ctx context.Context) error {
	if s, _ := a.State(); s.Credential != nil || s.Blocked != "" {
		return nil
	}
	cred, err := a.cfg.Dir.Load()
	switch {
	case err == nil:
		c := newCredential(cred)
		a.update(func(s *State) { s.Credential = c })
		if err := a.cfg.Dir.Repair(); err != nil {
			a.log.Warn("repairing the credential directory failed; the next renewal rewrites it", slog.String("dir", a.cfg.Dir.Path), slog.String("error", err.Error()))
		}
		if a.clock.Now().Before(cred.Leaf().NotAfter) {
			a.log.Info("loaded credential", slog.String("identity", c.ID), slog.Time("not_after", cred.Leaf().NotAfter))
			a.bundlesAtStart(ctx)
			return nil
		}
	case !errors.Is(err, fs.ErrNotExist):
		a.log.Error("the credential on disk cannot be used; enrolling again if a token is at hand", slog.String("dir", a.cfg.Dir.Path), slog.String("error", err.Error()))
	}
	tok := a.token()
	if tok == "" {
		if s, _ := a.State(); a.cfg.TokenFile != "" {
			b := BlockToken
			if s.Credential != nil {
				b = BlockExpired
			}
			a.block(ctx, b, err)
			return nil
		}
		if cred != nil {
			return fmt.Errorf("agent: the certificate in %s expired at %s and cannot renew: enroll again with a new token (--token or --token-file)", a.cfg.Dir.Path, cred.Leaf().NotAfter.Format(time.RFC3339))
		}
		return fmt.Errorf("agent: no credential in %s (%v) and no token to enroll with: get one with `mica token create` and pass --token or --token-file", a.cfg.Dir.Path, err)
	}
	if err := a.enroll(ctx, tok); err != nil {
		b := blockOf(err, true)
		if b == "" {
			return err
		}
		s, _ := a.State()
		id := ""
		if s.Credential != nil {
			id = s.Credential.ID
			if b == BlockToken {
				b = BlockExpired // the token is spent; the expired certificate is what to fix
			}
		}
		if a.cfg.TokenFile == "" {
			return fmt.Errorf("agent: %s: %w", a.advice(b, id, err), err)
		}
		a.block(ctx, b, err)
		return nil
	}
	a.bundlesAtStart(ctx)
	return nil
}

func (a *Agent) bundlesAtStart(ctx context.Context) {
	if err := a.refreshBundles(ctx); err != nil {
		// The credential's own roots serve until the server answers.
		a.log.Warn("fetching the trust bundles failed; serving the roots that came with the certificate", slog.String("error", err.Error()))
	}
}

// maxTokenBytes bounds a token file: a token is well under 1 KiB.
const maxTokenBytes = 8 << 10

// token is the token to enroll with: TokenFile's content when it holds
// one, else Token; "" when neither does.
func (a *Agent) token() string {
	if a.cfg.TokenFile != "" {
		f, err := os.Open(a.cfg.TokenFile)
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(f, maxTokenBytes))
			f.Close()
			if t := strings.TrimSpace(string(b)); t != "" {
				return t
			}
		} else if !errors.Is(err, fs.ErrNotExist) {
			a.log.Warn("reading the token file failed", slog.String("file", a.cfg.TokenFile), slog.String("error", err.Error()))
		}
	}
	return a.cfg.Token
}

// Run keeps the credential fresh until ctx ends: renewal at two thirds of
// its life with jitter, retries with capped backoff while the server is
// unreachable, bundle polling, and, when renewal cannot succeed (see
// Block), a clear log line, the mica_agent_blocked metric and a wait for an
// admin instead of a retry loop. It returns nil when ctx ends and an error
// only when it cannot start.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.Start(ctx); err != nil {
		return err
	}
	var wg sync.WaitGroup
	wg.Go(func() { a.pollBundles(ctx) })
	a.loop(ctx)
	wg.Wait()
	return nil
}

// loop is the renewal state machine. Healthy: sleep until the renewal
// time (or RenewNow), renew, back off on passing failures. Blocked: read the
// token file every TokenPoll and enroll when it holds a token not tried
// yet; for blocks an admin lifts on the server (denied, refused), ask again
// at the longest backoff. Nothing asks the server in a tight loop.
func (a *Agent) loop(ctx context.Context) {
	var (
		failures  int       // passing failures in a row, for the backoff
		retry     bool      // ask the server again at nextAsk
		nextAsk   time.Time //
		nextToken time.Time // when a blocked agent next reads its token file
	)
	if s, _ := a.State(); s.Blocked.retriesSlowly() {
		retry, nextAsk = true, a.clock.Now().Add(a.slowRetry())
	}
	for {
		s, _ := a.State()
		now := a.clock.Now()
		if s.Credential != nil && !now.Before(s.Credential.Leaf().NotAfter) &&
			(s.Blocked == "" || s.Blocked.retriesSlowly()) {
			a.block(ctx, BlockExpired, nil)
			failures, retry, nextToken = 0, false, now
			continue
		}
		var wait time.Duration
		switch {
		case s.Blocked != "":
			wait = nextToken.Sub(now)
			if retry {
				wait = min(wait, nextAsk.Sub(now))
			}
		case retry:
			wait = nextAsk.Sub(now)
		default:
			leaf := s.Credential.Leaf()
			wait = renewal.RenewAt(leaf.NotBefore, leaf.NotAfter, a.rand()).Sub(now)
		}
		if s.Blocked == "" {
			// Expiry changes what to do: never sleep past it.
			wait = min(wait, s.Credential.Leaf().NotAfter.Sub(now))
		}
		kicked, ok := a.wait(ctx, wait)
		if !ok {
			return
		}
		s, _ = a.State()
		now = a.clock.Now()

		var err error
		enrolling := false
		if s.Blocked == "" {
			if !now.Before(s.Credential.Leaf().NotAfter) {
				continue // blocked as expired at the top
			}
			err = a.RenewOnce(ctx)
		} else {
			due := kicked || (retry && !now.Before(nextAsk))
			if !due && now.Before(nextToken) {
				continue
			}
			if !now.Before(nextToken) {
				nextToken = now.Add(a.cfg.TokenPoll)
			}
			tok := a.token()
			switch {
			case tok != "" && tok != a.spent && (tok != a.lastTok || due):
				enrolling = true
				err = a.enroll(ctx, tok)
			case due && s.Blocked.retriesSlowly() && s.Credential != nil && now.Before(s.Credential.Leaf().NotAfter):
				err = a.RenewOnce(ctx)
			default:
				if due {
					retry = false // nothing left to ask again
				}
				continue
			}
		}
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			failures, retry = 0, false
			continue
		}
		if b := blockOf(err, enrolling); b != "" {
			failures = 0
			s, _ := a.State()
			if enrolling && b == BlockToken {
				a.log.LogAttrs(ctx, slog.LevelError, "the new token cannot be used: "+a.advice(BlockToken, a.label(), err),
					slog.String("identity", a.label()), slog.String("error", err.Error()))
				if s.Credential != nil && s.Blocked != "" {
					b = s.Blocked // what blocked the agent still does
				}
			}
			a.block(ctx, b, err)
			retry, nextAsk = b.retriesSlowly(), now.Add(a.slowRetry())
			if nextToken.Before(now) {
				nextToken = now.Add(a.cfg.TokenPoll)
			}
			continue
		}
		a.logPassing(ctx, s, err)
		limit := a.slowRetry()
		backoff := renewal.Backoff(failures, time.Second, limit, a.rand())
		// A server that rate-limits says when to come back; asking
		// sooner only earns another refusal. Its word is capped like our
		// own backoff, so a misconfigured limit cannot park the agent
		// past its certificate's renewal window.
		if p := (*client.Problem)(nil); errors.As(err, &p) && p.RetryAfter > backoff {
			backoff = min(p.RetryAfter, limit)
		}
		failures++
		retry, nextAsk = true, now.Add(backoff)
	}
}

// logPassing logs a failure that a later attempt may overcome, louder as
// the certificate's end nears.
func (a *Agent) logPassing(ctx context.Context, s State, err error) {
	attrs := []slog.Attr{slog.String("identity", a.label()), slog.String("error", err.Error())}
	if s.Credential == nil {
		a.log.LogAttrs(ctx, slog.LevelWarn, "enrollment failed; retrying", attrs...)
		return
	}
	leaf, now := s.Credential.Leaf(), a.clock.Now()
	attrs = append(attrs, slog.Duration("expires_in", leaf.NotAfter.Sub(now).Round(time.Second)))
	if renewal.ExpiringSoon(now, leaf.NotBefore, leaf.NotAfter) {
		a.log.LogAttrs(ctx, slog.LevelError, "certificate expires soon and renewal keeps failing", attrs...)
		return
	}
	a.log.LogAttrs(ctx, slog.LevelWarn, "renewal failed; retrying", attrs...)
}

// block records that renewal cannot succeed without an admin and says, once
// per change, what to do.
func (a *Agent) block(ctx context.Context, b Block, cause error) {
	s, _ := a.State()
	if s.Blocked == b {
		return
	}
	a.update(func(s *State) { s.Blocked = b })
	attrs := []slog.Attr{slog.String("identity", a.label()), slog.String("reason", string(b))}
	if cause != nil {
		attrs = append(attrs, slog.String("error", cause.Error()))
	}
	id := ""
	if s.Credential != nil {
		id = s.Credential.ID
	}
	a.log.LogAttrs(ctx, slog.LevelError, "RENEWAL BLOCKED: "+a.advice(b, id, cause), attrs...)
}

// wait sleeps d, or until RenewNow or ctx ends. It reports whether
// RenewNow woke it and whether to carry on.
func (a *Agent) wait(ctx context.Context, d time.Duration) (kicked, ok bool) {
	if ctx.Err() != nil {
		return false, false
	}
	if d <= 0 {
		return false, true
	}
	select {
	case <-ctx.Done():
		return false, false
	case <-a.kick:
		return true, true
	case <-a.clock.After(d):
		return false, true
	}
}

// RenewOnce renews the credential now: new key, CSR, renewal over mTLS,
// files written, hooks run. The in-memory credential switches only after
// the files are safely written, so a failure leaves the current one served.
func (a *Agent) RenewOnce(ctx context.Context) error {
	return a.issue(ctx, "")
}

// enroll gets a credential with a token. The token is spent once the
// server took it or refused the token itself; after any other failure it
// is the one asked with again at the next retry (lastTok).
func (a *Agent) enroll(ctx context.Context, tok string) error {
	err := a.issue(ctx, tok)
	a.lastTok = tok
	if err == nil || blockOf(err, true) == BlockToken {
		a.spent = tok
	}
	return err
}

// issue renews (token empty) or enrolls with token.
func (a *Agent) issue(ctx context.Context, token string) error {
	err := a.issueOnce(ctx, token)
	if m := a.cfg.Metrics; m != nil {
		id := "unknown"
		if s, _ := a.State(); s.Credential != nil {
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

func (a *Agent) issueOnce(ctx context.Context, token string) error {
	generate := func() (crypto.Signer, error) { return keys.Generate(a.cfg.KeyType, rand.Reader) }
	var key crypto.Signer
	var err error
	if token != "" {
		// An enrollment asks with the key kept on disk, so that a retry
		// after a lost response or a crash gets the certificate the token
		// already paid for instead of "token already used".
		key, err = a.cfg.Dir.PendingKey(generate)
	} else {
		key, err = generate()
	}
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
	if token != "" {
		resp, err = a.cfg.Server.Enroll(ctx, token, req)
	} else {
		resp, err = a.cfg.Server.Renew(ctx, req)
	}
	if err != nil {
		return err
	}
	chain, err := credential.ParseCertificates([]byte(resp.Certificate + "\n" + resp.Chain))
	if err != nil {
		return fmt.Errorf("agent: the server's certificate: %w", err)
	}
	roots, _ := credential.ParseCertificates([]byte(resp.Bundle))
	cc, err := credential.New(chain, key, roots)
	if err != nil {
		return fmt.Errorf("agent: the server's certificate is not for the key this agent made: %w", err)
	}
	cred := newCredential(cc)
	now := a.clock.Now()
	a.writeMu.Lock()
	err = a.cfg.Dir.Write(cc)
	if err == nil {
		a.update(func(s *State) {
			s.Credential, s.LastRenewal, s.Blocked = cred, now, ""
			if len(s.Roots) == 0 {
				s.Roots = roots
			}
		})
	}
	a.writeMu.Unlock()
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	a.dropConnections()
	verb := "renewed"
	if token != "" {
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
		select {
		case <-ctx.Done():
			return
		case <-a.clock.After(a.cfg.BundleInterval):
		}
		if err := a.refreshBundles(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("fetching the trust bundles failed; keeping the current ones", slog.String("error", err.Error()))
		}
	}
}

// rootFollower is a Server whose trust in the server follows the bundle
// (client.Client).
type rootFollower interface{ SetRoots(*x509.CertPool) }

// refreshBundles fetches the X.509 and JWT bundles and, when they changed,
// writes bundle.pem (a new version of the directory), updates what the
// Workload API serves and runs the hooks, so new roots reach the host
// before anything is signed by them.
func (a *Agent) refreshBundles(ctx context.Context) error {
	b, err := a.cfg.Server.Bundle(ctx)
	if err != nil {
		return err
	}
	roots, err := credential.ParseCertificates([]byte(strings.Join(b.Roots, "\n")))
	if err != nil {
		return fmt.Errorf("agent: the server's bundle holds no usable root: %w", err)
	}
	inters, _ := credential.ParseCertificates([]byte(strings.Join(b.Intermediates, "\n")))
	// The agent's own connections to the server trust the bundle too (it
	// came over a connection verified by the roots held until now), so a
	// root rollover does not strand the agent on a root the server's
	// certificate no longer chains to.
	if f, ok := a.cfg.Server.(rootFollower); ok {
		pool := x509.NewCertPool()
		for _, r := range roots {
			pool.AddCert(r)
		}
		f.SetRoots(pool)
	}
	jwks, jerr := a.cfg.Server.JWTBundle(ctx)

	a.writeMu.Lock()
	s, _ := a.State()
	rootsChanged := !sameCerts(s.Roots, roots)
	changed := rootsChanged || !sameCerts(s.Intermediates, inters) || s.TrustDomain != b.TrustDomain ||
		(jerr == nil && !bytes.Equal(s.JWTBundle, jwks))
	if !changed {
		a.writeMu.Unlock()
		return jerr
	}
	cred := s.Credential
	if rootsChanged && cred != nil && !sameCerts(cred.Roots, roots) {
		next := *cred.Credential
		next.Roots = roots
		if err := a.cfg.Dir.Write(&next); err != nil {
			a.writeMu.Unlock()
			return fmt.Errorf("agent: %w", err)
		}
		cred = newCredential(&next)
	}
	a.update(func(s *State) {
		s.Roots, s.Intermediates, s.TrustDomain, s.Credential = roots, inters, b.TrustDomain, cred
		if jerr == nil {
			s.JWTBundle = jwks
		}
	})
	a.writeMu.Unlock()
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

// Name is this agent's identity, or its directory before it has one.
func (a *Agent) Name() string { return a.label() }
