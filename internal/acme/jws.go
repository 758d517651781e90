package acme

import (
	"crypto"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/mica-pki/mica/internal/strictjson"
)

// signatureAlgorithms are the JWS algorithms accepted for account and
// certificate keys: asymmetric only (RFC 8555 §6.2 forbids "none" and MACs).
var signatureAlgorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.ES256, jose.ES384, jose.ES512, jose.EdDSA, jose.PS256,
}

// minRSABits is the smallest RSA account key accepted; the JWS library
// refuses keys over 4096 bits.
const minRSABits = 2048

// maxJWSBytes bounds a request body; a CSR for many names, base64url'd
// inside a JWS, stays far below it.
const maxJWSBytes = 64 << 10

// flatJWS is the flattened JSON serialization RFC 8555 §6.2 requires.
type flatJWS struct {
	Protected  string          `json:"protected"`
	Payload    *string         `json:"payload"`
	Signature  string          `json:"signature"`
	Header     json.RawMessage `json:"header"`
	Signatures json.RawMessage `json:"signatures"`
}

// protectedHeader is the part of the protected header ACME gives meaning to.
type protectedHeader struct {
	Alg   string
	Nonce string
	URL   string
	KID   string
	JWK   json.RawMessage
}

// parseProtected reads the protected header by exact member names, as the
// JWS library does, after strictjson.Check has refused duplicates; crit and b64
// (RFC 7797 unencoded payloads) are refused: ACME uses neither.
func parseProtected(raw []byte) (protectedHeader, *problem) {
	var h protectedHeader
	if err := strictjson.Check(raw); err != nil {
		return h, malformed("the JWS protected header is not acceptable JSON: %v", err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return h, malformed("the JWS protected header is not a JSON object: %v", err)
	}
	for _, name := range []string{"crit", "b64"} {
		if _, ok := m[name]; ok {
			return h, malformed("the JWS protected header has %q, which ACME does not use: leave it out", name)
		}
	}
	for name, dst := range map[string]*string{"alg": &h.Alg, "nonce": &h.Nonce, "url": &h.URL, "kid": &h.KID} {
		if v, ok := m[name]; ok {
			if err := json.Unmarshal(v, dst); err != nil {
				return h, malformed("the JWS protected header's %q is not a string", name)
			}
		}
	}
	h.JWK = m["jwk"]
	return h, nil
}

// signedRequest is a parsed but not yet verified request.
type signedRequest struct {
	header protectedHeader
	jwk    *jose.JSONWebKey // set when the header carries jwk
	jws    *jose.JSONWebSignature
}

// parseJWS checks the request's shape as §6.2 requires: flattened JSON, one
// signature, a protected header with alg, url, exactly one of jwk and kid,
// no unprotected header. needNonce is false only for the inner JWS of a
// key change, which must carry none. It verifies nothing: that needs the
// key, which for kid comes from the store.
func parseJWS(body []byte, needNonce bool) (*signedRequest, *problem) {
	if err := strictjson.Check(body); err != nil {
		return nil, malformed("the request body is not acceptable JSON: %v", err)
	}
	var f flatJWS
	if err := json.Unmarshal(body, &f); err != nil {
		return nil, malformed("the request body is not a JWS in flattened JSON serialization: %v", err)
	}
	switch {
	case len(f.Signatures) > 0:
		return nil, malformed("the JWS has a signatures array: send exactly one signature, in flattened JSON serialization")
	case len(f.Header) > 0:
		return nil, malformed("the JWS has an unprotected header: put every header field in the protected header")
	case f.Protected == "" || f.Signature == "" || f.Payload == nil:
		// POST-as-GET sends "payload": "", present and empty (§6.3).
		return nil, malformed("the JWS lacks its protected header, payload or signature")
	}
	raw, err := base64.RawURLEncoding.DecodeString(f.Protected)
	if err != nil {
		return nil, malformed("the JWS protected header is not base64url without padding")
	}
	h, p := parseProtected(raw)
	if p != nil {
		return nil, p
	}
	if !algAllowed(h.Alg) {
		return nil, newProblem(errBadSignatureAlgorithm, http.StatusBadRequest,
			"JWS algorithm %q is not accepted: use one of %v", h.Alg, signatureAlgorithms)
	}
	switch {
	case h.URL == "":
		return nil, malformed("the JWS protected header has no url")
	case needNonce && h.Nonce == "":
		return nil, newProblem(errBadNonce, http.StatusBadRequest, "the JWS protected header has no nonce: get one from newNonce")
	case !needNonce && h.Nonce != "":
		return nil, malformed("the inner JWS of a key change must not carry a nonce")
	case (h.KID == "") == (h.JWK == nil):
		return nil, malformed("the JWS protected header must carry exactly one of jwk and kid")
	}
	jws, err := jose.ParseSignedJSON(string(body), signatureAlgorithms)
	if err != nil {
		return nil, malformed("the JWS cannot be parsed: %v", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, malformed("the JWS must carry exactly one signature")
	}
	req := &signedRequest{header: h, jws: jws}
	if h.JWK != nil {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(h.JWK); err != nil {
			return nil, newProblem(errBadPublicKey, http.StatusBadRequest, "the jwk in the JWS header is not a usable key: %v", err)
		}
		if !k.IsPublic() || !k.Valid() {
			return nil, newProblem(errBadPublicKey, http.StatusBadRequest, "the jwk in the JWS header must be a valid public key")
		}
		if rk, ok := k.Key.(*rsa.PublicKey); ok && rk.N.BitLen() < minRSABits {
			return nil, newProblem(errBadPublicKey, http.StatusBadRequest, "the jwk in the JWS header is a %d-bit RSA key: use at least %d bits, or an ECDSA or Ed25519 key", rk.N.BitLen(), minRSABits)
		}
		req.jwk = &k
	}
	return req, nil
}

func algAllowed(alg string) bool {
	for _, a := range signatureAlgorithms {
		if string(a) == alg {
			return true
		}
	}
	return false
}

// verify checks the signature with key and returns the payload: empty
// (POST-as-GET) or one JSON value without duplicate members.
func (r *signedRequest) verify(key *jose.JSONWebKey) ([]byte, *problem) {
	payload, err := r.jws.Verify(key)
	if err != nil {
		return nil, malformed("the JWS signature does not verify with the %s: sign with that key", keyName(r))
	}
	if len(payload) > 0 {
		if err := strictjson.Check(payload); err != nil {
			return nil, malformed("the JWS payload is not acceptable JSON: %v", err)
		}
	}
	return payload, nil
}

func keyName(r *signedRequest) string {
	if r.jwk != nil {
		return "jwk in its header"
	}
	return "key of account " + r.header.KID
}

// thumbprint is the RFC 7638 SHA-256 thumbprint of k, base64url, the form
// key authorizations and the account lookup use.
func thumbprint(k *jose.JSONWebKey) (string, error) {
	sum, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("acme: thumbprint of the account key: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(sum), nil
}
