package mtls

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/asn1"
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

// CRLPolicy says what a Verifier does when it holds no valid, fresh CRL
// for an issuer of a peer's path.
type CRLPolicy int

const (
	// CRLSoftFail accepts the peer: a CRL is the fallback behind the
	// revocation feed, and an unreachable CRL server must not stop every
	// handshake. CRLs held are used even past their nextUpdate, and a
	// certificate a held CRL lists is refused. The default.
	CRLSoftFail CRLPolicy = iota
	// CRLHardFail refuses the peer (ReasonCRLUnavailable) unless every
	// issuer of its path has a valid CRL whose thisUpdate..nextUpdate
	// covers the Verifier's clock. A peer whose CRLs have not been fetched
	// yet waits, at most VerifierConfig.CRLWait, while the CRLChecker
	// fetches them for the first time.
	CRLHardFail
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
	// MaxBytes bounds one CRL download; default 100 MiB.
	MaxBytes int64
	// MaxURLs bounds how many distribution points are followed; default 64.
	MaxURLs int
}

// CRLChecker keeps the revoked serials of CRLs in memory: it fetches them
// in the background (or is given them, Load), accepts only valid CRLs
// signed by a trusted issuer, and answers from memory, so the handshake
// never waits on the network (except, with CRLHardFail, a peer whose CRLs
// are being fetched for the first time). Whether a certificate whose
// issuer's CRL is not held is accepted is the Verifier's CRLPolicy.
//
// A CRL is valid when it parses, a trusted issuer whose key usage (if it
// has one) allows cRLSign signed it, it has a non-critical CRL number that
// does not go back, a nextUpdate, and no critical extension this checker
// does not implement (a delta CRL, an issuing distribution point that
// scopes it, an indirect CRL's certificate issuer). An invalid CRL changes
// nothing, is counted (CRLStats.Invalid) and is named in the refusal of a
// peer that needed it.
type CRLChecker struct {
	cfg CRLConfig
	log *slog.Logger

	refreshing sync.Mutex // one Refresh at a time
	mu         sync.Mutex // guards the fields below and the copy-on-write maps
	sources    map[string]*crlSource
	seen       map[string]bool // every distribution point considered, followed or not
	invalid    map[string]error
	changed    chan struct{} // closed when the index changes
	loaded     int
	pending    []pendingCRL // loaded CRLs whose issuer is not known yet

	// Read on every handshake without a lock; replaced whole under mu.
	known   atomic.Pointer[map[string]bool]              // a copy of seen
	issuers atomic.Pointer[map[string]*x509.Certificate] // intermediates from verified chains, by issuerKey
	index   atomic.Pointer[crlIndex]

	wake        chan struct{}
	fetchErrors atomic.Int64
	invalidN    atomic.Int64
}

// crlSource is one CRL URL (or one loaded from memory) and what was last
// taken from it.
type crlSource struct {
	url          string
	memory       bool
	attempted    bool // a fetch of it finished, well or not
	etag         string
	lastModified string
	crl          *heldCRL
}

// heldCRL is a valid CRL.
type heldCRL struct {
	number     *big.Int
	thisUpdate time.Time
	nextUpdate time.Time
	issuer     *x509.Certificate
	serials    map[string]struct{} // serial number bytes
	from       string
}

// crlIndex answers lookups: the CRLs held by the signing issuer's key
// identifier and by its name, and the last invalid CRL of an issuer by the
// same keys.
type crlIndex struct {
	byKeyID, byName         map[string][]*heldCRL
	invalidKey, invalidName map[string]error
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
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 100 << 20
	}
	if cfg.MaxURLs <= 0 {
		cfg.MaxURLs = 64
	}
	c := &CRLChecker{cfg: cfg, log: cfg.Logger, sources: map[string]*crlSource{}, seen: map[string]bool{},
		invalid: map[string]error{}, wake: make(chan struct{}, 1)}
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
// is seen, until ctx ends. (Timers follow the machine's clock; whether a
// CRL is fresh is judged by the Verifier's.)
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
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.sources {
		if s.crl == nil || s.memory {
			continue
		}
		if d := s.crl.nextUpdate.Sub(now); d > 0 && d < wait {
			wait = d
		}
	}
	return wait
}

