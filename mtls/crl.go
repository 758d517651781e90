package mtls

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/big"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// CRLConfig says where CRLs come from and whom to trust for them.
type CRLConfig struct {
	// URLs are fetched from the start; the CRL distribution points of
	// verified peers' certificates are added as they are seen.
	URLs []string
	// Interval is how often every CRL is fetched again (a conditional GET,
	// cheap when nothing changed); a CRL whose nextUpdate comes sooner is
	// fetched then. Default one minute.
	Interval   time.Duration
	HTTPClient *http.Client
	// Roots are trusted to sign CRLs, with the intermediates of verified
	// peer chains; usually the Source's Roots. Required.
	Roots  func() []*x509.Certificate
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
	// MaxBytes bounds one CRL download; default 100 MiB.
	MaxBytes int64
	// MaxURLs bounds how many distribution points are followed; default 64.
	MaxURLs int
}

// CRLChecker keeps the revoked serials of CRLs in memory: it fetches them
// in the background, accepts only CRLs signed by a trusted issuer, and
// answers Revoked from memory, so the handshake never waits on the
// network. A certificate whose issuer's CRL is not held (yet) is not
// reported revoked: the CRL is the fallback, the revocation feed is the
// first line.
type CRLChecker struct {
	cfg CRLConfig
	log *slog.Logger

	refreshing sync.Mutex // one Refresh at a time
	mu         sync.Mutex // guards sources, seen and the copy-on-write maps below
	sources    map[string]*crlSource
	seen       map[string]bool // every distribution point considered, followed or not

	// Read on every handshake without a lock; replaced whole under mu.
	known   atomic.Pointer[map[string]bool]              // a copy of seen
	issuers atomic.Pointer[map[string]*x509.Certificate] // intermediates from verified chains, by issuerKey
	index   atomic.Pointer[crlIndex]

	wake        chan struct{}
	fetchErrors atomic.Int64
	invalid     atomic.Int64
	changed     chan struct{} // closed when the index changes; guarded by mu
}

// crlSource is one CRL URL and what was last fetched from it.
type crlSource struct {
	url          string
	etag         string
	lastModified string
	number       *big.Int
	thisUpdate   time.Time
	nextUpdate   time.Time
	issuer       *x509.Certificate
	serials      map[string]struct{} // serial number bytes
}

// crlIndex answers Revoked: the serial sets of every CRL held, by the
// signing issuer's key identifier and by its name.
type crlIndex struct {
	byKeyID map[string][]map[string]struct{}
	byName  map[string][]map[string]struct{}
}

// maxLearnedIssuers bounds the intermediates remembered from peer chains.
const maxLearnedIssuers = 256

// NewCRLChecker returns a checker; Run fetches and keeps refreshing.
func NewCRLChecker(cfg CRLConfig) (*CRLChecker, error) {
	if cfg.Roots == nil {
		return nil, errors.New("mtls: CRLConfig.Roots is required: the CRLs' signatures are checked against it (pass the Source's Roots)")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Minute
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 100 << 20
	}
	if cfg.MaxURLs <= 0 {
		cfg.MaxURLs = 64
	}
	c := &CRLChecker{cfg: cfg, log: cfg.Logger, sources: map[string]*crlSource{}, seen: map[string]bool{}, wake: make(chan struct{}, 1)}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	for _, u := range cfg.URLs {
		if !fetchable(u) {
			return nil, fmt.Errorf("mtls: CRL URL %q must be http:// or https://", u)
		}
		c.sources[u] = &crlSource{url: u}
		c.seen[u] = true
	}
	c.publishKnownLocked()
	c.issuers.Store(&map[string]*x509.Certificate{})
	c.index.Store(&crlIndex{})
	return c, nil
}

func fetchable(u string) bool {
	p, err := url.Parse(u)
	return err == nil && (p.Scheme == "http" || p.Scheme == "https") && p.Host != ""
}

