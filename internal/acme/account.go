package acme

import (
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/mail"
	"strings"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/strictjson"
)

type newAccountPayload struct {
	Contact                []string        `json:"contact"`
	TermsOfServiceAgreed   bool            `json:"termsOfServiceAgreed"`
	OnlyReturnExisting     bool            `json:"onlyReturnExisting"`
	ExternalAccountBinding json.RawMessage `json:"externalAccountBinding"`
}

// newAccount creates an account for the key in the JWS header, or finds the
// one that key already has (§7.3, §7.3.1).
func (s *Server) newAccount(ctx context.Context, r *request) (*response, *problem) {
	if r.jwk == nil {
		return nil, malformed("newAccount must be signed with jwk in the protected header, not kid")
	}
	var p newAccountPayload
	if err := json.Unmarshal(r.payload, &p); err != nil {
		return nil, malformed("the newAccount payload is not a JSON object: %v", err)
	}
	tp, err := thumbprint(r.jwk)
	if err != nil {
		return nil, newProblem(errBadPublicKey, http.StatusBadRequest, "%v", err)
	}
	if rec, err := s.store.ACMEByLookup(ctx, store.ACMEAccount, tp); err == nil {
		acct, err := decodeAccount(rec)
		if err != nil {
			return nil, internal(err)
		}
		if acct.Status != statusValid {
			return nil, unauthorized("the account for this key is %s: use a new key for a new account", acct.Status)
		}
		return &response{body: acct.view(r.base), location: s.accountURL(acct.ID)}, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, internal(err)
	}
	if p.OnlyReturnExisting {
		return nil, newProblem(errAccountDoesNotExist, http.StatusBadRequest, "no account has this key: send newAccount without onlyReturnExisting to create one")
	}
	if prob := checkContacts(p.Contact); prob != nil {
		return nil, prob
	}
	if s.set.TermsOfService != "" && !p.TermsOfServiceAgreed {
		return nil, malformed("the terms of service at %s must be agreed to: set termsOfServiceAgreed", s.set.TermsOfService)
	}
	acct := &account{Status: statusValid, Contact: p.Contact, TermsOfServiceAgreed: p.TermsOfServiceAgreed, jwk: r.jwk, CreatedAt: s.now().UTC()}
	if len(p.ExternalAccountBinding) > 0 || s.set.ExternalAccountRequired {
		kid, prob := s.checkEAB(p.ExternalAccountBinding, r)
		if prob != nil {
			return nil, prob
		}
		acct.EABKeyID = kid
	}
	if acct.Key, err = r.jwk.MarshalJSON(); err != nil {
		return nil, internal(err)
	}
	if acct.ID, err = s.newID(); err != nil {
		return nil, internal(err)
	}
	rec, err := acct.record()
	if err != nil {
		return nil, internal(err)
	}
	if err := s.store.CreateACME(ctx, rec); err != nil {
		if errors.Is(err, store.ErrConflict) {
			// Two requests with the same new key raced: the other won.
			return nil, malformed("an account for this key was created at the same moment: send newAccount again to find it")
		}
		return nil, internal(err)
	}
	return &response{status: http.StatusCreated, body: acct.view(r.base), location: s.accountURL(acct.ID)}, nil
}

