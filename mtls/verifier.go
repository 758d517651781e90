package mtls

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/revocation"
)

// TrustSource supplies the trust anchors peers are verified against. Every
// Source is one; a verifier that presents no certificate of its own needs
// only this ([StaticRoots]). Roots returns a new slice when the roots
// change and never modifies one it returned.
type TrustSource interface {
	Roots() []*x509.Certificate
}

// StaticRoots is a TrustSource that never changes: a verify-only source
// for harnesses, message signatures and tests.
func StaticRoots(roots ...*x509.Certificate) TrustSource {
	return staticRoots(append([]*x509.Certificate(nil), roots...))
}

type staticRoots []*x509.Certificate

func (r staticRoots) Roots() []*x509.Certificate { return r }

// VerifierConfig configures a Verifier. Roots and Authorize are required;
// every other field may be left zero.
type VerifierConfig struct {
	// Roots are the trust anchors, read on every verification.
	Roots TrustSource
	// Authorize decides which verified peers are accepted. nil is an
	// error: there is no implicit allow-all.
	Authorize Authorizer
	// Usages are the extended key usages a leaf must name (any one of
	// them); x509.ExtKeyUsageAny in the list accepts a leaf whatever its
	// usages. nil lets the use decide: ServerConfig requires clientAuth,
	// ClientConfig serverAuth, and Verify requires VerifyOptions.Usages.
	Usages []x509.ExtKeyUsage
	// PinnedCAs, when set, accept only peers whose verified path goes
	// through a CA (intermediate or root) whose public key is pinned.
	// Pinning the root survives the rotation of intermediates; pinning an
	// intermediate, its re-issuance with the same key.
	PinnedCAs []SPKIPin
	// Revocations is the push feed's in-memory view
	// (revocation.Subscriber.Set()); every certificate of the peer's chain
	// is looked up in it, and every name of the peer in its deny list.
	Revocations *revocation.Set
	// CRL is the fallback for when the feed is absent or stale. It learns
	// the CRL distribution points and issuers of verified peers and fetches
	// in the background (run it with CRLChecker.Run).
	CRL *CRLChecker
	// CRLPolicy says what happens when CRL is set but holds no valid,
	// fresh CRL for an issuer of a peer's path: CRLSoftFail (the default)
	// accepts, CRLHardFail refuses.
	CRLPolicy CRLPolicy
	// CRLWait bounds how long a hard-fail verification waits for a CRL
	// being fetched for the first time; default 2s.
	CRLWait time.Duration
	// Metrics is told of verifications, refused requests and closed
	// connections (mtlsprom.New exports them to Prometheus); nil: none.
	Metrics Metrics
	// Now is the one clock of the Verifier: certificates, CRLs and the
	// configs' handshakes are judged by it. Default time.Now.
	Now func() time.Time
	// Logger gets one Info line per refused peer; default: discarded.
	Logger *slog.Logger
}

// defaultCRLWait bounds a hard-fail verification's wait for a first CRL.
const defaultCRLWait = 2 * time.Second

// Verifier judges peers: their certificate chain (with rules beyond
// crypto/x509's, see docs/verifier.md), identity, pinned CAs, revocation
// and authorization. Use it in a TLS handshake (the configs of
// [ServerConfig] and [ClientConfig]), without one ([Verifier.Verify]), and
// for as long as the connections it accepted live ([Verifier.Run],
// [Verifier.ConnState], [Verifier.Middleware]). It is safe for concurrent
// use; one Verifier may serve any number of configs and connections.
type Verifier struct {
	cfg     VerifierConfig
	now     func() time.Time
	log     *slog.Logger
	metrics Metrics
	pins    map[SPKIPin]bool
	pools   poolCache
	chains  chainCache
	live    liveConns
}