// Refresh fetches every CRL URL once and returns what failed; a CRL that
// cannot be fetched or is invalid keeps its previous version.
func (c *CRLChecker) Refresh(ctx context.Context) error {
	c.refreshing.Lock()
	defer c.refreshing.Unlock()
	c.mu.Lock()
	var srcs []crlSource
	for _, s := range c.sources {
		if !s.memory {
			srcs = append(srcs, *s)
		}
	}
	c.mu.Unlock()

	var errs []error
	changed := false
	for i := range srcs {
		s := &srcs[i]
		got, err := c.fetch(ctx, s)
		if err != nil {
			c.fetchErrors.Add(1)
			errs = append(errs, err)
		}
		c.mu.Lock()
		if cur := c.sources[s.url]; cur != nil {
			// A first attempt, even a failed one, is news to a hard-fail
			// verification waiting for it.
			changed = changed || !cur.attempted
			cur.attempted = true
			if got != nil {
				cur.crl, cur.etag, cur.lastModified = got, s.etag, s.lastModified
				changed = true
			}
		}
		c.mu.Unlock()
	}
	c.rebuildIndex(changed)
	return errors.Join(errs...)
}

// fetch returns the new CRL of s (s's etag and lastModified updated), or
// nil when it did not change.
func (c *CRLChecker) fetch(ctx context.Context, s *crlSource) (*heldCRL, error) {
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
	var prev *big.Int
	if s.crl != nil {
		prev = s.crl.number
	}
	held, err := c.accept(der, s.url, prev)
	if err != nil {
		return nil, err
	}
	s.etag, s.lastModified = resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
	return held, nil
}

// Load adds a CRL given in DER (from a file, a test vector, a message), as
// if fetched: it must be valid and signed by a trusted issuer, and it
// replaces an older CRL of the same issuer. A CRL of an intermediate not
// known yet (learned from a verified chain) is kept, and used from the
// first verification of a chain through that intermediate. An invalid CRL
// changes nothing, is counted and is returned as the error.
func (c *CRLChecker) Load(der []byte) error {
	c.mu.Lock()
	c.loaded++
	from := fmt.Sprintf("loaded CRL #%d", c.loaded)
	c.mu.Unlock()
	held, err := c.acceptLoaded(der, from)
	if errors.Is(err, errUnknownIssuer) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if len(c.pending) >= maxLearnedIssuers {
			return fmt.Errorf("mtls: %s: %w, and %d CRLs already wait for theirs", from, err, len(c.pending))
		}
		c.pending = append(c.pending, pendingCRL{der: der, from: from})
		return nil
	}
	if err != nil {
		return err
	}
	c.hold(held)
	return nil
}

// hold keeps a CRL loaded from memory.
func (c *CRLChecker) hold(held *heldCRL) {
	key := "memory:" + issuerKey(held.issuer)
	c.mu.Lock()
	c.sources[key] = &crlSource{url: key, memory: true, attempted: true, crl: held}
	c.mu.Unlock()
	c.rebuildIndex(true)
}

// pendingCRL is a loaded CRL waiting for its issuer to be learned.
type pendingCRL struct {
	der  []byte
	from string
}

// retryPending accepts the loaded CRLs whose issuer has just been learned.
func (c *CRLChecker) retryPending() {
	c.mu.Lock()
	pending := c.pending
	c.pending = nil
	c.mu.Unlock()
	var still []pendingCRL
	for _, p := range pending {
		held, err := c.acceptLoaded(p.der, p.from)
		switch {
		case errors.Is(err, errUnknownIssuer):
			still = append(still, p)
		case err != nil:
			c.log.Warn("mtls: a loaded CRL is invalid", slog.String("error", err.Error()))
		default:
			c.hold(held)
		}
	}
	c.mu.Lock()
	c.pending = append(c.pending, still...)
	c.mu.Unlock()
}

