package acme

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net/http"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/mica-pki/mica/internal/authority"
)

type revokePayload struct {
	Certificate string `json:"certificate"`
	Reason      *int   `json:"reason"`
}

// revokeCert revokes a certificate (§7.6), signed either by the account
// that ordered it (kid) or by the certificate's own key (jwk). Whether the
// signer may revoke it is the authority's decision.
func (s *Server) revokeCert(ctx context.Context, r *request) (*response, *problem) {
	var p revokePayload
	if err := json.Unmarshal(r.payload, &p); err != nil {
		return nil, malformed("the revokeCert payload is not a JSON object: %v", err)
	}
	der, err := base64.RawURLEncoding.DecodeString(p.Certificate)
	if err != nil || len(der) == 0 {
		return nil, malformed("certificate must be the DER certificate, base64url without padding")
	}
	reason := 0
	if p.Reason != nil {
		reason = *p.Reason
	}
	// RFC 5280 codes except 7 (unused) and 8 (removeFromCRL: not a revocation).
	if reason < 0 || reason > 10 || reason == 7 || reason == 8 {
		return nil, newProblem(errBadRevocationReason, http.StatusBadRequest, "revocation reason %d is not allowed: use an RFC 5280 CRLReason code other than 7 and 8", reason)
	}
	req := authority.ACMERevocation{CertDER: der, Reason: reason, Source: source(r.http)}
	if r.acct != nil {
		req.Account = s.accountURL(r.acct.ID)
	} else {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, malformed("the certificate cannot be parsed: %v", err)
		}
		certKey := jose.JSONWebKey{Key: cert.PublicKey}
		want, err1 := thumbprint(&certKey)
		got, err2 := thumbprint(r.jwk)
		if err1 != nil || err2 != nil || want != got {
			return nil, unauthorized("the jwk signing the request is not the certificate's key: sign with the certificate's key or the account that ordered it")
		}
		req.ByCertKey = true
	}
	if _, err := s.auth.RevokeACME(ctx, req); err != nil {
		if prob := fromAuthority(err); prob != nil {
			return nil, prob
		}
		return nil, internal(err)
	}
	return &response{}, nil
}
