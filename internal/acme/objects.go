package acme

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/mica-pki/mica/internal/store"
)

// Object statuses (RFC 8555 §7.1.6).
const (
	statusPending     = "pending"
	statusReady       = "ready"
	statusProcessing  = "processing"
	statusValid       = "valid"
	statusInvalid     = "invalid"
	statusDeactivated = "deactivated"
	statusRevoked     = "revoked"
)

// ident is an ACME identifier.
type ident struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// account is an ACME account as stored.
type account struct {
	ID                   string          `json:"-"`
	Status               string          `json:"status"`
	Contact              []string        `json:"contact,omitempty"`
	TermsOfServiceAgreed bool            `json:"termsOfServiceAgreed,omitempty"`
	Key                  json.RawMessage `json:"key"`
	EABKeyID             string          `json:"eabKeyId,omitempty"`
	CreatedAt            time.Time       `json:"createdAt"`

	jwk *jose.JSONWebKey
}

// order is an ACME order as stored.
type order struct {
	ID          string    `json:"-"`
	Account     string    `json:"account"`
	Status      string    `json:"status"`
	Expires     time.Time `json:"expires"`
	Identifiers []ident   `json:"identifiers"`
	Authzs      []string  `json:"authzs"`
	Error       *problem  `json:"error,omitempty"`
	Serial      string    `json:"serial,omitempty"`
	Chain       string    `json:"chain,omitempty"` // PEM, leaf first
	Replaces    string    `json:"replaces,omitempty"`
	// While processing: when finalize began and the CSR it sent, so that
	// an order whose server stopped meanwhile can be settled with the
	// certificate issued for it (recover.go).
	ProcessingSince time.Time `json:"processingSince,omitzero"`
	CSR             []byte    `json:"csr,omitempty"`
}

// settled moves an order out of processing to status.
func (o *order) settled(status string) {
	o.Status, o.ProcessingSince, o.CSR = status, time.Time{}, nil
}

// authorization is an ACME authorization as stored.
type authorization struct {
	ID         string    `json:"-"`
	Account    string    `json:"account"`
	Identifier ident     `json:"identifier"`
	Status     string    `json:"status"`
	Expires    time.Time `json:"expires"`
	Wildcard   bool      `json:"wildcard,omitempty"`
	Challenges []string  `json:"challenges"`
}

// challenge is an ACME challenge as stored.
type challenge struct {
	ID        string    `json:"-"`
	Authz     string    `json:"authz"`
	Type      string    `json:"type"`
	Token     string    `json:"token"`
	Status    string    `json:"status"`
	Validated time.Time `json:"validated,omitzero"`
	Error     *problem  `json:"error,omitempty"`
}

func (s *Server) loadAccount(ctx context.Context, id string) (*account, error) {
	rec, err := s.store.ACMEByID(ctx, store.ACMEAccount, id)
	if err != nil {
		return nil, err
	}
	return decodeAccount(rec)
}

func decodeAccount(rec store.ACMERecord) (*account, error) {
	a := &account{ID: rec.ID}
	if err := json.Unmarshal(rec.Data, a); err != nil {
		return nil, fmt.Errorf("acme: account %s is unreadable: %w", rec.ID, err)
	}
	a.jwk = new(jose.JSONWebKey)
	if err := a.jwk.UnmarshalJSON(a.Key); err != nil {
		return nil, fmt.Errorf("acme: account %s has an unreadable key: %w", rec.ID, err)
	}
	return a, nil
}

func (a *account) record() (store.ACMERecord, error) {
	data, err := json.Marshal(a)
	if err != nil {
		return store.ACMERecord{}, err
	}
	tp, err := thumbprint(a.jwk)
	if err != nil {
		return store.ACMERecord{}, err
	}
	return store.ACMERecord{Kind: store.ACMEAccount, ID: a.ID, Lookup: tp, Status: a.Status, Data: data}, nil
}

func (o *order) record() store.ACMERecord {
	data, _ := json.Marshal(o) // plain structs: cannot fail
	return store.ACMERecord{Kind: store.ACMEOrder, ID: o.ID, Parent: o.Account, Status: o.Status, Expires: o.Expires, Data: data}
}

func (z *authorization) record() store.ACMERecord {
	data, _ := json.Marshal(z)
	return store.ACMERecord{Kind: store.ACMEAuthorization, ID: z.ID, Parent: z.Account, Status: z.Status, Expires: z.Expires, Data: data}
}

func (c *challenge) record() store.ACMERecord {
	data, _ := json.Marshal(c)
	return store.ACMERecord{Kind: store.ACMEChallenge, ID: c.ID, Parent: c.Authz, Status: c.Status, Data: data}
}

// update stores rec if the stored record is still in status from and still
// has rec's lookup key: an account update cannot undo a key change.
func (s *Server) update(ctx context.Context, rec store.ACMERecord, from string) error {
	return s.store.UpdateACME(ctx, rec, from, rec.Lookup)
}

func load[T any](ctx context.Context, s *Server, kind store.ACMEKind, id string, set func(*T, string)) (*T, error) {
	rec, err := s.store.ACMEByID(ctx, kind, id)
	if err != nil {
		return nil, err
	}
	v := new(T)
	if err := json.Unmarshal(rec.Data, v); err != nil {
		return nil, fmt.Errorf("acme: %s %s is unreadable: %w", kind, id, err)
	}
	set(v, rec.ID)
	return v, nil
}

func (s *Server) loadOrder(ctx context.Context, id string) (*order, error) {
	return load(ctx, s, store.ACMEOrder, id, func(o *order, id string) { o.ID = id })
}

func (s *Server) loadAuthz(ctx context.Context, id string) (*authorization, error) {
	return load(ctx, s, store.ACMEAuthorization, id, func(z *authorization, id string) { z.ID = id })
}

func (s *Server) loadChallenge(ctx context.Context, id string) (*challenge, error) {
	return load(ctx, s, store.ACMEChallenge, id, func(c *challenge, id string) { c.ID = id })
}

// Views: the JSON a client sees, with URLs made from the base it used.

func (a *account) view(base string) map[string]any {
	v := map[string]any{"status": a.Status, "orders": base + "account/" + a.ID + "/orders", "createdAt": a.CreatedAt}
	if len(a.Contact) > 0 {
		v["contact"] = a.Contact
	}
	if a.TermsOfServiceAgreed {
		v["termsOfServiceAgreed"] = true
	}
	return v
}

func (o *order) view(base string) map[string]any {
	authz := make([]string, len(o.Authzs))
	for i, id := range o.Authzs {
		authz[i] = base + "authz/" + id
	}
	v := map[string]any{"status": o.Status, "expires": o.Expires.Format(time.RFC3339), "identifiers": o.Identifiers,
		"authorizations": authz, "finalize": base + "order/" + o.ID + "/finalize"}
	if o.Error != nil {
		v["error"] = o.Error
	}
	if o.Status == statusValid {
		v["certificate"] = base + "cert/" + o.ID
	}
	if o.Replaces != "" {
		v["replaces"] = o.Replaces
	}
	return v
}

func (c *challenge) view(base string) map[string]any {
	v := map[string]any{"type": c.Type, "url": base + "challenge/" + c.ID, "token": c.Token, "status": c.Status}
	if !c.Validated.IsZero() {
		v["validated"] = c.Validated.Format(time.RFC3339)
	}
	if c.Error != nil {
		v["error"] = c.Error
	}
	return v
}