func (c *CRLChecker) acceptLoaded(der []byte, from string) (*heldCRL, error) {
	var prev *big.Int
	if crl, err := x509.ParseRevocationList(der); err == nil {
		c.mu.Lock()
		for _, s := range c.sources {
			if s.memory && s.crl != nil && bytes.Equal(s.crl.issuer.RawSubject, crl.RawIssuer) {
				prev = s.crl.number
			}
		}
		c.mu.Unlock()
	}
	return c.accept(der, from, prev)
}

// errUnknownIssuer: no trusted issuer has the CRL's issuer name or key
// identifier (yet).
var errUnknownIssuer = errors.New("not signed by a trusted issuer")

// OIDs of the CRL extensions this checker implements.
var (
	oidCRLNumber      = asn1.ObjectIdentifier{2, 5, 29, 20}
	oidIssuerAltName  = asn1.ObjectIdentifier{2, 5, 29, 18}
	oidCRLReason      = asn1.ObjectIdentifier{2, 5, 29, 21}
	oidInvalidityDate = asn1.ObjectIdentifier{2, 5, 29, 24}
)

// accept parses and validates one CRL. Every refusal after the parse is an
// invalid CRL: counted, and remembered for the issuer it names so that a
// hard-fail refusal can say why no CRL was usable.
func (c *CRLChecker) accept(der []byte, from string, prev *big.Int) (*heldCRL, error) {
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		c.invalidN.Add(1)
		return nil, fmt.Errorf("mtls: the CRL %s is not a DER CRL: %w", from, err)
	}
	bad := func(format string, args ...any) (*heldCRL, error) {
		err := fmt.Errorf("mtls: the CRL %s of %s is invalid: %s", from, crl.Issuer, fmt.Sprintf(format, args...))
		c.invalidN.Add(1)
		c.mu.Lock()
		if len(crl.AuthorityKeyId) > 0 {
			c.invalid["key:"+string(crl.AuthorityKeyId)] = err
		}
		c.invalid["name:"+string(crl.RawIssuer)] = err
		c.mu.Unlock()
		c.rebuildIndex(false)
		return nil, err
	}
	issuer, err := c.trustedIssuer(crl)
	if errors.Is(err, errUnknownIssuer) {
		return nil, fmt.Errorf("mtls: the CRL %s of %s: %w", from, crl.Issuer, err)
	}
	if err != nil {
		return bad("%v", err)
	}
	// RFC 5280 6.3.3(f): an issuer whose key usage is present must
	// assert cRLSign.
	if hasExtension(issuer, oidKeyUsage) && issuer.KeyUsage&x509.KeyUsageCRLSign == 0 {
		return bad("its issuer's key usage does not allow cRLSign (RFC 5280 4.2.1.3)")
	}
	var hasNumber bool
	for _, e := range crl.Extensions {
		switch {
		case e.Id.Equal(oidCRLNumber):
			hasNumber = true
			if e.Critical {
				return bad("the CRL number extension is critical (RFC 5280 5.2.3: it is non-critical)")
			}
		case e.Id.Equal(oidAuthorityKeyID), e.Id.Equal(oidIssuerAltName):
		case e.Critical:
			// A delta CRL indicator, an issuing distribution point (a CRL
			// scoped to part of the issuer's certificates) or anything
			// else: using such a CRL as a complete one would be wrong.
			return bad("it has critical extension %s, which this verifier does not implement (RFC 5280 5.2)", e.Id)
		}
	}
	if !hasNumber || crl.Number == nil {
		return bad("it has no CRL number (RFC 5280 5.2.3: conforming CRLs MUST carry one)")
	}
	if crl.NextUpdate.IsZero() {
		return bad("it has no nextUpdate (RFC 5280 5.1.2.5: conforming CRLs MUST carry one)")
	}
	if prev != nil && crl.Number.Cmp(prev) < 0 {
		return bad("its number went back from %s to %s: keeping the newer one", prev, crl.Number)
	}
	serials := make(map[string]struct{}, len(crl.RevokedCertificateEntries))
	for _, e := range crl.RevokedCertificateEntries {
		for _, ext := range e.Extensions {
			if ext.Critical && !ext.Id.Equal(oidCRLReason) && !ext.Id.Equal(oidInvalidityDate) {
				// Most likely certificateIssuer: an indirect CRL.
				return bad("an entry has critical extension %s, which this verifier does not implement", ext.Id)
			}
		}
		serials[string(e.SerialNumber.Bytes())] = struct{}{}
	}
	c.mu.Lock()
	delete(c.invalid, "key:"+string(crl.AuthorityKeyId))
	delete(c.invalid, "name:"+string(crl.RawIssuer))
	c.mu.Unlock()
	return &heldCRL{number: crl.Number, thisUpdate: crl.ThisUpdate, nextUpdate: crl.NextUpdate, issuer: issuer,
		serials: serials, from: from}, nil
}