// checkEAB verifies an external account binding (§7.3.4): a JWS made with
// an HMAC key the operator handed out, over the account's public key.
func (s *Server) checkEAB(raw json.RawMessage, r *request) (string, *problem) {
	if len(raw) == 0 {
		return "", newProblem(errExternalAccountRequired, http.StatusUnauthorized, "this server requires an external account binding: ask the operator for an EAB key ID and HMAC key")
	}
	var flat struct {
		Protected string `json:"protected"`
	}
	if err := json.Unmarshal(raw, &flat); err != nil {
		return "", malformed("the external account binding is not a JWS in flattened JSON serialization")
	}
	if ph, err := base64.RawURLEncoding.DecodeString(flat.Protected); err != nil {
		return "", malformed("the external account binding's protected header is not base64url")
	} else if err := strictjson.Check(ph); err != nil {
		return "", malformed("the external account binding's protected header is not acceptable JSON: %v", err)
	}
	jws, err := jose.ParseSignedJSON(string(raw), []jose.SignatureAlgorithm{jose.HS256, jose.HS384, jose.HS512})
	if err != nil || len(jws.Signatures) != 1 {
		return "", malformed("the external account binding is not a JWS with one HMAC signature")
	}
	h := jws.Signatures[0].Protected
	key, ok := s.eab[h.KeyID]
	if !ok {
		return "", unauthorized("external account binding key ID %q is unknown to this server", h.KeyID)
	}
	if u, _ := h.ExtraHeaders["url"].(string); u != r.url {
		return "", malformed("the external account binding must be signed for url %s", r.url)
	}
	if h.Nonce != "" {
		return "", malformed("the external account binding must not carry a nonce")
	}
	payload, err := jws.Verify(key)
	if err != nil {
		return "", unauthorized("the external account binding's HMAC does not verify with key %q", h.KeyID)
	}
	if err := strictjson.Check(payload); err != nil {
		return "", malformed("the external account binding's payload is not acceptable JSON: %v", err)
	}
	var bound jose.JSONWebKey
	if err := bound.UnmarshalJSON(payload); err != nil {
		return "", malformed("the external account binding's payload is not a JWK")
	}
	want, _ := thumbprint(r.jwk)
	got, err := thumbprint(&bound)
	if err != nil || !hmac.Equal([]byte(got), []byte(want)) {
		return "", unauthorized("the external account binding is for another key than the one signing the request")
	}
	return h.KeyID, nil
}

// checkContacts accepts mailto: addresses only: mica sends no mail, but a
// contact is a note for the operator and should be one a person can use.
func checkContacts(contacts []string) *problem {
	for _, c := range contacts {
		addr, ok := strings.CutPrefix(c, "mailto:")
		if !ok {
			return newProblem(errUnsupportedContact, http.StatusBadRequest, "contact %q is not a mailto: URL; only e-mail contacts are supported", c)
		}
		if a, err := mail.ParseAddress(addr); err != nil || a.Address != addr || strings.ContainsAny(addr, ",?") {
			return newProblem(errInvalidContact, http.StatusBadRequest, "contact %q is not a single e-mail address", c)
		}
	}
	return nil
}

type accountUpdate struct {
	Status  string   `json:"status"`
	Contact []string `json:"contact"`
}

// account reads, updates or deactivates the signer's own account (§7.3.2,
// §7.3.6).
func (s *Server) account(ctx context.Context, r *request) (*response, *problem) {
	acct, prob := s.ownAccount(r)
	if prob != nil {
		return nil, prob
	}
	if len(r.payload) > 0 {
		var u accountUpdate
		if err := json.Unmarshal(r.payload, &u); err != nil {
			return nil, malformed("the account update is not a JSON object: %v", err)
		}
		before := acct.Status
		switch u.Status {
		case "":
		case statusDeactivated:
			acct.Status = statusDeactivated
		default:
			return nil, malformed("an account's status can only be set to deactivated, not %q", u.Status)
		}
		if u.Contact != nil {
			if prob := checkContacts(u.Contact); prob != nil {
				return nil, prob
			}
			acct.Contact = u.Contact
		}
		rec, err := acct.record()
		if err != nil {
			return nil, internal(err)
		}
		if err := s.update(ctx, rec, before); err != nil {
			if errors.Is(err, store.ErrConflict) {
				return nil, newProblem(errMalformed, http.StatusConflict, "the account changed meanwhile (deactivated, or its key changed): read it again")
			}
			return nil, internal(err)
		}
	}
	return &response{body: acct.view(r.base), location: s.accountURL(acct.ID)}, nil
}