// NewVerifier checks cfg and returns a Verifier.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	if cfg.Roots == nil {
		return nil, errors.New("mtls: VerifierConfig.Roots is required: pass the Source (NewFileSource, workload.NewSource) or StaticRoots")
	}
	if cfg.Authorize == nil {
		return nil, errors.New("mtls: the Authorizer is required: say who may connect, e.g. mtls.AuthorizeTrustDomains(\"example.org\")")
	}
	if cfg.CRLPolicy == CRLHardFail && cfg.CRL == nil {
		return nil, errors.New("mtls: CRLHardFail needs a CRLChecker (VerifierConfig.CRL) to take CRLs from")
	}
	if cfg.CRLWait <= 0 {
		cfg.CRLWait = defaultCRLWait
	}
	v := &Verifier{cfg: cfg, now: cfg.Now, log: cfg.Logger, metrics: cfg.Metrics}
	if v.now == nil {
		v.now = time.Now
	}
	if v.log == nil {
		v.log = slog.New(slog.DiscardHandler)
	}
	if v.metrics == nil {
		v.metrics = nopMetrics{}
	}
	if len(cfg.PinnedCAs) > 0 {
		v.pins = map[SPKIPin]bool{}
		for _, p := range cfg.PinnedCAs {
			v.pins[p] = true
		}
	}
	if w, ok := v.metrics.(RevocationWatcher); ok {
		w.WatchRevocations(cfg.Revocations, cfg.CRL)
	}
	return v, nil
}

// VerifyOptions are the per-call choices of Verify.
type VerifyOptions struct {
	// Usages replace the Verifier's (VerifierConfig.Usages) for this call.
	Usages []x509.ExtKeyUsage
	// Authorize replaces the Verifier's Authorizer for this call.
	Authorize Authorizer
}

// Verify judges a peer's certificates outside a TLS handshake (a gRPC
// interceptor, a signed message, a harness): chain is the leaf first, then
// the intermediates the peer sent, in any order. It runs the same checks as
// a handshake, in the same order, and returns the verified peer or a
// *RejectError. It is counted with side SideVerify.
func (v *Verifier) Verify(chain []*x509.Certificate, opts VerifyOptions) (Peer, error) {
	usages := opts.Usages
	if usages == nil {
		usages = v.cfg.Usages
	}
	if len(usages) == 0 {
		return Peer{}, errors.New("mtls: Verify needs the extended key usage the peer must have: set VerifyOptions.Usages or VerifierConfig.Usages (x509.ExtKeyUsageAny for none)")
	}
	authorize := opts.Authorize
	if authorize == nil {
		authorize = v.cfg.Authorize
	}
	p, rej := v.check(chain, usages, authorize)
	v.count(SideVerify, rej, false)
	if rej != nil {
		return Peer{}, rej
	}
	return p.peer(), nil
}

