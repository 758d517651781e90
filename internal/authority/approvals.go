package authority

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/mica-pki/mica/internal/duration"
	"github.com/mica-pki/mica/internal/store"
)

// Approvals by several people. After Authorize allows a requester, gate
// asks whether the action also needs approvers: by a rule of the policy
// (approvals section) or by a separation-of-duties rule built in here. If
// so, the request is stored with its exact parameters and their hash, and
// the caller gets a KindApprovalPending error instead of the result.
// Approvers (distinct people, never the requester, each holding the rule's
// role) vote with their own credential; when the threshold is met the
// request runs once, as its requester, with exactly the stored parameters —
// except a token, which its requester collects (CollectToken), since a
// token is a secret and its lifetime starts when it is minted. Every step
// is an audit event.

// The parameters of each approvable action, as stored with the request.
type (
	revokeParams struct {
		Serial string `json:"serial"`
		Reason int    `json:"reason"`
	}
	revokeIdentityParams struct {
		Identity string `json:"identity"`
		Reason   int    `json:"reason"`
	}
	denyParams struct {
		Identity string `json:"identity"`
		Allow    bool   `json:"allow"`
		Detail   string `json:"detail"`
	}
	tokenParams struct {
		Identity string `json:"identity"`
		Profile  string `json:"profile"`
		TTL      string `json:"ttl"`
		Network  string `json:"network"`
	}
	grantParams struct {
		Identity string `json:"identity"`
		Role     string `json:"role"`
		For      string `json:"for"`
		Reason   string `json:"reason"`
	}
	policyParams struct {
		Version int64  `json:"version"`
		Hash    string `json:"hash"`
	}
	rotateParams struct {
		Step string `json:"step"`
	}
)

// sodRules are the separation-of-duties rules that hold whatever the
// policy says: an administrator never grants itself a role alone, and never
// alone revokes a certificate it answers for under a privileged profile
// (so that issuing a rogue credential and then removing the trace takes two
// people). Each needs one more administrator.
func (m *AccessModel) sodRules(p Principal, act Action, res Resource) []ApprovalRule {
	one := ApprovalRule{Action: act, Required: 1, Approvers: RoleAdmin, Expires: duration.Duration(DefaultApprovalExpiry)}
	switch {
	case act == ActRoleGrant && res.Identity == p.Name:
		return []ApprovalRule{one}
	case act == ActCertRevoke && res.Owner == p.Name && res.Serial != p.Record.Serial &&
		(m.privileged[res.Profile] || IsReservedProfile(res.Profile)):
		return []ApprovalRule{one}
	}
	return nil
}

// gate returns nil when act may run now, or a KindApprovalPending error
// after holding the request for approvers. It runs after Authorize.
func (a *Authority) gate(ctx context.Context, p Principal, act Action, res Resource, params any, reason string) error {
	if p.Approval != "" || p.System() {
		return nil // carrying out an approved request, or mica itself
	}
	m := a.access()
	rules := append(m.rulesFor(act, res), m.sodRules(p, act, res)...)
	if len(rules) == 0 {
		return nil
	}
	// The strictest rule decides: the most approvers, and its role.
	r := rules[0]
	for _, x := range rules[1:] {
		if x.Required > r.Required {
			r = x
		}
	}
	raw, err := json.Marshal(params)
	if err != nil {
		return newError(KindInternal, err, "could not encode the request for approval: %v", err)
	}
	sum := sha256.Sum256(raw)
	id := make([]byte, 8)
	rand.Read(id)
	now := a.now()
	ap := store.Approval{ID: hex.EncodeToString(id), Action: string(act), Params: raw, ParamsHash: hex.EncodeToString(sum[:]),
		Profile: res.Profile, Requester: p.Name, Reason: reason, Required: r.Required, Approvers: string(r.Approvers),
		CreatedAt: now, ExpiresAt: now.Add(r.Expires.D())}
	ev := store.Event{Time: now, Actor: p.Name, Action: store.ActionApprovalRequested, Identity: res.Identity, Profile: res.Profile,
		Serial: res.Serial, Outcome: "pending",
		Detail: fmt.Sprintf("request %s: %s %s needs %d approval(s) by %s; parameters sha256 %s", ap.ID, act, raw, ap.Required, ap.Approvers, ap.ParamsHash)}
	if err := a.store.CreateApproval(ctx, &ap, &ev); err != nil {
		return newError(KindInternal, err, "could not record the approval request: %v", err)
	}
	a.log.LogAttrs(ctx, slog.LevelInfo, "request held for approval", slog.String("approval", ap.ID),
		slog.String("action", string(act)), slog.String("requester", p.Name))
	return &Error{Kind: KindApprovalPending, Pending: &ap,
		Detail: fmt.Sprintf("%s needs %d approval(s) by holders of the %s role: request %s is waiting (see `mica approvals show %s`)",
			act, ap.Required, ap.Approvers, ap.ID, ap.ID)}
}

