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

// Options configures ServerConfig and ClientConfig. Source and Authorize
// are required; every other field may be left zero.
type Options struct {
	// Source supplies our own certificate and the roots peers are verified
	// against; both are read on every handshake.
	Source Source
	// Authorize decides which verified peers may talk to us. nil is an
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
	// Metrics counts the handshakes this config verifies.
	Metrics *Metrics
	// Now is the clock certificates are judged by; default time.Now.
	Now func() time.Time
	// Logger gets one Info line per refused peer; default: discarded.
	Logger *slog.Logger
}

// ServerConfig returns a TLS 1.3 server config that presents Source's
// certificate, requires a client certificate with the clientAuth usage,
// verifies it against Source's current roots, checks revocation and asks
// Authorize. Session tickets stay on: resumed handshakes are verified
// again.
func ServerConfig(o Options) (*tls.Config, error) {
	v, err := newVerifier(o, sideServer, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Requested rather than required so that a client without a
		// certificate reaches VerifyConnection and is counted and told
		// apart (no_certificate); it is refused there all the same.
		ClientAuth: tls.RequestClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return o.Source.Certificate()
		},
		VerifyConnection: v.verify,
		Time:             o.Now,
	}, nil
}

// ClientConfig returns a TLS 1.3 client config that presents Source's
// certificate and verifies the server against Source's current roots with
// the serverAuth usage, checks revocation and asks Authorize. The server is
// judged by its identity, not by the host name dialed, so any ServerName
// (or none) may be used. Sessions are cached for resumption.
func ClientConfig(o Options) (*tls.Config, error) {
	v, err := newVerifier(o, sideClient, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Go's own check is by host name; VerifyConnection does the whole
		// verification instead (chain, usage, revocation, identity), on
		// resumed connections too.
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return o.Source.Certificate()
		},
		VerifyConnection:   v.verify,
		ClientSessionCache: tls.NewLRUClientSessionCache(0),
		Time:               o.Now,
	}, nil
}

// verifier judges the peer of one side's handshakes.
type verifier struct {
	o      Options
	side   string
	usage  x509.ExtKeyUsage
	now    func() time.Time
	log    *slog.Logger
	pools  poolCache
	chains chainCache
}

func newVerifier(o Options, side string, usage x509.ExtKeyUsage) (*verifier, error) {
	if o.Source == nil {
		return nil, errors.New("mtls: Options.Source is required: use NewFileSource on the agent's directory or NewWorkloadSource")
	}
	if o.Authorize == nil {
		return nil, errors.New("mtls: Options.Authorize is required: say who may connect, e.g. mtls.AuthorizeTrustDomains(\"example.org\")")
	}
	v := &verifier{o: o, side: side, usage: usage, now: o.Now, log: o.Logger}
	if v.now == nil {
		v.now = time.Now
	}
	if v.log == nil {
		v.log = slog.New(slog.DiscardHandler)
	}
	o.Metrics.watch(o.Revocations, o.CRL)
	return v, nil
}

// verify is the tls.Config.VerifyConnection hook.
func (v *verifier) verify(cs tls.ConnectionState) error {
	rej := v.check(cs.PeerCertificates)
	if rej == nil {
		v.o.Metrics.count(v.side, ReasonOK)
		return nil
	}
	v.o.Metrics.count(v.side, rej.Reason)
	v.log.Info("mtls: peer refused", slog.String("side", v.side), slog.String("reason", string(rej.Reason)),
		slog.String("identity", rej.Identity.String()), slog.Bool("resumed", cs.DidResume), slog.String("error", rej.Err.Error()))
	return rej
}

// check runs every test in the documented order and returns the first
// refusal, or nil.
func (v *verifier) check(certs []*x509.Certificate) *RejectError {
	if len(certs) == 0 {
		return reject(ReasonNoCertificate, identity.Identity{},
			"the peer presented no certificate: give it a mica certificate (agent files or the Workload API)")
	}
	roots := v.pools.get(v.o.Source.Roots())
	if roots == nil {
		id, _ := identity.FromCertificate(certs[0])
		return reject(ReasonUnknownCA, id, "the trust bundle is empty: check bundle.pem or the Workload API")
	}
	now := v.now()
	key := chainKey(certs)
	var chain []*x509.Certificate
	var id identity.Identity
	if e := v.chains.get(key, roots, now); e != nil {
		chain, id = e.chain, e.id
	} else {
		var rej *RejectError
		if chain, id, rej = v.verifyChain(certs, roots, now); rej != nil {
			return rej
		}
		v.chains.put(key, roots, chain, id)
	}
	issued := chain[:len(chain)-1] // the root is trusted as configured, not revoked by a feed
	if set := v.o.Revocations; set != nil {
		for _, c := range issued {
			if set.Revoked(c.SerialNumber.Text(16)) {
				return reject(ReasonRevokedFeed, id, "certificate %s (serial %s) is revoked (revocation feed)", c.Subject, c.SerialNumber.Text(16))
			}
		}
		if name, ok := set.DeniedAny(id); ok {
			return reject(ReasonDenied, id, "identity %s is on the deny list", name)
		}
	}
	if crl := v.o.CRL; crl != nil {
		crl.observe(chain)
		for _, c := range issued {
			if crl.Revoked(c) {
				return reject(ReasonRevokedCRL, id, "certificate %s (serial %s) is revoked (CRL)", c.Subject, c.SerialNumber.Text(16))
			}
		}
	}
	if err := v.o.Authorize(id, chain); err != nil {
		return &RejectError{Reason: ReasonUnauthorized, Identity: id, Err: err}
	}
	return nil
}

// verifyChain checks the peer's chain against roots at now, with the
// side's usage, and reads the peer's identity.
func (v *verifier) verifyChain(certs []*x509.Certificate, roots *x509.CertPool, now time.Time) ([]*x509.Certificate, identity.Identity, *RejectError) {
	leaf := certs[0]
	id, idErr := identity.FromCertificate(leaf)
	opts := x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{v.usage}}
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
	if !hasUsage(leaf, v.usage) {
		return nil, id, reject(ReasonWrongEKU, id, "the certificate does not name the %s extended key usage: issue it under a profile with %s",
			usageName(v.usage), usageName(v.usage))
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