// ownAccount is the account a request names in its path, which must be the
// one that signed it.
func (s *Server) ownAccount(r *request) (*account, *problem) {
	if r.acct == nil {
		return nil, malformed("this request must be signed with kid, the account URL")
	}
	if r.http.PathValue("id") != r.acct.ID {
		return nil, unauthorized("account %s may only read and change itself", r.acct.ID)
	}
	return r.acct, nil
}

// orders lists the account's orders (§7.1.2.1).
func (s *Server) orders(ctx context.Context, r *request) (*response, *problem) {
	acct, prob := s.ownAccount(r)
	if prob != nil {
		return nil, prob
	}
	recs, err := s.store.ACMEChildren(ctx, store.ACMEOrder, acct.ID, 1000)
	if err != nil {
		return nil, internal(err)
	}
	urls := make([]string, 0, len(recs))
	for _, rec := range recs {
		urls = append(urls, r.base+"order/"+rec.ID)
	}
	return &response{body: map[string]any{"orders": urls}}, nil
}

type keyChangePayload struct {
	Account string          `json:"account"`
	OldKey  json.RawMessage `json:"oldKey"`
}

// keyChange rolls an account over to a new key (§7.3.5): the outer JWS is
// signed by the account, the inner one by the new key.
func (s *Server) keyChange(ctx context.Context, r *request) (*response, *problem) {
	if r.acct == nil {
		return nil, malformed("keyChange must be signed with kid, the account URL")
	}
	inner, prob := parseJWS(r.payload, false)
	if prob != nil {
		prob.Detail = "inner JWS: " + prob.Detail
		return nil, prob
	}
	if inner.jwk == nil {
		return nil, malformed("the inner JWS of a key change must carry the new key as jwk")
	}
	payload, prob := inner.verify(inner.jwk)
	if prob != nil {
		return nil, prob
	}
	if inner.header.URL != r.url {
		return nil, malformed("the inner JWS url %q differs from the outer %q", inner.header.URL, r.url)
	}
	var p keyChangePayload
	if err := json.Unmarshal(payload, &p); err != nil {
		return nil, malformed("the key change payload is not a JSON object: %v", err)
	}
	acctURL := s.accountURL(r.acct.ID)
	if p.Account != acctURL {
		return nil, unauthorized("the key change names account %q but is signed by %s", p.Account, acctURL)
	}
	var old jose.JSONWebKey
	if err := old.UnmarshalJSON(p.OldKey); err != nil {
		return nil, malformed("oldKey is not a JWK: %v", err)
	}
	oldTP, err1 := thumbprint(&old)
	curTP, err2 := thumbprint(r.acct.jwk)
	if err1 != nil || err2 != nil || oldTP != curTP {
		return nil, unauthorized("oldKey is not the account's current key")
	}
	newTP, err := thumbprint(inner.jwk)
	if err != nil {
		return nil, newProblem(errBadPublicKey, http.StatusBadRequest, "%v", err)
	}
	if other, err := s.store.ACMEByLookup(ctx, store.ACMEAccount, newTP); err == nil {
		p := newProblem(errMalformed, http.StatusConflict, "the new key already belongs to an account: choose another key")
		p.location = s.accountURL(other.ID)
		return nil, p
	}
	acct := r.acct
	acct.jwk = inner.jwk
	if acct.Key, err = inner.jwk.MarshalJSON(); err != nil {
		return nil, internal(err)
	}
	rec, err := acct.record()
	if err != nil {
		return nil, internal(err)
	}
	// Compare-and-swap on the old key too: an update signed with the old key
	// must not write it back after this commits, nor two key changes both win.
	if err := s.store.UpdateACME(ctx, rec, statusValid, curTP); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, newProblem(errMalformed, http.StatusConflict, "the account changed or the new key was taken meanwhile: try again")
		}
		return nil, internal(err)
	}
	return &response{body: acct.view(r.base), location: acctURL}, nil
}

// isPostAsGet reports whether the payload is empty, as §6.3 POST-as-GET
// requires; "{}" is accepted too, as some clients send it.
func isPostAsGet(payload []byte) bool {
	p := bytes.TrimSpace(payload)
	return len(p) == 0 || string(p) == "{}"
}
