package mtls

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"time"

	"github.com/mica-pki/mica/revocation"
)

// Options configures ServerConfig and ClientConfig. Source is required,
// and either Verifier or Authorize; every other field may be left zero.
type Options struct {
	// Source supplies our own certificate and the roots peers are verified
	// against; both are read on every handshake.
	Source Source
	// Verifier judges the peers. Set it to share one Verifier between
	// configs and to close live connections of peers revoked later
	// (Verifier.Run, Verifier.ConnState, Verifier.Middleware); the fields
	// below but Authorize must then be left zero (they are the
	// Verifier's). When nil, a Verifier is made from Source's roots and the
	// fields below.
	Verifier *Verifier

	// Authorize decides which verified peers may talk to us. nil is an
	// error unless Verifier is set, whose Authorizer then decides: there
	// is no implicit allow-all. With Verifier, it replaces the Verifier's
	// for this config's handshakes.
	Authorize Authorizer
	// Revocations is the push feed's in-memory view
	// (revocation.Subscriber.Set()); every certificate of the peer's chain
	// is looked up in it, and every name of the peer in its deny list.
	Revocations *revocation.Set
	// CRL is the fallback for when the feed is absent or stale. It learns
	// the CRL distribution points and issuers of verified peers and fetches
	// in the background (run it with CRLChecker.Run).
	CRL *CRLChecker
	// Metrics is told of the handshakes this config verifies
	// (mtlsprom.New exports them to Prometheus).
	Metrics Metrics
	// Now is the clock certificates are judged by; default time.Now.
	Now func() time.Time
	// Logger gets one Info line per refused peer; default: discarded.
	Logger *slog.Logger
}

// verifier returns the Verifier the options name or describe, and the
// Authorizer of the config's handshakes.
func (o Options) verifier() (*Verifier, Authorizer, error) {
	if o.Source == nil {
		return nil, nil, errors.New("mtls: Options.Source is required: use NewFileSource on the agent's directory or workload.NewSource")
	}
	if o.Verifier != nil {
		if o.Revocations != nil || o.CRL != nil || o.Metrics != nil || o.Now != nil || o.Logger != nil {
			return nil, nil, errors.New("mtls: Options.Verifier is set together with Revocations, CRL, Metrics, Now or Logger: set those on the Verifier")
		}
		if o.Authorize == nil {
			return o.Verifier, o.Verifier.cfg.Authorize, nil
		}
		return o.Verifier, o.Authorize, nil
	}
	v, err := NewVerifier(VerifierConfig{Roots: o.Source, Authorize: o.Authorize, Revocations: o.Revocations, CRL: o.CRL,
		Metrics: o.Metrics, Now: o.Now, Logger: o.Logger})
	if err != nil {
		return nil, nil, err
	}
	return v, o.Authorize, nil
}

// ServerConfig returns a TLS 1.3 server config that presents Source's
// certificate, requires a client certificate with the clientAuth usage,
// verifies it against Source's current roots, checks revocation and asks
// Authorize. Session tickets stay on: resumed handshakes are verified
// again.
func ServerConfig(o Options) (*tls.Config, error) {
	v, authorize, err := o.verifier()
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
		VerifyConnection: v.verifyConnection(sideServer, authorize),
		Time:             v.now,
	}, nil
}

// ClientConfig returns a TLS 1.3 client config that presents Source's
// certificate and verifies the server against Source's current roots with
// the serverAuth usage, checks revocation and asks Authorize. The server is
// judged by its identity, not by the host name dialed, so any ServerName
// (or none) may be used. Sessions are cached for resumption.
func ClientConfig(o Options) (*tls.Config, error) {
	v, authorize, err := o.verifier()
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
		VerifyConnection:   v.verifyConnection(sideClient, authorize),
		ClientSessionCache: tls.NewLRUClientSessionCache(0),
		Time:               v.now,
	}, nil
}
