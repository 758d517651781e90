package authority

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"fmt"
	"log/slog"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/mica-pki/mica/identity"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// JWT-SVID lifetimes. A JWT-SVID is a bearer token that cannot be revoked,
// so it lives minutes, not hours; workloads fetch a fresh one through their
// agent.
const (
	DefaultJWTSVIDTTL = 5 * time.Minute
	MaxJWTSVIDTTL     = time.Hour
	maxAudiences      = 16
	maxAudienceLen    = 2048
)

// JWTSVIDRequest asks for a JWT-SVID for the caller's own SPIFFE ID.
type JWTSVIDRequest struct {
	Audience []string
	TTL      time.Duration // zero: DefaultJWTSVIDTTL
}

// JWTSVID is a signed JWT-SVID.
type JWTSVID struct {
	Token     string
	SPIFFEID  string
	ExpiresAt time.Time
}

// jwtSigner signs JWT-SVIDs; its public half is published by JWTBundle.
type jwtSigner struct {
	signer jose.Signer
	jwk    jose.JSONWebKey
}

func newJWTSigner(key crypto.Signer) (*jwtSigner, error) {
	ec, ok := key.Public().(*ecdsa.PublicKey)
	if !ok || ec.Curve.Params().BitSize != 256 {
		return nil, fmt.Errorf("authority: the JWT-SVID key must be ECDSA P-256 (ES256), not %T", key.Public())
	}
	jwk := jose.JSONWebKey{Key: ec, Algorithm: string(jose.ES256), Use: "jwt-svid"} // "use" as the SPIFFE bundle format says
	thumb, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("authority: JWT-SVID key thumbprint: %w", err)
	}
	jwk.KeyID = fmt.Sprintf("%x", thumb[:16])
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: jwk.KeyID}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, fmt.Errorf("authority: JWT-SVID signer: %w", err)
	}
	return &jwtSigner{signer: s, jwk: jwk}, nil
}

// MintJWTSVID signs a JWT-SVID for the authenticated caller's own SPIFFE ID:
// a workload can speak for itself only. Audience is required, the lifetime
// is short and capped, and the token never outlives the certificate that
// asked for it.
func (a *Authority) MintJWTSVID(ctx context.Context, p Principal, req JWTSVIDRequest) (JWTSVID, error) {
	if err := a.Authorize(p, ActJWTSVID, Resource{}); err != nil {
		return JWTSVID{}, err
	}
	if a.jwt == nil {
		return JWTSVID{}, newError(KindInternal, nil, "no JWT-SVID key is configured")
	}
	if p.Certificate == nil || len(p.Certificate.URIs) != 1 {
		return JWTSVID{}, newError(KindForbidden, nil, "JWT-SVIDs are issued only to holders of an X509-SVID (a certificate with one SPIFFE ID)")
	}
	id, err := spiffeid.FromURI(p.Certificate.URIs[0])
	if err != nil {
		return JWTSVID{}, newError(KindForbidden, err, "the client certificate's URI is not a SPIFFE ID: %v", err)
	}
	// The deny list holds at every door: a denied identity gets no
	// JWT-SVID, even while its X509-SVID is still valid.
	if err := a.checkDenied(ctx, identity.Identity{SPIFFE: id}); err != nil {
		return JWTSVID{}, err
	}
	switch {
	case len(req.Audience) == 0:
		return JWTSVID{}, newError(KindInvalid, nil, "a JWT-SVID needs at least one audience: name the service that will check it")
	case len(req.Audience) > maxAudiences:
		return JWTSVID{}, newError(KindInvalid, nil, "at most %d audiences per JWT-SVID", maxAudiences)
	case req.TTL < 0 || req.TTL > MaxJWTSVIDTTL:
		return JWTSVID{}, newError(KindInvalid, nil, "JWT-SVID lifetime %s is outside (0, %s]: ask for a shorter one and fetch again", req.TTL, MaxJWTSVIDTTL)
	case req.TTL != 0 && req.TTL < time.Second:
		return JWTSVID{}, newError(KindInvalid, nil, "JWT-SVID lifetime %s is under a second, which its whole-second expiry cannot carry: ask for 1s or more", req.TTL)
	}
	for _, aud := range req.Audience {
		if aud == "" || len(aud) > maxAudienceLen {
			return JWTSVID{}, newError(KindInvalid, nil, "a JWT-SVID audience must be a non-empty string of at most %d bytes", maxAudienceLen)
		}
	}
	ttl := req.TTL
	if ttl == 0 {
		ttl = DefaultJWTSVIDTTL
	}
	now := a.now()
	exp := now.Add(ttl)
	if exp.After(p.Certificate.NotAfter) {
		exp = p.Certificate.NotAfter
	}
	claims := jwt.Claims{
		Subject:  id.String(),
		Audience: jwt.Audience(req.Audience),
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(exp),
	}
	raw, err := jwt.Signed(a.jwt.signer).Claims(claims).Serialize()
	if err != nil {
		return JWTSVID{}, newError(KindInternal, err, "signing the JWT-SVID failed: %v", err)
	}
	// Logged, not recorded as a lifecycle event: JWT-SVIDs are minutes-long
	// bearer tokens fetched constantly, and recording each would drown the
	// event log. The token itself is a secret and is never logged.
	a.log.LogAttrs(ctx, slog.LevelDebug, "jwt-svid issued", slog.String("identity", id.String()), slog.Time("expires", exp))
	return JWTSVID{Token: raw, SPIFFEID: id.String(), ExpiresAt: exp}, nil
}

// JWTBundle is the public key set that verifies JWT-SVIDs (a JWKS), empty
// when no key is configured.
func (a *Authority) JWTBundle() jose.JSONWebKeySet {
	if a.jwt == nil {
		return jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
	}
	return jose.JSONWebKeySet{Keys: []jose.JSONWebKey{a.jwt.jwk}}
}