// usagesFor is what a side requires of its peers.
func (v *Verifier) usagesFor(side string) []x509.ExtKeyUsage {
	if v.cfg.Usages != nil {
		return v.cfg.Usages
	}
	if side == sideClient {
		return []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	return []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
}

// verifyConnection is the tls.Config.VerifyConnection hook of one side.
func (v *Verifier) verifyConnection(side string, authorize Authorizer) func(tls.ConnectionState) error {
	usages := v.usagesFor(side)
	return func(cs tls.ConnectionState) error {
		_, rej := v.check(cs.PeerCertificates, usages, authorize)
		v.count(side, rej, cs.DidResume)
		if rej != nil {
			return rej
		}
		return nil
	}
}

func (v *Verifier) count(side string, rej *RejectError, resumed bool) {
	if rej == nil {
		v.metrics.Verified(side, ReasonOK)
		return
	}
	v.metrics.Verified(side, rej.Reason)
	v.log.Info("mtls: peer refused", slog.String("side", side), slog.String("reason", string(rej.Reason)),
		slog.String("rule", rej.Rule), slog.String("identity", rej.Identity.String()), slog.Bool("resumed", resumed),
		slog.String("error", rej.Err.Error()))
}

// judged is a peer whose chain verified: the chain (leaf first, root
// last) and the identity it names.
type judged struct {
	chain []*x509.Certificate
	id    identity.Identity
}

func (p judged) peer() Peer {
	leaf := p.chain[0]
	return Peer{Identity: p.id, Certificate: leaf, Chain: p.chain, Serial: leaf.SerialNumber.Text(16), Fingerprint: fingerprint(leaf)}
}

// check runs every test in the documented order and returns the verified
// peer, or the first refusal.
func (v *Verifier) check(certs []*x509.Certificate, usages []x509.ExtKeyUsage, authorize Authorizer) (judged, *RejectError) {
	p, rej := v.verifiedChain(certs, usages)
	if rej != nil {
		return p, rej
	}
	if rej := v.revoked(p.chain, p.id, true); rej != nil {
		return p, rej
	}
	if err := authorize(p.id, p.chain); err != nil {
		return p, &RejectError{Reason: ReasonUnauthorized, Identity: p.id, Err: err}
	}
	return p, nil
}

// verifiedChain returns the peer's verified chain, from the cache when it
// verified before with the same roots and usages and is still inside its
// validity.
func (v *Verifier) verifiedChain(certs []*x509.Certificate, usages []x509.ExtKeyUsage) (judged, *RejectError) {
	if len(certs) == 0 {
		return judged{}, reject(ReasonNoCertificate, identity.Identity{},
			"the peer presented no certificate: give it a mica certificate (agent files or the Workload API)")
	}
	roots := v.pools.get(v.cfg.Roots.Roots())
	if roots == nil {
		id, _ := identity.FromCertificate(certs[0])
		return judged{id: id}, reject(ReasonUnknownCA, id, "the trust bundle is empty: check bundle.pem or the Workload API")
	}
	now := v.now()
	key := chainKey(certs, usages)
	if e := v.chains.get(key, roots, now); e != nil {
		return judged{chain: e.chain, id: e.id}, nil
	}
	chain, id, rej := v.verifyChain(certs, roots, now, usages)
	if rej != nil {
		if rej.Identity.IsZero() {
			rej.Identity = id
		}
		return judged{id: id}, rej
	}
	v.chains.put(key, roots, chain, id)
	return judged{chain: chain, id: id}, nil
}

// verifyChain checks the peer's chain against roots at now: crypto/x509's
// path building and checks, then, on each path it found until one passes,
// the rules beyond them, the usage and the pins; then the identity.
func (v *Verifier) verifyChain(certs []*x509.Certificate, roots *x509.CertPool, now time.Time, usages []x509.ExtKeyUsage) ([]*x509.Certificate, identity.Identity, *RejectError) {
	leaf := certs[0]
	id, _ := identity.FromCertificate(leaf) // for messages; judged below
	if rej := precheck(certs); rej != nil {
		return nil, id, rej
	}
	opts := x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: usages}
	if len(certs) > 1 {
		opts.Intermediates = x509.NewCertPool()
		for _, c := range certs[1:] {
			opts.Intermediates.AddCert(c)
		}
	}
	paths, err := leaf.Verify(opts)
	if err != nil {
		return nil, id, classify(err, now, id)
	}
	// Go lets a leaf without the extension pass for any usage; a mica
	// certificate always names its usages, and one that does not is not
	// meant for this.
	if !namesUsage(leaf, usages) {
		return nil, id, reject(ReasonWrongEKU, id, "the certificate does not name the %s extended key usage: issue it under a profile with it",
			usageNames(usages))
	}
	var first *RejectError
	var path []*x509.Certificate
	for _, p := range paths {
		rej := checkPath(p)
		if rej == nil && v.pins != nil && !v.pinned(p) {
			rej = reject(ReasonNotPinned, id, "no CA of the path %s is pinned: the peer is not under the CAs this service accepts", pathNames(p))
		}
		if rej == nil {
			path = p
			break
		}
		if first == nil {
			first = rej
		}
	}
	if path == nil {
		return nil, id, first
	}
	id, rej := readIdentity(leaf)
	if rej != nil {
		return nil, id, rej
	}
	return path, id, nil
}

// revoked checks the revocation feed (serials, then the deny list) and the
// CRLs for a verified chain; wait lets a hard-fail check wait for a first
// CRL.
func (v *Verifier) revoked(chain []*x509.Certificate, id identity.Identity, wait bool) *RejectError {
	issued := chain[:len(chain)-1] // the root is trusted as configured, not revoked by a feed
	if set := v.cfg.Revocations; set != nil {
		for _, c := range issued {
			if set.Revoked(c.SerialNumber.Text(16)) {
				return &RejectError{Reason: ReasonRevokedFeed, Identity: id, Certificate: c,
					Err: fmt.Errorf("certificate %s is revoked (revocation feed)", describe(c))}
			}
		}
		if name, ok := set.DeniedAny(id); ok {
			return reject(ReasonDenied, id, "identity %s is on the deny list", name)
		}
	}
	if v.cfg.CRL != nil {
		return v.checkCRLs(issued, chain, id, wait)
	}
	return nil
}

