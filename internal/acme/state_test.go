package acme

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// TestOrderLifecycle walks one order through every status a client sees:
// pending → ready → processing (inside finalize) → valid, and downloads
// the chain.
func TestOrderLifecycle(t *testing.T) {
	engines(t, func(t *testing.T, e *engine) {
		v := newEnv(t, e)
		c := v.client()
		c.register()
		o := c.newOrder("www.acme.test", "api.acme.test")
		if o.body["status"] != statusPending || len(o.authzs()) != 2 {
			t.Fatalf("new order: %v", o.body)
		}
		if !strings.HasPrefix(o.url, testURL+"order/") {
			t.Errorf("order URL %q is not under %s", o.url, testURL)
		}
		// Finalizing before the authorizations are valid is refused.
		if a := c.finalize(o, csrFor(t, "www.acme.test", "api.acme.test")); a.problem != errOrderNotReady {
			t.Errorf("finalize of a pending order: %v, want orderNotReady", a)
		}
		c.solve(o)
		if st := c.post(o.url, nil).json(t)["status"]; st != statusReady {
			t.Fatalf("order is %v with every authorization valid, want ready", st)
		}
		before := v.certCount()
		a := c.finalize(o, csrFor(t, "api.acme.test", "www.acme.test"))
		if a.status != http.StatusOK {
			t.Fatalf("finalize: %v", a)
		}
		body := a.json(t)
		if body["status"] != statusValid || body["certificate"] != testURL+"cert/"+strings.TrimPrefix(o.url, testURL+"order/") {
			t.Fatalf("finalized order: %v", body)
		}
		if v.certCount() != before+1 {
			t.Errorf("%d certificates issued by one finalize, want 1", v.certCount()-before)
		}
		dl := c.post(body["certificate"].(string), nil)
		if dl.status != http.StatusOK || dl.header.Get("Content-Type") != "application/pem-certificate-chain" {
			t.Fatalf("download: %v", dl)
		}
		leaf, chain := parseChain(t, dl.body)
		if len(chain) != 1 || leaf.CheckSignatureFrom(chain[0]) != nil {
			t.Fatalf("download holds %d intermediates that do not sign the leaf", len(chain))
		}
		if got := strings.Join(leaf.DNSNames, ","); got != "www.acme.test,api.acme.test" && got != "api.acme.test,www.acme.test" {
			t.Errorf("certificate names %v", leaf.DNSNames)
		}
		rec, err := v.store.Certificate(context.Background(), leaf.SerialNumber.Text(16))
		if err != nil || rec.Requester != "acme:"+c.kid || rec.Owner != "acme:"+c.kid {
			t.Errorf("inventory record %+v, %v: want requester and owner acme:%s", rec, err, c.kid)
		}
		// A valid order stays valid and issues nothing more.
		if a := c.finalize(o, csrFor(t, "www.acme.test", "api.acme.test")); a.problem != errOrderNotReady || v.certCount() != before+1 {
			t.Errorf("second finalize: %v (certificates %d)", a, v.certCount()-before)
		}
	})
}

func parseChain(t *testing.T, data []byte) (*x509.Certificate, []*x509.Certificate) {
	t.Helper()
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		t.Fatal("no certificate in the chain")
	}
	return certs[0], certs[1:]
}

// TestFinalizeOnce finalizes one ready order from many requests at once,
// through two servers on one database: one certificate, one valid answer,
// every other request refused as orderNotReady.
func TestFinalizeOnce(t *testing.T) {
	engines(t, func(t *testing.T, e *engine) {
		v := newEnv(t, e)
		replica := v.newServer(e.open(t))
		c := v.client()
		c.register()
		o := c.readyOrder("once.acme.test")
		before := v.certCount()
		const n = 12
		answers := make([]answer, n)
		var start, wg sync.WaitGroup
		start.Add(1)
		for i := range n {
			// Sign every request before any is sent, so they race.
			body := rawJWS(t, c.key, string(mustJSON(t, c.header(o.body["finalize"].(string), c.nonce()))),
				mustJSON(t, map[string]string{"csr": base64.RawURLEncoding.EncodeToString(csrFor(t, "once.acme.test"))}))
			srv := v.srv
			if i%2 == 1 {
				srv = replica
			}
			wg.Go(func() {
				start.Wait()
				answers[i] = do(srv, http.MethodPost, o.body["finalize"].(string), "", "application/jose+json", body)
			})
		}
		start.Done()
		wg.Wait()
		won := 0
		for _, a := range answers {
			switch {
			case a.status == http.StatusOK:
				won++
			case a.problem != errOrderNotReady:
				t.Errorf("a losing finalize got %v, want orderNotReady", a)
			}
		}
		if won != 1 || v.certCount() != before+1 {
			t.Errorf("%d finalizes succeeded and %d certificates were issued, want 1 and 1", won, v.certCount()-before)
		}
		if st := c.post(o.url, nil).json(t)["status"]; st != statusValid {
			t.Errorf("order is %v, want valid", st)
		}
	})
}

