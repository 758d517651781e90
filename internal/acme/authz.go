package acme

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// token makes a challenge token: 128 bits, base64url (§8.1).
func (s *Server) token() (string, error) {
	var b [16]byte
	if _, err := io.ReadFull(s.rand, b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

func (s *Server) ownAuthz(ctx context.Context, r *request, id string) (*authorization, *problem) {
	if r.acct == nil {
		return nil, malformed("this request must be signed with kid, the account URL")
	}
	z, err := s.loadAuthz(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, newProblem(errMalformed, http.StatusNotFound, "no authorization %s", id)
	}
	if err != nil {
		return nil, internal(err)
	}
	if z.Account != r.acct.ID {
		return nil, unauthorized("authorization %s belongs to another account", id)
	}
	if z.Status == statusPending && s.now().After(z.Expires) {
		z.Status = "expired"
	}
	return z, nil
}

func (s *Server) authzView(ctx context.Context, base string, z *authorization) (map[string]any, error) {
	var chals []map[string]any
	for _, cid := range z.Challenges {
		c, err := s.loadChallenge(ctx, cid)
		if err != nil {
			return nil, err
		}
		chals = append(chals, c.view(base))
	}
	v := map[string]any{"identifier": z.Identifier, "status": z.Status, "expires": z.Expires.Format(time.RFC3339), "challenges": chals}
	if z.Wildcard {
		v["wildcard"] = true
	}
	return v, nil
}

// authz reads an authorization, or deactivates it (§7.5, §7.5.2).
func (s *Server) authz(ctx context.Context, r *request) (*response, *problem) {
	z, prob := s.ownAuthz(ctx, r, r.http.PathValue("id"))
	if prob != nil {
		return nil, prob
	}
	if !isPostAsGet(r.payload) {
		var u struct {
			Status string `json:"status"`
		}
		if err := json.Unmarshal(r.payload, &u); err != nil || u.Status != statusDeactivated {
			return nil, malformed("an authorization can only be deactivated: send {\"status\": \"deactivated\"}")
		}
		if z.Status != statusPending && z.Status != statusValid {
			return nil, malformed("authorization %s is %s and cannot be deactivated", z.ID, z.Status)
		}
		before := z.Status
		z.Status = statusDeactivated
		if err := s.update(ctx, z.record(), before); err != nil {
			return nil, internal(err)
		}
	}
	v, err := s.authzView(ctx, r.base, z)
	if err != nil {
		return nil, internal(err)
	}
	resp := &response{body: v}
	if z.Status == statusPending {
		resp.retry = 1
	}
	return resp, nil
}

// challenge reads a challenge, or (with a "{}" payload) asks the server to
// validate it (§7.5.1). Validation runs in the background; the answer waits
// a moment for it, so a quick validation is answered final at once.
func (s *Server) challenge(ctx context.Context, r *request) (*response, *problem) {
	c, err := s.loadChallenge(ctx, r.http.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		return nil, newProblem(errMalformed, http.StatusNotFound, "no challenge %s", r.http.PathValue("id"))
	}
	if err != nil {
		return nil, internal(err)
	}
	z, prob := s.ownAuthz(ctx, r, c.Authz)
	if prob != nil {
		return nil, prob
	}
	links := []string{`<` + r.base + "authz/" + z.ID + `>;rel="up"`}
	if len(r.payload) == 0 || c.Status != statusPending || z.Status != statusPending {
		return &response{body: c.view(r.base), links: links}, nil
	}
	c.Status = statusProcessing
	if err := s.update(ctx, c.record(), statusPending); err != nil {
		if !errors.Is(err, store.ErrConflict) {
			return nil, internal(err)
		}
	} else {
		keyAuth := c.Token + "." + mustThumbprint(r.acct)
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.runValidation(context.WithoutCancel(ctx), z, c, keyAuth)
		}()
		select {
		case <-done:
		case <-time.After(s.validationWait):
		case <-ctx.Done():
		}
	}
	if fresh, err := s.loadChallenge(ctx, c.ID); err == nil {
		c = fresh
	}
	resp := &response{body: c.view(r.base), links: links}
	if c.Status == statusProcessing {
		resp.retry = 1
	}
	return resp, nil
}

func mustThumbprint(a *account) string {
	tp, _ := thumbprint(a.jwk) // the key was thumbprinted when the account was stored
	return tp
}

// runValidation validates c and records the outcome on the challenge and
// its authorization.
func (s *Server) runValidation(ctx context.Context, z *authorization, c *challenge, keyAuth string) {
	ctx, cancel := context.WithTimeout(ctx, validationTimeout)
	defer cancel()
	prob := s.validate.check(ctx, c.Type, z.Identifier, c.Token, keyAuth)
	if prob != nil {
		c.Status, c.Error, z.Status = statusInvalid, prob, statusInvalid
		prob.Identifier = &z.Identifier
	} else {
		c.Status, c.Validated, z.Status = statusValid, s.now().UTC(), statusValid
	}
	if err := s.update(ctx, c.record(), statusProcessing); err != nil {
		s.log.LogAttrs(ctx, slog.LevelError, "acme: recording a validation", slog.String("error", err.Error()))
		return
	}
	if err := s.update(ctx, z.record(), statusPending); err != nil && !errors.Is(err, store.ErrConflict) {
		s.log.LogAttrs(ctx, slog.LevelError, "acme: recording an authorization", slog.String("error", err.Error()))
	}
	s.log.LogAttrs(ctx, slog.LevelInfo, "acme validation", slog.String("type", c.Type),
		slog.String("identifier", z.Identifier.Value), slog.String("status", c.Status))
}
