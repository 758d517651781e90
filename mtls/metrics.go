package mtls

import (
	"github.com/mica-pki/mica/revocation"
)

// Sides of a verification, the side a Metrics is told: which end did the
// verifying.
const (
	SideServer = "server" // a server judging a client (ServerConfig, VerifyRequest)
	SideClient = "client" // a client judging a server (ClientConfig)
	SideVerify = "verify" // Verifier.Verify, outside a handshake
)

const (
	sideServer = SideServer
	sideClient = SideClient
)

// Metrics is what a Verifier reports; the caller implements it (package
// mtls/mtlsprom does with Prometheus), so this package imports no metrics
// library. Methods are called on the verification path and must not
// block. The reasons are the closed set of [Reason] constants.
type Metrics interface {
	// Verified counts one verification by side (SideServer, SideClient,
	// SideVerify); r is ReasonOK when the peer was accepted.
	Verified(side string, r Reason)
	// ConnectionClosed counts a live connection closed because its peer
	// is refused now.
	ConnectionClosed(r Reason)
	// RequestRefused counts a request refused by Verifier.VerifyRequest.
	RequestRefused(r Reason)
}

// RevocationWatcher is an optional ability of a Metrics: a Verifier hands
// it the revocation sources it consults, so gauges of their freshness can
// be read at scrape time (Set.Seq, CRLChecker.Stats). Either may be nil.
type RevocationWatcher interface {
	WatchRevocations(set *revocation.Set, crl *CRLChecker)
}

// Reasons lists every Reason, so that metrics can start every series at
// zero.
func Reasons() []Reason { return append([]Reason(nil), reasons...) }

// nopMetrics is the Metrics of a Verifier given none.
type nopMetrics struct{}

func (nopMetrics) Verified(string, Reason) {}
func (nopMetrics) ConnectionClosed(Reason) {}
func (nopMetrics) RequestRefused(Reason)   {}
