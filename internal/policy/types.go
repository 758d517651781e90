package policy

import (
	"crypto"
	"crypto/x509"
	"net/netip"
	"time"

	"github.com/mica-pki/mica/identity"
)

// Method is the front door a request came through; CEL rules may branch on it.
type Method string

const (
	MethodToken Method = "token" // one-time bootstrap token
	MethodRenew Method = "renew" // mTLS with the current certificate
	MethodACME  Method = "acme"
	// MethodInternal is mica issuing for itself (its admin and server certificates).
	MethodInternal Method = "internal"
)

// Request is what a client asks for, after authentication.
type Request struct {
	Profile   string
	Identity  identity.Identity
	TTL       time.Duration // 0 asks for the profile's default
	PublicKey crypto.PublicKey
	Method    Method
	Requester string     // authenticated principal
	Source    netip.Addr // zero when unknown
	// ChainAge is, for a renewal, how long ago the renewal chain began
	// (the first enrollment of the certificate being renewed).
	ChainAge time.Duration
}

// Decision is what the authority may issue: the request, checked and
// completed with the profile's settings.
type Decision struct {
	Profile     string
	Identity    identity.Identity
	TTL         time.Duration
	ExtKeyUsage []x509.ExtKeyUsage
	// UnexpectedSource says the request came from outside the profile's
	// expected networks: allowed, but an anomaly to report.
	UnexpectedSource bool
}

// Reason says why a request was denied; stable strings, used in errors,
// audit events and metrics.
type Reason string

const (
	ReasonUnknownProfile     Reason = "unknown-profile"
	ReasonIdentityNotAllowed Reason = "identity-not-allowed"
	ReasonWildcard           Reason = "wildcard-not-allowed"
	ReasonTTLTooLong         Reason = "ttl-too-long"
	ReasonKeyNotAllowed      Reason = "key-not-allowed"
	ReasonRuleDenied         Reason = "rule-denied"
	ReasonSourceNotAllowed   Reason = "source-not-allowed"
	// ReasonReservedName is a name that belongs to mica itself asked for
	// under an ordinary profile.
	ReasonReservedName Reason = "reserved-name"
	// ReasonRenewalChainEnded is a renewal past the profile's
	// max_renewal_chain: a new token is needed.
	ReasonRenewalChainEnded Reason = "renewal-chain-ended"
	ReasonInvalidIdentity   Reason = "invalid-identity"
	// ReasonInvalidRequest is a request that is malformed apart from its
	// identity, such as a negative TTL.
	ReasonInvalidRequest Reason = "invalid-request"
)

// DeniedError is returned by Engine.Decide when policy says no.
type DeniedError struct {
	Profile string
	Reason  Reason
	Detail  string // says what was wrong and, where possible, what is allowed
}

func (e *DeniedError) Error() string {
	return "policy: " + e.Detail
}