// Run fetches every CRL now and again at its nextUpdate or every Interval,
// whichever comes first, and as soon as a new distribution point or issuer
// is seen, until ctx ends.
func (c *CRLChecker) Run(ctx context.Context) error {
	for {
		if err := c.Refresh(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("mtls: CRL refresh failed; keeping the CRLs held", slog.String("error", err.Error()))
		}
		t := time.NewTimer(c.nextWait())
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-c.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

func (c *CRLChecker) nextWait() time.Duration {
	wait := c.cfg.Interval
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.sources {
		if d := s.nextUpdate.Sub(now); !s.nextUpdate.IsZero() && d > 0 && d < wait {
			wait = d
		}
	}
	return wait
}

// Refresh fetches every CRL once and returns what failed; a CRL that
// cannot be fetched or verified keeps its previous version.
func (c *CRLChecker) Refresh(ctx context.Context) error {
	c.refreshing.Lock()
	defer c.refreshing.Unlock()
	c.mu.Lock()
	srcs := make([]crlSource, 0, len(c.sources))
	for _, s := range c.sources {
		srcs = append(srcs, *s)
	}
	c.mu.Unlock()

	var errs []error
	changed := false
	for i := range srcs {
		got, err := c.fetch(ctx, &srcs[i])
		if err != nil {
			c.fetchErrors.Add(1)
			errs = append(errs, err)
			continue
		}
		if got != nil {
			c.mu.Lock()
			c.sources[got.url] = got
			c.mu.Unlock()
			changed = true
		}
	}
	if changed {
		c.rebuildIndex()
	}
	return errors.Join(errs...)
}

// fetch returns the new state of s, or nil when the CRL did not change.
func (c *CRLChecker) fetch(ctx context.Context, s *crlSource) (*crlSource, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, fmt.Errorf("mtls: CRL %s: %w", s.url, err)
	}
	if s.etag != "" {
		req.Header.Set("If-None-Match", s.etag)
	}
	if s.lastModified != "" {
		req.Header.Set("If-Modified-Since", s.lastModified)
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("mtls: fetching the CRL %s: %w", s.url, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotModified:
		return nil, nil
	case http.StatusOK:
	default:
		return nil, fmt.Errorf("mtls: fetching the CRL %s: the server answered %s", s.url, resp.Status)
	}
	der, err := io.ReadAll(io.LimitReader(resp.Body, c.cfg.MaxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("mtls: reading the CRL %s: %w", s.url, err)
	}
	if int64(len(der)) > c.cfg.MaxBytes {
		return nil, fmt.Errorf("mtls: the CRL %s is larger than %d bytes: raise CRLConfig.MaxBytes if that is expected", s.url, c.cfg.MaxBytes)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		c.invalid.Add(1)
		return nil, fmt.Errorf("mtls: the CRL %s is not a DER CRL: %w", s.url, err)
	}
	issuer, err := c.trustedIssuer(crl)
	if err != nil {
		c.invalid.Add(1)
		return nil, fmt.Errorf("mtls: the CRL %s: %w", s.url, err)
	}
	if s.number != nil && crl.Number != nil && crl.Number.Cmp(s.number) < 0 {
		c.invalid.Add(1)
		return nil, fmt.Errorf("mtls: the CRL %s went back from number %s to %s: keeping the newer one", s.url, s.number, crl.Number)
	}
	if !crl.NextUpdate.IsZero() && crl.NextUpdate.Before(c.cfg.Now()) {
		c.log.Warn("mtls: the CRL is past its nextUpdate; using it until a newer one comes", slog.String("url", s.url),
			slog.Time("next_update", crl.NextUpdate))
	}
	serials := make(map[string]struct{}, len(crl.RevokedCertificateEntries))
	for _, e := range crl.RevokedCertificateEntries {
		serials[string(e.SerialNumber.Bytes())] = struct{}{}
	}
	return &crlSource{url: s.url, etag: resp.Header.Get("ETag"), lastModified: resp.Header.Get("Last-Modified"),
		number: crl.Number, thisUpdate: crl.ThisUpdate, nextUpdate: crl.NextUpdate, issuer: issuer, serials: serials}, nil
}

// trustedIssuer finds the certificate among the trusted roots and the
// intermediates of verified peer chains whose key signed crl.
func (c *CRLChecker) trustedIssuer(crl *x509.RevocationList) (*x509.Certificate, error) {
	learned := *c.issuers.Load()
	roots := c.cfg.Roots()
	cands := append(slices.Clip(roots), slices.Collect(maps.Values(learned))...) // Clip: never write into the caller's array
	for _, cand := range cands {
		sameKey := len(crl.AuthorityKeyId) > 0 && bytes.Equal(cand.SubjectKeyId, crl.AuthorityKeyId)
		if !sameKey && !bytes.Equal(cand.RawSubject, crl.RawIssuer) {
			continue
		}
		if err := crl.CheckSignatureFrom(cand); err == nil {
			return cand, nil
		}
	}
	return nil, fmt.Errorf("not signed by a trusted issuer (%d roots and %d intermediates of verified peers known); it is used once a peer of that issuer has been verified",
		len(cands)-len(learned), len(learned))
}

func (c *CRLChecker) rebuildIndex() {
	idx := &crlIndex{byKeyID: map[string][]map[string]struct{}{}, byName: map[string][]map[string]struct{}{}}
	c.mu.Lock()
	for _, s := range c.sources {
		if s.issuer == nil {
			continue
		}
		if k := string(s.issuer.SubjectKeyId); k != "" {
			idx.byKeyID[k] = append(idx.byKeyID[k], s.serials)
		}
		n := string(s.issuer.RawSubject)
		idx.byName[n] = append(idx.byName[n], s.serials)
	}
	c.index.Store(idx)
	if c.changed != nil {
		close(c.changed)
		c.changed = nil
	}
	c.mu.Unlock()
}

// Changed returns a channel that is closed the next time the CRLs held
// change.
func (c *CRLChecker) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.changed == nil {
		c.changed = make(chan struct{})
	}
	return c.changed
}

// Revoked reports whether a CRL held from cert's issuer lists cert. It
// makes no network call.
func (c *CRLChecker) Revoked(cert *x509.Certificate) bool {
	idx := c.index.Load()
	sets := idx.byKeyID[string(cert.AuthorityKeyId)]
	if len(cert.AuthorityKeyId) == 0 || len(sets) == 0 {
		sets = idx.byName[string(cert.RawIssuer)]
	}
	if len(sets) == 0 {
		return false
	}
	serial := cert.SerialNumber.Bytes()
	for _, s := range sets {
		if _, ok := s[string(serial)]; ok {
			return true
		}
	}
	return false
}

// observe learns, from a verified chain (leaf first), the CRL distribution
// points to follow and the intermediates that may sign CRLs. It is on the
// handshake path: the common case is two lock-free map reads.
func (c *CRLChecker) observe(chain []*x509.Certificate) {
	known, issuers := *c.known.Load(), *c.issuers.Load()
	var newURLs []string
	var newIssuers []*x509.Certificate
	for i, cert := range chain[:len(chain)-1] {
		for _, u := range cert.CRLDistributionPoints {
			if !known[u] {
				newURLs = append(newURLs, u)
			}
		}
		if i > 0 {
			if _, ok := issuers[issuerKey(cert)]; !ok {
				newIssuers = append(newIssuers, cert)
			}
		}
	}
	if len(newURLs) == 0 && len(newIssuers) == 0 {
		return
	}
	c.learn(newURLs, newIssuers)
}

func issuerKey(c *x509.Certificate) string {
	if len(c.SubjectKeyId) > 0 {
		return string(c.SubjectKeyId)
	}
	return string(c.RawSubject)
}

func (c *CRLChecker) learn(urls []string, issuers []*x509.Certificate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	added := false
	seen := false
	for _, u := range urls {
		if c.seen[u] {
			continue
		}
		// Remembered even when not followed, so that the handshakes of
		// its certificates do not come back here; bounded all the same.
		if len(c.seen) < 4*c.cfg.MaxURLs {
			c.seen[u], seen = true, true
		}
		switch {
		case !fetchable(u):
		case len(c.sources) >= c.cfg.MaxURLs:
			c.log.Warn("mtls: not following another CRL distribution point: the limit is reached", slog.String("url", u),
				slog.Int("max_urls", c.cfg.MaxURLs))
		default:
			c.sources[u] = &crlSource{url: u}
			added = true
		}
	}
	if seen {
		c.publishKnownLocked()
	}
	cur := *c.issuers.Load()
	if len(issuers) > 0 && len(cur) < maxLearnedIssuers {
		next := maps.Clone(cur)
		for _, is := range issuers {
			if len(next) < maxLearnedIssuers {
				next[issuerKey(is)] = is
			}
		}
		c.issuers.Store(&next)
		added = true
	}
	if added {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
}

func (c *CRLChecker) publishKnownLocked() {
	known := maps.Clone(c.seen)
	c.known.Store(&known)
}

// CRLStats is what a CRLChecker holds and has seen, for metrics.
type CRLStats struct {
	// Held is the number of CRLs held; OldestThisUpdate the thisUpdate of
	// the oldest (zero when none is held).
	Held             int
	OldestThisUpdate time.Time
	// FetchErrors counts failed fetches of any kind, Invalid the CRLs
	// refused as invalid among them (and among those loaded from memory).
	FetchErrors int64
	Invalid     int64
}

// Stats reports what the checker holds.
func (c *CRLChecker) Stats() CRLStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := CRLStats{FetchErrors: c.fetchErrors.Load(), Invalid: c.invalid.Load()}
	for _, s := range c.sources {
		if s.issuer == nil {
			continue
		}
		st.Held++
		if st.OldestThisUpdate.IsZero() || s.thisUpdate.Before(st.OldestThisUpdate) {
			st.OldestThisUpdate = s.thisUpdate
		}
	}
	return st
}
