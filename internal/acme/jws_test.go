package acme

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// signFlat makes a flattened JWS over payload with the given protected
// header fields.
func signFlat(t testing.TB, key *ecdsa.PrivateKey, alg jose.SignatureAlgorithm, embedJWK bool, extra map[jose.HeaderKey]any, payload string) []byte {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, &jose.SignerOptions{EmbedJWK: embedJWK, ExtraHeaders: extra})
	if err != nil {
		t.Fatal(err)
	}
	jws, err := s.Sign([]byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	var flat map[string]any
	json.Unmarshal([]byte(jws.FullSerialize()), &flat)
	if _, ok := flat["payload"]; !ok {
		flat["payload"] = ""
	}
	out, _ := json.Marshal(flat)
	return out
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestParseJWS(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	const url = "https://ca.example/acme/new-order"
	good := map[jose.HeaderKey]any{"url": url, "nonce": "n1"}
	withKID := map[jose.HeaderKey]any{"url": url, "nonce": "n1", "kid": "https://ca.example/acme/account/1"}
	tests := []struct {
		name      string
		body      []byte
		needNonce bool
		wantType  string // "" for success
	}{
		{"jwk", signFlat(t, key, jose.ES256, true, good, "{}"), true, ""},
		{"kid", signFlat(t, key, jose.ES256, false, withKID, "{}"), true, ""},
		{"post-as-get", signFlat(t, key, jose.ES256, true, good, ""), true, ""},
		{"not JSON", []byte("eyJ.e30.sig"), true, errMalformed},
		{"compact in JSON", []byte(`"eyJ.e30.sig"`), true, errMalformed},
		{"no signature", []byte(`{"protected":"` + b64(`{"alg":"ES256"}`) + `","payload":""}`), true, errMalformed},
		{"no payload", []byte(`{"protected":"` + b64(`{"alg":"ES256"}`) + `","signature":"AA"}`), true, errMalformed},
		{"unprotected header", []byte(`{"protected":"` + b64(`{"alg":"ES256"}`) + `","header":{"kid":"x"},"payload":"","signature":"AA"}`), true, errMalformed},
		{"two signatures", []byte(`{"payload":"","signatures":[{},{}]}`), true, errMalformed},
		{"alg none", []byte(`{"protected":"` + b64(`{"alg":"none","url":"u","nonce":"n","jwk":{}}`) + `","payload":"","signature":"AA"}`), true, errBadSignatureAlgorithm},
		{"alg HS256", []byte(`{"protected":"` + b64(`{"alg":"HS256","url":"u","nonce":"n","kid":"k"}`) + `","payload":"","signature":"AA"}`), true, errBadSignatureAlgorithm},
		{"no url", signFlat(t, key, jose.ES256, true, map[jose.HeaderKey]any{"nonce": "n"}, "{}"), true, errMalformed},
		{"no nonce", signFlat(t, key, jose.ES256, true, map[jose.HeaderKey]any{"url": url}, "{}"), true, errBadNonce},
		{"nonce in inner JWS", signFlat(t, key, jose.ES256, true, good, "{}"), false, errMalformed},
		{"jwk and kid", signFlat(t, key, jose.ES256, true, withKID, "{}"), true, errMalformed},
		{"neither jwk nor kid", signFlat(t, key, jose.ES256, false, good, "{}"), true, errMalformed},
		{"private jwk", []byte(`{"protected":"` + b64(`{"alg":"ES256","url":"u","nonce":"n","jwk":{"kty":"oct","k":"AAAA"}}`) + `","payload":"","signature":"AA"}`), true, errMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, prob := parseJWS(tt.body, tt.needNonce)
			switch {
			case tt.wantType == "" && prob != nil:
				t.Fatalf("parseJWS: %v", prob)
			case tt.wantType != "" && prob == nil:
				t.Fatalf("parseJWS accepted it, want %s", tt.wantType)
			case tt.wantType != "" && prob.Type != errorNS+tt.wantType:
				t.Fatalf("parseJWS: %s, want %s", prob.Type, tt.wantType)
			}
			if prob != nil {
				return
			}
			var k *jose.JSONWebKey
			if req.jwk != nil {
				k = req.jwk
			} else {
				k = &jose.JSONWebKey{Key: key.Public()}
			}
			if _, prob := req.verify(k); prob != nil {
				t.Errorf("verify: %v", prob)
			}
			other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if _, prob := req.verify(&jose.JSONWebKey{Key: other.Public()}); prob == nil {
				t.Error("verify accepted another key")
			}
		})
	}
}

// FuzzParseJWS feeds the parser arbitrary bodies: it must never panic, and
// whatever it accepts must carry exactly one of jwk and kid and an allowed alg.
func FuzzParseJWS(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f.Add(signFlat(f, key, jose.ES256, true, map[jose.HeaderKey]any{"url": "u", "nonce": "n"}, "{}"))
	f.Add(signFlat(f, key, jose.ES256, false, map[jose.HeaderKey]any{"url": "u", "nonce": "n", "kid": "k"}, ""))
	f.Add([]byte(`{"protected":"e30","payload":"","signature":"AA"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, prob := parseJWS(body, true)
		if prob != nil {
			if !strings.HasPrefix(prob.Type, errorNS) {
				t.Fatalf("problem type %q is not an ACME error type", prob.Type)
			}
			return
		}
		if (req.jwk == nil) == (req.header.KID == "") {
			t.Fatalf("accepted a JWS with jwk=%v kid=%q", req.jwk != nil, req.header.KID)
		}
		if !algAllowed(req.header.Alg) || req.header.URL == "" || req.header.Nonce == "" {
			t.Fatalf("accepted header %+v", req.header)
		}
	})
}
