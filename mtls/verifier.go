package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"time"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/revocation"
)

// TrustSource supplies the trust anchors peers are verified against. Every
// Source is one; a verifier that presents no certificate of its own needs
// only this. Roots returns a new slice when the roots change and never
// modifies one it returned.
type TrustSource interface {
	Roots() []*x509.Certificate
}

// VerifierConfig configures a Verifier. Roots and Authorize are required;
// every other field may be left zero.
type VerifierConfig struct {
	// Roots are the trust anchors, read on every verification.
	Roots TrustSource
	// Authorize decides which verified peers are accepted. nil is an
	// error: there is no implicit allow-all.
	Authorize Authorizer
	// Revocations is the push feed's in-memory view
	// (revocation.Subscriber.Set()); every certificate of the peer's chain
	// is looked up in it, and every name of the peer in its deny list.
	Revocations *revocation.Set
	// CRL is the fallback for when the feed is absent or stale. It learns
	// the CRL distribution points and issuers of verified peers and fetches
	// in the background (run it with CRLChecker.Run).
	CRL *CRLChecker
	// Metrics is told of verifications, refused requests and closed
	// connections (mtlsprom.New exports them to Prometheus); nil: none.
	Metrics Metrics
	// Now is the clock certificates are judged by; default time.Now.
	Now func() time.Time
	// Logger gets one Info line per refused peer; default: discarded.
	Logger *slog.Logger
}

// Verifier judges peers: their certificate chain, revocation and identity,
// at the handshake (the configs of [ServerConfig] and [ClientConfig]) and
// for as long as their connections live (see [Verifier.Run],
// [Verifier.ConnState], [Verifier.Middleware]). It is safe for concurrent
// use; one Verifier may serve any number of configs and connections.
type Verifier struct {
	cfg     VerifierConfig
	now     func() time.Time
	log     *slog.Logger
	metrics Metrics
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
	if w, ok := v.metrics.(RevocationWatcher); ok {
		w.WatchRevocations(cfg.Revocations, cfg.CRL)
	}
	return v, nil
}

// verifyConnection is the tls.Config.VerifyConnection hook of one side.
func (v *Verifier) verifyConnection(side string, usage x509.ExtKeyUsage, authorize Authorizer) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		_, rej := v.check(cs.PeerCertificates, usage, authorize)
		if rej == nil {
			v.metrics.Verified(side, ReasonOK)
			return nil
		}
		v.metrics.Verified(side, rej.Reason)
		v.log.Info("mtls: peer refused", slog.String("side", side), slog.String("reason", string(rej.Reason)),
			slog.String("identity", rej.Identity.String()), slog.Bool("resumed", cs.DidResume), slog.String("error", rej.Err.Error()))
		return rej
	}
}

// judged is a peer whose chain verified: the chain (leaf first, root
// last) and the identity it names.
type judged struct {
	chain []*x509.Certificate
	id    identity.Identity
}

// check runs every test in the documented order and returns the verified
// peer, or the first refusal.
func (v *Verifier) check(certs []*x509.Certificate, usage x509.ExtKeyUsage, authorize Authorizer) (judged, *RejectError) {
	p, rej := v.verifiedChain(certs, usage)
	if rej != nil {
		return p, rej
	}
	if rej := v.revoked(p.chain, p.id); rej != nil {
		return p, rej
	}
	if err := authorize(p.id, p.chain); err != nil {
		return p, &RejectError{Reason: ReasonUnauthorized, Identity: p.id, Err: err}
	}
	return p, nil
}

// verifiedChain returns the peer's verified chain, from the cache when it
// verified before with the same roots and is still inside its validity.
func (v *Verifier) verifiedChain(certs []*x509.Certificate, usage x509.ExtKeyUsage) (judged, *RejectError) {
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
	key := chainKey(certs, usage)
	if e := v.chains.get(key, roots, now); e != nil {
		return judged{chain: e.chain, id: e.id}, nil
	}
	chain, id, rej := v.verifyChain(certs, roots, now, usage)
	if rej != nil {
		return judged{id: id}, rej
	}
	v.chains.put(key, roots, chain, id)
	return judged{chain: chain, id: id}, nil
}

// revoked checks the revocation feed (serials, then the deny list) and the
// CRLs for a verified chain.
func (v *Verifier) revoked(chain []*x509.Certificate, id identity.Identity) *RejectError {
	issued := chain[:len(chain)-1] // the root is trusted as configured, not revoked by a feed
	if set := v.cfg.Revocations; set != nil {
		for _, c := range issued {
			if set.Revoked(c.SerialNumber.Text(16)) {
				return reject(ReasonRevokedFeed, id, "certificate %s (serial %s) is revoked (revocation feed)", c.Subject, c.SerialNumber.Text(16))
			}
		}
		if name, ok := set.DeniedAny(id); ok {
			return reject(ReasonDenied, id, "identity %s is on the deny list", name)
		}
	}
	if crl := v.cfg.CRL; crl != nil {
		crl.observe(chain)
		for _, c := range issued {
			if crl.Revoked(c) {
				return reject(ReasonRevokedCRL, id, "certificate %s (serial %s) is revoked (CRL)", c.Subject, c.SerialNumber.Text(16))
			}
		}
	}
	return nil
}

// verifyChain checks the peer's chain against roots at now, with the
// usage, and reads the peer's identity.
func (v *Verifier) verifyChain(certs []*x509.Certificate, roots *x509.CertPool, now time.Time, usage x509.ExtKeyUsage) ([]*x509.Certificate, identity.Identity, *RejectError) {
	leaf := certs[0]
	id, idErr := identity.FromCertificate(leaf)
	opts := x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage}}
	if len(certs) > 1 {
		opts.Intermediates = x509.NewCertPool()
		for _, c := range certs[1:] {
			opts.Intermediates.AddCert(c)
		}
	}
	chains, err := leaf.Verify(opts)
	if err != nil {
		return nil, id, classify(err, now, id)
	}
	if idErr != nil {
		return nil, id, &RejectError{Reason: ReasonBadCertificate, Err: idErr}
	}
	// Go lets a leaf without the extension pass for any usage; a mica
	// certificate always names its usages, and one that does not is not
	// meant for this.
	if !hasUsage(leaf, usage) {
		return nil, id, reject(ReasonWrongEKU, id, "the certificate does not name the %s extended key usage: issue it under a profile with %s",
			usageName(usage), usageName(usage))
	}
	return chains[0], id, nil
}

func hasUsage(c *x509.Certificate, u x509.ExtKeyUsage) bool {
	for _, e := range c.ExtKeyUsage {
		if e == u {
			return true
		}
	}
	return false
}

func usageName(u x509.ExtKeyUsage) string {
	if u == x509.ExtKeyUsageClientAuth {
		return "clientAuth"
	}
	return "serverAuth"
}
