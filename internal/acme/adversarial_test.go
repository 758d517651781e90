package acme

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/mica-pki/mica/internal/store"
)

// TestHostileJWS sends every class of bad request the JWS layer must
// refuse, each well-formed but for its one defect, and checks the answer,
// that every answer carries a fresh nonce, and that nothing was created.
func TestHostileJWS(t *testing.T) {
	engines(t, func(t *testing.T, e *engine) {
		v := newEnv(t, e)
		a := v.client()
		a.register()
		b := v.client()
		b.register()
		bOrder := b.newOrder("b.acme.test")
		ready := a.readyOrder("ready.acme.test")
		stranger := v.client() // a key with no account
		newOrder := testURL + "new-order"
		orderPayload := `{"identifiers":[{"type":"dns","value":"x.acme.test"}]}`

		// hdr is a's protected header for url with a fresh nonce, as JSON,
		// changed by edits (nil deletes a member).
		hdr := func(c *client, url string, edits map[string]any) string {
			h := c.header(url, c.nonce())
			for k, x := range edits {
				if x == nil {
					delete(h, k)
				} else {
					h[k] = x
				}
			}
			return string(mustJSON(t, h))
		}
		// signed is a JWS by c over payload with header edits.
		signed := func(c *client, url string, edits map[string]any, payload string) []byte {
			return rawJWS(t, c.key, hdr(c, url, edits), []byte(payload))
		}
		// spliceHeader puts raw text into a's header JSON before its last }.
		spliceHeader := func(url, extra string) []byte {
			h := hdr(a, url, nil)
			return rawJWS(t, a.key, h[:len(h)-1]+","+extra+"}", []byte(orderPayload))
		}
		flat := func(protected, payload, signature string) []byte {
			return []byte(`{"protected":"` + b64s(protected) + `","payload":"` + b64s(payload) + `","signature":"` + signature + `"}`)
		}
		hs256 := func() []byte {
			// Algorithm confusion: an HMAC keyed with the account's public key.
			p64 := b64s(hdr(a, newOrder, map[string]any{"alg": "HS256"}))
			m := hmac.New(sha256.New, jwkJSON(t, a.key))
			m.Write([]byte(p64 + "." + b64s(orderPayload)))
			return []byte(`{"protected":"` + p64 + `","payload":"` + b64s(orderPayload) + `","signature":"` + base64.RawURLEncoding.EncodeToString(m.Sum(nil)) + `"}`)
		}
		rsa1024 := func() []byte {
			k, err := rsa.GenerateKey(rand.Reader, 1024)
			if err != nil {
				t.Fatal(err)
			}
			s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: k}, &jose.SignerOptions{EmbedJWK: true,
				ExtraHeaders: map[jose.HeaderKey]any{"url": testURL + "new-account", "nonce": a.nonce()}})
			if err != nil {
				t.Fatal(err)
			}
			jws, err := s.Sign([]byte(`{"termsOfServiceAgreed":true}`))
			if err != nil {
				t.Fatal(err)
			}
			return []byte(jws.FullSerialize())
		}
		replayed := func() []byte {
			n := a.nonce()
			body := rawJWS(t, a.key, string(mustJSON(t, map[string]any{"alg": "ES256", "kid": a.kid, "url": ready.url, "nonce": n})), nil)
			if got := do(v.srv, http.MethodPost, ready.url, "", "application/jose+json", body); got.status != http.StatusOK {
				t.Fatalf("first use of the nonce: %v", got)
			}
			return signed(a, newOrder, map[string]any{"nonce": n}, orderPayload)
		}
		otherSpelling := func() []byte {
			n := a.nonce()
			// The last character carries two unused bits: flip one.
			last := strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", n[len(n)-1])
			alt := n[:len(n)-1] + string("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last^1])
			return signed(a, newOrder, map[string]any{"nonce": alt}, orderPayload)
		}
		forgedMAC := func() []byte {
			raw, _ := base64.RawURLEncoding.DecodeString(a.nonce())
			raw[len(raw)-1] ^= 0x80
			return signed(a, newOrder, map[string]any{"nonce": base64.RawURLEncoding.EncodeToString(raw)}, orderPayload)
		}
		tampered := func() []byte {
			body := signed(a, newOrder, nil, orderPayload)
			var f map[string]string
			json.Unmarshal(body, &f)
			f["payload"] = b64s(`{"identifiers":[{"type":"dns","value":"y.acme.test"}]}`)
			return mustJSON(t, f)
		}
		nested := strings.Repeat(`{"a":`, 100) + "1" + strings.Repeat("}", 100)

		tests := []struct {
			name   string
			url    string // where it is sent; newOrder when empty
			host   string // Host header, when forged
			ctype  string // application/jose+json when empty
			body   []byte
			status int
			want   string
		}{
			{name: "alg none", body: flat(hdr(a, newOrder, map[string]any{"alg": "none"}), orderPayload, "AA"), status: 400, want: errBadSignatureAlgorithm},
			{name: "alg HS256 keyed with the public key", body: hs256(), status: 400, want: errBadSignatureAlgorithm},
			{name: "alg RS256 over an EC key", body: signed(a, newOrder, map[string]any{"alg": "RS256"}, orderPayload), status: 400, want: errMalformed},
			{name: "alg ES384 over a P-256 key", body: signed(a, newOrder, map[string]any{"alg": "ES384"}, orderPayload), status: 400, want: errMalformed},
			{name: "alg missing", body: signed(a, newOrder, map[string]any{"alg": nil}, orderPayload), status: 400, want: errBadSignatureAlgorithm},
			{name: "jwk and kid", body: signed(a, newOrder, map[string]any{"jwk": jwkJSON(t, a.key)}, orderPayload), status: 400, want: errMalformed},
			{name: "neither jwk nor kid", body: signed(a, newOrder, map[string]any{"kid": nil}, orderPayload), status: 400, want: errMalformed},
			{name: "jwk of a private key", body: signed(stranger, testURL+"new-account", map[string]any{"jwk": json.RawMessage(`{"kty":"oct","k":"c2VjcmV0"}`)}, `{}`), url: testURL + "new-account", status: 400, want: errMalformed},
			{name: "RSA-1024 account key", body: rsa1024(), url: testURL + "new-account", status: 400, want: errBadPublicKey},
			{name: "signed for another URL", body: signed(a, testURL+"revoke-cert", nil, orderPayload), status: 403, want: errUnauthorized},
			{name: "signed for the forged Host's URL", body: signed(a, "https://evil.test/acme/new-order", nil, orderPayload), url: "https://evil.test/acme/new-order", host: "evil.test", status: 403, want: errUnauthorized},
			{name: "new account for the forged Host's URL", body: signed(stranger, "https://evil.test/acme/new-account", nil, `{"termsOfServiceAgreed":true}`), url: "https://evil.test/acme/new-account", host: "evil.test", status: 403, want: errUnauthorized},
			{name: "kid under a forged host", body: signed(a, newOrder, map[string]any{"kid": strings.Replace(a.kid, "ca.test", "evil.test", 1)}, orderPayload), status: 400, want: errAccountDoesNotExist},
			{name: "kid with a path", body: signed(a, newOrder, map[string]any{"kid": testURL + "account/../order/x"}, orderPayload), status: 400, want: errAccountDoesNotExist},
			{name: "kid of an unknown account", body: signed(a, newOrder, map[string]any{"kid": testURL + "account/0000"}, orderPayload), status: 400, want: errAccountDoesNotExist},
			{name: "kid of another account", body: signed(a, newOrder, map[string]any{"kid": b.kid}, orderPayload), status: 400, want: errMalformed},
			{name: "another account's order", url: bOrder.url, body: signed(a, bOrder.url, nil, ""), status: 403, want: errUnauthorized},
			{name: "another account's authorization", url: bOrder.authzs()[0], body: signed(a, bOrder.authzs()[0], nil, ""), status: 403, want: errUnauthorized},
			{name: "another account's account", url: b.kid, body: signed(a, b.kid, nil, ""), status: 403, want: errUnauthorized},
			{name: "replayed nonce", body: replayed(), status: 400, want: errBadNonce},
			{name: "nonce in another spelling", body: otherSpelling(), status: 400, want: errBadNonce},
			{name: "nonce with a forged MAC", body: forgedMAC(), status: 400, want: errBadNonce},
			{name: "nonce of random bytes", body: signed(a, newOrder, map[string]any{"nonce": base64.RawURLEncoding.EncodeToString(make([]byte, nonceLen))}, orderPayload), status: 400, want: errBadNonce},
			{name: "nonce not base64url", body: signed(a, newOrder, map[string]any{"nonce": "!!!"}, orderPayload), status: 400, want: errBadNonce},
			{name: "nonce missing", body: signed(a, newOrder, map[string]any{"nonce": nil}, orderPayload), status: 400, want: errBadNonce},
			{name: "nonce a number", body: signed(a, newOrder, map[string]any{"nonce": 5}, orderPayload), status: 400, want: errMalformed},
			{name: "payload changed after signing", body: tampered(), status: 400, want: errMalformed},
			{name: "body over the limit", body: signed(a, newOrder, nil, `{"identifiers":[],"pad":"`+strings.Repeat("x", maxJWSBytes)+`"}`), status: 413, want: errMalformed},
			{name: "payload under the limit, too many identifiers", body: signed(a, newOrder, nil, `{"identifiers":[`+strings.Repeat(`{"type":"dns","value":"x.acme.test"},`, maxIdentifiers)+`{"type":"dns","value":"x.acme.test"}]}`), status: 400, want: errMalformed},
			{name: "duplicate nonce in the protected header", body: spliceHeader(newOrder, `"nonce":"`+a.nonce()+`"`), status: 400, want: errMalformed},
			{name: "duplicate url in the protected header", body: spliceHeader(newOrder, `"url":"`+testURL+`revoke-cert"`), status: 400, want: errMalformed},
			{name: "duplicate alg in the protected header", body: spliceHeader(newOrder, `"alg":"none"`), status: 400, want: errMalformed},
			{name: "duplicate kid in the protected header", body: spliceHeader(newOrder, `"kid":"`+b.kid+`"`), status: 400, want: errMalformed},
			{name: "url and URL in the protected header", body: spliceHeader(newOrder, `"URL":"`+testURL+`revoke-cert"`), status: 400, want: errMalformed},
			{name: "Kelvin sign: kid and \u212aid", body: spliceHeader(newOrder, `"\u212aid":"x"`), status: 400, want: errMalformed},
			{name: "duplicate member inside the jwk", body: func() []byte {
				k := string(jwkJSON(t, stranger.key))
				h := `{"alg":"ES256","nonce":"` + stranger.nonce() + `","url":"` + testURL + `new-account","jwk":` + k[:len(k)-1] + `,"crv":"P-384"}}`
				return rawJWS(t, stranger.key, h, []byte(`{}`))
			}(), url: testURL + "new-account", status: 400, want: errMalformed},
			{name: "crit in the protected header", body: signed(a, newOrder, map[string]any{"crit": []string{"b64"}, "b64": false}, orderPayload), status: 400, want: errMalformed},
			{name: "duplicate member in the payload", body: signed(a, newOrder, nil, `{"identifiers":[{"type":"dns","value":"x.acme.test"}],"identifiers":[{"type":"dns","value":"www.example.com"}]}`), status: 400, want: errMalformed},
			{name: "duplicate member deep in the payload", body: signed(a, newOrder, nil, `{"identifiers":[{"type":"dns","value":"x.acme.test","value":"y.acme.test"}]}`), status: 400, want: errMalformed},
			{name: "payload not JSON", body: signed(a, newOrder, nil, `identifiers=x`), status: 400, want: errMalformed},
			{name: "payload with data after the JSON", body: signed(a, newOrder, nil, orderPayload+` {}`), status: 400, want: errMalformed},
			{name: "payload nested too deep", body: signed(a, newOrder, nil, nested), status: 400, want: errMalformed},
			{name: "duplicate protected in the JWS", body: func() []byte {
				body := signed(a, newOrder, nil, orderPayload)
				return []byte(`{"protected":"` + b64s(`{"alg":"none"}`) + `",` + string(body[1:]))
			}(), status: 400, want: errMalformed},
			{name: "unprotected header", body: func() []byte {
				body := signed(a, newOrder, nil, orderPayload)
				return []byte(`{"header":{"kid":"` + b.kid + `"},` + string(body[1:]))
			}(), status: 400, want: errMalformed},
			{name: "compact serialization", body: func() []byte {
				var f map[string]string
				json.Unmarshal(signed(a, newOrder, nil, orderPayload), &f)
				return []byte(f["protected"] + "." + f["payload"] + "." + f["signature"])
			}(), status: 400, want: errMalformed},
			{name: "wrong content type", ctype: "application/json", body: signed(a, newOrder, nil, orderPayload), status: 415, want: errMalformed},
		}
		before := v.certCount()
		ordersBefore := a.post(a.kid+"/orders", nil).json(t)["orders"]
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				url, ctype := tt.url, tt.ctype
				if url == "" {
					url = newOrder
				}
				if ctype == "" {
					ctype = "application/jose+json"
				}
				got := do(v.srv, http.MethodPost, url, tt.host, ctype, tt.body)
				if got.status != tt.status || got.problem != tt.want {
					t.Errorf("got %v, want %d %s", got, tt.status, tt.want)
				}
				if got.header.Get("Replay-Nonce") == "" {
					t.Error("the refusal carries no Replay-Nonce")
				}
				if l := got.header.Get("Link"); l != "<"+testURL+`directory>;rel="index"` {
					t.Errorf("Link %q does not point at the configured directory", l)
				}
			})
		}
		if v.certCount() != before {
			t.Errorf("%d certificates issued by refused requests", v.certCount()-before)
		}
		if after := a.post(a.kid+"/orders", nil).json(t)["orders"]; len(after.([]any)) != len(ordersBefore.([]any)) {
			t.Errorf("refused requests created orders: %v → %v", ordersBefore, after)
		}
		if _, err := v.store.ACMEByLookup(context.Background(), store.ACMEAccount, stranger.thumbprint()); err == nil {
			t.Error("a refused newAccount created an account")
		}
	})
}