// trustedIssuer finds the certificate among the trusted roots and the
// intermediates of verified peer chains whose key signed crl.
func (c *CRLChecker) trustedIssuer(crl *x509.RevocationList) (*x509.Certificate, error) {
	learned := *c.issuers.Load()
	roots := c.cfg.Roots()
	cands := append(slices.Clip(roots), slices.Collect(maps.Values(learned))...) // Clip: never write into the caller's array
	var sigErr error
	for _, cand := range cands {
		sameKey := len(crl.AuthorityKeyId) > 0 && bytes.Equal(cand.SubjectKeyId, crl.AuthorityKeyId)
		if !sameKey && !bytes.Equal(cand.RawSubject, crl.RawIssuer) {
			continue
		}
		// The key usage is checked by accept, with a clearer message;
		// crypto/x509 refuses a missing cRLSign here.
		if err := checkCRLSignature(crl, cand); err == nil {
			return cand, nil
		} else {
			sigErr = err
		}
	}
	if sigErr != nil {
		return nil, fmt.Errorf("its signature does not verify with its issuer's key: %w", sigErr)
	}
	return nil, fmt.Errorf("%w (%d roots and %d intermediates of verified peers known); it is used once a peer of that issuer has been verified",
		errUnknownIssuer, len(cands)-len(learned), len(learned))
}

// checkCRLSignature checks crl's signature with issuer's key, whatever
// the issuer's key usage says (accept judges that).
func checkCRLSignature(crl *x509.RevocationList, issuer *x509.Certificate) error {
	if issuer.KeyUsage != 0 && issuer.KeyUsage&x509.KeyUsageCRLSign == 0 {
		cp := *issuer
		cp.KeyUsage |= x509.KeyUsageCRLSign
		issuer = &cp
	}
	return crl.CheckSignatureFrom(issuer)
}