// TestFinalizeRefusals: what a bad CSR gets, and that it leaves the order
// ready for a good one; a refusal that is not the CSR's ends the order.
func TestFinalizeRefusals(t *testing.T) {
	engines(t, func(t *testing.T, e *engine) {
		v := newEnv(t, e)
		c := v.client()
		c.register()
		const name = "csr.acme.test"
		rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tests := []struct {
			name string
			csr  []byte
		}{
			{"extra e-mail SAN", csrWith(t, p256, &x509.CertificateRequest{DNSNames: []string{name}, EmailAddresses: []string{"ops@acme.test"}})},
			{"account key", csrWith(t, c.key, &x509.CertificateRequest{DNSNames: []string{name}})},
			{"key type the profile refuses", csrWith(t, rsaKey, &x509.CertificateRequest{DNSNames: []string{name}})},
			{"another name", csrFor(t, name, "other.acme.test")},
			{"fewer names", csrFor(t, "other.acme.test")},
			{"SPIFFE ID", csrWith(t, p256, &x509.CertificateRequest{DNSNames: []string{name}, URIs: mustURLs(t, "spiffe://example.org/x")})},
			{"not DER", []byte("not a CSR")},
			{"bad signature", badSignature(csrFor(t, name))},
		}
		o := c.readyOrder(name)
		before := v.certCount()
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if a := c.finalize(o, tt.csr); a.problem != errBadCSR || a.status != http.StatusBadRequest {
					t.Errorf("finalize: %v, want 400 badCSR", a)
				}
				if st := c.post(o.url, nil).json(t)["status"]; st != statusReady {
					t.Errorf("order is %v after a bad CSR, want ready", st)
				}
			})
		}
		if v.certCount() != before {
			t.Fatalf("%d certificates issued for bad CSRs", v.certCount()-before)
		}
		if a := c.finalize(o, csrFor(t, name)); a.status != http.StatusOK {
			t.Fatalf("finalize with a good CSR after bad ones: %v", a)
		}
	})
}