func b64s(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// TestHostHeaderIsIgnored: whatever Host a request names, the door's URLs
// are the configured ones, and objects are created and found under them.
func TestHostHeaderIsIgnored(t *testing.T) {
	engines(t, func(t *testing.T, e *engine) {
		v := newEnv(t, e)
		const evil = "evil.test"
		dir := do(v.srv, http.MethodGet, "https://"+evil+"/acme/directory", evil, "", nil).json(t)
		for _, k := range []string{"newNonce", "newAccount", "newOrder", "revokeCert", "keyChange", "renewalInfo"} {
			if u, _ := dir[k].(string); !strings.HasPrefix(u, testURL) {
				t.Errorf("directory %s = %q with Host %s, want it under %s", k, u, evil, testURL)
			}
		}
		if l := do(v.srv, http.MethodHead, "https://"+evil+"/acme/new-nonce", evil, "", nil).header.Get("Link"); !strings.Contains(l, testURL) {
			t.Errorf("newNonce Link %q with Host %s", l, evil)
		}
		// A client that signs the configured URLs but reaches the server
		// under another name (a proxy, an IP) is served, under the
		// configured URLs.
		c := v.client()
		body := rawJWS(t, c.key, string(mustJSON(t, c.header(testURL+"new-account", c.nonce()))), []byte(`{"termsOfServiceAgreed":true}`))
		acct := do(v.srv, http.MethodPost, "https://"+evil+"/acme/new-account", evil, "application/jose+json", body)
		if acct.status != http.StatusCreated || !strings.HasPrefix(acct.location, testURL+"account/") {
			t.Fatalf("newAccount with Host %s: %v, Location %q", evil, acct, acct.location)
		}
		c.kid = acct.location
		body = rawJWS(t, c.key, string(mustJSON(t, c.header(testURL+"new-order", c.nonce()))), []byte(`{"identifiers":[{"type":"dns","value":"h.acme.test"}]}`))
		o := do(v.srv, http.MethodPost, "https://"+evil+"/acme/new-order", evil, "application/jose+json", body)
		if o.status != http.StatusCreated || !strings.HasPrefix(o.location, testURL+"order/") {
			t.Fatalf("newOrder with Host %s: %v, Location %q", evil, o, o.location)
		}
		for _, u := range append(clientOrder{body: o.json(t)}.authzs(), o.json(t)["finalize"].(string)) {
			if !strings.HasPrefix(u, testURL) {
				t.Errorf("order names %q, not under %s", u, testURL)
			}
		}
	})
}
