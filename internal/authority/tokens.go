package authority

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/duration"
	"github.com/mica-pki/mica/internal/policy"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/token"
)

// TokenRequest asks for a one-time enrollment token.
type TokenRequest struct {
	Identity string
	Profile  string
	TTL      time.Duration
	Network  netip.Prefix // optional source network binding
	Source   netip.Addr
	// Approval names an approved request for exactly this token, when an
	// approval rule holds tokens of the profile: its requester collects the
	// token with it, once.
	Approval string
}

// Token is a minted token and what it says.
type Token struct {
	Raw    string
	Claims token.Claims
}

// identityChecker is the optional ability of a policy to say early whether a
// profile would allow an identity, so that a token that can never be used is
// refused when it is made, not when it is spent.
type identityChecker interface {
	CheckIdentity(profile string, id identity.Identity) error
}

// DefaultTokenTTL is how long a token lives when the request does not say.
const DefaultTokenTTL = 10 * time.Minute

// CreateToken mints a one-time token bound to one identity and profile.
func (a *Authority) CreateToken(ctx context.Context, p Principal, req TokenRequest) (Token, error) {
	id, err := identity.Parse(req.Identity)
	res := Resource{Profile: req.Profile, Identity: id.Primary()}
	if err := a.Authorize(p, ActTokenCreate, res); err != nil {
		return Token{}, err
	}
	if err != nil {
		return Token{}, newError(KindInvalid, err, "%v", err)
	}
	if req.Profile == "" {
		return Token{}, newError(KindInvalid, nil, "a token needs a profile: pass --profile")
	}
	if chk, ok := a.policy().(identityChecker); ok {
		if err := chk.CheckIdentity(req.Profile, id); err != nil {
			var denied *policy.DeniedError
			if errors.As(err, &denied) {
				return Token{}, &Error{Kind: KindPolicyDenied, Reason: string(denied.Reason), Detail: denied.Detail, Err: err}
			}
			return Token{}, newError(KindInvalid, err, "%v", err)
		}
	}
	ttl := req.TTL
	if ttl == 0 {
		ttl = DefaultTokenTTL
	}
	if ttl < time.Second || ttl > token.MaxLifetime {
		return Token{}, newError(KindInvalid, nil, "token TTL %s is out of range: choose between 1s and %s", ttl, token.MaxLifetime)
	}
	params := tokenParams{Identity: strings.Join(id.SANs(), ","), Profile: req.Profile, TTL: duration.Format(ttl)}
	if req.Network.IsValid() {
		params.Network = req.Network.Masked().String()
	}
	if req.Approval != "" {
		err = a.collect(ctx, p, req.Approval, ActTokenCreate, params)
	} else {
		err = a.gate(ctx, p, ActTokenCreate, res, params, "")
	}
	if err != nil {
		return Token{}, err
	}
	now := a.now()
	c := token.Claims{
		ID: token.NewID(), Identity: strings.Join(id.SANs(), ","), Profile: req.Profile, Issuer: p.Name,
		IssuedAt: now, Expiry: now.Add(ttl), Network: req.Network.Masked(),
		RootFingerprint: Fingerprint(a.issuers.Trust().Roots[0].Raw),
	}
	raw, err := a.minter.Mint(c)
	if err != nil {
		return Token{}, newError(KindInternal, err, "could not sign the token: %v", err)
	}
	// The event names the token by its jti only: the token itself is a
	// bearer secret and must not be in the audit record.
	ev := store.Event{Time: now, Actor: p.Name, Source: addrString(req.Source), Action: store.ActionTokenCreated,
		Identity: id.Primary(), Profile: req.Profile, Outcome: "ok",
		Detail: fmt.Sprintf("token %s expires %s", c.ID, c.Expiry.UTC().Format(time.RFC3339))}
	if req.Network.IsValid() {
		ev.Detail += ", bound to " + req.Network.Masked().String()
	}
	if err := a.store.RecordEvent(ctx, &ev); err != nil {
		return Token{}, newError(KindInternal, err, "could not record the token; none was issued: %v", err)
	}
	return Token{Raw: raw, Claims: c}, nil
}