// Decide records one approver's vote on a pending request and, when the
// threshold is met, carries it out. It returns the request as it now
// stands.
func (a *Authority) Decide(ctx context.Context, p Principal, id string, approve bool, comment string) (store.Approval, error) {
	if len(comment) > 1024 {
		return store.Approval{}, newError(KindInvalid, nil, "the comment is %d bytes; keep it under 1024", len(comment))
	}
	ap, err := a.pendingApproval(ctx, id)
	if err != nil {
		return ap, err
	}
	if err := a.MayDecide(p, ap); err != nil {
		return ap, err
	}
	now := a.now()
	verb, outcome := "approved", "ok"
	if !approve {
		verb, outcome = "rejected", "rejected"
	}
	ev := store.Event{Time: now, Actor: p.Name, Action: store.ActionApprovalVoted, Outcome: outcome, Profile: ap.Profile,
		Detail: fmt.Sprintf("request %s (%s) %s by %s: %s", id, ap.Action, verb, p.Name, comment)}
	err = a.store.Vote(ctx, id, store.Vote{Approver: p.Name, Approve: approve, At: now, Comment: comment}, &ev)
	if errors.Is(err, store.ErrConflict) {
		return ap, newError(KindConflict, err, "%s already decided request %s, or it is no longer pending: see `mica approvals show %s`", p.Name, id, id)
	}
	if err != nil {
		return ap, newError(KindInternal, err, "could not record the vote: %v", err)
	}
	if ap, err = a.store.Approval(ctx, id); err != nil {
		return ap, newError(KindInternal, err, "could not read request %s back: %v", id, err)
	}
	if !approve {
		return a.settle(ctx, ap, store.ApprovalPending, store.ApprovalRejected, store.ActionApprovalRejected, "rejected by "+p.Name)
	}
	yes := 0
	for _, v := range ap.Votes {
		if v.Approve && v.Approver != ap.Requester {
			yes++
		}
	}
	if yes < ap.Required {
		return ap, nil
	}
	if ap, err = a.settle(ctx, ap, store.ApprovalPending, store.ApprovalApproved, store.ActionApprovalApproved,
		fmt.Sprintf("%d of %d approvals", yes, ap.Required)); err != nil {
		return ap, err
	}
	if Action(ap.Action) == ActTokenCreate {
		return ap, nil // its requester collects it (CreateToken with the request's id)
	}
	return a.carryOut(ctx, ap)
}

// MayDecide answers the questions Decide asks of the approver, for a door
// that offers the decision only to whom it would allow: nil when p holds
// the request's approvers role (with approval:decide), did not make it,
// and has not decided it already (among ap.Votes: each approver counts
// once).
func (a *Authority) MayDecide(p Principal, ap store.Approval) error {
	if err := a.Authorize(p, ActApprovalDecide, Resource{Role: Role(ap.Approvers)}); err != nil {
		return err
	}
	if p.Name == ap.Requester {
		return newError(KindForbidden, nil, "%s made request %s and may not decide it: another holder of the %s role must", p.Name, ap.ID, ap.Approvers)
	}
	for _, v := range ap.Votes {
		if v.Approver == p.Name {
			return newError(KindConflict, nil, "%s decided request %s already: each approver counts once, another holder of the %s role must", p.Name, ap.ID, ap.Approvers)
		}
	}
	return nil
}

// pendingApproval reads a request that can still be decided, expiring it
// first if its time is up.
func (a *Authority) pendingApproval(ctx context.Context, id string) (store.Approval, error) {
	ap, err := a.approval(ctx, id)
	if err != nil {
		return ap, err
	}
	if ap.Status != store.ApprovalPending {
		return ap, newError(KindConflict, nil, "request %s is %s, not pending", id, ap.Status)
	}
	return ap, nil
}