// checkCRLs applies the CRLs held, and the CRL policy.
func (v *Verifier) checkCRLs(issued, chain []*x509.Certificate, id identity.Identity, wait bool) *RejectError {
	crl := v.cfg.CRL
	crl.observe(chain)
	var deadline time.Time
	for {
		changed := crl.Changed() // before looking, so a change while looking is not missed
		now := v.now()
		var missing *x509.Certificate
		var why error
		for _, c := range issued {
			verdict := crl.lookup(c, now)
			if verdict.revoked {
				return &RejectError{Reason: ReasonRevokedCRL, Identity: id, Certificate: c,
					Err: fmt.Errorf("certificate %s is revoked (CRL)", describe(c))}
			}
			if !verdict.fresh && missing == nil {
				missing = c
				switch {
				case verdict.invalid != nil:
					why = verdict.invalid
				case verdict.stale != nil:
					why = fmt.Errorf("the CRL held (%s) is valid from %s to %s", verdict.stale.from,
						verdict.stale.thisUpdate.Format(time.RFC3339), verdict.stale.nextUpdate.Format(time.RFC3339))
				default:
					why = errors.New("no CRL of its issuer is held")
				}
			}
		}
		if missing == nil || v.cfg.CRLPolicy != CRLHardFail {
			return nil
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(v.cfg.CRLWait)
		}
		left := time.Until(deadline)
		if !wait || left <= 0 || !crl.firstFetchPending() {
			return &RejectError{Reason: ReasonCRLUnavailable, Identity: id, Certificate: missing,
				Err: fmt.Errorf("no valid, fresh CRL for certificate %s, issued by %q (%w), and the CRL policy is hard-fail", describe(missing), missing.Issuer.String(), why)}
		}
		crl.poke()
		t := time.NewTimer(left)
		select {
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}

// SPKIPin is the SHA-256 of a certificate's SubjectPublicKeyInfo: what
// VerifierConfig.PinnedCAs lists.
type SPKIPin [sha256.Size]byte

// PinOf is the pin of c's public key.
func PinOf(c *x509.Certificate) SPKIPin { return sha256.Sum256(c.RawSubjectPublicKeyInfo) }

// String writes the pin as "sha256/" and its base64, the form ParsePin
// reads (and HPKP and curl's --pinnedpubkey use).
func (p SPKIPin) String() string { return "sha256/" + base64.StdEncoding.EncodeToString(p[:]) }

// ParsePin reads a pin written "sha256/<base64 of the SHA-256 of the
// SubjectPublicKeyInfo>", e.g. the output of
// `openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64`.
func ParsePin(s string) (SPKIPin, error) {
	var p SPKIPin
	b64, ok := strings.CutPrefix(s, "sha256/")
	if !ok {
		return p, fmt.Errorf("mtls: pin %q must be written sha256/<base64 of the SHA-256 of the CA's SubjectPublicKeyInfo>", s)
	}
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(b) != sha256.Size {
		return p, fmt.Errorf("mtls: pin %q: the base64 after sha256/ must decode to 32 bytes", s)
	}
	copy(p[:], b)
	return p, nil
}

func (v *Verifier) pinned(path []*x509.Certificate) bool {
	for _, c := range path[1:] {
		if v.pins[PinOf(c)] {
			return true
		}
	}
	return false
}

func pathNames(path []*x509.Certificate) string {
	var names []string
	for _, c := range path[1:] {
		names = append(names, fmt.Sprintf("%q", c.Subject.String()))
	}
	return strings.Join(names, " → ")
}

// namesUsage reports whether the leaf names one of the usages, or the
// usages accept any.
func namesUsage(c *x509.Certificate, usages []x509.ExtKeyUsage) bool {
	for _, u := range usages {
		if u == x509.ExtKeyUsageAny {
			return true
		}
		for _, e := range c.ExtKeyUsage {
			if e == u {
				return true
			}
		}
	}
	return false
}

func usageNames(usages []x509.ExtKeyUsage) string {
	var names []string
	for _, u := range usages {
		switch u {
		case x509.ExtKeyUsageClientAuth:
			names = append(names, "clientAuth")
		case x509.ExtKeyUsageServerAuth:
			names = append(names, "serverAuth")
		default:
			names = append(names, fmt.Sprintf("usage %d", u))
		}
	}
	return strings.Join(names, " or ")
}
