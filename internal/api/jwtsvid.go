package api

import (
	"net/http"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/authority"
)

// jwtSVID signs a JWT-SVID for the mTLS caller's own SPIFFE ID.
func (s *server) jwtSVID(w http.ResponseWriter, r *http.Request, p authority.Principal) {
	var req client.JWTSVIDRequest
	if !decode(w, r, &req) {
		return
	}
	ttl, ok := parseTTL(w, req.TTL)
	if !ok {
		return
	}
	svid, err := s.cfg.Authority.MintJWTSVID(r.Context(), p, authority.JWTSVIDRequest{Audience: req.Audience, TTL: ttl})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, client.JWTSVID{Token: svid.Token, SPIFFEID: svid.SPIFFEID, ExpiresAt: svid.ExpiresAt})
}

// jwtBundle publishes the keys that verify JWT-SVIDs as a JWKS. Public, like
// the X.509 bundle: relying parties need it before they hold any credential.
func (s *server) jwtBundle(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.cfg.Authority.JWTBundle())
}