func mustURLs(t *testing.T, s ...string) []*url.URL {
	t.Helper()
	var out []*url.URL
	for _, u := range s {
		p, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

// badSignature flips a bit of the CSR's signature.
func badSignature(der []byte) []byte {
	out := append([]byte(nil), der...)
	out[len(out)-1] ^= 1
	return out
}

// TestExpiry: authorizations and orders expire with the clock; an expired
// authorization validates nothing, an expired order cannot be finalized.
func TestExpiry(t *testing.T) {
	engines(t, func(t *testing.T, e *engine) {
		v := newEnv(t, e)
		c := v.client()
		c.register()
		pending := c.newOrder("late.acme.test")
		ready := c.readyOrder("ready.acme.test")
		v.clock.Advance(orderLifetime + time.Second)

		z := c.post(pending.authzs()[0], nil).json(t)
		if z["status"] != "expired" {
			t.Errorf("authorization past its expiry is %v, want expired", z["status"])
		}
		for _, ch := range z["challenges"].([]any) {
			ch := ch.(map[string]any)
			if ch["type"] != challengeHTTP01 {
				continue
			}
			v.answers.Store(ch["token"].(string), ch["token"].(string)+"."+c.thumbprint())
			if got := c.post(ch["url"].(string), map[string]any{}).json(t); got["status"] != statusPending {
				t.Errorf("challenge of an expired authorization is %v, want it left pending (not validated)", got["status"])
			}
		}
		for name, o := range map[string]clientOrder{"pending": pending, "ready": ready} {
			got := c.post(o.url, nil).json(t)
			if got["status"] != statusInvalid {
				t.Errorf("%s order past its expiry is %v, want invalid", name, got["status"])
			}
			if a := c.finalize(o, csrFor(t, "ready.acme.test")); a.problem != errOrderNotReady {
				t.Errorf("finalize of an expired %s order: %v, want orderNotReady", name, a)
			}
		}
	})
}

// TestFailedChallengeInvalidatesOrder: a challenge that fails makes its
// authorization and its order invalid, for good.
func TestFailedChallengeInvalidatesOrder(t *testing.T) {
	engines(t, func(t *testing.T, e *engine) {
		v := newEnv(t, e)
		c := v.client()
		c.register()
		o := c.newOrder("wrong.acme.test")
		z := c.post(o.authzs()[0], nil).json(t)
		for _, ch := range z["challenges"].([]any) {
			ch := ch.(map[string]any)
			if ch["type"] == challengeHTTP01 {
				v.answers.Store(ch["token"].(string), "not-the-key-authorization")
				got := c.post(ch["url"].(string), map[string]any{}).json(t)
				if got["status"] != statusInvalid || got["error"].(map[string]any)["type"] != errorNS+errIncorrectResponse {
					t.Errorf("challenge answered wrongly: %v, want invalid incorrectResponse", got)
				}
			}
		}
		if st := c.post(o.authzs()[0], nil).json(t)["status"]; st != statusInvalid {
			t.Errorf("authorization is %v, want invalid", st)
		}
		if st := c.post(o.url, nil).json(t)["status"]; st != statusInvalid {
			t.Errorf("order is %v, want invalid", st)
		}
	})
}

// TestAccountDeactivation: a deactivated account can do nothing more, and
// its key cannot make a new one.
func TestAccountDeactivation(t *testing.T) {
	engines(t, func(t *testing.T, e *engine) {
		v := newEnv(t, e)
		c := v.client()
		c.register()
		o := c.readyOrder("deact.acme.test")
		other := v.client()
		other.register()
		if a := other.post(c.kid, map[string]any{"status": statusDeactivated}); a.problem != errUnauthorized {
			t.Errorf("another account deactivating this one: %v, want unauthorized", a)
		}
		if a := c.post(c.kid, map[string]any{"status": "valid"}); a.problem != errMalformed {
			t.Errorf("setting status valid: %v, want malformed", a)
		}
		a := c.post(c.kid, map[string]any{"status": statusDeactivated})
		if a.status != http.StatusOK || a.json(t)["status"] != statusDeactivated {
			t.Fatalf("deactivate: %v", a)
		}
		before := v.certCount()
		tests := []struct {
			name string
			send func() answer
			want string
		}{
			{"read account", func() answer { return c.post(c.kid, nil) }, errUnauthorized},
			{"new order", func() answer {
				return c.post(testURL+"new-order", map[string]any{"identifiers": []map[string]string{{"type": "dns", "value": "x.acme.test"}}})
			}, errUnauthorized},
			{"finalize", func() answer { return c.finalize(o, csrFor(t, "deact.acme.test")) }, errUnauthorized},
			{"reactivate", func() answer { return c.post(c.kid, map[string]any{"status": "valid"}) }, errUnauthorized},
			{"new account with the same key", func() answer {
				kid := c.kid
				c.kid = ""
				defer func() { c.kid = kid }()
				return c.post(testURL+"new-account", map[string]any{"termsOfServiceAgreed": true})
			}, errUnauthorized},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if a := tt.send(); a.problem != tt.want {
					t.Errorf("got %v, want %s", a, tt.want)
				}
			})
		}
		if v.certCount() != before {
			t.Errorf("a deactivated account obtained %d certificates", v.certCount()-before)
		}
	})
}

