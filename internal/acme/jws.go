package acme

import (
	"bytes"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"

	jose "github.com/go-jose/go-jose/v4"
)

// signatureAlgorithms are the JWS algorithms accepted for account and
// certificate keys: asymmetric only (RFC 8555 §6.2 forbids "none" and MACs).
var signatureAlgorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.ES256, jose.ES384, jose.ES512, jose.EdDSA, jose.PS256,
}

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
	Alg   string          `json:"alg"`
	Nonce string          `json:"nonce"`
	URL   string          `json:"url"`
	KID   string          `json:"kid"`
	JWK   json.RawMessage `json:"jwk"`
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
	var f flatJWS
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&f); err != nil {
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
	var h protectedHeader
	if err := json.Unmarshal(raw, &h); err != nil {
		return nil, malformed("the JWS protected header is not a JSON object: %v", err)
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
	case (h.KID == "") == (len(h.JWK) == 0):
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
	if len(h.JWK) > 0 {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(h.JWK); err != nil {
			return nil, newProblem(errBadPublicKey, http.StatusBadRequest, "the jwk in the JWS header is not a usable key: %v", err)
		}
		if !k.IsPublic() || !k.Valid() {
			return nil, newProblem(errBadPublicKey, http.StatusBadRequest, "the jwk in the JWS header must be a valid public key")
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

// verify checks the signature with key and returns the payload.
func (r *signedRequest) verify(key *jose.JSONWebKey) ([]byte, *problem) {
	payload, err := r.jws.Verify(key)
	if err != nil {
		return nil, malformed("the JWS signature does not verify with the %s: sign with that key", keyName(r))
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
