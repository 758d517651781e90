package acme

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/policy"
)

// errorNS prefixes every ACME error type (RFC 8555 §6.7).
const errorNS = "urn:ietf:params:acme:error:"

// The ACME error types mica uses.
const (
	errAccountDoesNotExist     = "accountDoesNotExist"
	errAlreadyRevoked          = "alreadyRevoked"
	errBadCSR                  = "badCSR"
	errBadNonce                = "badNonce"
	errBadPublicKey            = "badPublicKey"
	errBadRevocationReason     = "badRevocationReason"
	errBadSignatureAlgorithm   = "badSignatureAlgorithm"
	errConnection              = "connection"
	errDNS                     = "dns"
	errExternalAccountRequired = "externalAccountRequired"
	errIncorrectResponse       = "incorrectResponse"
	errInvalidContact          = "invalidContact"
	errMalformed               = "malformed"
	errOrderNotReady           = "orderNotReady"
	errRateLimited             = "rateLimited"
	errRejectedIdentifier      = "rejectedIdentifier"
	errServerInternal          = "serverInternal"
	errTLS                     = "tls"
	errUnauthorized            = "unauthorized"
	errUnsupportedContact      = "unsupportedContact"
	errUnsupportedIdentifier   = "unsupportedIdentifier"
)

// problem is an RFC 7807 problem document with ACME's types. It is also
// the error type inside this package, so a handler returns one and post
// writes it.
type problem struct {
	Type        string    `json:"type"`
	Detail      string    `json:"detail"`
	Status      int       `json:"status,omitempty"`
	Identifier  *ident    `json:"identifier,omitempty"`
	Subproblems []problem `json:"subproblems,omitempty"`

	location   string // Location header (key change conflict)
	retryAfter int    // seconds, for rateLimited
}

func (p *problem) Error() string { return "acme: " + p.Type + ": " + p.Detail }

func newProblem(typ string, status int, format string, args ...any) *problem {
	return &problem{Type: errorNS + typ, Status: status, Detail: fmt.Sprintf(format, args...)}
}

func malformed(format string, args ...any) *problem {
	return newProblem(errMalformed, http.StatusBadRequest, format, args...)
}

func unauthorized(format string, args ...any) *problem {
	return newProblem(errUnauthorized, http.StatusForbidden, format, args...)
}

func internal(err error) *problem {
	return &problem{Type: errorNS + errServerInternal, Status: http.StatusInternalServerError,
		Detail: "the server failed to handle the request (see the server log): retry; the order's status says whether a certificate was issued"}
}

// fromAuthority translates the core's refusal into an ACME problem: the
// one table where authority kinds meet ACME error types.
func fromAuthority(err error) *problem {
	var e *authority.Error
	if !errors.As(err, &e) {
		return nil
	}
	switch e.Kind {
	case authority.KindBadCSR, authority.KindIdentityMismatch:
		return newProblem(errBadCSR, http.StatusBadRequest, "%s", e.Detail)
	case authority.KindPolicyDenied:
		switch policy.Reason(e.Reason) {
		case policy.ReasonKeyNotAllowed:
			// The CSR's key: badPublicKey is for the JWS key (RFC 8555 §6.7).
			return newProblem(errBadCSR, http.StatusBadRequest, "%s", e.Detail)
		case policy.ReasonIdentityNotAllowed, policy.ReasonWildcard, policy.ReasonInvalidIdentity:
			return newProblem(errRejectedIdentifier, http.StatusBadRequest, "%s", e.Detail)
		}
		return unauthorized("%s", e.Detail)
	case authority.KindLintFailed:
		return newProblem(errBadCSR, http.StatusBadRequest, "%s", e.Detail)
	case authority.KindForbidden, authority.KindUnauthenticated:
		return unauthorized("%s", e.Detail)
	case authority.KindConflict:
		return newProblem(errAlreadyRevoked, http.StatusBadRequest, "%s", e.Detail)
	case authority.KindNotFound:
		return newProblem(errMalformed, http.StatusNotFound, "%s", e.Detail)
	case authority.KindInvalid:
		return malformed("%s", e.Detail)
	case authority.KindRateLimited:
		p := newProblem(errRateLimited, http.StatusTooManyRequests, "%s", e.Detail)
		p.retryAfter = int((e.RetryAfter + time.Second - 1) / time.Second)
		return p
	}
	return nil
}

func writeProblem(w http.ResponseWriter, p *problem) {
	if p.location != "" {
		w.Header().Set("Location", p.location)
	}
	if p.retryAfter > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(p.retryAfter))
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	if p.Status == 0 {
		p.Status = http.StatusBadRequest
	}
	w.WriteHeader(p.Status)
	json.NewEncoder(w).Encode(p)
}
