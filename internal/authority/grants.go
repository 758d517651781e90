package authority

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mica-pki/mica/internal/duration"
	"github.com/mica-pki/mica/internal/store"
)

// Time-bound role grants: a role given to an administrator's SPIFFE ID for
// a while, expiring by itself. Granting is itself an approvable action, and
// granting oneself a role always needs another administrator (sodRules).
// Break-glass grants are the emergency exit: a holder of role:break-glass
// (an on-call engineer, say) grants itself a role at once, for at most the
// policy's break_glass_max, with a mandatory reason; it is recorded as its
// own audit action and counted in a metric that alerts.

// GrantRequest asks to give Identity the role Role for For.
type GrantRequest struct {
	Identity   string
	Role       Role
	For        time.Duration
	Reason     string
	BreakGlass bool
}

// BreakGlassObserver is told of every break-glass grant (an alert); an
// optional ability of Config.Observer.
type BreakGlassObserver interface {
	ObserveBreakGlass(role string)
}

func parseGrantFor(s string) (time.Duration, error) {
	d, err := duration.Parse(s)
	if err != nil {
		return 0, newError(KindInvalid, err, "grant duration %q: %v", s, err)
	}
	return d, nil
}

// GrantRole gives a role to an administrator for a time.
func (a *Authority) GrantRole(ctx context.Context, p Principal, req GrantRequest) (store.RoleGrant, error) {
	id, err := spiffeid.FromString(req.Identity)
	res := Resource{Identity: req.Identity, Role: req.Role}
	act := ActRoleGrant
	if req.BreakGlass {
		act = ActBreakGlass
		if req.Identity != p.Name {
			return store.RoleGrant{}, newError(KindForbidden, nil, "break-glass grants are to oneself only: %s may not break the glass for %s", p.Name, req.Identity)
		}
	}
	if err := a.Authorize(p, act, res); err != nil {
		return store.RoleGrant{}, err
	}
	m := a.access()
	switch {
	case err != nil || !strings.HasPrefix(id.Path(), AdminPathPrefix):
		return store.RoleGrant{}, newError(KindInvalid, err, "%q is not an administrator's SPIFFE ID (spiffe://<trust domain>%s<name>): roles are held only by mica-admin credentials", req.Identity, AdminPathPrefix)
	case !m.HasRole(req.Role) || req.Role == RoleNone:
		return store.RoleGrant{}, newError(KindInvalid, nil, "role %q is neither built in (admin, operator, auditor) nor defined under the policy's roles", req.Role)
	case req.For <= 0 || req.For > MaxGrant:
		return store.RoleGrant{}, newError(KindInvalid, nil, "a grant lasts from 1s to %s, not %s: pass --for, like --for 2h", duration.Format(MaxGrant), req.For)
	case strings.TrimSpace(req.Reason) == "" || len(req.Reason) > 1024:
		return store.RoleGrant{}, newError(KindInvalid, nil, "a grant needs a reason of at most 1024 bytes: pass --reason")
	case req.BreakGlass && req.For > m.breakGlass:
		return store.RoleGrant{}, newError(KindInvalid, nil, "a break-glass grant lasts at most %s (the policy's break_glass_max), not %s", duration.Format(m.breakGlass), duration.Format(req.For))
	}
	if !req.BreakGlass {
		params := grantParams{Identity: id.String(), Role: string(req.Role), For: duration.Format(req.For), Reason: req.Reason}
		if err := a.gate(ctx, p, ActRoleGrant, res, params, req.Reason); err != nil {
			return store.RoleGrant{}, err
		}
	}
	raw := make([]byte, 8)
	rand.Read(raw)
	now := a.now()
	g := store.RoleGrant{ID: hex.EncodeToString(raw), Identity: id.String(), Role: string(req.Role), GrantedBy: p.Name,
		Reason: req.Reason, BreakGlass: req.BreakGlass, CreatedAt: now, ExpiresAt: now.Add(req.For)}
	action := store.ActionRoleGranted
	if req.BreakGlass {
		action = store.ActionRoleBreakGlass
	}
	ev := store.Event{Time: now, Actor: p.Name, Action: action, Identity: g.Identity, Outcome: "ok",
		Detail: fmt.Sprintf("grant %s: role %s until %s: %s", g.ID, g.Role, g.ExpiresAt.Format(time.RFC3339), g.Reason)}
	if p.Approval != "" {
		ev.Detail += " (approval request " + p.Approval + ")"
	}
	if err := a.store.CreateGrant(ctx, &g, &ev); err != nil {
		return g, newError(KindInternal, err, "could not record the grant: %v", err)
	}
	if req.BreakGlass {
		a.log.LogAttrs(ctx, slog.LevelWarn, "break-glass role grant", slog.String("identity", g.Identity),
			slog.String("role", g.Role), slog.String("by", p.Name), slog.Time("until", g.ExpiresAt))
		if o, ok := a.observer.(BreakGlassObserver); ok {
			o.ObserveBreakGlass(g.Role)
		}
	}
	return g, nil
}

// RevokeGrant ends a grant before its time.
func (a *Authority) RevokeGrant(ctx context.Context, p Principal, id string) error {
	if err := a.Authorize(p, ActRoleGrant, Resource{}); err != nil {
		return err
	}
	now := a.now()
	ev := store.Event{Time: now, Actor: p.Name, Action: store.ActionRoleRevoked, Outcome: "ok", Detail: "grant " + id}
	err := a.store.RevokeGrant(ctx, id, now, &ev)
	if errors.Is(err, store.ErrConflict) {
		return newError(KindNotFound, err, "no grant %s in force: list them with `mica role list`", id)
	}
	if err != nil {
		return newError(KindInternal, err, "could not revoke the grant: %v", err)
	}
	return nil
}

// Grants lists grants (in force only, unless all): auditors and up.
func (a *Authority) Grants(ctx context.Context, p Principal, identity string, all bool) ([]store.RoleGrant, error) {
	if err := a.Authorize(p, ActApprovalRead, Resource{}); err != nil {
		return nil, err
	}
	at := a.now()
	if all {
		at = time.Time{}
	}
	gs, err := a.store.Grants(ctx, identity, at)
	if err != nil {
		return nil, newError(KindInternal, err, "could not list grants: %v", err)
	}
	return gs, nil
}
