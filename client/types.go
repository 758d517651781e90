package client

import (
	"fmt"
	"time"
)

// The JSON shapes of the /v1 API. Durations are Go duration strings ("1h"),
// certificates are PEM, times are RFC 3339.

// TokenRequest asks for a one-time enrollment token (POST /v1/tokens).
type TokenRequest struct {
	Identity string `json:"identity"`
	Profile  string `json:"profile"`
	TTL      string `json:"ttl,omitempty"`
	CIDR     string `json:"cidr,omitempty"`
	// Approval collects a token whose request was held for approvers and
	// approved: the same parameters, and the request's id.
	Approval string `json:"approval,omitempty"`
}

// TokenResponse carries the token. The token is a bearer secret: hand it to
// exactly one machine.
type TokenResponse struct {
	Token     string    `json:"token"`
	ID        string    `json:"id"`
	Identity  string    `json:"identity"`
	Profile   string    `json:"profile"`
	ExpiresAt time.Time `json:"expires_at"`
}

// CertificateRequest asks for a certificate (POST /v1/certificates with a
// bearer token, or POST /v1/certificates/renew over mTLS).
type CertificateRequest struct {
	CSR string `json:"csr,omitempty"` // PEM "CERTIFICATE REQUEST"
	TTL string `json:"ttl,omitempty"`
	// KeepKey renews with the key of the certificate the request is
	// authenticated with, and no CSR: the TLS handshake already proved
	// that the caller holds that key. Only for renewal, and only without
	// a CSR; a server from before keep_key refuses the unknown field.
	KeepKey bool `json:"keep_key,omitempty"`
}

// CertificateResponse is an issued certificate. It is returned only after
// the certificate and its audit event are durably recorded.
type CertificateResponse struct {
	Certificate string    `json:"certificate"` // PEM leaf
	Chain       string    `json:"chain"`       // PEM intermediates, leaf's issuer first
	Bundle      string    `json:"bundle"`      // PEM roots
	Serial      string    `json:"serial"`
	Identity    string    `json:"identity"`
	Profile     string    `json:"profile"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	// EventSeq is the sequence number of the lifecycle event recorded with it.
	EventSeq int64 `json:"event_seq"`
	// LeafIndex is that event's position in the audit log; prove it with
	// Client.AuditProof.
	LeafIndex int64 `json:"leaf_index"`
}

// Certificate is an inventory record (GET /v1/certificates…).
type Certificate struct {
	Serial      string   `json:"serial"`
	Fingerprint string   `json:"fingerprint_sha256"`
	Identity    string   `json:"identity"`
	SANs        []string `json:"sans"`
	Profile     string   `json:"profile"`
	Requester   string   `json:"requester"`
	Owner       string   `json:"owner,omitempty"` // who answers for it: token creator (kept through renewals), ACME account, system
	// ChainStartedAt is when its renewal chain began (the first enrollment);
	// a profile's max_renewal_chain counts from it.
	ChainStartedAt   *time.Time `json:"chain_started_at,omitempty"`
	SourceAddr       string     `json:"source_addr,omitempty"`
	NotBefore        time.Time  `json:"not_before"`
	NotAfter         time.Time  `json:"not_after"`
	Issuer           string     `json:"issuer_fingerprint_sha256"`
	Status           string     `json:"status"`
	RevokedAt        *time.Time `json:"revoked_at,omitempty"`
	RevocationReason string     `json:"revocation_reason,omitempty"`
	RenewedFrom      string     `json:"renewed_from,omitempty"`
	EventSeq         int64      `json:"event_seq,omitempty"`
	PEM              string     `json:"pem,omitempty"`
}

// CertificateList is a page of inventory records. Next, on a page of GET
// /v1/certificates, is the cursor of the page after it (ListFilter.Cursor);
// empty on the last page.
type CertificateList struct {
	Certificates []Certificate `json:"certificates"`
	Next         string        `json:"next,omitempty"`
}

// RevokeRequest revokes a certificate (POST /v1/certificates/{serial}/revoke).
type RevokeRequest struct {
	Reason string `json:"reason,omitempty"` // RFC 5280 name, e.g. keyCompromise
}

// Bundle is the trust bundle (GET /v1/bundle): what a relying party trusts.
type Bundle struct {
	TrustDomain   string   `json:"trust_domain"`
	Roots         []string `json:"roots"`         // PEM
	Intermediates []string `json:"intermediates"` // PEM
}

// Stats is the server's own health figures (GET /v1/server/stats, admins).
type Stats struct {
	Version       string  `json:"version"`
	UptimeSeconds float64 `json:"uptime_seconds"`
	PeakRSSBytes  int64   `json:"peak_rss_bytes"`
	RSSBytes      int64   `json:"rss_bytes"`
}

// Problem is an RFC 9457 (formerly 7807) problem document, the body of every
// error response.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	// RetryAfter is the response's Retry-After: how long to wait before
	// asking again (rate limits, slug "rate-limited" and the anomaly slugs
	// "renewal-storm" and "issuance-burst"); zero when it had none.
	RetryAfter time.Duration `json:"-"`
}

// ProblemTypePrefix starts every problem type mica sends; the rest is a
// stable slug such as "token-replayed" or "ttl-too-long".
const ProblemTypePrefix = "urn:mica:problem:"

func (p *Problem) Error() string {
	if p.Detail != "" {
		return fmt.Sprintf("mica: %s", p.Detail)
	}
	return fmt.Sprintf("mica: %s (HTTP %d)", p.Title, p.Status)
}

// Slug is the problem type without its prefix.
func (p *Problem) Slug() string {
	if len(p.Type) > len(ProblemTypePrefix) && p.Type[:len(ProblemTypePrefix)] == ProblemTypePrefix {
		return p.Type[len(ProblemTypePrefix):]
	}
	return p.Type
}

// JWTSVIDRequest asks for a JWT-SVID for the caller's own SPIFFE ID
// (POST /v1/jwt-svids over mTLS).
type JWTSVIDRequest struct {
	Audience []string `json:"audience"`
	TTL      string   `json:"ttl,omitempty"`
}

// JWTSVID is a signed JWT-SVID. The token is a bearer secret.
type JWTSVID struct {
	Token     string    `json:"token"`
	SPIFFEID  string    `json:"spiffe_id"`
	ExpiresAt time.Time `json:"expires_at"`
}

// RevokeMatchingRequest revokes by something other than the serial (POST
// /v1/certificates/revoke): exactly one of Fingerprint (one certificate,
// hex SHA-256 of its DER) or Identity (every live certificate of it).
type RevokeMatchingRequest struct {
	Fingerprint string `json:"fingerprint,omitempty"`
	Identity    string `json:"identity,omitempty"`
	Reason      string `json:"reason,omitempty"`
}

// DenyRequest puts an identity on the deny list or takes it off (POST
// /v1/identities/deny, /v1/identities/allow).
type DenyRequest struct {
	Identity string `json:"identity"`
	Reason   string `json:"reason,omitempty"` // free text for the audit record
}

// Denial is one entry of the deny list.
type Denial struct {
	Identity string    `json:"identity"`
	At       time.Time `json:"at"`
	Actor    string    `json:"actor"`
	Reason   string    `json:"reason,omitempty"`
	EventSeq int64     `json:"event_seq"`
}

// DenialList is the deny list (GET /v1/identities/denied).
type DenialList struct {
	Denied []Denial `json:"denied"`
}