// rebuildIndex publishes the CRLs held and the invalid ones; changed
// wakes whoever waits on Changed.
func (c *CRLChecker) rebuildIndex(changed bool) {
	idx := &crlIndex{byKeyID: map[string][]*heldCRL{}, byName: map[string][]*heldCRL{},
		invalidKey: map[string]error{}, invalidName: map[string]error{}}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.sources {
		if s.crl == nil {
			continue
		}
		if k := string(s.crl.issuer.SubjectKeyId); k != "" {
			idx.byKeyID[k] = append(idx.byKeyID[k], s.crl)
		}
		n := string(s.crl.issuer.RawSubject)
		idx.byName[n] = append(idx.byName[n], s.crl)
	}
	for k, err := range c.invalid {
		switch {
		case len(k) > 4 && k[:4] == "key:":
			idx.invalidKey[k[4:]] = err
		case len(k) > 5 && k[:5] == "name:":
			idx.invalidName[k[5:]] = err
		}
	}
	c.index.Store(idx)
	if changed && c.changed != nil {
		close(c.changed)
		c.changed = nil
	}
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

// crlVerdict is what the CRLs held say of one certificate at one time.
type crlVerdict struct {
	revoked bool
	fresh   bool  // a valid CRL of the issuer covers the time
	held    bool  // a valid CRL of the issuer is held, fresh or not
	invalid error // the last invalid CRL of the issuer, if any
	stale   *heldCRL
}

// lookup says whether a CRL held lists cert, and whether one of its
// issuer is held and fresh at now. It makes no network call.
func (c *CRLChecker) lookup(cert *x509.Certificate, now time.Time) crlVerdict {
	idx := c.index.Load()
	crls := idx.byKeyID[string(cert.AuthorityKeyId)]
	if len(cert.AuthorityKeyId) == 0 || len(crls) == 0 {
		crls = idx.byName[string(cert.RawIssuer)]
	}
	var v crlVerdict
	serial := cert.SerialNumber.Bytes()
	for _, h := range crls {
		// A CRL of another issuer with the same name (a re-keyed CA) does
		// not speak for this certificate.
		if len(cert.AuthorityKeyId) > 0 && len(h.issuer.SubjectKeyId) > 0 && !bytes.Equal(cert.AuthorityKeyId, h.issuer.SubjectKeyId) {
			continue
		}
		if !bytes.Equal(h.issuer.RawSubject, cert.RawIssuer) {
			continue
		}
		v.held = true
		if _, ok := h.serials[string(serial)]; ok {
			v.revoked = true
		}
		if !now.Before(h.thisUpdate) && now.Before(h.nextUpdate) {
			v.fresh = true
		} else {
			v.stale = h
		}
	}
	if !v.fresh {
		if err := idx.invalidKey[string(cert.AuthorityKeyId)]; len(cert.AuthorityKeyId) > 0 && err != nil {
			v.invalid = err
		} else if err := idx.invalidName[string(cert.RawIssuer)]; err != nil {
			v.invalid = err
		}
	}
	return v
}

// Revoked reports whether a CRL held from cert's issuer lists cert. It
// makes no network call.
func (c *CRLChecker) Revoked(cert *x509.Certificate) bool {
	return c.lookup(cert, time.Time{}).revoked
}

// firstFetchPending reports whether a CRL URL has never been fetched yet:
// a hard-fail verification waits for it, a bounded time.
func (c *CRLChecker) firstFetchPending() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.sources {
		if !s.attempted {
			return true
		}
	}
	return false
}

// poke asks Run to refresh now.
func (c *CRLChecker) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
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
	if c.learnLocked(urls, issuers) {
		c.retryPending()
	}
}

// learnLocked records what observe found and reports whether loaded CRLs
// wait for a newly learned issuer.
func (c *CRLChecker) learnLocked(urls []string, issuers []*x509.Certificate) (retry bool) {
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
		retry = len(c.pending) > 0
	}
	if added {
		c.poke()
	}
	return retry
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
	// FetchErrors counts failed fetches of any kind; Invalid the CRLs
	// refused as invalid, fetched or loaded.
	FetchErrors int64
	Invalid     int64
}

// Stats reports what the checker holds.
func (c *CRLChecker) Stats() CRLStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := CRLStats{FetchErrors: c.fetchErrors.Load(), Invalid: c.invalidN.Load()}
	for _, s := range c.sources {
		if s.crl == nil {
			continue
		}
		st.Held++
		if st.OldestThisUpdate.IsZero() || s.crl.thisUpdate.Before(st.OldestThisUpdate) {
			st.OldestThisUpdate = s.crl.thisUpdate
		}
	}
	return st
}

func hasExtension(c *x509.Certificate, oid asn1.ObjectIdentifier) bool {
	for _, e := range c.Extensions {
		if e.Id.Equal(oid) {
			return true
		}
	}
	return false
}