// approval reads a request, moving it to expired when its time is up.
func (a *Authority) approval(ctx context.Context, id string) (store.Approval, error) {
	if len(id) == 0 || len(id) > 64 {
		return store.Approval{}, newError(KindInvalid, nil, "%q is not an approval request id: list them with `mica approvals list`", id)
	}
	ap, err := a.store.Approval(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return ap, newError(KindNotFound, err, "no approval request %s: list them with `mica approvals list`", id)
	case err != nil:
		return ap, newError(KindInternal, err, "could not read approval request %s: %v", id, err)
	}
	if ap.Status == store.ApprovalPending && !a.now().Before(ap.ExpiresAt) {
		expired, err := a.settle(ctx, ap, store.ApprovalPending, store.ApprovalExpired, store.ActionApprovalExpired, "nobody decided in time")
		if err == nil || KindOf(err) == KindConflict {
			ap, _ = a.store.Approval(ctx, id)
			if err == nil {
				ap = expired
			}
		}
	}
	return ap, nil
}

// settle moves a request from one status to another with its event and
// returns it as it now stands. Losing the race to another server is a
// conflict.
func (a *Authority) settle(ctx context.Context, ap store.Approval, from, to store.ApprovalStatus, action store.Action, result string) (store.Approval, error) {
	now := a.now()
	ev := store.Event{Time: now, Actor: SystemPrincipal, Action: action, Outcome: string(to), Profile: ap.Profile,
		Detail: fmt.Sprintf("request %s (%s by %s): %s", ap.ID, ap.Action, ap.Requester, result)}
	err := a.store.SetApprovalStatus(ctx, ap.ID, from, to, result, now, &ev)
	if errors.Is(err, store.ErrConflict) {
		return ap, newError(KindConflict, err, "request %s changed meanwhile (another server, or another approver): see `mica approvals show %s`", ap.ID, ap.ID)
	}
	if err != nil {
		return ap, newError(KindInternal, err, "could not record request %s as %s: %v", ap.ID, to, err)
	}
	ap.Status, ap.Result, ap.DecidedAt = to, result, now
	return ap, nil
}

// carryOut runs an approved request once, as its requester (whose
// permission is checked again now), with exactly the stored parameters.
func (a *Authority) carryOut(ctx context.Context, ap store.Approval) (store.Approval, error) {
	// Claim it first, so that two servers settling the last vote at once
	// run it once.
	ap, err := a.settle(ctx, ap, store.ApprovalApproved, store.ApprovalExecuted, store.ActionApprovalExecuted, "running")
	if err != nil {
		return ap, err
	}
	p, err := a.requesterOf(ctx, ap)
	var result string
	if err == nil {
		result, err = a.run(ctx, p, Action(ap.Action), ap.Params)
	}
	now := a.now()
	if err != nil {
		ev := store.Event{Time: now, Actor: SystemPrincipal, Action: store.ActionApprovalFailed, Outcome: "failed", Profile: ap.Profile,
			Detail: fmt.Sprintf("request %s (%s by %s) failed: %v", ap.ID, ap.Action, ap.Requester, err)}
		if rerr := a.store.SetApprovalStatus(ctx, ap.ID, store.ApprovalExecuted, store.ApprovalFailed, err.Error(), now, &ev); rerr != nil {
			a.log.LogAttrs(ctx, slog.LevelError, "could not record a failed approval", slog.String("approval", ap.ID), slog.String("error", rerr.Error()))
		}
		ap.Status, ap.Result = store.ApprovalFailed, err.Error()
		return ap, nil
	}
	ap.Result = result
	return ap, nil
}

// requesterOf rebuilds the principal of a request's requester, with the
// roles it holds now: an approved request runs only while its requester
// may still ask for it.
func (a *Authority) requesterOf(ctx context.Context, ap store.Approval) (Principal, error) {
	roles, err := a.rolesNow(ctx, ap.Requester)
	if err != nil {
		return Principal{}, err
	}
	return Principal{Name: ap.Requester, Roles: roles, Approval: ap.ID}, nil
}