// TestKeyChange rolls an account to a new key and tries every way a key
// change can be wrong.
func TestKeyChange(t *testing.T) {
	engines(t, func(t *testing.T, e *engine) {
		v := newEnv(t, e)
		c := v.client()
		c.register()
		taken := v.client()
		taken.register()
		newKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		kcURL := testURL + "key-change"
		inner := func(key *ecdsa.PrivateKey, header map[string]any, payload map[string]any) json64 {
			h := map[string]any{"alg": "ES256", "url": kcURL, "jwk": jwkJSON(t, key)}
			for k, x := range header {
				if x == nil {
					delete(h, k)
				} else {
					h[k] = x
				}
			}
			p := map[string]any{"account": c.kid, "oldKey": jwkJSON(t, c.key)}
			for k, x := range payload {
				p[k] = x
			}
			return json64(rawJWS(t, key, string(mustJSON(t, h)), mustJSON(t, p)))
		}
		tests := []struct {
			name   string
			inner  json64
			status int
			want   string
		}{
			{"inner signed by another key than its jwk", func() json64 {
				b := inner(newKey, map[string]any{"jwk": jwkJSON(t, taken.key)}, nil)
				return b
			}(), http.StatusBadRequest, errMalformed},
			{"inner with kid", inner(newKey, map[string]any{"jwk": nil, "kid": c.kid}, nil), http.StatusBadRequest, errMalformed},
			{"inner with a nonce", inner(newKey, map[string]any{"nonce": "x"}, nil), http.StatusBadRequest, errMalformed},
			{"inner for another url", inner(newKey, map[string]any{"url": testURL + "new-order"}, nil), http.StatusBadRequest, errMalformed},
			{"another account", inner(newKey, nil, map[string]any{"account": taken.kid}), http.StatusForbidden, errUnauthorized},
			{"wrong old key", inner(newKey, nil, map[string]any{"oldKey": jwkJSON(t, newKey)}), http.StatusForbidden, errUnauthorized},
			{"key of another account", inner(taken.key, nil, nil), http.StatusConflict, errMalformed},
			{"duplicate member in the inner payload", json64(rawJWS(t, newKey, string(mustJSON(t, map[string]any{"alg": "ES256", "url": kcURL, "jwk": jwkJSON(t, newKey)})),
				[]byte(`{"account":"`+c.kid+`","account":"`+c.kid+`","oldKey":`+string(jwkJSON(t, c.key))+`}`))), http.StatusBadRequest, errMalformed},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				a := c.post(kcURL, tt.inner)
				if a.status != tt.status || a.problem != tt.want {
					t.Errorf("key change: %v, want %d %s", a, tt.status, tt.want)
				}
				if a := c.post(c.kid, nil); a.status != http.StatusOK {
					t.Errorf("the old key no longer works after a refused key change: %v", a)
				}
			})
		}
		if a := c.post(kcURL, inner(newKey, nil, nil)); a.status != http.StatusOK {
			t.Fatalf("key change: %v", a)
		}
		if a := c.post(c.kid, nil); a.status == http.StatusOK {
			t.Errorf("the old key still works after a key change: %v", a)
		}
		oldKey := c.key
		c.key = newKey
		if a := c.post(c.kid, nil); a.status != http.StatusOK {
			t.Errorf("the new key does not work: %v", a)
		}
		// The old key finds no account any more.
		c.key, c.kid = oldKey, ""
		if a := c.post(testURL+"new-account", map[string]any{"onlyReturnExisting": true}); a.problem != errAccountDoesNotExist {
			t.Errorf("newAccount onlyReturnExisting with the old key: %v, want accountDoesNotExist", a)
		}
	})
}

// json64 is a JWS as a JSON value: the payload of a key change.
type json64 json.RawMessage

func (j json64) MarshalJSON() ([]byte, error) { return j, nil }

// TestStaleUpdateCannotUndoKeyChange is the race behind the key change's
// compare-and-swap: an account update authenticated with the old key just
// before the key change commits must not write the old key back.
func TestStaleUpdateCannotUndoKeyChange(t *testing.T) {
	engines(t, func(t *testing.T, e *engine) {
		v := newEnv(t, e)
		c := v.client()
		c.register()
		ctx := context.Background()
		id := strings.TrimPrefix(c.kid, testURL+"account/")
		stale, err := v.srv.loadAccount(ctx, id) // as an update signed with the old key read it
		if err != nil {
			t.Fatal(err)
		}
		newKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		h := map[string]any{"alg": "ES256", "url": testURL + "key-change", "jwk": jwkJSON(t, newKey)}
		p := map[string]any{"account": c.kid, "oldKey": jwkJSON(t, c.key)}
		if a := c.post(testURL+"key-change", json64(rawJWS(t, newKey, string(mustJSON(t, h)), mustJSON(t, p)))); a.status != http.StatusOK {
			t.Fatalf("key change: %v", a)
		}
		stale.Contact = []string{"mailto:attacker@acme.test"}
		rec, err := stale.record()
		if err != nil {
			t.Fatal(err)
		}
		if err := v.srv.update(ctx, rec, statusValid); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("a stale update after a key change = %v, want ErrConflict", err)
		}
		c.key = newKey
		if a := c.post(c.kid, nil); a.status != http.StatusOK || a.json(t)["contact"] != nil {
			t.Errorf("after the stale update the new key gets %v", a)
		}
	})
}