// run carries out one approvable action with its stored parameters.
func (a *Authority) run(ctx context.Context, p Principal, act Action, raw []byte) (string, error) {
	decode := func(v any) error {
		if err := json.Unmarshal(raw, v); err != nil {
			return newError(KindInternal, err, "the stored parameters do not decode: %v", err)
		}
		return nil
	}
	switch act {
	case ActCertRevoke:
		var pr revokeParams
		if err := decode(&pr); err != nil {
			return "", err
		}
		rec, err := a.Revoke(ctx, p, pr.Serial, pr.Reason, netip.Addr{})
		return "revoked " + rec.Serial, err
	case ActIdentityRevoke:
		var pr revokeIdentityParams
		if err := decode(&pr); err != nil {
			return "", err
		}
		recs, err := a.RevokeIdentity(ctx, p, pr.Identity, pr.Reason, netip.Addr{})
		return fmt.Sprintf("revoked %d certificate(s) of %s", len(recs), pr.Identity), err
	case ActIdentityDeny:
		var pr denyParams
		if err := decode(&pr); err != nil {
			return "", err
		}
		_, err := a.denyOrAllow(ctx, p, pr.Identity, pr.Detail, netip.Addr{}, pr.Allow)
		return map[bool]string{false: "denied ", true: "allowed "}[pr.Allow] + pr.Identity, err
	case ActRoleGrant:
		var pr grantParams
		if err := decode(&pr); err != nil {
			return "", err
		}
		d, err := parseGrantFor(pr.For)
		if err != nil {
			return "", err
		}
		g, err := a.GrantRole(ctx, p, GrantRequest{Identity: pr.Identity, Role: Role(pr.Role), For: d, Reason: pr.Reason})
		return "grant " + g.ID, err
	case ActPolicyChange:
		var pr policyParams
		if err := decode(&pr); err != nil {
			return "", err
		}
		v, err := a.ActivatePolicy(ctx, p, pr.Version)
		return fmt.Sprintf("policy version %d active", v.Version), err
	case ActCARotate:
		var pr rotateParams
		if err := decode(&pr); err != nil {
			return "", err
		}
		return a.Rotate(ctx, p, pr.Step)
	}
	return "", newError(KindInternal, nil, "action %s cannot be carried out after approval", act)
}

// collect checks that an approved request matches what its requester now
// asks for and claims it, once, for an action its requester carries out
// (a token): same requester, same action, same parameters.
func (a *Authority) collect(ctx context.Context, p Principal, id string, act Action, params any) error {
	ap, err := a.approval(ctx, id)
	if err != nil {
		return err
	}
	raw, _ := json.Marshal(params)
	sum := sha256.Sum256(raw)
	switch {
	case ap.Requester != p.Name:
		return newError(KindForbidden, nil, "request %s was made by %s: only its requester collects it", id, ap.Requester)
	case Action(ap.Action) != act || ap.ParamsHash != hex.EncodeToString(sum[:]):
		return newError(KindConflict, nil, "request %s approved %s %s, not this: ask again with exactly the approved parameters", id, ap.Action, ap.Params)
	case ap.Status != store.ApprovalApproved:
		return newError(KindConflict, nil, "request %s is %s: it can be collected once, after its approvals", id, ap.Status)
	}
	_, err = a.settle(ctx, ap, store.ApprovalApproved, store.ApprovalExecuted, store.ActionApprovalExecuted, "collected by "+p.Name)
	return err
}

// Approval reads one request: its requester and holders of approval:read
// may.
func (a *Authority) Approval(ctx context.Context, p Principal, id string) (store.Approval, error) {
	ap, err := a.approval(ctx, id)
	if err != nil {
		return ap, err
	}
	if err := a.Authorize(p, ActApprovalRead, Resource{Requester: ap.Requester}); err != nil {
		return store.Approval{}, err
	}
	return ap, nil
}

// Approvals lists requests: every one for holders of approval:read, a
// caller's own otherwise (f.Requester is then set to the caller).
func (a *Authority) Approvals(ctx context.Context, p Principal, f store.ApprovalFilter) ([]store.Approval, error) {
	if err := a.Authorize(p, ActApprovalRead, Resource{Requester: f.Requester}); err != nil {
		if a.Authorize(p, ActApprovalRead, Resource{Requester: p.Name}) != nil {
			return nil, err
		}
		f.Requester = p.Name
	}
	list, err := a.store.Approvals(ctx, f)
	if err != nil {
		return nil, newError(KindInternal, err, "could not list approval requests: %v", err)
	}
	now := a.now()
	for i := range list {
		if list[i].Status == store.ApprovalPending && !now.Before(list[i].ExpiresAt) {
			if ap, err := a.approval(ctx, list[i].ID); err == nil {
				list[i] = ap
			}
		}
	}
	return list, nil
}
